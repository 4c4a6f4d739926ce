"""`r1omni-fast predict` and `r1omni_fast.eval.predict` on the tiny checkpoint and real clips:
row schema, failing clips, vote shares, agreement with `eval` and with transformers' own
`generate`, and every option of the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from _eval_fixtures import SYNTH_LABELS, media_load_batch, media_module, synth_eval  # noqa: F401
from _media_fixtures import SPECS, write_audio_only, write_clip
from r1omni_fast.eval.predict import ROW_KEYS, ClipInput, data_inputs, predict
from r1omni_fast.labels import resolve
from r1omni_fast.model import GenerationOutput, OmniModel
from r1omni_fast.model.humanomni.processor import OmniProcessor
from tests._model_fixtures import tiny_ckpt, tiny_model  # noqa: F401  (fixtures)

LABELS = resolve(list(SYNTH_LABELS))


def _cli(*args):
    from r1omni_fast.cli import main

    return CliRunner().invoke(main, ["predict", *map(str, args)])


def _clips(synth, n=2):
    return sorted((synth.root / "clips").glob("*.mp4"))[:n]


def _rows(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def odd_media(tmp_path_factory):
    """A clip without an audio track, an audio-only file and a corrupt 'clip'."""
    folder = tmp_path_factory.mktemp("odd-media")
    silent = write_clip(next(s for s in SPECS if s.name == "n9_noaudio"), folder)
    sound = write_audio_only(folder)
    broken = folder / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return {"silent": silent, "sound": sound, "broken": broken}


# ------------------------------------------------------------------------------ the CLI


def test_cli_rows_schema_and_failing_clips(tiny_ckpt, synth_eval, odd_media, tmp_path, media_module):
    good = _clips(synth_eval)
    missing = tmp_path / "nowhere.mp4"
    out = tmp_path / "rows.jsonl"
    result = _cli("--model", tiny_ckpt, good[0], odd_media["broken"], missing, good[1], "--out", out,
                  "--max-new-tokens", 6, "--batch-size", 2, "--device", "cpu", "--dtype", "float32")
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [r["video"] for r in rows] == [str(p) for p in (good[0], odd_media["broken"], missing, good[1])]
    for row in rows:
        assert tuple(row) == ROW_KEYS
        assert row["modalities"] == ["video", "audio"] and row["label"] is None and row["correct"] is None
    for row in (rows[0], rows[3]):
        assert row["error"] is None and isinstance(row["completion"], str) and row["elapsed_s"] > 0
        assert isinstance(row["well_formed"], bool) and row["votes"] is None
    assert rows[1]["error"].startswith("cannot load") and str(odd_media["broken"]) in rows[1]["error"]
    assert rows[2]["error"] == f"clip {missing} does not exist: check the path"
    assert rows[1]["completion"] is None and rows[2]["answer"] is None
    # each failure is one line on stderr; the answers and reasoning of the others on stdout
    assert result.stderr.count("error:") == 2 and "Traceback" not in result.output
    assert f"[1/4] {good[0]}" in result.stdout and f"[4/4] {good[1]}" in result.stdout
    assert result.stdout.count("reasoning:") == 2 and "2 of 4 clips predicted" in result.stdout


def test_cli_exit_status_is_nonzero_only_when_nothing_was_predicted(tiny_ckpt, odd_media, tmp_path):
    result = _cli("--model", tiny_ckpt, odd_media["broken"], tmp_path / "nowhere.mp4", "--max-new-tokens", 2)
    assert result.exit_code == 1
    assert "none of the 2 clips could be predicted" in result.output


def test_cli_bad_inputs_one_line_each(tiny_ckpt, synth_eval, odd_media, tmp_path, media_module):
    empty = tmp_path / "empty"
    empty.mkdir()
    good = _clips(synth_eval, 1)[0]
    result = _cli("--model", tiny_ckpt, empty, good, "--glob", str(tmp_path / "**" / "*.avi"), "--max-new-tokens", 2,
                  "--quiet")
    assert result.exit_code == 0, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert f"folder {empty} holds no clips" in errors[0]
    assert "--glob" in errors[1] and "matches no file" in errors[1]
    assert result.stdout == "1 of 1 clips predicted\n"  # --quiet: only the summary

    not_a_checkpoint = tmp_path / "not-a-checkpoint"
    not_a_checkpoint.mkdir()
    result = _cli("--model", not_a_checkpoint, good)
    assert result.exit_code == 2 and "config.json" in result.output and "Traceback" not in result.output

    # audio only, on a clip without sound: the row says what to do
    out = tmp_path / "audio.jsonl"
    result = _cli("--model", tiny_ckpt, odd_media["silent"], good, "--modalities", "audio", "--max-new-tokens", 2,
                  "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    silent, ok = _rows(out)
    assert "no audio" in silent["error"] and "--audio FILE" in silent["error"] and "--modalities video" in silent["error"]
    assert ok["error"] is None and ok["modalities"] == ["audio"]

    # video + audio on a clip without sound: HumanOmni hears silence, and the row and stderr say so
    out = tmp_path / "silent.jsonl"
    result = _cli("--model", tiny_ckpt, odd_media["silent"], good, "--max-new-tokens", 2, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    silent, ok = _rows(out)
    assert silent["error"] is None and silent["silent_audio"] is True and ok["silent_audio"] is False
    assert f"note: {odd_media['silent']} has no audio track: the model heard silence" in result.stderr

    for args, flag in ((["--modalities", "smell"], "--modalities"), (["--labels", "nope"], "--labels"),
                       (["--dtype", "int8"], "--dtype"), (["--prompt", "x", "--prompt-preset", "r1omni"], "--prompt"),
                       (["--prompt-preset", "poem"], "poem"), (["--audio", odd_media["sound"], "--audio",
                                                                odd_media["sound"]], "--audio")):
        result = _cli("--model", tiny_ckpt, good, *args)
        assert result.exit_code == 2 and flag in result.output, (args, result.output)
    result = _cli("--model", tiny_ckpt)
    assert result.exit_code == 2 and "no clips" in result.output
    result = _cli("--model", tiny_ckpt, "--glob", str(tmp_path / "nothing" / "*.mp4"))
    assert result.exit_code == 2 and "no clips to predict" in result.output and "matches no file" in result.output
    assert len([line for line in result.output.splitlines() if "matches no file" in line]) == 1
    same = tmp_path / "rows.jsonl"
    result = _cli("--model", tiny_ckpt, good, "--out", same, "--report", same)
    assert result.exit_code == 2 and "would overwrite the predictions" in result.output and not same.exists()
    if not torch.cuda.is_available():
        result = _cli("--model", tiny_ckpt, good, "--device", "cuda")
        assert result.exit_code == 2 and "no CUDA device" in result.output


def test_cli_glob_folder_prompt_preset_and_separate_audio(tiny_ckpt, synth_eval, odd_media, tmp_path, monkeypatch,
                                                          media_module):
    """--glob and folders expand to sorted clips; the preset's text (with the label set) reaches
    the processor; --audio replaces the clip's own sound."""
    seen = {"instructions": [], "audio": []}
    call, embed = OmniProcessor.__call__, OmniModel.embed

    def spy_call(self, instructions, *a, **kw):
        seen["instructions"] += list(instructions)
        return call(self, instructions, *a, **kw)

    def spy_embed(self, input_ids, **kw):
        seen["audio"].append(kw.get("audio_features"))
        return embed(self, input_ids, **kw)

    monkeypatch.setattr(OmniProcessor, "__call__", spy_call)
    monkeypatch.setattr(OmniModel, "embed", spy_embed)
    out = tmp_path / "glob.jsonl"
    result = _cli("--model", tiny_ckpt, "--glob", str(synth_eval.root / "**" / "000[0-2].mp4"), "--prompt-preset",
                  "r1omni-labels", "--labels", ",".join(SYNTH_LABELS), "--num-frames", 2, "--max-new-tokens", 2,
                  "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert [Path(r["video"]).name for r in _rows(out)] == ["0000.mp4", "0001.mp4", "0002.mp4"]
    assert len(seen["instructions"]) == 3
    assert all("Answer with one of: happy, sad, angry, neutral." in t for t in seen["instructions"])

    seen["instructions"].clear()
    result = _cli("--model", tiny_ckpt, synth_eval.root / "clips", "--prompt", "Which emotion?", "--modalities", "video",
                  "--max-new-tokens", 2, "--quiet")
    assert result.exit_code == 0, result.output
    assert len(seen["instructions"]) == len(_clips(synth_eval, 100))
    assert all(t.endswith("Which emotion?") and "<audio>" not in t for t in seen["instructions"])

    from r1omni_fast.media import load_audio, load_clip, whisper_log_mel

    seen["audio"].clear()
    seen["instructions"].clear()
    clip = _clips(synth_eval, 1)[0]
    result = _cli("--model", tiny_ckpt, clip, "--audio", odd_media["sound"], "--max-new-tokens", 1, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    # the default preset is R1-Omni's inference example, spaced as its README passes it to inference.py
    assert seen["instructions"] == [
        "<video>\n<audio>\nAs an emotional recognition expert; throughout the video, which emotion conveyed by the "
        "characters is the most obvious to you? Output the thinking process in <think> </think> and final emotion "
        "in <answer> </answer> tags."]
    assert _rows(out)[0]["audio"] == str(odd_media["sound"])
    expected = whisper_log_mel(load_audio(odd_media["sound"]), _mels(tiny_ckpt))
    own = load_clip(clip, n_mels=_mels(tiny_ckpt)).mel
    given = seen["audio"][0][0].numpy()
    assert abs(given - expected).max() < 1e-4 and abs(given - own).max() > 0.1


def _mels(ckpt) -> int:
    return json.loads((Path(ckpt) / "audio_tower" / "config.json").read_text())["num_mel_bins"]


def test_cli_data_writes_rows_metrics_and_report(tiny_ckpt, synth_eval, tmp_path, media_module):
    out = tmp_path / "pred" / "rows.jsonl"
    result = _cli("--model", tiny_ckpt, "--data", synth_eval.test, "--labels", ",".join(SYNTH_LABELS), "--out", out,
                  "--max-new-tokens", 4, "--num-generations", 2, "--temperature", 0.7, "--top-p", 0.9, "--seed", 5)
    assert result.exit_code == 0, result.output
    records = json.loads(synth_eval.test.read_text())
    rows = _rows(out)
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    assert [r["label"] for r in rows] == [r["conversations"][1]["value"] for r in records]
    assert all(r["correct"] == (r["prediction"] == r["label"]) for r in rows)
    assert all(len(r["completions"]) == 2 and abs(sum(r["votes"].values()) - 1) < 1e-9 for r in rows)
    assert "WAR" in result.stdout and "UAR" in result.stdout
    report = (tmp_path / "pred" / "report.html").read_text()
    assert report.count('<tr class="') == len(rows)

    result = _cli("--model", tiny_ckpt, "--data", synth_eval.test, "--labels", ",".join(SYNTH_LABELS), "--out",
                  tmp_path / "quiet" / "rows.jsonl", "--max-new-tokens", 1, "--no-report", "--quiet")
    assert result.exit_code == 0 and not (tmp_path / "quiet" / "report.html").exists()
    result = _cli("--model", tiny_ckpt, _clips(synth_eval, 1)[0], "--report", tmp_path / "r" / "clip.html",
                  "--max-new-tokens", 1, "--quiet")
    assert result.exit_code == 0 and (tmp_path / "r" / "clip.html").is_file()


# ---------------------------------------------------------------- agreement with references


def test_predict_answer_is_evals_prediction(tiny_model, synth_eval, tmp_path):
    """Same model, same clips: predict (from the data file, and from the bare clip paths with the
    default prompt, which is the synthetic records' prompt) gives eval's greedy completions."""
    from r1omni_fast.eval.runner import evaluate

    evaluate(tiny_model, synth_eval.test, tmp_path, label_set=LABELS, loader=media_load_batch(), max_new_tokens=10,
             batch_size=3, progress=False)
    by_id = {r["id"]: r for r in _rows(tmp_path / "predictions.jsonl")}
    items, _ = data_inputs(synth_eval.test, LABELS)
    rows = predict(tiny_model, items, label_set=LABELS, loader=media_load_batch(), max_new_tokens=10, batch_size=2)
    bare = predict(tiny_model, [ClipInput(video=i.video) for i in items], label_set=LABELS, loader=media_load_batch(),
                   max_new_tokens=10, batch_size=4)
    assert len(rows) == len(bare) == len(by_id) == 4
    for row, plain in zip(rows, bare):
        ev = by_id[row["id"]]
        assert row["completion"] == plain["completion"] == ev["completion"]
        assert (row["prediction"], row["answer"], row["think"], row["correct"]) == (
            ev["prediction"], ev["answer"], ev["think"], ev["correct"])


def test_predict_equals_transformers_generate_clip_by_clip(tiny_model, synth_eval):
    """The batched, prefetched, prefix-shared greedy path against the plain loop: one clip at a
    time, PyAV decoding, transformers' own ``generate`` over the spliced embeddings."""
    from r1omni_fast.media import pyav as media_pyav
    from r1omni_fast.eval.predict import PROMPT_PRESETS
    from r1omni_fast.eval.runner import eval_mode
    from r1omni_fast.prompts import build_instruction

    clips = _clips(synth_eval, 3)
    rows = predict(tiny_model, [ClipInput(video=c) for c in clips], max_new_tokens=8, batch_size=2)
    processor = tiny_model.processor
    vision = tiny_model.preprocessor_configs.get("vision_tower", {})
    with eval_mode(tiny_model, tiny_model.config.num_frames):
        for clip, row in zip(clips, rows):
            c = media_pyav.load_clip(clip, num_frames=tiny_model.config.num_frames,
                                     image_size=tiny_model.config.vision.image_size, aspect="resize",
                                     mean=tuple(vision.get("image_mean", (0.5,) * 3)),
                                     std=tuple(vision.get("image_std", (0.5,) * 3)),
                                     n_mels=tiny_model.config.audio.num_mel_bins)
            inputs = processor([build_instruction(PROMPT_PRESETS["r1omni"], format_suffix=False)],
                               pixel_values=torch.from_numpy(c.frames)[None], audio_features=torch.from_numpy(c.mel)[None])
            with torch.no_grad():
                embeds = tiny_model.embed(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                          audio_features=inputs["audio_features"],
                                          bert_input_ids=inputs["bert_input_ids"],
                                          bert_attention_mask=inputs["bert_attention_mask"])
                ids = tiny_model.llm.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                                              max_new_tokens=8, do_sample=False,
                                              eos_token_id=processor.eos_token_ids,
                                              pad_token_id=processor.tokenizer.pad_token_id)[0].tolist()
            eos = set(processor.eos_token_ids)
            cut = next((i for i, t in enumerate(ids) if t in eos), len(ids))
            assert row["completion"] == processor.decode(ids[:cut]), clip


# ----------------------------------------------------------------------------- vote shares


def test_vote_share_of_scripted_samples(tiny_model, synth_eval, monkeypatch):
    """N answers per clip: shares counted per label (aliases and case folded), ties go to the
    first drawn, the reasoning is that of the first sample giving the winning answer, and each
    clip draws from its own generator seeded seed + index."""
    scripts = [
        ["<think>a</think><answer>sad</answer>", "<think>b</think><answer>Happy</answer>",
         "<think>c</think><answer>happiness</answer>", "<think>d</think><answer>calm</answer>"],
        ["<think>x</think><answer>angry</answer>", "no tags at all", "<think>y</think><answer>neutral</answer>",
         "no tags at all"],
    ]
    seeds = []

    def generate(batch, **kw):
        assert kw["do_sample"] is True and kw["num_generations"] == 4 and kw["temperature"] == 0.5
        seeds.extend(g.initial_seed() for g in kw["generator"])
        rows = batch["input_ids"].shape[0]
        texts = [t for i in range(rows) for t in scripts[len(seeds) - rows + i]]
        return GenerationOutput(torch.zeros(len(texts), 1, dtype=torch.long), torch.ones(len(texts), dtype=torch.long),
                                texts, torch.arange(rows).repeat_interleave(4))

    monkeypatch.setattr(tiny_model, "generate", generate)
    clips = _clips(synth_eval, 2)
    rows = predict(tiny_model, [ClipInput(video=c, label="happy") for c in clips], num_generations=4, temperature=0.5,
                   seed=10, batch_size=1, label_set=LABELS, loader=media_load_batch())
    assert seeds == [10, 11]
    first, second = rows
    assert first["votes"] == {"happy": 0.5, "sad": 0.25, "calm": 0.25}
    assert (first["answer"], first["prediction"], first["think"], first["correct"]) == ("Happy", "happy", "b", True)
    assert first["completions"] == scripts[0]
    assert second["votes"] == {"no tags at all": 0.5, "angry": 0.25, "neutral": 0.25}
    assert (second["answer"], second["prediction"], second["think"], second["well_formed"]) == (
        None, None, None, False)
    assert second["completion"] == "no tags at all"
    assert second["correct"] is False


def test_sampled_answers_do_not_depend_on_the_batch(tiny_model, synth_eval):
    clips = [ClipInput(video=c) for c in _clips(synth_eval, 3)]
    together = predict(tiny_model, clips, num_generations=3, temperature=1.0, seed=7, max_new_tokens=5, batch_size=3,
                       loader=media_load_batch())
    alone = predict(tiny_model, clips[2:], num_generations=3, temperature=1.0, seed=9, max_new_tokens=5,
                    loader=media_load_batch())
    assert together[2]["completions"] == alone[0]["completions"]  # clip 2 of seed 7 draws from seed 9, as clip 0 of seed 9
    assert len(set(together[0]["completions"])) > 1  # really sampled
    for row in together:
        assert abs(sum(row["votes"].values()) - 1) < 1e-9 and row["completion"] in row["completions"]


def test_dtype_and_device_choice():
    from r1omni_fast.eval.predict import choose_device, choose_dtype

    cpu = torch.device("cpu")
    assert choose_dtype(None, cpu) == torch.float32 and choose_dtype("bf16", cpu) == torch.bfloat16
    assert choose_device("cpu") == cpu
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert choose_dtype("auto", torch.device("cuda")) == expected
    with pytest.raises(ValueError, match="--dtype"):
        choose_dtype("int4", cpu)


@pytest.mark.gpu
def test_predict_on_cuda_in_bf16(tiny_ckpt, synth_eval):
    from r1omni_fast.eval.predict import load_for_inference

    model = load_for_inference(tiny_ckpt)
    assert model.device.type == "cuda" and model.dtype in (torch.bfloat16, torch.float16)
    rows = predict(model, [ClipInput(video=c) for c in _clips(synth_eval, 3)], max_new_tokens=6, batch_size=2)
    assert all(r["error"] is None and isinstance(r["completion"], str) for r in rows)


def test_the_default_prompt_is_the_instruction_the_data_files_train_on(synth_eval):
    """predict's default instruction equals the synthetic data's (R1-Omni's question, one space,
    the format suffix), so a model trained here reasons in its answers; R1-Omni's inference.py
    text (two spaces) is the r1omni-infer preset."""
    from r1omni_fast.eval.predict import DEFAULT_PRESET, PROMPT_PRESETS
    from r1omni_fast.prompts import R1OMNI_INFER_INSTRUCTION

    record = json.loads(Path(synth_eval.test).read_text())[0]
    human = record["conversations"][0]["value"]
    assert human.replace("<video>\n", "").replace("<audio>\n", "") == PROMPT_PRESETS[DEFAULT_PRESET]
    assert PROMPT_PRESETS["r1omni-infer"] == R1OMNI_INFER_INSTRUCTION and "  Output" in R1OMNI_INFER_INSTRUCTION
