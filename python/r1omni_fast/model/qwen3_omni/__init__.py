"""The Qwen3-Omni backend (``model_type`` "qwen3_omni_moe" / "qwen3_omni_moe_thinker"): the MoE
thinker of ``transformers.Qwen3OmniMoeThinkerForConditionalGeneration`` (text output only; the
talker and code2wav are never built). What differs from Qwen2.5-Omni lives here; the rest is the
Qwen2.5-Omni backend's (``r1omni_fast.model.qwen_omni``), which these classes extend.

- ``policy.py``: :class:`Qwen3OmniThinkerPolicy` (DeepStack features, fractional TMRoPE positions,
  the MoE router's auxiliary loss and expert load);
- ``processor.py``: :class:`Qwen3OmniProcessor` (``Qwen3OmniMoeProcessor``: the chunked audio token
  rule, per-record audio features without padding to 30 s);
- ``tiny.py``: the tiny MoE thinker checkpoint of the tests.
"""
