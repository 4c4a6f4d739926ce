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
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from r1omni_fast import labels as label_sets
from r1omni_fast.config import ConfigError
from r1omni_fast.data import Batch, ClipCollator, DataError, DataFile, Sample, epoch_batches, prefetch, read_data
from r1omni_fast.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def uses_bf16(cfg: Any, device: torch.device) -> bool:
    """``cfg.bf16``, or when unset: on with CUDA, off on CPU (fp32 keeps CPU runs exact)."""
    return device.type == "cuda" if cfg.bf16 is None else bool(cfg.bf16)


def autocast(cfg: Any, device: torch.device):
    """bfloat16 autocast when :func:`uses_bf16`, else a no-op context."""
    if not uses_bf16(cfg, device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# ------------------------------------------------------------------------------------- model


def load_policy(path: str | Path, cfg: Any, device: torch.device):
    """`OmniModel` from ``path`` set up for training with ``cfg``: its processor expands
    ``cfg.num_frames`` frames, only ``cfg.tunable_parts`` train, activation checkpointing on
    request. The weights stay fp32 (bf16 runs use autocast)."""
    from r1omni_fast.model import CheckpointError, OmniModel

    try:
        model = OmniModel.from_pretrained(path, device=device)
    except (CheckpointError, FileNotFoundError) as exc:
        raise ConfigError(f"model_name_or_path: cannot load {path}: {exc}") from None
    if model.processor is None:
        raise ConfigError(f"model_name_or_path: {path} has no tokenizer files (tokenizer.json): "
                          "point it at a complete checkpoint folder")
    model.config.num_frames = cfg.num_frames
    model.processor.num_video_tokens = model.config.num_video_tokens(cfg.num_frames)
    model.set_trainable_parts(cfg.tunable_parts)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
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
    return float(norm)


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
    """Clip collator with the run's media settings; unset sizes come from the model's towers."""
    image_size = cfg.image_size or model.config.vision.image_size
    n_mels = cfg.n_mels or model.config.audio.num_mel_bins
    return ClipCollator(num_frames=cfg.num_frames, image_size=image_size, aspect=cfg.image_aspect_ratio,
                        n_mels=n_mels, loader=loader, on_error=cfg.on_bad_record)


def model_batch(processor: Any, batch: Batch, targets: Optional[Sequence[str]] = None,
                padding_side: str = "left") -> Dict[str, torch.Tensor]:
    """The processor's batch for the samples of ``batch`` (their human turn as instruction)."""
    return processor([s.prompt for s in batch.samples], targets, pixel_values=batch.frames,
                     audio_features=batch.mel, padding_side=padding_side)


def to_device(inputs: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


class BatchStream:
    """Endless stream of collated batches in the order of ``epoch_batches(seed, epoch)``.

    ``batches_done`` counts batches handed out since the start of the run (epoch = batches_done
    // batches_per_epoch), so a resumed run passes the checkpoint's value and continues with
    exactly the next batch. Decoding runs ahead in background threads (``prefetch``). Batches
    whose every clip failed to load are skipped (they still count as consumed).
    """

    def __init__(self, samples: Sequence[Sample], batch_size: int, collate: Callable[..., Batch], *,
                 seed: int, batches_done: int = 0, workers: int = 1, depth: int = 2) -> None:
        self.samples = list(samples)
        self.batch_size = batch_size
        self.seed = seed
        self.batches_done = batches_done
        self.batches_per_epoch = math.ceil(len(self.samples) / batch_size)
        self._iter = prefetch(self._sample_lists(batches_done), collate, depth=depth, workers=workers)

    def _sample_lists(self, start: int) -> Iterator[List[Sample]]:
        position = start
        while True:
            epoch, offset = divmod(position, self.batches_per_epoch)
            order = epoch_batches(len(self.samples), self.batch_size, seed=self.seed, epoch=epoch)
            for indices in order[offset:]:
                yield [self.samples[i] for i in indices]
            position = (epoch + 1) * self.batches_per_epoch

    @property
    def epoch(self) -> float:
        return self.batches_done / self.batches_per_epoch

    def next(self) -> Batch:
        while True:
            batch = next(self._iter)
            self.batches_done += 1
            if len(batch):
                return batch
            log.warning("batch %d: no clip could be loaded; skipped", self.batches_done)

    def close(self) -> None:
        self._iter.close()


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
    """The newest complete checkpoint of ``cfg.output_dir`` when ``cfg.resume``, else None
    (a resume request with no checkpoint yet starts fresh, with a warning)."""
    if not cfg.resume:
        return None
    folder = latest_checkpoint(cfg.output_dir)
    if folder is None:
        log.warning("resume: no complete checkpoint in %s yet; starting from step 0", cfg.output_dir)
    return folder


def restore(folder: Optional[Path], optimizer: torch.optim.Optimizer, scheduler: Any) -> ResumePoint:
    """Load optimizer, scheduler and every RNG from ``folder`` (the model was loaded from it)."""
    if folder is None:
        return ResumePoint()
    state, extra = load_checkpoint(folder, optimizer=optimizer, scheduler=scheduler)
    log.info("resumed from %s (step %d)", folder, state["global_step"])
    return ResumePoint(folder, int(state["global_step"]), state, extra)


def save(cfg: Any, step: int, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
         state: Dict[str, Any], extra: Optional[Dict[str, Any]] = None,
         save_model: Optional[Callable[[Path], None]] = None) -> Path:
    """``checkpoint-{step}`` of the run (atomic; keeps the newest ``save_total_limit``)."""
    return save_checkpoint(cfg.output_dir, step, save_model=save_model or model.save_pretrained,
                           optimizer=optimizer, scheduler=scheduler, trainer_state=state,
                           extra_tensors=extra, save_total_limit=cfg.save_total_limit)


def write_run_config(cfg: Any) -> None:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_config.yaml").write_text(cfg.to_yaml())


# -------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_answers(model: Any, data: DataFile, collate: Callable[..., Batch], cfg: Any,
                     device: torch.device) -> Dict[str, float]:
    """Greedy answers on every sample of ``data``: ``{"eval/format_rate", "eval/accuracy", "eval/n"}``.

    format_rate = mean format reward (R1-Omni's full-match rule); accuracy = mean accuracy reward
    (``reward_mode`` of the config when it has one, else "robust") against the sample labels.
    """
    from r1omni_fast.rewards import score_batch

    was_training = model.training
    model.eval()
    mode = getattr(cfg, "reward_mode", "robust")
    label_set = label_sets.resolve(cfg.label_set)
    formats: List[float] = []
    accuracies: List[float] = []
    try:
        size = cfg.per_device_eval_batch_size
        for start in range(0, len(data), size):
            batch = collate(data.samples[start:start + size], start // size)
            if not len(batch):
                continue
            inputs = to_device(model_batch(model.processor, batch), device)
            with autocast(cfg, device):
                out = model.generate(inputs, num_generations=1, max_new_tokens=cfg.eval_max_new_tokens,
                                     do_sample=False)
            scores = score_batch(out.texts, [s.solution for s in batch.samples], funcs=("accuracy", "format"),
                                 mode=mode, labels=label_set)
            formats += scores["format"].tolist()
            accuracies += scores["accuracy"].tolist()
    finally:
        model.train(was_training)
    n = len(formats)
    return {"eval/format_rate": float(np.mean(formats)) if n else float("nan"),
            "eval/accuracy": float(np.mean(accuracies)) if n else float("nan"), "eval/n": n}


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
    "BatchStream", "ResumePoint", "autocast", "build_optimizer", "clip_gradients", "eval_due",
    "evaluate_answers", "find_resume", "load_policy", "make_collator", "model_batch", "pick_device",
    "plain_numbers", "progress_bar", "read_split", "restore", "save", "seed_everything", "to_device", "total_steps",
    "trainable_parameters", "uses_bf16", "write_run_config",
]

