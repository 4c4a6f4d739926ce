"""Fixtures of the evaluation tests: a small synthetic test split and a clip loader.

The loader is ``r1omni_fast.media.load_batch`` when the native media module is importable, else
the PyAV reference loader of tests/_data_fixtures.py (same signature, real decoding).
"""

from __future__ import annotations

import sys
import types

import pytest

from _data_fixtures import pyav_load_batch

SYNTH_LABELS = ("happy", "sad", "angry", "neutral")


def media_load_batch():
    try:
        from r1omni_fast.media import load_batch
    except ImportError:
        return pyav_load_batch
    return load_batch


@pytest.fixture(scope="session")
def synth_eval(tmp_path_factory):
    """Eight clips, four held out (one per class), written once per session."""
    from r1omni_fast.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("eval-synth"), n=8, seed=3, labels=SYNTH_LABELS,
                    test_fraction=0.5)


@pytest.fixture
def media_module(monkeypatch):
    """Makes ``r1omni_fast.media.load_batch`` importable for code that loads clips by default."""
    try:
        import r1omni_fast.media  # noqa: F401
    except ImportError:
        fake = types.ModuleType("r1omni_fast.media")
        fake.load_batch = pyav_load_batch
        monkeypatch.setitem(sys.modules, "r1omni_fast.media", fake)
    return sys.modules["r1omni_fast.media"]
