"""What every model backend shares: the placeholder ids prompts carry, the label id the loss
ignores, the error a checkpoint that cannot be loaded raises, and the output of a forward pass.

Imports only torch, so that every backend (``omni``, ``qwen_omni``), the processors and the
loaders may import it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Placeholder ids that the processors write where projected features go (HumanOmni's values).
VIDEO_TOKEN_INDEX = -201
AUDIO_TOKEN_INDEX = -202
#: Label id the cross-entropy skips (PyTorch's and transformers' ``ignore_index``).
IGNORE_INDEX = -100


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded: lists every missing part / key and how to supply it."""


@dataclass
class OmniOutput:
    """What a backend's ``forward`` returns.

    ``logits``: (B, K, V) for ``logits_to_keep``, or (M, V) packed over supervised positions when
    ``labels`` are given (``targets`` (M,) then holds the next-token labels); ``hidden_states``
    instead of logits when ``return_hidden_states=True``; ``loss``: mean token cross-entropy.
    """

    logits: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    loss: torch.Tensor | None = None
