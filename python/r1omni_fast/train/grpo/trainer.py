"""The GRPO trainer: :class:`GRPOTrainer` (one optimizer step: :meth:`GRPOTrainer.train_step`)
and :func:`run_grpo`. The module docstring of ``r1omni_fast.train.grpo`` describes the step."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from r1omni_fast import labels as label_sets
from r1omni_fast.config import ConfigError, GRPOConfig
from r1omni_fast.data import Batch
from r1omni_fast.kernels import selective_logprobs
from r1omni_fast.model import GenerationOutput, lora
from r1omni_fast.rewards import score_batch
from r1omni_fast.train import common, distributed, faults, modality_dropout, recipe
from r1omni_fast.train.checkpoint import read_trainer_state
from r1omni_fast.train.routing import RouterTerms
from r1omni_fast.train.stream import BatchStream, Shard, make_stream, preflight_decode
from r1omni_fast.train.evaluation import eval_due, run_evaluation
from r1omni_fast.train.metrics_log import MetricsLog, plot_curves, read_jsonl
from r1omni_fast.train.schedule import build_scheduler
from r1omni_fast.train.tracking import Trackers, markdown_table
from r1omni_fast.train.grpo.advantages import normalise_step, step_advantages
from r1omni_fast.train.grpo.loss import accumulation_divisor, loss_warnings, micro_batch_loss
from r1omni_fast.train.grpo.metrics import (_finite, _truncate_completions, loss_metrics, no_signal_streak,
                                            rollout_metrics)
from r1omni_fast.train.grpo.reference import (disable_dropout, load_reference_state, reference_state,
                                              sync_reference)
from r1omni_fast.train.grpo.rewards import (RewardTrainerState, check_cue_fields, check_rewards, resolve_reward_funcs,
                                            reward_inputs, reward_name)
from r1omni_fast.train.grpo.rollout import (Rollout, completion_mask, micro_batch_plan, prompt_text_length,
                                            resolve_steps_per_generation, sampling_settings)

log = logging.getLogger(__name__)


class GRPOTrainer:
    """The GRPO loop for one config. ``run_grpo(cfg)`` is ``GRPOTrainer(cfg).train()``."""

    def __init__(self, cfg: GRPOConfig, *, loader: Optional[Callable] = None, progress: bool = True) -> None:
        if cfg.stage != "grpo":
            raise ConfigError(f"GRPOTrainer needs a grpo config, got stage {cfg.stage!r}")
        cfg.require("model_name_or_path", "data_file")
        self.cfg = cfg
        self.progress = progress
        self.no_signal_steps = 0  # consecutive steps without learning signal (no_signal_streak)
        self.dist = distributed.from_environment(cfg)
        self.steps_per_generation = resolve_steps_per_generation(cfg, self.dist.world_size)
        self.lock = common.claim_output_dir(cfg, self.dist)  # released when train() ends
        try:
            self._setup(cfg, loader)
        except BaseException:
            self.lock.release()
            raise

    def _setup(self, cfg: GRPOConfig, loader: Optional[Callable]) -> None:
        self.resume_from = common.find_resume(cfg)
        # a run resumed from a per-prompt-sampling checkpoint keeps sampling that way
        resumed_per_prompt = bool(self.resume_from is not None
                                  and read_trainer_state(self.resume_from).get("per_prompt_sampling", False))
        self.per_prompt = (cfg.per_prompt_sampling if cfg.per_prompt_sampling is not None
                           else self.dist.enabled or resumed_per_prompt)
        if self.dist.enabled and not self.per_prompt:
            raise ConfigError("per_prompt_sampling: false needs a single process (with several ranks each "
                              "prompt samples from its own generator so that runs do not depend on the rank count)")
        if self.dist.is_main:
            for warning in loss_warnings(cfg):
                log.warning(warning)
        common.seed_everything(cfg.seed)
        self.device = self.dist.device
        self.out = Path(cfg.output_dir)
        self.reward_funcs = resolve_reward_funcs(cfg.reward_funcs)
        self.reward_names = [reward_name(f) for f in self.reward_funcs]
        if len(set(self.reward_names)) != len(self.reward_names):
            raise ConfigError(f"reward_funcs: names must be distinct, got {self.reward_names}")
        self.reward_weights = cfg.reward_weights or [1.0] * len(self.reward_funcs)
        self.label_set = label_sets.resolve(cfg.label_set)
        self.train_data = common.read_split(cfg, "data_file", kind="auto")
        self.eval_data = common.read_split(cfg, "eval_file", kind="auto") if cfg.eval_file else None
        self.train_data = recipe.apply_grpo_recipe(self.train_data, cfg)
        recipe.warn_missing_format(self.train_data.samples, self.reward_names, "data_file")
        check_cue_fields(self.train_data.samples, self.reward_names, "data_file")
        if self.eval_data is not None:
            self.eval_data = recipe.apply_grpo_recipe(self.eval_data, cfg)

        self.model = common.load_policy(self.resume_from or cfg.model_name_or_path, cfg, self.device)
        self.model.train()
        self.ref = None
        if cfg.beta != 0.0 and cfg.use_peft:  # the policy with its adapters disabled: the base weights
            self.ref = lora.AdapterDisabled(self.model)
        elif cfg.beta != 0.0:  # beta = 0: no reference model at all
            source = None
            if self.resume_from is not None:  # the reference is the starting model, not the checkpoint
                source = common.load_policy(cfg.model_name_or_path, cfg, self.device)
            self.ref = self.model.reference_view(source,
                                                 share_frozen=not (self.dist.fsdp and cfg.fsdp_shard_towers))
        if cfg.disable_dropout:
            disable_dropout(self.model)
            if self.ref is not None:
                disable_dropout(self.ref)
        if self.dist.fsdp:
            bf16 = common.uses_bf16(cfg, self.device)
            distributed.fsdp(self.model, self.dist, cfg, use_bf16=bf16)
            if self.ref is not None and not cfg.use_peft:
                distributed.fsdp(self.ref, self.dist, cfg, use_bf16=bf16)
        # the policy pass of a training step runs through this (DDP must see it as a forward; FSDP
        # has wrapped the method with its hooks above)
        self.policy_logits: Callable[..., torch.Tensor] = self.model.completion_logits
        if self.dist.enabled and not self.dist.fsdp:
            self.policy_logits = distributed.ddp(distributed.CompletionLogits(self.model), self.dist, cfg)
        self.params = common.trainable_parameters(self.model)
        self.optimizer = common.build_optimizer(self.model, cfg)
        self.collate = common.make_collator(cfg, self.model, loader)
        self.router = RouterTerms(self.model, cfg)
        batches_per_epoch = -(-len(self.train_data) // (cfg.per_device_train_batch_size * self.dist.world_size))
        self.last_step = common.total_steps(cfg, batches_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, cfg.lr_scheduler_type, cfg.warmup_ratio, self.last_step)
        self.sampler = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.start = common.restore(self.resume_from, self.optimizer, self.scheduler, self.model, self.dist,
                                    cfg=cfg)
        extra = self.start.extra or {}
        if "sampler" in extra:
            self.sampler.set_state(extra["sampler"])
        if self.ref is not None and cfg.sync_ref_model and self.resume_from is not None:
            if "ref_model" in extra:  # written by one process
                load_reference_state(self.ref, self.model, extra["ref_model"])
            else:  # written by several ranks: in the sharded checkpoint
                state = reference_state(self.ref, self.model, self.dist)
                distributed.load_sharded_states(self.resume_from, {"reference": state})
                load_reference_state(self.ref, self.model, state)
        self.stream: Optional[BatchStream] = None
        self.rollouts: List[Rollout] = []  # the micro-batches of the last step
        self.buffer: List[Rollout] = []  # the current generation batch (steps_per_generation micro-batches)
        self.global_step = self.start.step
        self.guard = faults.NonFiniteGuard(cfg.max_nonfinite_steps,
                                           int((self.start.state or {}).get("nonfinite_steps", 0)))
        self.trackers: Optional[Trackers] = None  # rank 0, while train() runs
        self.num_tokens = int((self.start.state or {}).get("num_tokens", 0))

    # --- one micro-batch of prompts -> completions, rewards, advantages, log-probs -----------
    def prompt_inputs(self, batch: Batch) -> Dict[str, torch.Tensor]:
        inputs = common.model_batch(self.model.processor, batch, padding_side="left",
                                    chat_template=self.cfg.chat_template)
        if self.cfg.max_prompt_length is not None:
            longest = int(prompt_text_length(inputs["input_ids"], inputs["attention_mask"],
                                             self.model.processor.media_token_ids).max())
            if longest > self.cfg.max_prompt_length:
                raise ConfigError(f"max_prompt_length {self.cfg.max_prompt_length} is shorter than a prompt "
                                  f"({longest} tokens, each media placeholder counted once): raise it")
        return common.to_device(inputs, self.device)

    def prompt_generators(self, positions: Sequence[int]) -> List[torch.Generator]:
        """One generator per prompt, seeded by (seed, the prompt's place in the sample stream)."""
        seeds = [int(np.random.SeedSequence([self.cfg.seed, max(p, 0)]).generate_state(1, np.uint64)[0] >> 1)
                 for p in positions]
        return [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def generate(self, prompts: Dict[str, torch.Tensor], positions: Optional[Sequence[int]] = None) -> GenerationOutput:
        cfg = self.cfg
        generator: Any = self.sampler
        if self.per_prompt:
            if positions is None:
                raise ValueError("per-prompt sampling needs the prompts' stream positions")
            generator = self.prompt_generators(positions)
        self.model.eval()
        try:
            with common.autocast(cfg, self.device), distributed.gathered(self.model, self.dist):
                return self.model.generate(prompts, num_generations=cfg.num_generations,
                                           max_new_tokens=cfg.max_completion_length, do_sample=True,
                                           generator=generator, **sampling_settings(cfg))
        finally:
            self.model.train()

    def sequence_logprobs(self, model: Any, rollout: Rollout) -> torch.Tensor:
        """Per-token log-probs (N, T) of the rollout's completions under ``model``, no gradient."""
        with torch.no_grad(), common.autocast(self.cfg, self.device):
            logits = model.completion_logits(rollout.prompts, rollout.completion_ids, rollout.mask,
                                             self.cfg.num_generations)
            logp = selective_logprobs(logits, rollout.completion_ids, self.cfg.temperature)
        distributed.reshard(model, self.dist)
        return logp

    def make_rollout(self, batch: Union[Batch, Shard], completions: Optional[GenerationOutput] = None) -> Rollout:
        """Generate (or take ``completions``), decode, score, normalise, and compute the reference
        and old log-probs the loss will need. ``batch`` is a Batch or this rank's Shard of one."""
        cfg, G = self.cfg, self.cfg.num_generations
        shard = batch if isinstance(batch, Shard) else None
        batch = shard.batch if shard is not None else batch
        if cfg.modality_dropout:  # one draw per prompt, by (seed, step, sample id): resumes draw alike
            batch = modality_dropout.drop_modalities(batch, cfg.modality_dropout, cfg.seed, self.global_step + 1)
        times: Dict[str, float] = {}
        t = time.perf_counter()
        prompts = self.prompt_inputs(batch)
        if completions is not None:
            generated = completions
        elif self.per_prompt:
            generated = self.generate(prompts, shard.positions if shard is not None else None)
        else:
            generated = self.generate(prompts)
        ids = generated.completion_ids.to(self.device)
        mask = completion_mask(generated.lengths.to(self.device), ids.shape[1])
        texts = generated.texts if generated.texts is not None else [
            self.model.processor.decode(row[:n]) for row, n in zip(ids.tolist(), generated.lengths.tolist())]
        times["generate"] = time.perf_counter() - t

        t = time.perf_counter()
        samples = [s for s in batch.samples for _ in range(G)]
        completions, columns = reward_inputs(samples, texts, cfg.reward_completions)
        scores = score_batch(completions, funcs=self.reward_funcs, weights=self.reward_weights,
                             mode=cfg.reward_mode, labels=self.label_set, trainer_state=self.state_for_rewards(),
                             completion_ids=[row[:n] for row, n in zip(ids.tolist(), mask.sum(1).tolist())],
                             **columns)
        num_invalid = check_rewards(scores, samples, self.reward_names, self.reward_weights, cfg)
        rewards = torch.from_numpy(np.stack([scores[n] for n in self.reward_names], 1))  # float64, for logs
        advantages, _, group_std = step_advantages(rewards, G, self.reward_weights, cfg.scale_rewards, self.device)
        times["score"] = time.perf_counter() - t

        rollout = Rollout(batch, prompts, ids, mask, list(texts), rewards,
                          torch.from_numpy(scores["total"]), advantages, group_std,
                          times=times, ghost=bool(shard is not None and shard.ghost), num_invalid=num_invalid)
        if cfg.mask_truncated_completions:  # TRL: truncated rows leave the loss and its normalisers
            rollout.loss_mask = mask & ~self.truncated(ids, mask)[:, None]
        t = time.perf_counter()
        if self.ref is not None:
            rollout.ref_logp = self.sequence_logprobs(self.ref, rollout)
        if cfg.num_iterations > 1 or self.steps_per_generation > cfg.gradient_accumulation_steps:
            # the sampling policy's log-probs, once for all reuses and the later optimizer steps
            rollout.old_logp = self.sequence_logprobs(self.model, rollout)
        times["reference"] = time.perf_counter() - t
        return rollout

    def truncated(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N,) bool: completions whose last generated token is not an EOS (they hit
        max_completion_length)."""
        ends = ids.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
        return ~torch.isin(ends, torch.tensor(self.model.processor.eos_token_ids, device=ids.device))

    def state_for_rewards(self) -> RewardTrainerState:
        """``trainer_state`` for reward functions (TRL passes its TrainerState)."""
        return RewardTrainerState(global_step=self.global_step, max_steps=self.last_step,
                                  epoch=self.stream.epoch if self.stream is not None else 0)

    def policy_loss(self, rollout: Rollout, *, entropy: bool = True) -> tuple:
        """:func:`micro_batch_loss` of the current policy on a rollout: (loss, metrics)."""
        cfg = self.cfg
        with common.autocast(cfg, self.device):
            logits = self.policy_logits(rollout.prompts, rollout.completion_ids, rollout.mask, cfg.num_generations)
        return micro_batch_loss(logits, rollout, cfg, self.dist, entropy=entropy)

    def generation_done(self, step: int) -> bool:
        """Whether step ``step`` used the last micro-batch of its generation batch's last reuse (the
        buffer is spent: a checkpoint here resumes exactly)."""
        ga = self.cfg.gradient_accumulation_steps
        return (step * ga) % (self.steps_per_generation * self.cfg.num_iterations) == 0

    # --- one optimizer step ------------------------------------------------------------------
    def train_step(self, step: int) -> Dict[str, Any]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches. Micro-batch ``k``
        of the run (counted from 0 over every step) trains on ``buffer[k % steps_per_generation]``
        of the generation batch made at the last ``k`` divisible by ``steps_per_generation *
        num_iterations`` (TRL's ``_prepare_inputs``): a new generation batch of
        ``steps_per_generation`` micro-batches is generated, scored and normalised there, as one."""
        cfg = self.cfg
        self.global_step = step - 1  # optimizer steps done when this step's rewards are scored
        t0 = time.perf_counter()
        ga, spg = cfg.gradient_accumulation_steps, self.steps_per_generation
        logged = step % cfg.logging_steps == 0 or step == self.last_step
        losses, parts, self.rollouts, generated = [], [], [], []
        policy_time = 0.0
        for i, (generate, index) in enumerate(micro_batch_plan(step, ga, spg, cfg.num_iterations)):
            if generate or not self.buffer:  # generate -> score -> advantages -> reference log-probs
                generated += self.new_generation_batch(step)
            rollout = self.buffer[index]
            t = time.perf_counter()
            loss, metrics = self.policy_backward(rollout, last=i == ga - 1, entropy=logged)  # loss
            policy_time += time.perf_counter() - t
            losses.append(loss)
            parts.append(metrics)
            self.rollouts.append(rollout)
        t = time.perf_counter()
        lr, grad_norm = self.optimizer_step(step, sum(losses))  # step
        times = {"time/policy": policy_time, "time/optimizer": time.perf_counter() - t,
                 "step_time": time.perf_counter() - t0}
        return self.step_record(step, lr, grad_norm, losses, parts, generated, times)

    def new_generation_batch(self, step: int) -> List[Rollout]:
        """``steps_per_generation`` fresh rollouts into the buffer, normalised as one generation
        batch (:func:`normalise_step`) and written to completions.jsonl; returns them."""
        cfg = self.cfg
        self.buffer = [self.make_rollout(self.stream.next()) for _ in range(self.steps_per_generation)]
        normalise_step(self.buffer, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
                       group_size=cfg.num_generations, reward_weights=self.reward_weights, dist=self.dist,
                       aggregation=cfg.multi_objective_aggregation)
        self.write_completions(step, self.buffer)
        return self.buffer

    def policy_backward(self, rollout: Rollout, *, last: bool, entropy: bool) -> tuple:
        """The policy loss of one micro-batch and its backward (weighted by the rollout's share,
        divided by :func:`accumulation_divisor`; DDP synchronises on the ``last`` one). Returns
        (this rank's share of the loss as a float, the loss metrics)."""
        module = self.policy_logits if isinstance(self.policy_logits, torch.nn.Module) else self.model
        divisor = accumulation_divisor(self.cfg.loss_type, self.cfg.gradient_accumulation_steps)
        with distributed.accumulating(module, self.dist, last=last):
            with self.model.routing() as routes:  # closed before the backward (checkpointing reruns the routers)
                loss, metrics = self.policy_loss(rollout, entropy=entropy)
            loss = self.router.add(loss, routes, counted=not rollout.ghost)
            (loss * rollout.weight / divisor).backward()
        return float(loss.detach()) * rollout.weight / self.dist.world_size, metrics

    def optimizer_step(self, step: int, loss: float) -> tuple:
        """Clip, then the optimizer and scheduler step unless the loss or the gradient norm is not
        finite (``loss``, the step's summed loss, and the gradient norm: ``faults.NonFiniteGuard``); TRL's
        reference sync. Returns (learning rate, grad norm)."""
        cfg = self.cfg
        grad_norm = common.clip_gradients(self.params, cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        if not self.guard.check(step, {"loss": loss, "grad_norm": grad_norm}, self.dist):
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ref is not None and cfg.sync_ref_model and step % cfg.ref_model_sync_steps == 0:
            sync_reference(self.ref, self.model, self.dist, cfg.ref_model_mixup_alpha)
        return lr, grad_norm

    def step_record(self, step: int, lr: float, grad_norm: float, losses: Sequence[float],
                    parts: Sequence[Dict[str, Any]], generated: Sequence[Rollout], times: Dict[str, float]) -> Dict[str, Any]:
        """The step's line of metrics.jsonl (TRL's names): loss metrics, reward and completion
        metrics, counts, token totals and timings."""
        cfg = self.cfg
        record = {"step": step, "epoch": self.stream.epoch, "learning_rate": lr, "grad_norm": grad_norm}
        record.update(loss_metrics(losses, parts, self.rollouts, cfg, self.dist))
        record.update(self.router.metrics(self.dist))
        record.update(self.rollout_metrics(self.rollouts))
        if cfg.modality_dropout:
            record.update(modality_dropout.dropout_metrics(
                [s for r in self.rollouts if not r.ghost for s in r.batch.samples], self.dist))
        invalid = [float(sum(r.num_invalid for r in generated))]
        record["rewards/num_invalid"] = int(self.dist.sum(invalid)[0])
        if generated:  # TRL's num_tokens: prompt + completion tokens of every generated row, all ranks, cumulative
            seen = sum(int(r.mask.sum()) + int(r.prompts["attention_mask"].sum()) * cfg.num_generations
                       for r in generated if not r.ghost)
            self.num_tokens += int(self.dist.sum([seen])[0])
        record["num_tokens"] = self.num_tokens
        record["nonfinite_steps"] = self.guard.total
        record["skipped_samples"] = self.stream.skipped_samples
        gen_times = {k: sum(r.times[k] for r in generated) for k in ("generate", "score", "reference")}
        record.update({f"time/{k}": v for k, v in gen_times.items()})
        record.update(times)
        tokens = sum(int(r.mask.sum()) + int(r.prompts["attention_mask"].sum()) * cfg.num_generations
                     for r in self.rollouts)
        record["tokens_per_second"] = tokens / times["step_time"] if times["step_time"] > 0 else 0.0
        self.no_signal_steps = no_signal_streak(self.no_signal_steps, record, say=self.dist.is_main)
        return record

    def rollout_metrics(self, rollouts: Sequence[Rollout]) -> Dict[str, float]:
        """:func:`metrics.rollout_metrics` of ``rollouts`` with this run's reward names, EOS ids and ranks."""
        return rollout_metrics(rollouts, self.reward_names, self.model.processor.eos_token_ids, self.dist)

    def write_completions(self, step: int, rollouts: Sequence[Rollout]) -> None:
        """Append the rollouts' completions to completions.jsonl (rank 0 writes every rank's,
        micro-batch by micro-batch in rank order: the order of the global batch)."""
        local: List[List[str]] = []
        for r in rollouts:
            rows = []
            samples = [s for s in r.batch.samples for _ in range(self.cfg.num_generations)]
            for i, (sample, text) in enumerate(zip(samples, r.texts)):
                if r.ghost:
                    break
                row = {"step": step, "prompt_id": sample.id, "label": sample.label, "completion": text}
                if "dropped_modalities" in sample.extra:
                    row["dropped_modalities"] = sample.extra["dropped_modalities"]
                row.update({name: _finite(float(r.rewards[i, j])) for j, name in enumerate(self.reward_names)})
                row.update({"reward": float(r.total[i]), "advantage": float(r.advantages[i])})
                rows.append(json.dumps(row) + "\n")
            local.append(rows)
        ranks = self.dist.gather(local)
        if not self.dist.is_main:
            return
        ordered = [line for micro in range(len(rollouts)) for rank in ranks for line in rank[micro]]
        with open(self.out / "completions.jsonl", "a", encoding="utf-8") as fh:
            fh.writelines(ordered)
        if self.cfg.log_completions and (step % self.cfg.logging_steps == 0 or step == self.last_step):
            self.log_completions(step, [json.loads(line) for line in ordered])

    def log_completions(self, step: int, rows: Sequence[Dict[str, Any]]) -> None:
        """TRL's ``log_completions``: the step's completions as a table to the trackers, and the
        first ``num_completions_to_print`` (all when None) printed."""
        columns = list(rows[0]) if rows else []
        table = [[row[c] for c in columns] for row in rows]
        if self.trackers is not None:
            self.trackers.log_table(step, columns, table)
        shown = table if self.cfg.num_completions_to_print is None else table[:self.cfg.num_completions_to_print]
        if shown:
            tqdm.write(f"completions of step {step}:\n{markdown_table(columns, shown)}", file=sys.stderr)

    # --- the loop --------------------------------------------------------------------------------
    def save(self, step: int) -> Path:
        extra: Dict[str, Any] = {} if self.per_prompt else {"sampler": self.sampler.get_state()}
        sharded: Dict[str, Any] = {}
        if self.ref is not None and self.cfg.sync_ref_model:  # the synced reference is part of the run's state
            if self.dist.enabled:
                sharded["reference"] = reference_state(self.ref, self.model, self.dist)
            else:
                extra["ref_model"] = reference_state(self.ref, self.model, self.dist)
        return common.save(self.cfg, step, self.model, self.optimizer, self.scheduler,
                           {"stage": "grpo", **self.stream.state(), "nonfinite_steps": self.guard.total,
                            "per_prompt_sampling": self.per_prompt, "max_steps": self.last_step,
                            "num_tokens": self.num_tokens}, extra,
                           dist=self.dist, sharded_states=sharded)

    def train(self) -> Path:
        """Run to ``last_step``; returns the folder of the final model (``output_dir``)."""
        try:
            return self._train()
        finally:
            self.lock.release()
            distributed.shutdown(self.dist)

    def _train(self) -> Path:
        cfg, start, main = self.cfg, self.start, self.dist.is_main
        metrics = None
        preflight_decode(cfg, self.train_data, self.collate)  # before the run's files: a refusal leaves none
        if main:
            common.write_run_config(cfg)
            metrics = MetricsLog(self.out / "metrics.jsonl", resume_step=start.step if start.folder else None)
            _truncate_completions(self.out / "completions.jsonl", start.step if start.folder else None)
        self.stream = make_stream(cfg, self.train_data, self.collate, start.state, self.dist)
        bar = common.progress_bar(self.last_step, start.step, "grpo", self.progress and main)
        save_pending = False
        final_record: Optional[Dict[str, Any]] = None
        saved: Optional[Path] = start.folder
        try:
            # SIGTERM / SIGUSR1 / SIGINT: save at the end of the reuse cycle (num_iterations), then stop
            with faults.StopSignals() as signals:
                if main:
                    self.trackers = metrics.trackers = Trackers(cfg, resume_step=start.step if start.folder else None)
                for step in range(start.step + 1, self.last_step + 1):
                    record = self.train_step(step)
                    bar.set_postfix(reward=f"{record['reward']:.3f}", step_s=f"{record['step_time']:.1f}", refresh=False)
                    bar.update(1)
                    if step == self.last_step:  # logged after the final model is written and evaluated
                        final_record, saved = record, self.save(step)
                        break
                    if self.eval_data is not None and eval_due(cfg, step, self.last_step):
                        record.update(run_evaluation(self.model, self.eval_data, self.collate, cfg, self.device,
                                                            self.dist, step))
                    if main and (step % cfg.logging_steps == 0 or "eval/error" in record or "eval/n" in record):
                        metrics.log(common.plain_numbers(record))
                    save_pending |= step % cfg.save_steps == 0
                    stop = signals.requested(self.dist)
                    if (save_pending or stop) and self.generation_done(step):
                        saved = self.save(step)
                        save_pending = False
                        if stop:
                            raise faults.Preempted(stop, step, saved)
                # the final model first (signals wait for it), then the final evaluation
                common.export_final(self.model, cfg, self.dist, self.last_step, saved)
                stop = signals.requested(self.dist)
                if final_record is not None:
                    if self.eval_data is not None and not stop:
                        final_record.update(run_evaluation(self.model, self.eval_data, self.collate, cfg,
                                                                  self.device, self.dist, self.last_step))
                    if main:
                        metrics.log(common.plain_numbers(final_record))
                if stop:
                    raise faults.Preempted(stop, self.last_step, saved, finished=True)
        finally:
            bar.close()
            self.stream.close()
            if metrics is not None:
                metrics.close()
            self.trackers = None
        if main:
            plot_curves(read_jsonl(self.out / "metrics.jsonl"),
                        ["reward", "rewards/accuracy/mean", "kl", "reward_std", "completions/mean_length",
                         "eval/accuracy"],
                        self.out / "grpo_curves.png", title="GRPO")
        return self.out


def run_grpo(cfg: GRPOConfig, *, loader: Optional[Callable] = None, progress: bool = True) -> Path:
    """Train with ``cfg`` (see the module docstring); returns the final model folder."""
    return GRPOTrainer(cfg, loader=loader, progress=progress).train()
