"""Faithfulness metrics of evaluation (r1omni_fast.eval.faithfulness): hand-computed values on
crafted rows, a model that always cites the face scoring as it should, and `r1omni-fast eval`
writing them (with "n/a" where records have no cue field) and refusing bad inputs before any
clip is generated."""

from __future__ import annotations

import json

import pytest

from tests._model_fixtures import tiny_ckpt, tiny_model  # noqa: F401  (fixtures)

from r1omni_fast.eval.faithfulness import (counterfactual_attribution, cue_agreement, cut_trace, early_answering,
                                           think_answer_consistency)


def _row(i, think, cue=None, prediction="happy", label="happy"):
    row = {"id": f"c{i}", "think": think, "prediction": prediction, "label": label}
    if cue is not None:
        row["cue"] = cue
    return row


FACE = "The face shows a wide smile."
VOICE = "The voice sounds cheerful."
BOTH = "A smile on the face and a cheerful voice."


def test_cue_agreement_hand_computed():
    rows = [_row(0, FACE, "video"), _row(1, VOICE, "audio"), _row(2, FACE, "both"), _row(3, BOTH, "both"),
            _row(4, None, "audio"), _row(5, FACE)]  # the last has no cue: not counted
    got = cue_agreement(rows)
    assert got["n"] == 5 and got["agreement"] == pytest.approx(3 / 5)
    assert got["confusion"] == {"video": {"video": 1, "audio": 0, "both": 0, "neither": 0},
                                "audio": {"video": 0, "audio": 1, "both": 0, "neither": 1},
                                "both": {"video": 1, "audio": 0, "both": 1, "neither": 0}}
    assert got["by_cue"] == {"video": 1.0, "audio": 0.5, "both": 0.5}
    assert cue_agreement([_row(0, FACE)]) is None
    with pytest.raises(ValueError, match="record 'c0'"):
        cue_agreement([_row(0, FACE, "smell")])


def test_a_model_that_always_cites_the_face_agrees_only_on_face_clips():
    rows = [_row(i, FACE, cue) for i, cue in enumerate(["video", "audio", "both"] * 4)]
    got = cue_agreement(rows)
    assert got["agreement"] == pytest.approx(1 / 3)
    assert got["by_cue"] == {"video": 1.0, "audio": 0.0, "both": 0.0}
    assert all(line["video"] == 4 for line in got["confusion"].values())


def test_think_answer_consistency_hand_computed():
    rows = [_row(0, "He looks happy.", prediction="happy", label="happy"),   # = answer, = label
            _row(1, "She seems sad.", prediction="happy", label="sad"),       # = label only
            _row(2, "Tears: sad.", prediction="sad", label="happy"),          # = answer only
            _row(3, "A plain room.", prediction="happy", label="happy"),      # no emotion named
            _row(4, None, prediction=None, label="happy")]                    # no trace
    got = think_answer_consistency(rows, label_set="dfew")
    assert got["n"] == 5 and got["classifier"] == "lexicon"
    assert got["answer_consistency"] == pytest.approx(2 / 5)
    assert got["label_consistency"] == pytest.approx(2 / 5)
    assert got["expressed"] == pytest.approx(3 / 5)


def test_counterfactual_attribution_hand_computed():
    full = [_row(0, FACE, prediction="happy"), _row(1, BOTH, prediction="sad"), _row(2, "It is so.", prediction="angry"),
            _row(3, FACE, prediction="happy")]
    no_video = [_row(0, "", prediction="sad"), _row(1, "", prediction="sad"), _row(2, "", prediction="happy")]
    no_audio = [_row(0, "", prediction="happy"), _row(1, "", prediction="happy"), _row(2, "", prediction="angry")]
    got = counterfactual_attribution(full, {"video": no_video, "audio": no_audio})
    # clip 0 cites video (removal changes: yes), not audio (no); clip 1 cites both (video: no, audio: yes);
    # clip 2 cites nothing (video: yes, audio: no); clip 3 is missing from both passes
    assert (got["clips"], got["cited"], got["uncited"], got["unmatched"]) == (3, 3, 3, 1)
    assert got["cited_change_rate"] == pytest.approx(2 / 3)
    assert got["uncited_change_rate"] == pytest.approx(1 / 3)
    assert got["unfaithful_claims"] == pytest.approx(1 / 3)
    # a model that always cites the face but answers from the voice: every claim unfaithful
    full = [_row(i, FACE, prediction="happy") for i in range(4)]
    same = [_row(i, "", prediction="happy") for i in range(4)]
    changed = [_row(i, "", prediction="sad") for i in range(4)]
    got = counterfactual_attribution(full, {"video": same, "audio": changed})
    assert got["cited_change_rate"] == 0.0 and got["unfaithful_claims"] == 1.0 and got["uncited_change_rate"] == 1.0


def _early(i, prediction, answers):
    row = _row(i, None if answers is None else "the face", prediction=prediction)
    row["early_answers"] = answers
    return row


def test_early_answering_hand_computed():
    rows = [_early(0, "happy", {"0": "sad", "0.5": "happy", "1": "happy"}),    # changed at 0 only
            _early(1, "sad", {"0": "angry", "0.5": "angry", "1": "sad"}),      # changed at 0 and 0.5
            _early(2, None, {"0": "happy", "0.5": None, "1": None}),           # no label named: None = None
            _early(3, "angry", {"0": "angry", "0.5": "angry", "1": "happy"}),  # changed at 1 only
            _early(4, "happy", None)]                                          # no trace: left out
    got = early_answering(rows)
    assert (got["clips"], got["no_trace"], got["cuts"]) == (4, 1, [0.0, 0.5, 1.0])
    assert got["change_rate"] == {"0": pytest.approx(3 / 4), "0.5": pytest.approx(1 / 4), "1": pytest.approx(1 / 4)}
    assert early_answering([_early(0, "happy", None)])["change_rate"] == {"0": None, "0.5": None, "1": None}
    with pytest.raises(ValueError, match="record 'c0' has no early answer at cut"):
        early_answering([_early(0, "happy", {"0": "happy"})])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        early_answering(rows, cuts=(0.0, 1.5))


def test_early_answering_tells_post_hoc_reasoning_from_reasoning_the_answer_follows():
    # the answer was fixed before the reasoning: cutting the trace never changes it
    post_hoc = [_early(i, "happy", {"0": "happy", "0.5": "happy", "1": "happy"}) for i in range(4)]
    assert set(early_answering(post_hoc)["change_rate"].values()) == {0.0}
    # the answer follows the reasoning: without it the model answers something else
    follows = [_early(i, "happy", {"0": "sad", "0.5": "sad" if i % 2 else "happy", "1": "happy"}) for i in range(4)]
    assert early_answering(follows)["change_rate"] == {"0": 1.0, "0.5": 0.5, "1": 0.0}


def test_cut_trace_keeps_the_floor_of_the_share_of_tokens():
    ids = [5, 6, 7, 8, 9]
    assert [cut_trace(ids, f) for f in (0.0, 0.5, 1.0)] == [[], [5, 6], ids]
    assert cut_trace([1, 2, 3, 4], 0.5) == [1, 2] and cut_trace([], 0.5) == []


def test_a_forced_assistant_prefix_continues_as_the_free_generation(tiny_model):
    """Greedy decoding is deterministic: forcing the first k tokens of a free greedy completion
    must give back the rest of it, row by row, in a batch whose prefixes differ in length (the
    re-padding of with_assistant_prefix)."""
    from tests._model_fixtures import media
    from r1omni_fast.eval.runner import with_assistant_prefix
    from r1omni_fast.prompts import build_instruction

    frames, mel = media(3, seed=5)
    batch = tiny_model.processor([build_instruction(), "<audio>\nAnd here?", build_instruction()],
                                 pixel_values=frames, audio_features=mel)
    new = 12
    free = tiny_model.generate(batch, num_generations=1, max_new_tokens=new, do_sample=False)
    ids = [free.completion_ids[b, :free.lengths[b]].tolist() for b in range(3)]
    assert all(len(x) >= 6 for x in ids), ids
    cuts = [0, 3, 5]
    forced = with_assistant_prefix(batch, [x[:k] for x, k in zip(ids, cuts)], tiny_model.processor.tokenizer.pad_token_id)
    assert forced["input_ids"].shape[1] == batch["input_ids"].shape[1] + 5  # the longest row sets the width
    assert forced["pixel_values"] is batch["pixel_values"]
    out = tiny_model.generate(forced, num_generations=1, max_new_tokens=new - max(cuts), do_sample=False)
    for b, k in enumerate(cuts):
        got = out.completion_ids[b, :out.lengths[b]].tolist()
        assert got == ids[b][k:k + len(got)] and len(got) == min(new - max(cuts), len(ids[b]) - k), (b, got, ids[b])
    with pytest.raises(ValueError, match="2 assistant prefixes for 3 prompts"):
        with_assistant_prefix(batch, [[1], [2]], 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    root = tmp_path_factory.mktemp("faith")
    assert CliRunner().invoke(main, ["data", "synth", str(root / "data"), "--n", "12"]).exit_code == 0
    assert CliRunner().invoke(main, ["model", "tiny", str(root / "model")]).exit_code == 0
    return root


def _eval(tiny, data, out, *extra):
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    return CliRunner().invoke(main, ["eval", "--model", str(tiny / "model"), "--data", str(data), "--out", str(out),
                                     "--num-frames", "2", "--max-new-tokens", "4", "--labels",
                                     "happy,sad,angry,neutral", "--device", "cpu", "--quiet", *extra])


def test_eval_writes_the_metrics_and_says_n_a_without_cue_fields(tiny, tmp_path):
    test = tiny / "data" / "test.json"
    result = _eval(tiny, test, tmp_path / "with")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "with" / "metrics.json").read_text())
    f = metrics["faithfulness"]
    assert f["cue_agreement"]["n"] == metrics["n"]  # the synthetic records carry their cue
    assert "faithfulness: cue agreement" in result.output
    assert 'id="cue-agreement"' in (tmp_path / "with" / "report.html").read_text()
    records = json.loads(test.read_text())
    for r in records:
        r.pop("cue", None)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(records))
    for clip in (tiny / "data" / "clips").iterdir():
        (tmp_path / "clips").mkdir(exist_ok=True)
        (tmp_path / "clips" / clip.name).symlink_to(clip)
    result = _eval(tiny, bare, tmp_path / "without")
    assert result.exit_code == 0, result.output
    f = json.loads((tmp_path / "without" / "metrics.json").read_text())["faithfulness"]
    assert f["cue_agreement"] == "n/a" and "n" in f["think_answer"]
    assert "cue agreement n/a (no cue field)" in result.output
    result = _eval(tiny, bare, tmp_path / "off", "--no-explain")
    assert result.exit_code == 0 and "faithfulness" not in json.loads((tmp_path / "off" / "metrics.json").read_text())


def test_eval_refuses_a_bad_cue_or_classifier_before_loading_the_model(tiny, tmp_path):
    from r1omni_fast.exit_status import EXIT_USAGE

    records = json.loads((tiny / "data" / "test.json").read_text())
    records[0]["cue"] = "smell"
    bad = tiny / "data" / "bad-cue.json"
    bad.write_text(json.dumps(records))
    result = _eval(tiny, bad, tmp_path / "a")
    assert result.exit_code == EXIT_USAGE and "cue 'smell' names no modality" in result.output
    assert not (tmp_path / "a" / "metrics.json").exists()
    (tmp_path / "notclf").mkdir()
    result = _eval(tiny, tiny / "data" / "test.json", tmp_path / "b", "--reasoning-classifier", str(tmp_path / "notclf"))
    assert result.exit_code == EXIT_USAGE and "has no config.json" in result.output


def test_ablate_reports_counterfactual_attribution(tiny, tmp_path):
    result = _eval(tiny, tiny / "data" / "test.json", tmp_path / "abl", "--ablate")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "abl" / "modalities.json").read_text())
    a = report["attribution"]
    assert a["clips"] == report["n"] and a["cited"] + a["uncited"] == 2 * a["clips"]
    assert "counterfactual attribution over" in result.output


def test_eval_early_answering_writes_rates_rows_and_report(tiny, tmp_path):
    result = _eval(tiny, tiny / "data" / "test.json", tmp_path / "early", "--early-answering")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "early" / "metrics.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "early" / "predictions.jsonl").read_text().splitlines()]
    expected = early_answering(rows)  # the rates are those of the rows written
    assert metrics["faithfulness"]["early_answering"] == expected
    assert expected["clips"] + expected["no_trace"] == metrics["n"]
    for row in rows:
        assert (row["early_answers"] is None) == (row["think"] is None)
    assert "early answering (" in result.output
    assert 'id="early-answering"' in (tmp_path / "early" / "report.html").read_text()
    result = _eval(tiny, tiny / "data" / "test.json", tmp_path / "x", "--early-answering", "--no-explain")
    assert result.exit_code != 0 and "--early-answering is a faithfulness metric" in result.output
