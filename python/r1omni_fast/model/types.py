"""What every model backend shares: the placeholder ids prompts carry, the label id the loss
ignores, the error a checkpoint that cannot be loaded raises, the output of a forward pass and
the padding of token rows and the LM head over a forward pass's hidden states.

Imports only torch, so that every backend (``humanomni``, ``qwen_omni``), the processors and the
loaders may import it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

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


def pad_rows(rows: list[list[int]], pad: int, side: str) -> dict:
    """Token rows of different lengths -> ``{"input_ids", "attention_mask"}``, each (B, W) int64
    with W the longest row: rows padded with ``pad`` on ``side`` ("left" or "right"), the mask 1
    over each row's own tokens."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


def lm_output(hidden: torch.Tensor, lm_head: torch.nn.Module, *, labels: torch.Tensor | None = None,
              logits_to_keep: int | torch.Tensor = 0, return_hidden_states: bool = False) -> OmniOutput:
    """A forward pass's output from the LLM's last hidden states ``hidden`` (B, L, H).

    With ``labels`` (B, L; ``IGNORE_INDEX`` where nothing is learnt): only the supervised
    positions, packed — ``hidden[:, :-1]`` where ``labels[:, 1:] != IGNORE_INDEX`` — so the head
    runs over M rows instead of B * L: ``logits`` (M, V), ``targets`` (M,) and ``loss``, their mean
    token cross-entropy in fp32 (0, still attached to the graph, when M is 0); with
    ``return_hidden_states`` the (M, H) hidden states and targets instead of logits. Without
    labels: ``logits_to_keep`` int k > 0 keeps the last k positions, a 1-D index tensor keeps
    those, 0 keeps all; ``return_hidden_states`` returns the kept hidden states."""
    if labels is not None:
        next_labels = labels[:, 1:].to(hidden.device)
        selected = next_labels != IGNORE_INDEX
        hidden = hidden[:, :-1][selected]
        targets = next_labels[selected]
        if return_hidden_states:
            return OmniOutput(hidden_states=hidden, targets=targets)
        logits = lm_head(hidden)
        loss = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
        return OmniOutput(logits=logits, targets=targets, loss=loss)
    if isinstance(logits_to_keep, torch.Tensor):
        hidden = hidden[:, logits_to_keep]
    elif logits_to_keep:
        hidden = hidden[:, -logits_to_keep:]
    if return_hidden_states:
        return OmniOutput(hidden_states=hidden)
    return OmniOutput(logits=lm_head(hidden))


@dataclass
class DeepstackFeatures:
    """Vision features a decoder adds to its hidden states after each of its first layers, at the
    prompt's visual positions (DeepStack, arXiv 2406.04334, as Qwen3-VL and Qwen3-Omni use it:
    after decoder layer i, ``hidden[mask] += features[i]``).

    ``mask``: (B, L) bool, the visual positions; ``features``: one (N, H) tensor per layer, N =
    ``mask.sum()``, its rows in the row-major order of ``mask``'s True entries. The methods follow
    the prompt rows through generation's rearrangements (packing, repeating, extending)."""

    mask: torch.Tensor
    features: list

    def packed(self, source: torch.Tensor, valid: torch.Tensor) -> DeepstackFeatures:
        """The features of the prompt rows rearranged as ``embeds.gather(1, source)`` with the
        columns ``~valid`` (B, W) emptied. The features stay as they are: packing keeps the order of
        each row's tokens, so the visual positions keep their row-major order."""
        return DeepstackFeatures(self.mask.gather(1, source.to(self.mask.device)) & valid.to(self.mask.device),
                                 self.features)

    def repeat_rows(self, n: int) -> DeepstackFeatures:
        """Each row repeated ``n`` times in place (``repeat_interleave(n, 0)``), features too."""
        if n == 1:
            return self
        counts = self.mask.sum(1).tolist()
        features = [torch.cat([part for part in f.split(counts) for _ in range(n)]) for f in self.features]
        return DeepstackFeatures(self.mask.repeat_interleave(n, 0), features)

    def extended(self, width: int) -> DeepstackFeatures:
        """The mask widened to ``width`` columns (the appended ones not visual: completion tokens)."""
        extra = width - self.mask.shape[1]
        return DeepstackFeatures(F.pad(self.mask, (0, extra), value=False), self.features)

    def decoder_kwargs(self) -> dict:
        """The keyword arguments of transformers' DeepStack text decoders (Qwen3-VL, Qwen3-Omni)."""
        return {"visual_pos_masks": self.mask, "deepstack_visual_embeds": list(self.features)}


class TagKeepingDecoder:
    """Completion decoding as R1-Omni scores it, shared by the backends' processors (they set
    ``self.tokenizer`` and ``self._skipped_ids = None``): R1-Omni decodes with
    ``skip_special_tokens=True``, so special tokens are left out, except the reasoning tags
    (``r1omni_fast.prompts.REASONING_TAGS``) the rewards parse, which some tokenizers hold as
    special tokens."""

    tokenizer: Any
    _skipped_ids: frozenset | None

    @property
    def skipped_ids(self) -> frozenset:
        """Token ids :meth:`decode` leaves out: the tokenizer's special tokens (named and added as
        special) except the ``<think>``/``</think>``/``<answer>``/``</answer>`` tags."""
        if self._skipped_ids is None:
            from r1omni_fast.prompts import REASONING_TAGS

            tok = self.tokenizer
            special = set(tok.all_special_ids)
            special |= {i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
            tags = {tok.convert_tokens_to_ids(t) for t in REASONING_TAGS} - {tok.unk_token_id}
            self._skipped_ids = frozenset(special - tags)
        return self._skipped_ids

    def decode(self, ids: Sequence[int]) -> str:
        """The completion ``ids`` as text, special tokens left out but the reasoning tags kept."""
        skipped = self.skipped_ids
        return self.tokenizer.decode([i for i in ids if i not in skipped], skip_special_tokens=False)
