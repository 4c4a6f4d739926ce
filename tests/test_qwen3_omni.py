"""Qwen3-Omni MoE thinker backend on the tiny thinker (no weights downloaded): the tiny
checkpoint's geometry, loading (thinker folder; full folder in the original per-expert layout with
talker weights that are never loaded; wrong architectures refused), prompts and media against
transformers' ``Qwen3OmniMoeProcessor``, audio per record (video track, separate file, none),
greedy prefix-shared generation against transformers' ``generate`` and completion logits against
the thinker's forward (DeepStack features reaching the decoder), LoRA on the fused-expert layout,
and the CLI (SFT, GRPO with exact resume, eval, predict, merge)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from _train_fixtures import make_data, run_cli, write_config
from test_qwen_omni import (QUESTION, _ffmpeg, _fields, _hf_reference, _sample, assert_completion_logits_equal_the_thinkers,
                            assert_generation_equals_transformers, cli_sft_grpo_resume_eval_predict)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tiny Qwen3-Omni thinker folder written by the CLI, synthetic data, folder of extra media, a clip)."""
    root = tmp_path_factory.mktemp("qwen3")
    result = run_cli(["model", "tiny", "--arch", "qwen3_omni_moe", str(root / "tiny3")])
    assert result.returncode == 0, result.stderr[-3000:]
    data = make_data(root / "data", n=16)
    media = root / "media"
    media.mkdir()
    first = Path(json.loads(Path(data.train).read_text())[0]["video"])
    clip = Path(data.train).parent / first
    _ffmpeg("-i", str(clip), "-an", "-c:v", "copy", str(media / "silent.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1.5", "-ac", "1", "-ar", "16000", str(media / "voice.wav"))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=31", "-ac", "1", "-ar", "16000", str(media / "long.wav"))
    return root / "tiny3", data, media, clip


@pytest.fixture(scope="module")
def model(tiny):
    from r1omni_fast.model.policy import load_policy

    return load_policy(tiny[0])


def _three_cases(tiny):
    """Samples: audio from the video's track, from a separate file, none."""
    _, _, media, clip = tiny
    return [_sample(clip, f"<video>\n<audio>\n{QUESTION}"),
            _sample(clip, f"<video>\n<audio>\n{QUESTION}", audio=media / "voice.wav"),
            _sample(clip, f"<video>\n{QUESTION}")]


def _inputs(model, samples):
    batch = model.media_collator(num_frames=4, audio="record")(samples)
    assert batch.skipped == []
    return batch, model.processor([s.prompt for s in batch.samples], pixel_values=batch.frames, audio_features=batch.mel)


def _one(model, batch, row):
    return model.processor([batch.samples[row].prompt], pixel_values=[batch.frames[row]], audio_features=[batch.mel[row]])


# ------------------------------------------------------------------------------ the tiny checkpoint
def test_tiny_thinker_geometry_and_save_is_loadable_by_transformers(tiny, model, tmp_path):
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

    from r1omni_fast.model.qwen3_omni.policy import Qwen3OmniThinkerPolicy

    assert type(model) is Qwen3OmniThinkerPolicy and model.load_report == {"missing": [], "unexpected": []}
    config = json.loads((tiny[0] / "config.json").read_text())
    assert config["model_type"] == "qwen3_omni_moe_thinker"
    text = model.config.text_config
    assert (text.num_hidden_layers, text.num_experts, text.num_experts_per_tok) == (2, 4, 2)
    assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    assert model.config.vision_config.out_hidden_size == model.config.audio_config.output_dim == text.hidden_size
    assert model.config.position_id_per_seconds == 13 == model.processor.hf.position_id_per_seconds
    assert model.config.vision_config.patch_size == 16 and model.media.factor == 32
    assert len(model.config.vision_config.deepstack_visual_indexes) == 2
    layers = model.thinker.model.language_model.layers
    assert all(type(layer.mlp).__name__ == "Qwen3OmniMoeThinkerTextSparseMoeBlock" for layer in layers)
    assert 1e5 < sum(p.numel() for p in model.parameters()) < 1e6
    model.save_pretrained(tmp_path / "saved")
    plain = Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(tmp_path / "saved")
    ours = model.thinker.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in plain.state_dict().items())


def _original_layout(state: dict) -> dict:
    """The thinker's tensors as an original Qwen3-Omni checkpoint stores them: under ``thinker.``,
    ``model.layers`` (no ``language_model`` level), ``visual`` / ``audio_tower`` at the top, and
    one gate / up / down weight per expert (transformers fuses them into ``gate_up_proj`` /
    ``down_proj`` on load)."""
    out = {}
    for name, tensor in state.items():
        name = name.replace("model.language_model.", "model.").replace("model.visual.", "visual.") \
            .replace("model.audio_tower.", "audio_tower.")
        if name.endswith("mlp.experts.gate_up_proj"):
            half = tensor.shape[1] // 2
            for e in range(tensor.shape[0]):
                out[f"thinker.{name[:-len('gate_up_proj')]}{e}.gate_proj.weight"] = tensor[e, :half].clone()
                out[f"thinker.{name[:-len('gate_up_proj')]}{e}.up_proj.weight"] = tensor[e, half:].clone()
        elif name.endswith("mlp.experts.down_proj"):
            for e in range(tensor.shape[0]):
                out[f"thinker.{name[:-len('down_proj')]}{e}.down_proj.weight"] = tensor[e].clone()
        else:
            out[f"thinker.{name}"] = tensor.clone()
    return out


def test_full_qwen3_omni_folder_loads_the_thinker_weights_only(tiny, model, tmp_path):
    """A full checkpoint (model_type qwen3_omni_moe, per-expert thinker weights, talker and
    code2wav weights) gives exactly the thinker; nothing of the talker is built."""
    from safetensors.torch import save_file
    from transformers import Qwen3OmniMoeConfig

    from r1omni_fast.model.policy import load_policy

    full = tmp_path / "full"
    shutil.copytree(tiny[0], full)
    (full / "model.safetensors").unlink()
    (full / "r1omni_media.json").unlink()
    thinker_cfg = json.loads((tiny[0] / "config.json").read_text())
    Qwen3OmniMoeConfig(thinker_config=thinker_cfg, enable_audio_output=True).save_pretrained(full)
    weights = _original_layout(model.thinker.state_dict())
    assert any(".experts.3.up_proj.weight" in k for k in weights)
    weights["talker.codec_head.weight"] = torch.zeros(4, 4)  # never loaded
    weights["code2wav.pre_transformer.norm.weight"] = torch.zeros(4)
    save_file(weights, str(full / "model.safetensors"), metadata={"format": "pt"})
    loaded = load_policy(full)
    assert loaded.load_report["missing"] == []
    ours = model.thinker.state_dict()
    theirs = loaded.thinker.state_dict()
    assert set(theirs) == set(ours) and all(torch.equal(ours[k], v) for k, v in theirs.items())
    assert not any("talker" in k or "code2wav" in k for k in loaded.state_dict())
    assert loaded.media.factor == 32 and loaded.media.max_audio_seconds is None  # the backend's media defaults


def test_wrong_architecture_folders_get_one_clear_error(tiny, tmp_path):
    from transformers import Qwen3OmniMoeConfig, Qwen3OmniMoeTalkerConfig, Qwen3VLConfig

    from r1omni_fast.model import CheckpointError
    from r1omni_fast.model.policy import load_policy

    vl = tmp_path / "qwen3-vl"
    Qwen3VLConfig().save_pretrained(vl)
    with pytest.raises(CheckpointError, match=r"config.json: model_type 'qwen3_vl' has no policy backend; supported: "
                                              r".*qwen3_omni_moe \(Qwen3-Omni \(MoE thinker\)\), qwen3_omni_moe_thinker"):
        load_policy(vl)
    talker = tmp_path / "talker"
    Qwen3OmniMoeTalkerConfig().save_pretrained(talker)
    with pytest.raises(CheckpointError, match=r"config.json: no model_type field \(it holds .*code_predictor_config.*"
                                              r"not a whole model's config\); supported: .*qwen3_omni_moe"):
        load_policy(talker)
    # a full config whose weights hold only the talker: the missing thinker weights are named
    talker_weights = tmp_path / "talker-weights"
    shutil.copytree(tiny[0], talker_weights)
    Qwen3OmniMoeConfig(thinker_config=json.loads((tiny[0] / "config.json").read_text())).save_pretrained(talker_weights)
    from safetensors.torch import save_file

    save_file({"talker.codec_head.weight": torch.zeros(4, 4)}, str(talker_weights / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"talker-weights: \d+ missing and 0 mismatched thinker weight\(s\)\n"
                                              r"  missing: "):
        load_policy(talker_weights)


# --------------------------------------------------------------------------- prompts and media
def test_prompts_and_media_equal_transformers_processor_and_audio_tokens_per_case(tiny, model):
    """Each record's audio source: the video track (interleaved with the frames), a separate file,
    none. Token ids, patches, grids and mel features equal Qwen3OmniMoeProcessor's on the same
    frames and audio; the audio token counts follow the chunked rule (13 per 100 mel frames)."""
    from r1omni_fast.model.qwen3_omni.processor import audio_token_count

    batch, inputs = _inputs(model, _three_cases(tiny))
    assert [c.audio_source for c in batch.frames] == ["video", "file", None]
    assert inputs["audio_in_video"].tolist() == [True, False, False]
    hf = model.processor.hf
    audio_id = model.processor.audio_token_id
    for row, (clip, interleave) in enumerate(zip(batch.frames, [True, False, False])):
        assert clip.frames.shape[1] % 32 == 0 and clip.frames.shape[2] % 32 == 0 and clip.frames.shape[0] % 2 == 0
        ref = _hf_reference(model, clip, QUESTION, video=True, audio=clip.audio is not None, interleave=interleave)
        valid = inputs["attention_mask"][row].bool()
        assert inputs["input_ids"][row][valid].tolist() == ref["input_ids"][0].tolist()
        assert torch.equal(inputs["video_grid_thw"][row], ref["video_grid_thw"][0])
        assert float(inputs["video_second_per_grid"][row]) == pytest.approx(float(ref["video_second_per_grid"][0]))
        patches = int(ref["video_grid_thw"][0].prod())
        assert torch.equal(inputs["pixel_values_videos"][row * patches:(row + 1) * patches], ref["pixel_values_videos"])
        tokens = int((inputs["input_ids"][row] == audio_id).sum())
        if clip.audio is None:
            assert tokens == 0
            continue
        frames = int(inputs["feature_attention_mask"][row].sum())
        assert frames == len(clip.audio) // 160 == int(ref["feature_attention_mask"][0].sum())
        torch.testing.assert_close(inputs["input_features"][row][:, :frames], ref["input_features"][0][:, :frames],
                                   atol=1e-6, rtol=0)
        assert tokens == audio_token_count(frames) == hf._get_num_audio_tokens(len(clip.audio))
    assert model.embed_prompts(inputs).shape[:2] == inputs["input_ids"].shape


def test_audio_is_not_cut_at_30_seconds(tiny, model):
    """A 31-s audio file: all of it reaches the model (3100 frames, 31 * 13 tokens), as the processor's."""
    _, _, media, clip = tiny
    batch, inputs = _inputs(model, [_sample(clip, f"<video>\n<audio>\n{QUESTION}", audio=media / "long.wav")])
    assert len(batch.frames[0].audio) == 31 * 16000
    assert int(inputs["feature_attention_mask"].sum()) == 3100
    assert int((inputs["input_ids"] == model.processor.audio_token_id).sum()) == 31 * 13 == \
        model.processor.hf._get_num_audio_tokens(31 * 16000)


# -------------------------------------------------------------------- generation and the logits
def test_greedy_prefix_shared_generation_equals_transformers_generate(tiny, model):
    """Row by row: audio from the video's track (interleaved), a separate file, none; the clips'
    sampled frame rate is not a whole number, so the temporal positions are fractional."""
    batch, inputs = _inputs(model, _three_cases(tiny))
    assert any(not float(2 / c.sample_fps * 13).is_integer() for c in batch.frames)
    assert_generation_equals_transformers(model, batch, inputs)


def test_completion_logits_equal_the_thinkers_forward_and_deepstack_reaches_the_decoder(tiny, model, monkeypatch):
    batch, prompts = _inputs(model, _three_cases(tiny))
    shared, ids, mask = assert_completion_logits_equal_the_thinkers(model, batch, prompts)
    # without the DeepStack features (the vision tower's per-layer additions) the logits move
    inputs = type(model).prompt_inputs
    monkeypatch.setattr(type(model), "prompt_inputs", lambda self, batch: (inputs(self, batch)[0], None))
    with torch.no_grad():
        bare = model.completion_logits(prompts, ids, mask, 2)
    assert (bare - shared).abs().max() > 1e-3


# ------------------------------------------------------------------------------------- LoRA
def test_lora_adapts_the_attention_projections_and_leaves_the_fused_experts_frozen(tiny, tmp_path):
    """use_peft on the MoE thinker: transformers 5 holds each MoE layer's experts as two fused
    parameters (``experts.gate_up_proj`` (E, 2I, H), ``experts.down_proj`` (E, H, I)), not as
    linear layers, so the default targets adapt the attention projections only; naming an expert
    weight is a clear error. GRPO's reference is the thinker with the adapters disabled."""
    from _train_fixtures import grpo_fields

    from r1omni_fast.config import ConfigError, GRPOConfig
    from r1omni_fast.model.lora import AdapterDisabled
    from r1omni_fast.model.policy import load_policy
    from r1omni_fast.train.grpo import GRPOTrainer

    model_dir, data, _, _ = tiny
    fields = grpo_fields(model_dir, data, tmp_path / "run", use_peft=True, lora_r=4, num_frames=4,
                         tunable_parts=["mm_language_model"])
    fields.pop("stage")
    trainer = GRPOTrainer(GRPOConfig(**fields), progress=False)
    assert isinstance(trainer.ref, AdapterDisabled)
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and ".language_model." in n for n in trained), trained
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trained} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    experts = [(n, p) for n, p in trainer.model.named_parameters() if ".experts." in n or n.endswith(".mlp.gate.weight")]
    assert experts and not any(p.requires_grad for _, p in experts)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # LoRA's B starts at zero: move the adapters so that they change the policy
        for p in trainer.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    rollout = trainer.make_rollout(trainer.collate(trainer.train_data.samples[:2]))
    base = load_policy(model_dir)
    base.set_num_frames(4)
    expected = trainer.sequence_logprobs(base, rollout)
    assert torch.equal(rollout.ref_logp, expected)
    assert (trainer.sequence_logprobs(trainer.model, rollout) - expected).abs().max() > 1e-3

    with pytest.raises(ConfigError, match=r"lora_target_modules: 'gate_up_proj' is a parameter .*fused expert weight"):
        GRPOTrainer(GRPOConfig(**dict(fields, lora_target_modules=["gate_up_proj"])), progress=False)


# -------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_sft_grpo_resume_eval_predict_and_lora_merge_on_the_tiny_moe_thinker(tiny, tmp_path):
    """The CLI on records with audio from the video track, from a separate file and without audio:
    SFT, GRPO (resumed exactly), eval and predict; then LoRA SFT -> merge -> predict."""
    from r1omni_fast.train.metrics_log import read_jsonl

    data = cli_sft_grpo_resume_eval_predict(tiny, tmp_path, "qwen3_omni_moe_thinker")
    model_dir = tiny[0]
    lora = tmp_path / "lora"
    cfg = write_config(tmp_path / "lora.yaml", **_fields("sft", model_dir, data, lora, max_steps=2, save_steps=2,
                                                          use_peft=True, lora_r=4, lora_alpha=8,
                                                          tunable_parts=["mm_language_model"]))
    result = run_cli(["train", "--config", str(cfg)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (lora / "adapter_model.safetensors").is_file() and not (lora / "model.safetensors").exists()
    merged = tmp_path / "merged"
    result = run_cli(["merge", "--model", str(lora), "--out", str(merged)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((merged / "config.json").read_text())["model_type"] == "qwen3_omni_moe_thinker"
    result = run_cli(["predict", "--model", str(merged), "--data", str(data.test), "--out", str(tmp_path / "m.jsonl"),
                      "--max-new-tokens", "6", "--num-frames", "4"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_jsonl(tmp_path / "m.jsonl")) == 4


# ------------------------------------------------------------------------------ MoE routing
def test_the_router_record_gives_transformers_aux_loss_and_the_expert_load(tiny, model):
    """Inside ``routing()``: the training forward's load-balancing loss equals the thinker's own
    ``aux_loss`` (output_router_logits) row by row (and its cross-entropy the thinker's loss), and transformers' ``load_balancing_loss_func``
    on a padded batch with its attention mask; the expert load equals a count over the top-k
    choices; completion_logits' shared passes pair the prompt and completion masks."""
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import load_balancing_loss_func

    batch = model.media_collator(num_frames=4, audio="record")(_three_cases(tiny))
    rows = model.processor([s.prompt for s in batch.samples], ["<answer>happy</answer>", "<answer>sad</answer>", "x"],
                           pixel_values=batch.frames, audio_features=batch.mel, padding_side="right")
    assert not rows["attention_mask"].all()  # padded rows: the padding is left out
    with model.routing() as record:
        model(**rows)
    text = model.config.text_config
    logits = tuple(record._calls)
    assert len(logits) == text.num_hidden_layers
    expected = load_balancing_loss_func(logits, text.num_experts, text.num_experts_per_tok, rows["attention_mask"])
    assert torch.allclose(record.aux_loss(), expected, atol=1e-6)
    valid = rows["attention_mask"].reshape(-1).bool()
    shares = []
    for layer in logits:
        counts = torch.bincount(layer[valid].topk(2, -1).indices.reshape(-1), minlength=4).float()
        shares.append(4 * counts.max() / counts.sum())
    assert record.expert_load()["expert_load_imbalance"] == pytest.approx(float(torch.stack(shares).mean()), abs=1e-6)
    for row in range(2):
        one = model.processor([batch.samples[row].prompt], ["<answer>happy</answer>"], pixel_values=[batch.frames[row]],
                              audio_features=[batch.mel[row]])
        kwargs = {k: v for k, v in one.items() if k not in ("video_rows", "audio_rows", "audio_in_video")}
        model.thinker.model.rope_deltas = None
        with torch.no_grad():
            ref = model.thinker(**kwargs, use_audio_in_video=bool(one["audio_in_video"][0]), output_router_logits=True)
        with model.routing() as record, torch.no_grad():
            ours = model(**one)
        assert abs(float(record.aux_loss()) - float(ref.aux_loss)) < 1e-6
        # SFT's forward (packed logits over the targets): the thinker's loss, which adds its own
        # config's coefficient times the aux loss when given labels
        expected = float(ours.loss) + text.router_aux_loss_coef * float(record.aux_loss())
        assert abs(expected - float(ref.loss)) < 1e-5

    prompts = model.processor([s.prompt for s in batch.samples], pixel_values=batch.frames, audio_features=batch.mel)
    ids = torch.randint(20, 200, (6, 4))
    mask = torch.ones_like(ids)
    mask[0, 2:] = 0
    for share in (True, False):
        with model.routing() as record, torch.no_grad():
            model.completion_logits(prompts, ids, mask, 2, share_prefix=share)
        real = (torch.cat([prompts["attention_mask"].reshape(-1), mask.reshape(-1)]) if share else
                torch.cat([prompts["attention_mask"].repeat_interleave(2, 0), mask], 1).reshape(-1))
        expected = load_balancing_loss_func(tuple(record._layers()[i][0] for i in range(2)), 4, 2, real[None])
        assert torch.allclose(record.aux_loss(), expected, atol=1e-6)
    # the record refuses masks that do not fit its passes: one too many, or of the wrong size
    with model.routing() as record, torch.no_grad():
        record.expect([torch.ones(3)])
        model.completion_logits(prompts, ids, mask, 2)
    with pytest.raises(ValueError, match=r"3 token masks given for 2 decoder passes"):
        record.aux_loss()
    record._masks = [torch.ones(3)]
    with pytest.raises(ValueError, match=r"decoder pass 0: a token mask of 3 entries for \d+ routed tokens"):
        record.aux_loss()


@pytest.mark.slow
def test_router_aux_loss_coef_enters_the_sft_and_grpo_losses_and_is_logged(tiny, tmp_path):
    """aux_loss and expert_load_imbalance in metrics.jsonl; with router_aux_loss_coef the first
    step's loss is the loss without it plus coef * aux_loss (same weights, same rollouts); a dense
    model refuses a coefficient."""
    from r1omni_fast.config import ConfigError, GRPOConfig
    from r1omni_fast.train.grpo import GRPOTrainer
    from r1omni_fast.train.metrics_log import read_jsonl

    model_dir, data, _, _ = tiny
    for stage in ("sft", "grpo"):
        runs = {}
        for coef in (0.0, 0.5):
            out = tmp_path / f"{stage}-{coef}"
            cfg = write_config(tmp_path / f"{stage}-{coef}.yaml", **_fields(stage, model_dir, data, out, max_steps=1,
                                                                            save_steps=1, router_aux_loss_coef=coef))
            result = run_cli(["train", "--config", str(cfg)])
            assert result.returncode == 0, result.stderr[-3000:]
            runs[coef] = read_jsonl(out / "metrics.jsonl")[0]
        first, with_aux = runs[0.0], runs[0.5]
        assert first["aux_loss"] == with_aux["aux_loss"] > 0 and 1.0 <= first["expert_load_imbalance"] <= 4.0
        assert with_aux["loss"] == pytest.approx(first["loss"] + 0.5 * first["aux_loss"], rel=1e-5, abs=1e-6)

    from _train_fixtures import grpo_fields

    dense = tmp_path / "dense"
    assert run_cli(["model", "tiny", "--arch", "qwen2_5_omni", str(dense)]).returncode == 0
    fields = grpo_fields(dense, data, tmp_path / "dense-run", router_aux_loss_coef=0.1, num_frames=4)
    fields.pop("stage")
    with pytest.raises(ConfigError, match=r"router_aux_loss_coef=0.1: QwenOmniThinkerPolicy has no MoE router"):
        GRPOTrainer(GRPOConfig(**fields), progress=False)
