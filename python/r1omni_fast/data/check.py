"""``r1omni-fast data check``: validate a data file and summarise it."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from r1omni_fast.data.reader import DataFile, LabelSpec, read_data


@dataclass
class DataSummary:
    """Counts, problems and media durations of one data file."""

    data: DataFile
    label_counts: Dict[str, int]
    reasoning_records: int
    missing_files: int
    durations: List[float]
    unreadable: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.data.problems and not self.unreadable


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
              kind: str = "auto") -> DataSummary:
    data = read_data(path, labels=labels, on_error="skip", kind=kind)
    counts = Counter(s.label for s in data.samples)
    durations, unreadable = [], []
    for sample in data.samples:
        try:
            durations.append(media_duration(sample.video))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is reported, not fatal
            unreadable.append((f"{sample.source} ({sample.id})", str(exc) or type(exc).__name__))
    missing = sum(1 for p in data.problems if "missing media" in p.message)
    return DataSummary(
        data=data,
        label_counts={label: counts.get(label, 0) for label in data.label_set.labels},
        reasoning_records=sum(1 for s in data.samples if s.is_reasoning),
        missing_files=missing,
        durations=durations,
        unreadable=unreadable,
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
    if summary.durations:
        total = sum(summary.durations)
        lines.append(
            f"duration    {total:.1f} s over {len(summary.durations)} clips (min "
            f"{min(summary.durations):.2f}, mean {total / len(summary.durations):.2f}, max "
            f"{max(summary.durations):.2f} s)")
    if d.problems:
        lines.append("bad records:")
        lines.extend(f"  {p}" for p in d.problems)
    if summary.unreadable:
        lines.append("unreadable media:")
        lines.extend(f"  {where}: {why}" for where, why in summary.unreadable)
    return "\n".join(lines)


def label_spec_from_text(text: Optional[str]) -> LabelSpec:
    """'dfew' stays a set name; 'happy,sad' becomes a list of labels."""
    if text is None or "," not in text:
        return text
    return [x for x in (t.strip() for t in text.split(",")) if x]
