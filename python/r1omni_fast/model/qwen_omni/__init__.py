"""The Qwen2.5-Omni backend (``model_type`` "qwen2_5_omni" / "qwen2_5_omni_thinker"): the
thinker of ``transformers.Qwen2_5OmniThinkerForConditionalGeneration`` (text output only).

- ``policy.py``: :class:`QwenOmniThinkerPolicy` and its tunable parts;
- ``processor.py``: :class:`QwenOmniProcessor` (the checkpoint's chat template, media tokens);
- ``collator.py``: :class:`QwenClipCollator` over ``r1omni_fast.media.qwen.load_qwen_clip``;
- ``tiny.py``: the tiny checkpoint of the tests.
"""
