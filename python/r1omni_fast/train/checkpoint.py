"""Atomic, resumable checkpoints: ``OUT/checkpoint-N/``.

A checkpoint is written into a hidden temporary folder beside its final place and renamed
only once every file is on disk, so an interrupted write never leaves a half checkpoint that
resume would pick up. It holds the model (``model.safetensors`` + config + tokenizer, written
by the model's ``save_pretrained``), ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pt``
(Python, numpy, torch CPU and CUDA generators) and ``trainer_state.json`` (step, data order
position, the run's fingerprint, anything the trainer needs). Nothing is unpickled: the ``.pt``
files load with ``weights_only=True``, a sharded ``dcp/`` (several ranks) loads only through
:func:`safe_dcp_reader` (metadata read by an unpickler that admits only torch's checkpoint
metadata classes, objects with ``weights_only=True``) and after its ``manifest.json`` (written by
this project: every file with its size, the metadata's sha256) matches the files.

Damage: :func:`check_folder` reads every file of a checkpoint or model folder without
unpickling (JSON parsed, safetensors headers against the file sizes, ``.pt`` archives' CRCs, the
``dcp/`` manifest) and raises :class:`DamagedFileError` naming the first bad file; resume then
falls back to the newest earlier checkpoint that passes (``train.common.find_resume``).

Durability: every file and folder of the temporary checkpoint is fsynced before the rename and
the output folder after it, so a power loss leaves either no ``checkpoint-N`` or a complete one.
The temporary folder is ``.tmp-checkpoint-N-PID`` (PID of the writing process, rank 0's with
several ranks); a write that fails (a full disk, an interrupt) removes it, and
``r1omni_fast.atomic.remove_dead_temporaries`` removes those left by processes that died (SIGKILL). A full disk
is one :class:`CheckpointWriteError` line naming the filesystem; the previous checkpoint stays.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from r1omni_fast.config import AnyConfig
from r1omni_fast.atomic import process_alive
from r1omni_fast.atomic import fsync_dir as _fsync_dir
from r1omni_fast.atomic import fsync_tree
from r1omni_fast.model.files import DamagedFileError, check_model_files
from r1omni_fast.train.faults import TrainingError

log = logging.getLogger(__name__)

_CKPT = re.compile(r"^checkpoint-(\d+)$")
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


def step_of(folder: str | os.PathLike) -> int:
    """The step N of a ``checkpoint-N`` folder."""
    m = _CKPT.match(Path(folder).name)
    if m is None:
        raise ValueError(f"{folder} is not a checkpoint-N folder")
    return int(m.group(1))


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
        # only checkpoints up to this one rotate: a higher-numbered one (a damaged checkpoint set
        # aside by a fallback is renamed, but never guess) is never a reason to delete this one
        older = [d for d in checkpoint_dirs(out) if step_of(d) <= step]
        for old in older[:-save_total_limit]:
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
        optimizer.load_state_dict(safe_load(folder / "optimizer.pt"))
    if scheduler is not None:
        scheduler.load_state_dict(safe_load(folder / "scheduler.pt"))
    rng = safe_load(folder / "rng_state.pt")
    restore_rng_state(rng)
    return state, rng.get("extra")


def safe_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` (tensors and plain values only, nothing run); a
    missing, cut or refused file is a :class:`ResumeError` naming it."""
    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise ResumeError(f"{path} is missing: the checkpoint is incomplete") from None
    except Exception as exc:  # torch's unpickling errors have no common type
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ResumeError(f"{path} cannot be loaded ({why})") from None


# ----------------------------------------------------------------------- damage, without unpickling

MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "r1omni-fast dcp manifest 1"


def check_archive(path: str | os.PathLike) -> None:
    """Raise :class:`DamagedFileError` unless ``path`` (a ``torch.save`` file) is a complete zip
    archive whose members pass their CRC check (read, never unpickled)."""
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise DamagedFileError(path, f"not a complete torch archive: {exc}") from None
    if bad is not None:
        raise DamagedFileError(path, f"member {bad} fails its CRC check")


def check_folder(folder: str | os.PathLike) -> None:
    """Read every file ``eval``, ``predict``, ``merge`` or a resume of ``folder`` would read, without
    unpickling: each JSON parsed, each safetensors checked against its header, for a checkpoint
    also ``optimizer.pt`` / ``scheduler.pt`` / ``rng_state.pt`` (archive CRCs) and ``dcp/`` (its
    manifest). Raises :class:`DamagedFileError` naming the first bad file; a missing file is left
    to the loader's own message."""
    folder = Path(folder)
    check_model_files(folder)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pt"):
        if (folder / name).exists():
            check_archive(folder / name)
    if (folder / "dcp").is_dir():
        check_manifest(folder / "dcp")
        with open(folder / "dcp" / ".metadata", "rb") as f:  # refused here already, before any load
            _restricted_load(f, folder / "dcp" / ".metadata")


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(dcp_dir: str | os.PathLike) -> None:
    """``dcp_dir/manifest.json``: every file of the Distributed Checkpoint with its size, and the
    sha256 of its (pickled) ``.metadata``; rank 0 calls it once ``dcp.save`` has returned."""
    dcp_dir = Path(dcp_dir)
    files = {p.name: {"size": p.stat().st_size} for p in sorted(dcp_dir.iterdir())
             if p.is_file() and p.name != MANIFEST}
    files[".metadata"]["sha256"] = _sha256(dcp_dir / ".metadata")
    with open(dcp_dir / MANIFEST, "w") as f:
        json.dump({"format": _MANIFEST_FORMAT, "files": files}, f, indent=1)


def check_manifest(dcp_dir: str | os.PathLike) -> None:
    """Raise :class:`DamagedFileError` unless ``dcp_dir`` holds a manifest of this project and
    exactly its files, each of its size, the metadata of its hash."""
    dcp_dir = Path(dcp_dir)
    path = dcp_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        listed = manifest["files"] if manifest.get("format") == _MANIFEST_FORMAT else None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        listed = None
    if not isinstance(listed, dict) or ".metadata" not in listed:
        raise DamagedFileError(path, "missing or not a manifest of r1omni-fast: this sharded checkpoint was not "
                                     "written by this project, it is not loaded")
    present = {p.name for p in dcp_dir.iterdir() if p.is_file() and p.name != MANIFEST}
    if present != set(listed):
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        raise DamagedFileError(dcp_dir / (extra or missing)[0], "not listed in manifest.json" if extra
                               else "listed in manifest.json but missing")
    for name, entry in listed.items():
        size = (dcp_dir / name).stat().st_size
        if size != entry.get("size"):
            raise DamagedFileError(dcp_dir / name, f"{size} bytes, manifest.json says {entry.get('size')}")
    if _sha256(dcp_dir / ".metadata") != listed[".metadata"].get("sha256"):
        raise DamagedFileError(dcp_dir / ".metadata", "its sha256 differs from manifest.json")


#: the only globals a Distributed Checkpoint's ``.metadata`` pickle may name
_DCP_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", n) for n in (
        "Metadata", "MetadataIndex", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "TensorStorageMetadata", "StorageMeta", "_MEM_FORMAT_ENCODING")} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
    ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset")}


def _restricted_load(stream: Any, path: Path) -> Any:
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            obj = None
            if (module, name) in _DCP_GLOBALS or module == "torch" and isinstance(getattr(torch, name, None),
                                                                                      torch.dtype):
                obj = super().find_class(module, name)
            if obj is None:
                raise DamagedFileError(path, f"its pickle names {module}.{name}, which DCP metadata never holds: "
                                             "refused, nothing was run")
            return obj

    try:
        return Restricted(stream).load()
    except DamagedFileError:
        raise
    except Exception as exc:  # a cut or foreign pickle
        raise DamagedFileError(path, f"unreadable metadata: {exc}") from None


def safe_dcp_reader(dcp_dir: str | os.PathLike) -> tuple:
    """(storage reader, load planner) for ``torch.distributed.checkpoint.load`` of ``dcp_dir``
    that never unpickles anything but DCP's metadata classes: ``.metadata`` through an
    allow-list unpickler, the non-tensor items with ``torch.load(weights_only=True)``. The
    manifest is checked first (:func:`check_manifest`)."""
    import io

    from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    dcp_dir = Path(dcp_dir)
    check_manifest(dcp_dir)

    class Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            rank = kwargs.get("rank")
            path = dcp_dir / (".metadata" if rank is None else f"__{rank}.metadata")
            with open(path, "rb") as f:
                metadata = _restricted_load(f, path)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return Reader(str(dcp_dir)), Planner()


# ------------------------------------------------------------------------------ run fingerprint

#: fields that define what a run is: a resume with another value is refused naming the field
IDENTITY_FIELDS = (
    "data_file", "label_set", "seed", "tunable_parts", "use_peft", "lora_r", "lora_alpha", "lora_dropout",
    "lora_target_modules", "lora_modules_to_save", "gradient_accumulation_steps",
    "num_frames", "max_length", "prompt_style", "chat_template",
    # GRPO: the group, the loss and the rewards
    "num_generations", "max_prompt_length", "max_completion_length", "beta", "epsilon", "epsilon_high", "delta",
    "loss_type", "importance_sampling_level", "num_iterations", "steps_per_generation", "scale_rewards",
    "reward_funcs", "reward_weights", "multi_objective_aggregation", "reward_mode", "sync_ref_model",
    "shuffle_dataset", "question", "solution_style")
#: fields a resume applies (and logs) when they changed: the optimizer's groups and the schedule
#: are rewritten, the others are read by the loop as it goes
APPLIED_FIELDS = ("learning_rate", "weight_decay", "lr_scheduler_type", "warmup_ratio", "max_steps",
                  "num_train_epochs", "logging_steps", "save_steps", "save_total_limit", "eval_file", "eval_steps",
                  "eval_max_new_tokens", "per_device_eval_batch_size")
#: bytes read per sample, and samples, of a weights signature
_SAMPLE, _SAMPLES = 1 << 16, 16


def weights_signature(model_path: str | os.PathLike) -> str:
    """A cheap signature of the weights of a model folder: sha256 over, for each top-level
    ``*.safetensors`` file (sorted), its name, size, header and 16 blocks of 64 KiB spread over
    its data. Another or retrained model changes it; a copy (another mtime) does not; a single
    changed byte between the blocks goes unseen. "" for a folder without safetensors."""
    import hashlib

    h = hashlib.sha256()
    folder = Path(model_path)
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}:".encode())
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            h.update(f.read(min(n, size)))
            start = 8 + n
            span = max(size - start - _SAMPLE, 0)
            for i in range(_SAMPLES):
                f.seek(start + span * i // max(_SAMPLES - 1, 1))
                h.update(f.read(_SAMPLE))
    return h.hexdigest() if any(folder.glob("*.safetensors")) else ""


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def file_signature(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the bytes of the file at ``path``; "" when it is no regular file."""
    import hashlib

    if not os.path.isfile(path):
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_fingerprint(cfg: AnyConfig) -> Dict[str, Any]:
    """What a checkpoint records of its run (``trainer_state.json``'s ``fingerprint``): the stage,
    the starting model (absolute path and :func:`weights_signature`), the data file (absolute
    path, and its contents' :func:`file_signature` as ``data_signature``), the
    :data:`IDENTITY_FIELDS` and the :data:`APPLIED_FIELDS` of ``cfg`` it has."""
    model = os.path.abspath(cfg.model_name_or_path) if cfg.model_name_or_path else None
    fields = {n: _plain(getattr(cfg, n)) for n in IDENTITY_FIELDS if hasattr(cfg, n)}
    if fields.get("data_file"):
        fields["data_file"] = os.path.abspath(fields["data_file"])
    return {"stage": cfg.stage, "model": model,
            "model_weights": weights_signature(model) if model and os.path.isdir(model) else "",
            "data_signature": file_signature(fields["data_file"]) if fields.get("data_file") else "",
            "fields": fields, "applied": {n: _plain(getattr(cfg, n)) for n in APPLIED_FIELDS if hasattr(cfg, n)}}


def compare_fingerprint(folder: Path, state: Dict[str, Any], cfg: AnyConfig) -> List[str]:
    """Check that ``cfg`` continues the run of the checkpoint ``folder`` (trainer state ``state``):
    another stage, starting model or identity field raises :class:`ResumeError` naming both
    values, and so does a data file whose contents changed under the same path; returns one line
    per changed applied field (the caller applies and logs them).
    Checkpoints written before fingerprints are checked for their stage only."""
    saved_stage = state.get("stage")
    if saved_stage is not None and saved_stage != cfg.stage:
        raise ResumeError(f"resume: {folder} is a checkpoint of a {saved_stage} run, this config is stage "
                          f"{cfg.stage}: choose another output_dir (a {cfg.stage} run starts from the {saved_stage} "
                          "output with model_name_or_path)")
    saved = state.get("fingerprint")
    if not isinstance(saved, dict):
        log.warning("resume: %s holds no run fingerprint (written by an older version): the model, data and "
                    "settings are not compared", folder)
        return []
    now = run_fingerprint(cfg)
    if saved.get("model") != now["model"] or saved.get("model_weights") != now["model_weights"]:
        same_weights = saved.get("model_weights") == now["model_weights"] and now["model_weights"]
        if same_weights:
            log.warning("resume: the starting model moved from %s to %s (same weights)", saved.get("model"),
                        now["model"])
        elif saved.get("model") == now["model"]:
            raise ResumeError(f"resume: the weights of model_name_or_path {now['model']} changed since {folder} was "
                              "written (another model in the same folder): resume from the model the run started "
                              "from, or start a new output_dir")
        else:
            raise ResumeError(f"resume: {folder} was trained from {saved.get('model')}, this config starts from "
                              f"{now['model']}: set model_name_or_path back, or start a new output_dir")
    for name, value in now["fields"].items():
        if name in saved.get("fields", {}) and saved["fields"][name] != value:
            raise ResumeError(f"resume: {name} was {saved['fields'][name]!r} in {folder}, this config has "
                              f"{value!r}: resume with the same {name}, or start a new output_dir")
    if saved.get("data_signature") and saved["data_signature"] != now["data_signature"]:
        # same path (checked above), other contents: the saved data position would point elsewhere
        raise ResumeError(f"resume: data_file {now['fields'].get('data_file')} changed since {folder} was written "
                          "(its contents differ, so the run's position in the data no longer holds): put back the "
                          "file the run trained on, or start a new output_dir from the checkpoint's model "
                          f"(model_name_or_path: {folder})")
    return [f"{name} {saved['applied'][name]!r} -> {value!r}" for name, value in now["applied"].items()
            if name in saved.get("applied", {}) and saved["applied"][name] != value]


# ------------------------------------------------------------------------------ the run's lock

LOCK_FILE = ".r1omni-fast.lock"


class RunLock:
    """``OUTPUT_DIR/.r1omni-fast.lock``: the run that holds it owns the folder.

    :meth:`acquire` creates it (exclusively) with the holder's pid, host and start time. A lock
    of a live process, or of another host (whose processes cannot be checked), is refused with a
    :class:`r1omni_fast.config.ConfigError` naming the holder; a lock left by a dead process of
    this host is taken over with a warning; the same process may acquire it again. A folder that
    cannot be created or written is a ConfigError too. :meth:`release` removes it when it is ours.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.held = False
        self.made: List[Path] = []  # the folders acquire() created, deepest first

    def _holder(self) -> Optional[Dict[str, Any]]:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        import socket
        import time

        from r1omni_fast.config import ConfigError

        host = socket.gethostname()
        missing = [p for p in [self.folder, *self.folder.parents] if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.made = missing
        except OSError as exc:
            raise ConfigError(f"output_dir: cannot create {self.folder} ({exc.strerror or exc}): choose a folder "
                              "you can write") from None
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # unreadable: being written right now, or cut by a crash
                    if time.time() - self.path.stat().st_mtime < 10:
                        time.sleep(0.5)
                        continue
                    log.warning("output_dir %s: removing an unreadable lock file %s", self.folder, self.path)
                elif holder.get("host") == host and holder.get("pid") == os.getpid():
                    self.held = True
                    return
                elif holder.get("host") == host and not process_alive(int(holder.get("pid", -1))):
                    log.warning("output_dir %s: taking over the lock of process %s (started %s), which is gone",
                                self.folder, holder.get("pid"), holder.get("started"))
                else:
                    gone = (" (if it is gone, delete the lock file)" if holder.get("host") != host else "")
                    raise ConfigError(f"output_dir {self.folder} is in use by another run: pid {holder.get('pid')} "
                                      f"on {holder.get('host')}, started {holder.get('started')} ({self.path}): wait "
                                      f"for it to end or choose another output_dir{gone}")
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            except OSError as exc:
                raise ConfigError(f"output_dir {self.folder} is not writable ({exc.strerror or exc}): choose a "
                                  "folder you can write, or fix its permissions") from None
            info = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(info, f)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                raise ConfigError(f"output_dir {self.folder} is not writable ({exc.strerror or exc}): free space "
                                  "or choose another folder") from None
            self.held = True
            return
        raise ConfigError(f"output_dir {self.folder}: could not take {self.path} (another run is starting there)")

    def release(self) -> None:
        """Remove the lock when it is ours; folders :meth:`acquire` created that are still empty
        then (a run refused before it wrote anything) go too, so a failed start leaves no trace."""
        holder = self._holder() if self.held else None
        if holder is not None and holder.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                self.path.unlink()
            for folder in self.made:
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    break
        self.held = False
