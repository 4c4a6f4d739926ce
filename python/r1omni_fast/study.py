"""The paper's ablations as one command, on the demo's embedded data: ``r1omni-fast study NAME``.

Each study trains and evaluates a few *cells* (settings) per seed with the demo's recipe
(``r1omni_fast.demo``: the tiny checkpoint with pretrained towers, the synthetic clips, SFT then
GRPO with ``DEMO_SFT`` / ``DEMO_GRPO``), evaluates every cell's final model on the held-out split
(WAR, UAR, format rate, cue agreement and counterfactual attribution:
``r1omni_fast.demo.DemoStages.evaluate``) and tabulates them over the seeds:

``cold-start``
    The cold start's size: SFT on the first 0, 1, 4 or 16 clips of a 16-clip cold-start split
    (``COLD_START_SIZES``; sft.json lists its clips round-robin over the classes with cues
    cycling, ``r1omni_fast.data.synthetic``: 4 clips are one per class, 16 four per class), then
    GRPO (accuracy + format) on the same label-only split in every cell; 0 clips is GRPO from the
    untrained model (R1-Omni's question: is the cold start needed?).
``modality-dropout``
    The SFT model alone (``SFT only``, also the first row of the rewards study), then GRPO
    (accuracy + format) without and with ``modality_dropout`` ``MODALITY_DROPOUT_ON`` (each
    prompt loses its video, or its audio, with probability 0.3; ``r1omni_fast.train.modality_dropout``)
    from the demo's SFT model (the paper's audio-utilisation question).
``rewards``
    The SFT model alone (``SFT only``), then GRPO from it with the accuracy reward alone, accuracy + format (the demo's
    ``grpo`` row) and accuracy + format + ``cue_grounding`` (its ``grpo-grounded`` row).

Layout under ``OUT/NAME/``: ``seed-S/`` holds the seed's checkpoint, data, SFT runs, GRPO runs
and evaluations (``eval/<cell>/``, as the demo writes them); ``seed-S/<step>.done.json`` marks a
finished step (the tiny checkpoint, the data, each SFT run, each cell) with its result. A run
skips every step whose marker is there and redoes, from scratch, any step that has none (an
interrupted step's folders are removed first), so an interrupted study resumes where it stopped.
At the end: ``table.md`` (one row per cell, ``mean ± std`` over the seeds, the sample standard
deviation, 0 for one seed), ``table.json`` (the same numbers and every seed's values) and
``plot.png`` (WAR, UAR and cue agreement per cell with the standard deviation as error bars).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from r1omni_fast.demo import DEMO_DATA, DEMO_GRPO, DemoStages, answer_budget, save_figure

#: The studies ``r1omni-fast study`` runs.
STUDIES = ("cold-start", "modality-dropout", "rewards")
#: Cold-start sizes of the cold-start study, in clips.
COLD_START_SIZES = (0, 1, 4, 16)
#: The modality dropout of the modality-dropout study's "on" cell.
MODALITY_DROPOUT_ON = {"video": 0.3, "audio": 0.3}
#: The reward functions of the rewards study's cells.
REWARD_CELLS = {"accuracy": ["accuracy"], "accuracy+format": ["accuracy", "format"],
                "accuracy+format+grounding": ["accuracy", "format", "cue_grounding"]}
#: The numbers a cell reports (table columns), read from its evaluation.
MEASURES = ("war", "uar", "format_rate", "cue_agreement", "cited_change_rate", "uncited_change_rate")
_HEADERS = {"war": "WAR", "uar": "UAR", "format_rate": "format", "cue_agreement": "cue agreement",
            "cited_change_rate": "cited change", "uncited_change_rate": "uncited change"}


@dataclass(frozen=True)
class Cell:
    """One setting of a study. ``sft_clips``: SFT on the first ``sft_clips`` records of the data's
    sft.json (None: all of them; 0: no SFT, GRPO from the untrained model). ``grpo``: the GRPO
    settings that differ from ``DEMO_GRPO``; None: no GRPO, the SFT model is the cell's model."""

    name: str
    sft_clips: Optional[int] = None
    grpo: Optional[Dict[str, Any]] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The cell's folder name: its name lower-cased, ``+`` and spaces as ``-``."""
        return self.name.lower().replace("+", "-").replace(" ", "-")


#: The reference cell of the rewards and modality-dropout studies: the demo's SFT model, no GRPO.
SFT_ONLY = Cell("SFT only", grpo=None)


def study_cells(study: str, sizes: Sequence[int] = COLD_START_SIZES) -> List[Cell]:
    """The cells of ``study`` (module docstring); ValueError for an unknown study or a negative size."""
    if study == "cold-start":
        if not sizes or any(int(k) < 0 for k in sizes):
            raise ValueError(f"cold-start sizes must be clip counts >= 0, got {list(sizes)}")
        return [Cell(f"{int(k)} clips", sft_clips=int(k)) for k in sizes]
    if study == "modality-dropout":
        return [SFT_ONLY, Cell("dropout off"), Cell("dropout on", grpo={"modality_dropout": dict(MODALITY_DROPOUT_ON)})]
    if study == "rewards":
        return [SFT_ONLY] + [Cell(name, grpo={"reward_funcs": funcs}) for name, funcs in REWARD_CELLS.items()]
    raise ValueError(f"unknown study {study!r}: choose one of {', '.join(STUDIES)}")


def parse_seeds(text: str) -> List[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ValueError naming the text for anything else (or a repeat)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"seeds {text!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {text!r}: give distinct comma-separated integers, e.g. 0,1,2")
    return seeds


def mean_std(values: Sequence[Optional[float]]) -> Optional[Dict[str, Any]]:
    """``{"mean", "std", "n"}`` of the values that are not None (``std``: the sample standard
    deviation, ``sqrt(sum((x - mean)^2) / (n - 1))``; 0.0 for one value), None when all are None."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(xs)}


def cell_measures(metrics: Dict[str, Any], attribution: Optional[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """:data:`MEASURES` of one evaluation (its metrics.json dict and its attribution.json dict)."""
    cue = metrics.get("faithfulness", {}).get("cue_agreement", "n/a")
    a = attribution or {}
    return {"war": metrics["war"], "uar": metrics["uar"], "format_rate": metrics["format_rate"],
            "cue_agreement": None if cue == "n/a" else cue["agreement"],
            "cited_change_rate": a.get("cited_change_rate"), "uncited_change_rate": a.get("uncited_change_rate")}


def run_study(
    study: str,
    out: Union[str, Path] = "runs/study",
    seeds: Sequence[int] = (0, 1, 2),
    *,
    sft_steps: Optional[int] = None,
    grpo_steps: Optional[int] = None,
    clips: Optional[int] = None,
    sizes: Sequence[int] = COLD_START_SIZES,
    labels: Optional[Sequence[str]] = None,
    loader: Optional[Callable[..., list]] = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Run (or resume) ``study`` for ``seeds`` under ``out/study`` (module docstring) and return
    the table.json dict: ``{"study", "seeds", "settings", "cells": [{"name", "seeds": {seed:
    measures}, "summary": {measure: mean_std}}]}``. ``sft_steps`` / ``grpo_steps`` / ``clips``
    change the demo's (100 / 120 / 256); ``sizes``: the cold-start sizes. Raises ValueError for an
    unknown study, no seeds, or a cold start larger than the data can give."""
    from r1omni_fast.data.synthetic import DEFAULT_LABELS

    labels = list(labels or DEFAULT_LABELS)
    cells, data_settings = plan_study(study, clips, sizes, len(labels))
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no seeds: give at least one, e.g. 0,1,2")
    root = Path(out) / study
    root.mkdir(parents=True, exist_ok=True)
    settings = {"sft_steps": sft_steps, "grpo_steps": grpo_steps, "data": data_settings, "labels": labels}
    results: Dict[str, Dict[int, Dict[str, Optional[float]]]] = {c.name: {} for c in cells}
    for seed in seeds:
        seed_dir = root / f"seed-{seed}"
        runner = _SeedRunner(seed_dir, seed, labels, data_settings, sft_steps, grpo_steps, loader, progress, echo)
        for cell in cells:
            results[cell.name][seed] = runner.cell(cell)
    table = {"study": study, "seeds": seeds, "settings": settings,
             "cells": [{"name": c.name, "seeds": {str(s): results[c.name][s] for s in seeds},
                        "summary": {m: mean_std([results[c.name][s][m] for s in seeds]) for m in MEASURES}}
                       for c in cells]}
    from r1omni_fast.atomic import write_text

    write_text(root / "table.json", json.dumps(table, indent=2) + "\n")
    write_text(root / "table.md", study_table(table) + "\n")
    plot_study(table, root / "plot.png")
    return table


def plan_study(study: str, clips: Optional[int] = None, sizes: Sequence[int] = COLD_START_SIZES,
               num_labels: int = 4) -> tuple:
    """``(cells, data settings)`` of a study, checked before anything runs: the demo's data
    (``DEMO_DATA``, ``clips`` of them) and, for the cold-start study, a cold-start split as large as
    the largest size (:func:`cold_start_fraction`). ValueError for an unknown study or sizes the
    data cannot give."""
    cells = study_cells(study, sizes)
    data_settings = dict(DEMO_DATA, n=clips or DEMO_DATA["n"])
    if study == "cold-start":
        data_settings["sft_fraction"] = cold_start_fraction(data_settings["n"], num_labels,
                                                            max(c.sft_clips for c in cells), DEMO_DATA["test_fraction"])
    return cells, data_settings


def cold_start_fraction(n: int, num_labels: int, largest: int, test_fraction: float) -> float:
    """The ``sft_fraction`` for which ``r1omni_fast.data.synthetic.generate`` writes a cold-start
    split of ``ceil(largest / num_labels)`` clips per class from ``n`` clips (``largest`` clips or
    a few more); ValueError when the training clips of a class are too few."""
    per_class = math.ceil(max(largest, 1) / num_labels)
    count = n // num_labels
    train = count - int(round(test_fraction * count))
    if per_class >= train:
        raise ValueError(f"a cold start of {largest} clips needs more than {per_class} training clips per class; "
                         f"{n} clips give {train}: raise --clips or lower the sizes")
    return per_class / train


class _SeedRunner:
    """The steps of one seed, each done once (a ``<step>.done.json`` marker holds its result)."""

    def __init__(self, seed_dir: Path, seed: int, labels: List[str], data_settings: Dict[str, Any],
                 sft_steps: Optional[int], grpo_steps: Optional[int], loader: Any, progress: bool,
                 echo: Callable[[str], None]) -> None:
        self.dir, self.seed, self.labels = seed_dir, seed, labels
        self.data_settings, self.sft_steps, self.grpo_steps = data_settings, sft_steps, grpo_steps
        self.loader, self.progress, self.echo = loader, progress, echo
        self._stages: Optional[DemoStages] = None

    def step(self, name: str, folders: Sequence[Path], run: Callable[[], Any]) -> Any:
        """``run()``'s result, from the marker when the step is done; else ``folders`` are removed,
        ``run()`` is called and its result written as the marker."""
        from r1omni_fast.atomic import write_text

        marker = self.dir / f"{name}.done.json"
        if marker.is_file():
            return json.loads(marker.read_text(encoding="utf-8"))["result"]
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        result = run()
        write_text(marker, json.dumps({"result": result}, indent=2) + "\n")
        return result

    @property
    def stages(self) -> DemoStages:
        if self._stages is None:
            from r1omni_fast.data.synthetic import generate
            from r1omni_fast.model.humanomni.tiny import build_tiny_checkpoint

            tiny = self.dir / "tiny-model"
            self.step("tiny-model", [tiny], lambda: str(build_tiny_checkpoint(tiny, seed=self.seed,
                                                                               pretrain_towers=True)))
            data_dir = self.dir / "data"
            self.step("data", [data_dir], lambda: str(generate(data_dir, seed=self.seed, labels=self.labels,
                                                               **self.data_settings).root))
            data = _dataset(data_dir)
            self._stages = DemoStages(self.dir, data, self.labels, self.seed, answer_budget(tiny, data.sft, self.labels),
                                      self.loader, self.progress, self.echo)
        return self._stages

    def sft(self, clips: Optional[int]) -> Path:
        """The SFT model of a cold start of ``clips`` clips (None: the whole sft.json; 0: the
        untrained checkpoint)."""
        stages = self.stages
        if clips == 0:
            return self.dir / "tiny-model"
        name = "sft" if clips is None else f"sft-{clips}"

        def run() -> str:
            data_file = None
            if clips is not None:
                records = json.loads(stages.data.sft.read_text(encoding="utf-8"))
                if clips > len(records):
                    raise ValueError(f"a cold start of {clips} clips: {stages.data.sft} holds {len(records)}")
                data_file = stages.data.sft.with_name(f"sft-{clips}.json")
                data_file.write_text(json.dumps(records[:clips], indent=1) + "\n", encoding="utf-8")
            self.echo(f"[seed {self.seed}] cold-start SFT ({name})")
            return str(stages.sft(self.dir / "tiny-model", self.sft_steps, data_file=data_file, name=name))

        return Path(self.step(name, [self.dir / name], run))

    def cell(self, cell: Cell) -> Dict[str, Optional[float]]:
        """The measures of ``cell`` on this seed (trained and evaluated unless already done)."""
        def run() -> Dict[str, Optional[float]]:
            model = self.sft(cell.sft_clips)
            if cell.grpo is not None:
                self.echo(f"[seed {self.seed}] {cell.name}: GRPO")
                model = self.stages.grpo(model, cell.slug, DEMO_GRPO, self.grpo_steps, **cell.grpo)
            row = self.stages.evaluate(cell.slug, model)
            return cell_measures(row.metrics, row.attribution)

        done = (self.dir / f"cell-{cell.slug}.done.json").is_file()
        result = self.step(f"cell-{cell.slug}", [self.dir / cell.slug, self.dir / "eval" / cell.slug], run)
        if done:
            self.echo(f"[seed {self.seed}] {cell.name}: done before, not rerun")
        return result


def _dataset(root: Path) -> Any:
    from r1omni_fast.data.synthetic import SynthDataset

    clips = sorted((root / "clips").glob("*.mp4"))
    return SynthDataset(root, root / "sft.json", root / "train.json", root / "test.json", root / "manifest.json",
                        clips)


def _shown(summary: Optional[Dict[str, Any]]) -> str:
    return "n/a" if summary is None else f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def study_table(table: Dict[str, Any]) -> str:
    """The markdown table of a table.json dict: one row per cell, ``mean ± std`` per measure."""
    lines = [f"| {table['study']} | " + " | ".join(_HEADERS[m] for m in MEASURES) + " |",
             "|---" * (len(MEASURES) + 1) + "|"]
    for c in table["cells"]:
        lines.append(f"| {c['name']} | " + " | ".join(_shown(c["summary"][m]) for m in MEASURES) + " |")
    seeds = ", ".join(str(s) for s in table["seeds"])
    lines.append("")
    lines.append(f"Held-out split of the demo's synthetic data; mean ± sample standard deviation over seeds {seeds}. "
                 "cue agreement: share of clips whose reasoning claims exactly the modalities that carry the label; "
                 "cited / uncited change: how often removing a modality the reasoning cites / does not cite changes "
                 "the answer (r1omni_fast.eval.faithfulness).")
    return "\n".join(lines)


def plot_study(table: Dict[str, Any], out_png: Union[str, Path]) -> Path:
    """``plot.png``: WAR, UAR and cue agreement per cell, bars at the mean, error bars of one
    standard deviation over the seeds; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = table["cells"]
    shown = ("war", "uar", "cue_agreement")
    fig, ax = plt.subplots(figsize=(2.5 + 1.6 * len(cells), 3.8))
    width = 0.8 / len(shown)
    for j, measure in enumerate(shown):
        stats = [c["summary"][measure] for c in cells]
        xs = [i + (j - (len(shown) - 1) / 2) * width for i in range(len(cells))]
        ax.bar(xs, [s["mean"] if s else 0.0 for s in stats], width, yerr=[s["std"] if s else 0.0 for s in stats],
               capsize=3, label=_HEADERS[measure], color=f"C{j}" if j < 2 else "C9")
    ax.set_xticks(range(len(cells)), [c["name"] for c in cells], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("held-out score")
    ax.set_title(f"study {table['study']}: mean ± std over seeds {', '.join(str(s) for s in table['seeds'])}")
    ax.legend(fontsize=8, loc="upper left", ncol=len(shown))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out_png)


__all__ = ["COLD_START_SIZES", "Cell", "SFT_ONLY", "MEASURES", "MODALITY_DROPOUT_ON", "REWARD_CELLS", "STUDIES",
           "cell_measures", "cold_start_fraction", "mean_std", "parse_seeds", "plan_study", "plot_study", "run_study",
           "study_cells", "study_table"]
