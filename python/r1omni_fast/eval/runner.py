"""Evaluation of an omni model on a labelled data file: WAR, UAR, format rate, traces.

``evaluate`` decodes every clip greedily (one completion per clip), reads the answer out of the
completion and scores it against the clip's label:

- ``think, answer, well_formed = parse_completion(completion)`` (``r1omni_fast.rewards``). The
  format rate is the mean of ``well_formed`` (the format reward).
- The prediction is the label the *answer* names under the robust accuracy reward's matching:
  the answer text (the whole completion when there is no ``<answer>`` block) is trimmed of
  whitespace and punctuation at both ends, lower-cased, and looked up among the labels, then
  among the aliases of ``r1omni_fast.labels`` (``fearful`` -> ``fear``, ``happiness`` ->
  ``happy``, ...). The lookup runs through the reward's own native matcher, so a prediction
  equals the label exactly when the robust accuracy reward would give the answer 1.0.
- An answer that names no label of the set (free text, an empty answer, a label of another
  dataset) has no prediction: it counts as wrong, lands in the confusion matrix's ``other``
  column and is tallied in ``outside_label_set``; ``unparsable`` counts the completions that
  hold no ``<answer>`` block at all.
- WAR = correct / n; UAR = mean recall over the classes present among the labels
  (``r1omni_fast.eval.metrics``).

``ablate`` repeats the evaluation with video+audio, video only and audio only on the same clips
and adds how often the reasoning traces mention visual and auditory cues
(``r1omni_fast.eval.cues``).

Both take a loaded ``OmniModel`` (the trainers evaluate the policy in memory, and the model's
train/eval mode is restored afterwards) or a checkpoint folder, and return the metrics dict that
they also write as JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from r1omni_fast import labels as label_sets
from r1omni_fast.eval.cues import cue_mentions
from r1omni_fast.eval.metrics import classification_metrics, plot_confusion
from r1omni_fast.prompts import R1OMNI_INFER_INSTRUCTION

log = logging.getLogger(__name__)

#: The settings of the modality ablation, in report order: name -> modalities fed to the model.
MODALITY_SETTINGS: Dict[str, Tuple[str, ...]] = {
    "video+audio": ("video", "audio"),
    "video": ("video",),
    "audio": ("audio",),
}

ModelLike = Union[str, "os.PathLike[str]", Any]
DataLike = Union[str, "os.PathLike[str]", Any]


def load_model(path: Union[str, "os.PathLike[str]"], **kwargs: Any) -> Any:
    """The policy at ``path`` (``r1omni_fast.model.policy.load_policy``: HumanOmni or Qwen2.5-Omni by
    its ``model_type``), with a clear error when ``path`` is not a folder; a LoRA adapter folder (a
    ``use_peft`` run) loads its base model with the adapter merged."""
    from r1omni_fast.model import lora

    if not os.path.isdir(path):
        raise FileNotFoundError(f"model folder {os.fspath(path)!r} does not exist (pass a checkpoint "
                                "folder with config.json, e.g. from `r1omni-fast model tiny OUT`)")
    model = lora.load_model(path, **kwargs)
    model.name_or_path = os.fspath(path)  # recorded in metrics.json
    return model


def load_samples(data: DataLike, label_set: Any = None) -> Tuple[List[Any], label_sets.LabelSet, Optional[str]]:
    """(samples, label set, source path) from a data file path, a ``DataFile`` or a list of
    ``Sample``. Bad records of a file are reported and skipped, as ``read_data`` does."""
    from r1omni_fast.data import DataFile, read_data

    if isinstance(data, (str, os.PathLike)):
        closed = None if label_set is None else label_sets.resolve_closed(label_set)
        datafile = read_data(data, labels=closed, on_error="skip")
        return list(datafile.samples), datafile.label_set, os.fspath(data)
    if isinstance(data, DataFile):
        resolved = data.label_set if label_set is None else label_sets.resolve_closed(label_set)
        return list(data.samples), resolved, str(data.path)
    return list(data), label_sets.resolve_closed(label_set), None


#: R1-Omni's and HumanOmni's DFEW/MAFW evaluation question (humanomni/eval/eval_mafw_dfew.py).
EVAL_QUESTION = ("As an emotional recognition expert, in the video, when the characters display their emotions, "
                 "which predominant feeling is most clearly expressed?\n")
#: HumanOmni's evaluation appends the class list of the dataset, spelled as its script does.
HUMANOMNI_OPTIONS = {
    "dfew": "happy ,surprise ,neutral ,angry ,disgust ,sad ,fear",
    "mafw": "happy ,surprise ,neutral ,angry ,disgust ,sad ,fear ,contemptuous, disappointed, helpless, anxious",
}
#: ``--prompt-preset`` names of ``r1omni-fast eval``.
EVAL_PROMPT_PRESETS = ("r1omni-eval", "r1omni-infer", "humanomni-eval")


def eval_prompt(preset: str, label_set: Any = None) -> str:
    """The instruction of a published evaluation (media placeholders are added in front).

    "r1omni-eval": R1-Omni's DFEW/MAFW evaluation, :data:`EVAL_QUESTION` (a trailing newline, no
    format instruction). "r1omni-infer": the instruction of R1-Omni's inference example (its
    question, two spaces, the format instruction). "humanomni-eval": HumanOmni's evaluation, the
    question followed by :data:`HUMANOMNI_OPTIONS` of ``label_set`` ("dfew" or "mafw").
    Raises ValueError for another preset, or for humanomni-eval with another label set.
    """
    if preset == "r1omni-eval":
        return EVAL_QUESTION
    if preset == "r1omni-infer":
        return R1OMNI_INFER_INSTRUCTION
    if preset == "humanomni-eval":
        labels = label_sets.resolve_closed(label_set)
        name = next((n for n, ls in label_sets.BUILTIN.items() if ls == labels.labels and n in HUMANOMNI_OPTIONS), None)
        if name is None:
            raise ValueError(f"prompt preset humanomni-eval lists DFEW's or MAFW's classes: use --labels dfew or "
                             f"mafw (got {list(labels.labels)})")
        return EVAL_QUESTION + HUMANOMNI_OPTIONS[name]
    raise ValueError(f"unknown prompt preset {preset!r}: choose one of {', '.join(EVAL_PROMPT_PRESETS)}")


#: How a completion is matched to its label (:func:`matched_predictions`).
ANSWER_MATCHING = ("robust", "r1omni", "raw")
#: How the instruction is laid out in the user turn (``evaluate_rows``' ``prompt_layout``).
PROMPT_LAYOUTS = ("data", "humanomni")


def predict_labels(answers: Sequence[Optional[str]], label_set: label_sets.LabelSet) -> List[Optional[str]]:
    """The label each answer names under the robust accuracy reward's matching, or None.

    Every answer is scored against ``solution_for(label)`` for every label in one native batch;
    the label whose solution scores 1.0 is the prediction (at most one can: the matcher maps a
    word to a single label). A None answer predicts nothing.
    """
    from r1omni_fast.data import solution_for
    from r1omni_fast.rewards import accuracy_reward

    names = list(label_set.labels)
    texts = [a for a in answers if a is not None]
    if not texts:
        return [None] * len(answers)
    completions = [t for t in texts for _ in names]
    solutions = [solution_for(name) for _ in texts for name in names]
    scores = accuracy_reward(completions, solutions, mode="robust", labels=label_set)
    found = iter(
        next((name for j, name in enumerate(names) if scores[i * len(names) + j] == 1.0), None)
        for i in range(len(texts))
    )
    return [None if a is None else next(found) for a in answers]


@dataclasses.dataclass
class EvalResult:
    """What :func:`evaluate_rows` returns: the metrics dict, one prediction row per loaded clip
    (data order) and, when previews were asked for, the clips' images by sample id
    (``r1omni_fast.eval.report.Preview``)."""

    metrics: Dict[str, Any]
    rows: List[Dict[str, Any]]
    previews: Dict[str, Any]


def evaluate(
    model: ModelLike,
    data: DataLike,
    out_dir: Union[str, "os.PathLike[str]", None] = None,
    *,
    report: bool = True,
    **kwargs: Any,
) -> Dict[str, Any]:
    """Greedy evaluation of ``model`` on ``data``; returns the metrics dict.

    ``model``: an ``OmniModel`` or a checkpoint folder. ``data``: an R1-Omni JSON/JSONL file (bare
    labels or reasoning targets), a ``DataFile`` or a list of ``Sample``. The keyword arguments are
    those of :func:`evaluate_rows`.

    With ``out_dir`` (created first), streams ``predictions.jsonl`` there as the batches finish
    (one row per loaded clip, in data order: an interrupted evaluation keeps the rows done), then
    writes ``metrics.json``, ``confusion_matrix.png`` and, with ``report`` (default),
    ``report.html`` (``r1omni_fast.eval.report``), each through a temporary sibling renamed into
    place (``r1omni_fast.atomic``). Clips whose media cannot be loaded are reported,
    listed under ``skipped`` and left out of ``n``.
    """
    if out_dir is None:
        return evaluate_rows(model, data, **kwargs).metrics
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # before any clip: a folder that cannot be made fails now
    stream = out / "predictions.jsonl"
    with open(stream, "w", encoding="utf-8") as fh:
        def write_rows(rows: Sequence[Dict[str, Any]]) -> None:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            fh.flush()

        result = evaluate_rows(model, data, previews=report, on_rows=write_rows, **kwargs)
    write_artifacts(out, result.metrics, result.rows, predictions=False)
    if report:
        write_eval_report(out / "report.html", result)
    return result.metrics


def evaluate_rows(
    model: ModelLike,
    data: DataLike,
    *,
    modalities: Union[str, Sequence[str]] = ("video", "audio"),
    batch_size: int = 8,
    num_frames: Optional[int] = None,
    image_size: Optional[int] = None,
    aspect: str = "resize",
    prompt: Optional[str] = None,
    max_new_tokens: int = 256,
    label_set: Any = None,
    loader: Optional[Callable[..., list]] = None,
    progress: bool = True,
    desc: str = "eval",
    previews: bool = False,
    answer_matching: str = "robust",
    prompt_layout: str = "data",
    chat_template: str = "checkpoint",
    on_rows: Optional[Callable[[List[Dict[str, Any]]], None]] = None,
    explain: bool = True,
    reasoning_classifier: Any = None,
    early_answering: Optional[Sequence[float]] = None,
) -> EvalResult:
    """The evaluation itself, writing nothing: metrics, rows and (``previews``) clip images.

    ``label_set``: a dataset name, a list of labels or a ``LabelSet`` (default: the DataFile's,
    else DFEW). ``modalities``: what the model is given — "video,audio", "video" or "audio"; each
    prompt gets exactly the placeholders of these modalities, except that a record whose prompt
    is video-only (``<video>`` without ``<audio>``) gets no audio (:func:`record_modalities`),
    and under "audio" alone is skipped (listed in ``metrics["skipped"]``, not scored).
    ``num_frames`` / ``image_size`` default to the checkpoint's; ``aspect="resize"`` squashes
    frames to a square as HumanOmni's evaluation does. ``prompt`` replaces every record's
    instruction (media placeholders are added). ``loader`` replaces
    ``r1omni_fast.media.load_batch``. ``previews`` makes the frame strip and mel image of every
    clip in the decoding thread (for ``report.html``). ``answer_matching``: "robust", "r1omni" or
    "raw" (:func:`matched_predictions`). ``prompt_layout``: "data" (the instruction behind its
    placeholders) or "humanomni" (HumanOmni's SFT layout and BERT text, what an SFT run with
    ``prompt_style: humanomni`` trained on); ``chat_template``: "checkpoint" or "qwen2vl"
    (``OmniProcessor.prompt_text``). With the settings of a training run (its frames, aspect,
    ``eval_max_new_tokens``, ``reward_mode`` as the matching, its layout and template) the numbers
    equal that run's in-training evaluation (``r1omni_fast.train.evaluation.evaluate_answers``). ``on_rows``
    receives each batch's rows as soon as they are scored (data order). ``explain`` adds the
    faithfulness metrics that need no extra generation (``metrics["faithfulness"]``,
    :mod:`r1omni_fast.eval.faithfulness`) with ``reasoning_classifier`` (a spec of
    ``r1omni_fast.reasoning_emotion.load_classifier``; None: the label set's lexicon); the
    classifier and every record's ``cue`` field are checked before any clip is generated
    (``ClassifierError`` / ValueError naming the input). ``early_answering``: cut fractions of the
    trace (e.g. ``EARLY_ANSWERING_CUTS``, 0 / 0.5 / 1; needs ``explain``): every clip is answered
    again once per cut (:func:`add_early_answers`), each row gets ``early_answers`` and
    ``metrics["faithfulness"]["early_answering"]`` the answer-change rates; None (default): off.
    """
    from r1omni_fast.prompts import normalise_modalities

    keep = normalise_modalities(modalities)
    if answer_matching not in ANSWER_MATCHING:
        raise ValueError(f"answer_matching={answer_matching!r}: use one of {', '.join(ANSWER_MATCHING)}")
    if prompt_layout not in PROMPT_LAYOUTS:
        raise ValueError(f"prompt_layout={prompt_layout!r}: use one of {', '.join(PROMPT_LAYOUTS)}")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if model.processor is None:
        raise ValueError("the model has no tokenizer (its checkpoint folder holds no tokenizer files)")
    samples, labels, data_path = load_samples(data, label_set)
    if not samples:
        raise ValueError(f"no samples to evaluate in {data_path or 'the given data'}")
    classifier = None
    if early_answering is not None:
        from r1omni_fast.eval.faithfulness import check_cuts

        if not explain:
            raise ValueError("early_answering is a faithfulness metric: it needs explain=True")
        early_answering = check_cuts(early_answering)
    if explain:  # bad inputs of the metrics fail now, not after the generation
        from r1omni_fast.grounding import parse_cue
        from r1omni_fast.reasoning_emotion import load_classifier

        classifier = load_classifier(reasoning_classifier, labels)
        for s in samples:
            parse_cue(s.extra.get("cue"), where=f"record {s.id} ({s.source}), its cue field")

    started = time.perf_counter()
    frames = num_frames or model.num_frames
    rows = []
    images: Dict[str, Any] = {}
    # a video-only record (its prompt has <video>, no <audio>) has nothing to give under audio alone
    skipped: List[Tuple[str, str]] = [(s.id, nothing_to_give(keep)) for s in samples if not record_modalities(s, keep)]
    if skipped:
        samples = [s for s in samples if record_modalities(s, keep)]
    with eval_mode(model, frames):
        collate = clip_collator(model, keep, frames, image_size, aspect, loader)
        if previews:
            collate = with_previews(collate)
        chunks = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
        bar = _progress(len(samples), desc, progress)
        try:
            for batch in prefetch_batches(chunks, collate):
                if previews:
                    batch, shown = batch
                    images.update(shown)
                skipped += batch.skipped
                if len(batch):
                    texts, truncated = generate_answers(model, batch, keep, prompt, max_new_tokens,
                                                        prompt_layout, chat_template)
                    scored = score_rows(batch.samples, texts, labels, answer_matching)
                    for row, cut in zip(scored, truncated):
                        row["truncated"] = cut
                    if early_answering is not None:
                        add_early_answers(model, batch, scored, early_answering, keep, prompt, labels,
                                          answer_matching, prompt_layout, chat_template)
                    rows += scored
                    if on_rows is not None:
                        on_rows(scored)
                bar.update(len(batch) + len(batch.skipped))
        finally:
            bar.close()
    if not rows:
        raise ValueError(f"none of the {len(samples) + len(skipped)} clips of {data_path or 'the data'} could be loaded: "
                         f"first error: {skipped[0][1] if skipped else 'unknown'}")

    metrics = summarise(rows, labels)
    if explain:
        from r1omni_fast.eval.faithfulness import faithfulness

        metrics["faithfulness"] = faithfulness(rows, classifier=classifier, label_set=labels)
        if early_answering is not None:
            from r1omni_fast.eval.faithfulness import early_answering as early_answering_rates

            metrics["faithfulness"]["early_answering"] = early_answering_rates(rows, early_answering)
    metrics.update({
        "skipped": [{"id": i, "reason": r} for i, r in skipped],
        "modalities": list(keep),
        "model": getattr(model, "name_or_path", None),
        "data": data_path,
        "settings": {"num_frames": frames, "image_size": image_size, "aspect": aspect,
                     "max_new_tokens": max_new_tokens, "batch_size": batch_size, "prompt": prompt,
                     "decoding": "greedy", "answer_matching": answer_matching,
                     "prompt_layout": prompt_layout, "chat_template": chat_template,
                     "device": str(next(model.parameters()).device),
                     "dtype": str(next(model.parameters()).dtype).replace("torch.", "")},
        "elapsed_s": round(time.perf_counter() - started, 3),
    })
    return EvalResult(metrics, rows, images)


def write_eval_report(path: Union[str, "os.PathLike[str]"], result: EvalResult, **kwargs: Any) -> Path:
    """``report.html`` of one evaluation (``r1omni_fast.eval.report.write_report``)."""
    from r1omni_fast.eval.report import write_report

    m = result.metrics
    title = f"Evaluation: {'+'.join(m['modalities'])}, WAR {m['war']:.3f}, UAR {m['uar']:.3f} (n={m['n']})"
    failed = [{"video": s["id"], "error": s["reason"]} for s in m.get("skipped", [])]
    return write_report(path, result.rows, metrics=m, previews=result.previews, title=title, failed=failed,
                        **kwargs)


def with_previews(collate: Any) -> Callable[[Sequence[Any], int], Tuple[Any, Dict[str, Any]]]:
    """Wrap a backend's clip collator so that it also returns the previews of the loaded clips:
    ``(batch, {id: Preview})``, the collator's ``preview_arrays`` rendered by
    ``r1omni_fast.eval.report.render_previews``. Runs in the prefetch thread, beside decoding."""
    from r1omni_fast.eval.report import render_previews

    def run(samples: Sequence[Any], index: int = 0) -> Tuple[Any, Dict[str, Any]]:
        batch = collate(samples, index)
        if not len(batch):
            return batch, {}
        return batch, render_previews(collate.preview_arrays(batch))

    return run


def ablate(
    model: ModelLike,
    data: DataLike,
    out_dir: Union[str, "os.PathLike[str]"],
    *,
    settings: Dict[str, Tuple[str, ...]] = MODALITY_SETTINGS,
    label_set: Any = None,
    progress: bool = True,
    report: bool = True,
    **kwargs: Any,
) -> Dict[str, Any]:
    """Evaluate the same clips with each modality setting (default: video+audio, video, audio).

    Writes each setting's artefacts to ``out_dir/<setting>/`` (``video+audio`` as
    ``video_audio``), then ``out_dir/modalities.json`` —
    ``{"labels", "n", "settings": {name: {modalities, war, uar, format_rate, per_class_recall,
    outside_label_set, cue_mentions, by_cue?, skipped, dir}}, "attribution"?}`` (``skipped``: how
    many records the setting skipped; ``attribution``: the counterfactual attribution of
    :mod:`r1omni_fast.eval.faithfulness`, when the settings include video+audio, video and audio
    and ``explain`` is not False) — and ``out_dir/modalities.png`` (per-class
    recall, WAR and UAR per setting); with ``report``, ``out_dir/report.html`` holds every setting's
    rows (filterable by setting) and the chart. Returns the modalities.json dict. ``kwargs`` go to
    :func:`evaluate_rows`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    samples, labels, data_path = load_samples(data, label_set)
    summary: Dict[str, Any] = {"data": data_path, "labels": list(labels.labels), "settings": {}}
    all_rows: List[Dict[str, Any]] = []
    previews: Dict[str, Any] = {}
    first = None
    by_modalities: Dict[Tuple[str, ...], List[Dict[str, Any]]] = {}
    for name, modalities in settings.items():
        folder = out / name.replace("+", "_")
        result = evaluate_rows(model, samples, modalities=modalities, label_set=labels, progress=progress,
                               desc=f"eval {name}", previews=report, **kwargs)
        write_artifacts(folder, result.metrics, result.rows)
        if report:
            write_eval_report(folder / "report.html", result)
        m = result.metrics
        first = first or m
        entry = {k: m[k] for k in ("modalities", "war", "uar", "format_rate", "per_class_recall",
                                   "outside_label_set", "unparsable", "cue_mentions", "n")}
        if "by_cue" in m:
            entry["by_cue"] = m["by_cue"]
        entry["skipped"] = len(m["skipped"])
        entry["dir"] = str(folder)
        summary["settings"][name] = entry
        all_rows += [dict(r, setting=name) for r in result.rows]
        by_modalities[tuple(sorted(result.metrics["modalities"]))] = result.rows
        for key, preview in result.previews.items():  # keep the mel of a setting that loaded audio
            if key not in previews or (previews[key].mel is None and preview.mel is not None):
                previews[key] = preview
    summary["n"] = next(iter(summary["settings"].values()))["n"]
    full = by_modalities.get(("audio", "video"))
    if kwargs.get("explain", True) and full is not None and ("audio",) in by_modalities and ("video",) in by_modalities:
        from r1omni_fast.eval.faithfulness import counterfactual_attribution

        # removing video leaves the audio-only pass, removing audio the video-only one
        summary["attribution"] = counterfactual_attribution(
            full, {"video": by_modalities[("audio",)], "audio": by_modalities[("video",)]})
    _write_json(out / "modalities.json", summary)
    _atomic_plot(out / "modalities.png", lambda tmp: plot_modalities(summary, tmp))
    if report:
        from r1omni_fast.eval.report import write_report

        write_report(out / "report.html", all_rows, metrics=None, previews=previews, ablation=summary,
                     ablation_chart=out / "modalities.png",
                     title=f"Modality ablation (n={summary['n']}): " + ", ".join(
                         f"{k} WAR {v['war']:.3f}" for k, v in summary["settings"].items()),
                     labels=summary["labels"])
    return summary


# ---------------------------------------------------------------------------- terminal tables


def metrics_table(metrics: Dict[str, Any], listed_in: str = "metrics.json") -> str:
    """Per-class recall with support, then WAR / UAR / format rate on one line."""
    support = {name: sum(row) for name, row in zip(metrics["labels"], metrics["confusion_matrix"])}
    width = max(8, *(len(x) for x in metrics["labels"]))
    lines = [f"{'class':<{width}}  recall  support"]
    for name in metrics["labels"]:
        recall = metrics["per_class_recall"][name]
        shown = "     -" if recall is None else f"{recall:6.3f}"
        lines.append(f"{name:<{width}}  {shown}  {support[name]:7d}")
    lines.append(
        f"WAR {metrics['war']:.3f}  UAR {metrics['uar']:.3f}  format {metrics['format_rate']:.3f}  "
        f"outside label set {metrics['outside_label_set']}/{metrics['n']}  "
        f"no <answer> {metrics['unparsable']}/{metrics['n']}"
    )
    from r1omni_fast.eval.faithfulness import faithfulness_line

    explained = faithfulness_line(metrics)
    if explained:
        lines.append(explained)
    if metrics.get("skipped"):
        skipped = metrics["skipped"]
        shown = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
        lines.append(f"skipped (not evaluated, not in n): {len(skipped)} — {shown}"
                     f"{'; ...' if len(skipped) > 3 else ''} (all in {listed_in})")
    return "\n".join(lines)


def ablation_table(report: Dict[str, Any]) -> str:
    """One row per modality setting: WAR, UAR, format rate, shares of traces naming each sense."""
    lines = [f"{'setting':<12}  {'WAR':>6}  {'UAR':>6}  {'format':>6}  {'visual':>6}  {'audio':>6}"]
    for name, s in report["settings"].items():
        cues = s["cue_mentions"]
        lines.append(f"{name:<12}  {s['war']:6.3f}  {s['uar']:6.3f}  {s['format_rate']:6.3f}  "
                     f"{cues['visual']:6.3f}  {cues['auditory']:6.3f}")
    lines.append("visual / audio: share of reasoning traces that mention a visual / auditory cue "
                 "(r1omni_fast.eval.cues)")
    skips = [f"{name} {s['skipped']}" for name, s in report["settings"].items() if s.get("skipped")]
    if skips:
        lines.append(f"skipped (not evaluated, not in that setting's n): {', '.join(skips)} (ids and reasons in each "
                     "setting's metrics.json)")
    if "attribution" in report:
        from r1omni_fast.eval.faithfulness import attribution_line

        lines.append(attribution_line(report["attribution"]) + " (r1omni_fast.eval.faithfulness)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- artefacts


#: The files an evaluation writes into its folder (``r1omni-fast eval --out``).
OUTPUT_FILES = ("metrics.json", "predictions.jsonl", "confusion_matrix.png", "report.html")


def write_artifacts(out_dir: Union[str, "os.PathLike[str]"], metrics: Dict[str, Any],
                    rows: Sequence[Dict[str, Any]], *, predictions: bool = True) -> Dict[str, Path]:
    """Write metrics.json, predictions.jsonl (unless ``predictions`` is False: already streamed)
    and confusion_matrix.png into ``out_dir``, each complete or not at all
    (``r1omni_fast.atomic.atomic_file``)."""
    from r1omni_fast.atomic import atomic_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "predictions": out / "predictions.jsonl",
             "confusion_matrix": out / "confusion_matrix.png"}
    if predictions:
        with atomic_file(paths["predictions"], "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    _write_json(paths["metrics"], metrics)
    title = f"{'+'.join(metrics['modalities'])}: WAR {metrics['war']:.3f}  UAR {metrics['uar']:.3f}  (n={metrics['n']})"
    _atomic_plot(paths["confusion_matrix"], lambda tmp: plot_confusion(metrics, tmp, title=title))
    return paths


def _atomic_plot(path: Path, plot: Callable[[Path], Any]) -> None:
    """``plot(p)`` draws into ``p``, a file of the same name in a temporary sibling folder (the
    plotting picks the format by the suffix), then renamed over ``path``: complete or absent."""
    from r1omni_fast.atomic import fsync_dir, temporary_sibling

    folder = temporary_sibling(path)
    folder.mkdir(exist_ok=True)
    try:
        plot(folder / path.name)
        os.replace(folder / path.name, path)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def plot_modalities(report: Dict[str, Any], out_png: Union[str, "os.PathLike[str]"]) -> Path:
    """Grouped bars: per-class recall (classes present among the labels), WAR and UAR, one bar
    per modality setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = report["settings"]
    first = next(iter(settings.values()))
    classes = [c for c in report["labels"] if first["per_class_recall"].get(c) is not None]
    groups = classes + ["WAR", "UAR"]
    fig, ax = plt.subplots(figsize=(2.0 + 0.9 * len(groups), 4.0))
    width = 0.8 / max(1, len(settings))
    for i, (name, s) in enumerate(settings.items()):
        values = [s["per_class_recall"][c] or 0.0 for c in classes] + [s["war"], s["uar"]]
        xs = [g + (i - (len(settings) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width=width, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.axvline(len(classes) - 0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.set_title(f"modality ablation (n={report['n']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------- internals


@contextlib.contextmanager
def eval_mode(model: Any, num_frames: int) -> Iterator[None]:
    """Eval mode and the placeholder count of ``num_frames`` frames for the duration; both are
    restored afterwards (the trainers evaluate their policy in place)."""
    was_training = model.training
    model.eval()
    try:
        with model.frames_context(num_frames):
            yield
    finally:
        model.train(was_training)


def clip_collator(model: Any, keep: Tuple[str, ...], num_frames: int, image_size: Optional[int], aspect: str,
              loader: Optional[Callable[..., list]]) -> Any:
    """The model's clip collator with the checkpoint's preprocessing: frame size, mean/std, mel bins."""
    vision = model.preprocessor_configs.get("vision_tower", {})
    loader_kwargs = {}
    if "image_mean" in vision and "image_std" in vision:
        loader_kwargs = {"mean": tuple(vision["image_mean"]), "std": tuple(vision["image_std"])}
    audio = (lambda sample: "audio" in record_modalities(sample, keep)) if "audio" in keep else False
    return model.media_collator(num_frames=num_frames, image_size=image_size, aspect=aspect, audio=audio,
                                loader=loader, on_error="skip", loader_kwargs=loader_kwargs)


def prefetch_batches(chunks: List[List[Any]], collate: Any) -> Iterator[Any]:
    """``collate(chunk, i)`` of every chunk, in order; the next two are computed in a background
    thread while the caller works on the current one (``r1omni_fast.data.prefetch``)."""
    from r1omni_fast.data import prefetch

    return prefetch(chunks, collate, depth=2, workers=1)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="clip", disable=not enabled, leave=False)


def record_modalities(sample: Any, keep: Tuple[str, ...]) -> Tuple[str, ...]:
    """The modalities of ``keep`` that ``sample`` is given: all of them, except audio for a record
    whose prompt lays out its media as video only (``<video>`` without ``<audio>``): its clip need
    not have sound, and training gave it none (the trainers' ``audio="record"``). A prompt naming
    no placeholder at all gets every modality of ``keep``. Empty for a video-only record under
    audio alone: callers skip it (:func:`nothing_to_give`)."""
    if "audio" in keep and "<video>" in sample.prompt and "<audio>" not in sample.prompt:
        return tuple(m for m in keep if m != "audio")
    return keep


def nothing_to_give(keep: Tuple[str, ...]) -> str:
    """Why a record gets no modality of ``keep`` (:func:`record_modalities` is empty): a
    video-only prompt under audio alone. Such a record is skipped and counted, never given an
    empty input."""
    return (f"its prompt lays out video only (<video> without <audio>), so under modalities {'+'.join(keep)} it has "
            "nothing to give the model: evaluate it with video (--modalities video or video,audio)")


def instruction_for(sample: Any, keep: Tuple[str, ...], prompt: Optional[str]) -> str:
    """The record's instruction (or ``prompt``) behind exactly the placeholders of the modalities
    it is given (:func:`record_modalities` of its own prompt)."""
    from r1omni_fast.prompts import build_instruction

    given = record_modalities(sample, keep)
    if prompt is not None:  # Sample.instruction strips the leading placeholders of the new prompt
        sample = dataclasses.replace(sample, prompt=prompt)
    return build_instruction(sample.instruction, modalities=given, format_suffix=False)


def generate_answers(model: Any, batch: Any, keep: Tuple[str, ...], prompt: Optional[str], max_new_tokens: int,
                     prompt_layout: str = "data", chat_template: str = "checkpoint",
                     device: Optional[Any] = None, assistant_prefix: Optional[Sequence[Sequence[int]]] = None,
                     ) -> Tuple[List[str], List[bool]]:
    """Greedy completions of a collated ``batch``: (completions, truncated). A completion is
    truncated when it used all ``max_new_tokens`` without ending (its last token is no
    end-of-turn token). ``prompt_layout`` / ``chat_template`` as in :func:`evaluate_rows`;
    ``device``: where the inputs go (default: where they are made); ``assistant_prefix``: token
    ids per row that the assistant turn begins with (:func:`with_assistant_prefix`; the
    completions are what follows them)."""
    from r1omni_fast.prompts import humanomni_sft_turn

    instructions = [instruction_for(s, keep, prompt) for s in batch.samples]
    bert_texts = None
    if prompt_layout == "humanomni":
        instructions, bert_texts = (list(x) for x in zip(*(humanomni_sft_turn(i) for i in instructions)))
    inputs = model.processor(instructions, pixel_values=batch.frames if "video" in keep else None,
                             audio_features=batch.mel if "audio" in keep else None, modalities=keep,
                             chat_template=chat_template, bert_texts=bert_texts)
    if assistant_prefix is not None:
        inputs = with_assistant_prefix(inputs, assistant_prefix, model.processor.tokenizer.pad_token_id)
    if device is not None:
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
    out = model.generate(inputs, num_generations=1, do_sample=False, max_new_tokens=max_new_tokens)
    return list(out.texts), truncated_rows(out, max_new_tokens, model.processor.eos_token_ids)


def with_assistant_prefix(inputs: Dict[str, Any], prefixes: Sequence[Sequence[int]], pad_id: int) -> Dict[str, Any]:
    """``inputs`` (a processor's left-padded generation batch) with ``prefixes[b]`` (token ids)
    appended to row b's prompt, so that generation continues an assistant turn that already
    begins with them; ``input_ids`` / ``attention_mask`` are padded on the left again, every
    other entry (media, per-row flags) is kept. Raises ValueError for a count that is not one
    prefix per row."""
    import torch

    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    if len(prefixes) != ids.shape[0]:
        raise ValueError(f"{len(prefixes)} assistant prefixes for {ids.shape[0]} prompts")
    mask = torch.ones_like(ids) if mask is None else mask
    rows = [ids[b][mask[b].bool()].tolist() + [int(t) for t in prefixes[b]] for b in range(ids.shape[0])]
    width = max(len(r) for r in rows)
    new_ids = torch.full((len(rows), width), pad_id, dtype=ids.dtype)
    new_mask = torch.zeros((len(rows), width), dtype=mask.dtype)
    for b, row in enumerate(rows):
        new_ids[b, width - len(row):] = torch.tensor(row, dtype=ids.dtype)
        new_mask[b, width - len(row):] = 1
    return {**inputs, "input_ids": new_ids, "attention_mask": new_mask}


#: Tokens an early answer may take after the forced ``<answer>`` (a label, ``</answer>``, the end).
EARLY_ANSWER_TOKENS = 16


def add_early_answers(model: Any, batch: Any, rows: Sequence[Dict[str, Any]], cuts: Sequence[float],
                      keep: Tuple[str, ...], prompt: Optional[str], labels: label_sets.LabelSet,
                      answer_matching: str = "robust", prompt_layout: str = "data",
                      chat_template: str = "checkpoint") -> None:
    """Early answering (``r1omni_fast.eval.faithfulness``, Lanham et al. 2023): for each cut
    fraction f, one greedy pass over the collated ``batch`` whose assistant turn is forced to begin
    ``<think>`` + the first ``floor(f * T)`` tokens of the row's trace (T: its length in the model's
    tokenizer) + ``</think>\n<answer>``, at most :data:`EARLY_ANSWER_TOKENS` new tokens. The answer
    is read from the forced text + continuation as the full completions were
    (:func:`matched_predictions`). Sets ``row["early_answers"] = {cut_key(f): prediction}`` on
    every row of ``rows`` (the batch's scored rows), None where the row has no ``<think>``."""
    from r1omni_fast.eval.faithfulness import cut_key, cut_trace

    tokenizer = model.processor.tokenizer

    def encode(text: str) -> List[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    opening, closing = encode("<think>"), encode("</think>\n<answer>")
    traces = [encode(r["think"]) if r["think"] is not None else [] for r in rows]
    answers: Dict[str, List[Optional[str]]] = {}
    for fraction in cuts:
        kept = [cut_trace(t, fraction) for t in traces]
        texts, _ = generate_answers(model, batch, keep, prompt, EARLY_ANSWER_TOKENS, prompt_layout, chat_template,
                                    assistant_prefix=[opening + k + closing for k in kept])
        forced = [f"<think>{model.processor.decode(k)}</think>\n<answer>{t}" for k, t in zip(kept, texts)]
        answers[cut_key(fraction)] = matched_predictions(batch.samples, forced, labels, answer_matching)
    for i, row in enumerate(rows):
        row["early_answers"] = None if row["think"] is None else {k: v[i] for k, v in answers.items()}


def truncated_rows(out: Any, max_new_tokens: int, eos_ids: Sequence[int]) -> List[bool]:
    """Per row of a ``GenerationOutput``: whether it stopped at ``max_new_tokens`` without an
    end-of-turn token."""
    ends = set(int(i) for i in eos_ids)
    flags = []
    for row, n in zip(out.completion_ids.tolist(), out.lengths.tolist()):
        flags.append(n >= max_new_tokens and (n == 0 or row[n - 1] not in ends))
    return flags


def matched_predictions(samples: Sequence[Any], texts: Sequence[str], labels: label_sets.LabelSet,
                        answer_matching: str = "robust") -> List[Optional[str]]:
    """The label each completion is counted as, or None (the ``other`` column).

    ``answer_matching``:
    "robust": the label the answer names (or the whole completion without an ``<answer>`` block),
    as the robust accuracy reward reads it (:func:`predict_labels`).
    "r1omni": R1-Omni's accuracy reward: the first single-line ``<answer>`` block, stripped (else
    the whole stripped completion), compared exactly, case-sensitively, with the record's gpt
    value stripped.
    "raw": R1-Omni's DFEW/MAFW evaluation script: the whole stripped completion compared exactly
    with the gpt value.
    Where the comparison fails, an answer spelled exactly as another label counts as that label,
    any other answer as None. Raises ValueError for another mode.
    """
    from r1omni_fast.rewards import extract_answers, parse_completion

    if answer_matching not in ANSWER_MATCHING:
        raise ValueError(f"answer_matching={answer_matching!r}: use one of {', '.join(ANSWER_MATCHING)}")
    if answer_matching == "robust":
        parsed = [parse_completion(t) for t in texts]
        # No <answer> block: the whole completion is the answer, as the robust accuracy reward reads it.
        return predict_labels([p.answer if p.answer is not None else t for p, t in zip(parsed, texts)], labels)
    if answer_matching == "r1omni":
        answers, truths = extract_answers(list(texts), mode="r1omni"), [s.target.strip() for s in samples]
    else:
        answers, truths = [t.strip() for t in texts], [s.target for s in samples]
    return [s.label if a == truth else (a if a in labels.labels and a != s.label else None)
            for s, a, truth in zip(samples, answers, truths)]


def score_rows(samples: Sequence[Any], texts: Sequence[str], labels: label_sets.LabelSet,
               answer_matching: str = "robust") -> List[Dict[str, Any]]:
    """One prediction row per completion; ``prediction`` by :func:`matched_predictions`."""
    from r1omni_fast.rewards import parse_completion

    parsed = [parse_completion(t) for t in texts]
    predictions = matched_predictions(samples, texts, labels, answer_matching)
    rows = []
    for sample, text, p, prediction in zip(samples, texts, parsed, predictions):
        row = {"id": sample.id, "video": str(sample.video), "label": sample.label, "prediction": prediction,
               "answer": p.answer, "think": p.think, "well_formed": p.well_formed, "completion": text,
               "correct": prediction == sample.label}
        if "cue" in sample.extra:
            row["cue"] = sample.extra["cue"]
        rows.append(row)
    return rows


def summarise(rows: Sequence[Dict[str, Any]], labels: label_sets.LabelSet) -> Dict[str, Any]:
    metrics = classification_metrics([r["label"] for r in rows], [r["prediction"] for r in rows], labels.labels)
    n = len(rows)
    metrics["format_rate"] = sum(r["well_formed"] for r in rows) / n
    metrics["unparsable"] = sum(r["answer"] is None for r in rows)
    # completions cut off by the token budget (rows without the field: not known, not counted)
    metrics["truncated"] = sum(bool(r.get("truncated")) for r in rows)
    metrics["cue_mentions"] = cue_mentions(r["think"] for r in rows)
    cues = sorted({r["cue"] for r in rows if "cue" in r})
    if cues:  # synthetic data records which sense carries the label: accuracy per carrier
        metrics["by_cue"] = {}
        for cue in cues:
            subset = [r for r in rows if r.get("cue") == cue]
            metrics["by_cue"][cue] = {"n": len(subset), "war": sum(r["correct"] for r in subset) / len(subset)}
    return metrics


def _write_json(path: Path, value: Any) -> None:
    from r1omni_fast.atomic import atomic_file

    with atomic_file(path, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
