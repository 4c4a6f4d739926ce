"""Evaluation runner, modality ablation, cue lexicon and the `r1omni-fast eval` command, on the
tiny checkpoint and real synthetic clips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import _reward_reference as ref
from _eval_fixtures import SYNTH_LABELS, media_load_batch, media_module, synth_eval  # noqa: F401
from r1omni_fast.labels import ALIASES, resolve
from r1omni_fast.model import AUDIO_TOKEN_INDEX, VIDEO_TOKEN_INDEX, GenerationOutput, OmniModel
from r1omni_fast.rewards import parse_completion
from tests._model_fixtures import tiny_ckpt, tiny_model  # noqa: F401  (fixtures)

LABELS = resolve(list(SYNTH_LABELS))
FIELDS = {"id", "video", "label", "prediction", "think", "completion", "correct"}


def _read_rows(folder: Path) -> list:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def _assert_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
    with Image.open(path) as img:
        assert img.size[0] > 100 and img.size[1] > 100


def _script(model, monkeypatch, texts):
    """Replace ``model.generate`` by one returning ``texts`` in order (one per prompt row)."""
    queue = iter(texts)

    def generate(batch, **kwargs):
        assert kwargs["do_sample"] is False and kwargs["num_generations"] == 1
        rows = batch["input_ids"].shape[0]
        out = [next(queue) for _ in range(rows)]
        return GenerationOutput(torch.zeros(rows, 1, dtype=torch.long), torch.ones(rows, dtype=torch.long),
                                out, torch.arange(rows))

    monkeypatch.setattr(model, "generate", generate)


# ------------------------------------------------------------------------ the real model


def test_eval_on_tiny_checkpoint_writes_every_artifact(tiny_model, synth_eval, tmp_path):
    from r1omni_fast.eval.runner import evaluate

    out = tmp_path / "eval"
    metrics = evaluate(tiny_model, synth_eval.test, out, label_set=LABELS, loader=media_load_batch(),
                       max_new_tokens=12, batch_size=3, progress=False)
    test_ids = [r["id"] for r in json.loads(synth_eval.test.read_text())]
    assert metrics["n"] == len(test_ids) == 4 and metrics["skipped"] == []
    on_disk = json.loads((out / "metrics.json").read_text())
    for key in ("war", "uar", "per_class_recall", "confusion_matrix", "labels", "n", "format_rate",
                "unparsable", "outside_label_set"):
        assert on_disk[key] == metrics[key], key
    assert on_disk["labels"] == list(SYNTH_LABELS)
    rows = _read_rows(out)
    assert [r["id"] for r in rows] == test_ids  # data order across batches of 3 + 1
    for row in rows:
        assert FIELDS <= set(row)
        assert Path(row["video"]).is_file()
    _assert_png(out / "confusion_matrix.png")
    # The metrics are those of the rows written.
    assert metrics["war"] == sum(r["correct"] for r in rows) / len(rows)
    assert metrics["format_rate"] == sum(r["well_formed"] for r in rows) / len(rows)
    assert sum(map(sum, metrics["confusion_matrix"])) == len(rows)


def test_predictions_match_parse_completion_of_the_completions(tiny_model, synth_eval, tmp_path):
    from r1omni_fast.eval.runner import evaluate

    evaluate(tiny_model, synth_eval.test, tmp_path, label_set=LABELS, loader=media_load_batch(),
             num_frames=4, max_new_tokens=12, progress=False)
    for row in _read_rows(tmp_path):
        think, answer, well_formed = parse_completion(row["completion"])
        assert (row["think"], row["answer"], row["well_formed"]) == (think, answer, well_formed)
        text = answer if answer is not None else row["completion"]
        assert row["prediction"] == LABELS.canonical(text.strip(ref.ROBUST_TRIM))
        assert row["correct"] == (row["prediction"] == row["label"])


def test_eval_restores_train_mode_and_frame_count(tiny_model, synth_eval):
    """The trainers call evaluate on their policy mid-run: nothing of the model may change."""
    from r1omni_fast.eval.runner import evaluate

    tokens = tiny_model.processor.num_video_tokens
    tiny_model.train()
    try:
        metrics = evaluate(tiny_model, synth_eval.test, None, label_set=LABELS, loader=media_load_batch(),
                           num_frames=4, max_new_tokens=4, progress=False)
        assert tiny_model.training
    finally:
        tiny_model.eval()
    assert tiny_model.processor.num_video_tokens == tokens
    assert metrics["settings"]["num_frames"] == 4 and metrics["n"] == 4


class _InputSpy:
    """Records what reaches ``OmniModel.embed`` / ``encode_video`` / ``encode_audio``."""

    def __init__(self, monkeypatch, target):
        self.embeds, self.video_calls, self.audio_calls = [], 0, 0
        embed, video, audio = target.embed, target.encode_video, target.encode_audio

        def spy_embed(model_self, input_ids, **kw):
            self.embeds.append({"input_ids": input_ids.clone(), **{k: v for k, v in kw.items()}})
            return embed(model_self, input_ids, **kw)

        def spy_video(model_self, *a, **kw):
            self.video_calls += 1
            return video(model_self, *a, **kw)

        def spy_audio(model_self, *a, **kw):
            self.audio_calls += 1
            return audio(model_self, *a, **kw)

        monkeypatch.setattr(target, "embed", spy_embed)
        monkeypatch.setattr(target, "encode_video", spy_video)
        monkeypatch.setattr(target, "encode_audio", spy_audio)


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_single_modality_feeds_no_features_of_the_other(tiny_model, synth_eval, tmp_path, monkeypatch, modality):
    from r1omni_fast.eval.runner import evaluate

    spy = _InputSpy(monkeypatch, OmniModel)
    loads = []

    def loader(paths, **kw):
        loads.append(kw)
        return media_load_batch()(paths, **kw)

    evaluate(tiny_model, synth_eval.test, tmp_path, modalities=modality, label_set=LABELS, loader=loader,
             max_new_tokens=4, progress=False)
    assert spy.embeds, "the model was never called"
    for call in spy.embeds:
        if modality == "audio":
            assert call["pixel_values"] is None and call["bert_input_ids"] is None
            assert not (call["input_ids"] == VIDEO_TOKEN_INDEX).any()
            assert (call["input_ids"] == AUDIO_TOKEN_INDEX).sum(1).tolist() == [500] * call["input_ids"].shape[0]
            assert call["audio_features"].shape[1:] == (128, 3000)
        else:
            assert call["audio_features"] is None
            assert not (call["input_ids"] == AUDIO_TOKEN_INDEX).any()
            assert call["pixel_values"].shape[1] == tiny_model.config.num_frames
    assert (spy.video_calls == 0) == (modality == "audio")
    assert (spy.audio_calls == 0) == (modality == "video")
    assert all(kw["audio"] is (modality == "audio") for kw in loads)  # no audio decoded for video-only


def test_ablation_writes_modalities_json_and_chart(tiny_model, synth_eval, tmp_path):
    from r1omni_fast.eval.runner import ablate, ablation_table

    report = ablate(tiny_model, synth_eval.test, tmp_path, label_set=LABELS, loader=media_load_batch(),
                    num_frames=4, max_new_tokens=4, progress=False)
    on_disk = json.loads((tmp_path / "modalities.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert list(on_disk["settings"]) == ["video+audio", "video", "audio"]
    for name, setting in on_disk["settings"].items():
        assert setting["n"] == on_disk["n"] == 4
        folder = Path(setting["dir"])
        assert json.loads((folder / "metrics.json").read_text())["modalities"] == setting["modalities"]
        assert [r["id"] for r in _read_rows(folder)] == [r["id"] for r in _read_rows(Path(on_disk["settings"]["video"]["dir"]))]
        assert set(setting["cue_mentions"]) == {"visual", "auditory", "both", "neither", "traces"}
        assert set(setting["by_cue"]) <= {"video", "audio", "both"}
    assert on_disk["settings"]["audio"]["modalities"] == ["audio"]
    _assert_png(tmp_path / "modalities.png")
    assert "video+audio" in ablation_table(report)


def test_unloadable_clip_is_skipped_and_reported(tiny_model, synth_eval, tmp_path):
    from r1omni_fast.eval.runner import evaluate

    records = json.loads(synth_eval.test.read_text())
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"not a video")
    for r in records:
        r["video"] = str(synth_eval.root / r["video"])
    records.append({**records[0], "id": "broken", "video": "clips/broken.mp4"})
    data = tmp_path / "test.json"
    data.write_text(json.dumps(records))
    metrics = evaluate(tiny_model, data, tmp_path / "out", label_set=LABELS, loader=media_load_batch(),
                       num_frames=4, max_new_tokens=4, progress=False)
    assert metrics["n"] == 4
    assert [s["id"] for s in metrics["skipped"]] == ["broken"]
    assert "broken" not in {r["id"] for r in _read_rows(tmp_path / "out")}


# ----------------------------------------------------------- answer matching, scripted


def test_scripted_completions_give_hand_computed_metrics(tiny_model, synth_eval, tmp_path, monkeypatch):
    """Four clips (one per class) with chosen completions; every number is counted by hand."""
    from r1omni_fast.eval.runner import evaluate

    labels = [r["conversations"][1]["value"] for r in json.loads(synth_eval.test.read_text())]
    wrong = next(x for x in SYNTH_LABELS if x != labels[2])
    texts = [
        f"<think>the face smiles</think>\n<answer>{labels[0]}</answer>",             # right, well formed
        f"<think>the voice</think><answer> {labels[1].upper()}! </answer> trailing",  # right (robust), not well formed
        f"<think>hm</think><answer>{wrong}</answer>",                                 # wrong, well formed
        "<think>no idea</think><answer>calm</answer>",                                # outside the label set
    ]
    _script(tiny_model, monkeypatch, texts)
    m = evaluate(tiny_model, synth_eval.test, tmp_path, label_set=LABELS, loader=media_load_batch(),
                 progress=False)
    assert m["n"] == 4 and m["war"] == 0.5
    recall = {labels[0]: 1.0, labels[1]: 1.0, labels[2]: 0.0, labels[3]: 0.0}
    assert m["per_class_recall"] == recall and m["uar"] == 0.5
    assert m["format_rate"] == 0.75 and m["outside_label_set"] == 1 and m["unparsable"] == 0
    assert m["confusion_matrix"][SYNTH_LABELS.index(labels[3])][-1] == 1  # "calm" -> other column
    assert m["confusion_matrix"][SYNTH_LABELS.index(labels[2])][SYNTH_LABELS.index(wrong)] == 1
    rows = _read_rows(tmp_path)
    assert [r["prediction"] for r in rows] == [labels[0], labels[1], wrong, None]
    assert rows[0]["think"] == "the face smiles"


def test_untagged_answers_are_read_as_the_accuracy_reward_reads_them(tiny_model, synth_eval, tmp_path, monkeypatch):
    from r1omni_fast.eval.runner import evaluate

    labels = [r["conversations"][1]["value"] for r in json.loads(synth_eval.test.read_text())]
    texts = [f"{labels[0]}.", f"I think it is {labels[1]}", "", "<answer>\n" + labels[3] + "\n</answer>"]
    _script(tiny_model, monkeypatch, texts)
    m = evaluate(tiny_model, synth_eval.test, tmp_path, label_set=LABELS, loader=media_load_batch(),
                 progress=False)
    rows = _read_rows(tmp_path)
    assert [r["prediction"] for r in rows] == [labels[0], None, None, labels[3]]
    assert m["unparsable"] == 3 and m["outside_label_set"] == 2 and m["format_rate"] == 0.0


def test_r1omni_and_raw_answer_matching_through_evaluate(tiny_model, synth_eval, tmp_path, monkeypatch):
    """R1-Omni's rules: its accuracy reward compares the stripped first single-line <answer> text with
    the gpt value; its evaluation script compares the whole stripped response with it."""
    from r1omni_fast.eval.runner import evaluate

    labels = [r["conversations"][1]["value"] for r in json.loads(synth_eval.test.read_text())]
    texts = [f"<think>a</think><answer> {labels[0]} </answer>", labels[1].upper(), f" {labels[2]}\n",
             f"<answer>{labels[3]}</answer> done"]
    expected = {"r1omni": [labels[0], None, labels[2], labels[3]], "raw": [None, None, labels[2], None],
                "robust": [labels[0], labels[1], labels[2], labels[3]]}
    for mode, predictions in expected.items():
        _script(tiny_model, monkeypatch, texts)
        m = evaluate(tiny_model, synth_eval.test, tmp_path / mode, label_set=LABELS, loader=media_load_batch(),
                     progress=False, answer_matching=mode)
        assert [r["prediction"] for r in _read_rows(tmp_path / mode)] == predictions, mode
        assert m["settings"]["answer_matching"] == mode
        assert m["war"] == sum(p is not None for p in predictions) / 4
    with pytest.raises(ValueError, match="answer_matching"):
        evaluate(tiny_model, synth_eval.test, None, label_set=LABELS, answer_matching="exact")


def test_completions_cut_off_by_the_budget_are_counted(tiny_model, synth_eval, tmp_path, monkeypatch):
    from r1omni_fast.eval.runner import evaluate

    tok = tiny_model.processor.tokenizer
    eos, word = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<answer>")
    # four rows, budget 3: ended at the budget (EOS last), cut off, shorter, cut off
    ids = torch.tensor([[word, word, eos], [word, word, word], [word, eos, 0], [word, word, word]])
    lengths = torch.tensor([3, 3, 2, 3])

    def generate(batch, **kwargs):
        assert kwargs["max_new_tokens"] == 3
        rows = batch["input_ids"].shape[0]
        return GenerationOutput(ids[:rows], lengths[:rows], ["<answer>"] * rows, torch.arange(rows))

    monkeypatch.setattr(tiny_model, "generate", generate)
    m = evaluate(tiny_model, synth_eval.test, tmp_path, label_set=LABELS, loader=media_load_batch(),
                 progress=False, max_new_tokens=3, batch_size=4)
    assert [r["truncated"] for r in _read_rows(tmp_path)] == [False, True, False, True]
    assert m["truncated"] == 2


_WORDS = st.sampled_from(list(SYNTH_LABELS) + list(ALIASES) + ["calm", "fear", "Happy", "joy!", "", "so sad"])
_PUNCT = st.text(alphabet=" \n.,!?\"'“”…。", max_size=3)


@given(st.lists(st.tuples(_PUNCT, _WORDS, _PUNCT), min_size=1, max_size=6),
       st.sampled_from(["dfew", "mafw", "ravdess", list(SYNTH_LABELS)]))
def test_predict_labels_matches_the_python_reference(parts, spec):
    from r1omni_fast.eval.runner import predict_labels

    label_set = resolve(spec)
    answers = [a + w + b for a, w, b in parts] + [None]
    assert predict_labels(answers, label_set) == [ref.robust_label(a, label_set) for a in answers[:-1]] + [None]


# ------------------------------------------------------------------------------ cue lexicon


def test_cue_lexicon_counts_mentions():
    from r1omni_fast.eval.cues import AUDITORY_WORDS, VISUAL_WORDS, cue_mentions, senses_mentioned

    assert not VISUAL_WORDS & AUDITORY_WORDS
    assert all(w.isalpha() and w.islower() for w in VISUAL_WORDS | AUDITORY_WORDS)
    assert senses_mentioned("Her FACE is tense.") == {"visual"}
    assert senses_mentioned("a trembling, high pitch") == {"auditory"}
    assert senses_mentioned("The smile and the loud voice") == {"visual", "auditory"}
    assert senses_mentioned("surface interfaces") == frozenset()  # whole words only
    assert senses_mentioned(None) == frozenset()
    shares = cue_mentions(["eyes wide", "voice shaking", "eyes and voice", "nothing", None])
    assert shares == {"visual": 0.4, "auditory": 0.4, "both": 0.2, "neither": 0.4, "traces": 5}
    assert cue_mentions([])["visual"] == 0.0


def test_synthetic_reasoning_mentions_the_senses_that_carry_the_label(synth_eval):
    """The SFT targets name the cue that is really present: the lexicon must see it."""
    from r1omni_fast.eval.cues import senses_mentioned

    for record in json.loads(synth_eval.sft.read_text()):
        think = parse_completion(record["conversations"][1]["value"]).think
        found = senses_mentioned(think)
        if record["cue"] in ("video", "both"):
            assert "visual" in found, think
        if record["cue"] in ("audio", "both"):
            assert "auditory" in found, think


# -------------------------------------------------------------------------------------- CLI


def _cli(args):
    from r1omni_fast.cli import main

    return CliRunner().invoke(main, ["eval", *args])


def test_cli_eval_prints_table_and_writes_artifacts(tiny_ckpt, synth_eval, tmp_path, media_module):
    out = tmp_path / "out"
    result = _cli(["--model", str(tiny_ckpt), "--data", str(synth_eval.test), "--out", str(out),
                   "--labels", ",".join(SYNTH_LABELS), "--max-new-tokens", "4", "--batch-size", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "WAR" in result.output and "UAR" in result.output and "happy" in result.output
    for name in ("metrics.json", "predictions.jsonl", "confusion_matrix.png", "report.html"):
        assert (out / name).is_file()
    assert result.output.splitlines()[-1] == "wrote " + ", ".join(
        f"{out}/{name}" for name in ("metrics.json", "predictions.jsonl", "confusion_matrix.png", "report.html"))
    assert json.loads((out / "metrics.json").read_text())["model"] == str(tiny_ckpt)


def test_cli_answer_matching_prompt_preset_device_and_dtype_reach_the_metrics(tiny_ckpt, synth_eval, tmp_path, media_module):
    from r1omni_fast.eval.runner import EVAL_QUESTION

    out = tmp_path / "out"
    base = ["--model", str(tiny_ckpt), "--data", str(synth_eval.test), "--out", str(out)]
    result = _cli(base + ["--labels", ",".join(SYNTH_LABELS), "--max-new-tokens", "2", "--batch-size", "4",
                          "--quiet", "--answer-matching", "raw", "--prompt-preset", "r1omni-eval",
                          "--device", "cpu", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["answer_matching"] == "raw" and settings["prompt"] == EVAL_QUESTION
    assert (settings["device"], settings["dtype"]) == ("cpu", "bfloat16")
    fp32 = _cli(base + ["--labels", ",".join(SYNTH_LABELS), "--max-new-tokens", "2", "--quiet"])
    assert fp32.exit_code == 0, fp32.output
    auto = json.loads((out / "metrics.json").read_text())["settings"]
    if torch.cuda.is_available():  # auto: CUDA in bf16 (fp16 on GPUs without bf16)
        want = ("cuda:0", "bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    else:  # auto: the CPU in fp32
        want = ("cpu", "float32")
    assert (auto["device"], auto["dtype"]) == want
    bad = _cli(base + ["--answer-matching", "exact"])
    assert bad.exit_code != 0 and "answer-matching" in bad.output
    both = _cli(base + ["--prompt", "Which?", "--prompt-preset", "r1omni-eval"])
    assert both.exit_code != 0 and "give one" in both.output
    ravdess = _cli(base + ["--labels", "ravdess", "--prompt-preset", "humanomni-eval"])
    assert ravdess.exit_code != 0 and "use --labels dfew or mafw" in ravdess.output


def test_cli_audio_only_feeds_no_video_features(tiny_ckpt, synth_eval, tmp_path, media_module, monkeypatch):
    spy = _InputSpy(monkeypatch, OmniModel)
    result = _cli(["--model", str(tiny_ckpt), "--data", str(synth_eval.test), "--out", str(tmp_path),
                   "--modalities", "audio", "--labels", ",".join(SYNTH_LABELS), "--max-new-tokens", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert spy.embeds and spy.video_calls == 0 and spy.audio_calls == len(spy.embeds)
    assert all(c["pixel_values"] is None and not (c["input_ids"] == VIDEO_TOKEN_INDEX).any() for c in spy.embeds)


def test_cli_errors_are_clear(tiny_ckpt, synth_eval, tmp_path):
    data = str(synth_eval.test)
    missing = tmp_path / "no-such-model"
    result = _cli(["--model", str(missing), "--data", data, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--model" in result.output and "does not exist" in result.output
    assert str(missing) in result.output

    result = _cli(["--model", str(tiny_ckpt), "--data", data, "--out", str(tmp_path / "o"), "--modalities", "smell"])
    assert result.exit_code == 2 and "--modalities" in result.output and "smell" in result.output

    result = _cli(["--model", str(tiny_ckpt), "--data", data, "--out", str(tmp_path / "o"), "--labels", "nope"])
    assert result.exit_code == 2 and "--labels" in result.output and "nope" in result.output

    result = _cli(["--model", str(tiny_ckpt), "--data", data, "--out", str(tmp_path / "o"), "--ablate",
                   "--modalities", "video"])
    assert result.exit_code == 2 and "--ablate" in result.output

    not_a_checkpoint = tmp_path / "empty"
    not_a_checkpoint.mkdir()
    result = _cli(["--model", str(not_a_checkpoint), "--data", data, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "config.json" in result.output and "Traceback" not in result.output


def test_cli_ablate(tiny_ckpt, synth_eval, tmp_path, media_module):
    out = tmp_path / "ablation"
    result = _cli(["--model", str(tiny_ckpt), "--data", str(synth_eval.test), "--out", str(out),
                   "--labels", ",".join(SYNTH_LABELS), "--ablate", "--num-frames", "2", "--max-new-tokens", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "video+audio" in result.output
    assert (out / "modalities.json").is_file() and (out / "modalities.png").is_file()
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"video_audio", "video", "audio"}
