"""``OUT/metrics.jsonl`` (one JSON object per logged step) and the PNG curves drawn from it."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping


class MetricsLog:
    """Appends one JSON object per step to ``path``.

    On resume from step ``k`` (``resume_step=k``), lines logged after step k by the interrupted
    run are dropped first, so the file reads as one uninterrupted run. ``trackers``
    (:class:`r1omni_fast.train.tracking.Trackers`) receive every logged record too; ``close()``
    closes them.
    """

    def __init__(self, path: str | os.PathLike, *, resume_step: int | None = None,
                 enabled: bool = True, trackers: Any = None):
        self.path = Path(path)
        self.enabled = enabled
        self.trackers = trackers
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)

    def log(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.trackers is not None:
            self.trackers.log(record)

    def close(self) -> None:
        if self.trackers is not None:
            self.trackers.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL file; a malformed line raises naming file and line."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    return rows


def ema_smooth(values: Iterable[float], weight: float = 0.6) -> list[float]:
    """TensorBoard's scalar smoothing: an exponential moving average with bias correction.

    ``ema_k = weight * ema_{k-1} + (1 - weight) * x_k`` from ``ema_0 = 0``, reported as
    ``ema_k / (1 - weight**k)``, so the first point is ``x_1`` and early points are not pulled
    toward 0. ``weight`` in [0, 1): 0 returns the values unchanged.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out, ema = [], 0.0
    for k, x in enumerate(values, 1):
        ema = weight * ema + (1.0 - weight) * float(x)
        out.append(ema / (1.0 - weight**k))
    return out


def plot_curves(records: Iterable[Mapping[str, Any]], keys: Iterable[str],
                out_png: str | os.PathLike, *, title: str = "", smoothing: float = 0.8) -> Path | None:
    """One panel per key present in the records (x = step): the raw points, faint, and their
    :func:`ema_smooth` line (``smoothing`` = its weight; 0 draws the raw line only). Returns the
    PNG path, or None when no key is present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    keys = [k for k in keys if any(r.get(k) is not None for r in records)]
    if not keys:
        return None
    cols = min(len(keys), 3)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None and "step" in r]
        x, y = [p[0] for p in pts], [p[1] for p in pts]
        if smoothing > 0 and len(pts) > 1:
            ax.plot(x, y, color="C0", alpha=0.25, linewidth=1, marker=".", markersize=3, label="raw")
            ax.plot(x, ema_smooth(y, smoothing), color="C0", linewidth=2, label=f"EMA {smoothing:g}")
            ax.legend(fontsize=7, loc="best")
        else:
            ax.plot(x, y, color="C0", marker=".")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
