"""report_to: every logged metric, the config and the completions table reach the trackers (read
back from TensorBoard's event files); unknown or missing trackers are config errors."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import pytest

from r1omni_fast.train.metrics_log import read_jsonl

from _train_fixtures import clip_loader, grpo_fields, sft_fields, shared_assets

pytest.importorskip("tensorboard", reason="report_to tensorboard needs the tensorboard package (test extra)")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def _events(folder):
    """(scalars {tag: [(step, value)]}, texts {tag: [(step, str)]}) of TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    texts = {tag.removesuffix("/text_summary"): [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]
             for tag in acc.Tags()["tensors"]}
    return scalars, texts


def _assert_every_metric_logged(records, scalars):
    numbers = 0
    for record in records:
        for key, value in record.items():
            if key == "step" or isinstance(value, str):
                continue
            numbers += 1
            assert key in scalars, f"{key} missing from TensorBoard"
            logged = dict(scalars[key])[record["step"]]
            if value is None:  # NaN in metrics.jsonl
                assert math.isnan(logged), key
            else:
                assert logged == pytest.approx(float(value), rel=1e-6, abs=1e-7), key
    assert numbers > 20


def _stage_config(cls, fields):
    fields = dict(fields)
    fields.pop("stage")
    return cls(**fields)


def test_grpo_reports_every_metric_the_config_and_the_completions_to_tensorboard(assets, tmp_path):
    from r1omni_fast.config import GRPOConfig
    from r1omni_fast.train.grpo import run_grpo

    model_dir, data = assets
    out = tmp_path / "run"
    cfg = _stage_config(GRPOConfig, grpo_fields(model_dir, data, out, report_to="tensorboard", log_completions=True,
                                                num_completions_to_print=1))
    run_grpo(cfg, loader=clip_loader(), progress=False)

    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    scalars, texts = _events(out / "runs")
    _assert_every_metric_logged(records, scalars)
    assert "reward" in scalars and "kl" in scalars
    (config_step, config_text), = texts["config"]
    assert json.loads(config_text.strip("`\n")) == cfg.to_dict()
    completions = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert [s for s, _ in texts["completions"]] == [1, 2]
    for step, table in texts["completions"]:
        rows = [r for r in completions if r["step"] == step]
        lines = table.splitlines()
        assert lines[0] == "| " + " | ".join(rows[0]) + " |"
        assert len(lines) == 2 + len(rows)  # header, rule, one line per completion of the step
        for line, row in zip(lines[2:], rows):
            assert f"| {row['prompt_id']} |" in line


def test_sft_reports_every_metric_and_a_resumed_run_reads_as_one(assets, tmp_path):
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.train.sft import run_sft

    model_dir, data = assets
    out = tmp_path / "run"
    fields = sft_fields(model_dir, data, out, max_steps=3, save_steps=2, report_to=["tensorboard"])
    run_sft(_stage_config(SFTConfig, {**fields, "max_steps": 3}), loader=clip_loader(), progress=False)
    scalars, _ = _events(out / "runs")
    first_loss, first_tokens = dict(scalars["loss"]), dict(scalars["num_tokens"])
    # as if killed after logging step 3 but before checkpoint-3 was complete: the resumed run logs
    # step 3 again, and TensorBoard's curve keeps it once
    shutil.rmtree(out / "checkpoint-3")
    run_sft(_stage_config(SFTConfig, {**fields, "resume": True}), loader=clip_loader(), progress=False)
    records = read_jsonl(out / "metrics.jsonl")
    scalars, _ = _events(out / "runs")
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3]
    assert dict(scalars["loss"]) == pytest.approx(first_loss)
    # num_tokens (TRL's: cumulative input tokens) continues from the checkpoint
    assert dict(scalars["num_tokens"]) == first_tokens and first_tokens[1] < first_tokens[2] < first_tokens[3]
    _assert_every_metric_logged(records, scalars)


def test_report_to_none_writes_no_tracker_files(assets, tmp_path):
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.train.sft import run_sft

    model_dir, data = assets
    out = tmp_path / "run"
    cfg = _stage_config(SFTConfig, sft_fields(model_dir, data, out, max_steps=1))
    assert cfg.report_to == ["none"]
    run_sft(cfg, loader=clip_loader(), progress=False)
    assert not (out / "runs").exists() and not (out / "mlruns").exists() and not (out / "wandb").exists()


@pytest.mark.parametrize("tracker", ["wandb", "trackio", "mlflow", "tensorboard"])
def test_a_tracker_not_installed_is_a_config_error_naming_the_package(tmp_path, monkeypatch, tracker):
    from r1omni_fast.config import ConfigError, SFTConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a))
    with pytest.raises(ConfigError, match=rf"report_to: {tracker} needs the {tracker} package.*pip install {tracker}"):
        SFTConfig(output_dir=str(tmp_path), report_to=f"tensorboard,{tracker}")


def test_unknown_tracker_and_none_with_trackers_are_config_errors():
    from r1omni_fast.config import ConfigError, GRPOConfig, load_config

    with pytest.raises(ConfigError, match=r"unknown tracker\(s\) \['comet'\].*tensorboard, wandb, trackio, mlflow"):
        GRPOConfig(report_to=["comet"])
    with pytest.raises(ConfigError, match="drop none"):
        GRPOConfig(report_to=["none", "tensorboard"])
    assert load_config(None, ["--stage", "grpo", "--report-to", "tensorboard"]).report_to == ["tensorboard"]


def test_markdown_table_keeps_one_row_per_completion():
    from r1omni_fast.train.tracking import markdown_table

    text = markdown_table(["completion", "reward"], [["a|b\nc\rd", 0.5], ["x", float("nan")]])
    assert text.splitlines() == ["| completion | reward |", "|---|---|", "| a\\|b<br>c<br>d | 0.5 |", "| x | nan |"]


def _fake_module(monkeypatch, name, calls, **attrs):
    """A stand-in for a tracker package that is not installed here: its functions take the real
    API's keyword names only (a wrong keyword is a TypeError) and record each call."""
    import importlib.machinery
    import sys
    import types

    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def recorder(fname, fn):
        def call(*args, **kwargs):
            fn(*args, **kwargs)  # the real signature
            calls.append((name, fname, args, kwargs))
            return call_result.get(fname)
        return call

    call_result = attrs.pop("_returns", {})
    for fname, fn in attrs.items():
        setattr(module, fname, recorder(fname, fn) if callable(fn) and not isinstance(fn, type) else fn)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_wandb_trackio_mlflow_adapters_send_config_metrics_and_table(tmp_path, monkeypatch):
    """wandb, trackio and mlflow are not installed here: fakes with their APIs' keyword names
    stand in, and every call the adapters make is checked (config once, every number at its step,
    the completions table, the run closed)."""
    from r1omni_fast.config import GRPOConfig
    from r1omni_fast.train.tracking import Trackers

    calls = []

    class Table:
        def __init__(self, columns=None, data=None, rows=None, dataframe=None, dtype=None, optional=True,
                     allow_mixed_types=False):
            self.columns, self.data = columns, data

    class Run:
        def log(self, data, step=None, commit=None):
            calls.append(("wandb", "run.log", (data,), {"step": step}))

        def finish(self, exit_code=None, quiet=None):
            calls.append(("wandb", "run.finish", (), {}))

    def wandb_init(entity=None, project=None, dir=None, id=None, name=None, notes=None, tags=None, config=None,
                   mode=None, resume=None, settings=None):
        pass

    _fake_module(monkeypatch, "wandb", calls, init=wandb_init, Table=Table, _returns={"init": Run()})
    _fake_module(monkeypatch, "trackio", calls, Table=Table,
                 init=lambda project, name=None, group=None, space_id=None, config=None, resume="never",
                 settings=None, private=None: None,
                 log=lambda metrics, step=None: None, finish=lambda: None)
    _fake_module(monkeypatch, "mlflow", calls,
                 set_tracking_uri=lambda uri: None,
                 set_experiment=lambda experiment_name=None, experiment_id=None: None,
                 start_run=lambda run_id=None, experiment_id=None, run_name=None, nested=False, tags=None,
                 description=None, log_system_metrics=None: None,
                 log_params=lambda params, synchronous=None, run_id=None: None,
                 log_metrics=lambda metrics, step=None, synchronous=None, run_id=None, timestamp=None: None,
                 log_table=lambda data, artifact_file, run_id=None: None,
                 end_run=lambda status="FINISHED": None)

    cfg = GRPOConfig(output_dir=str(tmp_path / "run"), report_to=["wandb", "trackio", "mlflow"])
    trackers = Trackers(cfg)
    trackers.log({"step": 3, "loss": 0.5, "reward": 1, "eval/n": 4, "note": "text", "kl": None})
    trackers.log_table(3, ["step", "completion", "reward"], [[3, "<answer> happy </answer>", 1.0]])
    trackers.close()

    def of(module):
        return [(f, a, k) for m, f, a, k in calls if m == module]

    numbers = {"loss": 0.5, "reward": 1.0, "eval/n": 4.0}  # strings and None are not numbers
    config = cfg.to_dict()
    wandb = of("wandb")
    assert wandb[0][0] == "init" and wandb[0][2]["config"] == config and wandb[0][2]["dir"] == str(tmp_path / "run")
    assert wandb[1] == ("run.log", (numbers,), {"step": 3})
    assert wandb[2][0] == "run.log" and wandb[2][2] == {"step": 3}
    table = wandb[2][1][0]["completions"]
    assert table.columns == ["step", "completion", "reward"] and table.data == [[3, "<answer> happy </answer>", 1.0]]
    assert wandb[3][0] == "run.finish" and len(wandb) == 4
    trackio = of("trackio")
    assert [f for f, _, _ in trackio] == ["init", "log", "log", "finish"]
    assert trackio[0][2]["config"] == config and trackio[1][1:] == ((numbers,), {"step": 3})
    assert trackio[2][1][0]["completions"].data == [[3, "<answer> happy </answer>", 1.0]]
    mlflow = of("mlflow")
    assert [f for f, _, _ in mlflow] == ["set_tracking_uri", "set_experiment", "start_run", "log_params",
                                        "log_metrics", "log_table", "end_run"]
    assert mlflow[0][1][0] == (tmp_path / "run" / "mlruns").resolve().as_uri()
    params = mlflow[3][1][0]
    assert set(params) == set(config) and params["report_to"] == json.dumps(["wandb", "trackio", "mlflow"])
    assert mlflow[4][1:] == ((numbers,), {"step": 3})
    assert mlflow[5][2] == {"data": {"step": [3], "completion": ["<answer> happy </answer>"], "reward": [1.0]},
                            "artifact_file": "completions/step_3.json"}
