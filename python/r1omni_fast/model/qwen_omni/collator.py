"""The Qwen2.5-Omni backend's collator: samples -> ``r1omni_fast.data.Batch`` of
:class:`r1omni_fast.media.qwen.QwenClip` (one media step per record, skips counted)."""

from __future__ import annotations

from typing import Any, Sequence

import torch


from r1omni_fast.media.qwen import QwenMediaSettings, load_qwen_batch


class QwenClipCollator:
    """Samples -> :class:`r1omni_fast.data.Batch` for the Qwen backend: ``frames`` is the list of
    :class:`QwenClip` (one per loaded sample), ``mel`` the list of their audio (float32 16 kHz or
    None), ``has_audio`` (B,) bool, ``frame_indices`` the list of frame index arrays.

    Which samples get audio: ``audio="record"`` those whose prompt holds ``<audio>`` (training:
    the record chooses), ``True`` every sample, ``False`` none, or a callable ``sample -> bool``
    (evaluation: ``eval.runner.record_modalities``). Audio asked for is required (an error naming the file when absent: raised with
    ``on_error="raise"``, else the sample is skipped and listed in ``Batch.skipped``). ``loader``
    (default :func:`load_qwen_batch`) takes the same arguments."""

    def __init__(self, *, settings: QwenMediaSettings, audio: bool | str = "record", loader=None,
                 on_error: str = "skip") -> None:
        if audio not in (True, False, "record") and not callable(audio):
            raise ValueError(f"audio={audio!r}: use True, False, 'record' or a callable sample -> bool")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.settings = settings
        self.audio = audio
        self.on_error = on_error
        self.loader = loader or load_qwen_batch
        #: what preflight / ``data check`` pass to ``loader`` (and ``require_audio`` for predict)
        self.media_kwargs: dict[str, Any] = {"settings": settings, "audio": audio}

    def wants_audio(self, sample: Any) -> bool:
        if callable(self.audio):
            return bool(self.audio(sample))
        if self.audio == "record":
            return "<audio>" in sample.prompt
        return bool(self.audio)

    def __call__(self, samples: Sequence[Any], index: int = 0):
        from r1omni_fast.data import Batch, DataError

        samples = list(samples)
        want = [self.wants_audio(s) for s in samples]
        kwargs = {k: v for k, v in self.media_kwargs.items() if k not in ("audio", "require_audio")}
        results = self.loader([str(s.video) for s in samples],
                              audio_paths=[None if s.audio is None else str(s.audio) for s in samples],
                              audio=want, require_audio=[w or bool(self.media_kwargs.get("require_audio")) for w in want],
                              **kwargs)
        kept, clips, skipped = [], [], []
        for sample, clip in zip(samples, results):
            if isinstance(clip, Exception):
                if self.on_error == "raise":
                    raise DataError(f"sample {sample.id} ({sample.source}): cannot load media: {clip}") from clip
                skipped.append((sample.id, str(clip)))
                continue
            kept.append(sample)
            clips.append(clip)
        if not clips:
            return Batch(index, [], None, None, None, None, skipped)
        has_audio = torch.tensor([c.has_audio for c in clips])
        return Batch(index, kept, clips, [c.audio for c in clips], has_audio, [c.frame_indices for c in clips], skipped)

    @staticmethod
    def to_device(batch: Any, device: Any, dtype: Any) -> Any:
        """``batch`` unchanged: its clips are NumPy arrays the processor turns into tensors, which
        the caller moves (``r1omni_fast.train.common.to_device``)."""
        return batch

    @staticmethod
    def preview_arrays(batch: Any) -> dict:
        """``r1omni_fast.data.ClipPreview`` of each clip of a batch of this collator, by sample id:
        the frames as the model sees them (k, 3, H, W) in [0, 1], and the 128-bin log-mel of the
        audio given to the model (None without audio)."""
        from r1omni_fast.data import ClipPreview
        from r1omni_fast.media import whisper_log_mel

        out = {}
        for sample, clip in zip(batch.samples, batch.frames or []):
            pixels = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255.0
            mel = whisper_log_mel(clip.audio, 128) if clip.audio is not None else None
            out[sample.id] = ClipPreview(pixels, mel, clip.has_audio)
        return out


