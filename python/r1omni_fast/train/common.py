"""What the SFT and GRPO loops share: seeding, device and precision, loading the policy with its
processor, reading the data splits, the reproducible batch stream with its resume position,
model batches from samples, the optimiser, checkpoint save/restore, and the held-out
format-rate evaluation.

Resume contract: a run's state after optimizer step ``s`` is fully described by the checkpoint
``checkpoint-s`` (model, optimizer, scheduler, every RNG) plus ``batches_done`` in its
``trainer_state.json``; the batch order is a pure function of (seed, epoch), so the stream
restarts at exactly the next batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from r1omni_fast import labels as label_sets
from r1omni_fast.config import ConfigError
from r1omni_fast.data import Batch, ClipCollator, DataError, DataFile, Sample, epoch_batches, prefetch, read_data
from r1omni_fast.atomic import remove_dead_temporaries
from r1omni_fast.train.checkpoint import (DamagedFileError, ResumeError, RunLock, check_folder, checkpoint_dirs,
                                          compare_fingerprint, load_checkpoint, read_trainer_state, run_fingerprint,
                                          save_checkpoint)
from r1omni_fast.train.faults import TrainingError, check_finite_weights

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def uses_bf16(cfg: Any, device: torch.device) -> bool:
    """``cfg.bf16``, or when unset: on with CUDA, off on CPU (fp32 keeps CPU runs exact)."""
    return device.type == "cuda" if cfg.bf16 is None else bool(cfg.bf16)


def autocast(cfg: Any, device: torch.device):
    """bfloat16 autocast when :func:`uses_bf16`, else a no-op context."""
    if not uses_bf16(cfg, device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# ------------------------------------------------------------------------------------- model


def check_tunable_parts(path: str | Path, parts: Sequence[str]) -> None:
    """Raise ConfigError naming the parts, the backend and its parts when ``parts`` names one the
    backend of the checkpoint at ``path`` has not (``BackendSpec.tunable_parts``), before any
    weight loads. A folder whose backend cannot be told (an adapter folder, a broken one) is left
    to the loader's own errors."""
    from r1omni_fast.model import CheckpointError
    from r1omni_fast.model.policy import spec_for

    try:
        spec = spec_for(path)
    except CheckpointError:
        return
    bad = [p for p in parts if p not in spec.tunable_parts]
    if bad:
        raise ConfigError(f"tunable_parts: {', '.join(bad)} {'is not a part' if len(bad) == 1 else 'are not parts'} "
                          f"of a {spec.title} model ({path}): choose from {', '.join(spec.tunable_parts)}")


def load_policy(path: str | Path, cfg: Any, device: torch.device):
    """The policy at ``path`` (its backend chosen by the checkpoint's ``model_type``,
    ``r1omni_fast.model.policy``) set up for training with ``cfg``: clips of ``cfg.num_frames``
    frames, only ``cfg.tunable_parts`` train, activation checkpointing on request. The weights
    stay fp32 (bf16 runs use autocast).

    With ``cfg.use_peft`` LoRA adapters are added (``r1omni_fast.model.lora``); ``path`` may then
    be a checkpoint of the run (an adapter folder: the base comes from ``model_name_or_path``). A
    ``model_name_or_path`` that is an adapter folder loads with its adapter merged."""
    from r1omni_fast.model import CheckpointError
    from r1omni_fast.model import lora

    use_peft = bool(getattr(cfg, "use_peft", False))
    resuming = cfg.model_name_or_path is not None and Path(path).resolve() != Path(cfg.model_name_or_path).resolve()
    adapter = None
    if resuming and lora.is_adapter_folder(path) != use_peft:
        held = "a LoRA adapter" if use_peft is False else "full weights"
        raise ConfigError(f"use_peft: the checkpoint {path} holds {held}: resume with use_peft: {str(not use_peft).lower()} "
                          "as it was trained, or start a new output_dir")
    if resuming and use_peft:
        adapter, path = path, cfg.model_name_or_path
    check_tunable_parts(path, cfg.tunable_parts)
    try:
        check_folder(path)  # a cut or empty file: one line naming it
        if adapter is not None:
            check_folder(adapter)
        model = lora.load_model(path, device=device)
    except (CheckpointError, FileNotFoundError, lora.LoraError) as exc:
        raise ConfigError(f"model_name_or_path: cannot load {path}: {exc}") from None
    if model.processor is None:
        raise ConfigError(f"model_name_or_path: {path} has no tokenizer files (tokenizer.json): "
                          "point it at a complete checkpoint folder")
    templates = model.processor.chat_templates  # the renderings the backend's processor supports
    if getattr(cfg, "chat_template", "checkpoint") not in templates:
        raise ConfigError(f"chat_template: {cfg.chat_template!r} is not available for {path} "
                          f"(use {' or '.join(templates)})")
    model.set_num_frames(cfg.num_frames)
    try:
        model.set_trainable_parts(cfg.tunable_parts)
    except ValueError as exc:
        raise ConfigError(f"tunable_parts: {exc}") from None
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if use_peft:
        try:
            lora.apply_lora(model, cfg, adapter=adapter, base_path=path)
        except lora.LoraError as exc:
            raise ConfigError(str(exc)) from None
    return model


def trainable_parameters(model: torch.nn.Module) -> List[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (cfg's lr, betas, epsilon, weight decay)."""
    params = trainable_parameters(model)
    if not params:
        raise ConfigError(f"tunable_parts {cfg.tunable_parts} leave no trainable parameter")
    return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay)


def clip_gradients(params: Sequence[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the global L2 gradient norm to ``max_norm`` (0 = only measure it); return the norm
    before clipping."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else float("inf"))
    from r1omni_fast.train.distributed import grad_norm_value

    return grad_norm_value(norm)


# -------------------------------------------------------------------------------------- data


def read_split(cfg: Any, field_name: str, kind: str) -> DataFile:
    """Read ``cfg.<field_name>`` with the run's label set and bad-record policy; a file with no
    usable record is a ConfigError naming the field."""
    path = getattr(cfg, field_name)
    try:
        data = read_data(path, labels=cfg.label_set, on_error=cfg.on_bad_record, kind=kind)
    except DataError as exc:
        raise ConfigError(f"{field_name}: {exc}") from None
    if not len(data):
        raise ConfigError(f"{field_name}: {path} holds no usable record ({data.num_skipped} skipped)")
    if data.num_skipped:
        log.warning("%s: skipped %d bad record(s) of %d", path, data.num_skipped, data.num_records)
    return data


def make_collator(cfg: Any, model: Any, loader: Optional[Callable] = None) -> ClipCollator:
    """The model's clip collator with the run's media settings (audio as each record asks); unset
    sizes come from the model."""
    return model.media_collator(num_frames=cfg.num_frames, image_size=cfg.image_size, aspect=cfg.image_aspect_ratio,
                                n_mels=cfg.n_mels, audio="record", loader=loader, on_error=cfg.on_bad_record)


def model_batch(processor: Any, batch: Batch, targets: Optional[Sequence[str]] = None,
                padding_side: str = "left", chat_template: str = "checkpoint",
                prompt_style: str = "data") -> Dict[str, torch.Tensor]:
    """The processor's batch for the samples of ``batch`` (their prompt as instruction), rendered
    with ``chat_template`` ("checkpoint" or "qwen2vl", see ``OmniProcessor.prompt_text``).
    ``prompt_style`` "humanomni" lays each prompt out as HumanOmni's SFT did, BERT text included
    (``humanomni_sft_turn``), and ends each target as its labels do, with the template's whole turn
    end (``<|im_end|>\n``); "data" uses the prompt as it is and ends targets at ``<|im_end|>``."""
    from r1omni_fast.prompts import humanomni_sft_turn

    instructions, bert_texts = [s.prompt for s in batch.samples], None
    if prompt_style == "humanomni":
        instructions, bert_texts = (list(x) for x in zip(*(humanomni_sft_turn(p) for p in instructions)))
    elif prompt_style != "data":
        raise ValueError(f"prompt_style={prompt_style!r}: use data or humanomni")
    return processor(instructions, targets, pixel_values=batch.frames, audio_features=batch.mel,
                     padding_side=padding_side, chat_template=chat_template, bert_texts=bert_texts,
                     template_turn_end=prompt_style == "humanomni")


def to_device(inputs: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


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


def total_steps(cfg: Any, batches_per_epoch: int) -> int:
    """``max_steps``, or ``ceil(num_train_epochs * batches_per_epoch / gradient_accumulation_steps)``."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.num_train_epochs * batches_per_epoch / cfg.gradient_accumulation_steps))


# ------------------------------------------------------------------------------- checkpoints


@dataclass
class ResumePoint:
    """Where a run restarts: the checkpoint folder (None = fresh), its step, its trainer state and
    the extra tensors saved with it."""

    folder: Optional[Path] = None
    step: int = 0
    state: Optional[Dict[str, Any]] = None
    extra: Optional[Dict[str, Any]] = None


def find_resume(cfg: Any) -> Optional[Path]:
    """The newest complete checkpoint of ``cfg.output_dir`` that loads, when ``cfg.resume``, else
    None (a resume request with no checkpoint yet starts fresh, with a warning).

    Each checkpoint, newest first, is read without unpickling (``checkpoint.check_folder``); a
    damaged one is reported in one warning naming the file and the next older one is tried; none
    left is a :class:`ResumeError`. The chosen checkpoint's run fingerprint must match ``cfg``
    (``checkpoint.compare_fingerprint``: another stage, model or identity field is a ResumeError
    naming both values); the changed fields it applies are logged."""
    if not cfg.resume:
        return None
    dirs = checkpoint_dirs(cfg.output_dir)
    if not dirs:
        log.warning("resume: no complete checkpoint in %s yet; starting from step 0", cfg.output_dir)
        return None
    damaged: List[str] = []
    for folder in reversed(dirs):
        try:
            check_folder(folder)
            state = read_trainer_state(folder)
        except (DamagedFileError, ResumeError) as exc:
            damaged.append(str(exc))
            log.warning("resume: %s; trying the checkpoint before it", exc)
            continue
        if damaged:
            log.warning("resume: falling back to %s, the newest complete checkpoint (%d newer one(s) damaged)",
                        folder, len(damaged))
        for change in compare_fingerprint(folder, state, cfg):
            log.warning("resume: %s (applied from step %d on)", change, int(state["global_step"]) + 1)
        return folder
    raise ResumeError(f"resume: no checkpoint of {cfg.output_dir} can be loaded (newest: {damaged[0]}): delete "
                      "the damaged checkpoints to start afresh, or choose another output_dir")


def apply_resumed_settings(optimizer: torch.optim.Optimizer, scheduler: Any, cfg: Any) -> None:
    """After a resume: the run's ``learning_rate`` and ``weight_decay`` written into every
    optimizer group (``initial_lr`` too) and the scheduler's base rates, and the current rate
    recomputed from the schedule of this config (its ``max_steps`` horizon) at the resumed step:
    ``lr = learning_rate * lambda(step)``, as a fresh run of this length has at that step. With
    nothing changed it is what the checkpoint held, bit for bit."""
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.learning_rate
        group["weight_decay"] = cfg.weight_decay
    scheduler.base_lrs = [cfg.learning_rate] * len(optimizer.param_groups)
    lrs = [base * lam(scheduler.last_epoch) for base, lam in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs


def restore(folder: Optional[Path], optimizer: torch.optim.Optimizer, scheduler: Any,
            model: Optional[torch.nn.Module] = None, dist: Any = None, *, cfg: Any = None) -> ResumePoint:
    """Load optimizer, scheduler and every RNG from ``folder`` (the model weights were loaded
    from it), then apply ``cfg``'s learning rate, weight decay and schedule
    (:func:`apply_resumed_settings`). A sharded checkpoint (``dcp/``, written by several ranks) restores the trainable
    model state and the optimizer through ``model``, at any number of ranks; a single process's
    ``optimizer.pt`` is spread over the ranks of a distributed run."""
    if folder is None:
        return ResumePoint()
    if cfg is None:
        raise TypeError("restore needs the run's cfg")
    from r1omni_fast.train import distributed

    state, extra = load_checkpoint(folder, optimizer=None if dist is not None and dist.enabled else optimizer,
                                   scheduler=scheduler)
    if (folder / distributed.SHARDED_DIR).is_dir():
        distributed.load_sharded(folder, model, optimizer)
    elif dist is not None and dist.enabled:
        distributed.load_full_optimizer(folder / "optimizer.pt", model, optimizer)
    apply_resumed_settings(optimizer, scheduler, cfg)
    log.info("resumed from %s (step %d)", folder, state["global_step"])
    return ResumePoint(folder, int(state["global_step"]), state, extra)


def save(cfg: Any, step: int, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
         state: Dict[str, Any], extra: Optional[Dict[str, Any]] = None,
         save_model: Optional[Callable[[Path], None]] = None, dist: Any = None,
         sharded_states: Optional[Dict[str, Any]] = None) -> Path:
    """``checkpoint-{step}`` of the run (atomic; keeps the newest ``save_total_limit``). With
    several ranks every rank calls it: the model is consolidated into model.safetensors and the
    trainable and optimizer states are written sharded (``dcp/``), with ``sharded_states`` (more
    named state dicts, e.g. a synced reference model). Weights holding NaN or inf are never
    written (:class:`r1omni_fast.train.faults.NonFiniteError`)."""
    check_finite_weights(trainable_parameters(model), dist)
    from r1omni_fast.model import lora

    state = dict(state, fingerprint=run_fingerprint(cfg))
    if save_model is None and lora.is_lora(model):  # the adapter, not the weights (gathered under FSDP)
        save_model = lambda folder: lora.save_adapter(model, folder, dist)  # noqa: E731
    if dist is None or not dist.enabled:
        return save_checkpoint(cfg.output_dir, step, save_model=save_model or model.save_pretrained,
                               optimizer=optimizer, scheduler=scheduler, trainer_state=state,
                               extra_tensors=extra, save_total_limit=cfg.save_total_limit)
    from r1omni_fast.train import distributed

    return save_checkpoint(cfg.output_dir, step,
                           save_model=save_model or (lambda folder: distributed.export_model(model, folder, dist)),
                           optimizer=None, scheduler=scheduler, trainer_state=dict(state, world_size=dist.world_size),
                           extra_tensors=extra, save_total_limit=cfg.save_total_limit,
                           save_sharded=lambda folder: distributed.save_sharded(folder, model, optimizer, sharded_states),
                           dist=dist)


def write_run_config(cfg: Any) -> None:
    """``OUT/run_config.yaml`` (atomic)."""
    from r1omni_fast.atomic import write_text

    write_text(Path(cfg.output_dir) / "run_config.yaml", cfg.to_yaml())


#: what a run writes into its output_dir besides the final model (``overwrite_output_dir`` clears them)
RUN_FILES = ("metrics.jsonl", "completions.jsonl", "sft_curves.png", "grpo_curves.png")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def claim_output_dir(cfg: Any, dist: Any = None) -> RunLock:
    """Take ``cfg.output_dir`` for this run before anything is written (rank 0; every rank gets
    the same answer), returning the held :class:`checkpoint.RunLock` (release it at the end).

    ConfigError (exit 2) when: output_dir is model_name_or_path or inside it; it cannot be created
    or written; another live run holds its lock (the message names pid, host, start); it holds
    another run's checkpoints or a non-empty ``metrics.jsonl`` and neither ``resume`` nor
    ``overwrite_output_dir`` is set. With ``overwrite_output_dir`` (and no ``resume``) those
    checkpoints and :data:`RUN_FILES` are removed first. Temporaries of dead processes go too."""
    out = Path(cfg.output_dir).resolve()
    if cfg.model_name_or_path and _inside(out, Path(cfg.model_name_or_path).resolve()):
        raise ConfigError(f"output_dir {cfg.output_dir} is the model folder model_name_or_path "
                          f"{cfg.model_name_or_path} or inside it: the run would overwrite the model it starts from; "
                          "choose another output_dir")
    lock = RunLock(cfg.output_dir)
    error = None
    if dist is None or dist.is_main:
        try:
            lock.acquire()
            _check_previous_run(cfg, Path(cfg.output_dir))
        except ConfigError as exc:
            lock.release()
            error = str(exc)
    if dist is not None and dist.enabled:
        error = dist.gather(error)[0]
    if error is not None:
        raise ConfigError(error)
    return lock


def _check_previous_run(cfg: Any, out: Path) -> None:
    remove_dead_temporaries(out)
    if cfg.resume:
        return
    metrics = out / "metrics.jsonl"
    found = [p.name for p in checkpoint_dirs(out)]
    found += [metrics.name] if metrics.is_file() and metrics.stat().st_size > 0 else []
    if not found:
        return
    if not getattr(cfg, "overwrite_output_dir", False):
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ConfigError(f"output_dir {cfg.output_dir} holds another run ({shown}): continue it with --resume, "
                          "replace it with overwrite_output_dir: true, or choose another output_dir")
    import shutil

    for p in checkpoint_dirs(out) + [p for p in out.glob("checkpoint-*") if p.is_dir()]:
        shutil.rmtree(p, ignore_errors=True)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    log.warning("overwrite_output_dir: removed the previous run's %s from %s", ", ".join(found), out)


def export_final(model: Any, cfg: Any, dist: Any, step: int, checkpoint: Optional[Path]) -> None:
    """The final model (``distributed.export_model``) written into a temporary folder inside
    ``cfg.output_dir`` and moved in with ``atomic.replace_files``, its marker (``config.json``,
    ``adapter_config.json`` for LoRA) last: an interrupted export leaves the folder without
    marker (refused on load), never new files beside old weights. A full disk is a
    ``CheckpointWriteError`` (one line; ``checkpoint`` is intact); the partial folder goes."""
    import shutil

    from r1omni_fast.atomic import replace_files
    from r1omni_fast.model import lora
    from r1omni_fast.train import distributed
    from r1omni_fast.train.checkpoint import CheckpointWriteError, _out_of_space, filesystem_of

    out = Path(cfg.output_dir)
    main = dist is None or dist.is_main
    pid = os.getpid() if dist is None or not dist.enabled else dist.gather(os.getpid())[0]
    tmp = out / f".tmp-final-model-{pid}"
    try:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        if dist is not None:
            dist.barrier()
        distributed.export_model(model, tmp, dist)
        if main:
            replace_files(out, tmp, marker=lora.ADAPTER_CONFIG if lora.is_lora(model) else "config.json")
    except BaseException as exc:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and _out_of_space(exc, out):
            kept = f"{checkpoint.name} is intact" if checkpoint is not None else "no checkpoint was written"
            raise CheckpointWriteError(f"no space left on {filesystem_of(out)} while writing the final model into "
                                       f"{out}; {kept}: free space and run again with --resume") from exc
        raise
    if dist is not None:
        dist.barrier()


def make_stream(cfg: Any, data: DataFile, collate: Callable[..., Batch], state: Optional[Dict[str, Any]],
                dist: Any) -> BatchStream:
    """The run's :class:`BatchStream`, at the position of the checkpoint ``state`` (None = start)."""
    position = stream_position(state, len(data), cfg.per_device_train_batch_size)
    return BatchStream(data.samples, cfg.per_device_train_batch_size, collate, seed=cfg.seed, **position,
                       workers=cfg.dataloader_num_workers, depth=cfg.dataloader_prefetch_factor, rank=dist.rank,
                       world_size=dist.world_size, dist=dist, max_skipped_batches=cfg.max_skipped_batches,
                       max_skipped_fraction=cfg.max_skipped_fraction,
                       shuffle=getattr(cfg, "shuffle_dataset", True))  # a GRPO field (TRL's)


def preflight_decode(cfg: Any, data: DataFile, collate: ClipCollator) -> None:
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


# -------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_answers(model: Any, data: DataFile, collate: Callable[..., Batch], cfg: Any,
                     device: torch.device, dist: Any = None) -> Dict[str, float]:
    """Greedy answers on every sample of ``data``: ``{"eval/accuracy", "eval/uar",
    "eval/format_rate", "eval/truncated", "eval/n"}``.

    The evaluation of ``r1omni-fast eval`` (``r1omni_fast.eval.runner``: its prompt building,
    generation and answer matching) with the run's settings: the run's clips (``collate``: frames,
    aspect), ``eval_max_new_tokens``, the prompt layout training used (SFT's ``prompt_style``;
    GRPO's styles rewrote the samples) and its ``chat_template``, and the answers matched as
    ``reward_mode`` scores them ("robust" or "r1omni"; "robust" without one). accuracy is the WAR,
    uar the mean recall over the classes present, format_rate the share of completions that earn
    the format reward, truncated the share cut off by the budget. ``evaluate_rows`` with the same
    settings gives the same numbers. With several ranks each answers its contiguous share of
    ``data`` and the rows are gathered (every rank must call it; all return the same numbers).
    """
    from r1omni_fast.eval.metrics import classification_metrics
    from r1omni_fast.train import distributed

    was_training = model.training
    model.eval()
    label_set = label_sets.resolve(cfg.label_set)
    samples = data.samples
    if dist is not None and dist.enabled:
        samples = samples[distributed.rank_slice(len(samples), dist.rank, dist.world_size)]
    rows: List[tuple] = []
    error = None
    try:
        try:
            with distributed.gathered(model, dist) if dist is not None else contextlib.nullcontext():
                scored = _answer_batches(model, samples, collate, cfg, device, label_set)
        except Exception as exc:  # noqa: BLE001 -- gathered below, so that every rank raises it
            scored, error = [], f"{type(exc).__name__}: {exc}"
        parts = dist.gather((scored, error)) if dist is not None else [(scored, error)]
        errors = [e for _, e in parts if e is not None]
        if errors:
            raise EvaluationError(errors[0])
        for part, _ in parts:
            rows += part
    finally:
        model.train(was_training)
    n = len(rows)
    if not n:
        return {"eval/accuracy": float("nan"), "eval/uar": float("nan"), "eval/format_rate": float("nan"),
                "eval/truncated": float("nan"), "eval/n": 0}
    labels, predictions, formats, truncated = (list(x) for x in zip(*rows))
    scores = classification_metrics(labels, predictions, label_set.labels)
    return {"eval/accuracy": float(scores["war"]), "eval/uar": float(scores["uar"]),
            "eval/format_rate": float(np.mean(formats)), "eval/truncated": float(np.mean(truncated)), "eval/n": n}


def eval_answer_matching(cfg: Any) -> str:
    """How in-training evaluation matches answers: as the run's ``reward_mode`` scores them."""
    mode = getattr(cfg, "reward_mode", "robust")
    return mode if mode in ("robust", "r1omni") else "robust"


def eval_collator(model: Any, collate: Any, cfg: Any) -> Any:
    """The collator ``r1omni-fast eval`` builds (``eval.runner.clip_collator``: video and audio of
    every clip, the checkpoint's normalisation, failures skipped) with the run's frames, size,
    aspect and clip loader (that of ``collate``)."""
    from r1omni_fast.data import ClipCollator
    from r1omni_fast.eval.runner import clip_collator

    loader = collate._loader if isinstance(collate, ClipCollator) else getattr(collate, "loader", None)
    return clip_collator(model, ("video", "audio"), cfg.num_frames, cfg.image_size, cfg.image_aspect_ratio, loader)


def _answer_batches(model: Any, samples: Sequence[Sample], collate: Callable[..., Batch], cfg: Any,
                    device: torch.device, label_set: Any) -> List[tuple]:
    """(label, prediction, well formed, truncated) of a greedy answer to each loaded sample; the
    inputs of each record are those of ``r1omni-fast eval`` (:func:`eval_collator`: a clip that
    cannot give what its prompt needs is skipped and counted, as eval skips it)."""
    from r1omni_fast.eval.runner import generate_answers, score_rows

    rows: List[tuple] = []
    skipped: List[tuple] = []
    size = cfg.per_device_eval_batch_size
    collate = eval_collator(model, collate, cfg)
    # the layout training used: SFT's humanomni prompt_style (GRPO's styles rewrote the samples)
    layout = "humanomni" if getattr(cfg, "prompt_style", None) == "humanomni" else "data"
    for start in range(0, len(samples), size):
        batch = collate(samples[start:start + size], start // size)
        skipped += batch.skipped
        if not len(batch):
            continue
        with autocast(cfg, device):
            texts, truncated = generate_answers(model, batch, ("video", "audio"), None, cfg.eval_max_new_tokens,
                                                layout, getattr(cfg, "chat_template", "checkpoint"), device=device)
        for row, cut in zip(score_rows(batch.samples, texts, label_set, eval_answer_matching(cfg)), truncated):
            rows.append((row["label"], row["prediction"], bool(row["well_formed"]), bool(cut)))
    if skipped:
        log.warning("evaluation: %d of %d eval_file clip(s) skipped, as r1omni-fast eval skips them (first: %s)",
                    len(skipped), len(samples), "; ".join(f"{i}: {why}" for i, why in skipped[:3]))
    return rows


class EvaluationError(RuntimeError):
    """The in-training evaluation failed (any rank's error, the same on every rank)."""


def run_evaluation(model: Any, data: DataFile, collate: Callable[..., Batch], cfg: Any, device: torch.device,
                   dist: Any, step: int) -> Dict[str, Any]:
    """:func:`evaluate_answers`, where a failure never ends the run: it is a warning and the
    record's ``eval/error`` (the model, the checkpoints and training are unaffected)."""
    try:
        return evaluate_answers(model, data, collate, cfg, device, dist)
    except EvaluationError as exc:
        log.warning("step %d: the evaluation of %s failed (%s); the model and checkpoints are kept, training goes on",
                    step, cfg.eval_file, exc)
        return {"eval/error": str(exc)}


def eval_due(cfg: Any, step: int, last_step: int) -> bool:
    """Evaluate every ``eval_steps`` steps and at the last step (when there is an eval_file)."""
    if not cfg.eval_file:
        return False
    return step == last_step or (cfg.eval_steps is not None and step % cfg.eval_steps == 0)


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                unit="step")


def plain_numbers(record: Dict[str, Any]) -> Dict[str, Any]:
    """numpy / torch scalars turned into Python numbers (values are logged unrounded: resume
    tests compare them exactly)."""
    return {k: (v.item() if isinstance(v, (torch.Tensor, np.generic)) else v) for k, v in record.items()}


__all__ = [
    "BatchStream", "EvaluationError", "ResumePoint", "apply_resumed_settings", "autocast", "claim_output_dir",
    "eval_collator", "export_final", "run_evaluation", "build_optimizer", "clip_gradients", "eval_answer_matching", "eval_due",
    "evaluate_answers", "find_resume", "load_policy", "make_collator", "make_stream", "model_batch",
    "plain_numbers", "preflight_decode", "progress_bar", "read_split", "restore", "save", "seed_everything", "to_device", "total_steps",
    "trainable_parameters", "uses_bf16", "write_run_config",
]

