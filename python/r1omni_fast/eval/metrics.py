"""Classification metrics for emotion recognition.

- WAR (weighted average recall) = accuracy over all clips.
- UAR (unweighted average recall) = mean over the classes *present in the labels* of that
  class's recall; classes that never occur as a label do not enter the mean.
- The confusion matrix has one row per label of the label set (true class) and one column per
  label plus a last column ``"other"`` for predictions outside the label set (unparsable or
  unknown answers), which always count as wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

OTHER = "other"


def classification_metrics(labels: Sequence[str], predictions: Sequence[str | None],
                           label_set: Sequence[str]) -> dict[str, Any]:
    """WAR, UAR, per-class recall and the confusion matrix.

    ``labels`` must all be in ``label_set`` (ValueError naming the first that is not);
    a prediction that is None or outside ``label_set`` lands in the ``other`` column.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    index = {name: i for i, name in enumerate(label_set)}
    k = len(label_set)
    confusion = [[0] * (k + 1) for _ in range(k)]
    for i, (y, p) in enumerate(zip(labels, predictions)):
        if y not in index:
            raise ValueError(f"label {y!r} of item {i} is not in the label set {list(label_set)}")
        confusion[index[y]][index.get(p, k) if p is not None else k] += 1
    n = len(labels)
    correct = sum(confusion[i][i] for i in range(k))
    recall: dict[str, float | None] = {}
    for name, i in index.items():
        support = sum(confusion[i])
        recall[name] = confusion[i][i] / support if support else None
    present = [r for r in recall.values() if r is not None]
    return {
        "war": correct / n if n else 0.0,
        "uar": sum(present) / len(present) if present else 0.0,
        "per_class_recall": recall,
        "confusion_matrix": confusion,
        "labels": list(label_set),
        "columns": list(label_set) + [OTHER],
        "n": n,
        "outside_label_set": sum(row[k] for row in confusion),
    }


def plot_confusion(metrics: dict[str, Any], out_png: str | os.PathLike, *, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG, counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = metrics["confusion_matrix"]
    rows, cols = metrics["labels"], metrics["columns"]
    norm = [[c / max(1, sum(r)) for c in r] for r in cm]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(cols), 1.0 + 0.6 * len(rows)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    for i, r in enumerate(cm):
        for j, c in enumerate(r):
            ax.text(j, i, str(c), ha="center", va="center",
                    color="white" if norm[i][j] > 0.5 else "black", fontsize=8)
    ax.set_title(title or f"WAR {metrics['war']:.3f}  UAR {metrics['uar']:.3f}  (n={metrics['n']})")
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
