"""What a LoRA run trains, weight by weight, on both backends (HumanOmni and the Qwen2.5-Omni
thinker): a few SFT optimizer steps on a tiny model, then every tensor compared byte for byte with
its starting value. Exactly the adapters and the full copies of the parts that full training
trains outside the LLM (the projectors / the vision merger and audio projection) change; the
towers, the LLM's base weights and the originals of the copies are byte-identical; and the copied
parts are exactly those a full-weight run with the same ``tunable_parts`` changes outside the LLM.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _train_fixtures import clip_loader, make_data, shared_assets

DEFAULT_PARTS = ["mm_language_model", "mm_mlp_adapter", "audio_projector"]
COPY = ".modules_to_save.default."


@pytest.fixture(scope="module")
def humanomni(tmp_path_factory):
    model_dir, data = shared_assets(tmp_path_factory)
    return model_dir, data, clip_loader()


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from r1omni_fast.model.qwen_omni.tiny import build_tiny_qwen_checkpoint

    root = tmp_path_factory.mktemp("qwen-lora")
    return Path(build_tiny_qwen_checkpoint(root / "tinyq", seed=0)), make_data(root / "data", n=8), None


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    from r1omni_fast.model.qwen3_omni.tiny import build_tiny_qwen3_checkpoint

    root = tmp_path_factory.mktemp("qwen3-lora")
    return Path(build_tiny_qwen3_checkpoint(root / "tiny3", seed=0)), make_data(root / "data", n=8), None


def _train(assets, num_frames, steps=3, **over):
    """(policy, its tensors before, its tensors after ``steps`` SFT optimizer steps, the optimizer)."""
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.data import read_data
    from r1omni_fast.train.common import build_optimizer, load_policy, make_collator
    from r1omni_fast.train.sft import sft_inputs

    model_dir, data, loader = assets
    cfg = SFTConfig(model_name_or_path=str(model_dir), num_frames=num_frames, learning_rate=1e-2, lora_dropout=0.0,
                    **over)
    model = load_policy(cfg.model_name_or_path, cfg, torch.device("cpu"))
    model.train()
    samples = read_data(data.sft, labels=None, kind="sft").samples[:2]
    batch = make_collator(cfg, model, loader)(samples, 0)
    assert len(batch.samples) == 2 and not batch.skipped
    inputs = sft_inputs(model.processor, batch, cfg.max_length)
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    optimizer = build_optimizer(model, cfg)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()
    after = {n: t.detach().clone() for n, t in model.state_dict().items()}
    assert before.keys() == after.keys()
    return model, before, after, optimizer


def _changed(before, after):
    def same(a, b):  # byte for byte (a -0.0 for a 0.0 counts as a change)
        return a.shape == b.shape and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))

    return {n for n in before if not same(before[n], after[n])}


def _base_name(name):
    """The full model's name of a tensor of the LoRA-wrapped model (its copy names the original)."""
    return name.replace(COPY, ".").replace(".original_module.", ".").replace(".base_layer.", ".")


def _check_lora_trains_what_full_training_trains(assets, num_frames, llm_roots, parts, towers, copied):
    lora_model, before, after, _ = _train(assets, num_frames, use_peft=True, lora_r=4, tunable_parts=parts)
    changed = _changed(before, after)
    trainable = {n for n, p in lora_model.named_parameters() if p.requires_grad}
    adapters = {n for n in before if ".lora_A." in n or ".lora_B." in n}
    copies = {n for n in before if COPY in n}
    assert adapters and all(n.startswith(llm_roots) for n in adapters)
    # exactly the adapters and the copies changed, every one of them; they are all that trains
    assert changed == adapters | copies == trainable
    # the copies are of the parts named, nothing else: the towers themselves stay frozen
    assert {_base_name(n).rsplit(".", 1)[0] for n in copies} == copied
    frozen_towers = [n for n in before if n.startswith(towers) and COPY not in n]
    assert frozen_towers and not changed & set(frozen_towers)
    # the same parts outside the LLM as a full-weight run with these tunable_parts
    _, full_before, full_after, _ = _train(assets, num_frames, tunable_parts=parts)
    full_changed = _changed(full_before, full_after)
    assert any(n.startswith(llm_roots) for n in full_changed) == ("mm_language_model" in parts)
    assert {_base_name(n) for n in copies} == {n for n in full_changed if not n.startswith(llm_roots)}


@pytest.mark.parametrize("parts, copied", [
    (DEFAULT_PARTS, {"thinker.model.visual.merger.ln_q", "thinker.model.visual.merger.mlp.0",
                     "thinker.model.visual.merger.mlp.2", "thinker.model.audio_tower.proj"}),
    (["mm_language_model", "audio_projector"], {"thinker.model.audio_tower.proj"}),
])
def test_lora_on_the_qwen_thinker_trains_the_adapters_and_only_the_merger_and_audio_projection(qwen, parts, copied):
    _check_lora_trains_what_full_training_trains(
        qwen, 4, ("thinker.model.language_model.", "thinker.lm_head."), parts,
        ("thinker.model.visual.", "thinker.model.audio_tower."), copied)


def test_lora_on_humanomni_trains_the_adapters_and_the_projectors(humanomni):
    from r1omni_fast.model import OmniModel

    model_dir = humanomni[0]
    base = OmniModel.from_pretrained(model_dir)
    projectors = {n for n, m in base.named_modules() if n.startswith(("mm_projector.", "audio_projector."))
                  and any(True for _ in m.parameters(recurse=False))}
    _check_lora_trains_what_full_training_trains(
        humanomni, 1, ("llm.",), DEFAULT_PARTS, ("vision_tower.", "audio_tower.", "bert_model.", "bert_gate."),
        projectors)


def test_a_tower_trains_in_full_under_lora_only_when_asked(qwen):
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.model.lora import modules_to_save, peft_model
    from r1omni_fast.train.common import load_policy

    model_dir = qwen[0]
    cfg = SFTConfig(model_name_or_path=str(model_dir), num_frames=4, use_peft=True,
                    tunable_parts=["mm_language_model", "mm_audio_tower", "audio_projector"])
    model = load_policy(cfg.model_name_or_path, cfg, torch.device("cpu"))
    saved = peft_model(model).peft_config["default"].modules_to_save
    assert list(saved) == ["thinker.model.audio_tower"]  # all of it trains: one copy
    cfg = SFTConfig(model_name_or_path=str(model_dir), num_frames=4, tunable_parts=DEFAULT_PARTS)
    full = load_policy(cfg.model_name_or_path, cfg, torch.device("cpu"))
    full.requires_grad_(False)
    full.thinker.model.visual.blocks[0].attn.proj.requires_grad_(True)
    assert modules_to_save(full) == ["thinker.model.visual.blocks.0.attn.proj"]


@pytest.mark.parametrize("backend", ["qwen", "qwen3"])
def test_the_memory_of_a_lora_run_is_the_readmes_rule(request, backend):
    """The adapter-run figures of docs/models.md: the tensors held after LoRA optimizer steps are exactly
    4 B x the base model's parameters (frozen, fp32) + 16 B x the trainable ones (adapters and
    copies: weight, gradient, two AdamW moments); GRPO's reference (the adapters disabled) adds none.
    Both Qwen thinkers: Qwen2.5-Omni's and Qwen3-Omni's MoE one (its fused experts frozen)."""
    from r1omni_fast.model.lora import AdapterDisabled
    from r1omni_fast.model.policy import load_policy

    qwen = request.getfixturevalue(backend)
    model, _, _, optimizer = _train(qwen, 4, steps=1, use_peft=True, lora_r=4, tunable_parts=DEFAULT_PARTS)
    seen: set = set()

    def size(tensors):
        out = 0
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.numel() > 1 and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                out += t.untyped_storage().nbytes()
        return out

    trainable = [p for p in model.parameters() if p.requires_grad]
    held = size(model.parameters()) + size(p.grad for p in trainable)
    held += size(v for state in optimizer.state.values() for v in state.values())
    assert size(AdapterDisabled(model).parameters()) == 0
    base = sum(p.numel() for p in load_policy(qwen[0]).parameters())
    assert held == 4 * base + 16 * sum(p.numel() for p in trainable)
