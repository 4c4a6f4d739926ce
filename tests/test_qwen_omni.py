"""Qwen2.5-Omni thinker backend on the tiny thinker (no weights downloaded): the registry, loading
and saving, prompts and media against transformers' own processor, audio per record (video track,
separate file, none), greedy prefix-shared generation against transformers' ``generate``,
completion logits and the loss against references, bad input at load time, and the CLI (SFT,
GRPO with exact resume, eval, predict)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from _train_fixtures import LABELS, make_data, run_cli, write_config


def _ffmpeg(*args: str) -> None:
    r = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tiny Qwen thinker folder written by the CLI, synthetic data, folder of extra media)."""
    root = tmp_path_factory.mktemp("qwen")
    result = run_cli(["model", "tiny", "--arch", "qwen2_5_omni", str(root / "tinyq")])
    assert result.returncode == 0, result.stderr[-3000:]
    data = make_data(root / "data", n=16)
    media = root / "media"
    media.mkdir()
    first = Path(json.loads(Path(data.train).read_text())[0]["video"])
    clip = Path(data.train).parent / first
    _ffmpeg("-i", str(clip), "-an", "-c:v", "copy", str(media / "silent.mp4"))  # the same clip without audio
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1.5", "-ac", "1", "-ar", "16000", str(media / "voice.wav"))
    return root / "tinyq", data, media, clip


@pytest.fixture(scope="module")
def model(tiny):
    from r1omni_fast.model.policy import load_policy

    return load_policy(tiny[0])


def _sample(video, prompt, audio=None):
    from r1omni_fast.data import Sample

    return Sample(id=Path(video).stem, video=Path(video), audio=None if audio is None else Path(audio), prompt=prompt,
                  target="<answer>happy</answer>", label="happy", solution="<answer> happy </answer>",
                  is_reasoning=False, source="test:1")


QUESTION = "Which emotion is shown?"


def _three_cases(tiny):
    """Samples: audio from the video's track, from a separate file, none."""
    _, _, media, clip = tiny
    return [_sample(clip, f"<video>\n<audio>\n{QUESTION}"),
            _sample(clip, f"<video>\n<audio>\n{QUESTION}", audio=media / "voice.wav"),
            _sample(clip, f"<video>\n{QUESTION}")]


# ------------------------------------------------------------------------------ loading, saving
def test_registry_picks_the_backend_by_model_type_and_save_is_loadable_by_transformers(tiny, model, tmp_path):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from r1omni_fast.model.humanomni.model import OmniModel
    from r1omni_fast.model.policy import backend_for
    from r1omni_fast.model.qwen_omni.policy import QwenOmniThinkerPolicy
    from r1omni_fast.model.humanomni.tiny import build_tiny_checkpoint

    assert type(model) is QwenOmniThinkerPolicy and model.load_report == {"missing": [], "unexpected": []}
    assert json.loads((tiny[0] / "config.json").read_text())["model_type"] == "qwen2_5_omni_thinker"
    assert backend_for(build_tiny_checkpoint(tmp_path / "humanomni")) is OmniModel
    params = sum(p.numel() for p in model.parameters())
    assert 1e5 < params < 2e6
    model.save_pretrained(tmp_path / "saved")
    plain = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tmp_path / "saved")
    ours = model.thinker.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in plain.state_dict().items())


def test_full_qwen2_5_omni_folder_loads_the_thinker_weights_only(tiny, model, tmp_path):
    """A full checkpoint (model_type qwen2_5_omni, thinker.* and talker.* weights) gives the thinker."""
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2_5OmniConfig

    from r1omni_fast.model.policy import load_policy

    full = tmp_path / "full"
    shutil.copytree(tiny[0], full)
    thinker_cfg = json.loads((tiny[0] / "config.json").read_text())
    Qwen2_5OmniConfig(thinker_config=thinker_cfg, enable_audio_output=False).save_pretrained(full)
    weights = load_file(str(tiny[0] / "model.safetensors"))
    weights = {f"thinker.{k}": v for k, v in weights.items()}
    weights["talker.codec_head.weight"] = torch.zeros(4, 4)  # a talker weight: never loaded
    save_file(weights, str(full / "model.safetensors"), metadata={"format": "pt"})
    loaded = load_policy(full)
    assert loaded.load_report["missing"] == []
    ours = model.thinker.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in loaded.thinker.state_dict().items())
    assert not any("talker" in k for k in loaded.state_dict())


def test_bad_checkpoints_fail_at_load_time_naming_the_file(tiny, tmp_path):
    from r1omni_fast.model import CheckpointError
    from r1omni_fast.model.policy import load_policy

    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match=r"config.json: model_type 'llama' has no policy backend.*qwen2_5_omni"):
        load_policy(other)

    no_processor = tmp_path / "no_processor"
    shutil.copytree(tiny[0], no_processor)
    (no_processor / "processor_config.json").unlink()
    with pytest.raises(CheckpointError, match=r"no_processor: missing processor file\(s\): processor"):
        load_policy(no_processor)

    bare_template = tmp_path / "bare_template"
    shutil.copytree(tiny[0], bare_template)
    (bare_template / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n<|im_end|>\n{% endfor %}")
    with pytest.raises(CheckpointError, match=r"chat_template.jinja: the chat template does not write the media tokens"):
        load_policy(bare_template)

    # a self-made tokenizer without the multimodal special tokens; a config whose media token ids
    # are not the tokenizer's: one error each at load time, not a traceback at the first prompt
    no_special = tmp_path / "no_special"
    shutil.copytree(tiny[0], no_special)
    tok = json.loads((no_special / "tokenizer_config.json").read_text())
    for key in ("image_token", "audio_token", "video_token", "vision_bos_token", "vision_eos_token",
                "audio_bos_token", "audio_eos_token"):
        tok.pop(key, None)
    (no_special / "tokenizer_config.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointError, match=r"no_special: .*tokenizer_config.json must name .*special tokens"):
        load_policy(no_special)
    proc = run_cli(["predict", "--model", str(no_special), str(tmp_path / "x.mp4")])
    assert proc.returncode == 2 and "special tokens" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr

    other_ids = tmp_path / "other_ids"
    shutil.copytree(tiny[0], other_ids)
    config = json.loads((other_ids / "config.json").read_text())
    config["video_token_index"] = config["video_token_index"] + 1
    (other_ids / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json: video_token_id is \d+, but the tokenizer's video token"):
        load_policy(other_ids)


def test_settings_the_thinker_lacks_are_config_errors_at_load_time(tiny, tmp_path):
    from r1omni_fast.config import ConfigError, GRPOConfig
    from r1omni_fast.train.common import load_policy

    base = _fields("grpo", tiny[0], tiny[1], tmp_path)
    base.pop("stage")
    # checked against the backend's spec before any weight loads
    with pytest.raises(ConfigError, match=r"tunable_parts: bert_gate is not a part of a Qwen2.5-Omni \(thinker\) "
                                          r"model .*: choose from mm_language_model, mm_vision_tower"):
        load_policy(tiny[0], GRPOConfig(**dict(base, tunable_parts=["mm_language_model", "bert_gate"])), torch.device("cpu"))
    # the policy itself refuses it too (a caller that skips the trainer's check)
    with pytest.raises(ValueError, match=r"Qwen2.5-Omni has no HumanOmni's BERT gate"):
        load_policy(tiny[0], GRPOConfig(**base), torch.device("cpu")).set_trainable_parts(["bert_gate"])
    with pytest.raises(ConfigError, match=r"chat_template: 'qwen2vl' is not available .* \(use checkpoint\)"):
        load_policy(tiny[0], GRPOConfig(**dict(base, chat_template="qwen2vl")), torch.device("cpu"))
    model = load_policy(tiny[0], GRPOConfig(**base), torch.device("cpu"))
    assert model.num_frames == 4
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters()
        if n.startswith(("thinker.model.language_model.", "thinker.lm_head.", "thinker.model.visual.merger.",
                         "thinker.model.audio_tower.proj."))}


# --------------------------------------------------------------------------- prompts and media
def _hf_reference(model, clip_media, text_item_prompt, *, video, audio, interleave):
    """transformers' Qwen2_5OmniProcessor on the same frames, fps and audio."""
    hf = model.processor.hf
    content = ([{"type": "video", "video": "x"}] if video else []) + \
              ([{"type": "audio", "audio": "x"}] if audio and not interleave else []) + \
              [{"type": "text", "text": text_item_prompt}]
    messages = [{"role": "user", "content": content}]
    if model.processor.system_prompt is not None:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": model.processor.system_prompt}]})
    text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    kwargs = dict(text=[text], return_tensors="np")  # "pt" trips a numpy deprecation inside transformers
    if video:
        kwargs["videos"] = [clip_media.frames]
        frames = clip_media.frames
        kwargs["videos_kwargs"] = {"fps": clip_media.sample_fps, "do_sample_frames": False, "cap_pixels_per_frame": False,
                                   "size": {"shortest_edge": 1, "longest_edge": frames.shape[1] * frames.shape[2]}}
    if audio:
        kwargs["audio"] = [clip_media.audio]
    if interleave:
        kwargs.update(load_audio_from_video=True, audio_from_video_indices=[0])
    return {k: torch.as_tensor(np.asarray(v)) for k, v in hf(**kwargs).items()}


def test_prompts_and_media_equal_transformers_processor_and_audio_tokens_per_case(tiny, model):
    """Each record's audio source: the video track (interleaved with the frames), a separate file,
    none. Token ids, patches, grids and mel features equal Qwen2_5OmniProcessor's; the audio
    tokens reaching the model are the Whisper encoder's output length of each audio."""
    from r1omni_fast.media.qwen import load_qwen_clip
    from r1omni_fast.model.qwen_omni.collator import QwenClipCollator

    samples = _three_cases(tiny)
    collate = model.media_collator(num_frames=4, audio="record")
    assert isinstance(collate, QwenClipCollator)
    batch = collate(samples)
    assert batch.skipped == [] and [c.audio_source for c in batch.frames] == ["video", "file", None]
    inputs = model.processor([s.prompt for s in batch.samples], pixel_values=batch.frames, audio_features=batch.mel)
    assert inputs["audio_in_video"].tolist() == [True, False, False]

    audio_id = model.processor.audio_token_id
    for row, (clip, interleave) in enumerate(zip(batch.frames, [True, False, False])):
        ref = _hf_reference(model, clip, QUESTION, video=True, audio=clip.audio is not None, interleave=interleave)
        valid = inputs["attention_mask"][row].bool()
        assert inputs["input_ids"][row][valid].tolist() == ref["input_ids"][0].tolist()
        assert torch.equal(inputs["video_grid_thw"][row], ref["video_grid_thw"][0])
        patches = int(ref["video_grid_thw"][0].prod())
        assert torch.equal(inputs["pixel_values_videos"][row * patches:(row + 1) * patches], ref["pixel_values_videos"])
        # audio tokens reaching the model: Whisper frames of the audio (10 ms hop) through two stride-2 steps
        mel_frames = -(-len(clip.audio) // 160) if clip.audio is not None else 0
        expected = ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1 if mel_frames else 0
        assert int((inputs["input_ids"][row] == audio_id).sum()) == expected
        if clip.audio is not None:  # native features, unpadded: within 1e-4 of the feature extractor's
            frames = int(inputs["feature_attention_mask"][row].sum())
            assert frames == mel_frames == int(ref["feature_attention_mask"][0].sum())
            torch.testing.assert_close(inputs["input_features"][row][:, :frames], ref["input_features"][0][:, :frames],
                                       atol=1e-4, rtol=0)
    assert inputs["input_features"].shape[-1] == max(-(-len(c.audio) // 160) for c in batch.frames if c.audio is not None)
    # the 1.5-s file is longer than the clip's own 0.5-s track: a different count, each exactly as expected
    counts = [int((inputs["input_ids"][r] == audio_id).sum()) for r in range(3)]
    assert counts[1] > counts[0] > 0 == counts[2]
    # ... and the audio encoder's features fill exactly those tokens
    assert model.embed_prompts(inputs).shape[:2] == inputs["input_ids"].shape

    # frames: sampled by time (even count, at most num_frames) and resized to multiples of 28
    clip = load_qwen_clip(samples[0].video, settings=collate.settings)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape[0] % 2 == 0 and clip.frames.shape[0] <= 4
    assert clip.frames.shape[1] % 28 == 0 and clip.frames.shape[2] % 28 == 0


def test_a_record_asking_for_audio_its_file_lacks_is_an_error_or_a_counted_skip(tiny, model):
    from r1omni_fast.data import DataError

    _, _, media, clip = tiny
    silent = _sample(media / "silent.mp4", f"<video>\n<audio>\n{QUESTION}")
    ok = _sample(clip, f"<video>\n<audio>\n{QUESTION}")
    batch = model.media_collator(num_frames=4, audio="record", on_error="skip")([silent, ok])
    assert [s.id for s in batch.samples] == [clip.stem]
    assert len(batch.skipped) == 1 and "silent.mp4" in batch.skipped[0][1] and "no audio stream" in batch.skipped[0][1]
    with pytest.raises(DataError, match=r"silent\.mp4.*no audio stream but the record asks for audio"):
        model.media_collator(num_frames=4, audio="record", on_error="raise")([silent])
    # without <audio> in its prompt, the silent clip is fine
    video_only = model.media_collator(num_frames=4, audio="record", on_error="raise")([_sample(media / "silent.mp4", f"<video>\n{QUESTION}")])
    assert len(video_only) == 1 and video_only.frames[0].audio is None
    # evaluation with the audio modality (audio=True) asks every clip for audio, whatever its prompt
    asked = model.media_collator(num_frames=4, audio=True)([_sample(media / "silent.mp4", f"<video>\n{QUESTION}"),
                                                            _sample(clip, f"<video>\n{QUESTION}")])
    assert [s.id for s in asked.samples] == [clip.stem] and asked.frames[0].audio_source == "video"
    assert "silent.mp4" in asked.skipped[0][1]


# -------------------------------------------------------------------- generation and the loss
def assert_generation_equals_transformers(model, batch, inputs):
    """Greedy prefix-shared generation (and unshared) of ``inputs`` (the processor's rows of
    ``batch``) equals ``model.thinker.generate`` row by row, token for token."""
    eos = model.processor.eos_token_ids
    ours = model.generate(inputs, num_generations=2, max_new_tokens=12, do_sample=False, eos_token_id=eos)
    assert model.prefill_rows >= len(batch)
    unshared = model.generate(inputs, num_generations=2, max_new_tokens=12, do_sample=False, eos_token_id=eos,
                              share_prefix=False)
    assert torch.equal(ours.completion_ids, unshared.completion_ids)
    for row in range(len(batch)):
        one = model.processor([batch.samples[row].prompt], pixel_values=[batch.frames[row]], audio_features=[batch.mel[row]])
        kwargs = {k: v for k, v in one.items() if k not in ("video_rows", "audio_rows", "audio_in_video")}
        reference = model.thinker.generate(**kwargs, use_audio_in_video=bool(one["audio_in_video"][0]), max_new_tokens=12,
                                           do_sample=False, eos_token_id=eos, pad_token_id=model.processor.tokenizer.pad_token_id)
        expected = reference[0, one["input_ids"].shape[1]:].tolist()
        for g in range(2):
            n = int(ours.lengths[row * 2 + g])
            assert ours.completion_ids[row * 2 + g, :n].tolist() == expected[:n]
            assert n == len(expected) or expected[n - 1] in eos


def assert_completion_logits_equal_the_thinkers(model, batch, prompts):
    """Completion logits of sampled completions (prefix shared or not) equal transformers' thinker
    forward over prompt + completion, row by row. Returns (shared logits, ids, mask)."""
    out = model.generate(prompts, num_generations=2, max_new_tokens=6, do_sample=True, seed=0)
    ids = out.completion_ids
    mask = (torch.arange(ids.shape[1])[None] < out.lengths[:, None]).long()
    with torch.no_grad():
        shared = model.completion_logits(prompts, ids, mask, 2)
        plain = model.completion_logits(prompts, ids, mask, 2, share_prefix=False)
    assert torch.allclose(shared, plain, atol=2e-5, rtol=1e-4)
    for row in range(len(batch)):  # transformers' own forward, row by row (its use_audio_in_video is per call)
        one = model.processor([batch.samples[row].prompt], pixel_values=[batch.frames[row]], audio_features=[batch.mel[row]])
        kwargs = {k: v for k, v in one.items() if k not in ("video_rows", "audio_rows", "audio_in_video", "input_ids",
                                                               "attention_mask")}
        for g in range(2):
            n = row * 2 + g
            full = torch.cat([one["input_ids"], ids[n:n + 1]], 1)
            with torch.no_grad():
                model.thinker.model.rope_deltas = None
                logits = model.thinker(input_ids=full, attention_mask=torch.ones_like(full), **kwargs,
                                       use_audio_in_video=bool(one["audio_in_video"][0])).logits
            p = one["input_ids"].shape[1]
            k = int(mask[n].sum())
            assert torch.allclose(shared[n, :k], logits[0, p - 1:p - 1 + k], atol=2e-5, rtol=1e-4)
    return shared, ids, mask


def test_greedy_prefix_shared_generation_equals_transformers_generate(tiny, model):
    samples = _three_cases(tiny)
    batch = model.media_collator(num_frames=4, audio="record")(samples)
    inputs = model.processor([s.prompt for s in batch.samples], pixel_values=batch.frames, audio_features=batch.mel)
    assert_generation_equals_transformers(model, batch, inputs)


def test_completion_logits_and_the_loss_equal_references_on_the_thinker(tiny, model):
    """Completion logits (prefix shared or not) equal transformers' thinker forward over prompt +
    completion; the fused GRPO loss and the log-probs equal an fp64 reference on those logits."""
    from r1omni_fast.kernels import grpo_loss, selective_logprobs

    samples = _three_cases(tiny)
    batch = model.media_collator(num_frames=4, audio="record")(samples)
    prompts = model.processor([s.prompt for s in batch.samples], pixel_values=batch.frames, audio_features=batch.mel)
    shared, ids, mask = assert_completion_logits_equal_the_thinkers(model, batch, prompts)

    logp = selective_logprobs(shared, ids, 1.0)
    ref_logp = torch.log_softmax(shared.double(), -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(logp.double(), ref_logp, atol=1e-5)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    old = ref_logp.float().detach() + 0.01
    loss, _ = grpo_loss(shared.detach().clone().requires_grad_(True), ids, advantages, mask=mask.bool(), old_logp=old,
                        beta=0.0, eps_low=0.2, eps_high=0.2, temperature=1.0, loss_type="grpo", inplace_grad=False)
    ratio = torch.exp(ref_logp - old.double())
    a = advantages.double()[:, None]
    per_token = -torch.minimum(ratio * a, ratio.clamp(0.8, 1.2) * a)
    m = mask.double()
    expected = ((per_token * m).sum(1) / m.sum(1)).mean()
    assert abs(float(loss.detach()) - float(expected)) < 1e-5


# -------------------------------------------------------------------------------------- CLI
def _fields(stage, model_dir, data, out, **over):
    fields = dict(stage=stage, model_name_or_path=str(model_dir), output_dir=str(out), label_set=LABELS, seed=0,
                  num_frames=4, learning_rate=5e-3, lr_scheduler_type="constant", per_device_train_batch_size=2,
                  tunable_parts=["mm_language_model", "mm_mlp_adapter", "audio_projector"], logging_steps=1,
                  save_total_limit=2, bf16=False)
    if stage == "sft":
        fields.update(data_file=str(data.sft), max_steps=6, save_steps=3, max_length=2048)
    else:
        fields.update(data_file=str(data.train), max_steps=3, save_steps=1, num_generations=2,
                      max_prompt_length=512, max_completion_length=8, beta=0.04,
                      reward_funcs=["accuracy", "format", "_train_fixtures.answer_length_reward"])
    fields.update(over)
    return fields


def _mixed_audio(path: Path, media: Path, out: Path) -> Path:
    """A copy of the data file whose records take their audio three ways, in turn: the video's own
    track, a separate file, none (no <audio> in the prompt)."""
    records = json.loads(path.read_text())
    for i, record in enumerate(records):
        record["video"] = str((path.parent / record["video"]).resolve())
        if i % 3 == 1:
            record["audio"] = str(media / "voice.wav")
        elif i % 3 == 2:
            record["conversations"][0]["value"] = record["conversations"][0]["value"].replace("<audio>\n", "")
    out.write_text(json.dumps(records))
    return out


def cli_sft_grpo_resume_eval_predict(tiny, tmp_path: Path, model_type: str):
    """SFT (the loss falls), GRPO run straight and stopped + resumed (the same metrics and
    completions), eval and predict through the CLI on the tiny thinker ``tiny[0]``, on records whose
    audio comes from the video track, a separate file or nowhere; returns the data files."""
    from types import SimpleNamespace

    from r1omni_fast.train.metrics_log import read_jsonl

    model_dir, original, media, _ = tiny
    data = SimpleNamespace(sft=_mixed_audio(Path(original.sft), media, tmp_path / "sft.json"),
                           train=_mixed_audio(Path(original.train), media, tmp_path / "train.json"),
                           test=_mixed_audio(Path(original.test), media, tmp_path / "test.json"))
    assert sum("<audio>" not in r["conversations"][0]["value"] for r in json.loads(data.train.read_text())) >= 2
    sft = tmp_path / "sft"
    cfg = write_config(tmp_path / "sft.yaml", **_fields("sft", model_dir, data, sft, learning_rate=2e-3))
    result = run_cli(["train", "--config", str(cfg)])
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [r["loss"] for r in read_jsonl(sft / "metrics.jsonl")]
    assert len(losses) == 6 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert json.loads((sft / "config.json").read_text())["model_type"] == model_type

    straight, broken = tmp_path / "grpo", tmp_path / "grpo-resumed"
    cfg_a = write_config(tmp_path / "a.yaml", **_fields("grpo", sft, data, straight))
    cfg_b = write_config(tmp_path / "b.yaml", **_fields("grpo", sft, data, broken, max_steps=2))
    for cfg in (cfg_a, cfg_b):
        result = run_cli(["train", "--config", str(cfg)])
        assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli(["train", "--config", str(cfg_b), "--max-steps", "3", "--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_jsonl(straight / "completions.jsonl")
    assert len(rows) == 3 * 2 * 2 and all(r["answer_length_reward"] == min(len(r["completion"]), 100) / 100 for r in rows)
    metrics = read_jsonl(straight / "metrics.jsonl")
    assert any(m["loss"] != 0.0 for m in metrics) and all(m["reward"] > 0 for m in metrics)
    keys = ("step", "loss", "reward", "kl", "grad_norm", "num_tokens", "entropy")
    resumed = read_jsonl(broken / "metrics.jsonl")
    assert [{k: r[k] for k in keys} for r in metrics] == [{k: r[k] for k in keys} for r in resumed]
    assert read_jsonl(straight / "completions.jsonl") == read_jsonl(broken / "completions.jsonl")

    result = run_cli(["eval", "--model", str(straight), "--data", str(data.test), "--out", str(tmp_path / "eval"),
                      "--max-new-tokens", "6", "--num-frames", "4"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 4
    result = run_cli(["predict", "--model", str(straight), "--data", str(data.test), "--out", str(tmp_path / "p.jsonl"),
                      "--max-new-tokens", "6", "--num-frames", "4"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_jsonl(tmp_path / "p.jsonl")
    assert len(rows) == 4 and all(r["error"] is None and r["completion"] is not None for r in rows)
    return data


@pytest.mark.slow
def test_cli_sft_grpo_resume_eval_and_predict_on_the_tiny_thinker(tiny, tmp_path):
    """The CLI on records with audio from the video track, from a separate file and without audio."""
    cli_sft_grpo_resume_eval_predict(tiny, tmp_path, "qwen2_5_omni_thinker")


# ------------------------------------------------------------------------------------- LoRA
def test_lora_adapts_the_thinkers_text_decoder_and_the_grpo_reference_is_the_base(tiny, tmp_path):
    """use_peft on the thinker: adapters only in its text decoder (never in the vision blocks or
    the audio tower, whose layers share the projections' names), and GRPO's reference is the
    thinker with the adapters disabled: the base model's log-probs, with no second copy."""
    from _train_fixtures import grpo_fields

    from r1omni_fast.config import GRPOConfig
    from r1omni_fast.model.lora import AdapterDisabled
    from r1omni_fast.model.policy import load_policy
    from r1omni_fast.train.grpo import GRPOTrainer

    model_dir, data, _, _ = tiny
    fields = grpo_fields(model_dir, data, tmp_path / "run", use_peft=True, lora_r=4, num_frames=4,
                         tunable_parts=["mm_language_model"])
    fields.pop("stage")
    trainer = GRPOTrainer(GRPOConfig(**fields), progress=False)  # the thinker's own clip loader
    assert isinstance(trainer.ref, AdapterDisabled)
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and ".language_model." in n for n in trained), trained
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trained}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
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
    storages = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    assert {p.untyped_storage().data_ptr() for p in trainer.ref.parameters()} <= storages


@pytest.mark.slow
def test_cli_sft_and_grpo_with_lora_then_merge_eval_and_predict_on_the_tiny_thinker(tiny, tmp_path):
    """use_peft through the CLI on the thinker, on records with audio from the video track, from a
    separate file and without audio: SFT and GRPO write adapter folders, the GRPO run resumes
    exactly, `merge` writes a thinker folder that eval and predict load."""
    from types import SimpleNamespace

    from r1omni_fast.train.metrics_log import read_jsonl

    model_dir, original, media, _ = tiny
    data = SimpleNamespace(**{split: _mixed_audio(Path(getattr(original, split)), media, tmp_path / f"{split}.json")
                              for split in ("sft", "train", "test")})
    lora = dict(use_peft=True, lora_r=4, lora_alpha=8, tunable_parts=["mm_language_model"])
    sft = tmp_path / "sft"
    cfg = write_config(tmp_path / "sft.yaml", **_fields("sft", model_dir, data, sft, max_steps=3, save_steps=3, **lora))
    result = run_cli(["train", "--config", str(cfg)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sft / "adapter_model.safetensors").is_file() and not (sft / "model.safetensors").exists()

    straight, broken = tmp_path / "grpo", tmp_path / "grpo-resumed"
    for out, steps in ((straight, 2), (broken, 1)):
        cfg = write_config(tmp_path / f"{out.name}.yaml", **_fields("grpo", sft, data, out, max_steps=steps, **lora))
        result = run_cli(["train", "--config", str(cfg)])
        assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli(["train", "--config", str(tmp_path / "grpo-resumed.yaml"), "--max-steps", "2", "--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    keys = ("step", "loss", "reward", "kl", "grad_norm")
    assert [{k: r[k] for k in keys} for r in read_jsonl(straight / "metrics.jsonl")] == \
        [{k: r[k] for k in keys} for r in read_jsonl(broken / "metrics.jsonl")]
    assert (straight / "adapter_model.safetensors").is_file()

    merged = tmp_path / "merged"
    result = run_cli(["merge", "--model", str(straight), "--out", str(merged)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((merged / "config.json").read_text())["model_type"] == "qwen2_5_omni_thinker"
    result = run_cli(["eval", "--model", str(merged), "--data", str(data.test), "--out", str(tmp_path / "eval"),
                      "--max-new-tokens", "6", "--num-frames", "4"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 4
    result = run_cli(["predict", "--model", str(merged), "--data", str(data.test), "--out", str(tmp_path / "p.jsonl"),
                      "--max-new-tokens", "6", "--num-frames", "4"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_jsonl(tmp_path / "p.jsonl")) == 4
