"""Experiment trackers: TRL's ``report_to`` (tensorboard, wandb, trackio, mlflow; ``none`` by default).

Every tracker named in ``report_to`` receives, from rank 0 only:

- the run's config once, at the start (``cfg.to_dict()``: TensorBoard as a text summary
  ``config``, wandb / trackio as the run's ``config``, MLflow as run parameters);
- every number of every logged step (the same record that goes to ``metrics.jsonl``, under the
  same names: ``loss``, ``reward``, ``rewards/accuracy/mean``, ...), at ``step``;
- with ``log_completions`` (GRPO), the step's completions as a table (columns ``step``,
  ``prompt_id``, ``label``, ``completion``, one per reward function, ``reward``, ``advantage``):
  TensorBoard as a Markdown text summary ``completions``, wandb / trackio as a ``Table``, MLflow as
  a JSON artifact ``completions/step_N.json``.

Where each one writes, with no network needed:

- tensorboard: ``OUT/runs`` (``tensorboard --logdir OUT/runs``); a resumed run purges the events
  after its checkpoint's step, so the curves read as one run;
- wandb: ``OUT/wandb``; ``WANDB_MODE=offline`` keeps it on disk (``wandb sync`` later);
  ``WANDB_PROJECT`` names the project (default ``r1omni-fast``);
- trackio: its local database (``TRACKIO_DIR``), project ``TRACKIO_PROJECT`` or ``r1omni-fast``;
- mlflow: ``MLFLOW_TRACKING_URI`` when set, else the file store ``OUT/mlruns``
  (``mlflow ui --backend-store-uri OUT/mlruns``); experiment ``MLFLOW_EXPERIMENT_NAME`` or
  ``r1omni-fast``.

A tracker whose package is not installed is a :class:`~r1omni_fast.config.ConfigError` when the
config is validated (``pip install tensorboard``, or every tracker at once with
``pip install 'r1omni-fast[tracking]'``), never an error in the middle of a run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from r1omni_fast.config import AnyConfig, ConfigError, TRACKER_PACKAGES, missing_tracker_packages

#: Columns of the completions table, before the reward functions' own columns.
COMPLETION_COLUMNS = ("step", "prompt_id", "label", "completion")


def scalars(record: Mapping[str, Any]) -> Dict[str, float]:
    """The numbers of a metrics record (ints, floats, bools as 0/1; NaN kept), without ``step``."""
    out: Dict[str, float] = {}
    for key, value in record.items():
        if key == "step" or value is None or isinstance(value, str):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


class _Tracker:
    name = ""

    def log_config(self, config: Dict[str, Any]) -> None:
        raise NotImplementedError

    def log_metrics(self, step: int, values: Dict[str, float]) -> None:
        raise NotImplementedError

    def log_table(self, step: int, columns: List[str], rows: List[List[Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _TensorBoard(_Tracker):
    name = "tensorboard"

    def __init__(self, out: Path, resume_step: Optional[int]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events after the checkpoint (written by the interrupted run) are dropped
        self.writer = SummaryWriter(log_dir=str(out / "runs"),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def log_config(self, config: Dict[str, Any]) -> None:
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log_metrics(self, step: int, values: Dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_table(self, step: int, columns: List[str], rows: List[List[Any]]) -> None:
        self.writer.add_text("completions", markdown_table(columns, rows), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb(_Tracker):
    name = "wandb"

    def __init__(self, out: Path, run_name: str, config: Dict[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "r1omni-fast"), name=run_name, dir=str(out),
                              config=config)

    def log_config(self, config: Dict[str, Any]) -> None:
        pass  # given to wandb.init

    def log_metrics(self, step: int, values: Dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_table(self, step: int, columns: List[str], rows: List[List[Any]]) -> None:
        self.run.log({"completions": self.wandb.Table(columns=columns, data=rows)}, step=step)

    def close(self) -> None:
        self.run.finish()


class _Trackio(_Tracker):
    name = "trackio"

    def __init__(self, run_name: str, config: Dict[str, Any]) -> None:
        import trackio

        self.trackio = trackio
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", "r1omni-fast"), name=run_name, config=config)

    def log_config(self, config: Dict[str, Any]) -> None:
        pass  # given to trackio.init: a trackio run's config is set when it starts

    def log_metrics(self, step: int, values: Dict[str, float]) -> None:
        self.trackio.log(values, step=step)

    def log_table(self, step: int, columns: List[str], rows: List[List[Any]]) -> None:
        self.trackio.log({"completions": self.trackio.Table(columns=columns, data=rows)}, step=step)

    def close(self) -> None:
        self.trackio.finish()


class _MLflow(_Tracker):
    name = "mlflow"

    def __init__(self, out: Path, run_name: str) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or (out / "mlruns").resolve().as_uri())
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "r1omni-fast"))
        mlflow.start_run(run_name=run_name)

    def log_config(self, config: Dict[str, Any]) -> None:
        self.mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in config.items()})

    def log_metrics(self, step: int, values: Dict[str, float]) -> None:
        self.mlflow.log_metrics(values, step=step)

    def log_table(self, step: int, columns: List[str], rows: List[List[Any]]) -> None:
        data = {c: [row[i] for row in rows] for i, c in enumerate(columns)}
        self.mlflow.log_table(data=data, artifact_file=f"completions/step_{step}.json")

    def close(self) -> None:
        self.mlflow.end_run()


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (TensorBoard renders text summaries as Markdown); ``|`` in cells is
    escaped and every line break (``\n``, ``\r``, the other separators of ``str.splitlines``)
    becomes ``<br>``, so every row stays one table row."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            value = "nan" if math.isnan(value) else f"{value:.4g}"
        return "<br>".join(str(value).replace("|", "\\|").splitlines())

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Trackers:
    """The trackers of ``cfg.report_to`` for one run (build it on rank 0 only; ``none`` -> no-op).

    ``resume_step``: the step a resumed run continues from (None for a fresh run). Raises
    :class:`ConfigError` naming the package to install when a tracker is missing.
    """

    def __init__(self, cfg: AnyConfig, *, resume_step: Optional[int] = None) -> None:
        names = tracker_names(cfg.report_to)
        missing = missing_tracker_packages(names)
        if missing:
            raise ConfigError(missing[0])
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        run_name = out.resolve().name
        config = cfg.to_dict()
        self.trackers: List[_Tracker] = []
        try:
            for name in names:
                if name == "tensorboard":
                    self.trackers.append(_TensorBoard(out, resume_step))
                elif name == "wandb":
                    self.trackers.append(_Wandb(out, run_name, config))
                elif name == "trackio":
                    self.trackers.append(_Trackio(run_name, config))
                else:
                    self.trackers.append(_MLflow(out, run_name))
            for tracker in self.trackers:
                tracker.log_config(config)
        except BaseException:
            self.close()
            raise

    def log(self, record: Mapping[str, Any]) -> None:
        """Every number of a metrics record (it must have ``step``)."""
        if not self.trackers:
            return
        values = scalars(record)
        for tracker in self.trackers:
            tracker.log_metrics(int(record["step"]), values)

    def log_table(self, step: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """The completions table of ``step`` (one list per row, in ``columns`` order)."""
        for tracker in self.trackers:
            tracker.log_table(step, list(columns), [list(r) for r in rows])

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def tracker_names(report_to: Sequence[str]) -> List[str]:
    """The trackers of a ``report_to`` value, ``none`` removed, in order, each once."""
    return [n for n in dict.fromkeys(report_to) if n != "none"]


__all__ = ["Trackers", "TRACKER_PACKAGES", "markdown_table", "scalars", "tracker_names"]
