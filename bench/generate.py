"""Decode speed of `generate`'s loops against transformers' own `generate`, one group at a time.

Same model, prompt and lengths for every path: one prompt of --prompt-len random token ids, G
samples (--groups, default 8 and 32) of exactly --new-tokens tokens each (no end token, so every
path does the same work), plain sampling at temperature 1 (top-k and top-p off). Paths:

  hf-dynamic      transformers' `generate` with its dynamic cache (the prompt duplicated G times)
  hf-static       transformers' `generate` with cache_implementation="static", which it compiles
                  with torch.compile on CUDA (on a CPU only with --compile-on-cpu; skipped with
                  the reason printed where it fails)
  eager           r1omni_fast's `generate`, its eager loop (prefix shared by the G rows)
  static          the static-shaped step of model/decode.py, run eagerly
  graph           that step captured as a CUDA graph (CUDA only)

Per path: decode ms/step = (t(N) - t(1)) / (N - 1), t(n) the median wall time of a `generate`
call making n new tokens (so the prefill cancels out); tokens/s = G * N / t(N); peak memory (CUDA:
torch.cuda.max_memory_allocated during the t(N) call); the ratio of ms/step to the weight-read
floor (the LLM's weight bytes read once per step at --bandwidth-tbs, default 4.8 TB/s, the
H200's HBM3e figure; say so when quoting it); and the ratios against both transformers anchors
measured in the same run. The model is a Qwen2 LLM from a config in code with random weights
(--model 0.5b: HumanOmni-0.5B's LLM, hidden 896, 24 layers, vocab 151936; --model tiny: the
tiny model's LLM, for a CPU smoke run). bf16 on CUDA, fp32 on a CPU (--dtype to change).

    python bench/generate.py                                   # GPU: 0.5b, prompt 900, 512 new, G 8 and 32
    python bench/generate.py --model tiny --prompt-len 64 --new-tokens 16 --groups 2 --repeats 1   # CPU smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from r1omni_fast.model import decode  # noqa: E402
from r1omni_fast.model.generation import generate  # noqa: E402

MODELS = {
    "0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768),
    "tiny": dict(vocab_size=640, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096),
}
PATHS = ("hf-dynamic", "hf-static", "eager", "static", "graph")


class BareLLM(torch.nn.Module):
    """The part of the policy interface `generate` uses, over a bare causal LM (text prompts)."""

    def __init__(self, llm: torch.nn.Module) -> None:
        super().__init__()
        self.llm = llm
        self.processor = None
        self.prefill_rows = 0

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    def embed(self, input_ids: torch.Tensor, **_) -> torch.Tensor:
        return self.llm.get_input_embeddings()(input_ids)


def build_llm(name: str, dtype: torch.dtype, device: torch.device) -> Qwen2ForCausalLM:
    cfg = Qwen2Config(**MODELS[name], rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                      use_sliding_window=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        llm = Qwen2ForCausalLM(cfg)
    llm = llm.to(dtype).eval()
    llm.generation_config.eos_token_id = None
    llm.generation_config.pad_token_id = 0
    return llm


def weight_bytes(llm: torch.nn.Module) -> int:
    """Bytes of the LLM's distinct weights (a tied embedding counted once): what a step reads."""
    seen = {p.data_ptr(): p.numel() * p.element_size() for p in llm.parameters()}
    return sum(seen.values())


def runner(path: str, model: BareLLM, prompt: torch.Tensor, g: int, compile_on_cpu: bool):
    """A function ``n -> None`` making n new tokens for each of the G rows along ``path``."""
    llm, device = model.llm, model.device
    if path.startswith("hf-"):
        ids = prompt.repeat(g, 1)
        kwargs = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, eos_token_id=None, pad_token_id=0)
        if path == "hf-static":
            from transformers import CompileConfig

            if device.type != "cuda" and not compile_on_cpu:
                raise RuntimeError("torch.compile on a CPU is not attempted without --compile-on-cpu")
            kwargs["cache_implementation"] = "static"
            if device.type != "cuda":
                cc = CompileConfig()
                cc._compile_all_devices = True  # transformers compiles on CUDA-like devices only by default
                kwargs["compile_config"] = cc
        torch.manual_seed(0)
        return lambda n: llm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, **kwargs)
    if path == "graph" and device.type != "cuda":
        raise RuntimeError("CUDA graphs need a CUDA device")
    batch = {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)}
    gen = torch.Generator(device=device).manual_seed(0)
    return lambda n: generate(model, batch, num_generations=g, max_new_tokens=n, do_sample=True, temperature=1.0,
                              eos_token_id=[-1], pad_token_id=0, generator=gen, decode_loop=path, check_every=16)


def timed(fn, n: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(n)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="0.5b")
    ap.add_argument("--prompt-len", type=int, default=900)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--groups", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", type=lambda s: s.split(","), default=list(PATHS), help=",".join(PATHS))
    ap.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 on CUDA, else fp32")
    ap.add_argument("--bandwidth-tbs", type=float, default=4.8,
                    help="memory bandwidth for the weight-read floor, TB/s (default: the H200's 4.8)")
    ap.add_argument("--compile-on-cpu", action="store_true", help="try hf-static's torch.compile on a CPU too")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.new_tokens < 2:
        ap.error("--new-tokens must be >= 2 (ms/step is the difference between N and 1 new tokens)")
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        ap.error(f"--paths: unknown {sorted(unknown)}; choose from {','.join(PATHS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(args.dtype, torch.bfloat16 if cuda else torch.float32)
    model = BareLLM(build_llm(args.model, dtype, device))
    prompt = torch.randint(1, MODELS[args.model]["vocab_size"], (1, args.prompt_len),
                           generator=torch.Generator().manual_seed(0)).to(device)
    floor_ms = weight_bytes(model.llm) / (args.bandwidth_tbs * 1e12) * 1e3
    where = f"CUDA {torch.cuda.get_device_name()}" if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.model} Qwen2 LLM (random weights, {weight_bytes(model.llm) / 1e9:.3f} GB in {str(dtype)[6:]}) on "
          f"{where}; prompt {args.prompt_len}, {args.new_tokens} new tokens, median of {args.repeats}")
    print(f"weight-read floor {floor_ms:.3f} ms/step at {args.bandwidth_tbs} TB/s (--bandwidth-tbs; the default is "
          f"the H200's HBM figure)")
    head = f"{'path':<11}{'ms/step':>9}{'t(1) ms':>9}{'tokens/s':>10}{'x floor':>11}{'vs hf-dyn':>10}{'vs hf-static':>13}"
    for g in args.groups:
        print(f"\nG = {g}")
        print(head + (f"{'peak GiB':>10}" if cuda else ""))
        results: dict[str, dict] = {}
        for path in args.paths:  # each row printed as soon as measured (the anchors come first)
            try:
                fn = runner(path, model, prompt, g, args.compile_on_cpu)
                # warm-up: allocator, kernels; compilation and graph capture at both lengths
                for n in (1, args.new_tokens) if path in ("hf-static", "graph") else (1, 2):
                    fn(n)
                short = statistics.median(timed(fn, 1, device) for _ in range(args.repeats))
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                full = statistics.median(timed(fn, args.new_tokens, device) for _ in range(args.repeats))
                peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            except Exception as exc:  # noqa: BLE001 - a path that cannot run is reported and skipped
                print(f"{path:<11}skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
                continue
            if full <= short:
                print(f"{path:<11}t({args.new_tokens}) <= t(1): timing noise; raise --new-tokens or --repeats")
                continue
            r = results[path] = {"ms": (full - short) / (args.new_tokens - 1) * 1e3}
            ratios = [f"{results[a]['ms'] / r['ms']:.2f}x" if a in results else "-" for a in ("hf-dynamic", "hf-static")]
            line = (f"{path:<11}{r['ms']:>9.3f}{short * 1e3:>9.1f}{g * args.new_tokens / full:>10.0f}"
                    f"{r['ms'] / floor_ms:>10.1f}x{ratios[0]:>10}{ratios[1]:>13}")
            print(line + (f"{peak:>10.2f}" if cuda else ""))
        decode.clear_graphs(model)
    print("\nvs hf-*: the anchor's ms/step over this path's (above 1: faster). Targets (issue 20): graph >= 2x "
          "hf-static and >= 20x hf-dynamic at G = 8; graph within 5x of the floor at G = 32.")


if __name__ == "__main__":
    main()
