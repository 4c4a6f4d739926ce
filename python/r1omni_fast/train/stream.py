"""The training sample stream: batches in epoch order, sharded over the ranks, prefetched in
the background, with the position a checkpoint resumes from; and the decode check before a run."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence


from r1omni_fast.config import AnyConfig, ConfigError
from r1omni_fast.data import Batch, ClipCollator, DataError, DataFile, Sample, epoch_batches, prefetch
from r1omni_fast.train.faults import TrainingError

log = logging.getLogger(__name__)


@dataclass
class Shard:
    """This rank's part of one global batch.

    ``positions[i]`` is the place of ``batch.samples[i]`` in the run's sample stream (epoch * N +
    index in that epoch's order): it names a sample independently of the number of ranks.
    ``global_size`` counts the samples of the global batch over all ranks. A ``ghost`` shard
    stands in where this rank has no sample of the global batch (or none of its clips loaded):
    it runs the same computation, so that collectives stay matched, with weight 0.
    """

    batch: Batch
    positions: List[int]
    global_size: int
    ghost: bool = False


class BatchStream:
    """Endless stream of this rank's collated shards of global batches.

    The run's sample order is ``epoch_batches(N, N, seed, epoch)`` (one permutation per epoch; the
    file's order with ``shuffle=False``, GRPO's ``shuffle_dataset: false``); a
    global batch is the next ``batch_size * world_size`` samples of it (the last one of an epoch
    holds the remainder) and rank r takes its contiguous share (``distributed.rank_slice``: the
    shares differ by at most one sample, nothing is dropped or repeated). ``samples_done`` is the
    stream position, so a run resumed with another number of ranks (or another batch size)
    continues with exactly the next unseen sample. Decoding runs ahead in background threads
    (``prefetch``). A global batch of which no clip loaded (on any rank) is skipped, on every
    rank; a rank whose own share failed while others loaded runs a ghost (see :class:`Shard`).

    Faults:
    ``max_skipped_batches`` such batches in a row, or more than ``max_skipped_fraction`` of an
    epoch's samples failing to load, end the run with a :class:`TrainingError` listing the first
    failures. ``skipped_samples`` counts the failed samples of the run (all ranks; ``dist`` sums
    them, the same on every rank).

    Every skip is said: the first batch with a sample that failed to load logs a warning with the
    count and the first record ids and reasons; :meth:`close` logs the run's total and the first
    :data:`SHOWN_SKIPPED_IDS` ids (:meth:`skip_summary`; ids are this rank's under torchrun).
    """

    #: failures quoted in the error that ends a run
    SHOWN_FAILURES = 5
    #: record ids of skipped samples quoted in the end-of-run summary
    SHOWN_SKIPPED_IDS = 10

    def __init__(self, samples: Sequence[Sample], batch_size: int, collate: Callable[..., Batch], *,
                 seed: int, samples_done: int = 0, batches_done: int = 0, workers: int = 1, depth: int = 2,
                 rank: int = 0, world_size: int = 1, dist: Any = None, max_skipped_batches: int = 20,
                 max_skipped_fraction: float = 1.0, skipped_samples: int = 0, skipped_in_epoch: int = 0,
                 shuffle: bool = True) -> None:
        self.samples = list(samples)
        self.shuffle = shuffle
        self.batch_size = batch_size
        self.global_batch_size = batch_size * world_size
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.samples_done = samples_done
        self.batches_done = batches_done
        self.batches_per_epoch = math.ceil(len(self.samples) / self.global_batch_size)
        self._last_good: Optional[Batch] = None
        self.dist = dist
        self.max_skipped_batches = max_skipped_batches
        self.max_skipped_fraction = max_skipped_fraction
        self.skipped_samples = skipped_samples
        self.skipped_in_epoch = skipped_in_epoch
        self._epoch = samples_done // max(len(self.samples), 1)
        self._empty_in_a_row = 0
        self._failures: List[str] = []
        self._skipped_ids: List[str] = []
        self._skipped_before = skipped_samples  # by the run this one resumes
        self._skip_said = False
        self._collate = collate
        self._iter = prefetch(self._shares(samples_done), self._load, depth=depth, workers=workers)

    def _shares(self, start: int) -> Iterator[tuple]:
        from r1omni_fast.train.distributed import rank_slice

        n = len(self.samples)
        position = start
        while True:
            epoch, offset = divmod(position, n)
            order = epoch_batches(n, n, seed=self.seed, epoch=epoch, shuffle=self.shuffle)[0]
            for begin in range(offset, n, self.global_batch_size):
                chunk = order[begin:begin + self.global_batch_size]
                share = range(len(chunk))[rank_slice(len(chunk), self.rank, self.world_size)]
                ghost = len(share) == 0
                if ghost:  # stand-in so that this rank runs the step too
                    share = range(1)
                yield ([self.samples[chunk[i]] for i in share], [epoch * n + begin + i for i in share],
                       len(chunk), ghost)
            position = (epoch + 1) * n

    def _load(self, item: tuple, index: int) -> tuple:
        samples, positions, size, ghost = item
        return self._collate(samples, index), samples, positions, size, ghost

    @property
    def epoch(self) -> float:
        return self.samples_done / len(self.samples)

    def state(self) -> Dict[str, int]:
        """The stream's part of a checkpoint's trainer state (see :func:`stream_position`)."""
        return {"batches_done": self.batches_done, "samples_done": self.samples_done,
                "global_batch_size": self.global_batch_size, "skipped_samples": self.skipped_samples,
                "skipped_in_epoch": self.skipped_in_epoch}

    def _count_failures(self, batch: Batch, requested: Sequence[Sample], ghost: bool) -> int:
        """Count this global batch's samples that failed to load (every rank's); return how many
        loaded (every rank's, stand-ins excluded); raise when the epoch's budget is spent."""
        failed = [] if ghost else list(batch.skipped)
        source = {getattr(s, "id", None): getattr(s, "source", "?") for s in requested} if failed else {}
        quoted = [f"{sid} ({source.get(sid, '?')}): {why}" for sid, why in failed]
        if failed and len(self._failures) < self.SHOWN_FAILURES:
            self._failures += quoted
        self._skipped_ids += [sid for sid, _ in failed][:max(self.SHOWN_SKIPPED_IDS - len(self._skipped_ids), 0)]
        counts = [len(failed), 0 if ghost else len(batch)]
        if self.dist is not None and self.dist.enabled:
            counts = self.dist.sum(counts)
        elif self.world_size > 1:  # no collective to ask the other ranks: never skip (ghosts stand in)
            counts[1] = 1
        if counts[0] and not self._skip_said:
            self._skip_said = True
            shown = "".join(f"\n  {q}" for q in quoted[:self.SHOWN_FAILURES]) or " none on this rank"
            log.warning("%d sample(s) of batch %d could not be loaded and are skipped%s:%s\nLater skips are counted "
                        "(skipped_samples in metrics.jsonl) and listed at the end of the run; check the media with "
                        "`r1omni-fast data check FILE --decode N`", int(counts[0]), self.batches_done,
                        " (reasons: this rank's)" if self.world_size > 1 else "", shown)
        self.skipped_samples += int(counts[0])
        self.skipped_in_epoch += int(counts[0])
        if self.max_skipped_fraction < 1.0 and self.skipped_in_epoch > self.max_skipped_fraction * len(self.samples):
            raise TrainingError(self._failure_report(
                f"{self.skipped_in_epoch} of the {len(self.samples)} samples of epoch {self._epoch} failed to load, "
                f"more than max_skipped_fraction {self.max_skipped_fraction:g}"))
        return int(counts[1])

    def _failure_report(self, what: str) -> str:
        shown = "".join(f"\n  {f}" for f in self._failures[:self.SHOWN_FAILURES])
        return (f"{what}; stopped. Check the media with `r1omni-fast data check FILE --decode N`. "
                f"First failures{' (this rank)' if self.world_size > 1 else ''}:{shown or ' none on this rank'}")

    def next(self) -> Shard:
        while True:
            batch, requested, positions, size, ghost = next(self._iter)
            epoch = self.samples_done // len(self.samples)
            if epoch != self._epoch:
                self._epoch, self.skipped_in_epoch = epoch, 0
            self.batches_done += 1
            self.samples_done += size
            if self._count_failures(batch, requested, ghost) == 0:  # no clip of the global batch loaded
                self._empty_in_a_row += 1
                log.warning("batch %d: no clip could be loaded; skipped", self.batches_done)
                if self._empty_in_a_row >= self.max_skipped_batches:
                    raise TrainingError(self._failure_report(
                        f"no clip could be loaded for {self._empty_in_a_row} batches in a row (max_skipped_batches)"))
                continue
            self._empty_in_a_row = 0
            if len(batch):
                where = {id(s): p for s, p in zip(requested, positions)}
                shard = Shard(batch, [where[id(s)] for s in batch.samples], size, ghost)
                if not ghost:
                    self._last_good = batch
                return shard
            if self.world_size > 1:
                if self._last_good is None:
                    raise DataError(f"rank {self.rank}: no clip of batch {self.batches_done} could be loaded "
                                    "and no earlier batch can stand in for it")
                log.warning("rank %d, batch %d: no clip could be loaded; this rank contributes nothing to it",
                            self.rank, self.batches_done)
                return Shard(self._last_good, [-1] * len(self._last_good), size, True)
            raise AssertionError("a one-process batch with no clip is counted above")  # pragma: no cover

    def skip_summary(self) -> Optional[str]:
        """The run's skipped samples: their total and the first record ids; None without any."""
        if not self.skipped_samples:
            return None
        before = f" ({self._skipped_before} before the resume)" if self._skipped_before else ""
        more = self.skipped_samples - self._skipped_before - len(self._skipped_ids)
        ids = ", ".join(self._skipped_ids) + (f" and {more} more" if more > 0 and self.world_size == 1 else "")
        rank = " (this rank's)" if self.world_size > 1 else ""
        return (f"{self.skipped_samples} sample(s) skipped in this run because their media could not be loaded"
                f"{before}" + (f"; record ids{rank}: {ids}" if self._skipped_ids else ""))

    def close(self) -> None:
        """Stop the background loading and log :meth:`skip_summary` (when a sample was skipped)."""
        self._iter.close()
        summary = self.skip_summary()
        if summary is not None:
            log.warning("%s", summary)


def stream_position(state: Optional[Dict[str, Any]], num_samples: int, batch_size: int) -> Dict[str, int]:
    """``samples_done`` / ``batches_done`` of a checkpoint's trainer state (older states carry
    only ``batches_done`` and their batch size)."""
    if not state:
        return {"samples_done": 0, "batches_done": 0}
    done = int(state.get("batches_done", 0))
    if "samples_done" in state:
        return {"samples_done": int(state["samples_done"]), "batches_done": done,
                "skipped_samples": int(state.get("skipped_samples", 0)),
                "skipped_in_epoch": int(state.get("skipped_in_epoch", 0))}
    size = int(state.get("global_batch_size", batch_size))
    per_epoch = math.ceil(num_samples / size)
    epoch, offset = divmod(done, per_epoch)
    return {"samples_done": epoch * num_samples + min(offset * size, num_samples), "batches_done": done}


def make_stream(cfg: AnyConfig, data: DataFile, collate: Callable[..., Batch], state: Optional[Dict[str, Any]],
                dist: Any) -> BatchStream:
    """The run's :class:`BatchStream`, at the position of the checkpoint ``state`` (None = start)."""
    position = stream_position(state, len(data), cfg.per_device_train_batch_size)
    return BatchStream(data.samples, cfg.per_device_train_batch_size, collate, seed=cfg.seed, **position,
                       workers=cfg.dataloader_num_workers, depth=cfg.dataloader_prefetch_factor, rank=dist.rank,
                       world_size=dist.world_size, dist=dist, max_skipped_batches=cfg.max_skipped_batches,
                       max_skipped_fraction=cfg.max_skipped_fraction,
                       shuffle=getattr(cfg, "shuffle_dataset", True))  # a GRPO field (TRL's)


def preflight_decode(cfg: AnyConfig, data: DataFile, collate: ClipCollator) -> None:
    """Decode ``cfg.preflight_clips`` clips spread over ``data`` with the run's media settings
    before step 1: when none loads, the run does not start (ConfigError naming data_file and the
    failures); some failing is a warning. Every rank checks the same clips (no collective)."""
    from r1omni_fast.data.check import decode_sample

    if cfg.preflight_clips <= 0 or not len(data):
        return
    results = decode_sample(data.samples, cfg.preflight_clips, loader=collate.loader, **collate.media_kwargs)
    failures = [f"{s.id} ({s.source}): {why}" for s, why in results if why is not None]
    if failures and len(failures) == len(results):
        shown = "".join(f"\n  {f}" for f in failures[:BatchStream.SHOWN_FAILURES])
        raise ConfigError(f"data_file: none of the {len(results)} clips decoded before step 1 could be loaded; "
                          f"check the media with `r1omni-fast data check {cfg.data_file} --decode N`:{shown}")
    if failures:
        log.warning("%d of %d clips checked before step 1 failed to load: %s", len(failures), len(results),
                    "; ".join(failures))
