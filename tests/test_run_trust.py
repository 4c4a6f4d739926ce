"""Runs you can trust (docs/troubleshooting.md): nothing a resume, eval, predict or
merge reads is unpickled; a run owns its output_dir (lock, another run's files, the model folder,
an unwritable folder); --resume checks the run fingerprint and applies the fields it may change;
a damaged newest checkpoint falls back; the final export and merge are atomic and finish under a
signal; in-training evaluation builds eval's inputs, runs after the export and never ends a run."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _train_fixtures import clip_loader, grpo_fields, run_cli, sft_fields, shared_assets, write_config

from r1omni_fast.config import ConfigError, GRPOConfig, SFTConfig
from r1omni_fast.train import checkpoint as ckpt
from r1omni_fast.train import common, faults
from r1omni_fast.train.sft import run_sft


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def _cfg(fields, cls=SFTConfig):
    return cls(**{k: v for k, v in fields.items() if k != "stage"})


def _sft(assets, out, **over):
    model, data = assets
    fields = dict(max_steps=2, save_steps=1, save_total_limit=None)
    fields.update(over)
    return _cfg(sft_fields(model, data, out, **fields))


def _rows(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def two_checkpoints(assets, tmp_path_factory):
    """An SFT run of 2 steps with checkpoint-1 and checkpoint-2 (copy it before changing it)."""
    out = tmp_path_factory.mktemp("trust") / "run"
    run_sft(_sft(assets, out), loader=clip_loader(), progress=False)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


# ------------------------------------------------------------------------------ 1. no unpickling


class _Boom:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    """Replace ``path`` by a pickle that creates ``marker`` when loaded (a torch archive for .pt)."""
    if path.suffix in (".pt", ".bin"):
        torch.save({"state": _Boom(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Boom(marker)))


def _sharded(folder: Path, model_dir: Path) -> None:
    """A real ``dcp/`` of a tiny module beside the checkpoint's files, with its manifest."""
    import torch.distributed.checkpoint as dcp

    module = torch.nn.Linear(3, 2)
    dcp.save({"model": module.state_dict(), "step": 3}, checkpoint_id=str(folder / "dcp"), no_dist=True)
    ckpt.write_manifest(folder / "dcp")


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_the_dcp_reader_loads_this_projects_checkpoints_and_refuses_a_planted_pickle(tmp_path):
    import torch.distributed.checkpoint as dcp

    module = torch.nn.Linear(3, 2)
    dcp.save({"model": module.state_dict(), "meta": {"lr": 0.1, "betas": (0.9, 0.99)}},
             checkpoint_id=str(tmp_path / "dcp"), no_dist=True)
    with pytest.raises(ckpt.DamagedFileError, match="manifest"):  # not written by this project
        ckpt.safe_dcp_reader(tmp_path / "dcp")
    ckpt.write_manifest(tmp_path / "dcp")
    target = {"model": torch.nn.Linear(3, 2).state_dict(), "meta": {"lr": 0.0, "betas": (0.0, 0.0)}}
    reader, planner = ckpt.safe_dcp_reader(tmp_path / "dcp")
    dcp.load(target, storage_reader=reader, planner=planner, no_dist=True)
    assert torch.equal(target["model"]["weight"], module.weight.detach())
    assert target["meta"] == {"lr": 0.1, "betas": (0.9, 0.99)}

    marker = tmp_path / "ran"
    _plant(tmp_path / "dcp" / ".metadata", marker)
    ckpt.write_manifest(tmp_path / "dcp")  # a manifest that matches: the unpickler itself must refuse
    reader, planner = ckpt.safe_dcp_reader(tmp_path / "dcp")
    from torch.distributed.checkpoint.api import CheckpointException

    with pytest.raises(CheckpointException, match="names posix.system.*refused, nothing was run"):
        dcp.load(target, storage_reader=reader, planner=planner, no_dist=True)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
@pytest.mark.parametrize("name", ["dcp/.metadata", "optimizer.pt", "scheduler.pt", "rng_state.pt",
                                  "pytorch_model.bin"])
def test_a_pickle_planted_in_a_checkpoint_never_runs_on_resume(assets, two_checkpoints, tmp_path, name, caplog):
    out = _copy(two_checkpoints, tmp_path)
    newest = out / "checkpoint-2"
    marker = tmp_path / "ran"
    if name.startswith("dcp/"):
        _sharded(newest, assets[0])
        _plant(newest / name, marker)
        ckpt.write_manifest(newest / "dcp")  # even with a matching manifest
    else:
        _plant(newest / name, marker)
    cfg = _sft(assets, out, max_steps=3, resume=True)
    with caplog.at_level(logging.WARNING):
        try:
            run_sft(cfg, loader=clip_loader(), progress=False)
        except ckpt.ResumeError as exc:  # refused in one line, naming the file
            assert name.split("/")[-1] in str(exc) and "\n" not in str(exc)
    assert not marker.exists()


def test_eval_predict_and_merge_reads_never_unpickle(assets, tmp_path):
    """Every file of a model folder and of an adapter folder replaced, one at a time, by a pickle:
    loading (what eval, predict and merge do) fails or ignores it, and nothing runs."""
    from r1omni_fast.model import lora

    model_dir, _ = assets
    marker = tmp_path / "ran"
    files = sorted(p.relative_to(model_dir) for p in model_dir.rglob("*") if p.is_file())
    for rel in files + [Path("pytorch_model.bin")]:
        folder = tmp_path / "m"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(model_dir, folder)
        _plant(folder / rel, marker)
        try:
            lora.load_model(folder)
        except Exception:  # noqa: BLE001 -- any refusal will do; what matters is the marker
            pass
        assert not marker.exists(), rel
    with pytest.raises(lora.LoraError):
        lora.merge(folder, tmp_path / "merged")
    assert not marker.exists()


# ------------------------------------------------------------------------------ 2-3. output_dir


def _lock(out: Path, pid: int, host: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / ckpt.LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                  "started": "2024-01-01T00:00:00"}))


def test_a_live_lock_is_refused_naming_its_holder_and_a_dead_ones_is_taken_over(tmp_path, caplog):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path / "a", live.pid)
        with pytest.raises(ConfigError, match=f"in use by another run: pid {live.pid} on {socket.gethostname()}"):
            ckpt.RunLock(tmp_path / "a").acquire()
    finally:
        live.kill()
        live.wait()
    with caplog.at_level(logging.WARNING):
        lock = ckpt.RunLock(tmp_path / "a")
        lock.acquire()
    assert "taking over the lock" in caplog.text
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock.path.exists()
    _lock(tmp_path / "b", 1, host="another-host")
    with pytest.raises(ConfigError, match="another-host.*delete the lock file"):
        ckpt.RunLock(tmp_path / "b").acquire()


def test_a_second_live_run_in_the_same_folder_exits_2_naming_the_holder(assets, tmp_path):
    model, data = assets
    out = tmp_path / "run"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lock(out, live.pid)
        config = write_config(tmp_path / "c.yaml", **sft_fields(model, data, out, max_steps=1))
        proc = run_cli(["train", "--config", str(config)])
    finally:
        live.kill()
        live.wait()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"pid {live.pid}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "metrics.jsonl").exists()


def test_another_runs_folder_is_refused_and_overwrite_output_dir_clears_it(assets, two_checkpoints, tmp_path):
    out = _copy(two_checkpoints, tmp_path)
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-12")  # the other run got further
    with pytest.raises(ConfigError, match="holds another run .*--resume.*overwrite_output_dir"):
        run_sft(_sft(assets, out, max_steps=1), loader=clip_loader(), progress=False)
    assert (out / "checkpoint-12").is_dir()  # nothing removed
    run_sft(_sft(assets, out, max_steps=1, overwrite_output_dir=True), loader=clip_loader(), progress=False)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert [r["step"] for r in _rows(out)] == [1]
    assert not (out / ckpt.LOCK_FILE).exists()  # released at the end


def test_output_dir_in_the_model_folder_or_unwritable_is_refused_before_step_1(assets, tmp_path):
    model, data = assets
    for use_peft in (False, True):
        for out in (model, model / "sub"):
            with pytest.raises(ConfigError, match="model folder"):
                run_sft(_sft(assets, out, use_peft=use_peft), loader=clip_loader(), progress=False)
    assert not (model / "sub").exists() and not (model / "metrics.jsonl").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="output_dir: cannot create"):
        run_sft(_sft(assets, tmp_path / "file" / "out"), loader=clip_loader(), progress=False)
    readonly = Path("/sys/kernel")  # refuses writes even to root
    if not readonly.is_dir() or os.access(readonly, os.W_OK) and _writable(readonly):
        pytest.skip("no read-only folder on this machine")
    with pytest.raises(ConfigError, match="is not writable"):
        run_sft(_sft(assets, readonly), loader=clip_loader(), progress=False)


def test_an_adapters_base_folder_is_protected_and_an_adapter_cycle_is_one_error(assets, tmp_path):
    """model_name_or_path = a LoRA run's output: its base model folder (and anything inside it)
    is refused as output_dir, as the adapter folder itself is; adapters naming each other as
    base are one error naming the cycle (train, predict's loader), never a RecursionError."""
    from r1omni_fast.model import lora

    adapter = tmp_path / "lora"
    run_sft(_sft(assets, adapter, max_steps=1, use_peft=True, lora_r=2, lora_alpha=4), loader=clip_loader(),
            progress=False)
    base = Path(lora.base_model_path(adapter))
    before = sorted((p.name, p.stat().st_size) for p in base.iterdir())
    for out in (base, base / "sub"):
        with pytest.raises(ConfigError, match="base model folder of the adapter model_name_or_path"):
            run_sft(_sft(assets, out, model_name_or_path=str(adapter), use_peft=True), loader=clip_loader(),
                    progress=False)
    assert sorted((p.name, p.stat().st_size) for p in base.iterdir()) == before
    assert lora.adapter_chain(adapter) == [adapter.resolve(), base.resolve()]

    loop = tmp_path / "loop"
    shutil.copytree(adapter, loop, ignore=shutil.ignore_patterns("checkpoint-*"))
    config = json.loads((loop / lora.ADAPTER_CONFIG).read_text())
    config["base_model_name_or_path"] = str(loop)
    (loop / lora.ADAPTER_CONFIG).write_text(json.dumps(config))
    with pytest.raises(lora.LoraError, match="form a cycle"):
        lora.load_model(loop)
    with pytest.raises(ConfigError, match="model_name_or_path: .*form a cycle"):
        run_sft(_sft(assets, tmp_path / "out", model_name_or_path=str(loop), use_peft=True), loader=clip_loader(),
                progress=False)
    proc = run_cli(["predict", str(tmp_path / "x.mp4"), "--model", str(loop)])
    assert proc.returncode == 2 and "form a cycle" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_run_refused_for_its_model_leaves_no_empty_output_dir(assets, tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(ConfigError, match="model_name_or_path"):
        run_sft(_sft(assets, out, model_name_or_path=str(tmp_path / "missing")), loader=clip_loader(),
                progress=False)
    assert not (tmp_path / "new").exists()
    # refused by the pre-flight decode (no clip loads): no run_config.yaml, metrics.jsonl or folder left
    model, data = assets
    source = Path(sft_fields(model, data, tmp_path)["data_file"])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    records = [dict(r, video=str(garbage)) for r in json.loads(source.read_text())]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    with pytest.raises(ConfigError, match="none of the .* clips decoded before step 1"):
        run_sft(_sft(assets, out, data_file=str(bad)), loader=None, progress=False)
    assert not (tmp_path / "new").exists()


def _writable(folder: Path) -> bool:
    try:
        (folder / ".r1omni-probe").write_text("")
    except OSError:
        return False
    (folder / ".r1omni-probe").unlink()
    return True


# ------------------------------------------------------------------------------ 4. fingerprint


def test_extending_max_steps_recomputes_the_schedule_and_never_reaches_0_early(assets, tmp_path):
    """The documented example (docs/training.md): 3 steps, then --max-steps 6 --resume, linear schedule, no warm-up:
    steps 4-6 run at the 6-step schedule's rates (learning_rate * (1 - s/6) for s = 3, 4, 5)."""
    out = tmp_path / "run"
    over = dict(lr_scheduler_type="linear", warmup_ratio=0.0, save_steps=3)
    run_sft(_sft(assets, out, max_steps=3, **over), loader=clip_loader(), progress=False)
    run_sft(_sft(assets, out, max_steps=6, resume=True, **over), loader=clip_loader(), progress=False)
    lrs = [r["learning_rate"] for r in _rows(out)]
    assert lrs == pytest.approx([1e-3, 1e-3 * 2 / 3, 1e-3 / 3, 1e-3 / 2, 1e-3 / 3, 1e-3 / 6])
    assert min(lrs) > 0


@pytest.mark.parametrize("change,match", [
    (dict(tunable_parts=["mm_language_model"]), "tunable_parts was"),
    (dict(use_peft=True), "use_peft"),
    (dict(seed=7), "seed was 0"),
])
def test_resume_refuses_a_changed_identity_field_naming_it(assets, two_checkpoints, tmp_path, change, match):
    out = _copy(two_checkpoints, tmp_path)
    with pytest.raises((ckpt.ResumeError, ConfigError), match=match):
        run_sft(_sft(assets, out, max_steps=3, resume=True, **change), loader=clip_loader(), progress=False)
    assert [r["step"] for r in _rows(out)] == [1, 2]


def test_resume_refuses_a_data_file_changed_in_place(assets, tmp_path):
    """Same data_file path, other contents (records added, removed or reordered): the saved data
    position no longer holds, so --resume refuses naming the file; the unchanged file resumes."""
    model, data = assets
    source = Path(sft_fields(model, data, tmp_path)["data_file"])
    mine = source.with_name(f"changed-{tmp_path.name}.json")
    records = json.loads(source.read_text())
    mine.write_text(json.dumps(records))
    out = tmp_path / "run"
    run_sft(_sft(assets, out, data_file=str(mine)), loader=clip_loader(), progress=False)
    mine.write_text(json.dumps(records[::-1]))
    with pytest.raises(ckpt.ResumeError, match=f"data_file {mine} changed since .*checkpoint-2"):
        run_sft(_sft(assets, out, max_steps=3, resume=True, data_file=str(mine)), loader=clip_loader(), progress=False)
    assert [r["step"] for r in _rows(out)] == [1, 2]
    mine.write_text(json.dumps(records))
    run_sft(_sft(assets, out, max_steps=3, resume=True, data_file=str(mine)), loader=clip_loader(), progress=False)
    assert [r["step"] for r in _rows(out)] == [1, 2, 3]


def test_resume_refuses_another_stage_or_model_naming_both(assets, two_checkpoints, tmp_path):
    from r1omni_fast.train.grpo import run_grpo

    model, data = assets
    out = _copy(two_checkpoints, tmp_path)
    grpo = _cfg(grpo_fields(model, data, out, max_steps=3, resume=True), GRPOConfig)
    with pytest.raises(ckpt.ResumeError, match="a sft run, this config is stage grpo"):
        run_grpo(grpo, loader=clip_loader(), progress=False)
    other = tmp_path / "other-model"
    shutil.copytree(model, other)
    # another model: same path, other weights; another path, other weights
    from safetensors.torch import load_file, save_file

    weights = {k: v + 1 for k, v in load_file(str(other / "model.safetensors")).items()}
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    cfg = _sft(assets, out, max_steps=3, resume=True)
    cfg.model_name_or_path = str(other)
    with pytest.raises(ckpt.ResumeError, match=f"trained from {model}, this config starts from {other}"):
        run_sft(cfg, loader=clip_loader(), progress=False)


def test_a_changed_learning_rate_and_weight_decay_are_written_into_the_resumed_optimizer(assets, two_checkpoints,
                                                                                         tmp_path, caplog):
    out = _copy(two_checkpoints, tmp_path)
    cfg = _sft(assets, out, max_steps=2, resume=True, learning_rate=5e-4, weight_decay=0.1)
    with caplog.at_level(logging.WARNING):
        folder = common.find_resume(cfg)
    assert "learning_rate 0.001 -> 0.0005" in caplog.text and "weight_decay 0.0 -> 0.1" in caplog.text
    model = common.load_policy(folder, cfg, torch.device("cpu"))
    optimizer = common.build_optimizer(model, cfg)
    from r1omni_fast.train.schedule import build_scheduler

    scheduler = build_scheduler(optimizer, cfg.lr_scheduler_type, cfg.warmup_ratio, 2)
    common.restore(folder, optimizer, scheduler, model, cfg=cfg)
    group = optimizer.param_groups[0]
    lam = scheduler.lr_lambdas[0](2)
    assert group["weight_decay"] == 0.1 and group["initial_lr"] == 5e-4
    assert group["lr"] == scheduler.get_last_lr()[0] == 5e-4 * lam


# ------------------------------------------------------------------------------ 5. damage


def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize("name,keep", [("model.safetensors", 0.5), ("model.safetensors", 0.0),
                                       ("optimizer.pt", 0.5), ("scheduler.pt", 0.5), ("rng_state.pt", 0.5),
                                       ("tokenizer.json", 0.5)])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before_naming_the_file(
        assets, two_checkpoints, tmp_path, caplog, name, keep):
    out = _copy(two_checkpoints, tmp_path)
    _cut(out / "checkpoint-2" / name, keep)
    with caplog.at_level(logging.WARNING):
        folder = common.find_resume(_sft(assets, out, max_steps=3, resume=True))
    assert folder == out / "checkpoint-1"
    assert str(out / "checkpoint-2" / name) in caplog.text and "falling back to" in caplog.text


def test_resume_after_a_cut_model_continues_from_the_checkpoint_before(assets, two_checkpoints, tmp_path):
    out = _copy(two_checkpoints, tmp_path)
    _cut(out / "checkpoint-2" / "model.safetensors")
    run_sft(_sft(assets, out, max_steps=2, resume=True), loader=clip_loader(), progress=False)
    straight = _rows(two_checkpoints)
    assert [r["step"] for r in _rows(out)] == [1, 2]
    assert _rows(out)[1]["loss"] == straight[1]["loss"]  # step 2 ran again, exactly
    ckpt.check_folder(out / "checkpoint-2")  # rewritten whole


def test_a_damaged_model_folder_is_one_error_naming_the_file(assets, tmp_path):
    """What eval and predict can call before loading (a CheckpointError, a ValueError)."""
    from r1omni_fast.model import CheckpointError

    folder = tmp_path / "m"
    shutil.copytree(assets[0], folder)
    ckpt.check_folder(folder)
    _cut(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{folder / 'model.safetensors'} is damaged"):
        ckpt.check_folder(folder)


# ------------------------------------------------------------------------------ 6. export, merge


def test_sigterm_during_the_export_finishes_it_then_exits_75(assets, tmp_path, monkeypatch):
    from r1omni_fast.train import distributed

    real = distributed.export_model

    def export_with_a_signal(model, folder, d):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the files are written
        real(model, folder, d)

    monkeypatch.setattr(distributed, "export_model", export_with_a_signal)
    out = tmp_path / "run"
    with pytest.raises(faults.Preempted) as info:
        run_sft(_sft(assets, out, max_steps=1), loader=clip_loader(), progress=False)
    assert info.value.exit_status == faults.EXIT_PREEMPTED and "final model was written" in str(info.value)
    ckpt.check_folder(out)
    from safetensors.torch import load_file

    assert load_file(str(out / "model.safetensors")).keys() == load_file(
        str(out / "checkpoint-1" / "model.safetensors")).keys()
    assert not list(out.glob(".tmp-*"))


def test_an_export_that_fails_leaves_the_previous_model_and_a_full_disk_is_one_line(assets, tmp_path, monkeypatch):
    import errno

    from r1omni_fast.train import distributed

    out = tmp_path / "run"
    run_sft(_sft(assets, out, max_steps=1), loader=clip_loader(), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")}
    real = distributed.export_model

    def half_then_full(model, folder, d):
        real(model, folder, d)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(distributed, "export_model", half_then_full)
    with pytest.raises(ckpt.CheckpointWriteError, match="no space left on .* final model .*checkpoint-2 is intact"):
        run_sft(_sft(assets, out, max_steps=2, resume=True), loader=clip_loader(), progress=False)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")}
    assert after == before and not list(out.glob(".tmp-*"))


def test_merge_refuses_its_own_inputs_and_writes_atomically(assets, tmp_path, monkeypatch):
    from r1omni_fast.model import lora

    out = tmp_path / "lora"
    run_sft(_sft(assets, out, max_steps=1, use_peft=True, lora_r=2, lora_alpha=4), loader=clip_loader(),
            progress=False)
    base = lora.base_model_path(out)
    for target in (out, base):
        with pytest.raises(lora.LoraError, match="would overwrite what the merge reads"):
            lora.merge(out, target)
    merged = tmp_path / "merged"
    lora.merge(out, merged)
    before = {p.name: p.read_bytes() for p in merged.rglob("*") if p.is_file()}

    def fail_midway(self, folder, *args, **kwargs):
        (Path(folder) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    model_cls = type(lora.load_model(base))
    monkeypatch.setattr(model_cls, "save_pretrained", fail_midway)
    with pytest.raises(KeyboardInterrupt):
        lora.merge(out, merged)
    assert {p.name: p.read_bytes() for p in merged.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# ------------------------------------------------------------------------------ 34.2 evaluation


def _audio_less_eval_file(root: Path, data) -> Path:
    """An eval file with a normal record and one asking for audio (``<audio>``) from a clip that
    has no audio track."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _media_fixtures import ClipSpec, write_clip

    clip = write_clip(ClipSpec("noaudio", 64, 48, 6, gop=3), root)
    records = json.loads(Path(data.test).read_text())[:1]
    for r in records:
        r["video"] = str(Path(data.test).parent / r["video"])
    records.append({"id": "no-audio-track", "video": str(clip), "conversations": [
        {"from": "human", "value": "<video>\n<audio>\nWhat emotion is shown?"},
        {"from": "gpt", "value": "<answer>happy</answer>"}]})
    path = root / "eval.json"
    path.write_text(json.dumps(records))
    return path


def test_qwen_in_training_eval_skips_a_record_its_clip_cannot_serve_as_eval_does(assets, tmp_path, caplog):
    """A record asking for audio its clip lacks: skipped and named in a warning, the run goes on
    (a video-only record is evaluated: tests/test_eval_record_modalities.py)."""
    from r1omni_fast.model.qwen_omni.tiny import build_tiny_qwen_checkpoint

    _, data = assets
    qwen = Path(build_tiny_qwen_checkpoint(tmp_path / "qwen", seed=0))
    eval_file = _audio_less_eval_file(tmp_path, data)
    fields = sft_fields(qwen, data, tmp_path / "run", max_steps=1, num_frames=2, eval_file=str(eval_file),
                        eval_max_new_tokens=2, tunable_parts=["mm_language_model"])
    with caplog.at_level(logging.WARNING):
        run_sft(_cfg(fields), progress=False)  # the Qwen loader
    row = _rows(tmp_path / "run")[-1]
    assert row["eval/n"] == 1 and "eval/error" not in row
    assert "no-audio-track" in caplog.text and "skipped" in caplog.text
    ckpt.check_folder(tmp_path / "run")


def test_the_final_model_is_written_before_the_final_eval_and_a_failing_eval_loses_nothing(assets, tmp_path,
                                                                                        monkeypatch, caplog):
    from r1omni_fast.eval import runner

    _, data = assets
    out = tmp_path / "run"
    seen = []

    def failing(*args, **kwargs):
        seen.append((out / "config.json").is_file() and (out / "model.safetensors").is_file())
        raise ValueError("row 0: the instruction holds <audio> but its clip has no audio")

    monkeypatch.setattr(runner, "generate_answers", failing)
    with caplog.at_level(logging.WARNING):
        run_sft(_sft(assets, out, max_steps=2, eval_file=str(data.test), eval_steps=1, eval_max_new_tokens=2),
                loader=clip_loader(), progress=False)
    assert seen == [False, True]  # step 1's evaluation ran mid-run; the final one after the export
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all("ValueError: row 0" in r["eval/error"] for r in rows)
    assert "the evaluation of" in caplog.text
    ckpt.check_folder(out)
    ckpt.check_folder(out / "checkpoint-2")
