"""A record whose prompt is video-only (``<video>`` without ``<audio>``, a clip without an audio
track) is evaluated, not skipped: by ``r1omni-fast eval`` and by a run's in-training evaluation,
on both backends. It is given exactly what ``--modalities video`` gives it, and the other records
keep their audio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _media_fixtures import ffmpeg
from _train_fixtures import LABELS, make_data, run_cli, sft_fields, write_config


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    """(root, data with a video-only record, {backend: tiny model folder})."""
    root = tmp_path_factory.mktemp("record-modalities")
    data = make_data(root / "data", n=8)
    records = json.loads(Path(data.test).read_text())[:2]
    for record in records:
        record["video"] = str((Path(data.test).parent / record["video"]).resolve())
    silent = root / "silent.mp4"
    ffmpeg("-i", records[1]["video"], "-an", "-c:v", "copy", str(silent))
    records[1]["video"] = str(silent)
    records[1]["conversations"][0]["value"] = records[1]["conversations"][0]["value"].replace("<audio>\n", "")
    assert "<video>" in records[1]["conversations"][0]["value"]
    mixed = root / "mixed.json"
    mixed.write_text(json.dumps(records))
    only_video = root / "only-video.json"
    only_video.write_text(json.dumps(records[1:]))
    with_audio = root / "with-audio.json"
    with_audio.write_text(json.dumps(records[:1]))
    models = {}
    for arch in ("humanomni", "qwen2_5_omni"):
        result = run_cli(["model", "tiny", "--arch", arch, str(root / arch)])
        assert result.returncode == 0, result.stderr[-3000:]
        models[arch] = root / arch
    return root, {"mixed": mixed, "only_video": only_video, "with_audio": with_audio}, data, models


def _eval(model: Path, data: Path, out: Path, modalities: str) -> dict:
    result = run_cli(["eval", "--model", str(model), "--data", str(data), "--out", str(out), "--modalities", modalities,
                      "--num-frames", "2", "--max-new-tokens", "8", "--labels", ",".join(LABELS), "--device", "cpu",
                      "--batch-size", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {"metrics": json.loads((out / "metrics.json").read_text()), "rows": {r["id"]: r for r in rows}}


@pytest.mark.parametrize("arch", ["humanomni", "qwen2_5_omni"])
def test_eval_gives_a_video_only_record_video_and_the_others_audio(material, arch, tmp_path):
    _, files, _, models = material
    mixed = _eval(models[arch], files["mixed"], tmp_path / "mixed", "video,audio")
    assert mixed["metrics"]["n"] == 2 and mixed["metrics"]["skipped"] == []
    ids = [r["id"] for r in json.loads(files["mixed"].read_text())]
    # the video-only record: what --modalities video gives it; the other: what it gets on its own
    alone_video = _eval(models[arch], files["only_video"], tmp_path / "video", "video")
    alone_audio = _eval(models[arch], files["with_audio"], tmp_path / "audio", "video,audio")
    assert mixed["rows"][ids[1]]["completion"] == alone_video["rows"][ids[1]]["completion"]
    assert mixed["rows"][ids[0]]["completion"] == alone_audio["rows"][ids[0]]["completion"]


@pytest.mark.parametrize("arch", ["humanomni", "qwen2_5_omni"])
def test_in_training_evaluation_evaluates_a_video_only_record(material, arch, tmp_path):
    from r1omni_fast.train.metrics_log import read_jsonl

    root, files, data, models = material
    out = tmp_path / "sft"
    cfg = write_config(tmp_path / "sft.yaml", **sft_fields(models[arch], data, out, max_steps=1, num_frames=2,
                                                           eval_file=str(files["mixed"]), eval_steps=1,
                                                           eval_max_new_tokens=8))
    result = run_cli(["train", "--config", str(cfg)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped" not in result.stderr
    evals = [r for r in read_jsonl(out / "metrics.jsonl") if "eval/n" in r]
    assert evals and evals[-1]["eval/n"] == 2 and "eval/error" not in evals[-1]


def test_audio_alone_skips_a_video_only_record_and_counts_it(material, tmp_path):
    """Under --modalities audio a video-only record has nothing to give the model: eval skips it
    (named in metrics.json, not in n), the --ablate audio pass leaves it out of the attribution
    (counted as unmatched), and predict gives it an error row with no modality."""
    _, files, _, models = material
    ids = [r["id"] for r in json.loads(files["mixed"].read_text())]
    audio = _eval(models["humanomni"], files["mixed"], tmp_path / "audio", "audio")
    assert audio["metrics"]["n"] == 1 and list(audio["rows"]) == [ids[0]]
    assert [s["id"] for s in audio["metrics"]["skipped"]] == [ids[1]]
    assert "nothing to give the model" in audio["metrics"]["skipped"][0]["reason"]

    result = run_cli(["eval", "--model", str(models["humanomni"]), "--data", str(files["mixed"]),
                      "--out", str(tmp_path / "ablate"), "--ablate", "--num-frames", "2", "--max-new-tokens", "8",
                      "--labels", ",".join(LABELS), "--device", "cpu", "--batch-size", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "ablate" / "modalities.json").read_text())
    assert summary["settings"]["audio"]["n"] == 1 and summary["settings"]["video"]["n"] == 2
    attribution = summary["attribution"]
    assert attribution["clips"] == 1 and attribution["unmatched"] == 1, attribution
    assert summary["settings"]["audio"]["skipped"] == 1 and "skipped (not evaluated" in result.stdout
    assert "audio 1" in result.stdout and "counterfactual attribution" in result.stdout
    result = run_cli(["eval", "--model", str(models["humanomni"]), "--data", str(files["mixed"]),
                      "--out", str(tmp_path / "ablate-plain"), "--ablate", "--no-explain", "--num-frames", "2",
                      "--max-new-tokens", "8", "--labels", ",".join(LABELS), "--device", "cpu", "--batch-size", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "attribution" not in json.loads((tmp_path / "ablate-plain" / "modalities.json").read_text())
    assert "counterfactual attribution" not in result.stdout

    for modalities, given in (("audio", [["audio"], []]), ("video,audio", [["video", "audio"], ["video"]])):
        out = tmp_path / f"predict-{modalities}.jsonl"
        result = run_cli(["predict", "--model", str(models["humanomni"]), "--data", str(files["mixed"]),
                          "--out", str(out), "--modalities", modalities, "--num-frames", "2",
                          "--max-new-tokens", "8", "--device", "cpu", "--labels", ",".join(LABELS)])
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["modalities"] for r in rows] == given
        assert (rows[1]["error"] is not None) == (modalities == "audio")
        if modalities == "audio":
            assert "nothing to give the model" in rows[1]["error"] and "predict it with video" in rows[1]["error"]
            assert rows[1]["error"].startswith(f"{rows[1]['video']}: ")


def test_the_eval_summary_names_the_skipped_records():
    from r1omni_fast.eval.runner import metrics_table

    metrics = {"labels": ["happy", "sad"], "confusion_matrix": [[1, 0, 0], [0, 1, 0]],
               "per_class_recall": {"happy": 1.0, "sad": 1.0}, "war": 1.0, "uar": 1.0, "format_rate": 1.0,
               "outside_label_set": 0, "unparsable": 0, "n": 2,
               "skipped": [{"id": f"clip-{i}", "reason": f"no video stream in clip-{i}.mp4"} for i in range(5)]}
    last = metrics_table(metrics).splitlines()[-1]
    assert last.startswith("skipped (not evaluated, not in n): 5")
    assert "clip-0: no video stream in clip-0.mp4" in last and "clip-2" in last and "clip-3" not in last
    assert "; ..." in last and "metrics.json" in last
