"""Prefix-shared vs duplicated-prompt sampling on the tiny omni model (CPU).

One prompt of ~930 positions (8 frames -> 392 video tokens, 30 s audio -> 500 audio tokens, plus
the chat-templated instruction), G completions of exactly N new tokens (EOS disabled so both
paths do the same work; the media are encoded once in both). "duplicated" prefills the LLM
prompt G times, as a generate() over a batch of G copies does; "prefix-shared" prefills it once
and copies its KV cache to the G rows.

    PYTHONPATH=python python bench/prefix_sharing.py [--num-generations 8] [--max-new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from r1omni_fast.prompts import build_instruction
from r1omni_fast.model.humanomni.tiny import build_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_tiny_model(seed=0)
    g = torch.Generator().manual_seed(0)
    frames, mel = torch.randn(1, 8, 3, 224, 224, generator=g), torch.randn(1, 128, 3000, generator=g)
    batch = model.processor([build_instruction()], pixel_values=frames, audio_features=mel)
    positions = batch["input_ids"].shape[1]
    common = dict(num_generations=args.num_generations, max_new_tokens=args.max_new_tokens, do_sample=True,
                  temperature=1.0, eos_token_id=[-1], seed=0)
    times: dict[str, list[float]] = {"duplicated": [], "prefix-shared": []}
    outputs = {}
    model.generate(batch, **{**common, "max_new_tokens": 2})  # warm-up
    for _ in range(args.repeats):
        for name, share in (("duplicated", False), ("prefix-shared", True)):
            start = time.perf_counter()
            outputs[name] = model.generate(batch, share_prefix=share, **common)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["duplicated"])
    print(f"tiny omni model, CPU ({torch.get_num_threads()} threads), prompt {positions} positions, "
          f"G={args.num_generations}, {args.max_new_tokens} new tokens, median of {args.repeats}")
    print(f"{'path':<15} {'seconds':>9} {'ratio vs duplicated':>20}")
    for name in ("duplicated", "prefix-shared"):
        t = statistics.median(times[name])
        print(f"{name:<15} {t:>9.3f} {base / t:>19.2f}x")
    same = torch.equal(outputs["duplicated"].completion_ids, outputs["prefix-shared"].completion_ids)
    print(f"same sampled tokens with the same seed: {same}")


if __name__ == "__main__":
    main()
