"""Build-level checks of r1omni_fast.kernels: the Triton kernels compile for a Hopper GPU (sm_90)
on a machine without one, and importing the package pulls in neither triton nor native code.

The CPU tests run the kernels in Triton's interpreter, which does not type-check loop-carried
values, constexpr branches or pointer arithmetic the way the compiler does; compiling ahead of
time to a cubin catches those errors here. Runs in a subprocess because TRITON_INTERPRET=1 (set
by conftest) swaps the jitted functions for interpreted ones at import time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON_SRC = Path(__file__).resolve().parents[1] / "python"


def _compile_all(capability: int) -> None:
    from triton import compile as triton_compile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from r1omni_fast.kernels.ops import grpo_loss as ops
    from r1omni_fast.kernels.ops import group_advantages as adv_ops

    target = GPUTarget("cuda", capability, 32)

    def build(fn, signature, constexprs):
        kernel = triton_compile(
            ASTSource(fn=fn, signature=signature, constexprs=constexprs),
            target=target,
            options={"num_warps": 16, "enable_fp_fusion": True},
        )
        assert kernel.asm["cubin"], fn.__name__
        print("compiled", fn.__name__, constexprs)

    rows = {"n_rows": "i32", "seq_len": "i32", "vocab": "i32"}
    for dt in ("bf16", "fp16", "fp32"):
        logits = {"logits_ptr": f"*{dt}"}
        lstrides = {"stride_lb": "i64", "stride_lt": "i32"}
        gstrides = {"stride_gb": "i64", "stride_gt": "i32"}
        token_sig = {
            **logits, "grad_ptr": f"*{dt}", "ids_ptr": "*i64", "weight_ptr": "*fp32", "adv_ptr": "*fp32",
            "old_ptr": "*fp32", "ref_ptr": "*fp32", "pmask_ptr": "*fp32", "logp_ptr": "*fp32", "loss_ptr": "*fp32",
            "kl_ptr": "*fp32", "clip_ptr": "*i8", "entropy_ptr": "*fp32", **rows, **lstrides, **gstrides,
            "inv_temperature": "fp32", "beta": "fp32", "clip_low": "fp32", "clip_high": "fp32", "delta": "fp32",
            "sapo_pos": "fp32", "sapo_neg": "fp32", "HAS_OLD": "constexpr", "HAS_REF": "constexpr",
            "HAS_DELTA": "constexpr", "HAS_PMASK": "constexpr", "KL_TIMES_RATIO": "constexpr",
            "WRITE_GRAD": "constexpr", "WRITE_ENTROPY": "constexpr", "LOSS_KIND": "constexpr", "BLOCK_V": "constexpr",
        }  # fmt: skip
        names = ("HAS_OLD", "HAS_REF", "HAS_DELTA", "HAS_PMASK", "KL_TIMES_RATIO", "WRITE_GRAD", "WRITE_ENTROPY")
        for kind in sorted(set(ops._LOSS_KIND.values())):  # grpo-like, cispo, sapo
            for flag in (True, False):
                constexprs = dict(dict.fromkeys(names, flag), LOSS_KIND=kind, BLOCK_V=4096)
                build(ops._grpo_token_kernel, token_sig, constexprs)
        if dt != "bf16":  # the other kernels differ by dtype only in their loads and stores
            continue
        logprobs_sig = {
            **logits, "ids_ptr": "*i64", "active_ptr": "*fp32", "logp_ptr": "*fp32", "lse_ptr": "*fp32",
            "entropy_ptr": "*fp32", **rows, **lstrides, "inv_temperature": "fp32", "HAS_ACTIVE": "constexpr",
            "WRITE_ENTROPY": "constexpr", "BLOCK_V": "constexpr",
        }  # fmt: skip
        for flag in (True, False):
            build(ops._logprobs_kernel, logprobs_sig, {"HAS_ACTIVE": flag, "WRITE_ENTROPY": flag, "BLOCK_V": 4096})
        backward_sig = {
            **logits, "grad_ptr": f"*{dt}", "ids_ptr": "*i64", "dlogp_ptr": "*fp32", "lse_ptr": "*fp32", **rows,
            **lstrides, **gstrides, "inv_temperature": "fp32", "BLOCK_V": "constexpr",
        }  # fmt: skip
        build(ops._logprobs_backward_kernel, backward_sig, {"BLOCK_V": 4096})
        scale_sig = {"grad_ptr": f"*{dt}", "scale_ptr": "*fp32", **rows, **gstrides, "BLOCK_V": "constexpr"}
        build(ops._scale_rows_kernel, scale_sig, {"BLOCK_V": 4096})
    advantages_sig = {
        "rewards_ptr": "*fp32", "weights_ptr": "*fp32", "adv_ptr": "*fp32", "mean_ptr": "*fp32", "std_ptr": "*fp32",
        "n_groups": "i32", "group_size": "i32", "n_funcs": "i32", "stride_n": "i32", "stride_f": "i32",
        "eps": "fp32", "SCALE": "constexpr", "BLOCK_GROUPS": "constexpr", "BLOCK_G": "constexpr",
        "BLOCK_N": "constexpr",
    }  # fmt: skip
    for scale in range(3):
        build(adv_ops._group_advantages_kernel, advantages_sig,
              {"SCALE": scale, "BLOCK_GROUPS": 32, "BLOCK_G": 8, "BLOCK_N": 1024})  # fmt: skip


def test_kernels_compile_for_sm90():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(PYTHON_SRC), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-W", "error", __file__], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.count("compiled") == 3 * 3 * 2 + (2 + 1 + 1) + 3  # dtypes x loss kinds x flags, ...


def test_importing_the_kernels_loads_neither_triton_nor_the_native_extension():
    # The kernels must import on a GPU box that has only torch (and triton, imported on first use).
    code = (
        "import sys, r1omni_fast.kernels as k; "
        "assert hasattr(k, 'grpo_loss'); "
        "bad = [m for m in ('triton', 'r1omni_fast._native', 'r1omni_fast.media', 'r1omni_fast.model') "
        "if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PYTHON_SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


if __name__ == "__main__":
    _compile_all(90)
