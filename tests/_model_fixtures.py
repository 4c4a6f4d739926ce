"""Fixtures of the model tests: one tiny checkpoint per session, small media tensors."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from r1omni_fast.model.humanomni.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    from r1omni_fast.model import OmniModel

    return OmniModel.from_pretrained(tiny_ckpt)


def media(rows: int, seed: int = 0, frames: int = 8, size: int = 224, mels: int = 128):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, frames, 3, size, size, generator=g),
            torch.randn(rows, mels, 3000, generator=g))
