"""Outputs that are either complete or absent: files and folders written beside their final
place and renamed once on disk.

Every command that writes a result (a checkpoint, a final model, a merged model, eval's metrics,
a data set) goes through these, so that an interrupt, a full disk or SIGKILL leaves either the old
output or the new one, never a mixture:

- :func:`atomic_file` writes ``path`` through a temporary sibling ``.tmp-NAME-PID`` that is
  fsynced and renamed over ``path`` (``os.replace``: atomic on POSIX), then fsyncs the folder.
- :func:`atomic_folder` builds a folder in a temporary sibling ``.tmp-NAME-PID`` and renames it
  into place. An existing folder is first renamed to ``.old-NAME-PID`` and removed after the
  swap; :func:`recover_interrupted_swap` puts it back when a process died between the two renames.
- :func:`replace_files` moves the files of a finished temporary folder into a folder that holds
  other things too (a training run's ``output_dir``: the final model beside its checkpoints), the
  marker file (``config.json`` by default) removed first and renamed in last, so an interrupted
  replacement is a folder without the marker (refused on load, never old weights under a new
  config).

The temporaries are named with the writer's PID so that :func:`remove_dead_temporaries` can
remove those of processes that are gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

_TEMP = re.compile(r"^\.(tmp|old)-(.+)-(\d+)$")


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync the folder ``path`` (makes a rename or a new entry in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file under ``folder``, then every folder, deepest first."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def temporary_sibling(path: str | os.PathLike, kind: str = "tmp") -> Path:
    """``PARENT/.KIND-NAME-PID`` for ``path`` (kind "tmp" or "old")."""
    path = Path(path)
    return path.parent / f".{kind}-{path.name}-{os.getpid()}"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary sibling of ``path`` for writing (``open``'s ``mode``, "w" or "wb", and
    keyword arguments); on a clean exit it is fsynced and renamed over ``path``, on an exception
    removed (``path`` unchanged). The parent folder must exist."""
    if "w" not in mode:
        raise ValueError(f"atomic_file needs a write mode, got {mode!r}")
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """``path`` holds ``text`` (UTF-8) completely, or keeps what it held (:func:`atomic_file`)."""
    with atomic_file(path, "w", encoding="utf-8") as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``final`` to fill; on a clean exit it is fsynced
    and becomes ``final`` (a folder already there is replaced: renamed aside, the new one renamed
    in, the old one removed), on an exception it is removed and ``final`` is unchanged. The parent
    folder is created when missing."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_swap(final)
    tmp = temporary_sibling(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = temporary_sibling(final, "old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_swap(final: str | os.PathLike) -> None:
    """When ``final`` is missing but an ``.old-NAME-PID`` of a dead process is beside it (a swap
    of :func:`atomic_folder` cut between its two renames), rename the old folder back."""
    final = Path(final)
    if final.exists() or not final.parent.is_dir():
        return
    for p in final.parent.iterdir():
        m = _TEMP.match(p.name)
        if m and m.group(1) == "old" and m.group(2) == final.name and not process_alive(int(m.group(3))):
            os.replace(p, final)
            fsync_dir(final.parent)
            return


def replace_files(folder: str | os.PathLike, new: str | os.PathLike, *, marker: str = "config.json") -> None:
    """Move every entry of the finished folder ``new`` into ``folder`` (replacing entries of the
    same name), then remove ``new``. ``folder/marker`` is removed first and ``new/marker`` moved
    last, so at every instant ``folder`` holds either a complete set with its marker or no marker.
    ``new`` must be on the same filesystem (a sibling or child of ``folder``)."""
    folder, new = Path(folder), Path(new)
    fsync_tree(new)
    with contextlib.suppress(FileNotFoundError):
        (folder / marker).unlink()
    fsync_dir(folder)
    entries = sorted((p for p in new.iterdir() if p.name != marker), key=lambda p: p.name)
    for src in entries:
        dst = folder / src.name
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        os.replace(src, dst)
    if (new / marker).exists():
        os.replace(new / marker, folder / marker)
    fsync_dir(folder)
    shutil.rmtree(new, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (this process counts as alive; one owned by
    another user too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.tmp-NAME-PID`` entries of ``folder`` whose process (on this machine) is gone;
    ``.old-NAME-PID`` folders are first offered back to ``NAME`` (:func:`recover_interrupted_swap`).
    Returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in list(folder.iterdir()):
        m = _TEMP.match(p.name)
        if m is None or process_alive(int(m.group(3))):
            continue
        if m.group(1) == "old":
            recover_interrupted_swap(folder / m.group(2))
            if not p.exists():
                continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        removed.append(p)
    return removed


__all__ = ["atomic_file", "atomic_folder", "fsync_dir", "fsync_tree", "process_alive", "recover_interrupted_swap",
           "remove_dead_temporaries", "replace_files", "temporary_sibling", "write_text"]
