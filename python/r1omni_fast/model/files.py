"""Model folders checked without loading anything: every JSON file parsed, every safetensors
file's header checked against the file's size, so that a cut, empty or unreadable file is one
:class:`DamagedFileError` line naming it instead of a traceback from deep inside a loader (or,
worse, a model that loads with some tensors missing). Nothing is unpickled.

Every command that loads a model calls :func:`check_model_files` (``r1omni_fast.model.policy.
load_policy``, ``r1omni_fast.model.lora.load_with_adapter``); a training checkpoint adds its own
files (``r1omni_fast.train.checkpoint.check_folder``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import List

from r1omni_fast.model.types import CheckpointError

#: folders of a model or run folder that are not part of the model
_NOT_MODEL = re.compile(r"^(checkpoint-\d+|dcp|runs|\..*)$")


class DamagedFileError(CheckpointError):
    """A file of a checkpoint or model folder is empty, cut or unreadable (a ``CheckpointError``,
    hence a ``ValueError``: every command prints it as one line). ``path`` is the file."""

    def __init__(self, path: str | os.PathLike, why: str) -> None:
        self.path, self.why = Path(path), why
        super().__init__(f"{path} is damaged ({why})")


def check_safetensors(path: str | os.PathLike) -> None:
    """Raise :class:`DamagedFileError` unless ``path`` is a complete safetensors file: a JSON
    header whose tensors end exactly at the end of the file (an empty or cut file fails)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise DamagedFileError(path, f"{size} bytes, no safetensors header")
            n = int.from_bytes(head, "little")
            if n > size - 8:
                raise DamagedFileError(path, f"its safetensors header alone should be {n} bytes, the whole file is {size}: cut short")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise DamagedFileError(path, exc.strerror or str(exc)) from None
    except ValueError as exc:
        if isinstance(exc, DamagedFileError):
            raise
        raise DamagedFileError(path, f"its header is not valid JSON: {exc}") from None
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    data = size - 8 - n
    if max(ends, default=0) != data:
        raise DamagedFileError(path, f"its tensors need {max(ends, default=0)} bytes of data, the file holds "
                                     f"{data}: cut short or padded")


def check_json(path: Path) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DamagedFileError(path, exc.strerror or str(exc)) from None
    except ValueError as exc:
        raise DamagedFileError(path, f"not valid JSON: {exc}") from None


def model_files(folder: Path) -> List[Path]:
    """The JSON and safetensors files of a model folder, its tower subfolders included, not its
    checkpoints, ``dcp/`` or hidden entries."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _NOT_MODEL.match(d))
        found += [Path(root) / f for f in sorted(files) if f.endswith((".json", ".safetensors"))]
    return found


def check_model_files(folder: str | os.PathLike) -> None:
    """Parse every JSON file and check every safetensors file of the model folder ``folder`` (its
    tower subfolders included; its checkpoints, ``dcp/``, ``runs/`` and hidden entries not).
    Raises :class:`DamagedFileError` naming the first bad file; a missing file is left to the
    loader's own message."""
    for path in model_files(Path(folder)):
        (check_json if path.suffix == ".json" else check_safetensors)(path)


__all__ = ["DamagedFileError", "check_json", "check_model_files", "check_safetensors", "model_files"]
