"""Batching: a reproducible batch order, a clip collator, and background prefetching.

The trainer owns the order (``epoch_batches``: a pure function of seed and epoch, so a resumed
run recomputes it and skips the batches already done); :class:`ClipCollator` turns a list of
samples into tensors with ``r1omni_fast.media.load_batch`` (or an injected loader with the same
signature); :func:`prefetch` runs the collator in background threads, ``depth`` batches ahead,
and yields the results in input order, so the model does not wait on decoding.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from r1omni_fast.data.reader import DataError, Sample

log = logging.getLogger(__name__)

#: ``loader(video_paths, *, num_frames, image_size, aspect, n_mels, ...) -> list[Clip | Exception]``
Loader = Callable[..., List[Any]]


def epoch_batches(
    num_samples: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_last: bool = False,
) -> List[List[int]]:
    """Sample indices of every batch of one epoch.

    The permutation is ``numpy.random.default_rng([seed, epoch]).permutation(num_samples)``
    (identity when ``shuffle`` is False), cut into consecutive chunks of ``batch_size``; the last
    short chunk is kept unless ``drop_last``. Depends on nothing but its arguments.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    order = (np.random.default_rng([seed, epoch]).permutation(num_samples) if shuffle
             else np.arange(num_samples))
    stop = num_samples - num_samples % batch_size if drop_last else num_samples
    return [order[i:i + batch_size].tolist() for i in range(0, stop, batch_size)]


@dataclass
class Batch:
    """Clips of the samples that loaded, as the backend's collator lays them out.

    :class:`ClipCollator` (HumanOmni): ``frames`` (B, k, 3, S, S) float32; ``mel`` (B, n_mels,
    3000) float32 or None when audio was not loaded; ``has_audio`` (B,) bool; ``frame_indices``
    (B, k) int64. The Qwen2.5-Omni collator: ``frames`` a list of ``r1omni_fast.media.qwen.QwenClip``,
    ``mel`` their 16 kHz waveforms (or None), ``frame_indices`` a list of arrays. Only the
    backend's own processor reads ``frames`` / ``mel``; its collator's ``to_device`` moves them. ``skipped`` lists
    (sample id, reason) for the items whose media failed (on_error="skip"). ``index`` is the
    batch's position in the input order; ``text`` is whatever the collator's ``text_fn`` returned.
    A batch whose every item failed has ``len(batch) == 0`` and ``frames`` None.
    """

    index: int
    samples: List[Sample]
    frames: Any
    mel: Any
    has_audio: Any
    frame_indices: Any
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    text: Any = None

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class ClipPreview:
    """What a report shows of one loaded clip, as arrays: ``frames`` (k, 3, H, W) float32 in
    [0, 1] (the model's input pictures, normalisation undone), ``mel`` (n_mels, T) float32 log-mel
    of the audio given to the model (None without audio), ``has_audio`` whether the clip has an
    audio track (None when unknown). Collators build them (``preview_arrays``); eval renders them."""

    frames: Any
    mel: Any
    has_audio: Optional[bool]


class ClipCollator:
    """Loads the clips of a list of samples and stacks them into a :class:`Batch`.

    ``loader`` defaults to ``r1omni_fast.media.load_batch`` (imported on first use); any callable
    with its signature can be injected. Items the loader returns as exceptions (MediaError) are
    reported with the sample id and skipped (``on_error="skip"``) or raised as :class:`DataError`
    (``on_error="raise"``). Samples with a separate audio file pass ``audio_paths`` to the loader.
    ``text_fn(samples)``, when given, runs in the same background worker (e.g. tokenisation).
    ``n_mels=None`` loads no audio (``audio=False`` to the loader; ``Batch.mel`` is None).
    ``loader_kwargs`` go to the loader as they are (e.g. ``threads``, ``mean``, ``std``).
    """

    def __init__(
        self,
        *,
        num_frames: int = 8,
        image_size: int = 224,
        aspect: str = "pad",
        n_mels: Optional[int] = 128,
        loader: Optional[Loader] = None,
        on_error: str = "skip",
        text_fn: Optional[Callable[[List[Sample]], Any]] = None,
        loader_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.media_kwargs: Dict[str, Any] = dict(
            num_frames=num_frames, image_size=image_size, aspect=aspect,
            n_mels=n_mels if n_mels else 128, audio=bool(n_mels), **(loader_kwargs or {}))
        self._loader = loader
        self.on_error = on_error
        self.text_fn = text_fn

    @property
    def loader(self) -> Loader:
        if self._loader is None:
            from r1omni_fast.media import load_batch

            self._loader = load_batch
        return self._loader

    def __call__(self, samples: Sequence[Sample], index: int = 0) -> Batch:
        import torch

        samples = list(samples)
        kwargs = dict(self.media_kwargs)
        if any(s.audio is not None for s in samples):
            kwargs["audio_paths"] = [None if s.audio is None else str(s.audio) for s in samples]
        results = self.loader([str(s.video) for s in samples], **kwargs)
        if len(results) != len(samples):
            raise RuntimeError(
                f"the clip loader returned {len(results)} items for {len(samples)} paths"
            )
        kept, clips, skipped = [], [], []
        for sample, clip in zip(samples, results):
            if isinstance(clip, Exception):
                reason = str(clip)
                if self.on_error == "raise":
                    raise DataError(
                        f"sample {sample.id} ({sample.source}): cannot load media: {reason}"
                    ) from clip
                log.warning("skipping sample %s (%s): cannot load media: %s",
                            sample.id, sample.source, reason)
                skipped.append((sample.id, reason))
                continue
            kept.append(sample)
            clips.append(clip)
        text = self.text_fn(kept) if self.text_fn is not None and kept else None
        if not clips:
            return Batch(index, [], None, None, None, None, skipped, text)
        frames = torch.from_numpy(np.stack([np.asarray(c.frames, dtype=np.float32) for c in clips]))
        indices = torch.from_numpy(np.stack([np.asarray(c.frame_indices, dtype=np.int64)
                                             for c in clips]))
        has_audio = torch.tensor([bool(c.has_audio) for c in clips])
        mel = None
        if any(c.mel is not None for c in clips):
            shape = next(np.shape(c.mel) for c in clips if c.mel is not None)
            mel = torch.from_numpy(np.stack([
                np.zeros(shape, np.float32) if c.mel is None else np.asarray(c.mel, np.float32)
                for c in clips]))
        return Batch(index, kept, frames, mel, has_audio, indices, skipped, text)

    @staticmethod
    def to_device(batch: Batch, device: Any, dtype: Any) -> Batch:
        """``batch`` with ``frames`` and ``mel`` copied to ``device`` as ``dtype`` (through pinned
        memory, without waiting, on CUDA); unchanged on the CPU or when nothing loaded."""
        if getattr(device, "type", str(device)) != "cuda" or not len(batch):
            return batch
        batch.frames = batch.frames.pin_memory().to(device, dtype, non_blocking=True)
        if batch.mel is not None:
            batch.mel = batch.mel.pin_memory().to(device, dtype, non_blocking=True)
        return batch

    def preview_arrays(self, batch: Batch) -> Dict[str, ClipPreview]:
        """:class:`ClipPreview` of every loaded clip of ``batch`` (one of this collator's), by
        sample id: the frames with this collator's ``mean`` / ``std`` undone, the mel rows."""
        mean = self.media_kwargs.get("mean", (0.5, 0.5, 0.5))
        std = self.media_kwargs.get("std", (0.5, 0.5, 0.5))
        out = {}
        for i, sample in enumerate(batch.samples):
            frames = _undo_normalisation(batch.frames[i], mean, std) if batch.frames is not None else None
            mel = batch.mel[i] if batch.mel is not None else None
            has_audio = bool(batch.has_audio[i]) if batch.has_audio is not None else None
            out[sample.id] = ClipPreview(frames, mel, has_audio)
        return out


def _undo_normalisation(frames: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    import torch

    x = torch.as_tensor(frames, dtype=torch.float32)
    return x * torch.tensor(std, dtype=torch.float32)[None, :, None, None] + torch.tensor(
        mean, dtype=torch.float32)[None, :, None, None]


def prefetch(
    batches: Iterable[Sequence[Sample]],
    collate: Callable[[Sequence[Sample], int], Batch],
    *,
    depth: int = 2,
    workers: int = 1,
) -> Iterator[Batch]:
    """Yield ``collate(batch, i)`` for every input batch, in input order, computed ahead.

    Besides the batch the consumer holds, at most ``depth`` batches are loading or waiting (a
    bounded queue): ``workers`` background threads run the collator, and the consumer takes
    results in order. The native
    loader releases the GIL, so threads decode truly in parallel with the training step. An
    exception raised by ``collate`` is re-raised at that batch's position. Closing the generator
    (or breaking out of the loop) cancels the batches not yet started.
    """
    if depth < 1 or workers < 1:
        raise ValueError(f"depth and workers must be >= 1, got depth={depth}, workers={workers}")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="r1omni-prefetch")
    pending: deque[Future] = deque()
    source = iter(enumerate(batches))

    def fill() -> None:
        # Only this generator's thread consumes the input iterable; workers see lists only.
        while len(pending) < depth:
            try:
                i, items = next(source)
            except StopIteration:
                return
            pending.append(pool.submit(collate, list(items), i))

    try:
        fill()
        while pending:
            future = pending.popleft()
            fill()  # keep the queue full while the consumer waits on / uses this batch
            yield future.result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
