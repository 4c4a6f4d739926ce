"""Backend conformance: the checklist a policy backend passes (the contributor docs' "adding a
backend"). Parametrised over every tiny backend: the loaded policy and its processor are instances
of the ``Policy`` / ``PolicyProcessor`` protocols, each protocol method does what the protocol
says on a real batch of the backend's own collator, and one SFT step and one GRPO step run through
the CLI. Media: the synthetic clips of ``r1omni-fast data synth`` (PyAV-encoded)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from r1omni_fast.model.policy import SPECS

LABELS = ["happy", "sad", "angry", "neutral"]
ARCHS = sorted(SPECS)


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    root = tmp_path_factory.mktemp("conformance")
    assert CliRunner().invoke(main, ["data", "synth", str(root / "data"), "--n", "6"]).exit_code == 0
    for arch in ARCHS:
        result = CliRunner().invoke(main, ["model", "tiny", "--arch", arch, str(root / arch)])
        assert result.exit_code == 0, result.output
    return root


def test_every_registered_backend_has_a_tiny_checkpoint_command():
    from r1omni_fast.cli import model_tiny

    arch = next(p for p in model_tiny.params if p.name == "arch")
    assert sorted(arch.type.choices) == ARCHS


def test_register_refuses_a_taken_name_or_model_type():
    import dataclasses

    from r1omni_fast.model.policy import register

    spec = SPECS["humanomni"]
    with pytest.raises(ValueError, match="already registered"):
        register(spec)
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(spec, name="another", model_types=("qwen2_5_omni",)))


def _policy(material, arch):
    from r1omni_fast.model.policy import load_policy

    return load_policy(str(material / arch), device=torch.device("cpu"))


def _inputs(model, material):
    from r1omni_fast.data import read_data
    from r1omni_fast.train.common import model_batch

    samples = read_data(material / "data" / "train.json")[:2]
    model.set_num_frames(2)
    collate = model.media_collator(num_frames=2, audio="record")
    batch = collate(samples, 0)
    assert batch.skipped == []
    return model_batch(model.processor, batch)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_policy_and_its_processor_are_protocol_instances(material, arch):
    from r1omni_fast.model.policy import Policy, PolicyProcessor

    from r1omni_fast.model.policy import spec_for

    spec = SPECS[arch]
    assert spec_for(material / arch) is spec
    model = _policy(material, arch)
    assert type(model) is spec.policy_class()
    assert isinstance(model, Policy)
    assert isinstance(model.processor, PolicyProcessor)
    assert "checkpoint" in model.processor.chat_templates
    modules = dict(model.named_modules())
    assert model.LORA_LANGUAGE_MODEL and all(name in modules for name in model.LORA_LANGUAGE_MODEL)
    # the spec's tunable parts are exactly those the policy accepts, and each unfreezes something
    for part in spec.tunable_parts:
        model.set_trainable_parts([part])
        assert any(p.requires_grad for p in model.parameters()), part
    with pytest.raises(ValueError):
        model.set_trainable_parts(["no_such_part"])
    others = {p for s in SPECS.values() for p in s.tunable_parts} - set(spec.tunable_parts)
    for part in others:
        with pytest.raises(ValueError):
            model.set_trainable_parts([part])


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_embeddings_positions_and_completion_logits(material, arch):
    model = _policy(material, arch).eval()
    inputs = _inputs(model, material)
    embeds = model.embed_prompts(inputs)
    b, length = inputs["input_ids"].shape
    assert embeds.shape == (b, length, model.llm.config.hidden_size)
    assert torch.isfinite(embeds).all()
    # media placeholders are replaced: the rows differ from the plain token embeddings there
    plain = model.llm.get_input_embeddings()(inputs["input_ids"].clamp(min=0))
    media = torch.isin(inputs["input_ids"], torch.tensor(model.processor.media_token_ids))
    assert media.any() and not torch.allclose(embeds[media], plain[media])
    assert torch.equal(embeds[~media], plain[~media])

    rope = model.rope_positions(inputs)
    if rope is not None:
        positions, offsets = rope
        # int64, or float32 where temporal positions are fractional (Qwen3-Omni)
        assert positions.shape == (3, b, length) and positions.dtype in (torch.int64, torch.float32)
        assert offsets.shape == (b,) and offsets.dtype == positions.dtype

    completion = torch.randint(0, 50, (2 * b, 3))
    mask = torch.ones_like(completion, dtype=torch.bool)
    with torch.no_grad():
        shared = model.completion_logits(inputs, completion, mask, 2, share_prefix=True)
        full = model.completion_logits(inputs, completion, mask, 2, share_prefix=False)
    assert shared.shape[:2] == (2 * b, 3)
    torch.testing.assert_close(shared, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_reference_view_freezes_the_trainable_tensors_and_shares_the_frozen_ones(material, arch):
    model = _policy(material, arch)
    model.set_trainable_parts(["mm_language_model"])
    ref = model.reference_view()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    theirs = dict(ref.named_parameters())
    assert set(theirs) == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        if p.requires_grad:  # copied, frozen, equal
            assert theirs[name] is not p and not theirs[name].requires_grad and torch.equal(theirs[name], p)
        else:
            assert theirs[name] is p
    with torch.no_grad():  # a step on the policy leaves the reference where it was
        next(p for p in model.parameters() if p.requires_grad).add_(1.0)
    name = next(n for n, p in model.named_parameters() if p.requires_grad)
    assert not torch.equal(theirs[name], dict(model.named_parameters())[name])


@pytest.mark.parametrize("arch", ARCHS)
def test_one_sft_and_one_grpo_step_through_the_cli(material, arch, tmp_path):
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    common = dict(label_set=LABELS, seed=0, num_frames=2, per_device_train_batch_size=2, logging_steps=1,
                  bf16=False, save_steps=1, max_steps=1)
    sft = dict(stage="sft", model_name_or_path=str(material / arch), data_file=str(material / "data" / "sft.json"),
               output_dir=str(tmp_path / "sft"), **common)
    grpo = dict(stage="grpo", model_name_or_path=str(tmp_path / "sft"),
                data_file=str(material / "data" / "train.json"), output_dir=str(tmp_path / "grpo"),
                num_generations=2, max_completion_length=4, beta=0.04, **common)
    for fields in (sft, grpo):
        config = tmp_path / f"{fields['stage']}.yaml"
        config.write_text(yaml.safe_dump(fields))
        result = CliRunner().invoke(main, ["train", "--config", str(config)])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (tmp_path / fields["stage"] / "metrics.jsonl").read_text().splitlines()]
        step = [r for r in rows if r.get("step") == 1 and "loss" in r]
        assert step and all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in step)
        assert (tmp_path / fields["stage"] / "model.safetensors").exists() or \
            any((tmp_path / fields["stage"]).glob("model*.safetensors"))
