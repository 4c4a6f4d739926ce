"""Every skip is said: a training sample whose media cannot be loaded (a record asking for audio
from a clip without an audio track, on the Qwen backend) gives a warning at the first skip with
the count and the record ids, and the end of the run says the total and the first ids; `data check
--decode N` reports records whose prompt asks for a modality their clip lacks, and fails.
Clips without an audio track are made with the ffmpeg command line (``-an``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from _media_fixtures import ffmpeg
from _train_fixtures import LABELS, make_data

SKIP_WARNING = "could not be loaded and are skipped"


def _samples(n):
    from r1omni_fast.data import Sample

    return [Sample(f"s{i}", Path(f"{i}.mp4"), None, "p", "t", "sad", "s", False, f"d.json:{i + 1}") for i in range(n)]


def _collate(bad):
    from r1omni_fast.data import Batch

    def collate(samples, index):
        return Batch(index, [s for s in samples if s.id not in bad], None, None, None, None,
                     [(s.id, "no audio stream") for s in samples if s.id in bad])
    return collate


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_first_skip_warns_with_the_count_and_ids_and_the_end_of_the_run_sums_up(caplog):
    from r1omni_fast.train.stream import BatchStream

    bad = {"s1", "s4", "s6"}
    stream = BatchStream(_samples(8), 2, _collate(bad), seed=0, shuffle=False)
    caplog.set_level(logging.WARNING, logger="r1omni_fast")
    stream.next()  # s0, s1: s1 fails
    said = _warnings(caplog)
    assert len(said) == 1 and said[0].startswith(f"1 sample(s) of batch 1 {SKIP_WARNING}")
    assert "s1 (d.json:2): no audio stream" in said[0] and "r1omni-fast data check" in said[0]
    for _ in range(3):
        stream.next()
    assert len(_warnings(caplog)) == 1  # once; the later skips are counted
    assert stream.skipped_samples == 3
    stream.close()
    summary = _warnings(caplog)[-1]
    assert summary == "3 sample(s) skipped in this run because their media could not be loaded; record ids: s1, s4, s6"


def test_a_resumed_run_says_the_skips_before_the_resume_and_a_run_without_skips_says_nothing(caplog):
    from r1omni_fast.train.stream import BatchStream

    caplog.set_level(logging.WARNING, logger="r1omni_fast")
    stream = BatchStream(_samples(8), 2, _collate(set()), seed=0, shuffle=False)
    stream.next()
    stream.close()
    assert stream.skip_summary() is None and not _warnings(caplog)
    stream = BatchStream(_samples(8), 2, _collate({"s6"}), seed=0, shuffle=False, samples_done=4, batches_done=2,
                         skipped_samples=2)
    stream.next()
    stream.next()
    assert stream.skip_summary() == ("3 sample(s) skipped in this run because their media could not be loaded "
                                     "(2 before the resume); record ids: s6")
    stream.close()


@pytest.fixture(scope="module")
def qwen_without_audio(tmp_path_factory):
    """A tiny Qwen thinker and an SFT file of 4 records, one asking for audio from a clip made
    without an audio track."""
    from r1omni_fast.model.qwen_omni.tiny import build_tiny_qwen_checkpoint

    root = tmp_path_factory.mktemp("skips")
    model = Path(build_tiny_qwen_checkpoint(root / "tinyq", seed=0))
    data = make_data(root / "data", n=8)
    records = json.loads(Path(data.sft).read_text())
    folder = Path(data.sft).parent
    ffmpeg("-i", str(folder / records[1]["video"]), "-an", "-c:v", "copy", str(folder / "clips" / "silent.mp4"))
    records[1]["video"], records[1]["id"] = "clips/silent.mp4", "no-audio-track"
    assert "<audio>" in records[1]["conversations"][0]["value"]
    (folder / "sft.json").write_text(json.dumps(records))
    return model, data


def test_a_qwen_sft_run_says_it_skips_a_record_asking_for_audio_its_clip_lacks(qwen_without_audio, tmp_path, caplog):
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.train.metrics_log import read_jsonl
    from r1omni_fast.train.sft import run_sft

    model, data = qwen_without_audio
    cfg = SFTConfig(model_name_or_path=str(model), data_file=str(data.sft), output_dir=str(tmp_path / "out"),
                    label_set=LABELS, num_frames=4, max_steps=2, save_steps=2, per_device_train_batch_size=2,
                    bf16=False, seed=0, logging_steps=1)
    caplog.set_level(logging.WARNING, logger="r1omni_fast")
    run_sft(cfg, progress=False)
    said = _warnings(caplog)
    first = [m for m in said if SKIP_WARNING in m]
    assert len(first) == 1 and first[0].startswith("1 sample(s) of batch")
    assert "no-audio-track" in first[0] and "silent.mp4" in first[0] and "no audio stream" in first[0]
    assert said[-1] == ("1 sample(s) skipped in this run because their media could not be loaded; "
                        "record ids: no-audio-track")
    assert read_jsonl(tmp_path / "out" / "metrics.jsonl")[-1]["skipped_samples"] == 1


def test_data_check_decode_reports_records_asking_for_a_modality_their_clip_lacks(tmp_path):
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    out = tmp_path / "synth"
    assert CliRunner().invoke(main, ["data", "synth", str(out), "--n", "8"]).exit_code == 0
    records = json.loads((out / "train.json").read_text())
    for i in (0, 2):
        ffmpeg("-i", str(out / records[i]["video"]), "-an", "-c:v", "copy", str(out / "clips" / f"silent{i}.mp4"))
        records[i]["video"] = f"clips/silent{i}.mp4"
    video_only = dict(records[3], id="video-only", video="clips/silent0.mp4")
    video_only["conversations"] = [dict(records[3]["conversations"][0]), records[3]["conversations"][1]]
    video_only["conversations"][0]["value"] = video_only["conversations"][0]["value"].replace("<audio>\n", "")
    records.append(video_only)  # asks for no audio: fine without a track
    (out / "train.json").write_text(json.dumps(records))
    n = len(records)
    result = CliRunner().invoke(main, ["data", "check", str(out / "train.json"), "--labels", ",".join(LABELS),
                                       "--decode", str(n)])
    assert result.exit_code == 1, result.output
    assert f"decoded     {n - 2} of {n} clips checked loaded (0 failed, 2 lack a modality their prompt asks for)" \
        in result.output
    assert "records whose prompt asks for a modality the clip lacks (2):" in result.output
    listed = result.output.split("the clip lacks (2):", 1)[1]
    for i in (0, 2):
        assert f"({records[i]['id']}): the prompt asks for audio (<audio>) but its clip" in listed
        assert f"silent{i}.mp4 has no audio stream" in listed
    assert "video-only" not in listed


@pytest.mark.parametrize("n,count", [(4, 4), (4, 8), (4, 1000), (1, 5), (10, 3)])
def test_decode_n_spreads_over_the_file_and_asking_for_more_than_there_are_decodes_all(n, count):
    from r1omni_fast.data.check import decode_clips

    samples = _samples(n)
    asked = []

    def loader(paths, **kwargs):
        asked.extend(paths)
        return [object() for _ in paths]

    got = [s.id for s, _ in decode_clips(samples, count, loader=loader)]
    expected = min(count, n)
    assert len(got) == expected == len(asked)
    assert got[0] == "s0" and got[-1] == f"s{n - 1}"  # first and last included
    assert len(set(got)) == expected
