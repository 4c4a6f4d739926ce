"""Training on 2 processes (CPU, gloo): DDP and FSDP2 against one process on the same global
batch (full weights and LoRA), sharded checkpoints resumed on 1 and 2 ranks, a failing rank ending
the job.

Every multi-process run is a real ``torchrun --standalone --nproc-per-node 2`` of the CLI (with
the test clip loader installed, see ``_train_fixtures``). Tolerances: fp32 on the CPU, where the
ranks sum the same terms in another order: losses agree to 1e-6 (relative), weights after 3
AdamW steps at lr 1e-3 to 2e-5 (absolute; measured 4.4e-6).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _train_fixtures import grpo_fields, sft_fields, shared_assets, write_config

pytestmark = pytest.mark.slow  # minute-plus: left out by scripts/test.sh --quick

TESTS = Path(__file__).resolve().parent
LAUNCHER = str(TESTS / "_train_fixtures.py")
LOSS_RTOL = 1e-6
SYNC = dict(sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=0.5)
LORA = dict(use_peft=True, lora_r=4, lora_dropout=0.0)
WEIGHT_ATOL = 2e-5


def _env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent / "python"), str(TESTS), env.get("PYTHONPATH", "")])
    return env


def torchrun(config: Path, *args: str, timeout: float = 300, module: bool = False) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 LAUNCHER train --config CONFIG ARGS``; the
    launcher is the tests' CLI (its clip loader installed) or, with ``module``, ``-m r1omni_fast``."""
    launcher = ["-m", "r1omni_fast"] if module else [LAUNCHER]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--max-restarts", "0", *launcher, "train", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def one_process(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, LAUNCHER, "train", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=300, env=_env())


def check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]


def metrics(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    model, data = shared_assets(tmp_path_factory)
    # 5 samples: with 2 per global batch the third batch holds 1, so rank 1 gets none (a ghost)
    sft5 = Path(data.sft).parent / "sft5.json"
    sft5.write_text(json.dumps(json.loads(Path(data.sft).read_text())[:5]))
    # 3 prompts: the second global batch of 2 holds 1 (a ghost on rank 1 again)
    train3 = Path(data.train).parent / "train3.json"
    train3.write_text(json.dumps(json.loads(Path(data.train).read_text())[:3]))
    return model, data, sft5, train3


# --------------------------------------------------------------------------- the data stream


def _stream(n: int, per_device: int, world: int, batches: int, start: int = 0) -> list:
    """For each global batch: (sample ids, stream positions) of every rank's real (non-ghost)
    samples, ranks in order."""
    from r1omni_fast.data import Batch
    from r1omni_fast.train.stream import BatchStream

    samples = list(range(n))
    streams = [BatchStream(samples, per_device, lambda s, i: Batch(i, list(s), None, None, None, None),
                           seed=3, samples_done=start, rank=r, world_size=world) for r in range(world)]
    out = []
    for _ in range(batches):
        shards = [s.next() for s in streams]
        assert len({s.global_size for s in shards}) == 1
        real = [s for s in shards if not s.ghost]
        assert all(len(s.batch) == 1 for s in shards if s.ghost)
        out.append(([i for s in real for i in s.batch.samples], [p for s in real for p in s.positions]))
    for s in streams:
        s.close()
    return out


@pytest.mark.parametrize("n,per_device,world", [(5, 1, 2), (5, 2, 2), (12, 1, 3), (7, 3, 2), (4, 2, 3)])
def test_rank_shards_cover_each_sample_once_per_epoch(n, per_device, world):
    from r1omni_fast.data import epoch_batches

    got = _stream(n, per_device, world, batches=2 * -(-n // (per_device * world)))
    single = [b for e in range(2) for b in epoch_batches(n, per_device * world, seed=3, epoch=e)]
    # the global batches are the one-process batches of size per_device * world, in order
    assert [ids for ids, _ in got] == single
    assert sorted(p for _, positions in got for p in positions) == list(range(2 * n))  # none dropped or repeated


def test_stream_resumes_at_another_rank_count():
    straight = [i for ids, _ in _stream(11, 2, 1, batches=8) for i in ids]
    first = [i for ids, _ in _stream(11, 1, 2, batches=3) for i in ids]  # 2 ranks x 1 = the same global batch
    rest = [i for ids, _ in _stream(11, 2, 1, batches=5, start=len(first)) for i in ids]
    assert first + rest == straight


# --------------------------------------------------------------------------- SFT


def _run_variants(root: Path, variants: list, make_fields) -> dict:
    """Run each ``(name, overrides)``: in one process when the name starts with "single", else on
    2 ranks. Returns ``{name: (output folder, config fields)}``."""
    runs = {}
    for name, over in variants:
        fields = make_fields(root / name, **over)
        config = write_config(root / f"{name}.yaml", **fields)
        check(one_process(config) if name.startswith("single") else torchrun(config))
        runs[name] = (root / name, fields)
    return runs


def _sft_run_fields(assets):
    """``fields(out, **over)`` of the SFT runs: 5 samples, 3 steps, checkpoints at 2 and 3."""
    model, data, sft5, _ = assets
    return lambda out, **over: sft_fields(model, data, out, data_file=str(sft5), max_steps=3, save_steps=2,
                                          save_total_limit=3, lr_scheduler_type="constant", warmup_ratio=0.0, **over)


def _grpo_run_fields(assets):
    """``fields(out, **over)`` of the GRPO runs: 3 prompts, per-prompt sampling, a checkpoint every step."""
    model, data, _, train3 = assets
    return lambda out, **over: grpo_fields(model, data, out, data_file=str(train3), per_prompt_sampling=True,
                                           save_steps=1, reward_funcs=["_train_fixtures.answer_length_reward",
                                                                       "format"], **over)


@pytest.fixture(scope="module")
def sft_runs(assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist-sft")
    variants = [("single", dict(per_device_train_batch_size=2)),
                ("ddp", dict(per_device_train_batch_size=1, parallelism="ddp")),
                ("fsdp", dict(per_device_train_batch_size=1, parallelism="fsdp")),
                ("single-ga", dict(per_device_train_batch_size=2, gradient_accumulation_steps=2)),
                ("fsdp-ga-ckpt", dict(per_device_train_batch_size=1, parallelism="fsdp",
                                      gradient_accumulation_steps=2, gradient_checkpointing=True))]
    return root, _run_variants(root, variants, _sft_run_fields(assets))


def test_ddp_sft_matches_one_process(sft_runs):
    _, runs = sft_runs
    single, ddp = metrics(runs["single"][0]), metrics(runs["ddp"][0])
    assert [m["step"] for m in ddp] == [1, 2, 3]
    for a, b in zip(single, ddp):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL)
        assert b["num_tokens"] == a["num_tokens"]  # the ranks' tokens add up to the global batch
    assert max_weight_difference(runs["single"][0], runs["ddp"][0]) < WEIGHT_ATOL


def test_fsdp_sft_matches_ddp(sft_runs):
    _, runs = sft_runs
    for a, b in zip(metrics(runs["ddp"][0]), metrics(runs["fsdp"][0])):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    assert max_weight_difference(runs["ddp"][0], runs["fsdp"][0]) < WEIGHT_ATOL


def test_fsdp_with_accumulation_and_activation_checkpointing_matches_one_process(sft_runs):
    """2 micro-batches per step (gradients reduced on the last only), the last one of the run a
    ghost on rank 1 (5 samples, 4 per step), activations recomputed in backward."""
    _, runs = sft_runs
    for a, b in zip(metrics(runs["single-ga"][0]), metrics(runs["fsdp-ga-ckpt"][0])):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL)
        assert b["num_tokens"] == a["num_tokens"]
    assert max_weight_difference(runs["single-ga"][0], runs["fsdp-ga-ckpt"][0]) < WEIGHT_ATOL


def test_sharded_checkpoint_holds_dcp_and_a_consolidated_model(sft_runs):
    from r1omni_fast.model import OmniModel

    _, runs = sft_runs
    ckpt = runs["fsdp"][0] / "checkpoint-3"
    assert (ckpt / "dcp" / ".metadata").is_file() and not (ckpt / "optimizer.pt").exists()
    assert json.loads((ckpt / "trainer_state.json").read_text())["world_size"] == 2
    model = OmniModel.from_pretrained(ckpt)  # one process, no process group
    final = load_file(str(runs["fsdp"][0] / "model.safetensors"))
    saved = model.checkpoint_state_dict()
    assert all(torch.equal(saved[k].cpu(), final[k]) for k in final)


@pytest.mark.parametrize("ranks", [1, 2])
def test_two_rank_checkpoint_resumes_with_the_same_next_step_loss(sft_runs, ranks):
    import shutil

    root, runs = sft_runs
    straight, fields = runs["fsdp"]
    out = root / f"resume-{ranks}"
    out.mkdir()
    shutil.copytree(straight / "checkpoint-2", out / "checkpoint-2")
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics(straight)[:2]))
    # the same global batch: 1 rank x 2 samples, or 2 ranks x 1
    over = dict(output_dir=str(out), per_device_train_batch_size=2 // ranks)
    config = write_config(root / f"resume-{ranks}.yaml", **dict(fields, **over))
    check(one_process(config, "--resume") if ranks == 1 else torchrun(config, "--resume", module=True))
    resumed, expected = metrics(out), metrics(straight)
    assert [m["step"] for m in resumed] == [1, 2, 3]
    assert resumed[2]["loss"] == pytest.approx(expected[2]["loss"], rel=LOSS_RTOL)
    assert max_weight_difference(out, straight) < 1e-6


# --------------------------------------------------------------------------- GRPO


@pytest.fixture(scope="module")
def grpo_runs(assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist-grpo")
    variants = [("single", dict(per_device_train_batch_size=2)),
                ("ddp", dict(per_device_train_batch_size=1, parallelism="ddp")),
                ("fsdp", dict(per_device_train_batch_size=1, parallelism="fsdp")),
                ("single-dapo", dict(per_device_train_batch_size=2, loss_type="dapo")),
                ("fsdp-towers-dapo", dict(per_device_train_batch_size=1, parallelism="fsdp",
                                          fsdp_shard_towers=True, loss_type="dapo")),
                ("single-sync", dict(per_device_train_batch_size=2, **SYNC)),
                ("fsdp-sync", dict(per_device_train_batch_size=1, parallelism="fsdp", **SYNC))]
    return _run_variants(root, variants, _grpo_run_fields(assets))


@pytest.mark.parametrize("name,reference", [("ddp", "single"), ("fsdp", "single"),
                                            ("fsdp-towers-dapo", "single-dapo"), ("fsdp-sync", "single-sync")])
def test_grpo_on_two_ranks_matches_one_process(grpo_runs, name, reference):
    """DDP, FSDP2, and FSDP2 with sharded towers (the reference holding its own sharded copy)
    under dapo's global token normalisation, against one process with the same global batch."""
    single, multi = grpo_runs[reference][0], grpo_runs[name][0]
    # per-prompt sampling: the same completions whatever the number of ranks
    assert (multi / "completions.jsonl").read_text() == (single / "completions.jsonl").read_text()
    a, b = metrics(single), metrics(multi)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        for key in ("loss", "reward", "reward_std", "kl", "completions/mean_length", "rewards/format/mean"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7), key
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-5)
    assert b[1]["kl"] > 0  # the policy moved: the comparison is not between two idle runs
    assert max_weight_difference(single, multi) < WEIGHT_ATOL


# --------------------------------------------------------------------------- failures


def test_a_failing_rank_ends_the_job_with_its_error(assets, tmp_path):
    model, data, _, _ = assets
    fields = grpo_fields(model, data, tmp_path / "out", per_device_train_batch_size=1, ddp_timeout=60,
                         reward_funcs=["_train_fixtures.reward_failing_on_rank_1"])
    config = write_config(tmp_path / "fail.yaml", **fields)
    t0 = time.monotonic()
    proc = torchrun(config, timeout=240, module=True)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 240
    assert "rank 1 gives up" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_a_launcher_the_collective_timeout_ends_the_surviving_rank(assets, tmp_path):
    """Ranks started by hand (no torchrun agent to stop them): rank 1 fails, rank 0 must not wait
    forever in its next collective."""
    model, data, _, _ = assets
    fields = grpo_fields(model, data, tmp_path / "out", per_device_train_batch_size=1, ddp_timeout=20,
                         reward_funcs=["_train_fixtures.reward_failing_on_rank_1"])
    config = write_config(tmp_path / "fail.yaml", **fields)
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, LAUNCHER, "train", "--config", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port))
             for r in range(2)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[1].returncode != 0 and "rank 1 gives up" in outs[1][1]
    assert procs[0].returncode != 0, outs[0][1][-3000:]


@pytest.mark.parametrize("name", ["fsdp", "fsdp-sync"])
def test_grpo_two_rank_checkpoint_resumes_in_one_process(grpo_runs, tmp_path, name):
    """Per-prompt sampling makes the resumed step sample the same completions on 1 rank; the
    synced reference (which sets step 2's KL) comes back from the sharded checkpoint."""
    straight, fields = grpo_runs[name]
    out = _resume_step_2_in_one_process(straight, fields, tmp_path)
    assert max_weight_difference(out, straight) < WEIGHT_ATOL


def _resume_step_2_in_one_process(straight: Path, fields: dict, tmp_path: Path) -> Path:
    """Resume the 2-rank GRPO run ``straight`` from its sharded checkpoint-1 in one process: the
    same completions and step-2 loss, reward and KL. Returns the resumed run's folder."""
    import shutil

    out = tmp_path / "resume"
    out.mkdir()
    shutil.copytree(straight / "checkpoint-1", out / "checkpoint-1")
    (out / "metrics.jsonl").write_text(json.dumps(metrics(straight)[0]) + "\n")
    rows = (straight / "completions.jsonl").read_text().splitlines(keepends=True)
    (out / "completions.jsonl").write_text("".join(r for r in rows if json.loads(r)["step"] == 1))
    fields = dict(fields, output_dir=str(out), per_device_train_batch_size=2,
                  per_prompt_sampling=None)  # None: taken from the checkpoint
    check(one_process(write_config(tmp_path / "resume.yaml", **fields), "--resume"))
    assert (out / "completions.jsonl").read_text() == (straight / "completions.jsonl").read_text()
    resumed, expected = metrics(out), metrics(straight)
    assert [m["step"] for m in resumed] == [1, 2]
    for key in ("loss", "reward", "kl"):
        assert resumed[1][key] == pytest.approx(expected[1][key], rel=1e-5, abs=1e-7), key
    return out


# --------------------------------------------------------------------------- LoRA


def max_adapter_difference(a: Path, b: Path) -> float:
    wa, wb = (load_file(str(p / "adapter_model.safetensors")) for p in (a, b))
    assert wa.keys() == wb.keys() and wa
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def lora_runs(assets, tmp_path_factory):
    """use_peft runs: ``{(stage, name): (output folder, fields)}``, one process and 2 ranks."""
    root = tmp_path_factory.mktemp("dist-lora")
    variants = [("single-lora", dict(per_device_train_batch_size=2, **LORA)),
                ("ddp-lora", dict(per_device_train_batch_size=1, parallelism="ddp", **LORA)),
                ("fsdp-lora", dict(per_device_train_batch_size=1, parallelism="fsdp", **LORA))]
    runs = {}
    for stage, make in (("sft", _sft_run_fields(assets)), ("grpo", _grpo_run_fields(assets))):
        (root / stage).mkdir()
        runs.update({(stage, k): v for k, v in _run_variants(root / stage, variants, make).items()})
    return runs


@pytest.mark.parametrize("stage,name", [("sft", "ddp-lora"), ("sft", "fsdp-lora"), ("grpo", "ddp-lora"),
                                        ("grpo", "fsdp-lora")])
def test_lora_on_two_ranks_matches_one_process(lora_runs, stage, name):
    """use_peft under DDP and FSDP2 (the adapters sharded with their decoder layers and gathered
    into adapter_model.safetensors; in GRPO the reference is the sharded policy with its adapters
    disabled) against one process on the same global batch."""
    single, multi = lora_runs[(stage, "single-lora")][0], lora_runs[(stage, name)][0]
    a, b = metrics(single), metrics(multi)
    assert len(a) == len(b) > 1
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=LOSS_RTOL, abs=1e-9)
        if stage == "grpo":
            # the same bound as the full-weight runs: float32 rounding of a KL near 2e-4
            assert y["kl"] == pytest.approx(x["kl"], rel=1e-5, abs=1e-7)
    if stage == "grpo":
        assert a[-1]["kl"] > 0  # the adapters moved the policy away from the reference
    assert not (multi / "model.safetensors").exists()
    assert max_adapter_difference(single, multi) < WEIGHT_ATOL
    assert max_adapter_difference(single, multi / f"checkpoint-{len(a)}") < WEIGHT_ATOL


def test_fsdp_lora_checkpoint_resumes_in_one_process(lora_runs, tmp_path):
    import shutil

    root = tmp_path
    straight, fields = lora_runs[("sft", "fsdp-lora")]
    ckpt = straight / "checkpoint-2"
    assert (ckpt / "dcp" / ".metadata").is_file() and (ckpt / "adapter_model.safetensors").is_file()
    out = root / "resume-lora"
    out.mkdir()
    shutil.copytree(ckpt, out / "checkpoint-2")
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics(straight)[:2]))
    config = write_config(root / "resume-lora.yaml", **dict(fields, output_dir=str(out), per_device_train_batch_size=2))
    check(one_process(config, "--resume"))
    resumed, expected = metrics(out), metrics(straight)
    assert resumed[2]["loss"] == pytest.approx(expected[2]["loss"], rel=LOSS_RTOL)
    assert max_adapter_difference(out, straight) < WEIGHT_ATOL


# --------------------------------------------------------------------------- loss weights


class _SummedOver:
    """A stand-in Dist of rank ``rank`` whose ``sum`` returns precomputed sums over the ranks."""

    def __init__(self, sums, world_size):
        self.sums, self.world_size, self.enabled = sums, world_size, True

    def sum(self, values):
        return list(self.sums)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_rank_weights_recombine_the_loss_of_the_global_batch(loss_type):
    """Ranks holding 4, 2 and 0 (a ghost) of 6 sequences with ragged lengths: the ranks' weighted
    losses, averaged as DDP/FSDP average gradients, equal one process's loss on all 6 (bnpo:
    the mean of the ranks' own token means, as TRL)."""
    from types import SimpleNamespace

    from r1omni_fast.kernels import grpo_loss
    from r1omni_fast.train.grpo.advantages import normalise_step

    g = torch.Generator().manual_seed(0)
    n, length, vocab, world = 6, 5, 11, 3
    logits = torch.randn(n, length, vocab, generator=g, dtype=torch.float64)
    ids = torch.randint(0, vocab, (n, length), generator=g)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    mask = torch.arange(length)[None] < torch.tensor([5, 1, 3, 4, 2, 5])[:, None]
    ref = torch.randn(n, length, generator=g, dtype=torch.float64) - 2.0

    def loss(rows, num_items=None):
        return grpo_loss(logits[rows].clone(), ids[rows], adv[rows], mask=mask[rows], ref_logp=ref[rows], beta=0.04,
                         loss_type=loss_type, max_completion_length=length, num_items_in_batch=num_items,
                         inplace_grad=False)[0]

    shares = [slice(0, 4), slice(4, 6), slice(0, 1)]  # the third rank is a ghost standing in with row 0
    ghosts = [False, False, True]
    rollouts = [SimpleNamespace(ghost=ghost, mask=mask[rows], loss_tokens=mask[rows], weight=1.0, num_items=None)
                for rows, ghost in zip(shares, ghosts)]
    sums = [sum(0 if r.ghost else r.mask.shape[0] for r in rollouts),
            sum(0 if r.ghost else int(r.mask.sum()) for r in rollouts), sum(0 if r.ghost else 1 for r in rollouts)]
    trainer = SimpleNamespace(dist=_SummedOver(sums, world), cfg=SimpleNamespace(loss_type=loss_type))
    combined = 0.0
    for rows, r in zip(shares, rollouts):
        normalise_step([r], loss_type=loss_type, scale_rewards="group", group_size=1, reward_weights=[1.0],
                       dist=trainer.dist)
        combined = combined + float(loss(rows, r.num_items)) * r.weight / world
    if loss_type == "bnpo":
        expected = (float(loss(shares[0])) + float(loss(shares[1]))) / 2
    else:
        expected = float(loss(slice(0, n)))
    assert combined == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- bad inputs


def test_world_size_without_a_rank_is_a_config_error(monkeypatch):
    from r1omni_fast.config import ConfigError, SFTConfig
    from r1omni_fast.train.distributed import from_environment

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 but RANK"):
        from_environment(SFTConfig())


@pytest.mark.parametrize("damage", ["metadata", "trainer_state"])
def test_a_damaged_sharded_checkpoint_is_an_error_naming_it(sft_runs, tmp_path, damage):
    import shutil

    _, runs = sft_runs
    straight, fields = runs["fsdp"]
    out = tmp_path / "out"
    shutil.copytree(straight / "checkpoint-2", out / "checkpoint-2")
    target = out / "checkpoint-2" / ("dcp/.metadata" if damage == "metadata" else "trainer_state.json")
    target.write_bytes(target.read_bytes()[:20])
    config = write_config(tmp_path / "resume.yaml", **dict(fields, output_dir=str(out), per_device_train_batch_size=2))
    proc = one_process(config, "--resume")
    assert proc.returncode != 0
    assert str(target if damage == "trainer_state" else target.parent) in proc.stderr
    assert "delete" in proc.stderr.splitlines()[-1]


# --------------------------------------------------------------------------- the Qwen backends
#: the Qwen thinker backends and their tiny checkpoint builders
QWEN_BACKENDS = {"qwen2_5_omni": "r1omni_fast.model.qwen_omni.tiny:build_tiny_qwen_checkpoint",
                 "qwen3_omni_moe": "r1omni_fast.model.qwen3_omni.tiny:build_tiny_qwen3_checkpoint"}


@pytest.fixture(scope="module", params=sorted(QWEN_BACKENDS))
def qwen_runs(request, assets, tmp_path_factory):
    """A tiny Qwen thinker (Qwen2.5-Omni; Qwen3-Omni's MoE thinker): SFT and GRPO (a checkpoint
    every step), one process against DDP and FSDP2 on 2 ranks."""
    import importlib

    module, name = QWEN_BACKENDS[request.param].split(":")
    build = getattr(importlib.import_module(module), name)
    _, data, sft5, train3 = assets
    root = tmp_path_factory.mktemp(f"dist-{request.param}")
    (root / "sft").mkdir()
    (root / "grpo").mkdir()
    model = Path(build(root / "tiny-qwen", seed=0))
    parts = dict(tunable_parts=["mm_language_model", "mm_mlp_adapter", "audio_projector"], num_frames=2)
    sft = lambda out, **over: sft_fields(model, data, out, data_file=str(sft5), max_steps=2, save_steps=2,  # noqa: E731
                                         lr_scheduler_type="constant", warmup_ratio=0.0, **dict(parts, **over))
    grpo = lambda out, **over: grpo_fields(model, data, out, data_file=str(train3), per_prompt_sampling=True,  # noqa: E731
                                           reward_funcs=["_train_fixtures.answer_length_reward", "format"],
                                           save_steps=1, **dict(parts, **over))
    variants = [("single", dict(per_device_train_batch_size=2)),
                ("ddp", dict(per_device_train_batch_size=1, parallelism="ddp")),
                ("fsdp", dict(per_device_train_batch_size=1, parallelism="fsdp"))]
    return {"sft": _run_variants(root / "sft", variants, sft), "grpo": _run_variants(root / "grpo", variants, grpo),
            "arch": request.param}


@pytest.mark.parametrize("stage,name", [("sft", "ddp"), ("sft", "fsdp"), ("grpo", "ddp"), ("grpo", "fsdp")])
def test_qwen_on_two_ranks_matches_one_process(qwen_runs, stage, name):
    runs = qwen_runs[stage]
    single, multi = runs["single"][0], runs[name][0]
    a, b = metrics(single), metrics(multi)
    assert [m["step"] for m in b] == [m["step"] for m in a] == [1, 2]
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-7)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-5)
    if stage == "grpo":
        assert (multi / "completions.jsonl").read_text() == (single / "completions.jsonl").read_text()
        assert b[1]["kl"] > 0
    # the all-reduce sums the gradient in another order; AdamW's normalised step amplifies that for
    # an element whose gradient nearly cancels (measured: one v_proj element 2.8 % of the update off),
    # so the weights are held to 5 % of the run's largest update (2 steps x lr 1e-3 = 2e-3)
    update = max_weight_difference(single, runs["single"][0].parent.parent / "tiny-qwen")
    assert update > 0 and max_weight_difference(single, multi) < 0.05 * update
    if qwen_runs["arch"] == "qwen3_omni_moe":  # the MoE thinker logs its routing on every rank count
        assert all(m["aux_loss"] > 0 and 1.0 <= m["expert_load_imbalance"] <= 4.0 for m in a + b)


def test_qwen_fsdp_grpo_checkpoint_resumes_in_one_process(qwen_runs, tmp_path):
    """The Qwen thinker's sharded GRPO checkpoint (FSDP2, 2 ranks) resumes in one process: the same
    completions and step-2 metrics; the weights within 5 % of the run's update (the all-reduce
    order, as above)."""
    straight, fields = qwen_runs["grpo"]["fsdp"]
    out = _resume_step_2_in_one_process(straight, fields, tmp_path)
    update = max_weight_difference(straight, straight.parent.parent / "tiny-qwen")
    assert update > 0 and max_weight_difference(out, straight) < 0.05 * update

