"""Qwen3-Omni thinker policy backend (``transformers.Qwen3OmniMoeThinkerForConditionalGeneration``,
the MoE thinker of Qwen3-Omni-30B-A3B; text output only, the talker and code2wav are never built).

Checkpoints: a full Qwen3-Omni folder (``model_type`` "qwen3_omni_moe": only the ``thinker.``
weights are read, transformers renaming the original per-expert layout into its fused one) or a
thinker-only folder ("qwen3_omni_moe_thinker", what :meth:`save_pretrained` writes), with the
processor files (``Qwen3OmniMoeProcessor``).

What differs from the Qwen2.5-Omni backend it extends (:class:`QwenOmniThinkerPolicy`):

- vision: patch 16 x merge 2, so frames are resized to multiples of 32 (``QwenMediaSettings.factor``)
  with the processor's per-frame budget of 128 to 768 merged tokens; the vision tower's DeepStack
  features are added to the decoder's hidden states at the video tokens after its first layers,
  in every prompt pass (prefill and completion logits; :meth:`prompt_inputs`);
- audio: :class:`r1omni_fast.model.qwen3_omni.processor.Qwen3OmniProcessor` (13 tokens per 100 mel
  frames, chunked; the whole track, no 30-s cut);
- positions: TMRoPE with ``position_id_per_seconds`` (13 in Qwen3-Omni's processor; the config must
  say the same) whose temporal positions are fractional (``2 / fps * 13`` per frame pair): float32;
- MoE decoder: :meth:`routing` records its routers for the load-balancing loss and the expert load
  (`r1omni_fast.model.routing.RouterRecord`), with the real tokens of every pass: the attention
  mask of a forward, the prompt then completion masks of ``completion_logits``' shared passes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from r1omni_fast.model.generation import shares_prefix
from r1omni_fast.model.qwen3_omni.processor import Qwen3OmniProcessor
from r1omni_fast.model.routing import RouterRecord
from r1omni_fast.model.qwen_omni.policy import QwenOmniThinkerPolicy

MODEL_TYPES = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
#: ``tunable_parts`` names (HumanOmni's) -> the thinker modules they unfreeze.
TUNABLE_PARTS: dict[str, tuple[str, ...]] = {
    "mm_language_model": ("model.language_model", "lm_head"),
    "mm_vision_tower": ("model.visual.patch_embed", "model.visual.pos_embed", "model.visual.blocks"),
    "mm_mlp_adapter": ("model.visual.merger", "model.visual.merger_list"),
    "mm_audio_tower": ("model.audio_tower.conv2d1", "model.audio_tower.conv2d2", "model.audio_tower.conv2d3",
                       "model.audio_tower.conv_out", "model.audio_tower.layers", "model.audio_tower.ln_post"),
    "audio_projector": ("model.audio_tower.proj1", "model.audio_tower.proj2"),
}
#: Qwen3OmniMoeProcessor's video budget: 128 to 768 merged 32 x 32 tokens per frame.
MEDIA_DEFAULTS: dict[str, Any] = dict(factor=32, min_pixels=128 * 32 * 32, max_pixels=768 * 32 * 32,
                                      total_pixels=128000 * 32 * 32 * 0.9, max_audio_seconds=None)


class Qwen3OmniThinkerPolicy(QwenOmniThinkerPolicy):
    """Qwen3-Omni's MoE thinker as a policy (see the module docstring): ``thinker`` a
    ``Qwen3OmniMoeThinkerForConditionalGeneration``, ``processor`` a :class:`Qwen3OmniProcessor`,
    ``media`` the clips' `QwenMediaSettings` (default :data:`MEDIA_DEFAULTS`)."""

    FAMILY = "Qwen3-Omni"
    FULL_MODEL_TYPE, THINKER_MODEL_TYPE = MODEL_TYPES
    HF_CLASSES = ("Qwen3OmniMoeConfig", "Qwen3OmniMoeThinkerConfig", "Qwen3OmniMoeThinkerForConditionalGeneration")
    PROCESSOR = Qwen3OmniProcessor
    TUNABLE = TUNABLE_PARTS
    MEDIA_DEFAULTS = MEDIA_DEFAULTS
    POSITION_DTYPE = torch.float32

    @contextlib.contextmanager
    def routing(self):
        """Records the routers of the MoE decoder layers during the context (a `RouterRecord`
        knowing each pass's real tokens)."""
        text = self.config.text_config
        routers = [layer.mlp.gate for layer in self.thinker.model.language_model.layers if hasattr(layer.mlp, "gate")]
        record = RouterRecord(routers, text.num_experts, text.num_experts_per_tok)
        self.__dict__["_routing"] = record  # not a module attribute: never saved, never copied as a submodule
        try:
            with record:
                yield record
        finally:
            self.__dict__.pop("_routing", None)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                **kwargs: Any):
        """`QwenOmniThinkerPolicy.forward`; inside :meth:`routing`, the pass's real tokens are its
        ``attention_mask``'s."""
        record = self.__dict__.get("_routing")
        if record is not None:
            record.expect([attention_mask])
        return super().forward(input_ids, attention_mask, **kwargs)

    def completion_logits(self, prompts: dict, completion_ids: torch.Tensor, mask: torch.Tensor, group: int, *,
                          share_prefix: bool = True) -> torch.Tensor:
        """`PrefixSharedGeneration.completion_logits`; inside :meth:`routing`, the real tokens of its
        passes: the prompts' then the completions' (shared prefix), or the full rows' (the forward's mask)."""
        record = self.__dict__.get("_routing")
        if record is not None and shares_prefix(self, share_prefix):
            record.expect([prompts["attention_mask"], mask])
        return super().completion_logits(prompts, completion_ids, mask, group, share_prefix=share_prefix)


__all__ = ["MEDIA_DEFAULTS", "MODEL_TYPES", "TUNABLE_PARTS", "Qwen3OmniThinkerPolicy"]
