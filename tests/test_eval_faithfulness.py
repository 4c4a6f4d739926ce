"""Faithfulness metrics of evaluation (r1omni_fast.eval.faithfulness): hand-computed values on
crafted rows, a model that always cites the face scoring as it should, and `r1omni-fast eval`
writing them (with "n/a" where records have no cue field) and refusing bad inputs before any
clip is generated."""

from __future__ import annotations

import json

import pytest

from r1omni_fast.eval.faithfulness import counterfactual_attribution, cue_agreement, think_answer_consistency


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
