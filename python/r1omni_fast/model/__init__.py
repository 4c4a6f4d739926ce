"""The omni model: HumanOmni-compatible architecture, checkpoint loading, prompts, generation.

Imports only torch / transformers / tokenizers (never the training code or the native extension).
"""

from __future__ import annotations

from r1omni_fast.model.config import OmniConfig
from r1omni_fast.model.generation import GenerationOutput, generate
from r1omni_fast.model.omni import TUNABLE_PARTS, OmniModel
from r1omni_fast.model.types import AUDIO_TOKEN_INDEX, IGNORE_INDEX, VIDEO_TOKEN_INDEX, CheckpointError, OmniOutput
from r1omni_fast.model.prompt import FORMAT_SUFFIX, R1_OMNI_QUESTION, OmniProcessor, build_instruction

__all__ = [
    "AUDIO_TOKEN_INDEX", "IGNORE_INDEX", "TUNABLE_PARTS", "VIDEO_TOKEN_INDEX", "CheckpointError",
    "FORMAT_SUFFIX", "GenerationOutput", "OmniConfig", "OmniModel", "OmniOutput", "OmniProcessor",
    "R1_OMNI_QUESTION", "build_instruction", "generate",
]
