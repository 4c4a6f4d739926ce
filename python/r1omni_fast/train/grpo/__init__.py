"""GRPO with verifiable rewards (R1-Omni stage 2; math in DESIGN.md §4).

One optimizer step, top to bottom (:meth:`GRPOTrainer.train_step`):

1. rollout of a generation batch of ``steps_per_generation`` micro-batches (default
   ``gradient_accumulation_steps``; TRL's schedule, :func:`micro_batch_plan`: each micro-batch is
   trained ``num_iterations`` times), per micro-batch of ``per_device_train_batch_size`` PROMPTS:
   generate G completions per prompt with a shared prompt prefix (``model.generate``); decode;
   score every reward function in one batch call (``rewards.score_batch``: the built-ins in one
   native pass, user callables with TRL's signature); rewards beyond ``reward_bound`` or infinite
   are an error or, by choice, left out (:meth:`GRPOTrainer.check_rewards`); ``group_advantages``;
   reference log-probs (``selective_logprobs`` under no_grad; skipped, and no reference built,
   when beta = 0); old log-probs computed once when ``num_iterations > 1`` or
   ``steps_per_generation > gradient_accumulation_steps``; the generation batch normalised as one
   (:func:`normalise_step`);
2. per micro-batch: policy forward over the completion positions only (the prompt and its media
   are embedded once per prompt and shared by its G rows); ``grpo_loss`` (Triton on CUDA, PyTorch
   reference on CPU; :func:`micro_batch_loss`); backward, divided by the accumulation count
   (:func:`accumulation_divisor`);
3. clip, optimizer and scheduler step (skipped when the loss or the gradient norm is not finite:
   ``r1omni_fast.train.faults.NonFiniteGuard``).

The reference model shares the policy's frozen modules (towers, BERT) and holds its own copy of
the trainable parts only; with ``use_peft`` it is the policy itself with its LoRA adapters
disabled (``r1omni_fast.model.lora.AdapterDisabled``): no copy at all. Checkpoints and resume follow the SFT stage and add the sampler's
generator state; a checkpoint is written at the end of a step that spends its generation batch
(with ``num_iterations > 1`` or ``steps_per_generation`` the buffered completions are never
stored).

Launch: ``r1omni-fast train --config configs/tiny-grpo.yaml``. Outputs: ``OUT/checkpoint-N/``,
``OUT/metrics.jsonl`` (TRL's metric names), ``OUT/completions.jsonl`` (prompt id, label,
completion, each reward, advantage), ``OUT/grpo_curves.png`` and the final model in ``OUT``.
"""

from r1omni_fast.train.grpo.trainer import GRPOTrainer, run_grpo

__all__ = ["GRPOTrainer", "run_grpo"]
