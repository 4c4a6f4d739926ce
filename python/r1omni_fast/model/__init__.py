"""The omni model: the policy backends (HumanOmni-compatible, Qwen2.5-Omni), checkpoint loading, generation.

Imports only torch / transformers / tokenizers (never the training code or the native extension).
"""

from __future__ import annotations

from r1omni_fast.model.humanomni.config import OmniConfig
from r1omni_fast.model.generation import GenerationOutput, generate
from r1omni_fast.model.humanomni.model import TUNABLE_PARTS, OmniModel
from r1omni_fast.model.types import AUDIO_TOKEN_INDEX, IGNORE_INDEX, VIDEO_TOKEN_INDEX, CheckpointError, OmniOutput
from r1omni_fast.model.humanomni.processor import OmniProcessor

__all__ = [
    "AUDIO_TOKEN_INDEX", "IGNORE_INDEX", "TUNABLE_PARTS", "VIDEO_TOKEN_INDEX", "CheckpointError",
    "GenerationOutput", "OmniConfig", "OmniModel", "OmniOutput", "OmniProcessor", "generate",
]
