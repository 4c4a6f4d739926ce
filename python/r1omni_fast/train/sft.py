"""Cold-start SFT (R1-Omni stage 1): teach the ``<think>…</think><answer>…</answer>`` format and the
reasoning style from annotated clips.

Loss: mean token cross-entropy over the assistant tokens only (prompt, media features and padding
are labelled -100). One optimizer step = ``gradient_accumulation_steps`` micro-batches of
``per_device_train_batch_size`` samples, each micro-batch loss divided by the accumulation count;
AdamW over the trainable parts, the configured schedule, global-norm clipping; bf16 autocast on
CUDA, fp32 on CPU.

Launch: ``r1omni-fast train --config configs/tiny-sft.yaml [--max-steps 20 ...]``.
Outputs (DESIGN.md §7): ``OUT/checkpoint-N/``, ``OUT/metrics.jsonl``, ``OUT/sft_curves.png`` and the
final model in ``OUT`` itself (``OmniModel.from_pretrained(OUT)`` loads it; the GRPO stage starts
from it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from r1omni_fast.config import ConfigError, SFTConfig
from r1omni_fast.model import IGNORE_INDEX
from r1omni_fast.train import common, distributed, faults
from r1omni_fast.train.routing import RouterTerms
from r1omni_fast.train.stream import make_stream, preflight_decode
from r1omni_fast.train.evaluation import eval_due, run_evaluation
from r1omni_fast.train.metrics_log import MetricsLog, plot_curves, read_jsonl
from r1omni_fast.train.schedule import build_scheduler
from r1omni_fast.train.tracking import Trackers

log = logging.getLogger(__name__)


def sft_inputs(processor: Any, batch: Any, max_length: int, prompt_style: str = "data") -> Dict[str, torch.Tensor]:
    """Right-padded prompt + target rows with labels on the target tokens only, cut to
    ``max_length`` columns (targets are truncated; a prompt that does not fit is an error).
    ``prompt_style``: "data" or "humanomni" (``common.model_batch``)."""
    inputs = common.model_batch(processor, batch, [s.target for s in batch.samples], padding_side="right",
                                prompt_style=prompt_style)
    if inputs["input_ids"].shape[1] > max_length:
        prompt_lengths = (inputs["labels"] == IGNORE_INDEX).long().cumprod(1).sum(1)
        if int(prompt_lengths.max()) >= max_length:
            raise ConfigError(
                f"max_length {max_length} is shorter than a prompt ({int(prompt_lengths.max())} tokens "
                "including the media placeholders): raise max_length")
        inputs = {k: v[:, :max_length] if k in ("input_ids", "attention_mask", "labels") else v
                  for k, v in inputs.items()}
    return inputs


def run_sft(cfg: SFTConfig, *, loader: Optional[Callable] = None, progress: bool = True) -> Path:
    """Train with ``cfg`` and return the folder of the final model (``cfg.output_dir``).

    ``loader`` replaces ``r1omni_fast.media.load_batch`` (same signature). With ``cfg.resume``
    the run continues from the newest complete checkpoint exactly as if never stopped. Under
    torchrun every rank runs this (``r1omni_fast.train.distributed``): each takes its share of
    every global batch of ``per_device_train_batch_size * WORLD_SIZE`` samples, and the loss is
    the mean over the assistant tokens of the whole global batch, as in one process.
    """
    if cfg.stage != "sft":
        raise ConfigError(f"run_sft needs an sft config, got stage {cfg.stage!r}")
    cfg.require("model_name_or_path", "data_file")
    dist = distributed.from_environment(cfg)
    try:
        lock = common.claim_output_dir(cfg, dist)
        try:
            return _run(cfg, dist, loader, progress)
        finally:
            lock.release()
    finally:
        distributed.shutdown(dist)


def _run(cfg: SFTConfig, dist: distributed.Dist, loader: Optional[Callable], progress: bool) -> Path:
    common.seed_everything(cfg.seed)
    device = dist.device
    out = Path(cfg.output_dir)
    train_data = common.read_split(cfg, "data_file", kind="sft")
    eval_data = common.read_split(cfg, "eval_file", kind="auto") if cfg.eval_file else None

    resume_from = common.find_resume(cfg)
    model = common.load_policy(resume_from or cfg.model_name_or_path, cfg, device)
    model.train()
    step_module: torch.nn.Module = model  # what the training forward runs through
    if dist.fsdp:
        distributed.fsdp(model, dist, cfg, use_bf16=common.uses_bf16(cfg, device))
    elif dist.enabled:
        step_module = distributed.ddp(model, dist, cfg)
    params = common.trainable_parameters(model)
    optimizer = common.build_optimizer(model, cfg)
    collate = common.make_collator(cfg, model, loader)
    router = RouterTerms(model, cfg)
    batches_per_epoch = -(-len(train_data) // (cfg.per_device_train_batch_size * dist.world_size))
    last_step = common.total_steps(cfg, batches_per_epoch)
    scheduler = build_scheduler(optimizer, cfg.lr_scheduler_type, cfg.warmup_ratio, last_step)
    start = common.restore(resume_from, optimizer, scheduler, model, dist, cfg=cfg)  # RNGs too: after every seeding
    main = dist.is_main
    preflight_decode(cfg, train_data, collate)  # before the run's files: a refusal leaves none
    if main:
        common.write_run_config(cfg)
    metrics = MetricsLog(out / "metrics.jsonl", resume_step=start.step if start.folder else None) if main else None
    stream = make_stream(cfg, train_data, collate, start.state, dist)
    guard = faults.NonFiniteGuard(cfg.max_nonfinite_steps, int((start.state or {}).get("nonfinite_steps", 0)))
    bar = common.progress_bar(last_step, start.step, "sft", progress and main)
    accumulation = cfg.gradient_accumulation_steps

    # TRL's num_tokens: the input tokens (attention mask; a media placeholder counts once) of every
    # step so far, every rank, kept across a resume
    num_tokens = int((start.state or {}).get("num_tokens", 0))

    def save(step: int) -> Path:
        return common.save(cfg, step, model, optimizer, scheduler,
                           {"stage": "sft", **stream.state(), "nonfinite_steps": guard.total, "max_steps": last_step,
                            "num_tokens": num_tokens}, dist=dist)

    final_record: Optional[Dict[str, Any]] = None
    saved: Optional[Path] = start.folder
    try:
        with faults.StopSignals() as signals:  # SIGTERM / SIGUSR1 / SIGINT: save after the step, then stop
            if main:
                metrics.trackers = Trackers(cfg, resume_step=start.step if start.folder else None)
            for step in range(start.step + 1, last_step + 1):
                t0 = time.perf_counter()
                loss_sum, seen = 0.0, 0
                for micro in range(accumulation):
                    shard = stream.next()
                    inputs = common.to_device(sft_inputs(model.processor, shard.batch, cfg.max_length, cfg.prompt_style), device)
                    local = 0 if shard.ghost else int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())
                    # this rank's share of the global batch's token mean (DDP and FSDP average over ranks)
                    weight = 1.0
                    if dist.enabled:
                        weight = local * dist.world_size / max(dist.sum([local])[0], 1.0)
                    with distributed.accumulating(step_module, dist, last=micro == accumulation - 1):
                        with common.autocast(cfg, device), model.routing() as routes:
                            loss = step_module(**inputs).loss
                        loss = router.add(loss, routes, counted=not shard.ghost)
                        (loss * weight / accumulation).backward()
                    loss_sum += float(loss.detach()) * weight / dist.world_size
                    seen += 0 if shard.ghost else int(inputs["attention_mask"].sum())
                if dist.enabled:
                    loss_sum, seen = dist.sum([loss_sum, seen])
                num_tokens += int(seen)
                grad_norm = common.clip_gradients(params, cfg.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                if not guard.check(step, {"loss": loss_sum / accumulation, "grad_norm": grad_norm}, dist):
                    optimizer.step()
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                record: Dict[str, Any] = {
                    "step": step, "epoch": stream.epoch, "loss": loss_sum / accumulation,
                    "learning_rate": lr, "grad_norm": grad_norm, "num_tokens": num_tokens,
                    "nonfinite_steps": guard.total, "skipped_samples": stream.skipped_samples,
                    "step_time": time.perf_counter() - t0, **router.metrics(dist)}
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
                if step == last_step:  # logged after the final model is written and evaluated
                    final_record, saved = record, save(step)
                    break
                if eval_data is not None and eval_due(cfg, step, last_step):
                    record.update(run_evaluation(model, eval_data, collate, cfg, device, dist, step))
                if main and (step % cfg.logging_steps == 0 or "eval/error" in record or "eval/n" in record):
                    metrics.log(common.plain_numbers(record))
                saved = save(step) if step % cfg.save_steps == 0 else None
                stop = signals.requested(dist)
                if stop:
                    raise faults.Preempted(stop, step, saved or save(step))
            # the final model first (signals wait for it), then the final evaluation
            common.export_final(model, cfg, dist, last_step, saved)
            stop = signals.requested(dist)
            if final_record is not None:
                if eval_data is not None and not stop:
                    final_record.update(run_evaluation(model, eval_data, collate, cfg, device, dist, last_step))
                if main:
                    metrics.log(common.plain_numbers(final_record))
            if stop:
                raise faults.Preempted(stop, last_step, saved, finished=True)
    finally:
        bar.close()
        stream.close()
        if metrics is not None:
            metrics.close()
    if main:
        plot_curves(read_jsonl(out / "metrics.jsonl"), ["loss", "learning_rate", "eval/format_rate"],
                    out / "sft_curves.png", title="SFT")
    return out
