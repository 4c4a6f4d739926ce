"""One GRPO step on the tiny model, phase by phase, against a naive step in R1-Omni's style.

    PYTHONPATH=python python bench/grpo_step.py [--prompts 2] [--generations 8] [--tokens 32] [--repeats 3]

Both steps start from the same weights and the same prompt batch (random frames and log-mel of
the right shapes; decoding is benchmarked in bench/media). The fast step is
``r1omni_fast.train.grpo.GRPOTrainer``: prompts prefilled once and their KV cache shared by the
G samples, rewards scored natively in one batch call, media embedded once per prompt in the
policy and reference passes, log-probs and loss from ``r1omni_fast.kernels`` (Triton on CUDA,
chunked reference on CPU). The naive step does what R1-Omni's trainer does: every prompt
duplicated G times and prefilled (and its media encoded) per row, rewards by Python regex one
completion at a time, full-sequence logits with an eager ``log_softmax`` over the whole
vocabulary for the policy and the reference, the loss in eager PyTorch. The untrained tiny model
rarely emits an end token, so both steps generate the same number of tokens.
Prints the median time per phase of each step and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from r1omni_fast.config import GRPOConfig  # noqa: E402
from r1omni_fast.data import Batch, read_data  # noqa: E402
from r1omni_fast.data.synthetic import generate as synth  # noqa: E402
from r1omni_fast.model.humanomni.tiny import build_tiny_checkpoint  # noqa: E402
from r1omni_fast.train import common  # noqa: E402
from r1omni_fast.train.grpo import GRPOTrainer  # noqa: E402

PHASES = ("generate", "score", "reference", "policy", "optimizer")
LABELS = ["happy", "sad", "angry", "neutral"]


def naive_rewards(completions, solutions):
    """R1-Omni's reward functions: Python regex, one completion at a time."""
    out = []
    for text, sol in zip(completions, solutions):
        fmt = 1.0 if re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", text, re.DOTALL) else 0.0
        m_sol, m_txt = re.search(r"<answer>(.*?)</answer>", sol), re.search(r"<answer>(.*?)</answer>", text)
        truth = m_sol.group(1).strip() if m_sol else sol.strip()
        answer = m_txt.group(1).strip() if m_txt else text.strip()
        out.append(fmt + (1.0 if answer == truth else 0.0))
    return out


def naive_logps(model, inputs, completion_ids, prompt_width):
    """R1-Omni's ``_get_per_token_logps``: logits over the whole sequence, log_softmax per row."""
    logits = model(**inputs).logits[:, :-1]
    rows = []
    for row_logits, row_ids in zip(logits, inputs["input_ids"][:, 1:]):
        logp = row_logits.log_softmax(dim=-1)
        rows.append(torch.gather(logp, 1, row_ids.clamp(min=0)[:, None]).squeeze(1))
    return torch.stack(rows)[:, prompt_width - 1:]


def clock() -> float:
    """perf_counter after the device's queued work (CUDA runs asynchronously)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def naive_step(trainer, prompts, solutions, cfg, seed, times):
    with common.autocast(cfg, trainer.device):  # the same precision as the fast step
        return _naive_step(trainer, prompts, solutions, cfg, seed, times)


def _naive_step(trainer, prompts, solutions, cfg, seed, times):
    model, ref, G = trainer.model, trainer.ref, cfg.num_generations
    t = clock()
    dup = {k: v.repeat_interleave(G, 0) for k, v in prompts.items()}
    model.eval()
    out = model.generate(dup, num_generations=1, max_new_tokens=cfg.max_completion_length, do_sample=True,
                         temperature=cfg.temperature, seed=seed, share_prefix=False)
    model.train()
    times["generate"].append(clock() - t)

    t = clock()
    rewards = torch.tensor(naive_rewards(out.texts, [s for s in solutions for _ in range(G)]), device=trainer.device)
    grouped = rewards.view(-1, G)
    adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1)
    times["score"].append(clock() - t)

    ids = out.completion_ids
    mask = (torch.arange(ids.shape[1], device=ids.device)[None] < out.lengths[:, None]).float()
    full = dict(dup, input_ids=torch.cat([dup["input_ids"], ids], 1),
                attention_mask=torch.cat([dup["attention_mask"], mask.long()], 1))
    width = dup["input_ids"].shape[1]
    t = clock()
    with torch.no_grad():
        ref_logp = naive_logps(ref, full, ids, width)
    times["reference"].append(clock() - t)

    t = clock()
    logp = naive_logps(model, full, ids, width)
    ratio = torch.exp(logp - logp.detach())
    kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
    per_token = -torch.min(ratio * adv[:, None], ratio.clamp(1 - cfg.epsilon, 1 + cfg.epsilon) * adv[:, None])
    loss = (((per_token + cfg.beta * kl) * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    loss.backward()
    times["policy"].append(clock() - t)

    t = clock()
    torch.nn.utils.clip_grad_norm_(trainer.params, cfg.max_grad_norm)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    times["optimizer"].append(clock() - t)
    return int(mask.sum())


def fast_step(trainer, batch, times):
    rollout = trainer.make_rollout(batch)
    for k in ("generate", "score", "reference"):
        times[k].append(rollout.times[k])
    t = clock()
    loss, _ = trainer.policy_loss(rollout)
    loss.backward()
    times["policy"].append(clock() - t)
    t = clock()
    torch.nn.utils.clip_grad_norm_(trainer.params, trainer.cfg.max_grad_norm)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    times["optimizer"].append(clock() - t)
    return int(rollout.mask.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32, help="max_completion_length")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    model_dir = build_tiny_checkpoint(root / "tiny", seed=0)
    data = synth(root / "data", n=8, seed=0, labels=LABELS)
    cfg = GRPOConfig(model_name_or_path=model_dir, data_file=str(data.train), output_dir=str(root / "out"),
                     label_set=LABELS, num_frames=args.frames, per_device_train_batch_size=args.prompts,
                     num_generations=args.generations, max_completion_length=args.tokens,
                     max_prompt_length=None, beta=0.04, learning_rate=1e-6, reward_mode="r1omni",
                     tunable_parts=["mm_language_model", "mm_mlp_adapter", "audio_projector"])
    samples = read_data(data.train, labels=LABELS).samples[: args.prompts]
    g = torch.Generator().manual_seed(0)
    image = 224
    batch = Batch(0, samples, torch.randn(args.prompts, args.frames, 3, image, image, generator=g),
                  torch.randn(args.prompts, 128, 3000, generator=g), torch.ones(args.prompts, dtype=torch.bool),
                  torch.zeros(args.prompts, args.frames, dtype=torch.long))

    fast = GRPOTrainer(cfg, progress=False)
    naive = GRPOTrainer(cfg, progress=False)
    naive.ref = copy.deepcopy(naive.model).requires_grad_(False)  # R1-Omni holds a full second model
    prompts = fast.prompt_inputs(batch)
    solutions = [s.solution for s in samples]
    fast_times = {k: [] for k in PHASES}
    naive_times = {k: [] for k in PHASES}
    tokens = {}
    for r in range(args.repeats + 1):  # the first round warms up
        ft, nt = {k: [] for k in PHASES}, {k: [] for k in PHASES}
        tokens["fast"] = fast_step(fast, batch, ft)
        tokens["naive"] = naive_step(naive, prompts, solutions, cfg, seed=r, times=nt)
        if r:
            for k in PHASES:
                fast_times[k] += ft[k]
                naive_times[k] += nt[k]

    device = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    device += ", bf16 autocast" if common.uses_bf16(cfg, fast.device) else ", fp32"
    print(f"GRPO step, tiny model on {device} ({torch.get_num_threads()} threads): {args.prompts} prompts x "
          f"{args.generations} samples, {args.frames} frames, <= {args.tokens} new tokens; median of "
          f"{args.repeats}; completion tokens fast {tokens['fast']}, naive {tokens['naive']}")
    print(f"{'phase':<11}{'fast (s)':>10}{'naive (s)':>11}{'naive/fast':>12}")
    total_f = total_n = 0.0
    for k in PHASES:
        f, n = statistics.median(fast_times[k]), statistics.median(naive_times[k])
        total_f, total_n = total_f + f, total_n + n
        print(f"{k:<11}{f:>10.3f}{n:>11.3f}{n / f if f > 0 else float('nan'):>11.1f}x")
    print(f"{'step':<11}{total_f:>10.3f}{total_n:>11.3f}{total_n / total_f:>11.1f}x")


if __name__ == "__main__":
    main()
