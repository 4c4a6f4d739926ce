"""Atomic, resumable checkpoints: ``OUT/checkpoint-N/``.

A checkpoint is written into a hidden temporary folder beside its final place and renamed
only once every file is on disk, so an interrupted write never leaves a half checkpoint that
resume would pick up. It holds the model (``model.safetensors`` + config + tokenizer, written
by the model's ``save_pretrained``), ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pt``
(Python, numpy, torch CPU and CUDA generators) and ``trainer_state.json`` (step, data order
position, anything the trainer needs). Everything is loaded with ``weights_only=True``: nothing
is unpickled.

Durability: every file and folder of the temporary checkpoint is fsynced before the rename and
the output folder after it, so a power loss leaves either no ``checkpoint-N`` or a complete one.
The temporary folder is ``.tmp-checkpoint-N-PID`` (PID of the writing process, rank 0's with
several ranks); a write that fails (a full disk, an interrupt) removes it, and
:func:`remove_stale_temporaries` removes those left by processes that died (SIGKILL). A full disk
is one :class:`CheckpointWriteError` line naming the filesystem; the previous checkpoint stays.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from r1omni_fast.atomic import fsync_dir as _fsync_dir
from r1omni_fast.atomic import fsync_tree
from r1omni_fast.train.faults import TrainingError

log = logging.getLogger(__name__)

_CKPT = re.compile(r"^checkpoint-(\d+)$")
_TMP = re.compile(r"^\.tmp-checkpoint-(\d+)-(\d+)$")
STATE_FILE = "trainer_state.json"


class CheckpointWriteError(TrainingError):
    """A checkpoint could not be written (e.g. no space left); its partial folder was removed."""


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
    pid = os.getpid() if dist is None or not dist.enabled else dist.gather(os.getpid())[0]
    tmp = out / f".tmp-checkpoint-{step}-{pid}"
    if main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        if main:
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
            _torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng = capture_rng_state()
        if extra_tensors:
            rng["extra"] = extra_tensors
        _torch_save(rng, tmp / "rng_state.pt")
        state = dict(trainer_state, global_step=step)
        with open(tmp / STATE_FILE, "w") as f:
            json.dump(state, f, indent=2)
        fsync_tree(tmp)  # every file and folder on disk before the rename makes it visible
    except BaseException as exc:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and _out_of_space(exc, out):
            previous = latest_checkpoint(out)
            kept = (f"the previous checkpoint is intact ({previous.name})" if previous is not None
                    else "no earlier checkpoint exists")
            raise CheckpointWriteError(f"no space left on {filesystem_of(out)} while writing {final.name}; "
                                       f"{kept}") from exc
        raise
    if final.exists():  # a rerun of the same step replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(out)
    if save_total_limit is not None and save_total_limit > 0:
        for old in checkpoint_dirs(out)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    if dist is not None:
        dist.barrier()
    return final


def _torch_save(obj: Any, path: Path) -> None:
    # through a Python file object: a failed write keeps its OSError (errno) as the cause
    with open(path, "wb") as f:
        torch.save(obj, f)


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` (or an exception it chains) is ENOSPC, or the filesystem is full (libraries
    such as torch's zip writer replace the OSError by their own message)."""
    seen: set = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(cur) or "os error 28" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def filesystem_of(path: str | os.PathLike) -> str:
    """``MOUNTPOINT (SOURCE, TYPE)`` of the filesystem holding ``path`` (from /proc/mounts when
    readable), else its mount point."""
    mount = Path(os.path.abspath(path))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        with open("/proc/mounts") as f:
            for line in f:
                source, point, kind = (line.split() + ["", "", ""])[:3]
                if point == str(mount):
                    return f"{mount} ({source}, {kind})"
    except OSError:
        pass
    return str(mount)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(output_dir: str | os.PathLike) -> list[Path]:
    """Remove the ``.tmp-checkpoint-N-PID`` folders of ``output_dir`` whose process (on this
    machine) is dead: writes interrupted by SIGKILL or a crash. Returns the folders removed."""
    out = Path(output_dir)
    removed = []
    if not out.is_dir():
        return removed
    for p in out.iterdir():
        m = _TMP.match(p.name)
        if m is None or not p.is_dir():
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)
        log.info("removed %s, left by an interrupted checkpoint write (process %d is gone)", p, pid)
        removed.append(p)
    return removed


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
