"""``report.html``: one self-contained page to browse an evaluation.

The page holds the summary (WAR, UAR, format rate, per-class recall), the confusion matrix, the
modality-ablation chart when an ablation ran, and one table row per prediction: a strip of the
sampled frames, the log-mel spectrogram, the label, the answer, whether it is correct, and the
reasoning with the visual and auditory cue words of ``r1omni_fast.eval.cues`` highlighted;
clicking a row (or its "completion" disclosure, without JavaScript) shows the whole completion.
Filters (class, correct / wrong, ablation setting) and column sorting are a few lines of inline
JavaScript; everything else works with JavaScript disabled. Images are embedded as base64
``data:`` URIs, so the file opens offline and can be mailed as it is.

The filters and the sort order also live in the page's fragment, e.g.
``report.html#label=sad&correct=wrong&sort=-answer`` (``-``: descending).
"""

from __future__ import annotations

import base64
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from r1omni_fast.eval.cues import AUDITORY_WORDS, VISUAL_WORDS

#: Height in pixels of each frame thumbnail and of the mel image.
THUMB_SIZE = 56
#: Width in pixels of the mel image (the 3000 mel frames are averaged down to it).
MEL_WIDTH = 240

_TOKENS = re.compile(r"[A-Za-z]+|[^A-Za-z]+")


@dataclass(frozen=True)
class Preview:
    """Images of one clip as ``data:`` URIs: ``frames`` (JPEG strip of the sampled frames) and
    ``mel`` (PNG of the log-mel spectrogram, None when no audio was given to the model);
    ``has_audio`` whether the clip had an audio track (False: the mel is of silence)."""

    frames: Optional[str]
    mel: Optional[str]
    has_audio: Optional[bool] = None


def frame_strip(frames: Any, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                size: int = THUMB_SIZE) -> str:
    """A JPEG ``data:`` URI of the k model-input frames side by side, each ``size`` x ``size``.

    ``frames``: (k, 3, S, S) float (tensor or array), normalised as ``(x/255 - mean)/std``;
    the normalisation is undone before encoding.
    """
    import torch
    import torch.nn.functional as F
    from PIL import Image

    x = torch.as_tensor(frames, dtype=torch.float32)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"frames must be (k, 3, S, S), got {tuple(x.shape)}")
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    x = F.interpolate(x * s + m, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    strip = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(2, 0, 3, 1).reshape(size, -1, 3)
    buf = io.BytesIO()
    Image.fromarray(strip.numpy()).save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mel_image(mel: Any, width: int = MEL_WIDTH, height: int = THUMB_SIZE) -> str:
    """A PNG ``data:`` URI of a log-mel spectrogram (n_mels, T): time left to right, low
    frequencies at the bottom, matplotlib's ``magma`` colour map over the clip's own range.

    Whisper pads every clip to 30 s; the padding (the trailing columns equal to the spectrogram's
    floor) is cut, keeping at least one second (100 columns)."""
    from matplotlib import colormaps
    from PIL import Image

    a = np.asarray(mel, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"mel must be (n_mels, frames), got shape {a.shape}")
    above = np.flatnonzero(a.max(axis=0) > a.min())
    a = a[:, :max(100, int(above[-1]) + 1 if above.size else 0)]
    lo, hi = float(a.min()), float(a.max())
    scaled = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    rgb = (colormaps["magma"](scaled[::-1])[..., :3] * 255).astype(np.uint8)
    img = Image.fromarray(rgb).resize((width, height), Image.Resampling.BOX)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_previews(arrays: Mapping[str, Any]) -> Dict[str, Preview]:
    """:class:`Preview` images of ``r1omni_fast.data.ClipPreview`` arrays (a collator's
    ``preview_arrays``), by sample id."""
    return {sid: Preview(frame_strip(a.frames, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)) if a.frames is not None else None,
                         mel_image(a.mel) if a.mel is not None else None, a.has_audio)
            for sid, a in arrays.items()}


def png_data_uri(path: Union[str, "os.PathLike[str]"]) -> str:
    """The PNG file at ``path`` as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def highlight_cues(text: Optional[str]) -> Any:
    """``text`` HTML-escaped, with visual cue words in ``<mark class="cue-visual">`` and auditory
    ones in ``<mark class="cue-audio">`` (whole words, case-insensitive, the lexicons of
    ``r1omni_fast.eval.cues``)."""
    from markupsafe import Markup, escape

    if not text:
        return Markup("")
    parts = []
    for token in _TOKENS.findall(text):
        word = token.lower()
        if word in VISUAL_WORDS:
            parts.append(Markup('<mark class="cue-visual">%s</mark>') % token)
        elif word in AUDITORY_WORDS:
            parts.append(Markup('<mark class="cue-audio">%s</mark>') % token)
        else:
            parts.append(escape(token))
    return Markup("").join(parts)


def write_report(
    path: Union[str, "os.PathLike[str]"],
    rows: Sequence[Mapping[str, Any]],
    *,
    metrics: Optional[Mapping[str, Any]] = None,
    previews: Optional[Mapping[str, Preview]] = None,
    ablation: Optional[Mapping[str, Any]] = None,
    ablation_chart: Union[str, "os.PathLike[str]", None] = None,
    title: str = "r1omni-fast evaluation",
    failed: Sequence[Mapping[str, Any]] = (),
    labels: Optional[Sequence[str]] = None,
) -> Path:
    """Render ``report.html`` at ``path``; returns the path.

    ``rows``: prediction rows as ``predictions.jsonl`` holds them (``id``, ``video``, ``label``,
    ``prediction``, ``answer``, ``think``, ``completion``, ``well_formed``, ``correct``; an
    optional ``setting`` names the ablation setting of the row; ``votes`` the vote shares of
    sampled answers). ``metrics``: the dict of ``evaluate`` (None for unlabelled predictions:
    no summary). ``previews``: by row id. ``ablation``: the ``modalities.json`` dict, with
    ``ablation_chart`` its PNG. ``failed``: ``{"video", "error"}`` of clips that did not load. ``labels``: the classes of the
    class filter (default: the metrics' label set, else the labels found in ``rows``).
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("r1omni_fast.eval", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["cues"] = highlight_cues
    previews = previews or {}
    if labels is None:
        labels = list(metrics["labels"]) if metrics else sorted({r["label"] for r in rows if r.get("label")})
    settings = list(dict.fromkeys(r["setting"] for r in rows if r.get("setting")))
    confusion = None
    if metrics:
        cm = metrics["confusion_matrix"]
        confusion = [{"label": name, "cells": [(c, c / max(1, sum(row))) for c in row], "support": sum(row)}
                     for name, row in zip(metrics["labels"], cm)]
    html = env.get_template("report.html.j2").render(
        title=title,
        metrics=metrics,
        confusion=confusion,
        columns=metrics["columns"] if metrics else [],
        rows=[dict(r, name=Path(str(r.get("video", ""))).name, index=i) for i, r in enumerate(rows)],
        previews=previews,
        labels=labels,
        settings=settings,
        ablation=ablation,
        ablation_chart=png_data_uri(ablation_chart) if ablation_chart else None,
        failed=list(failed),
        has_labels=any(r.get("label") is not None for r in rows),
    )
    from r1omni_fast.atomic import write_text

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, html)
    return out
