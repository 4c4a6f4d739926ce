"""The Qwen3-Omni backend's processor: Qwen2.5-Omni's (:class:`QwenOmniProcessor`: the checkpoint's
chat template, media placeholders expanded, targets -> labels) with Qwen3-Omni's audio rules.

Audio, as ``transformers.Qwen3OmniMoeProcessor`` makes it (its ``audio_kwargs``: ``padding=True``,
``truncation=False``): the Whisper log-mel of the record's whole signal, not padded to a fixed
window, so L = samples // 160 frames (10 ms each; a record alone, as the processor does for a
batch of one), from the checkpoint's own ``WhisperFeatureExtractor``; the audio encoder turns
every 100-frame chunk (``2 * n_window``) into 13 tokens and the remainder r into
``c(c(c(r)))`` with ``c(x) = (x - 1) // 2 + 1`` (three stride-2 convolutions).
"""

from __future__ import annotations

import numpy as np
import torch

from r1omni_fast.media.qwen import SAMPLE_RATE
from r1omni_fast.model.qwen_omni.processor import QwenOmniProcessor


def _conv_steps(frames: int, steps: int = 3) -> int:
    for _ in range(steps):
        frames = (frames - 1) // 2 + 1
    return frames


def audio_token_count(mel_frames: int, n_window: int = 50) -> int:
    """Tokens Qwen3-Omni's audio encoder makes of ``mel_frames`` log-mel frames: the frames are cut
    into chunks of ``2 * n_window`` (100), each through three stride-2 convolutions (100 -> 13),
    the last, shorter chunk likewise (none when it is empty). Source: the encoder's
    ``chunk_and_pad_features`` and ``Qwen3OmniMoeProcessor``'s ``_get_feat_extract_output_lengths``."""
    chunk = 2 * n_window
    rest = mel_frames % chunk
    return (mel_frames // chunk) * _conv_steps(chunk) + (_conv_steps(rest) if rest else 0)


class Qwen3OmniProcessor(QwenOmniProcessor):
    """:class:`QwenOmniProcessor` for Qwen3-Omni checkpoints (``Qwen3OmniMoeProcessor``): no system
    turn unless one is given (``system_prompt``), the chunked audio token rule
    (:func:`audio_token_count`) and unpadded per-record audio features (see the module docstring).
    ``n_window``: the audio encoder's window (the thinker config's ``audio_config.n_window``)."""

    FAMILY = "Qwen3-Omni"
    HF_PROCESSOR = "Qwen3OmniMoeProcessor"
    SYSTEM_PROMPT = None

    def __init__(self, hf_processor, *, system_prompt: str | None = None, source: str = "", n_window: int | None = None) -> None:
        super().__init__(hf_processor, system_prompt=system_prompt, source=source)
        self.n_window = int(n_window if n_window is not None else getattr(hf_processor, "n_window", 50))

    def audio_tokens(self, mel_frames: int) -> int:
        return audio_token_count(mel_frames, self.n_window)

    def _audio_inputs(self, wave: np.ndarray) -> dict:
        """The feature extractor's log-mel of ``wave`` (16 kHz) alone, unpadded and untruncated:
        ``input_features`` (1, n_mels, L) float32, L = samples // 160, its mask (1, L) int64.
        Raises ValueError for audio shorter than one frame (160 samples)."""
        fe = self.hf.feature_extractor
        if len(wave) < fe.hop_length:
            raise ValueError(f"the audio has {len(wave)} samples, under one {fe.hop_length}-sample frame")
        out = fe(np.asarray(wave, np.float32), sampling_rate=SAMPLE_RATE, padding=True, truncation=False,
                 return_attention_mask=True, return_tensors="np")
        mask = torch.from_numpy(np.asarray(out["attention_mask"], np.int64))
        return {"input_features": torch.from_numpy(np.ascontiguousarray(out["input_features"], np.float32)),
                "feature_attention_mask": mask, "num_audio_tokens": self.audio_tokens(int(mask.sum()))}

    @classmethod
    def from_pretrained(cls, path: str) -> Qwen3OmniProcessor:
        """``Qwen3OmniMoeProcessor`` from ``path`` (missing files: `ProcessorError` naming them); the
        audio window from the folder's config.json when it names one."""
        import json
        import os

        processor = super().from_pretrained(path)
        config = os.path.join(path, "config.json")
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as fh:
                data = json.load(fh)
            audio = (data.get("thinker_config", data) or {}).get("audio_config") or {}
            if "n_window" in audio:
                processor.n_window = int(audio["n_window"])
        return processor
