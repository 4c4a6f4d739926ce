"""``r1omni-fast data check``: validate a data file and summarise it."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from r1omni_fast import labels as label_sets
from r1omni_fast.data.reader import DataFile, LabelSpec, Sample, read_data


@dataclass
class DataSummary:
    """Counts, problems and media durations of one data file."""

    data: DataFile
    label_counts: Dict[str, int]
    reasoning_records: int
    missing_files: int
    durations: List[float]
    unreadable: List[Tuple[str, str]] = field(default_factory=list)
    decoded: int = 0  # clips decoded with the media loader (``decode``)
    undecodable: List[Tuple[str, str]] = field(default_factory=list)
    #: SFT answers outside the label set -> records (accepted: reported, not failed)
    outside_labels: Dict[str, int] = field(default_factory=dict)
    #: decoded clips lacking a modality their record's prompt asks for (:func:`lacking_modality`)
    lacking: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.data.problems and not self.unreadable and not self.undecodable and not self.lacking


def decode_clips(samples: Sequence[Sample], count: int, *, loader: Optional[Callable[..., list]] = None,
                 **media_kwargs: Any) -> List[Tuple[Sample, Any]]:
    """Decode ``count`` clips spread evenly over ``samples`` (first and last included; all of
    them when ``count`` is at least ``len(samples)``) with
    ``loader`` (default ``r1omni_fast.media.load_batch``; ``media_kwargs`` go to it) and return
    ``(sample, clip)`` for each, the clip being what the loader returned (an exception when it
    did not load)."""
    if count <= 0 or not samples:
        return []
    if loader is None:
        from r1omni_fast.media import load_batch as loader
    n = len(samples)
    k = min(count, n)  # asking for more clips than there are decodes every one
    picked = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
    chosen = [samples[i] for i in picked]
    kwargs = dict(media_kwargs)
    if any(s.audio is not None for s in chosen):
        kwargs["audio_paths"] = [None if s.audio is None else str(s.audio) for s in chosen]
    return list(zip(chosen, loader([str(s.video) for s in chosen], **kwargs)))


def decode_sample(samples: Sequence[Sample], count: int, *, loader: Optional[Callable[..., list]] = None,
                  **media_kwargs: Any) -> List[Tuple[Sample, Optional[str]]]:
    """:func:`decode_clips`, as ``(sample, None)`` for each clip that loaded and ``(sample,
    reason)`` for each that did not."""
    return [(s, (str(r) or type(r).__name__) if isinstance(r, Exception) else None)
            for s, r in decode_clips(samples, count, loader=loader, **media_kwargs)]


def lacking_modality(sample: Sample, clip: Any) -> Optional[str]:
    """Why the loaded ``clip`` lacks a modality the prompt of ``sample`` asks for (``<audio>``
    with no audio stream in the record's audio file or its video), else None."""
    if "<audio>" not in sample.prompt or getattr(clip, "has_audio", True):
        return None
    where = f"its audio file {sample.audio}" if sample.audio is not None else f"its clip {sample.video}"
    return (f"the prompt asks for audio (<audio>) but {where} has no audio stream (Qwen2.5-Omni runs skip the "
            "record, HumanOmni's give it silence): give the record an audio file with sound, or remove <audio> "
            "from its prompt")


def media_duration(path: Union[str, os.PathLike]) -> float:
    """Seconds, from the container's metadata (PyAV), else the longest stream's."""
    import av

    with av.open(str(path)) as container:
        if container.duration is not None:
            return container.duration / av.time_base
        spans = [float(s.duration * s.time_base) for s in container.streams
                 if s.duration is not None and s.time_base is not None]
        if not spans:
            raise ValueError("no duration in the container or its streams")
        return max(spans)


def summarize(path: Union[str, os.PathLike], *, labels: LabelSpec = "dfew",
              kind: str = "auto", decode: int = 0, loader: Optional[Callable[..., list]] = None) -> DataSummary:
    """Read ``path`` and summarise it; ``decode`` > 0 also decodes that many clips spread over
    the file with the media loader (:func:`decode_clips`, default settings: 8 frames at 224,
    audio) and reports those that fail and those lacking a modality their prompt asks for
    (``lacking``: audio). With ``kind="sft"`` an answer outside the label set is no bad record (reasoning
    targets may name any emotion, as EMER's do): it is counted in ``outside_labels``."""
    label_set = label_sets.resolve(labels)
    data = read_data(path, labels=label_set.opened() if kind == "sft" else label_set, on_error="skip", kind=kind)
    counts = Counter(s.label for s in data.samples)
    outside = Counter(s.label for s in data.samples if s.label not in label_set.labels)
    durations, unreadable = [], []
    for sample in data.samples:
        try:
            durations.append(media_duration(sample.video))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is reported, not fatal
            unreadable.append((f"{sample.source} ({sample.id})", str(exc) or type(exc).__name__))
    missing = sum(1 for p in data.problems if "missing media" in p.message)
    decoded = decode_clips(data.samples, decode, loader=loader)
    failed = [(s, str(c) or type(c).__name__) for s, c in decoded if isinstance(c, Exception)]
    lacking = [(s, lacking_modality(s, c)) for s, c in decoded if not isinstance(c, Exception)]
    return DataSummary(
        data=data,
        label_counts={label: counts.get(label, 0) for label in label_set.labels},
        reasoning_records=sum(1 for s in data.samples if s.is_reasoning),
        missing_files=missing,
        durations=durations,
        unreadable=unreadable,
        decoded=len(decoded),
        undecodable=[(f"{s.source} ({s.id})", why) for s, why in failed],
        outside_labels=dict(outside.most_common()),
        lacking=[(f"{s.source} ({s.id})", why) for s, why in lacking if why is not None],
    )


def format_summary(summary: DataSummary) -> str:
    d = summary.data
    lines = [
        f"file        {d.path}",
        f"records     {d.num_records} ({len(d.samples)} good, {d.num_skipped} bad)",
        f"targets     {summary.reasoning_records} reasoning (SFT), "
        f"{len(d.samples) - summary.reasoning_records} bare labels (GRPO/eval)",
        "labels      " + ", ".join(f"{k} {v}" for k, v in summary.label_counts.items()),
        f"missing     {summary.missing_files} record(s) with missing media files",
    ]
    if summary.outside_labels:
        lines.append("outside     " + ", ".join(f"{k} {v}" for k, v in summary.outside_labels.items())
                     + " (answers outside the label set; SFT trains on them with label_set: any)")
    if summary.durations:
        total = sum(summary.durations)
        lines.append(
            f"duration    {total:.1f} s over {len(summary.durations)} clips (min "
            f"{min(summary.durations):.2f}, mean {total / len(summary.durations):.2f}, max "
            f"{max(summary.durations):.2f} s)")
    if summary.decoded:
        lacking = f", {len(summary.lacking)} lack a modality their prompt asks for" if summary.lacking else ""
        lines.append(f"decoded     {summary.decoded - len(summary.undecodable) - len(summary.lacking)} of "
                     f"{summary.decoded} clips checked loaded ({len(summary.undecodable)} failed{lacking})")
    if d.problems:
        lines.append("bad records:")
        lines.extend(f"  {p}" for p in d.problems)
    if summary.unreadable:
        lines.append("unreadable media:")
        lines.extend(f"  {where}: {why}" for where, why in summary.unreadable)
    listed = {where for where, _ in summary.unreadable}
    others = [(where, why) for where, why in summary.undecodable if where not in listed]
    if others:  # a clip already under "unreadable media" is not listed twice
        lines.append("clips that failed to decode" + (" (the unreadable ones above too)" if len(others) <
                                                       len(summary.undecodable) else "") + ":")
        lines.extend(f"  {where}: {why}" for where, why in others)
    if summary.lacking:
        lines.append(f"records whose prompt asks for a modality the clip lacks ({len(summary.lacking)}):")
        lines.extend(f"  {where}: {why}" for where, why in summary.lacking)
    return "\n".join(lines)


def label_spec_from_text(text: Optional[str]) -> LabelSpec:
    """'dfew' stays a set name; 'happy,sad' becomes a list of labels."""
    if text is None or "," not in text:
        return text
    return [x for x in (t.strip() for t in text.split(",")) if x]
