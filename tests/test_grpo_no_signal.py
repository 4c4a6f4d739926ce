"""A GRPO run without learning signal says so: after ``NO_SIGNAL_STEPS`` consecutive steps in
which every group's completions got the same reward (``frac_reward_zero_std`` 1.0) one warning
names the likely cause (no well-formed answers: start from an SFT model), once per streak."""

from __future__ import annotations

import json
import logging

import pytest

from _train_fixtures import grpo_trainer, shared_assets

CAUSE = "start from an SFT model"


def _said(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "no learning signal" in r.getMessage()]


def test_the_warning_comes_once_per_streak_of_steps_without_signal(caplog):
    from r1omni_fast.train.grpo.metrics import NO_SIGNAL_STEPS, no_signal_streak

    caplog.set_level(logging.WARNING, logger="r1omni_fast")
    fractions = [1.0] * (NO_SIGNAL_STEPS - 1) + [0.5] + [1.0] * (NO_SIGNAL_STEPS + 2) + [0.0] + [1.0] * NO_SIGNAL_STEPS
    streak, warned_at = 0, []
    for step, frac in enumerate(fractions, start=1):
        before = len(_said(caplog))
        streak = no_signal_streak(streak, {"step": step, "frac_reward_zero_std": frac, "reward": 0.0})
        if len(_said(caplog)) > before:
            warned_at.append(step)
    first = NO_SIGNAL_STEPS + 1  # the step after the one with signal
    assert warned_at == [first + NO_SIGNAL_STEPS - 1, len(fractions)]
    message = _said(caplog)[0]
    assert f"no learning signal for {NO_SIGNAL_STEPS} steps in a row (steps {first}-{first + NO_SIGNAL_STEPS - 1})" \
        in message
    assert "frac_reward_zero_std 1.0" in message and CAUSE in message and "reward_funcs and label_set" in message
    assert no_signal_streak(0, {"step": 1, "frac_reward_zero_std": 1.0}, steps=1, say=False) == 1
    assert len(_said(caplog)) == 2  # say=False (another rank) logs nothing
    # every completion right (mean reward above 0): the cause named is a solved prompt, not a missing answer
    no_signal_streak(0, {"step": 1, "frac_reward_zero_std": 1.0, "reward": 2.0}, steps=1)
    solved = _said(caplog)[-1]
    assert CAUSE not in solved and "same non-zero reward" in solved and "reward_funcs and label_set" in solved


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


@pytest.mark.parametrize("rewards, warned", [(["accuracy", "format"], True),
                                             (["_train_fixtures.answer_length_reward"], False)])
def test_an_untrained_model_scored_for_answers_gets_the_warning(assets, tmp_path, caplog, rewards, warned):
    from r1omni_fast.train.grpo.metrics import NO_SIGNAL_STEPS

    model_dir, data = assets
    trainer = grpo_trainer(model_dir, data, tmp_path / "run", max_steps=NO_SIGNAL_STEPS, save_steps=NO_SIGNAL_STEPS,
                           reward_funcs=rewards, logging_steps=1)
    caplog.set_level(logging.WARNING, logger="r1omni_fast")
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == NO_SIGNAL_STEPS
    assert all(r["frac_reward_zero_std"] == 1.0 for r in rows) == warned
    said = _said(caplog)
    assert len(said) == int(warned)
    if warned:
        assert CAUSE in said[0] and f"(steps 1-{NO_SIGNAL_STEPS})" in said[0]
