"""The step's logged numbers: the loss metrics and the reward and completion metrics over
every rank (TRL's names), the no-learning-signal warning, and completions.jsonl on resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from r1omni_fast.config import GRPOConfig
from r1omni_fast.train import distributed
from r1omni_fast.train.grpo.loss import LOSS_METRIC_KEYS, ROW_METRICS, TOKEN_METRICS, _nan_reduce, accumulation_divisor, nan
from r1omni_fast.train.grpo.rollout import Rollout

log = logging.getLogger(__name__)


#: Consecutive GRPO steps without learning signal (every group's rewards equal) before
#: :func:`no_signal_streak` warns.
NO_SIGNAL_STEPS = 5


def no_signal_streak(streak: int, record: Dict[str, Any], *, steps: int = NO_SIGNAL_STEPS, say: bool = True) -> int:
    """The number of consecutive steps without learning signal up to the step of ``record`` (its
    metrics), given ``streak`` before it. A step has none when every group's completions got the
    same reward (``frac_reward_zero_std`` 1.0: every advantage is 0). When the streak reaches
    ``steps`` a warning naming the likely cause is logged (``say``: on this rank), once per streak."""
    if record.get("frac_reward_zero_std", 0.0) < 1.0:
        return 0
    streak += 1
    if streak == steps and say:
        reward = record.get("reward", float("nan"))
        cause = ("no completion is a well-formed answer (an untrained model never writes <answer>...</answer> with "
                 "a label): start from an SFT model (model_name_or_path)" if not reward > 0 else
                 "every completion of a group earns the same non-zero reward (all right, or all equally partly "
                 "right): these prompts are solved for the policy; more varied completions (temperature, "
                 "num_generations) or harder prompts give signal")
        log.warning("GRPO: no learning signal for %d steps in a row (steps %d-%d): in every group all completions got "
                    "the same reward (frac_reward_zero_std 1.0, mean reward %.3g), so every advantage is 0 and the "
                    "rewards teach nothing. Likely cause: %s; or check reward_funcs and label_set", steps,
                    record["step"] - steps + 1, record["step"], reward, cause)
    return streak


def _finite(x: float) -> Optional[float]:
    return x if np.isfinite(x) else None


def _truncate_completions(path: Path, resume_step: Optional[int]) -> None:
    """Fresh run: empty file; resume from step k: drop the rows written after step k."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if resume_step is None or not path.exists():
        path.write_text("")
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line)["step"] <= resume_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)


def loss_metrics(losses: Sequence[float], parts: Sequence[Dict[str, Any]], rollouts: Sequence[Rollout],
                 cfg: GRPOConfig, dist: distributed.Dist) -> Dict[str, float]:
    """The step's loss (the sum of the micro-batch losses as they enter backward) and the loss
    metrics (KL, entropy, clip ratios, vespo's phi: token- or sequence-weighted over the ranks,
    then averaged over micro-batches, as one process computes them over the whole batch)."""
    keys = [k for k in LOSS_METRIC_KEYS if k in parts[0]]
    sequence_level = cfg.importance_sampling_level == "sequence"
    numbers: List[float] = [sum(losses)]
    for r, m in zip(rollouts, parts):
        rows = 0.0 if r.ghost else float(r.mask.shape[0])
        tokens = 0.0 if r.ghost else float(r.loss_tokens.sum())
        units = {k: rows if k in ROW_METRICS or (sequence_level and k not in TOKEN_METRICS) else tokens
                 for k in keys}
        numbers += [units[k] for k in keys] + [float(m[k]) * units[k] for k in keys]
    if dist.enabled:
        numbers = dist.sum(numbers)
    out = {"loss": numbers[0] / accumulation_divisor(cfg.loss_type, len(parts))}
    width = 2 * len(keys)
    for j, key in enumerate(keys):
        values = []
        for i in range(len(parts)):
            den, num = numbers[1 + i * width + j], numbers[1 + i * width + len(keys) + j]
            values.append(num / den if den else 0.0)
        out[key] = float(np.mean(values))
    if "clip_ratio/low_min" in parts[0]:
        # TRL: per global micro-batch, the least / largest per-sequence clip fraction over the ranks
        extremes = [(nan, nan) if r.ghost else (float(m["clip_ratio/low_min"]), float(m["clip_ratio/high_max"]))
                    for r, m in zip(rollouts, parts)]
        ranks = dist.gather(extremes)
        low = [_nan_reduce([rank[i][0] for rank in ranks], min) for i in range(len(parts))]
        high = [_nan_reduce([rank[i][1] for rank in ranks], max) for i in range(len(parts))]
        out["clip_ratio/low_min"] = float(np.mean(low))
        out["clip_ratio/high_max"] = float(np.mean(high))
    return out



def rollout_metrics(rollouts: Sequence[Rollout], reward_names: Sequence[str], eos_token_ids: Sequence[int],
                    dist: distributed.Dist) -> Dict[str, float]:
    """TRL's reward and completion metrics over the completions of ``rollouts`` (of every rank)."""
    local = [(r.rewards.double(), r.total.double(), r.group_std.double().cpu(), r.mask.sum(1).double().cpu(),
              r.completion_ids.gather(1, (r.mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1).cpu())
             for r in rollouts if not r.ghost]
    parts = [p for rank in dist.gather(local) for p in rank]
    rewards, total, group_std, lengths, ends = (torch.cat(column) for column in zip(*parts))
    eos = torch.tensor(list(eos_token_ids), device=ends.device)
    out = {"reward": float(total.mean()),
           "reward_std": float(total.std()) if total.numel() > 1 else 0.0,  # TRL: the std of all rewards
           "reward_std/group_mean": float(group_std.mean()),
           "frac_reward_zero_std": float(torch.isclose(group_std, torch.zeros_like(group_std)).double().mean())}
    for i, name in enumerate(reward_names):
        col = rewards[:, i]
        col = col[~torch.isnan(col)]
        out[f"rewards/{name}/mean"] = float(col.mean()) if col.numel() else float("nan")
        out[f"rewards/{name}/std"] = float(col.std()) if col.numel() > 1 else 0.0
    out["completions/mean_length"] = float(lengths.mean())
    out["completions/max_length"] = float(lengths.max())
    out["completions/min_length"] = float(lengths.min())
    truncated = ~torch.isin(ends, eos)
    out["completions/clipped_ratio"] = float(truncated.double().mean())
    terminated = lengths[~truncated] if bool((~truncated).any()) else torch.zeros(1, dtype=lengths.dtype)
    out["completions/mean_terminated_length"] = float(terminated.mean())  # TRL: 0 when none ended
    out["completions/min_terminated_length"] = float(terminated.min())
    out["completions/max_terminated_length"] = float(terminated.max())
    return out
