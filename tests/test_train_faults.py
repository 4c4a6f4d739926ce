"""What a training run does when something goes wrong (docs/troubleshooting.md):
non-finite rewards, losses and weights; data that cannot feed a step; pre-emption signals; full
disks and leftover temporary checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from _train_fixtures import TESTS, clip_loader, grpo_fields, sft_fields, shared_assets, write_config

from r1omni_fast.config import ConfigError, GRPOConfig, SFTConfig
from r1omni_fast.data import Batch
from r1omni_fast.train import checkpoint as ckpt
from r1omni_fast.train import faults
from r1omni_fast.train.stream import BatchStream


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def _config(cls, fields):
    return cls(**{k: v for k, v in fields.items() if k != "stage"})


def _rows(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _weights(folder: Path) -> dict:
    return load_file(folder / "model.safetensors")


# ------------------------------------------------------------------------------ checkpoints


def _save(out: Path, step: int, payload_bytes: int = 1000, **kw):
    """save_checkpoint with a safetensors 'model' and an optimizer of ``payload_bytes``."""
    param = torch.nn.Parameter(torch.zeros(max(payload_bytes // 4, 1)))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    param.grad = torch.ones_like(param)
    opt.step()
    return ckpt.save_checkpoint(out, step, save_model=lambda d: save_file({"w": torch.arange(4.0)}, str(d / "model.safetensors")),
                                optimizer=opt, scheduler=None, trainer_state={"batches_done": step}, **kw)


def test_every_file_and_folder_is_fsynced_and_the_output_folder_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    final = _save(tmp_path / "out", 3)
    tmp = [Path(p) for p in synced if ".tmp-checkpoint-3-" in p]
    files = {p.name for p in tmp if p.name != f".tmp-checkpoint-3-{os.getpid()}"}
    assert files == {p.name for p in final.iterdir()} == {"model.safetensors", "optimizer.pt", "rng_state.pt",
                                                         "trainer_state.json"}
    assert synced.index(str(tmp_path / "out" / f".tmp-checkpoint-3-{os.getpid()}")) > max(
        synced.index(str(p)) for p in tmp if p.name in files)  # the folder after its files
    assert synced[-1] == str(tmp_path / "out")  # the rename itself, after it happened
    ckpt.load_checkpoint(final, optimizer=None, scheduler=None)


def test_leftover_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    gone = out / f".tmp-checkpoint-4-{dead.pid}"
    alive = out / f".tmp-checkpoint-5-{os.getppid()}"
    other = out / ".tmp-notes"
    for p in (gone, alive, other):
        p.mkdir(parents=True)
        (p / "model.safetensors").write_bytes(b"partial")
    from r1omni_fast.atomic import remove_dead_temporaries

    assert remove_dead_temporaries(out) == [gone]
    assert not gone.exists() and alive.exists() and other.exists()


def test_an_interrupted_write_removes_its_partial_folder(tmp_path):
    def interrupted(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 1, save_model=interrupted, optimizer=None, scheduler=None, trainer_state={})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False, timeout=30)


@pytest.mark.parametrize("failing", ["optimizer", "model"])
def test_full_disk_is_one_line_the_partial_folder_goes_and_the_previous_checkpoint_stays(small_disk, failing):
    out = small_disk / "run"
    first = _save(out, 1, payload_bytes=100_000)
    big = 2_000_000
    with pytest.raises(ckpt.CheckpointWriteError) as err:
        if failing == "optimizer":
            _save(out, 2, payload_bytes=big)
        else:
            ckpt.save_checkpoint(out, 2, save_model=lambda d: save_file({"w": torch.zeros(big // 4)},
                                                                        str(d / "model.safetensors")),
                                 optimizer=None, scheduler=None, trainer_state={})
    assert str(err.value) == (f"no space left on {small_disk} (tmpfs, tmpfs) while writing checkpoint-2; "
                              "the previous checkpoint is intact (checkpoint-1)")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1"]
    state, _ = ckpt.load_checkpoint(first, optimizer=None, scheduler=None)
    assert state["global_step"] == 1 and torch.equal(_weights(first)["w"], torch.arange(4.0))


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    from r1omni_fast.train import common

    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 1] = float("nan")
    cfg = SFTConfig(output_dir=str(tmp_path))
    with pytest.raises(faults.NonFiniteError, match="no checkpoint was written"):
        common.save(cfg, 1, model, torch.optim.SGD(model.parameters(), lr=1), None, {},
                    save_model=lambda d: save_file(dict(model.state_dict()), str(d / "model.safetensors")))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ guard and signals


def test_guard_skips_non_finite_steps_and_stops_after_a_streak():
    guard = faults.NonFiniteGuard(limit=3)
    assert not guard.check(1, {"loss": 1.0, "grad_norm": 2.0})
    assert guard.check(2, {"loss": float("nan"), "grad_norm": 2.0})
    assert guard.check(3, {"loss": 1.0, "grad_norm": float("inf")})
    assert not guard.check(4, {"loss": 1.0, "grad_norm": 1.0})  # the streak ends
    assert guard.check(5, {"loss": float("nan"), "grad_norm": 1.0})
    assert guard.check(6, {"loss": float("nan"), "grad_norm": 1.0})
    with pytest.raises(faults.NonFiniteError, match=r"step 7: 3 steps in a row .*\(max_nonfinite_steps 3\)"):
        guard.check(7, {"loss": float("-inf"), "grad_norm": 1.0})
    assert guard.total == 5


def test_stop_signals_are_caught_and_a_second_sigint_stops_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with faults.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested() == signal.SIGUSR1
    assert signal.getsignal(signal.SIGTERM) is before
    with faults.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes


# ------------------------------------------------------------------------------ data that cannot feed a step


def _failing_collate(fail):
    def collate(samples, index):
        bad = [s for s in samples if fail(s, index)]
        good = [s for s in samples if not fail(s, index)]
        return Batch(index, good, None, None, None, None, [(s.id, "cannot decode: truncated") for s in bad])
    return collate


def _samples(n):
    from r1omni_fast.data import Sample

    return [Sample(f"s{i}", Path(f"{i}.mp4"), None, "p", "t", "sad", "s", False, f"d.json:{i + 1}")
            for i in range(n)]


def test_batches_with_no_clip_end_the_run_after_max_skipped_batches_listing_the_first_failures():
    stream = BatchStream(_samples(40), 2, _failing_collate(lambda s, i: True), seed=0, max_skipped_batches=4)
    with pytest.raises(faults.TrainingError) as err:
        stream.next()
    text = str(err.value)
    assert text.startswith("no clip could be loaded for 4 batches in a row (max_skipped_batches); stopped")
    assert text.count("cannot decode: truncated") == BatchStream.SHOWN_FAILURES
    assert "d.json:" in text and stream.batches_done == 4 and stream.skipped_samples == 8
    stream.close()


def test_skipped_samples_are_counted_and_the_epoch_budget_ends_the_run():
    samples = _samples(20)
    bad = {"s3", "s7", "s11"}
    stream = BatchStream(samples, 4, _failing_collate(lambda s, i: s.id in bad), seed=0, max_skipped_fraction=0.25)
    seen = []
    for _ in range(10):  # two epochs: 3 of 20 failing stays within a quarter of each
        seen += [s.id for s in stream.next().batch.samples]
    assert stream.skipped_samples == 6 and len(seen) == 34 and not bad & set(seen)
    stream.close()
    bad = {f"s{i}" for i in range(6)}  # 6 of 20 > 0.25
    stream = BatchStream(samples, 4, _failing_collate(lambda s, i: s.id in bad), seed=0, max_skipped_fraction=0.25)
    with pytest.raises(faults.TrainingError, match="6 of the 20 samples of epoch 0 failed to load, more than "
                                                   "max_skipped_fraction 0.25"):
        for _ in range(5):
            stream.next()
    stream.close()


def _truncating_loader(real, keep=lambda path: False):
    """The clip loader as if every clip but ``keep``'s had been cut to its first 100 bytes."""
    from r1omni_fast.media import MediaError

    def loader(paths, **kw):
        out = real(paths, **kw)
        return [c if keep(p) else MediaError(p, "invalid data found when processing input (truncated)")
                for p, c in zip(paths, out)]
    return loader


def test_unloadable_clips_stop_the_run_before_step_1_or_after_max_skipped_batches(assets, tmp_path):
    from r1omni_fast.train.sft import run_sft

    model_dir, data = assets
    loader = _truncating_loader(clip_loader())
    cfg = _config(SFTConfig, sft_fields(model_dir, data, tmp_path / "a", max_steps=3))
    with pytest.raises(ConfigError, match=r"data_file: none of the 4 clips decoded before step 1 could be loaded"):
        run_sft(cfg, loader=loader, progress=False)
    assert not (tmp_path / "a").exists()  # refused before the run wrote anything: no files, no folder
    cfg = _config(SFTConfig, sft_fields(model_dir, data, tmp_path / "b", max_steps=3, preflight_clips=0, max_skipped_fraction=1.0,
                                        max_skipped_batches=3))
    with pytest.raises(faults.TrainingError, match=r"no clip could be loaded for 3 batches in a row"):
        run_sft(cfg, loader=loader, progress=False)


def test_data_check_decode_reports_clips_that_fail(tmp_path):
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    out = tmp_path / "synth"
    assert CliRunner().invoke(main, ["data", "synth", str(out), "--n", "8"]).exit_code == 0
    records = json.loads((out / "train.json").read_text())
    clip = out / records[-1]["video"]
    clip.write_bytes(clip.read_bytes()[:100])
    result = CliRunner().invoke(main, ["data", "check", str(out / "train.json"), "--labels",
                                       "happy,sad,angry,neutral", "--decode", "3"])
    assert result.exit_code == 1, result.output
    assert "decoded     2 of 3 clips checked loaded (1 failed)" in result.output
    # listed once: under "unreadable media" (its duration could not be read) and not again below
    assert "unreadable media:" in result.output and records[-1]["video"] in result.output
    assert "clips that failed to decode" not in result.output
    assert len([line for line in result.output.splitlines() if records[-1]["video"] in line]) == 1


# ------------------------------------------------------------------------------ non-finite rewards and losses


def test_an_infinite_reward_is_an_error_naming_the_function_and_the_sample(assets, tmp_path):
    from r1omni_fast.train.grpo import run_grpo

    model_dir, data = assets
    out = tmp_path / "inf"
    cfg = _config(GRPOConfig, grpo_fields(model_dir, data, out, max_steps=2, save_steps=1,
                                          reward_funcs=["accuracy", "_train_fixtures.infinite_reward"]))
    with pytest.raises(faults.TrainingError, match=r"reward function 'infinite_reward' returned inf for sample "
                                                   r"\S+ \(.*train.json:\d+\), completion 1 of 2: a reward must be "
                                                   r"finite and within \+-reward_bound \(1e\+06\)"):
        run_grpo(cfg, loader=clip_loader(), progress=False)
    assert not list(out.glob("checkpoint-*"))


def test_invalid_rewards_can_be_counted_and_left_out(assets, tmp_path):
    from r1omni_fast.train.grpo import run_grpo

    model_dir, data = assets
    out = tmp_path / "skip"
    cfg = _config(GRPOConfig, grpo_fields(model_dir, data, out, max_steps=1, save_steps=1, on_invalid_reward="skip",
                                          reward_funcs=["accuracy", "_train_fixtures.huge_on_first_reward"]))
    run_grpo(cfg, loader=clip_loader(), progress=False)
    (row,) = _rows(out)
    assert row["rewards/num_invalid"] == 1  # the first of the micro-batch's 4 completions
    assert row["rewards/huge_on_first_reward/mean"] == 0.5 and row["nonfinite_steps"] == 0
    completions = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert completions[0]["huge_on_first_reward"] is None
    assert all(torch.isfinite(w).all() for w in _weights(out / "checkpoint-1").values())


def _nan_frames_loader(real, poison):
    calls = []

    def loader(paths, **kw):
        calls.append(len(paths))
        out = real(paths, **kw)
        if poison(len(calls)):
            out = [dataclasses.replace(c, frames=np.full_like(c.frames, np.nan)) for c in out]
        return out
    return loader


def test_non_finite_loss_skips_the_update_counts_it_and_stops_after_max_nonfinite_steps(assets, tmp_path):
    from r1omni_fast.model import OmniModel
    from r1omni_fast.train.sft import run_sft

    model_dir, data = assets
    start = {k: v.clone() for k, v in OmniModel.from_pretrained(model_dir).state_dict().items()}
    # call 1 is the pre-flight check; call 2 feeds step 1
    out = tmp_path / "once"
    cfg = _config(SFTConfig, sft_fields(model_dir, data, out, max_steps=2, save_steps=1, max_nonfinite_steps=2,
                                        warmup_ratio=0.0))
    run_sft(cfg, loader=_nan_frames_loader(clip_loader(), lambda call: call == 2), progress=False)
    rows = _rows(out)
    assert [r["loss"] is None for r in rows] == [True, False]
    assert [r["nonfinite_steps"] for r in rows] == [1, 1] and rows[1]["skipped_samples"] == 0
    after_1 = OmniModel.from_pretrained(out / "checkpoint-1").state_dict()
    assert all(torch.equal(after_1[k], start[k]) for k in start)  # the skipped step changed nothing
    assert not all(torch.equal(v, start[k]) for k, v in OmniModel.from_pretrained(out).state_dict().items())

    out = tmp_path / "always"
    cfg = _config(SFTConfig, sft_fields(model_dir, data, out, max_steps=4, save_steps=1, max_nonfinite_steps=2))
    with pytest.raises(faults.NonFiniteError, match="step 2: 2 steps in a row had a non-finite loss"):
        run_sft(cfg, loader=_nan_frames_loader(clip_loader(), lambda call: call > 1), progress=False)
    ck = OmniModel.from_pretrained(out / "checkpoint-1").state_dict()
    assert all(torch.equal(ck[k], start[k]) for k in start)
    assert json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["nonfinite_steps"] == 1


# ------------------------------------------------------------------------------ pre-emption


def _start(args, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent / "python"), env.get("PYTHONPATH", "")])
    with open(log, "w") as sink:
        return subprocess.Popen([sys.executable, str(TESTS / "_train_fixtures.py"), *args], stdout=sink,
                                stderr=subprocess.STDOUT, env=env)


def _signal_after_first_step(proc: subprocess.Popen, out: Path, log: Path, sig: int, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    try:
        while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().strip()):
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before its first step was logged:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("no step logged in time")
            time.sleep(0.02)
        proc.send_signal(sig)
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_saves_after_the_step_exits_75_and_resume_continues_exactly(assets, tmp_path):
    from r1omni_fast.train.sft import run_sft

    model_dir, data = assets
    fields = dict(max_steps=4, save_steps=100, warmup_ratio=0.2, per_device_train_batch_size=1)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    run_sft(_config(SFTConfig, sft_fields(model_dir, data, straight, **fields)), loader=clip_loader(), progress=False)
    config = write_config(tmp_path / "b.yaml", **sft_fields(model_dir, data, broken, **fields))
    log = tmp_path / "broken.log"
    status = _signal_after_first_step(_start(["train", "--config", str(config)], log), broken, log, signal.SIGTERM)
    text = log.read_text()
    assert status == faults.EXIT_PREEMPTED, text[-3000:]
    stopped = max(r["step"] for r in _rows(broken))
    assert 1 <= stopped < 4
    assert f"SIGTERM: stopped after step {stopped}; wrote {broken / f'checkpoint-{stopped}'}; continue with --resume" in text
    assert [p.name for p in broken.glob("checkpoint-*")] == [f"checkpoint-{stopped}"]
    assert not list(broken.glob(".tmp-*")) and "Traceback" not in text

    run_sft(_config(SFTConfig, sft_fields(model_dir, data, broken, resume=True, **fields)), loader=clip_loader(),
            progress=False)
    expected = {r["step"]: r["loss"] for r in _rows(straight)}
    assert {r["step"]: r["loss"] for r in _rows(broken)} == expected  # exact on CPU
    a, b = _weights(straight), _weights(broken)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigint_saves_too_and_says_so_instead_of_aborted(assets, tmp_path):
    model_dir, data = assets
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", **sft_fields(model_dir, data, out, max_steps=6, save_steps=100,
                                                              per_device_train_batch_size=1))
    log = tmp_path / "run.log"
    status = _signal_after_first_step(_start(["train", "--config", str(config)], log), out, log, signal.SIGINT)
    text = log.read_text()
    assert status == faults.EXIT_INTERRUPTED, text[-3000:]
    stopped = max(r["step"] for r in _rows(out))
    assert f"SIGINT: stopped after step {stopped}; wrote {out / f'checkpoint-{stopped}'}" in text
    assert "Aborted!" not in text and "Traceback" not in text


class _OtherRanks:
    """A Dist stand-in whose other rank contributes ``theirs`` to every sum."""

    enabled = True

    def __init__(self, theirs):
        self.theirs = theirs

    def sum(self, values):
        return [float(v) + t for v, t in zip(values, self.theirs)]


def test_skip_and_stop_decisions_include_the_other_ranks():
    guard = faults.NonFiniteGuard(limit=3)
    assert guard.check(1, {"loss": 1.0, "grad_norm": 1.0}, _OtherRanks([1.0]))  # finite here, not there
    assert not guard.check(2, {"loss": 1.0, "grad_norm": 1.0}, _OtherRanks([0.0]))
    stop = faults.StopSignals()
    assert stop.requested(_OtherRanks([0.0, 0.0])) is None
    assert stop.requested(_OtherRanks([0.0, 1.0])) == signal.SIGTERM  # another rank got SIGTERM / SIGUSR1
    assert stop.requested(_OtherRanks([1.0, 0.0])) == signal.SIGINT
    with pytest.raises(faults.NonFiniteError):
        faults.check_finite_weights([torch.nn.Parameter(torch.ones(2))], _OtherRanks([1.0]))
    # a global batch with no clip on this rank but some on the other is not skipped here either
    stream = BatchStream(_samples(8), 2, _failing_collate(lambda s, i: True), seed=0, rank=0, world_size=2,
                         dist=_OtherRanks([0.0, 2.0]))
    with pytest.raises(Exception, match="no earlier batch can stand in"):
        stream.next()
    assert stream.skipped_samples == 2
    stream.close()


def test_grpo_sigusr1_saves_at_the_end_of_the_reuse_cycle_and_resume_continues_exactly(assets, tmp_path):
    import _train_fixtures
    from r1omni_fast.train.grpo import run_grpo

    model_dir, data = assets
    fields = dict(max_steps=4, save_steps=100, num_iterations=2,
                  reward_funcs=["format", "_train_fixtures.length_reward_sending_signals"])
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    run_grpo(_config(GRPOConfig, grpo_fields(model_dir, data, straight, **fields)), loader=clip_loader(),
             progress=False)
    _train_fixtures.PENDING_SIGNALS[:] = [signal.SIGUSR1]  # arrives while step 1 scores its completions
    with pytest.raises(faults.Preempted) as stopped:
        run_grpo(_config(GRPOConfig, grpo_fields(model_dir, data, broken, **fields)), loader=clip_loader(),
                 progress=False)
    assert not _train_fixtures.PENDING_SIGNALS
    # step 1 reuses its completions in step 2: the checkpoint comes at the end of that cycle
    assert (stopped.value.step, stopped.value.exit_status) == (2, faults.EXIT_PREEMPTED)
    assert str(stopped.value) == f"SIGUSR1: stopped after step 2; wrote {broken / 'checkpoint-2'}; continue with --resume"
    assert [p.name for p in broken.glob("checkpoint-*")] == ["checkpoint-2"]
    run_grpo(_config(GRPOConfig, grpo_fields(model_dir, data, broken, resume=True, **fields)), loader=clip_loader(),
             progress=False)
    expected = {r["step"]: (r["loss"], r["reward"]) for r in _rows(straight)}
    assert {r["step"]: (r["loss"], r["reward"]) for r in _rows(broken)} == expected
    assert (broken / "completions.jsonl").read_text() == (straight / "completions.jsonl").read_text()
    a, b = _weights(straight), _weights(broken)
    assert all(torch.equal(a[k], b[k]) for k in a)
