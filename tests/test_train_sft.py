"""SFT trainer: CLI run and its outputs, learning, exact resume after SIGKILL, config errors."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _train_fixtures import clip_loader, kill_after, run_cli, sft_fields, shared_assets, write_config


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def _losses(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows}


def test_cli_run_writes_checkpoints_metrics_and_a_loadable_final_model(assets, tmp_path):
    from r1omni_fast.model import OmniModel

    model_dir, data = assets
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "sft.yaml", **sft_fields(
        model_dir, data, out, max_steps=4, save_steps=2, save_total_limit=1, eval_file=str(data.test),
        eval_steps=2, eval_max_new_tokens=8))
    result = run_cli(["train", "--config", str(cfg)])
    assert result.returncode == 0, result.stderr[-3000:]

    # checkpoints: only the newest (save_total_limit 1), complete, no temporary folder left
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-4"]
    ckpt = out / "checkpoint-4"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "optimizer.pt", "scheduler.pt",
                 "rng_state.pt", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["batches_done"] == 4

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["num_tokens"] > 0 for r in rows)
    evals = [r for r in rows if "eval/format_rate" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0.0 <= r["eval/format_rate"] <= 1.0 and r["eval/n"] == len(json.loads(Path(data.test).read_text())) for r in evals)
    assert (out / "sft_curves.png").stat().st_size > 0

    # the final model loads, equals the last checkpoint, and only the tunable parts moved
    final = OmniModel.from_pretrained(out)
    assert final.processor is not None
    final_w, ckpt_w, init_w = (load_file(p / "model.safetensors") for p in (out, ckpt, model_dir))
    assert final_w.keys() == init_w.keys()
    assert all(torch.equal(final_w[k], ckpt_w[k]) for k in final_w)
    moved = {k for k in final_w if not torch.equal(final_w[k], init_w[k])}
    assert any(k.startswith("model.layers.") for k in moved)
    assert any(k.startswith("model.mm_projector.") for k in moved)
    assert not any("vision_tower" in k or "audio_tower" in k or "bert" in k for k in moved)


def test_sft_loss_decreases_over_50_steps(assets, tmp_path):
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.train.sft import run_sft

    model_dir, data = assets
    cfg = SFTConfig(**{k: v for k, v in sft_fields(model_dir, data, tmp_path / "run", max_steps=50,
                                                    save_steps=50, lr_scheduler_type="constant",
                                                    per_device_train_batch_size=1,
                                                    tunable_parts=["mm_language_model"]).items()
                       if k != "stage"})
    out = run_sft(cfg, loader=clip_loader(), progress=False)
    losses = [loss for _, loss in sorted(_losses(out).items())]
    assert len(losses) == 50
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"SFT loss: first 5 steps {first:.3f}, last 5 steps {last:.3f}")
    assert last < 0.75 * first, (first, last)


def test_sigkill_then_resume_reproduces_the_straight_run(assets, tmp_path):
    model_dir, data = assets
    fields = dict(max_steps=5, save_steps=2, save_total_limit=2, warmup_ratio=0.2,
                  per_device_train_batch_size=1, gradient_accumulation_steps=2)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    cfg_a = write_config(tmp_path / "a.yaml", **sft_fields(model_dir, data, straight, **fields))
    cfg_b = write_config(tmp_path / "b.yaml", **sft_fields(model_dir, data, broken, **fields))
    result = run_cli(["train", "--config", str(cfg_a)])
    assert result.returncode == 0, result.stderr[-3000:]

    status = kill_after(["train", "--config", str(cfg_b)], broken / "checkpoint-2" / "trainer_state.json",
                        tmp_path / "broken.log")
    assert status == -signal.SIGKILL
    assert not (broken / "model.safetensors").exists()  # it did not finish
    done_before = max(_losses(broken))
    assert 2 <= done_before < 5

    result = run_cli(["train", "--config", str(cfg_b), "--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    expected, got = _losses(straight), _losses(broken)
    assert sorted(got) == list(range(1, 6))
    assert got == expected  # exact on CPU
    a, b = load_file(straight / "model.safetensors"), load_file(broken / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("flags, field", [
    (["--learning-rate", "fast"], "learning_rate"),
    (["--lr_scheduler_type", "cosinus"], "lr_scheduler_type"),
    (["--max-steps", "0"], "max_steps"),
    (["--warmup-ratio", "1.5"], "warmup_ratio"),
])
def test_bad_config_value_is_a_one_line_error_naming_the_field(assets, tmp_path, flags, field):
    model_dir, data = assets
    cfg = write_config(tmp_path / "sft.yaml", **sft_fields(model_dir, data, tmp_path / "run"))
    result = run_cli(["train", "--config", str(cfg), *flags], timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and field in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_yaml_value_and_missing_data_are_one_line_errors(assets, tmp_path):
    model_dir, data = assets
    bad = write_config(tmp_path / "bad.yaml", **sft_fields(model_dir, data, tmp_path / "run",
                                                          per_device_train_batch_size="two"))
    result = run_cli(["train", "--config", str(bad)], timeout=120)
    assert result.returncode == 2 and "per_device_train_batch_size" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    missing = write_config(tmp_path / "missing.yaml", **sft_fields(model_dir, data, tmp_path / "run",
                                                                  data_file=str(tmp_path / "nope.json")))
    result = run_cli(["train", "--config", str(missing)], timeout=300)
    assert result.returncode == 2 and "data_file" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
