"""GRPO modality dropout (r1omni_fast.train.modality_dropout): one seeded draw per prompt, never
every medium, the placeholder removed so the processor gives the row no such input, the drop
recorded in completions.jsonl and the step's metrics; bad settings refused at config time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1omni_fast.data import Batch, Sample
from r1omni_fast.train.modality_dropout import draw, drop_modalities, dropout_metrics

from _train_fixtures import grpo_fields, grpo_trainer, shared_assets, write_config

BOTH = "<video>\n<audio>\nWhich emotion?"


def _sample(i, prompt=BOTH):
    return Sample(f"s{i}", Path(f"{i}.mp4"), None, prompt, "<answer>sad</answer>", "sad", "s", False, f"d.json:{i + 1}")


def test_draws_are_seeded_per_prompt_and_never_drop_every_medium():
    ids = [f"clip-{i}" for i in range(2000)]
    got = [draw(i, ("video", "audio"), {"audio": 0.3}, seed=0, step=5) for i in ids]
    assert got == [draw(i, ("video", "audio"), {"audio": 0.3}, seed=0, step=5) for i in ids]  # same again
    assert got != [draw(i, ("video", "audio"), {"audio": 0.3}, seed=0, step=6) for i in ids]  # another step
    share = sum(d == ("audio",) for d in got) / len(got)
    assert 0.25 < share < 0.35 and all(d in ((), ("audio",)) for d in got)
    # both at probability 1: dropping both would leave nothing, so nothing is dropped
    assert {draw(i, ("video", "audio"), {"video": 1.0, "audio": 1.0}, seed=0, step=1) for i in ids[:50]} == {()}
    assert draw("x", ("audio",), {"audio": 1.0}, seed=0, step=1) == ()  # an audio-only prompt keeps its audio
    assert draw("x", ("video", "audio"), {"video": 1.0}, seed=0, step=1) == ("video",)
    assert {draw(i, ("video", "audio"), {"video": 0.0}, seed=0, step=1) for i in ids[:50]} == {()}


def test_dropping_removes_the_placeholder_and_records_it():
    batch = Batch(0, [_sample(0), _sample(1, "<video>\nWhich?")], None, None, None, None)
    out = drop_modalities(batch, {"audio": 1.0}, seed=0, step=1)
    assert [s.prompt for s in out.samples] == ["<video>\nWhich emotion?", "<video>\nWhich?"]
    assert [s.extra["dropped_modalities"] for s in out.samples] == [["audio"], []]
    assert batch.samples[0].prompt == BOTH  # the input batch is left as it was
    assert dropout_metrics(out.samples) == {"modality_dropout/video": 0.0, "modality_dropout/audio": 0.5}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def test_a_dropped_modality_reaches_neither_the_prompt_nor_the_model(assets, tmp_path):
    from r1omni_fast.model import AUDIO_TOKEN_INDEX, VIDEO_TOKEN_INDEX
    from r1omni_fast.train.stream import make_stream

    model_dir, data = assets
    for dropout, audio_tokens in ((None, True), ({"audio": 1.0}, False)):
        trainer = grpo_trainer(model_dir, data, tmp_path / f"run-{bool(dropout)}", modality_dropout=dropout)
        trainer.stream = make_stream(trainer.cfg, trainer.train_data, trainer.collate, None, trainer.dist)
        rollout = trainer.make_rollout(trainer.stream.next())
        ids = rollout.prompts["input_ids"]
        assert bool((ids == VIDEO_TOKEN_INDEX).any())
        assert bool((ids == AUDIO_TOKEN_INDEX).any()) is audio_tokens
        assert ("audio_features" in rollout.prompts) is audio_tokens
        if dropout:
            assert all(s.extra["dropped_modalities"] == ["audio"] for s in rollout.batch.samples)
        trainer.stream.close()


def test_grpo_logs_and_records_the_drops(assets, tmp_path):
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    model_dir, data = assets
    config = write_config(tmp_path / "grpo.yaml", **grpo_fields(model_dir, data, tmp_path / "run", logging_steps=1,
                                                                 modality_dropout={"video": 1.0}))
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert rows and all(r["dropped_modalities"] == ["video"] for r in rows)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "modality_dropout/video" in m]
    assert len(steps) == 2 and all(m["modality_dropout/video"] == 1.0 and m["modality_dropout/audio"] == 0.0
                                   for m in steps)


@pytest.mark.parametrize("value,message", [
    ({"audio": 1.5}, r"modality_dropout: audio must be a probability in \[0, 1\], got 1.5"),
    ({"audio": -0.1}, r"must be a probability"),
    ({"smell": 0.1}, r"'smell' is not a modality"),
    ({"audio": True}, r"must be a probability"),
    ({}, r"must map modalities to probabilities"),
])
def test_bad_settings_are_one_line_config_errors(value, message):
    from r1omni_fast.config import ConfigError, GRPOConfig

    with pytest.raises(ConfigError, match=message):
        GRPOConfig(modality_dropout=value)


def test_bad_settings_stop_the_cli_before_any_step(assets, tmp_path):
    from click.testing import CliRunner

    from r1omni_fast.cli import main
    from r1omni_fast.exit_status import EXIT_USAGE

    model_dir, data = assets
    config = write_config(tmp_path / "grpo.yaml", **grpo_fields(model_dir, data, tmp_path / "run",
                                                                 modality_dropout={"audio": 2}))
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == EXIT_USAGE and "modality_dropout: audio must be a probability" in result.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
