"""One exit-status table for every command, and outputs that are checked before the work, never
overwrite an input, and are complete or absent (issue 34 item 8, issue 28 item 7)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from _eval_fixtures import SYNTH_LABELS, media_module, synth_eval  # noqa: F401  (fixtures)
from r1omni_fast import cli
from r1omni_fast.cli import main
from r1omni_fast.exit_status import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PREEMPTED, EXIT_TERMINATED,
                                     EXIT_USAGE)
from tests._model_fixtures import tiny_ckpt  # noqa: F401  (fixtures)

NO_CUDA = not torch.cuda.is_available()


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *words):
    """The output ends in one ``Error:`` line holding ``words``, and shows no traceback."""
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "somewhere/file")


def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------ the table


def test_the_table_is_the_training_faults_statuses():
    from r1omni_fast.train import faults

    assert (EXIT_OK, EXIT_FAILED, EXIT_USAGE) == (0, 1, 2)
    assert (EXIT_PREEMPTED, EXIT_INTERRUPTED) == (faults.EXIT_PREEMPTED, faults.EXIT_INTERRUPTED) == (75, 130)
    assert EXIT_TERMINATED == 143
    assert "Exit status of every command" in run("--help").output


def test_ctrl_c_in_any_command_is_130_with_one_line(tmp_path, monkeypatch):
    import r1omni_fast.data.synthetic as synthetic

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_mp4", interrupted)
    result = run("data", "synth", tmp_path / "d", "--n", 4)
    assert result.exit_code == EXIT_INTERRUPTED and "interrupted" in result.output
    assert "Aborted" not in result.output and not (tmp_path / "d").exists() and leftovers(tmp_path) == []


def _terminate(*args, **kwargs):
    import signal

    os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError("SIGTERM did not stop the command")


def test_sigterm_in_a_command_is_143_with_one_line_and_the_same_clean_up(tmp_path, monkeypatch):
    import signal

    import r1omni_fast.data.synthetic as synthetic

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(synthetic, "_write_mp4", _terminate)
    result = run("data", "synth", tmp_path / "d", "--n", 4)
    assert result.exit_code == EXIT_TERMINATED == 143 and "stopped by SIGTERM" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "d").exists() and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == before  # the handler lives only while a command runs


def test_sigterm_in_predict_keeps_the_rows_already_written(tiny_ckpt, synth_eval, tmp_path, monkeypatch):  # noqa: F811
    from r1omni_fast.eval import predict as pred

    clips = sorted(str(p) for p in (synth_eval.root / "clips").glob("*.mp4"))[:3]
    real, calls = pred._generate_rows, []

    def second_batch_terminates(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs) if len(calls) == 1 else _terminate()

    monkeypatch.setattr(pred, "_generate_rows", second_batch_terminates)
    out = tmp_path / "rows.jsonl"
    result = run("predict", "--model", tiny_ckpt, *clips, "--batch-size", 1, "--max-new-tokens", 2, "--out", out,
                 "--quiet")
    assert result.exit_code == EXIT_TERMINATED and "stopped by SIGTERM" in result.output, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["video"] for r in rows] == clips[:1] and rows[0]["error"] is None


# ------------------------------------------------------------------------------ per command


def test_data_synth_statuses_and_outputs(tmp_path, monkeypatch):
    assert run("data", "synth", tmp_path / "d", "--n", 1).exit_code == EXIT_USAGE  # fewer clips than labels
    afile = tmp_path / "file"
    afile.write_text("x")
    one_line_error(result := run("data", "synth", afile / "d", "--n", 4), "is a file, not a folder")
    assert result.exit_code == EXIT_USAGE

    import r1omni_fast.data.synthetic as synthetic

    real = synthetic._write_mp4
    written = []

    def fills_up(path, *args):
        if written:
            no_space()
        written.append(path)
        real(path, *args)

    monkeypatch.setattr(synthetic, "_write_mp4", fills_up)
    result = run("data", "synth", tmp_path / "full", "--n", 4)
    assert result.exit_code == EXIT_FAILED
    one_line_error(result, "No space left on device", "free space")
    assert not (tmp_path / "full").exists() and leftovers(tmp_path) == []  # nothing half-written


def test_data_synth_into_a_used_folder_replaces_its_set_and_keeps_the_rest(tmp_path):
    out = tmp_path / "d"
    assert run("data", "synth", out, "--n", 8).exit_code == 0
    (out / "notes.txt").write_text("mine")
    result = run("data", "synth", out, "--n", 4)
    assert result.exit_code == 0, result.output
    assert len(list((out / "clips").iterdir())) == 4 and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "manifest.json").read_text())["n"] == 4 and leftovers(tmp_path) == []


def test_output_folder_that_cannot_be_written_is_one_line_before_any_work(tmp_path, monkeypatch):
    import r1omni_fast.data.synthetic as synthetic

    called = []
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: called.append(1))
    monkeypatch.setattr(cli.tempfile, "mkstemp", read_only)
    result = run("data", "synth", tmp_path / "d")
    assert result.exit_code == EXIT_FAILED and not called
    one_line_error(result, f"OUT {tmp_path / 'd'}: cannot write in {tmp_path}", "Read-only file system")


def test_data_check_statuses(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    result = run("data", "check", empty)
    assert result.exit_code == EXIT_USAGE
    one_line_error(result, str(empty), "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"video": "nowhere.mp4", "conversations": [
        {"from": "human", "value": "<video>\nwhich?"}, {"from": "gpt", "value": "happy"}]}) + "\n")
    assert run("data", "check", bad).exit_code == EXIT_FAILED  # the check ran and found a bad record


def test_data_import_statuses(tmp_path):
    (tmp_path / "src").mkdir()
    result = run("data", "import", "dfew", tmp_path / "src", tmp_path / "out")
    assert result.exit_code == EXIT_USAGE and "Traceback" not in result.output


def test_model_tiny_statuses_and_outputs(tmp_path, monkeypatch):
    afile = tmp_path / "file"
    afile.write_text("x")
    assert run("model", "tiny", afile / "m").exit_code == EXIT_USAGE
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    result = run("model", "tiny", mine)
    assert result.exit_code == EXIT_USAGE and (mine / "thesis.tex").read_text() == "keep me"
    one_line_error(result, "holding other files")

    from r1omni_fast.model import OmniModel

    monkeypatch.setattr(OmniModel, "save_pretrained", no_space)
    result = run("model", "tiny", tmp_path / "m")
    assert result.exit_code == EXIT_FAILED
    one_line_error(result, "No space left on device")
    assert not (tmp_path / "m").exists() and leftovers(tmp_path) == []


def test_model_tiny_over_a_model_folder_replaces_it_whole(tmp_path):
    out = tmp_path / "m"
    assert run("model", "tiny", out).exit_code == 0
    (out / "stale.bin").write_text("old")
    assert run("model", "tiny", out, "--seed", 1).exit_code == 0
    assert not (out / "stale.bin").exists() and (out / "tokenizer.json").is_file() and leftovers(tmp_path) == []


def test_merge_of_a_folder_that_is_no_adapter_is_a_usage_error(tiny_ckpt, tmp_path):
    result = run("merge", "--model", tiny_ckpt, "--out", tmp_path / "merged")
    assert result.exit_code == EXIT_USAGE and "Traceback" not in result.output


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
def test_a_cuda_device_that_is_not_there_is_2_in_every_command(tiny_ckpt, synth_eval, tmp_path):
    clip = synth_eval.clips[0]
    for args in (["eval", "--model", tiny_ckpt, "--data", synth_eval.test, "--out", tmp_path / "e"],
                 ["predict", "--model", tiny_ckpt, clip],
                 ["train", "--stage", "sft", "--model-name-or-path", tiny_ckpt, "--data-file", synth_eval.sft,
                  "--output-dir", tmp_path / "run"]):
        result = run(*args, "--device", "cuda")
        assert result.exit_code == EXIT_USAGE, (args[0], result.output)
        assert "no CUDA device is available" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "e").exists() and not (tmp_path / "run").exists()


def test_train_device_cpu_is_honoured():
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.train.distributed import from_environment

    assert from_environment(SFTConfig(device="cpu")).device == torch.device("cpu")
    if NO_CUDA:
        assert from_environment(SFTConfig(device="auto")).device == torch.device("cpu")
    assert "--device" in run("train", "--help").output


def test_an_empty_data_file_is_2_naming_it_in_eval_and_predict(tiny_ckpt, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]\n")
    for args in (["eval", "--out", tmp_path / "e"], ["predict"]):
        result = run(args[0], "--model", tiny_ckpt, "--data", empty, *args[1:])
        assert result.exit_code == EXIT_USAGE, result.output
        one_line_error(result, str(empty), "the data file is empty")


# ------------------------------------------------------------------------------ eval outputs


def test_eval_checks_its_folder_before_loading_anything(tiny_ckpt, synth_eval, tmp_path, monkeypatch):
    from r1omni_fast.eval import predict

    loaded = []
    monkeypatch.setattr(predict, "load_for_inference", lambda *a, **k: loaded.append(1))
    afile = tmp_path / "file"
    afile.write_text("x")
    result = run("eval", "--model", tiny_ckpt, "--data", synth_eval.test, "--out", afile / "e")
    assert result.exit_code == EXIT_USAGE and not loaded
    monkeypatch.setattr(cli.tempfile, "mkstemp", read_only)
    result = run("eval", "--model", tiny_ckpt, "--data", synth_eval.test, "--out", tmp_path / "e")
    assert result.exit_code == EXIT_FAILED and not loaded and not (tmp_path / "e").exists()
    one_line_error(result, "--out", "Read-only file system")


def test_eval_refuses_to_write_over_its_data_file(tiny_ckpt, tmp_path):
    data = tmp_path / "predictions.jsonl"
    data.write_text('{"video": "a.mp4", "conversations": [{"from": "human", "value": "<video>"}, '
                    '{"from": "gpt", "value": "happy"}]}\n')
    before = data.read_bytes()
    result = run("eval", "--model", tiny_ckpt, "--data", data, "--out", tmp_path)
    assert result.exit_code == EXIT_USAGE and data.read_bytes() == before
    one_line_error(result, "is also an input")


def test_eval_streams_rows_and_an_interrupt_keeps_them(tiny_ckpt, synth_eval, tmp_path, monkeypatch, media_module):
    from r1omni_fast.eval import runner

    real, batches = runner.generate_answers, []

    def second_batch_interrupted(*args, **kwargs):
        if batches:
            assert (tmp_path / "e" / "predictions.jsonl").read_text().count("\n") == 2  # the first, on disk
            raise KeyboardInterrupt
        batches.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "generate_answers", second_batch_interrupted)
    result = run("eval", "--model", tiny_ckpt, "--data", synth_eval.test, "--out", tmp_path / "e",
                 "--labels", ",".join(SYNTH_LABELS), "--batch-size", 2, "--num-frames", 2,
                 "--max-new-tokens", 2, "--quiet")
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    rows = [json.loads(x) for x in (tmp_path / "e" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and not (tmp_path / "e" / "metrics.json").exists()


def test_eval_full_disk_at_the_metrics_is_one_line_and_no_partial_file(tiny_ckpt, synth_eval, tmp_path,
                                                                       media_module, monkeypatch):
    from r1omni_fast.eval import runner

    def dump_fills_up(value, fh, **kwargs):
        fh.write("{")
        no_space()

    monkeypatch.setattr(runner.json, "dump", dump_fills_up)
    result = run("eval", "--model", tiny_ckpt, "--data", synth_eval.test, "--out", tmp_path / "e",
                 "--labels", ",".join(SYNTH_LABELS), "--num-frames", 2, "--max-new-tokens", 2, "--quiet")
    assert result.exit_code == EXIT_FAILED
    one_line_error(result, "No space left on device")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["predictions.jsonl"]  # no metrics.json(.tmp)


# ------------------------------------------------------------------------------ predict outputs


def test_predict_refuses_an_output_that_is_an_input(tiny_ckpt, synth_eval, tmp_path):
    data = tmp_path / "test.json"
    shutil.copy(synth_eval.test, data)
    clip = tmp_path / "clip.mp4"
    shutil.copy(synth_eval.clips[0], clip)
    before = (data.read_bytes(), clip.read_bytes())
    for args in (["--data", data, "--out", data], [clip, "--out", clip],
                 [clip, "--out", tmp_path / "." / "clip.mp4"], ["--data", data, "--out", tmp_path / "o.jsonl",
                                                                "--report", data]):
        result = run("predict", "--model", tiny_ckpt, *args)
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        one_line_error(result, "is also an input")
    assert (data.read_bytes(), clip.read_bytes()) == before


def test_predict_output_that_cannot_be_written_is_one_line_before_loading(tiny_ckpt, synth_eval, tmp_path,
                                                                          monkeypatch):
    from r1omni_fast.eval import predict

    loaded = []
    monkeypatch.setattr(predict, "load_for_inference", lambda *a, **k: loaded.append(1))
    afile = tmp_path / "file"
    afile.write_text("x")
    result = run("predict", "--model", tiny_ckpt, synth_eval.clips[0], "--out", afile / "rows.jsonl")
    assert result.exit_code == EXIT_USAGE and not loaded
    one_line_error(result, f"--out {afile / 'rows.jsonl'}", "is a file, not a folder")
    monkeypatch.setattr(cli.tempfile, "mkstemp", no_space)
    result = run("predict", "--model", tiny_ckpt, synth_eval.clips[0], "--out", tmp_path / "rows.jsonl")
    assert result.exit_code == EXIT_FAILED and not loaded
    one_line_error(result, "No space left on device")


def test_predict_quiet_prints_the_summary_and_no_loading_bars(tiny_ckpt, synth_eval, tmp_path, media_module):
    from transformers.utils import logging as hf_logging

    try:
        result = run("predict", "--model", tiny_ckpt, "--data", synth_eval.test, "--labels",
                     ",".join(SYNTH_LABELS), "--num-frames", 2, "--max-new-tokens", 2, "--quiet")
        assert result.exit_code == 0, result.output
        assert "WAR" in result.output and result.output.rstrip().endswith("4 of 4 clips predicted")
        assert "[1/4]" not in result.output
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()


# ------------------------------------------------------------------------------ clip messages


def test_clips_that_are_not_files_say_what_they_are(tmp_path):
    from r1omni_fast.eval.predict import clip_inputs

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    items = clip_inputs([fifo, folder, Path("/dev/null"), tmp_path / "gone.mp4"])
    errors = [i.error for i in items]
    assert errors[0] == f"clip {fifo} is a FIFO (named pipe), not a media file: give the path of a clip file"
    assert errors[1].startswith(f"clip {folder} is a folder") and "/dev/null is a device" in errors[2]
    assert errors[3] == f"clip {tmp_path / 'gone.mp4'} does not exist: check the path"


def test_a_clip_without_sound_is_told_to_use_modalities_video():
    from r1omni_fast.eval.predict import _load_error

    reason = ("x.mp4: the video has no audio stream but the record asks for audio (<audio> in its prompt): "
              "give the record an audio file with sound, or remove <audio>")
    for keep in (("video", "audio"), ("audio",)):
        message = _load_error(reason, keep)
        assert "--modalities video" in message and "--audio FILE" in message
        assert "give the record" not in message and "remove <audio>" not in message
    assert _load_error("x.mp4: moov atom not found", ("video", "audio")) == "cannot load: x.mp4: moov atom not found"


# ------------------------------------------------------------------------------ small items


def test_report_shows_the_row_id(tmp_path):
    from r1omni_fast.eval.report import write_report

    rows = [{"id": "rec-0042", "video": "clips/a.mp4", "label": "happy", "prediction": "happy", "answer": "happy",
             "think": "smiles", "completion": "", "well_formed": True, "correct": True}]
    html = write_report(tmp_path / "report.html", rows).read_text()
    assert "<code>rec-0042</code>" in html and 'data-id="rec-0042"' in html and ">a.mp4<" in html
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_demo_clips_help_says_what_the_code_does():
    from r1omni_fast.demo import DEMO_DATA

    text = " ".join(run("demo", "--help").output.split())
    assert "eighth" not in text
    assert (DEMO_DATA["n"], DEMO_DATA["test_fraction"], DEMO_DATA["sft_fraction"]) == (256, 0.25, 0.02)
    assert "a quarter held out" in text and "2% (at least one per class: 4 of 192 at 256)" in text


def test_demo_output_under_a_file_is_a_usage_error(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    result = run("demo", "--out", afile / "demo")
    assert result.exit_code == EXIT_USAGE
    one_line_error(result, "is a file, not a folder")
