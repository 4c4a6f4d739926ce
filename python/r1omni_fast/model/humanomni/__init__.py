"""The HumanOmni / R1-Omni backend (``model_type`` "HumanOmni_qwen2"): a Qwen2 LLM with SigLIP
video and Whisper audio towers, their projectors and a BERT gate, as HumanOmni builds them.

- ``model.py``: :class:`OmniModel` (the policy) and its tunable parts;
- ``config.py``: :class:`OmniConfig` (HumanOmni's ``config.json``);
- ``processor.py``: :class:`OmniProcessor` (prompts -> ``-201`` / ``-202`` placeholder runs);
- ``towers.py``, ``projector.py``: the towers' and projectors' modules and checkpoint names;
- ``tiny.py``: the tiny checkpoint of the tests and the demo.
Its collator is ``r1omni_fast.data.ClipCollator`` over the native clip loader.
"""
