"""r1omni_fast.atomic: outputs are complete or absent, never mixed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from r1omni_fast import atomic


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(target) as fh:
            fh.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    atomic.write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_atomic_folder_swaps_whole_folders(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "config.json").write_text("old")
    (final / "stale.bin").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_folder(final) as tmp:
            (tmp / "config.json").write_text("new")
            raise KeyboardInterrupt
    assert (final / "config.json").read_text() == "old"
    with atomic.atomic_folder(final) as tmp:
        (tmp / "config.json").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["config.json"]
    assert (final / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_swap_cut_between_renames_is_recovered(tmp_path):
    pid = _dead_pid()
    old = tmp_path / f".old-model-{pid}"
    old.mkdir()
    (old / "config.json").write_text("old")
    stray = tmp_path / f".tmp-model-{pid}"
    stray.mkdir()
    removed = atomic.remove_dead_temporaries(tmp_path)
    assert removed == [stray]
    assert (tmp_path / "model" / "config.json").read_text() == "old"


def test_live_temporaries_are_kept(tmp_path):
    mine = tmp_path / f".tmp-x-{os.getpid()}"
    mine.mkdir()
    assert atomic.remove_dead_temporaries(tmp_path) == []
    assert mine.exists()


def test_replace_files_moves_marker_last(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("old")
    (out / "model.safetensors").write_text("old")
    (out / "checkpoint-2").mkdir()
    new = out / ".tmp-export-1"
    new.mkdir()
    (new / "config.json").write_text("new")
    (new / "model.safetensors").write_text("new")
    (new / "tower").mkdir()
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((os.path.basename(os.fspath(dst)), (out / "config.json").exists()))
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    atomic.replace_files(out, new)
    # the marker is gone while the other files move, and moves last
    assert seen[-1][0] == "config.json"
    assert all(not had_marker for _, had_marker in seen)
    assert (out / "model.safetensors").read_text() == "new"
    assert (out / "config.json").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "config.json", "model.safetensors", "tower"]
