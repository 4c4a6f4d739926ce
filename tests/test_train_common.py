"""Checkpoints (atomic, rotating, RNG-exact), LR schedules and the metrics log."""

import math
import random

import numpy as np
import pytest
import torch

from r1omni_fast.train.checkpoint import (checkpoint_dirs, latest_checkpoint, load_checkpoint,
                                          save_checkpoint)
from r1omni_fast.train.metrics_log import MetricsLog, ema_smooth, plot_curves, read_jsonl
from r1omni_fast.train.schedule import build_scheduler, lr_lambda


def _opt():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=1e-2)
    p.grad = torch.full((3,), 0.5)
    opt.step()
    return p, opt


def _save_weights(p):
    return lambda folder: torch.save({"p": p.detach().clone()}, folder / "w.pt")


def test_checkpoint_roundtrip_restores_optimizer_scheduler_and_every_rng(tmp_path):
    p, opt = _opt()
    sched = build_scheduler(opt, "cosine", 0.1, 10)
    opt.step()
    sched.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    gen = torch.Generator().manual_seed(7)
    save_checkpoint(tmp_path, 5, save_model=_save_weights(p), optimizer=opt, scheduler=sched,
                    trainer_state={"epoch": 0, "sample_index": 12},
                    extra_tensors={"sampler": gen.get_state()})
    expected = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))

    p2, opt2 = _opt()
    sched2 = build_scheduler(opt2, "cosine", 0.1, 10)
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    state, extra = load_checkpoint(tmp_path / "checkpoint-5", optimizer=opt2, scheduler=sched2)
    gen2 = torch.Generator()
    gen2.set_state(extra["sampler"])
    got = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen2))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2]) and torch.equal(got[3], expected[3])
    assert state == {"epoch": 0, "sample_index": 12, "global_step": 5}
    assert sched2.last_epoch == sched.last_epoch
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_rotation_keeps_newest_and_ignores_incomplete(tmp_path):
    p, opt = _opt()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, save_model=_save_weights(p), optimizer=opt, scheduler=None,
                        trainer_state={}, save_total_limit=2)
    assert [d.name for d in checkpoint_dirs(tmp_path)] == ["checkpoint-2", "checkpoint-3"]
    # A folder without trainer_state.json (an interrupted write) and temp folders are ignored.
    (tmp_path / "checkpoint-9").mkdir()
    (tmp_path / ".tmp-checkpoint-10-123").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-3"
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "checkpoint-9", optimizer=None, scheduler=None)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant_with_warmup"])
def test_schedule_warms_up_then_decays(kind):
    f = lr_lambda(kind, warmup_steps=4, total_steps=20)
    assert [f(s) for s in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]
    end = f(20)
    assert end == pytest.approx({"cosine": 0.0, "linear": 0.0, "constant_with_warmup": 1.0}[kind])
    if kind == "cosine":
        assert f(12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        lr_lambda("exponential", 0, 10)


def test_metrics_log_resume_drops_steps_after_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for s in range(1, 6):
        log.log({"step": s, "loss": 1.0 / s, "nan": float("nan")})
    MetricsLog(path, resume_step=3).log({"step": 4, "loss": 0.0})
    rows = read_jsonl(path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] == 0.0
    assert rows[0]["nan"] is None  # JSON has no NaN
    assert plot_curves(rows, ["loss", "absent"], tmp_path / "c.png").exists()
    path.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_jsonl(path)


def test_ema_smooth_is_tensorboards_debiased_moving_average(tmp_path):
    xs = [3.0, -1.0, 4.0, 1.0, 5.0, 9.0, 2.0]
    w = 0.6
    # the debiased EMA is the weighted mean of the points so far, weights w**age
    expected = [sum(w ** (k - i) * xs[i] for i in range(k + 1)) / sum(w ** (k - i) for i in range(k + 1))
                for k in range(len(xs))]
    assert ema_smooth(xs, w) == pytest.approx(expected)
    assert ema_smooth(xs, w)[0] == pytest.approx(xs[0])  # no pull toward 0 at the start
    assert ema_smooth([2.5] * 5, 0.9) == pytest.approx([2.5] * 5)
    assert ema_smooth(xs, 0.0) == pytest.approx(xs)
    with pytest.raises(ValueError, match=r"smoothing weight must be in \[0, 1\)"):
        ema_smooth(xs, 1.0)
    rows = [{"step": i + 1, "reward": x, "kl": 0.1 * i} for i, x in enumerate(xs)]
    assert plot_curves(rows, ["reward", "kl"], tmp_path / "s.png", smoothing=0.6).stat().st_size > 0
