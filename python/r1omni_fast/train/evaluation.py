"""In-training evaluation: greedy answers on ``eval_file`` every ``eval_steps`` steps and at the
end, scored as ``r1omni-fast eval`` scores them, spread over the ranks."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import torch

from r1omni_fast.config import AnyConfig
from r1omni_fast import labels as label_sets
from r1omni_fast.data import Batch, ClipCollator, DataFile, Sample

from r1omni_fast.train.common import autocast

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate_answers(model: Any, data: DataFile, collate: Callable[..., Batch], cfg: AnyConfig,
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


def eval_answer_matching(cfg: AnyConfig) -> str:
    """How in-training evaluation matches answers: as the run's ``reward_mode`` scores them."""
    mode = getattr(cfg, "reward_mode", "robust")
    return mode if mode in ("robust", "r1omni") else "robust"


def eval_collator(model: Any, collate: Any, cfg: AnyConfig) -> Any:
    """The collator ``r1omni-fast eval`` builds (``eval.runner.clip_collator``: video and audio of
    every clip, the checkpoint's normalisation, failures skipped) with the run's frames, size,
    aspect and clip loader (that of ``collate``)."""
    from r1omni_fast.eval.runner import clip_collator

    loader = collate._loader if isinstance(collate, ClipCollator) else getattr(collate, "loader", None)
    return clip_collator(model, ("video", "audio"), cfg.num_frames, cfg.image_size, cfg.image_aspect_ratio, loader)


def _answer_batches(model: Any, samples: Sequence[Sample], collate: Callable[..., Batch], cfg: AnyConfig,
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


def run_evaluation(model: Any, data: DataFile, collate: Callable[..., Batch], cfg: AnyConfig, device: torch.device,
                   dist: Any, step: int) -> Dict[str, Any]:
    """:func:`evaluate_answers`, where a failure never ends the run: it is a warning and the
    record's ``eval/error`` (the model, the checkpoints and training are unaffected)."""
    try:
        return evaluate_answers(model, data, collate, cfg, device, dist)
    except EvaluationError as exc:
        log.warning("step %d: the evaluation of %s failed (%s); the model and checkpoints are kept, training goes on",
                    step, cfg.eval_file, exc)
        return {"eval/error": str(exc)}


def eval_due(cfg: AnyConfig, step: int, last_step: int) -> bool:
    """Evaluate every ``eval_steps`` steps and at the last step (when there is an eval_file)."""
    if not cfg.eval_file:
        return False
    return step == last_step or (cfg.eval_steps is not None and step % cfg.eval_steps == 0)
