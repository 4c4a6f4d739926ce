"""GRPO loss head: r1omni_fast.kernels.grpo_loss against eager PyTorch (TRL's GRPOTrainer style)
and Liger-Kernel's triton_grpo_loss.

On a CUDA device, for each shape B x L x V (bf16 logits): the three losses are first checked to
agree on the same inputs (and our gradient against eager's), then forward+backward is timed
(median of --iters runs, CUDA events; the logits are restored from a pristine copy outside the
timed region because the kernels overwrite them with the gradient) and the peak memory beyond the
inputs is measured (torch.cuda.max_memory_allocated). Ratios are printed against both anchors.
On a CPU it only checks agreement, on small shapes (the kernels run in Triton's interpreter).

    python bench/loss.py                                  # GPU: 8x1024x151936 and 16x2048x151936
    python bench/loss.py --shapes 8x1024x151936 --sweep   # also try a few launch configurations
    python bench/loss.py --level sequence                 # GSPO importance sampling
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():  # must precede the first import of triton
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import torch.nn.functional as F  # noqa: E402

from r1omni_fast.kernels import backend, grpo_loss, selective_logprobs  # noqa: E402

BETA, EPS_LOW, EPS_HIGH, TEMPERATURE = 0.04, 0.2, 0.2, 1.0
GiB = 1024**3


def eager_trl_loss(logits, ids, adv, mask, old, ref, level, upcast=False):
    """TRL GRPOTrainer._compute_loss with its selective_log_softmax (row-wise log_softmax, which for
    bf16 logits returns bf16 log-probs); ``upcast`` computes them in fp32 instead (an exact anchor)."""
    logits = logits / TEMPERATURE
    per_token_logps = torch.stack(
        [
            F.log_softmax(row.float() if upcast else row, dim=-1).gather(-1, row_ids.unsqueeze(-1)).squeeze(-1)
            for row, row_ids in zip(logits, ids)
        ]
    ).float()
    log_ratio = per_token_logps - old
    if level == "token":
        log_w = log_ratio
    else:
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_w)
    coef_2 = torch.clamp(coef_1, 1 - EPS_LOW, 1 + EPS_HIGH)
    per_token_loss = -torch.min(coef_1 * adv.unsqueeze(1), coef_2 * adv.unsqueeze(1))
    kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
    per_token_loss = per_token_loss + BETA * kl
    return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def eager_fp32_loss(logits, ids, adv, mask, old, ref, level):
    return eager_trl_loss(logits, ids, adv, mask, old, ref, level, upcast=True)


def ours_loss(logits, ids, adv, mask, old, ref, level):
    loss, _ = grpo_loss(logits, ids, adv, mask=mask, old_logp=old, ref_logp=ref, beta=BETA, eps_low=EPS_LOW,
                        eps_high=EPS_HIGH, temperature=TEMPERATURE, importance_sampling_level=level)  # fmt: skip
    return loss


def liger_loss(logits_plus_one, ids, adv, mask, old, ref, level):
    """Liger takes (B, L + 1, V) logits and drops the last position itself."""
    from liger_kernel.transformers.grpo_loss import triton_grpo_loss

    loss, _ = triton_grpo_loss(
        logits_plus_one, old, ref, ids, adv, mask, temperature=TEMPERATURE, beta=BETA, eps_low=EPS_LOW,
        eps_high=EPS_HIGH, inplace=True, loss_type="grpo", importance_sampling_level=level, reduce=True,
    )  # fmt: skip
    return loss


def make_inputs(B, L, V, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    pristine = torch.randn(B, L + 1, V, generator=g, device=device, dtype=dtype).mul_(2)  # (B, L + 1, V)
    ids = torch.randint(0, V, (B, L), generator=g, device=device)
    lengths = torch.randint(L // 2, L + 1, (B,), generator=g, device=device)
    mask = (torch.arange(L, device=device)[None, :] < lengths[:, None]).float()
    adv = torch.randn(B, generator=g, device=device)
    with backend("auto" if device == "cuda" else "reference"):
        true = selective_logprobs(pristine[:, :-1], ids, TEMPERATURE)
    old = true + 0.1 * torch.randn(B, L, generator=g, device=device)
    ref = true + 0.1 * torch.randn(B, L, generator=g, device=device)
    return pristine, ids, adv, mask, old, ref


class Method:
    """A loss, the logits layout it takes, and how to (re)fill its leaf buffer from the pristine copy."""

    def __init__(self, name, fn, takes_extra_position, backend_name="auto", loss_rtol=1e-4):
        self.name, self.fn, self.extra, self.backend_name = name, fn, takes_extra_position, backend_name
        self.loss_rtol = loss_rtol  # agreement required with the first method's loss

    def buffer(self, pristine):
        view = pristine if self.extra else pristine[:, :-1]
        return view.clone().requires_grad_(True)

    def refill(self, buf, pristine):
        buf.grad = None
        with torch.no_grad():
            buf.copy_(pristine if self.extra else pristine[:, :-1])

    def step(self, buf, inputs, level):
        with backend(self.backend_name):
            loss = self.fn(buf, *inputs, level)
        loss.backward()
        return loss.detach()


def gradient_of(method, pristine, inputs, level):
    buf = method.buffer(pristine)
    loss = method.step(buf, inputs, level)
    grad = buf.grad if not method.extra else buf.grad[:, :-1]
    return float(loss), grad


def max_rel_grad_diff(a, b):
    """max |a - b| / max |b|, row by row so that no (B, L, V) fp32 temporary is made."""
    diff = max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))
    return diff / max(float(y.float().abs().max()) for y in b)


def check_agreement(methods, pristine, inputs, level):
    """Print each loss and its gradient's deviation from the first method's; return the losses."""
    anchor_loss, anchor_grad = gradient_of(methods[0], pristine, inputs, level)
    print(f"  {methods[0].name:<28} loss {anchor_loss:+.7f}")
    losses = {methods[0].name: anchor_loss}
    for method in methods[1:]:
        try:
            loss, grad = gradient_of(method, pristine, inputs, level)
        except Exception as exc:  # an anchor that cannot run here is reported, not fatal
            print(f"  {method.name:<28} could not run: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        rel = abs(loss - anchor_loss) / max(abs(anchor_loss), 1e-12)
        verdict = "agrees" if rel <= method.loss_rtol else f"DISAGREES (tolerance {method.loss_rtol:.0e})"
        grad_diff = max_rel_grad_diff(grad, anchor_grad)
        print(f"  {method.name:<28} loss {loss:+.7f}  rel diff {rel:.1e} {verdict}; "
              f"grad max diff / max {grad_diff:.1e}")  # fmt: skip
        losses[method.name] = loss
        del grad
    del anchor_grad
    return losses


def time_and_memory(method, pristine, inputs, level, iters, warmup=3):
    buf = method.buffer(pristine)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(warmup + iters):
        method.refill(buf, pristine)
        torch.cuda.synchronize()
        start.record()
        method.step(buf, inputs, level)
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end))
    method.refill(buf, pristine)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    method.step(buf, inputs, level)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del buf
    torch.cuda.empty_cache()
    return statistics.median(times), peak


def liger_available():
    try:
        import liger_kernel.transformers.grpo_loss  # noqa: F401
    except ImportError as exc:
        print(f"liger-kernel not importable ({exc}); its column is skipped")
        return False
    return True


def run_gpu(args):
    from r1omni_fast.kernels.ops.grpo_loss import launch_config

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, level {args.level}")
    # eager TRL rounds the log-probs to bf16 (ulp 2^-4 at |logp| ~ 12): it agrees only to ~5e-2
    methods = [
        Method("r1omni_fast grpo_loss", ours_loss, False),
        Method("eager (TRL style)", eager_trl_loss, False, loss_rtol=5e-2),
    ]
    if liger_available():
        methods.append(Method("liger triton_grpo_loss", liger_loss, True))
    rows = []
    for shape in args.shapes:
        B, L, V = shape
        print(f"\nshape B={B} L={L} V={V} bf16 (logits {B * L * V * 2 / GiB:.2f} GiB)")
        pristine, *inputs = make_inputs(B, L, V, torch.bfloat16, "cuda")
        check_agreement(methods, pristine, inputs, args.level)
        results = {}
        for method in methods:
            try:
                results[method.name] = time_and_memory(method, pristine, inputs, args.level, args.iters)
            except torch.cuda.OutOfMemoryError:
                print(f"  {method.name}: out of memory at this shape")
                torch.cuda.empty_cache()
        if args.sweep:
            for cfg in ({"programs_per_sm": 1}, {"programs_per_sm": 4}, {"num_warps": 8}, {"block_v": 8192},
                        {"programs_per_sm": 8, "num_warps": 8}):  # fmt: skip
                with launch_config(**cfg):
                    ms, peak = time_and_memory(methods[0], pristine, inputs, args.level, args.iters)
                print(f"  sweep {cfg}: {ms:.3f} ms, peak extra {peak / 2**20:.0f} MiB")
        rows.append((shape, results))
        del pristine, inputs
        torch.cuda.empty_cache()
    print("\nforward+backward, median ms | peak extra MiB | speed-up of r1omni_fast over each")
    print("(issue 5 targets: >= 1.2x over Liger, >= 8x over eager, <= 64 MB beyond the logits)")
    for (B, L, V), results in rows:
        if methods[0].name not in results:
            continue
        ours_ms = results[methods[0].name][0]
        cells = [
            f"{name}: {ms:7.3f} ms {mem / 2**20:8.0f} MiB x{ms / ours_ms:5.2f}" for name, (ms, mem) in results.items()
        ]
        print(f"{B}x{L}x{V}: " + " | ".join(cells))


def run_cpu(args):
    print("no CUDA device: agreement only (kernels under TRITON_INTERPRET=1), small shapes")
    methods = [
        Method("eager, fp32 log-probs", eager_fp32_loss, False),
        Method("eager (TRL style)", eager_trl_loss, False, loss_rtol=5e-2),
        Method("r1omni_fast reference", ours_loss, False, "reference"),
        Method("r1omni_fast triton (interp)", ours_loss, False, "triton"),
    ]
    if liger_available():
        methods.append(Method("liger triton_grpo_loss", liger_loss, True))
    for dtype in (torch.float32, torch.bfloat16):
        for B, L, V in ((2, 8, 300), (3, 5, 1000)):
            print(f"\nshape B={B} L={L} V={V} {dtype}")
            pristine, *inputs = make_inputs(B, L, V, dtype, "cpu")
            check_agreement(methods, pristine, inputs, args.level)


def parse_shape(text):
    parts = tuple(int(p) for p in text.lower().split("x"))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"shape must be BxLxV, got {text!r}")
    return parts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",")],
                        default=[(8, 1024, 151936), (16, 2048, 151936)])  # fmt: skip
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--level", choices=["token", "sequence"], default="token")
    parser.add_argument("--sweep", action="store_true", help="also time a few launch configurations of our kernel")
    args = parser.parse_args()
    run_gpu(args) if torch.cuda.is_available() else run_cpu(args)


if __name__ == "__main__":
    main()
