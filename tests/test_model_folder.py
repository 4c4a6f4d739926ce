"""A model folder is checked before it loads: it exists, and its tokenizer files are complete
(issue 34 item 6: without tokenizer.json the tokenizer had 2 tokens and every command exited 0)."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from _eval_fixtures import synth_eval  # noqa: F401  (fixtures)
from r1omni_fast.cli import EXIT_USAGE, main
from r1omni_fast.model import CheckpointError
from r1omni_fast.model.policy import TOKENIZER_FILE_SETS, check_tokenizer_files, load_policy, model_type_of
from tests._model_fixtures import tiny_ckpt  # noqa: F401  (fixtures)


@pytest.fixture
def no_tokenizer_json(tiny_ckpt, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_ckpt, folder)
    (folder / "tokenizer.json").unlink()
    assert (folder / "tokenizer_config.json").is_file()
    return folder


def test_a_folder_without_tokenizer_files_is_refused_naming_what_is_missing(no_tokenizer_json):
    with pytest.raises(CheckpointError) as info:
        load_policy(no_tokenizer_json)
    message = str(info.value)
    assert message.startswith(f"{no_tokenizer_json}: the tokenizer is incomplete")
    assert "holds tokenizer_config.json" in message and "tokenizer.json" in message and "\n" not in message


@pytest.mark.parametrize("files", TOKENIZER_FILE_SETS, ids=["+".join(f) for f in TOKENIZER_FILE_SETS])
def test_each_complete_tokenizer_file_set_passes(tmp_path, files):
    for name in files:
        (tmp_path / name).write_text("{}")
    check_tokenizer_files(tmp_path)
    if len(files) > 1:
        (tmp_path / files[0]).unlink()
        with pytest.raises(CheckpointError, match=f"holds {files[1]}"):
            check_tokenizer_files(tmp_path)


def test_every_command_refuses_the_folder(no_tokenizer_json, synth_eval, tmp_path):
    runner = CliRunner()
    for args in (["predict", "--model", no_tokenizer_json, synth_eval.clips[0]],
                 ["eval", "--model", no_tokenizer_json, "--data", synth_eval.test, "--out", tmp_path / "e"],
                 ["train", "--stage", "sft", "--model-name-or-path", no_tokenizer_json, "--data-file",
                  synth_eval.sft, "--output-dir", tmp_path / "run", "--device", "cpu", "--max-steps", "1"]):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == EXIT_USAGE, (args[0], result.output)
        assert "the tokenizer is incomplete" in result.output and "Traceback" not in result.output


def test_a_missing_model_folder_says_it_does_not_exist(tmp_path, synth_eval):
    with pytest.raises(CheckpointError, match=f"model folder {tmp_path / 'gone'} does not exist"):
        model_type_of(tmp_path / "gone")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a model folder"):
        model_type_of(tmp_path / "file")
    result = CliRunner().invoke(main, ["train", "--stage", "sft", "--model-name-or-path", str(tmp_path / "gone"),
                                       "--data-file", str(synth_eval.sft), "--device", "cpu",
                                       "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == EXIT_USAGE and f"model folder {tmp_path / 'gone'} does not exist" in result.output
    assert "no config.json" not in result.output


@pytest.mark.parametrize("name, cut", [("model.safetensors", "half"), ("model.safetensors", "empty"),
                                       ("tokenizer.json", "half"), ("config.json", "half")])
def test_eval_and_predict_on_a_damaged_folder_give_one_line(tiny_ckpt, synth_eval, tmp_path, name, cut):
    """Issue 28 item 5: a cut or empty model file is one line naming the file (exit 2), not a
    traceback, in every command that loads a model."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_ckpt, folder)
    path = folder / name
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if cut == "half" else b"")
    runner = CliRunner()
    for args in (["predict", "--model", folder, synth_eval.clips[0]],
                 ["eval", "--model", folder, "--data", synth_eval.test, "--out", tmp_path / "e"]):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == EXIT_USAGE, (args[0], result.output)
        assert result.output.startswith(f"Error: {path}") and result.output.count("\n") == 1, result.output
        assert "damaged" in result.output or "cannot read it as JSON" in result.output, result.output
