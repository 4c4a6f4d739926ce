"""Atomic, resumable checkpoints: ``OUT/checkpoint-N/``.

A checkpoint is written into a hidden temporary folder beside its final place and renamed
only once every file is on disk, so an interrupted write never leaves a half checkpoint that
resume would pick up. It holds the model (``model.safetensors`` + config + tokenizer, written
by the model's ``save_pretrained``), ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pt``
(Python, numpy, torch CPU and CUDA generators) and ``trainer_state.json`` (step, data order
position, anything the trainer needs). Everything is loaded with ``weights_only=True``: nothing
is unpickled.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

_CKPT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG the training loop draws from, as tensors and plain values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest step first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    *,
    save_model: Callable[[Path], None],
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    trainer_state: dict[str, Any],
    extra_tensors: dict[str, Any] | None = None,
    save_total_limit: int | None = None,
    save_sharded: Callable[[Path], None] | None = None,
    dist: Any = None,
) -> Path:
    """Write ``output_dir/checkpoint-{step}`` atomically and keep the newest ``save_total_limit``.

    ``save_model(folder)`` writes the model files (``model.save_pretrained``). ``extra_tensors``
    (e.g. a sampler generator's state) is stored in ``rng_state.pt`` beside the global RNGs.

    Several ranks (``dist``, a :class:`r1omni_fast.train.distributed.Dist`): every rank calls
    this; ``save_model`` and ``save_sharded(folder)`` are called on every rank (they are
    collectives and write from the ranks that own the data); rank 0 writes the rest and renames
    the folder once all ranks are done. ``optimizer`` is then None (its state is in the sharded
    checkpoint).
    """
    main = dist is None or dist.is_main
    out = Path(output_dir)
    final = out / f"checkpoint-{step}"
    tmp = out / (f".tmp-checkpoint-{step}" if dist is not None and dist.enabled else f".tmp-checkpoint-{step}-{os.getpid()}")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    if dist is not None:
        dist.barrier()
    save_model(tmp)
    if save_sharded is not None:
        save_sharded(tmp)
    if not main:
        dist.barrier()  # rank 0 renames the folder
        return final
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    rng = capture_rng_state()
    if extra_tensors:
        rng["extra"] = extra_tensors
    torch.save(rng, tmp / "rng_state.pt")
    state = dict(trainer_state, global_step=step)
    with open(tmp / STATE_FILE, "w") as f:
        json.dump(state, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():  # a rerun of the same step replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    if save_total_limit is not None and save_total_limit > 0:
        for old in checkpoint_dirs(out)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    if dist is not None:
        dist.barrier()
    return final


class ResumeError(RuntimeError):
    """A checkpoint that cannot be resumed from (damaged files); the message names it."""


def read_trainer_state(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/trainer_state.json``; a missing or unreadable one is an error naming it."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a complete checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResumeError(f"{path} is unreadable ({exc}): delete {folder} to resume from the checkpoint "
                          "before it") from None
    if not isinstance(state, dict) or "global_step" not in state:
        raise ResumeError(f"{path} has no global_step: delete {folder} to resume from the checkpoint before it")
    return state


def load_checkpoint(
    folder: str | os.PathLike,
    *,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Restore optimizer (from ``optimizer.pt`` when the checkpoint has one), scheduler and RNGs
    from ``folder``; return (trainer_state, extra).

    The model weights are loaded by the caller (``OmniModel.from_pretrained(folder)``), and so is
    the optimizer state of a sharded checkpoint (``r1omni_fast.train.distributed.load_sharded``).
    """
    folder = Path(folder)
    state = read_trainer_state(folder)
    if optimizer is not None and (folder / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    rng = torch.load(folder / "rng_state.pt", weights_only=True)
    restore_rng_state(rng)
    return state, rng.get("extra")
