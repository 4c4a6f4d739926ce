"""The omni model: HumanOmni checkpoint names, loading, prompts, forward, generation, training parts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from r1omni_fast.model import (
    AUDIO_TOKEN_INDEX,
    IGNORE_INDEX,
    VIDEO_TOKEN_INDEX,
    CheckpointError,
    OmniConfig,
    OmniModel,
)
from r1omni_fast.prompts import build_instruction
from tests._model_fixtures import media, tiny_ckpt, tiny_model  # noqa: F401  (fixtures)

KEYS_JSON = Path(__file__).parent / "data" / "humanomni_0_5b_keys.json"


# ------------------------------------------------------------------ architecture / names
def test_meta_checkpoint_state_dict_matches_humanomni_0_5b():
    expected = json.loads(KEYS_JSON.read_text())["keys"]
    assert len(expected) == 1323
    with torch.device("meta"):
        model = OmniModel(OmniConfig.humanomni_0_5b())
    got = {k: list(v.shape) for k, v in model.checkpoint_state_dict().items()}
    assert "lm_head.weight" not in got  # tied embeddings: written as transformers does
    expected.pop("lm_head.weight")
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}


def test_0_5b_token_counts_from_shapes():
    config = OmniConfig.humanomni_0_5b()
    assert config.num_video_tokens() == 392 and config.num_audio_tokens() == 500
    with torch.device("meta"):
        model = OmniModel(config)
        video, body, face = model.mm_projector(torch.empty(1, 8, 196, 768))
        audio = model.encode_audio(torch.empty(1, 128, 3000))
    assert video.shape == body.shape == face.shape == (1, 392, 896)
    assert audio.shape == (1, 500, 896)


def test_tiny_model_token_counts(tiny_model):
    frames, mel = media(1)
    p = tiny_model.processor
    batch = p([build_instruction()], pixel_values=frames, audio_features=mel)
    assert int((batch["input_ids"] == VIDEO_TOKEN_INDEX).sum()) == 392
    assert int((batch["input_ids"] == AUDIO_TOKEN_INDEX).sum()) == 500
    with torch.no_grad():
        v = tiny_model.encode_video(batch["pixel_values"], batch["bert_input_ids"], batch["bert_attention_mask"])
        a = tiny_model.encode_audio(batch["audio_features"])
    assert v.shape == (1, 392, 64) and a.shape == (1, 500, 64)


# ------------------------------------------------------------------------ checkpoints
def _logits(model, seed=0):
    frames, mel = media(2, seed)
    batch = model.processor([build_instruction(), "<video>\nHow does the person feel?"],
                            pixel_values=frames, audio_features=mel)
    with torch.no_grad():
        return model(**batch).logits


def test_save_load_identical_logits(tiny_model, tmp_path):
    before = _logits(tiny_model)
    tiny_model.save_pretrained(tmp_path / "again")
    again = OmniModel.from_pretrained(tmp_path / "again")
    assert torch.equal(before, _logits(again))
    assert load_file(tmp_path / "again" / "model.safetensors").keys() == tiny_model.checkpoint_state_dict().keys()


def test_tiny_checkpoint_is_deterministic(tiny_ckpt, tmp_path):
    from r1omni_fast.model.humanomni.tiny import build_tiny_checkpoint

    build_tiny_checkpoint(tmp_path / "same", seed=0)
    build_tiny_checkpoint(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "bert/tokenizer.json"):
        assert (tmp_path / "same" / name).read_bytes() == (Path(tiny_ckpt) / name).read_bytes(), name
    assert (tmp_path / "other" / "model.safetensors").read_bytes() != (tmp_path / "same" / "model.safetensors").read_bytes()
    config = json.loads((Path(tiny_ckpt) / "config.json").read_text())
    assert config["model_type"] == "HumanOmni_qwen2" and config["mm_projector_type"] == "all_in_one_small"


def test_cli_writes_loadable_tiny_checkpoint(tmp_path):
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    result = CliRunner().invoke(main, ["model", "tiny", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert OmniModel.from_pretrained(tmp_path / "cli").processor is not None


def _copy(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


def test_strict_loading_reports_missing_and_unexpected(tiny_ckpt, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path / "ck")
    weights = load_file(ckpt / "model.safetensors")
    weights.pop("model.mm_projector.s1_video.b1.se.fc1.weight")
    weights["model.mm_projector.not_a_layer.weight"] = torch.zeros(2)
    save_file(weights, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        OmniModel.from_pretrained(ckpt)
    text = str(err.value)
    assert "missing: model.mm_projector.s1_video.b1.se.fc1.weight" in text
    assert "unexpected: model.mm_projector.not_a_layer.weight" in text
    model = OmniModel.from_pretrained(ckpt, strict=False)
    assert model.load_report == {"missing": ["model.mm_projector.s1_video.b1.se.fc1.weight"],
                                 "unexpected": ["model.mm_projector.not_a_layer.weight"]}


def test_shape_mismatch_is_named(tiny_ckpt, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path / "ck")
    weights = load_file(ckpt / "model.safetensors")
    weights["model.bert_gate.2.bias"] = torch.zeros(4)
    save_file(weights, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.bert_gate\.2\.bias: checkpoint \(4,\) vs model \(3,\)"):
        OmniModel.from_pretrained(ckpt)


def _strip_parts(ckpt: Path, parts=("vision_tower", "audio_tower", "bert"), keep_weights=True) -> dict:
    """Move the part folders out (as in a HumanOmni checkpoint); return where they went."""
    moved = {}
    for part in parts:
        moved[part] = ckpt.parent / f"moved-{part}"
        shutil.move(str(ckpt / part), moved[part])
    if not keep_weights:
        prefixes = {"vision_tower": "model.vision_tower.", "audio_tower": "model.audio_tower.", "bert": "model.bert_model."}
        weights = load_file(ckpt / "model.safetensors")
        for part in parts:
            part_weights = {k: v for k, v in weights.items() if k.startswith(prefixes[part])}
            renamed = {("vision_model." + k[len("model.vision_tower.vision_tower.vision_model."):]) if part == "vision_tower"
                       else ("model." + k[len("model.audio_tower.audio_tower."):]) if part == "audio_tower"
                       else ("bert." + k[len("model.bert_model."):]): v for k, v in part_weights.items()}
            save_file(renamed, moved[part] / "model.safetensors")
            weights = {k: v for k, v in weights.items() if k not in part_weights}
        save_file(weights, ckpt / "model.safetensors")
    return moved


def test_missing_parts_listed_in_one_error(tiny_ckpt, tiny_model, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path / "ck")
    moved = _strip_parts(ckpt)
    with pytest.raises(CheckpointError) as err:
        OmniModel.from_pretrained(ckpt)
    text = str(err.value)
    assert "3 part(s) missing" in text
    assert "vision tower (SigLIP) (config mm_vision_tower='tiny-siglip'): missing its config.json" in text
    assert "audio tower (Whisper encoder) (config mm_audio_tower='tiny-whisper'): missing its config.json" in text
    assert "BERT gate encoder (bert-base-uncased): missing its config.json, its tokenizer" in text
    assert "pass vision_tower='/path/to/siglip-base-patch16-224'" in text
    assert "pass bert='/path/to/bert-base-uncased'" in text
    # supplied as arguments: loads and matches
    model = OmniModel.from_pretrained(ckpt, vision_tower=moved["vision_tower"], audio_tower=moved["audio_tower"],
                                      bert=moved["bert"])
    assert torch.equal(_logits(model), _logits(tiny_model))


def test_parts_found_beside_checkpoint_with_tower_weights(tiny_ckpt, tiny_model, tmp_path):
    ckpt = _copy(tiny_ckpt, tmp_path / "ck")
    moved = _strip_parts(ckpt, keep_weights=False)
    with pytest.raises(CheckpointError, match="missing its config.json and weights"):
        OmniModel.from_pretrained(ckpt)
    shutil.move(str(moved["vision_tower"]), tmp_path / "tiny-siglip")  # named like config.mm_vision_tower
    shutil.move(str(moved["audio_tower"]), tmp_path / "tiny-whisper")
    shutil.move(str(moved["bert"]), tmp_path / "bert-base-uncased")
    model = OmniModel.from_pretrained(ckpt)
    assert torch.equal(_logits(model), _logits(tiny_model))


# ------------------------------------------------------------------------ prompts
def test_prompt_ids_labels_and_placeholders(tiny_model):
    p = tiny_model.processor
    frames, mel = media(2)
    instructions = [build_instruction(), build_instruction("Which emotion?")]
    targets = ["<think>a frown</think>\n<answer>sad</answer>", "<answer>happy</answer>"]
    batch = p(instructions, targets, pixel_values=frames, audio_features=mel, padding_side="right")
    text = p.prompt_text(instructions[0])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "<vi_start><video><vi_end>\n<au_start><audio><au_end>\n" in text
    assert "Output the thinking process in <think> </think> and final emotion in <answer> </answer> tags." in text
    for row in range(2):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        kept = labels != IGNORE_INDEX
        assert not kept[(ids == VIDEO_TOKEN_INDEX) | (ids == AUDIO_TOKEN_INDEX)].any()
        target_ids = p.tokenizer.encode(targets[row] + "<|im_end|>", add_special_tokens=False)
        assert labels[kept].tolist() == target_ids == ids[kept].tolist()
    for label in ("sad", "happy", "contemptuous", "calm"):
        assert len(p.tokenizer.encode(label, add_special_tokens=False)) == 1
    assert p.bert_text(instructions[0]).startswith("As an emotional recognition expert")


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_single_modality_prompts_run(tiny_model, modality):
    frames, mel = media(1)
    batch = tiny_model.processor([build_instruction()], pixel_values=frames, audio_features=mel, modalities=modality)
    other = "audio" if modality == "video" else "video"
    assert f"<{other}>" not in tiny_model.processor.prompt_text(build_instruction(), (modality,))
    assert (batch["input_ids"] == (VIDEO_TOKEN_INDEX if other == "video" else AUDIO_TOKEN_INDEX)).sum() == 0
    assert ("pixel_values" in batch) == (modality == "video") and ("audio_features" in batch) == (modality == "audio")
    with torch.no_grad():
        logits = tiny_model(**batch, logits_to_keep=1).logits
    assert logits.shape == (1, 1, tiny_model.config.llm.vocab_size) and torch.isfinite(logits).all()
    out = tiny_model.generate(batch, num_generations=2, max_new_tokens=4, seed=0)
    assert out.completion_ids.shape[0] == 2 and len(out.texts) == 2


def test_missing_media_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="hold <video> but pixel_values was not given"):
        tiny_model.processor([build_instruction()], audio_features=media(1)[1])
    with pytest.raises(ValueError, match="use 'video', 'audio' or both"):
        tiny_model.processor([build_instruction()], modalities="text")


# ------------------------------------------------------------------------ forward
def test_padding_side_and_logit_selection_agree(tiny_model):
    p = tiny_model.processor
    frames, mel = media(2)
    instructions = [build_instruction(), "<audio>\nShort?"]  # rows with different modalities
    targets = ["<answer>sad</answer>", "<think>x</think><answer>fear</answer>"]
    with torch.no_grad():
        full = {}
        for side in ("left", "right"):
            batch = p(instructions, targets, pixel_values=frames, audio_features=mel, padding_side=side)
            full[side] = (batch, tiny_model(**{k: v for k, v in batch.items() if k != "labels"}).logits)
        for side, (batch, logits) in full.items():
            packed = tiny_model(**batch)
            sel = batch["labels"][:, 1:] != IGNORE_INDEX
            torch.testing.assert_close(packed.logits, logits[:, :-1][sel], rtol=1e-4, atol=1e-5)
            assert torch.equal(packed.targets, batch["labels"][:, 1:][sel])
            hidden = tiny_model(**batch, return_hidden_states=True).hidden_states
            torch.testing.assert_close(tiny_model.llm.lm_head(hidden), packed.logits)
        unlabelled = {k: v for k, v in full["left"][0].items() if k != "labels"}
        torch.testing.assert_close(tiny_model(**unlabelled, logits_to_keep=5).logits,
                                   full["left"][1][:, -5:], rtol=1e-4, atol=1e-5)
        # the same supervised positions give the same logits whatever the padding side
        torch.testing.assert_close(tiny_model(**full["left"][0]).logits, tiny_model(**full["right"][0]).logits,
                                   rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------ generation
def _reference_greedy(model, batch, row, max_new_tokens, eos):
    """Independent greedy decoding of one prompt: full recompute, no cache, no padding."""
    keep = batch["attention_mask"][row].bool()
    single = {"input_ids": batch["input_ids"][row][keep][None]}
    video_rows = (batch["input_ids"] == VIDEO_TOKEN_INDEX).any(1)
    audio_rows = (batch["input_ids"] == AUDIO_TOKEN_INDEX).any(1)
    if video_rows[row]:
        i = int(video_rows[:row].sum())
        single["pixel_values"] = batch["pixel_values"][i:i + 1]
        single["bert_input_ids"] = batch["bert_input_ids"][i:i + 1]
        single["bert_attention_mask"] = batch["bert_attention_mask"][i:i + 1]
    if audio_rows[row]:
        i = int(audio_rows[:row].sum())
        single["audio_features"] = batch["audio_features"][i:i + 1]
    with torch.no_grad():
        embeds = model.embed(**single)
        tokens = []
        for _ in range(max_new_tokens):
            logits = model.llm(inputs_embeds=embeds).logits[0, -1]
            token = int(logits.argmax())
            tokens.append(token)
            if token in eos:
                break
            embeds = torch.cat([embeds, model.llm.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
    return tokens


def test_prefix_shared_greedy_equals_independent_generation(tiny_model):
    frames, mel = media(2, seed=3)
    batch = tiny_model.processor([build_instruction(), "<audio>\nAnd here, briefly?"],
                                 pixel_values=frames, audio_features=mel)
    g, new = 3, 10
    eos = tiny_model.processor.eos_token_ids
    before = tiny_model.prefill_rows
    out = tiny_model.generate(batch, num_generations=g, max_new_tokens=new, do_sample=False)
    assert tiny_model.prefill_rows - before == 2  # one prefill per prompt, not per sample
    for row in range(2):
        expected = _reference_greedy(tiny_model, batch, row, new, eos)
        for s in range(g):
            r = row * g + s
            assert int(out.prompt_index[r]) == row
            assert out.completion_ids[r, : out.lengths[r]].tolist() == expected
    before = tiny_model.prefill_rows
    dup = tiny_model.generate(batch, num_generations=g, max_new_tokens=new, do_sample=False, share_prefix=False)
    assert tiny_model.prefill_rows - before == 2 * g
    assert torch.equal(dup.completion_ids, out.completion_ids) and dup.texts == out.texts


def test_sampling_is_seeded_and_top_k_1_is_greedy(tiny_model):
    frames, mel = media(1, seed=5)
    batch = tiny_model.processor([build_instruction()], audio_features=mel, modalities="audio")
    a = tiny_model.generate(batch, num_generations=4, max_new_tokens=8, seed=11, temperature=1.5)
    b = tiny_model.generate(batch, num_generations=4, max_new_tokens=8, seed=11, temperature=1.5)
    assert torch.equal(a.completion_ids, b.completion_ids)
    c = tiny_model.generate(batch, num_generations=4, max_new_tokens=8, seed=12, temperature=1.5)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    greedy = tiny_model.generate(batch, num_generations=2, max_new_tokens=8, do_sample=False)
    top1 = tiny_model.generate(batch, num_generations=2, max_new_tokens=8, top_k=1, seed=0)
    assert torch.equal(greedy.completion_ids, top1.completion_ids)
    with pytest.raises(ValueError, match="temperature"):
        tiny_model.generate(batch, temperature=0.0)


def test_top_p_keeps_the_nucleus():
    from r1omni_fast.model.sampling import sample_next

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    drawn = sample_next(logits, do_sample=True, temperature=1.0, top_k=0, top_p=0.8, generator=gen)
    assert set(drawn.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.8
    share = (drawn == 0).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.05


# ------------------------------------------------------------------------ training parts
def _grad_modules(model) -> set[str]:
    return {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("parts,expected", [
    ("mm_language_model,mm_mlp_adapter,audio_projector,bert_gate", {"llm", "mm_projector", "audio_projector", "bert_gate"}),
    (["mm_mlp_adapter", "bert_gate"], {"mm_projector", "bert_gate"}),
    ("audio_projector", {"audio_projector"}),
])
def test_gradients_reach_exactly_the_trainable_parts(tiny_ckpt, parts, expected):
    model = OmniModel.from_pretrained(tiny_ckpt)
    model.set_trainable_parts(parts)
    frames, mel = media(1)
    batch = model.processor([build_instruction()], ["<answer>sad</answer>"], pixel_values=frames, audio_features=mel)
    model.train()
    assert model.llm.training and not (model.bert_model.training or model.vision_tower.training)
    model(**batch).loss.backward()
    assert _grad_modules(model) == expected
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen.isdisjoint(expected) and {"vision_tower", "audio_tower", "bert_model"} <= frozen
    with pytest.raises(ValueError, match="unknown trainable part"):
        model.set_trainable_parts("mm_everything")


def test_gradient_checkpointing_gives_the_same_gradients(tiny_ckpt):
    grads = []
    frames, mel = media(1)
    for checkpointing in (False, True):
        model = OmniModel.from_pretrained(tiny_ckpt)
        model.set_trainable_parts("mm_language_model")
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        batch = model.processor([build_instruction()], ["<answer>sad</answer>"], pixel_values=frames, audio_features=mel)
        model(**batch).loss.backward()
        grads.append(model.llm.model.layers[0].mlp.up_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_sharded_checkpoint_with_saved_lm_head_loads_strictly(tiny_ckpt, tiny_model, tmp_path):
    """HumanOmni files hold lm_head.weight even with tied embeddings, and big ones are sharded."""
    ckpt = _copy(tiny_ckpt, tmp_path / "ck")
    weights = load_file(ckpt / "model.safetensors")
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: weights[k] for k in keys}, ckpt / file)
    (ckpt / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    model = OmniModel.from_pretrained(ckpt)
    assert model.load_report == {"missing": [], "unexpected": []}
    assert torch.equal(_logits(model), _logits(tiny_model))


def test_projector_token_order_and_temporal_window(tiny_model):
    """Tokens are ordered (frame, row, col), 49 per frame; the video/body Conv3d sees frames
    j-1 and j (front padding, last step dropped); the face branch is per frame."""
    proj = tiny_model.mm_projector
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 196, 32, generator=g)
    y = x.clone()
    y[0, 5] += torch.randn(196, 32, generator=g)
    with torch.no_grad():
        before, after = proj(x), proj(y)
    for branch, changed_frames in (("video", {5, 6}), ("body", {5, 6}), ("face", {5})):
        b, a = (t.reshape(8, 49, -1) for t in (before[("video", "body", "face").index(branch)],
                                                after[("video", "body", "face").index(branch)]))
        moved = {f for f in range(8) if not torch.allclose(b[f], a[f], rtol=0, atol=1e-6)}
        assert moved == changed_frames, branch
    # face branch: patch (row 3, col 8) of frame 2 lands in token (1, 4) of that frame only
    z = x.clone()
    z[0, 2, 3 * 14 + 8] += 1.0
    with torch.no_grad():
        diff = (proj(z)[2] - before[2]).abs().sum(-1)[0]
    assert (diff > 1e-6).nonzero().flatten().tolist() == [2 * 49 + 1 * 7 + 4]


@given(st.lists(st.integers(-50, 50), min_size=2, max_size=12, unique=True), st.integers(0, 12), st.floats(0.05, 1.0))
def test_sampling_stays_in_top_k_and_nucleus(tenths, top_k, top_p):
    from r1omni_fast.model.sampling import sample_next

    values = [t / 10 for t in tenths]  # distinct in float32 too
    logits = torch.tensor(values, dtype=torch.float64)
    allowed = list(range(len(values)))
    if 0 < top_k < len(values):
        allowed = sorted(allowed, key=lambda i: -values[i])[:top_k]
    probs = torch.softmax(logits[allowed], 0).tolist()
    ranked = sorted(zip(probs, allowed), reverse=True)
    cumulative, nucleus = 0.0, []
    for p, i in ranked:
        assume(abs(cumulative - top_p) > 1e-4)
        if cumulative >= top_p:
            break
        nucleus.append(i)
        cumulative += p
    gen = torch.Generator().manual_seed(0)
    drawn = sample_next(logits.float()[None].repeat(64, 1), do_sample=True, temperature=1.0, top_k=top_k,
                        top_p=top_p, generator=gen)
    assert set(drawn.tolist()) <= set(nucleus)


def test_humanomni_config_json_round_trip():
    """A HumanOmni 0.5B config.json (as written by transformers 4.49) reads into the 0.5B sizes;
    unknown fields survive; tunable parts this architecture lacks are skipped."""
    data = {"architectures": ["HumanOmniQwen2ForCausalLM"], "model_type": "HumanOmni_qwen2", "hidden_size": 896,
            "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "vocab_size": 151936, "rope_theta": 1000000.0, "rope_scaling": None, "tie_word_embeddings": True,
            "mm_vision_tower": "/mnt/data/siglip-base-patch16-224", "mm_audio_tower": "/mnt/data/whisper-large-v3",
            "mm_projector_type": "all_in_one_small", "mm_hidden_size": 768, "audio_hidden_size": 1280,
            "mm_tunable_parts": "mm_mlp_adapter,audio_projector,mm_language_model,mm_vision_resampler",
            "tokenizer_padding_side": "right", "torch_dtype": "bfloat16", "transformers_version": "4.49.0"}
    config = OmniConfig.from_dict(data)
    assert config.llm.rope_parameters["rope_theta"] == 1e6 and config.llm.num_key_value_heads == 2
    assert config.extra == {"tokenizer_padding_side": "right", "torch_dtype": "bfloat16"}
    out = config.to_dict()
    assert out["rope_theta"] == 1e6 and out["model_type"] == "HumanOmni_qwen2" and out["torch_dtype"] == "bfloat16"
    reference = OmniConfig.humanomni_0_5b()
    config.vision, config.audio, config.bert = reference.vision, reference.audio, reference.bert
    with torch.device("meta"):
        model = OmniModel(config)
    assert model.trainable_parts() == ["mm_language_model", "mm_mlp_adapter", "audio_projector"]
    with pytest.raises(ValueError, match="model_type"):
        OmniConfig.from_dict({**data, "model_type": "llava"})
