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
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from r1omni_fast.config import AnyConfig, ConfigError
from r1omni_fast.data import Batch, ClipCollator, DataError, DataFile, read_data
from r1omni_fast.atomic import remove_dead_temporaries
from r1omni_fast.train.checkpoint import (DamagedFileError, ResumeError, RunLock, check_folder, checkpoint_dirs,
                                          compare_fingerprint, load_checkpoint, read_trainer_state, run_fingerprint,
                                          save_checkpoint)
from r1omni_fast.train.faults import check_finite_weights

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def uses_bf16(cfg: AnyConfig, device: torch.device) -> bool:
    """``cfg.bf16``, or when unset: on with CUDA, off on CPU (fp32 keeps CPU runs exact)."""
    return device.type == "cuda" if cfg.bf16 is None else bool(cfg.bf16)


def autocast(cfg: AnyConfig, device: torch.device):
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


def load_policy(path: str | Path, cfg: AnyConfig, device: torch.device):
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


def build_optimizer(model: torch.nn.Module, cfg: AnyConfig) -> torch.optim.AdamW:
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


def read_split(cfg: AnyConfig, field_name: str, kind: str) -> DataFile:
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


def make_collator(cfg: AnyConfig, model: Any, loader: Optional[Callable] = None) -> ClipCollator:
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


def total_steps(cfg: AnyConfig, batches_per_epoch: int) -> int:
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


def find_resume(cfg: AnyConfig) -> Optional[Path]:
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
            continue
        if damaged:  # one line: where the run continues, and why each newer checkpoint was passed over
            log.warning("resume: falling back to %s, the newest complete checkpoint; %d newer one(s) damaged: %s",
                        folder, len(damaged), "; ".join(damaged))
        for change in compare_fingerprint(folder, state, cfg):
            log.warning("resume: %s (applied from step %d on)", change, int(state["global_step"]) + 1)
        return folder
    raise ResumeError(f"resume: no checkpoint of {cfg.output_dir} can be loaded (newest: {damaged[0]}): delete "
                      "the damaged checkpoints to start afresh, or choose another output_dir")


def apply_resumed_settings(optimizer: torch.optim.Optimizer, scheduler: Any, cfg: AnyConfig) -> None:
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
            model: Optional[torch.nn.Module] = None, dist: Any = None, *, cfg: AnyConfig = None) -> ResumePoint:
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


def save(cfg: AnyConfig, step: int, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
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


def write_run_config(cfg: AnyConfig) -> None:
    """``OUT/run_config.yaml`` (atomic)."""
    from r1omni_fast.atomic import write_text

    write_text(Path(cfg.output_dir) / "run_config.yaml", cfg.to_yaml())


#: what a run writes into its output_dir besides the final model (``overwrite_output_dir`` clears them)
RUN_FILES = ("metrics.jsonl", "completions.jsonl", "sft_curves.png", "grpo_curves.png")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def claim_output_dir(cfg: AnyConfig, dist: Any = None) -> RunLock:
    """Take ``cfg.output_dir`` for this run before anything is written (rank 0; every rank gets
    the same answer), returning the held :class:`checkpoint.RunLock` (release it at the end).

    ConfigError (exit 2) when: output_dir is model_name_or_path or inside it, or (for an adapter
    folder) its base model folder or any base further down (``lora.adapter_chain``); it cannot be created
    or written; another live run holds its lock (the message names pid, host, start); it holds
    another run's checkpoints or a non-empty ``metrics.jsonl`` and neither ``resume`` nor
    ``overwrite_output_dir`` is set. With ``overwrite_output_dir`` (and no ``resume``) those
    checkpoints and :data:`RUN_FILES` are removed first. Temporaries of dead processes go too."""
    from r1omni_fast.model import lora

    out = Path(cfg.output_dir).resolve()
    if cfg.model_name_or_path:
        try:
            protected = lora.adapter_chain(cfg.model_name_or_path)
        except lora.LoraError as exc:
            raise ConfigError(f"model_name_or_path: {exc}") from None
        if _inside(out, protected[0]):
            raise ConfigError(f"output_dir {cfg.output_dir} is the model folder model_name_or_path "
                              f"{cfg.model_name_or_path} or inside it: the run would overwrite the model it starts "
                              "from; choose another output_dir")
        for base in protected[1:]:
            if _inside(out, base):
                raise ConfigError(f"output_dir {cfg.output_dir} is {base} or inside it, the base model folder of the "
                                  f"adapter model_name_or_path {cfg.model_name_or_path} (base_model_name_or_path in "
                                  f"{lora.ADAPTER_CONFIG}): the run would overwrite the model the adapter needs; "
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


def _check_previous_run(cfg: AnyConfig, out: Path) -> None:
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


def export_final(model: Any, cfg: AnyConfig, dist: Any, step: int, checkpoint: Optional[Path]) -> None:
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




def progress_bar(total: int, initial: int, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                unit="step")


def plain_numbers(record: Dict[str, Any]) -> Dict[str, Any]:
    """numpy / torch scalars turned into Python numbers (values are logged unrounded: resume
    tests compare them exactly)."""
    return {k: (v.item() if isinstance(v, (torch.Tensor, np.generic)) else v) for k, v in record.items()}


__all__ = [
    "ResumePoint", "apply_resumed_settings", "autocast", "build_optimizer", "claim_output_dir", "clip_gradients",
    "export_final", "find_resume", "load_policy", "make_collator", "model_batch", "plain_numbers", "progress_bar",
    "read_split", "restore", "save", "seed_everything", "to_device", "total_steps", "trainable_parameters",
    "uses_bf16", "write_run_config",
]

