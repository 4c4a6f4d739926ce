"""LoRA through peft (``use_peft``): TRL's field names and their errors, which modules get adapters
and which train in full, the GRPO reference as the adapter-disabled policy (the base model's
log-probs, one copy of the weights), adapter checkpoints with exact resume, ``merge`` (merged
logits = adapter logits), SFT and GRPO through the CLI, and DDP / FSDP2 on 2 CPU ranks.

Tolerances: fp32 on the CPU. The adapter-disabled reference runs the very same operations as the
base model: equal bit for bit. Merging adds ``B @ A * scale`` into each weight, which rounds
differently from adding the adapter's output: logits within 1e-5. Ranks: as in
test_train_distributed (losses 1e-6 relative, weights 2e-5 absolute).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _train_fixtures import clip_loader, grpo_fields, grpo_trainer, run_cli, sft_fields, shared_assets, write_config

LENGTH_REWARD = "_train_fixtures.answer_length_reward"
LOSS_RTOL = 1e-6
WEIGHT_ATOL = 2e-5


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def _metrics(out: Path) -> list:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _policy(model_dir, **over):
    """The training policy of an SFT config with ``over`` (use_peft on unless given)."""
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.train.common import load_policy

    fields = dict(model_name_or_path=str(model_dir), num_frames=1, use_peft=True)
    fields.update(over)
    cfg = SFTConfig(**fields)
    return load_policy(cfg.model_name_or_path, cfg, torch.device("cpu")), cfg


def _perturb_adapter(model, seed=0):
    """Move every adapter and module-to-save copy away from its initial value (LoRA's B starts at 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


def _one_frame(model):
    """``model`` set up for the 1-frame clips of these tests (as ``load_policy`` does)."""
    model.config.num_frames = 1
    model.processor.num_video_tokens = model.config.num_video_tokens(1)
    return model


def _batch_inputs(model, data, n=2):
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.data import read_data
    from r1omni_fast.train.common import make_collator, model_batch

    samples = read_data(data.sft, labels=None, kind="sft").samples[:n]
    cfg = SFTConfig(num_frames=1)
    batch = make_collator(cfg, model, clip_loader())(samples, 0)
    return model_batch(model.processor, batch, [s.target for s in batch.samples], padding_side="right")


# --------------------------------------------------------------------------------- config


def test_fields_have_trls_names_and_defaults():
    from r1omni_fast.config import GRPOConfig, SFTConfig

    for cls in (SFTConfig, GRPOConfig):
        cfg = cls()
        assert (cfg.use_peft, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules,
                cfg.lora_modules_to_save) == (False, 16, 32, 0.05, None, None)
    cfg = SFTConfig(use_peft="true", lora_target_modules="all-linear", lora_modules_to_save="lm_head")
    assert cfg.use_peft and cfg.lora_target_modules == ["all-linear"] and cfg.lora_modules_to_save == ["lm_head"]
    assert SFTConfig(lora_target_modules="q_proj, v_proj").lora_target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("stage,over,field", [
    ("sft", dict(lora_r=0), "lora_r"),
    ("grpo", dict(lora_alpha=0), "lora_alpha"),
    ("sft", dict(lora_dropout=1.0), "lora_dropout"),
    ("sft", dict(lora_dropout=-0.1), "lora_dropout"),
    ("sft", dict(lora_target_modules=[]), "lora_target_modules"),
    ("grpo", dict(lora_target_modules=["all-linear", "q_proj"]), "lora_target_modules"),
    ("sft", dict(lora_modules_to_save=[""]), "lora_modules_to_save"),
    ("grpo", dict(use_peft=True, sync_ref_model=True), "sync_ref_model"),
    ("sft", dict(lora_r="x"), "lora_r"),
])
def test_bad_fields_are_errors_naming_the_field(stage, over, field):
    from r1omni_fast.config import STAGES, ConfigError

    with pytest.raises(ConfigError, match=field):
        STAGES[stage](**over)


def test_sync_ref_model_is_allowed_with_beta_zero():
    from r1omni_fast.config import GRPOConfig

    assert GRPOConfig(use_peft=True, sync_ref_model=True, beta=0.0).use_peft


# ------------------------------------------------------------------------------ targets


def test_default_targets_are_the_llms_projections_only(assets):
    from r1omni_fast.model.lora import DEFAULT_TARGET_MODULES, peft_model

    model_dir, _ = assets
    model, _ = _policy(model_dir)
    adapted = sorted(n[:-len(".lora_A.default.weight")] for n, _ in model.named_parameters()
                     if n.endswith(".lora_A.default.weight"))
    layers = len(model.llm.model.layers)
    assert len(adapted) == layers * len(DEFAULT_TARGET_MODULES)
    assert all(n.startswith("llm.model.layers.") and n.rsplit(".", 1)[-1] in DEFAULT_TARGET_MODULES for n in adapted)
    # the towers have q_proj / k_proj / v_proj too: untouched
    assert not any("lora_" in n for n, _ in model.vision_tower.named_parameters())
    assert not any("lora_" in n for n, _ in model.audio_tower.named_parameters())
    # the trainable parameters: the adapters and the copies of the projectors (default tunable_parts)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".lora_" in n or ".modules_to_save.default." in n for n in trainable)
    assert {n.split(".", 1)[0] for n in trainable if ".modules_to_save." in n} == {"mm_projector", "audio_projector"}
    assert peft_model(model).peft_config["default"].r == 16
    # at initialisation (B = 0) the policy computes as the base model
    from r1omni_fast.model import OmniModel

    base = OmniModel.from_pretrained(model_dir)
    inputs = _batch_inputs(model, assets[1])
    model.eval()
    assert torch.equal(model(**inputs).logits, base(**inputs).logits)


def test_all_linear_lists_and_full_paths(assets):
    model_dir, _ = assets

    def adapted(**over):
        model, _ = _policy(model_dir, **over)
        return {n[:-len(".lora_A.default.weight")] for n, _ in model.named_parameters()
                if n.endswith(".lora_A.default.weight")}

    linear = adapted(lora_target_modules=["all-linear"])
    assert "llm.lm_head" not in linear and all(n.startswith("llm.") for n in linear)
    assert linear == adapted()  # the tiny LLM's linear layers are exactly its projections
    assert adapted(lora_target_modules=["self_attn.q_proj", "v_proj"]) == {
        f"llm.model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")}
    tower = "vision_tower.encoder.layers.0.self_attn.q_proj"
    assert adapted(lora_target_modules=["q_proj", tower]) == {
        tower, "llm.model.layers.0.self_attn.q_proj", "llm.model.layers.1.self_attn.q_proj"}
    # tunable_parts without projectors: only the adapters train; lora_modules_to_save adds lm_head
    model, _ = _policy(model_dir, tunable_parts=["mm_language_model"], lora_modules_to_save=["lm_head"])
    saved = {n.split(".modules_to_save.")[0] for n, p in model.named_parameters() if p.requires_grad
             and ".modules_to_save." in n}
    assert saved == {"llm.lm_head"}


def test_activation_checkpointing_gives_the_same_adapter_gradients(assets):
    model_dir, data = assets
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same initial adapters
        model, _ = _policy(model_dir, gradient_checkpointing=checkpointing, lora_dropout=0.0)
        _perturb_adapter(model)  # B != 0: every adapter gets a gradient
        model.train()
        model(**_batch_inputs(model, data)).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    assert all(grads[0][n] is not None and torch.allclose(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7)
               for n in grads[0])


@pytest.mark.parametrize("over,message", [
    (dict(lora_target_modules=["qkv"]), "lora_target_modules: 'qkv' matches no"),
    (dict(lora_modules_to_save=["nowhere"]), "lora_modules_to_save: 'nowhere' names no module"),
    (dict(lora_target_modules=["mm_projector.readout_video.0"]), "also hold LoRA targets"),
])
def test_settings_that_match_nothing_are_config_errors(assets, over, message):
    from r1omni_fast.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _policy(assets[0], **over)


class _Block(torch.nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.self_attn = torch.nn.Module()
        self.self_attn.q_proj, self.self_attn.v_proj = torch.nn.Linear(d, d), torch.nn.Linear(d, d)
        self.mlp = torch.nn.Module()
        self.mlp.gate_proj, self.mlp.down_proj = torch.nn.Linear(d, d), torch.nn.Linear(d, d)

    def forward(self, x):
        x = x + self.self_attn.v_proj(self.self_attn.q_proj(x))
        return x + self.mlp.down_proj(torch.relu(self.mlp.gate_proj(x)))


class _ThinkerLikePolicy(torch.nn.Module):
    """A policy holding its LLM one level down, beside a tower whose MLP names match the LLM's
    (as a Qwen omni thinker's vision tower does); it names its LLM with LORA_LANGUAGE_MODEL."""

    LORA_LANGUAGE_MODEL = ("thinker.model", "thinker.lm_head")

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.thinker = torch.nn.Module()
        self.thinker.visual = _Block()
        self.thinker.model = torch.nn.ModuleList([_Block(), _Block()])
        self.thinker.lm_head = torch.nn.Linear(8, 5)

    def get_output_embeddings(self):
        return self.thinker.lm_head

    def forward(self, x):
        x = self.thinker.visual(x)
        for block in self.thinker.model:
            x = block(x)
        return self.thinker.lm_head(x)


def test_any_policy_module_names_its_llm_with_the_hook():
    from types import SimpleNamespace

    from r1omni_fast.model.lora import AdapterDisabled, apply_lora, merged, modules_to_save, target_module_names

    policy = _ThinkerLikePolicy()
    policy.requires_grad_(False)
    policy.thinker.visual.requires_grad_(True)  # what a backend's set_trainable_parts left trainable
    assert target_module_names(policy, None) == [f"thinker.model.{i}.{p}" for i in range(2) for p in
                                                 ("self_attn.q_proj", "self_attn.v_proj", "mlp.gate_proj",
                                                  "mlp.down_proj")]
    assert "thinker.lm_head" not in target_module_names(policy, ["all-linear"])
    assert modules_to_save(policy) == ["thinker.visual"]
    x = torch.randn(3, 8)
    base = policy(x)
    cfg = SimpleNamespace(lora_r=2, lora_alpha=4, lora_dropout=0.0, lora_target_modules=None, lora_modules_to_save=None)
    apply_lora(policy, cfg)
    assert not any("lora_" in n for n, _ in policy.thinker.visual.named_parameters())
    _perturb_adapter(policy)
    ref = AdapterDisabled(policy)
    with torch.no_grad():
        assert torch.equal(ref(x), base) and not torch.allclose(policy(x), base)
        adapted = policy(x)
        assert torch.allclose(merged(policy)(x), adapted, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- GRPO reference


def test_grpo_reference_is_the_base_model_with_one_copy_of_the_weights(assets, tmp_path):
    from r1omni_fast.model import OmniModel
    from r1omni_fast.model.lora import AdapterDisabled

    model_dir, data = assets
    trainer = grpo_trainer(model_dir, data, tmp_path / "run", use_peft=True, beta=0.04,
                           tunable_parts=["mm_language_model", "mm_mlp_adapter", "audio_projector"])
    assert isinstance(trainer.ref, AdapterDisabled)
    _perturb_adapter(trainer.model)
    rollout = trainer.make_rollout(trainer.collate(trainer.train_data.samples[:2]))
    base = _one_frame(OmniModel.from_pretrained(model_dir))
    expected = trainer.sequence_logprobs(base, rollout)
    assert torch.equal(rollout.ref_logp, expected)  # the base model's, bit for bit
    policy = trainer.sequence_logprobs(trainer.model, rollout)
    assert (policy - expected).abs().max() > 1e-3  # the adapters do change the policy
    assert all(p.requires_grad for p in trainer.params)  # the reference pass left the adapters trainable
    loss, metrics = trainer.policy_loss(rollout)
    assert float(metrics["kl"]) > 0

    # memory: one copy of the base weights, plus the adapters and the projector copies
    def storages(module):
        return {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in module.parameters()}

    policy_bytes, ref_bytes = storages(trainer.model), storages(trainer.ref)
    assert set(ref_bytes) <= set(policy_bytes)  # the reference owns no weight
    base_bytes = sum(storages(base).values())
    extra = sum(p.numel() * p.element_size() for p in trainer.params)
    assert sum(policy_bytes.values()) == base_bytes + extra
    saved_copies = sum(p.numel() for n, p in trainer.model.named_parameters() if ".modules_to_save." in n)
    assert saved_copies == sum(p.numel() for m in (base.mm_projector, base.audio_projector) for p in m.parameters())


# ----------------------------------------------------------------- save, load, merge


def test_adapter_folder_merge_and_eval_loading(assets, tmp_path):
    from r1omni_fast.eval.runner import load_model
    from r1omni_fast.model import OmniModel
    from r1omni_fast.model.lora import merge, save_adapter

    model_dir, data = assets
    model, _ = _policy(model_dir)
    _perturb_adapter(model)
    folder = tmp_path / "adapter"
    save_adapter(model, folder)
    assert {p.name for p in folder.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"}
    assert not (folder / "model.safetensors").exists()
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(model_dir).resolve())
    saved = load_file(str(folder / "adapter_model.safetensors"))
    prefix = "base_model.model."  # peft's names
    assert saved and all(k.startswith(prefix) for k in saved)
    assert all(".lora_" in k or k[len(prefix):].startswith(("mm_projector.", "audio_projector.")) for k in saved)

    model.eval()
    inputs = _batch_inputs(model, data)
    with torch.no_grad():
        adapter_logits = model(**inputs).logits
    merged_dir = merge(folder, tmp_path / "merged")
    merged_model = OmniModel.from_pretrained(merged_dir)  # a plain checkpoint: no peft layer left
    assert not any("lora_" in k or "modules_to_save" in k for k in merged_model.state_dict())
    with torch.no_grad():
        merged_logits = merged_model(**inputs).logits
        loaded_logits = load_model(folder)(**inputs).logits  # eval / predict load an adapter folder merged
    assert torch.allclose(merged_logits, adapter_logits, rtol=0, atol=1e-5)
    assert torch.equal(loaded_logits, merged_logits)
    base = OmniModel.from_pretrained(model_dir)
    with torch.no_grad():
        assert (base(**inputs).logits - merged_logits).abs().max() > 1e-3


def test_an_adapter_on_an_adapter_folder_saves_and_loads_without_peft_warnings(assets, tmp_path):
    """GRPO with use_peft on an SFT adapter: the new adapter's base is a folder without config.json.
    Saving and loading it must not make peft look for that config (its "Could not find a config
    file" warning: an error here, tests run with warnings as errors), nor store the embeddings."""
    from r1omni_fast.model.lora import load_with_adapter, read_adapter_config, save_adapter

    model_dir, data = assets
    model, _ = _policy(model_dir)
    _perturb_adapter(model)
    sft = tmp_path / "sft"
    save_adapter(model, sft)
    assert not (sft / "config.json").exists()
    grpo_stage, _ = _policy(sft, lora_r=4)
    _perturb_adapter(grpo_stage, seed=1)
    out = tmp_path / "grpo"
    save_adapter(grpo_stage, out)
    assert read_adapter_config(out)["base_model_name_or_path"] == str(sft.resolve())
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert not any("embed_tokens" in k for k in saved)
    reloaded = load_with_adapter(out)  # the SFT adapter merged, then this one
    inputs = _batch_inputs(grpo_stage, data)
    grpo_stage.eval()
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, grpo_stage(**inputs).logits)


def test_merge_errors_name_the_folder(assets, tmp_path):
    from r1omni_fast.model.lora import LoraError, merge

    model_dir, _ = assets
    with pytest.raises(LoraError, match="holds no adapter_config.json"):
        merge(model_dir, tmp_path / "m")
    folder = tmp_path / "orphan"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(LoraError, match=r"gone .*does not exist: point base_model_name_or_path at the base model "
                                        r"folder \(merge also takes --base DIR\)"):
        merge(folder, tmp_path / "m")


def test_an_adapter_of_another_base_is_one_error_naming_a_tensor(assets, tmp_path):
    """Adapter tensors whose shapes do not fit the base (the adapter of another-size model) are
    one LoraError naming the first tensor and both shapes, not torch's list of size mismatches."""
    from safetensors.torch import save_file

    from r1omni_fast.config import SFTConfig
    from r1omni_fast.model.lora import ADAPTER_WEIGHTS, LoraError, load_with_adapter
    from r1omni_fast.train.sft import run_sft

    model_dir, data = assets
    out = tmp_path / "lora"
    run_sft(SFTConfig(**{k: v for k, v in sft_fields(model_dir, data, out, use_peft=True, lora_r=2, lora_alpha=4,
                                                     max_steps=1, save_steps=1).items() if k != "stage"}),
            loader=clip_loader(), progress=False)
    weights = load_file(str(out / ADAPTER_WEIGHTS))
    name = sorted(k for k in weights if "lora_A" in k)[0]
    weights[name] = torch.zeros(weights[name].shape[0], weights[name].shape[1] + 3)
    save_file(weights, str(out / ADAPTER_WEIGHTS))
    with pytest.raises(LoraError, match=rf"do not fit the base model's shapes \(first: {name} is"):
        load_with_adapter(out)


# ------------------------------------------------------------------------- CLI runs


@pytest.fixture(scope="module")
def sft_run(assets, tmp_path_factory):
    model_dir, data = assets
    root = tmp_path_factory.mktemp("lora-sft")
    fields = sft_fields(model_dir, data, root / "straight", use_peft=True, lora_r=8, max_steps=6, save_steps=3,
                        save_total_limit=2, lr_scheduler_type="constant", warmup_ratio=0.0, learning_rate=3e-3)
    result = run_cli(["train", "--config", str(write_config(root / "sft.yaml", **fields))])
    assert result.returncode == 0, result.stderr[-3000:]
    return root, fields


def test_sft_cli_learns_and_saves_the_adapter(sft_run):
    root, fields = sft_run
    out = root / "straight"
    losses = [m["loss"] for m in _metrics(out)]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.05
    for folder in (out, out / "checkpoint-6"):
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
        assert not (folder / "model.safetensors").exists()
    assert (out / "checkpoint-6" / "optimizer.pt").is_file()
    final, last = (load_file(str(p / "adapter_model.safetensors")) for p in (out, out / "checkpoint-6"))
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8


def test_sft_resume_from_an_adapter_checkpoint_is_exact(sft_run):
    root, fields = sft_run
    straight = root / "straight"
    out = root / "resumed"
    out.mkdir()
    shutil.copytree(straight / "checkpoint-3", out / "checkpoint-3")
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in _metrics(straight)[:3]))
    config = write_config(root / "resume.yaml", **dict(fields, output_dir=str(out)))
    result = run_cli(["train", "--config", str(config), "--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m["loss"] for m in _metrics(out)] == [m["loss"] for m in _metrics(straight)]  # exactly
    a, b = (load_file(str(p / "adapter_model.safetensors")) for p in (out, straight))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # resuming with other adapter settings, or without use_peft, is an error naming the field
    from r1omni_fast.config import ConfigError, SFTConfig
    from r1omni_fast.train.common import load_policy

    for over, message in ((dict(lora_r=4), "lora_r: the run asks for 4 but the adapter"),
                          (dict(use_peft=False), "use_peft: the checkpoint .* holds a LoRA adapter")):
        cfg = SFTConfig(**{k: v for k, v in dict(fields, **over).items() if k != "stage"})
        with pytest.raises(ConfigError, match=message):
            load_policy(straight / "checkpoint-3", cfg, torch.device("cpu"))


def test_merge_cli_writes_a_checkpoint_that_trains_evaluates_and_predicts(sft_run, assets):
    from r1omni_fast.model import OmniModel
    from r1omni_fast.model.lora import load_with_adapter

    root, _ = sft_run
    _, data = assets
    merged = root / "merged"
    result = run_cli(["merge", "--model", str(root / "straight"), "--out", str(merged)])
    assert result.returncode == 0, result.stderr[-3000:]
    model = _one_frame(OmniModel.from_pretrained(merged))
    adapter = load_with_adapter(root / "straight")
    adapter.eval()
    inputs = _batch_inputs(model, data)
    with torch.no_grad():
        merged_logits = model(**inputs).logits
        assert torch.allclose(merged_logits, adapter(**inputs).logits, rtol=0, atol=1e-5)
    # a next stage with use_peft on the adapter folder: fresh adapters (B = 0) on the merged model
    next_stage, _ = _policy(root / "straight", lora_r=4)
    next_stage.eval()
    with torch.no_grad():
        assert torch.equal(next_stage(**inputs).logits, merged_logits)
    result = run_cli(["predict", str(Path(data.test).parent / json.loads(Path(data.test).read_text())[0]["video"]),
                      "--model", str(merged), "--max-new-tokens", "4", "--num-frames", "1"])
    assert result.returncode == 0, result.stderr[-3000:]


def test_grpo_cli_with_lora_then_exact_resume(assets, tmp_path):
    model_dir, data = assets
    straight = tmp_path / "straight"
    fields = grpo_fields(model_dir, data, straight, use_peft=True, max_steps=3, save_steps=1, save_total_limit=3,
                         learning_rate=5e-3, reward_funcs=[LENGTH_REWARD, "format"])
    result = run_cli(["train", "--config", str(write_config(tmp_path / "grpo.yaml", **fields))])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _metrics(straight)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 0  # the reference (adapters off) stays the base model
    assert all(r["rewards/answer_length_reward/mean"] > 0 for r in rows)
    assert (straight / "checkpoint-1" / "adapter_model.safetensors").is_file()

    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(straight / "checkpoint-1", out / "checkpoint-1")
    (out / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    lines = (straight / "completions.jsonl").read_text().splitlines(keepends=True)
    (out / "completions.jsonl").write_text("".join(r for r in lines if json.loads(r)["step"] == 1))
    config = write_config(tmp_path / "resume.yaml", **dict(fields, output_dir=str(out)))
    result = run_cli(["train", "--config", str(config), "--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "completions.jsonl").read_text() == (straight / "completions.jsonl").read_text()
    for a, b in zip(_metrics(out), rows):
        assert (a["loss"], a["kl"], a["reward"]) == (b["loss"], b["kl"], b["reward"])
    a, b = (load_file(str(p / "adapter_model.safetensors")) for p in (out, straight))
    assert all(torch.equal(a[k], b[k]) for k in a)
