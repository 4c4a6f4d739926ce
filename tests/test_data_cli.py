"""`r1omni-fast data synth` and `r1omni-fast data check`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from r1omni_fast.cli import main


def test_synth_then_check_summarises_counts_and_durations(tmp_path):
    out = tmp_path / "synth"
    result = CliRunner().invoke(main, ["data", "synth", str(out), "--n", "8", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert f"wrote 8 clips to {out / 'clips'}" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 4 and len(manifest["clips"]) == 8

    result = CliRunner().invoke(main, ["data", "check", str(out / "sft.json"),
                                       "--labels", "happy,sad,angry,neutral"])
    assert result.exit_code == 0, result.output
    train = [c for c in manifest["clips"] if c["split"] == "train"]
    lines = dict(line.split(None, 1) for line in result.output.splitlines())
    assert lines["records"] == f"{len(train)} ({len(train)} good, 0 bad)"
    assert lines["targets"] == f"{len(train)} reasoning (SFT), 0 bare labels (GRPO/eval)"
    counts = {k: sum(c["label"] == k for c in train) for k in ("happy", "sad", "angry", "neutral")}
    assert lines["labels"] == ", ".join(f"{k} {v}" for k, v in counts.items())
    assert lines["missing"] == "0 record(s) with missing media files"
    assert lines["duration"].startswith(f"{1.5 * len(train):.1f} s over {len(train)} clips")


def test_check_reports_bad_records_with_file_line_and_fails(tmp_path):
    out = tmp_path / "synth"
    CliRunner().invoke(main, ["data", "synth", str(out), "--n", "4"])
    records = json.loads((out / "test.json").read_text()) + json.loads((out / "train.json").read_text())
    records[0]["video"] = "clips/gone.mp4"
    records[1]["conversations"][1]["value"] = "bored"
    (out / "clips" / "junk.mp4").write_bytes(b"definitely not an mp4")
    records[2]["video"] = "clips/junk.mp4"
    bad = out / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in records) + "\n")

    result = CliRunner().invoke(main, ["data", "check", str(bad)])
    assert result.exit_code == 1, result.output
    assert "records     4 (2 good, 2 bad)" in result.output
    assert "missing     1 record(s) with missing media files" in result.output
    assert f"  {bad}:1: missing media: video file '{out}/clips/gone.mp4' does not exist" in result.output
    assert f"  {bad}:2: unknown label 'bored'" in result.output
    assert f"unreadable media:\n  {bad}:3 ({records[2]['id']}):" in result.output
    assert "duration    1.5 s over 1 clips" in result.output


def test_check_of_an_unparsable_file_is_a_clean_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("[{]")
    result = CliRunner().invoke(main, ["data", "check", str(path)])
    assert result.exit_code == 2  # a file that cannot be read: a data error
    assert f"Error: {path}:1: invalid JSON at column 3" in result.output


def test_synth_rejects_bad_arguments_with_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["data", "synth", str(tmp_path), "--labels", "happy,bored"])
    assert result.exit_code == 2
    assert "cannot draw ['bored']" in result.output


def test_synth_sft_fraction_writes_disjoint_cold_start_and_rl_splits(tmp_path):
    out = tmp_path / "synth"
    result = CliRunner().invoke(main, ["data", "synth", str(out), "--n", "16", "--sft-fraction", "0.02",
                                       "--reasoning", "short"])
    assert result.exit_code == 0, result.output
    sft, train, test = (json.loads((out / f"{name}.json").read_text()) for name in ("sft", "train", "test"))
    assert (len(sft), len(train), len(test)) == (4, 8, 4)  # per class: 1 held out, 1 cold start, 2 RL
    assert not {r["id"] for r in sft} & {r["id"] for r in train}
    assert all(r["conversations"][1]["value"].startswith("<think>") for r in sft)
    assert not any("<think>" in r["conversations"][1]["value"] for r in train)
    bad = CliRunner().invoke(main, ["data", "synth", str(tmp_path / "x"), "--sft-fraction", "1.5"])
    assert bad.exit_code == 2 and "sft_fraction must be in (0, 1)" in bad.output
