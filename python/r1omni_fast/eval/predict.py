"""Inference on clips: the answer and the reasoning of a model for each clip (``r1omni-fast predict``).

Pipeline (the same preprocessing, prompt and greedy decoding as ``r1omni_fast.eval.runner``, so
that predict's answer for a clip is evaluation's prediction for it):

- the clips are cut into batches of ``batch_size``; a background thread decodes the next batch
  with the native loader (``r1omni_fast.media.load_batch``, GIL released) and, on CUDA, copies it
  to the device in pinned memory while the current batch generates;
- each batch is one call of the prefix-shared generator (``r1omni_fast.model.generation``):
  every prompt is prefilled once and its KV cache shared by its ``num_generations`` samples;
- one generation is greedy; ``num_generations`` N > 1 draws N answers at ``temperature`` (from a
  generator seeded per clip, so a clip's answers do not depend on the batch it is in) and reports
  the share of each answer: the model's own uncertainty. The row's answer is the most frequent
  (ties: the answer drawn first), its reasoning that of the first sample giving it.

A clip that cannot be loaded yields a row with ``error`` set; the others go on.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from r1omni_fast import labels as label_sets
from r1omni_fast.prompts import FORMAT_SUFFIX, R1_OMNI_QUESTION, R1OMNI_INFER_INSTRUCTION
from r1omni_fast.eval import runner

#: Instructions selectable by name (``--prompt-preset``); ``{labels}`` is the label set.
PROMPT_PRESETS: Dict[str, str] = {
    # R1-Omni's question and output-format suffix joined as the data files (and so training and
    # eval) join them: one space.
    "r1omni": f"{R1_OMNI_QUESTION} {FORMAT_SUFFIX}",
    # R1-Omni's inference prompt, as its README runs inference.py: the same with two spaces.
    "r1omni-infer": R1OMNI_INFER_INSTRUCTION,
    # The same, naming the classes to choose from.
    "r1omni-labels": f"{R1_OMNI_QUESTION} Answer with one of: {{labels}}. {FORMAT_SUFFIX}",
    # HumanOmni's evaluation question, without the format suffix.
    "question": R1_OMNI_QUESTION,
}
DEFAULT_PRESET = "r1omni"

#: File name endings taken as clips when a folder is given.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")

#: The keys of every prediction row, in order (``--out`` JSONL).
ROW_KEYS = ("id", "video", "audio", "label", "answer", "prediction", "correct", "think", "completion",
            "well_formed", "votes", "completions", "modalities", "silent_audio", "elapsed_s", "error")


@dataclasses.dataclass
class ClipInput:
    """A clip to predict on: its video, optional separate audio, optional label and prompt."""

    video: Path
    audio: Optional[Path] = None
    label: Optional[str] = None
    prompt: Optional[str] = None
    id: Optional[str] = None
    error: Optional[str] = None  # a problem found before loading (e.g. the file is missing)


def prompt_text(prompt: Optional[str] = None, preset: Optional[str] = None,
                label_set: Optional[label_sets.LabelSet] = None) -> Optional[str]:
    """The instruction of ``--prompt`` or ``--prompt-preset`` (ValueError naming the presets for
    an unknown one, or when both are given); None when neither is."""
    if prompt is not None and preset is not None:
        raise ValueError("give --prompt or --prompt-preset, not both")
    if preset is None:
        return prompt
    if preset not in PROMPT_PRESETS:
        raise ValueError(f"unknown prompt preset {preset!r}: choose one of {', '.join(PROMPT_PRESETS)}")
    names = label_set.labels if label_set is not None else label_sets.DFEW
    return PROMPT_PRESETS[preset].format(labels=", ".join(names))


def gather_clips(paths: Sequence[Union[str, "os.PathLike[str]"]] = (), globs: Sequence[str] = ()) -> Tuple[List[Path], List[str]]:
    """Clip paths from arguments and glob patterns, in order, and one problem line per input
    that yields none.

    A folder stands for the clips directly inside it (``VIDEO_SUFFIXES``, sorted); a pattern is
    expanded with ``glob(recursive=True)`` (``**`` crosses folders) and sorted. A missing path is
    kept (its row will say so), a folder without clips and a pattern matching nothing are problems.
    """
    clips: List[Path] = []
    problems: List[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                problems.append(f"folder {path} holds no clips ({', '.join(VIDEO_SUFFIXES[:4])}, ...): "
                                "pass clip files, or a --glob such as 'DIR/**/*.mp4' for sub-folders")
            clips += found
        else:
            clips.append(path)
    for pattern in globs:
        found = sorted(Path(p) for p in globlib.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
        if not found:
            problems.append(f"--glob {pattern!r} matches no file: check the pattern (quote it so that the "
                            "shell does not expand it; '**' crosses folders)")
        clips += found
    return clips, problems


def clip_inputs(clips: Sequence[Path], audio: Sequence[Union[str, "os.PathLike[str]"]] = ()) -> List[ClipInput]:
    """``ClipInput``s of bare clip paths; ``audio``, when given, holds one separate audio file per
    clip (ValueError when the counts differ). Missing files are marked with their ``error``."""
    if audio and len(audio) != len(clips):
        raise ValueError(f"--audio was given {len(audio)} time(s) for {len(clips)} clip(s): give one audio "
                         "file per clip, in the same order, or none")
    items = []
    for i, video in enumerate(clips):
        sound = Path(audio[i]) if audio else None
        error = _not_a_file(video, "clip", "check the path")
        if error is None and sound is not None:
            error = _not_a_file(sound, "audio file", "check the --audio path")
        items.append(ClipInput(video=video, audio=sound, id=str(video), error=error))
    return items


def data_inputs(data_file: Union[str, "os.PathLike[str]"], label_set: Any = None) -> Tuple[List[ClipInput], label_sets.LabelSet]:
    """``ClipInput``s of an R1-Omni JSON/JSONL data file (media paths relative to it; labels and
    prompts from the records). Bad records are reported and skipped as ``read_data`` does; a
    missing clip becomes a row with its error."""
    from r1omni_fast.data import read_data

    datafile = read_data(data_file, labels=label_set, on_error="skip", check_media=False)
    items = []
    for s in datafile.samples:
        error = _not_a_file(s.video, "clip", "check the path", f" (record {s.source})")
        items.append(ClipInput(video=s.video, audio=s.audio, label=s.label, prompt=s.prompt, id=s.id, error=error))
    return items, datafile.label_set


def _not_a_file(path: Path, what: str, fix: str, where: str = "") -> Optional[str]:
    """None for a regular file (or a link to one), else the problem: what the path is instead
    (a folder, a FIFO, a device, a socket) or that it does not exist."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{what} {path}{where} does not exist: {fix}"
    except OSError as exc:
        return f"{what} {path}{where} cannot be read ({exc.strerror}): {fix}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    return f"{what} {path}{where} is {kind}, not a media file: give the path of a clip file"


def choose_device(device: Optional[str] = None) -> "Any":
    """``torch.device(device)``, or CUDA when available and ``device`` is None / "auto", else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r}: {exc} (use cpu, cuda, cuda:N or auto)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here (use --device cpu)")
    return chosen


def choose_dtype(dtype: Optional[str], device: Any) -> "Any":
    """The weights' dtype: bf16 on CUDA (fp16 where the GPU has no bf16), fp32 on CPU, for None /
    "auto"; else ``float32`` / ``bfloat16`` / ``float16`` (also ``fp32``, ``bf16``, ``fp16``)."""
    import torch

    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"--dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return names[dtype]


def load_for_inference(model_dir: Union[str, "os.PathLike[str]"], device: Optional[str] = None,
                       dtype: Optional[str] = None) -> Any:
    """The checkpoint at ``model_dir`` in eval mode on ``choose_device(device)`` in
    ``choose_dtype(dtype)``. Raises FileNotFoundError / ``CheckpointError`` naming the folder."""
    chosen = choose_device(device)
    return runner.load_model(model_dir, dtype=choose_dtype(dtype, chosen), device=chosen)


def predict_iter(
    model: Any,
    items: Sequence[ClipInput],
    *,
    modalities: Union[str, Sequence[str]] = ("video", "audio"),
    prompt: Optional[str] = None,
    num_generations: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    num_frames: Optional[int] = None,
    image_size: Optional[int] = None,
    aspect: str = "resize",
    label_set: Any = None,
    loader: Optional[Callable[..., list]] = None,
    previews: Optional[Dict[str, Any]] = None,
) -> Iterator[Dict[str, Any]]:
    """One row per item, in input order, yielded batch by batch (keys: ``ROW_KEYS``).

    ``model``: an ``OmniModel`` (see :func:`load_for_inference`). ``modalities``: what the model
    is given ("video,audio", "video", "audio"; audio-only refuses clips without an audio track).
    ``prompt`` replaces every item's instruction (default: the item's, else the ``r1omni``
    preset). ``num_generations`` 1 is greedy; more draw that many answers at ``temperature`` /
    ``top_p`` from generators seeded ``seed + item index``. ``label_set`` (default DFEW) maps
    answers onto labels (``prediction``; ``correct`` when the item has a label). ``previews``, a
    dict, receives the frame strip and mel image of every loaded clip by row ``id`` (for the
    report). ``loader`` replaces ``r1omni_fast.media.load_batch``.

    Row fields: ``answer`` (text of the ``<answer>`` block, None without one; with N > 1 that of
    the most frequent answer), ``prediction`` (the label named by the answer, or by the whole
    completion when it has no ``<answer>`` block, as the accuracy reward reads it; else None),
    ``think``, ``completion``, ``well_formed`` (the format reward), ``votes`` ({answer: share},
    N > 1 only), ``completions`` (all N, N > 1 only), ``elapsed_s`` (the batch's generation time
    divided by its clips), ``silent_audio`` (the model was given audio but the clip has no audio
    stream, so it heard silence: HumanOmni pads it), ``error`` (why the clip could not be predicted,
    else None).
    """

    from r1omni_fast.prompts import normalise_modalities

    keep = normalise_modalities(modalities)
    if batch_size < 1 or max_new_tokens < 1 or num_generations < 1:
        raise ValueError(f"batch_size, max_new_tokens and num_generations must be >= 1, got {batch_size}, "
                         f"{max_new_tokens} and {num_generations}")
    if num_generations > 1 and temperature <= 0:
        raise ValueError(f"temperature={temperature}: sampling {num_generations} answers needs a temperature > 0")
    if model.processor is None:
        raise ValueError("the model has no tokenizer (its checkpoint folder holds no tokenizer files)")
    labels = label_sets.resolve(label_set)
    samples = [_sample(i, item) for i, item in enumerate(items)]
    frames = num_frames or model.num_frames
    device = model.device
    with runner.eval_mode(model, frames):
        collate = runner.clip_collator(model, keep, frames, image_size, aspect, loader)
        if keep == ("audio",):  # a silent mel would be a made-up input: refuse clips without sound
            collate.media_kwargs["require_audio"] = True
        # an item's own error, or a video-only record under audio alone (nothing to give the model)
        errors = [item.error if item.error is not None else
                  None if runner.record_modalities(s, keep) else f"{item.video}: " + runner.nothing_to_give(keep).replace(
                      "evaluate it with video", "predict it with video")
                  for s, item in zip(samples, items)]
        loadable = [s for s, error in zip(samples, errors) if error is None]
        work = runner.with_previews(collate) if previews is not None else collate
        chunks = [loadable[i:i + batch_size] for i in range(0, len(loadable), batch_size)]
        done: Dict[int, Dict[str, Any]] = {}
        position = 0

        def load(chunk: Sequence[Any], index: int) -> Any:
            out = work(chunk, index)
            batch = out[0] if previews is not None else out
            collate.to_device(batch, device, model.dtype)  # beside decoding, not in the generation loop
            return out

        for out in runner.prefetch_batches(chunks, load):
            batch = out
            if previews is not None:
                batch, shown = out
                previews.update({s.extra["row_id"]: shown[s.id] for s in batch.samples})
            failed = {sid: reason for sid, reason in batch.skipped}
            for s in chunks[batch.index]:
                if s.id in failed:
                    done[s.extra["index"]] = _error_row(s, keep, _load_error(failed[s.id], keep))
            if len(batch):
                for s, row in zip(batch.samples, _generate_rows(model, batch, keep, prompt, labels, num_generations,
                                                                temperature, top_p, seed, max_new_tokens)):
                    done[s.extra["index"]] = row
            while position < len(samples) and (position in done or errors[position] is not None):
                if errors[position] is not None:
                    yield _error_row(samples[position], keep, errors[position])
                else:
                    yield done.pop(position)
                position += 1
        for i in range(position, len(samples)):  # the items after the last loadable one
            yield _error_row(samples[i], keep, errors[i])


def predict(model: Any, items: Sequence[ClipInput], **kwargs: Any) -> List[Dict[str, Any]]:
    """``list(predict_iter(model, items, **kwargs))``."""
    return list(predict_iter(model, items, **kwargs))


def labelled_metrics(rows: Sequence[Dict[str, Any]], label_set: Any) -> Optional[Dict[str, Any]]:
    """The evaluation metrics (``runner.summarise``) of the rows that have a label and no error,
    or None when there are none."""
    scored = [r for r in rows if r["error"] is None and r["label"] is not None]
    if not scored:
        return None
    metrics = runner.summarise(scored, label_sets.resolve(label_set))
    metrics["skipped"] = [{"id": r["id"], "reason": r["error"]} for r in rows if r["error"] is not None]
    return metrics


# ------------------------------------------------------------------------------- internals


def _sample(index: int, item: ClipInput) -> Any:
    from r1omni_fast.data import Sample, solution_for

    prompt = item.prompt if item.prompt is not None else "<video>\n<audio>\n" + PROMPT_PRESETS[DEFAULT_PRESET]
    # ids are positions: the same file may be listed twice (with different audio, say)
    return Sample(id=f"{index}", video=item.video, audio=item.audio, prompt=prompt, target=item.label or "",
                  label=item.label, solution=solution_for(item.label) if item.label else "",
                  is_reasoning=False, source=str(item.video),
                  extra={"index": index, "row_id": item.id if item.id is not None else str(item.video)})


def _load_error(reason: str, keep: Tuple[str, ...]) -> str:
    """The row's error for a clip the loader refused; a clip without sound gets the fix that
    exists here (there is no record to edit): --modalities video, or --audio."""
    fix = "predict from the picture alone with --modalities video, or give its sound with --audio FILE"
    silent = "no audio stream" in reason
    if silent and "audio" in keep:
        cut = reason.index("no audio stream") + len("no audio stream")
        return f"cannot load: {reason[:cut]}: {fix}"
    if keep == ("audio",) and "audio" in reason:
        return f"{reason}: {fix}"
    return f"cannot load: {reason}"


def _blank_row(sample: Any, keep: Tuple[str, ...]) -> Dict[str, Any]:
    row: Dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(id=sample.extra["row_id"], video=str(sample.video),
               audio=None if sample.audio is None else str(sample.audio), label=sample.label,
               modalities=list(runner.record_modalities(sample, keep)))
    return row


def _error_row(sample: Any, keep: Tuple[str, ...], error: str) -> Dict[str, Any]:
    row = _blank_row(sample, keep)
    row["error"] = error
    return row


def _generate_rows(model: Any, batch: Any, keep: Tuple[str, ...], prompt: Optional[str], labels: Any,
                   num_generations: int, temperature: float, top_p: float, seed: int,
                   max_new_tokens: int) -> List[Dict[str, Any]]:
    import torch

    from r1omni_fast.rewards import parse_completion

    instructions = [runner.instruction_for(s, keep, prompt) for s in batch.samples]
    inputs = model.processor(instructions, pixel_values=batch.frames if "video" in keep else None,
                             audio_features=batch.mel if "audio" in keep else None, modalities=keep)
    sampling = num_generations > 1
    generators = None
    if sampling:
        generators = [torch.Generator(device=model.device).manual_seed(seed + s.extra["index"]) for s in batch.samples]
    started = time.perf_counter()
    out = model.generate(inputs, num_generations=num_generations, do_sample=sampling, temperature=temperature,
                         top_p=top_p, max_new_tokens=max_new_tokens, generator=generators)
    elapsed = (time.perf_counter() - started) / len(batch)
    texts = list(out.texts)
    parsed = [parse_completion(t) for t in texts]
    answers = [p.answer if p.answer is not None else t for p, t in zip(parsed, texts)]
    matched = runner.predict_labels(answers, labels)
    rows = []
    g = num_generations
    for b, sample in enumerate(batch.samples):
        span = range(b * g, (b + 1) * g)
        # a sample votes for the label it names, else for its answer's (or completion's) stripped text
        keys = [matched[j] if matched[j] is not None else answers[j].strip() for j in span]
        counts = Counter(keys)
        top = max(counts.values())
        winner = next(k for k in keys if counts[k] == top)  # ties: the first drawn
        j = span[keys.index(winner)]
        row = _blank_row(sample, keep)
        row.update(answer=parsed[j].answer, prediction=matched[j], think=parsed[j].think, completion=texts[j],
                   well_formed=parsed[j].well_formed, elapsed_s=round(elapsed, 4),
                   # given audio from a clip without an audio stream: the backend padded silence
                   silent_audio="audio" in row["modalities"] and batch.has_audio is not None
                   and not bool(batch.has_audio[b]))
        if sample.label is not None:
            row["correct"] = matched[j] == sample.label
        if sampling:
            row["votes"] = {k: n / g for k, n in counts.most_common()}
            row["completions"] = [texts[i] for i in span]
        rows.append(row)
    return rows
