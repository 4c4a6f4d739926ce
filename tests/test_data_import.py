"""`r1omni-fast data import`: miniature copies of each dataset's released layout (the real file,
folder and column names, a few clips generated here) become R1-Omni JSON that `data check` accepts.

The layouts are written from the datasets' own documentation (see the docstring of
r1omni_fast/data/importers.py for where each is documented), not from the importer's code.
"""

from __future__ import annotations

import json
from collections import Counter
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import _media_fixtures as F
from r1omni_fast.cli import main
from r1omni_fast.data.check import summarize

pytestmark = pytest.mark.skipif(not F.ffmpeg_available(), reason="the ffmpeg command line is not installed")

# R1-Omni's data format (its README): the two placeholders, then its question, no format suffix.
R1OMNI_HUMAN = ("<video>\n<audio>\nAs an emotional recognition expert; throughout the video, which emotion "
                "conveyed by the characters is the most obvious to you?")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """One short audio-video clip as MP4 and as FLV (CREMA-D's container), and a WAV."""
    folder = tmp_path_factory.mktemp("media")
    src = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5",
           "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=0.5"]
    F.ffmpeg(*src, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
             str(folder / "clip.mp4"))
    F.ffmpeg(*src, "-c:v", "flv1", "-c:a", "aac", "-shortest", str(folder / "clip.flv"))
    F.ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=0.5", str(folder / "clip.wav"))
    return {ext: folder / f"clip.{ext}" for ext in ("mp4", "flv", "wav")}


def put(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def run_import(*args: str):
    result = CliRunner().invoke(main, ["data", "import", *args])
    return result


def records(path: Path) -> list:
    return json.loads(path.read_text(encoding="utf-8"))


def record(rid: str, video: str, label: str, **extra) -> dict:
    return {"id": rid, "video": video,
            "conversations": [{"from": "human", "value": R1OMNI_HUMAN}, {"from": "gpt", "value": label}], **extra}


def check_ok(path: Path, labels: str) -> dict:
    summary = summarize(path, labels=labels, kind="label")
    assert summary.ok, [str(p) for p in summary.data.problems] + summary.unreadable
    assert summary.missing_files == 0 and len(summary.durations) == len(summary.data.samples)
    return {k: v for k, v in summary.label_counts.items() if v}


def test_dfew_folds_map_label_ids_and_report_rows_by_line(tmp_path, media):
    root = tmp_path / "DFEW"
    for n in (1, 2, 3, 12):
        put(media["mp4"], root / "Clip" / "original" / f"{n:05d}.mp4")
    splits = root / "EmoLabel_DataSplit"
    (splits / "train(single-labeled)").mkdir(parents=True)
    (splits / "test(single-labeled)").mkdir(parents=True)
    # DFEW ids: 1 happy, 2 sad, 3 neutral, 4 angry, 5 surprise, 6 disgust, 7 fear
    (splits / "train(single-labeled)" / "set_1.csv").write_text(
        "video_name,label\n1,1\n2,7\n40,2\n3,9\n12,4\n")
    (splits / "test(single-labeled)" / "set_1.csv").write_text("video_name,label\n3,3\n")
    (splits / "train(single-labeled)" / "set_2.csv").write_text("video_name,label\n1,5\n")
    (splits / "test(single-labeled)" / "set_2.csv").write_text("video_name,label\n2,6\n")
    out = tmp_path / "out"

    result = run_import("dfew", str(root), str(out), "--folds", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["import_summary.json", "set_1_test.json", "set_1_train.json"]
    train = records(out / "set_1_train.json")
    assert train == [record("00001", "../DFEW/Clip/original/00001.mp4", "happy"),
                     record("00002", "../DFEW/Clip/original/00002.mp4", "fear"),
                     record("00012", "../DFEW/Clip/original/00012.mp4", "angry")]
    assert records(out / "set_1_test.json") == [record("00003", "../DFEW/Clip/original/00003.mp4", "neutral")]
    csv_path = splits / "train(single-labeled)" / "set_1.csv"
    assert f"  {csv_path}:4: clip 00040 not found under {root}" in result.output
    assert f"  {csv_path}:5: clip 00003: label '9' is not a DFEW label id (1-7)" in result.output
    assert "missing     1 clip(s) not on disk" in result.output
    assert "not imported 2 row(s) (1 label, 1 missing):" in result.output
    assert f"wrote       {out / 'set_1_train.json'}       3 records: happy 1, angry 1, fear 1" in result.output
    assert check_ok(out / "set_1_train.json", "dfew") == {"happy": 1, "angry": 1, "fear": 1}
    # The machine-readable summary: counts as the written files hold them, problems as printed.
    summary = json.loads((out / "import_summary.json").read_text(encoding="utf-8"))
    for split in ("set_1_train", "set_1_test"):
        written = Counter(r["conversations"][1]["value"] for r in records(out / f"{split}.json"))
        assert summary["files"][split]["path"] == f"{split}.json"
        assert summary["files"][split]["records"] == sum(written.values())
        assert summary["files"][split]["per_class"] == dict(written)
    assert (summary["dataset"], summary["source"], summary["records"], summary["missing"]) == ("dfew", str(root.resolve()), 4, 1)
    assert sorted(summary["label_set"]) == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert sorted((p["line"], p["kind"]) for p in summary["problems"]) == [(4, "missing"), (5, "label")]
    for p in summary["problems"]:
        assert f"  {p['source']}:{p['line']}: {p['message']}" in result.output
    check = CliRunner().invoke(main, ["data", "check", str(out / "set_1_train.json"), "--labels", "dfew",
                                      "--kind", "label", "--decode", "3"])
    assert check.exit_code == 0, check.output
    assert "records     3 (3 good, 0 bad)" in check.output and "decoded     3 of 3 clips checked loaded" in check.output

    result = run_import("dfew", str(root), str(tmp_path / "all"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "import_summary.json", "set_1_test.json", "set_1_train.json", "set_2_test.json", "set_2_train.json"]
    assert [r["conversations"][1]["value"] for r in records(tmp_path / "all" / "set_2_test.json")] == ["disgust"]


def test_dfew_clip_found_twice_asks_for_the_folder(tmp_path, media):
    root = tmp_path / "DFEW"
    put(media["mp4"], root / "Clip" / "original" / "00001.mp4")
    put(media["mp4"], root / "Clip" / "copy" / "00001.mp4")
    (root / "EmoLabel_DataSplit" / "test(single-labeled)").mkdir(parents=True)
    (root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv").write_text("video_name,label\n1,2\n")
    result = run_import("dfew", str(root), str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "clip 00001 is found 2 times" in result.output and "--clips" in result.output
    result = run_import("dfew", str(root), str(tmp_path / "out"), "--clips", str(root / "Clip" / "original"))
    assert result.exit_code == 0, result.output
    assert records(tmp_path / "out" / "set_1_test.json") == [record("00001", "../DFEW/Clip/original/00001.mp4", "sad")]


def test_mafw_single_label_split_files(tmp_path, media):
    root = tmp_path / "MAFW"
    for n in (25, 26, 27, 28):
        put(media["mp4"], root / "data" / "clips" / f"{n:05d}.mp4")
    single = root / "Train & Test Set" / "single"
    (single / "no_caption" / "set_1").mkdir(parents=True)
    (single / "no_caption" / "set_1" / "train.txt").write_text(
        "00025.mp4 anger\n00026.mp4 happiness\n00027.mp4 contempt\n00030.mp4 sadness\n00028.mp4 boredom\n")
    (single / "no_caption" / "set_1" / "test.txt").write_text("00028.mp4 9\n")
    # the caption variant and the compound (multiple) set are not the single-label split
    (single / "with_caption" / "set_1").mkdir(parents=True)
    (single / "with_caption" / "set_1" / "train.txt").write_text("00025.mp4\tfear\t\u4e2d\tA man frowns.\n")
    (root / "Train & Test Set" / "compound" / "no_caption" / "set_1").mkdir(parents=True)
    (root / "Train & Test Set" / "compound" / "no_caption" / "set_1" / "train.txt").write_text("00025.mp4 fear_surprise\n")
    out = tmp_path / "out"

    result = run_import("mafw", str(root), str(out))
    assert result.exit_code == 0, result.output
    clips = "../MAFW/data/clips"
    assert records(out / "set_1_train.json") == [record("00025", f"{clips}/00025.mp4", "angry"),
                                                 record("00026", f"{clips}/00026.mp4", "happy"),
                                                 record("00027", f"{clips}/00027.mp4", "contemptuous")]
    assert records(out / "set_1_test.json") == [record("00028", f"{clips}/00028.mp4", "anxious")]
    train_txt = single / "no_caption" / "set_1" / "train.txt"
    assert f"  {train_txt}:4: clip 00030.mp4 not found under {root}" in result.output
    assert f"  {train_txt}:5: clip 00028.mp4: label 'boredom' is not a MAFW single label" in result.output
    assert check_ok(out / "set_1_train.json", "mafw") == {"angry": 1, "happy": 1, "contemptuous": 1}
    assert check_ok(out / "set_1_test.json", "mafw") == {"anxious": 1}


def ravdess_tree(root: Path, media: dict) -> None:
    put(media["mp4"], root / "Actor_01" / "01-01-03-01-01-01-01.mp4")  # AV, speech, happy
    put(media["mp4"], root / "Actor_01" / "01-02-06-02-02-01-01.mp4")  # AV, song, fearful, strong
    put(media["mp4"], root / "Actor_01" / "01-01-02-01-01-02-01.mp4")  # AV, calm
    put(media["mp4"], root / "Actor_01" / "02-01-03-01-01-01-01.mp4")  # video-only: not imported
    put(media["wav"], root / "Actor_24" / "03-01-05-01-01-01-24.wav")  # audio-only: not imported
    put(media["mp4"], root / "Actor_24" / "01-01-08-01-02-02-24.mp4")  # AV, surprised
    put(media["mp4"], root / "Actor_24" / "01-01-01-02-01-01-24.mp4")  # neutral has no strong intensity
    put(media["mp4"], root / "Actor_24" / "01-01-09-01-01-01-24.mp4")  # no emotion 09


def test_ravdess_file_name_codes_and_calm(tmp_path, media):
    root = tmp_path / "RAVDESS"
    ravdess_tree(root, media)
    out = tmp_path / "out"
    result = run_import("ravdess", str(root), str(out))
    assert result.exit_code == 0, result.output
    rows = records(out / "all.json")
    assert rows == [
        record("01-01-02-01-01-02-01", "../RAVDESS/Actor_01/01-01-02-01-01-02-01.mp4", "calm",
               actor=1, vocal_channel="speech", intensity="normal"),
        record("01-01-03-01-01-01-01", "../RAVDESS/Actor_01/01-01-03-01-01-01-01.mp4", "happy",
               actor=1, vocal_channel="speech", intensity="normal"),
        record("01-02-06-02-02-01-01", "../RAVDESS/Actor_01/01-02-06-02-02-01-01.mp4", "fear",
               actor=1, vocal_channel="song", intensity="strong"),
        record("01-01-08-01-02-02-24", "../RAVDESS/Actor_24/01-01-08-01-02-02-24.mp4", "surprise",
               actor=24, vocal_channel="speech", intensity="normal"),
    ]
    assert "ignored     2 not selected: video-only (modality 02) 1, audio-only (modality 03) 1" in result.output
    bad = root / "Actor_24"
    assert (f"  {bad / '01-01-01-02-01-01-24.mp4'}: invalid RAVDESS code: intensity 02 (01-02; neutral has no "
            "strong intensity)") in result.output
    assert f"  {bad / '01-01-09-01-01-01-24.mp4'}: invalid RAVDESS code: emotion 09 (01-08)" in result.output
    assert check_ok(out / "all.json", "ravdess") == {"calm": 1, "happy": 1, "fear": 1, "surprise": 1}

    result = run_import("ravdess", str(root), str(tmp_path / "merged"), "--calm", "neutral", "--test-actors", "24")
    assert result.exit_code == 0, result.output
    assert [r["conversations"][1]["value"] for r in records(tmp_path / "merged" / "train.json")] == [
        "neutral", "happy", "fear"]
    assert [r["id"] for r in records(tmp_path / "merged" / "test.json")] == ["01-01-08-01-02-02-24"]
    assert check_ok(tmp_path / "merged" / "train.json", "dfew") == {"happy": 1, "neutral": 1, "fear": 1}

    result = run_import("ravdess", str(root), str(tmp_path / "dropped"), "--calm", "drop")
    assert "calm (dropped) 1" in result.output
    assert len(records(tmp_path / "dropped" / "all.json")) == 3


def test_cremad_file_name_codes(tmp_path, media):
    root = tmp_path / "CREMA-D"
    put(media["flv"], root / "VideoFlash" / "1001_DFA_ANG_XX.flv")
    put(media["flv"], root / "VideoFlash" / "1002_IEO_HAP_HI.flv")
    put(media["flv"], root / "VideoFlash" / "1091_TIE_SAD_LO.flv")
    put(media["flv"], root / "VideoFlash" / "1001_XYZ_ANG_XX.flv")
    put(media["wav"], root / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    out = tmp_path / "out"
    result = run_import("cremad", str(root), str(out), "--test-actors", "1091")
    assert result.exit_code == 0, result.output
    flash = "../CREMA-D/VideoFlash"
    assert records(out / "train.json") == [
        record("1001_DFA_ANG_XX", f"{flash}/1001_DFA_ANG_XX.flv", "angry", actor=1001, sentence="DFA",
               level="unspecified"),
        record("1002_IEO_HAP_HI", f"{flash}/1002_IEO_HAP_HI.flv", "happy", actor=1002, sentence="IEO", level="high"),
    ]
    assert records(out / "test.json") == [
        record("1091_TIE_SAD_LO", f"{flash}/1091_TIE_SAD_LO.flv", "sad", actor=1091, sentence="TIE", level="low")]
    assert "ignored     1 not selected: audio-only (AudioWAV/AudioMP3) 1" in result.output
    assert f"  {root / 'VideoFlash' / '1001_XYZ_ANG_XX.flv'}: invalid CREMA-D code: sentence XYZ" in result.output
    assert check_ok(out / "train.json", "dfew") == {"happy": 1, "angry": 1}


MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def test_meld_csv_splits_with_multiline_utterances(tmp_path, media):
    root = tmp_path / "MELD.Raw"
    put(media["mp4"], root / "train_splits" / "dia0_utt0.mp4")
    put(media["mp4"], root / "train_splits" / "dia0_utt1.mp4")
    put(media["mp4"], root / "output_repeated_splits_test" / "final_videos_testdia3_utt0.mp4")
    (root / "train_sent_emo.csv").write_text(
        MELD_HEADER
        + '1,"also I was the point person, on my company\'s transition",Chandler,neutral,neutral,0,0,8,21,'
          '"00:16:16,059","00:16:21,731"\n'
        + '2,"You must\'ve had your hands full.\nReally.",The Interviewer,joy,positive,0,1,8,21,'
          '"00:16:21,940","00:16:23,442"\n'
        + '3,"That I did.",Chandler,boredom,neutral,0,2,8,21,"00:16:23,442","00:16:26,389"\n'
        + '4,"So let\'s talk.",The Interviewer,sadness,negative,0,3,8,21,"00:16:26,389","00:16:29,935"\n',
        encoding="utf-8")
    (root / "test_sent_emo.csv").write_text(
        MELD_HEADER + '1,"Why do all you\u2019re coffee mugs have numbers?",Mark,surprise,positive,3,0,3,19,'
                      '"00:14:38,127","00:14:40,378"\n', encoding="cp1252")
    (root / "dev_sent_emo.csv").write_text(MELD_HEADER + '1,"Oh my God!",Joey,fear,negative,1,0,4,7,'
                                                          '"00:20:57,256","00:21:00,049"\n')
    out = tmp_path / "out"
    result = run_import("meld", str(root), str(out))
    assert result.exit_code == 0, result.output
    assert records(out / "train.json") == [
        record("dia0_utt0", "../MELD.Raw/train_splits/dia0_utt0.mp4", "neutral", speaker="Chandler",
               utterance="also I was the point person, on my company's transition"),
        record("dia0_utt1", "../MELD.Raw/train_splits/dia0_utt1.mp4", "happy", speaker="The Interviewer",
               utterance="You must've had your hands full.\nReally."),
    ]
    assert records(out / "test.json") == [
        record("dia3_utt0", "../MELD.Raw/output_repeated_splits_test/final_videos_testdia3_utt0.mp4", "surprise",
               speaker="Mark", utterance="Why do all you\u2019re coffee mugs have numbers?")]
    train_csv = root / "train_sent_emo.csv"
    assert f"  {train_csv}:5: dia0_utt2: emotion 'boredom' is not a MELD emotion" in result.output
    assert f"  {train_csv}:6: clip dia0_utt3.mp4 not found under {root / 'train_splits'}" in result.output
    assert (f"  {root / 'dev_sent_emo.csv'}:2: dia1_utt0.mp4 not found: no dev_splits_complete/ folder "
            f"under {root}") in result.output
    assert not (out / "dev.json").exists()
    assert check_ok(out / "train.json", "dfew") == {"happy": 1, "neutral": 1}


def test_r1omni_json_paths_rebased_on_out_and_labels_mapped(tmp_path, media):
    data_root = tmp_path / "datasets"
    put(media["mp4"], data_root / "MAFW" / "videos" / "07880.mp4")
    put(media["mp4"], data_root / "DFEW" / "videos" / "00001.mp4")
    put(media["mp4"], data_root / "EMER" / "sample_00000007.mp4")
    human = R1OMNI_HUMAN
    sft_target = "<think>The voice trembles and the brows are raised.</think>\n<answer>worried</answer>"
    src_records = [
        {"video": "MAFW/videos/07880.mp4", "conversations": [{"from": "human", "value": human},
                                                             {"from": "gpt", "value": "anxious"}]},
        {"video": "DFEW/videos/00001.mp4", "conversations": [{"from": "human", "value": human},
                                                             {"from": "gpt", "value": "Happiness"}]},
        {"video": "DFEW/videos/09999.mp4", "conversations": [{"from": "human", "value": human},
                                                             {"from": "gpt", "value": "sad"}]},
        {"video": "EMER/sample_00000007.mp4", "conversations": [{"from": "human", "value": human},
                                                                {"from": "gpt", "value": sft_target}]},
    ]
    src = tmp_path / "annotations" / "mixed.json"
    src.parent.mkdir()
    src.write_text(json.dumps(src_records, indent=1))
    out = tmp_path / "out"
    result = run_import("r1omni", str(src), str(out), "--media-root", str(data_root))
    assert result.exit_code == 0, result.output
    rows = records(out / "mixed.json")
    assert [r["video"] for r in rows] == ["../datasets/MAFW/videos/07880.mp4", "../datasets/DFEW/videos/00001.mp4"]
    assert [r["conversations"][1]["value"] for r in rows] == ["anxious", "happy"]
    assert rows[0]["conversations"][0]["value"] == human
    starts = [i for i, text in enumerate(src.read_text().split("\n"), start=1) if text == " {"]
    assert f"  {src}:{starts[2]}: video file '{data_root / 'DFEW/videos/09999.mp4'}' does not exist" in result.output
    assert f"  {src}:{starts[3]}: unknown label 'worried'" in result.output

    # EMER-style open-vocabulary answers: --labels any keeps the reasoning target verbatim
    result = run_import("r1omni", str(src), str(tmp_path / "sft"), "--media-root", str(data_root), "--labels", "any")
    assert result.exit_code == 0, result.output
    rows = records(tmp_path / "sft" / "mixed.json")
    assert [r["video"] for r in rows][-1] == "../datasets/EMER/sample_00000007.mp4"
    assert rows[-1]["conversations"][1]["value"] == sft_target
    summary = summarize(tmp_path / "sft" / "mixed.json", labels="mafw")
    assert summary.data.num_skipped == 1 and "unknown label 'worried'" in str(summary.data.problems[0])


def test_with_format_appends_the_format_instruction(tmp_path, media):
    root = tmp_path / "RAVDESS"
    put(media["mp4"], root / "Actor_01" / "01-01-03-01-01-01-01.mp4")
    result = run_import("ravdess", str(root), str(tmp_path / "out"), "--with-format")
    assert result.exit_code == 0, result.output
    human = records(tmp_path / "out" / "all.json")[0]["conversations"][0]["value"]
    assert human == (R1OMNI_HUMAN + " Output the thinking process in <think> </think> and final emotion in "
                     "<answer> </answer> tags.")


@pytest.mark.parametrize("dataset", ["dfew", "mafw", "ravdess", "cremad", "meld"])
def test_a_folder_without_the_layout_is_one_error(tmp_path, dataset):
    (tmp_path / "empty").mkdir()
    result = run_import(dataset, str(tmp_path / "empty"), str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {tmp_path / 'empty'}: no ")
    assert not (tmp_path / "out").exists()


def write_xlsx(path: Path, rows: list) -> Path:
    """A minimal Office Open XML workbook (one sheet; text as shared strings, numbers as values),
    written from the ECMA-376 part layout."""
    import zipfile
    from xml.sax.saxutils import escape

    strings: list = []
    xml_rows = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{chr(65 + c)}{r}"
            if isinstance(value, (int, float)):
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
            elif value is not None:
                if value not in strings:
                    strings.append(value)
                cells.append(f'<c r="{ref}" t="s"><v>{strings.index(value)}</v></c>')
        xml_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.sharedStrings+xml"/></Types>'),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="{main}" xmlns:r="{rel}">'
            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{rel}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'),
        "xl/worksheets/sheet1.xml": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="{main}">'
            f'<sheetData>{"".join(xml_rows)}</sheetData></worksheet>'),
        "xl/sharedStrings.xml": (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="{main}" count="{len(strings)}" '
            f'uniqueCount="{len(strings)}">' + "".join(f"<si><t>{escape(t)}</t></si>" for t in strings) + "</sst>"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, text)
    return path


def test_dfew_split_tables_saved_as_xlsx(tmp_path, media):
    root = tmp_path / "DFEW"
    for n in (1, 2):
        put(media["mp4"], root / "Clip" / "original" / f"{n:05d}.mp4")
    write_xlsx(root / "EmoLabel_DataSplit" / "train(single-labeled)" / "set_3.xlsx",
               [["video_name", "label"], [1, 4], [2, 6], [7, 1]])
    out = tmp_path / "out"
    result = run_import("dfew", str(root), str(out))
    assert result.exit_code == 0, result.output
    assert records(out / "set_3_train.json") == [record("00001", "../DFEW/Clip/original/00001.mp4", "angry"),
                                                 record("00002", "../DFEW/Clip/original/00002.mp4", "disgust")]
    xlsx = root / "EmoLabel_DataSplit" / "train(single-labeled)" / "set_3.xlsx"
    assert f"  {xlsx}:4: clip 00007 not found under {root}" in result.output


def test_mafw_single_label_annotation_table(tmp_path, media):
    root = tmp_path / "MAFW"
    for n in (19, 20, 21):
        put(media["mp4"], root / "data" / "clips" / f"{n:05d}.mp4")
    emotions = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise", "contempt", "anxiety",
                "helplessness", "disappointment"]
    write_xlsx(root / "Labels" / "single-set.xlsx", [
        ["MAFW single-label set"],  # a title row above the header
        ["clip", *emotions, "single_label"],
        ["00019.mp4", *[0] * 11, 4],
        ["00020.mp4", *[0] * 11, 11],
        ["00021.mp4", *[0] * 11, 0],
        ["00022.mp4", *[0] * 11, 6],
        ["00019.mp4", *[0] * 11, 12],
    ])
    out = tmp_path / "out"
    result = run_import("mafw", str(root), str(out))
    assert result.exit_code == 0, result.output
    clips = "../MAFW/data/clips"
    assert records(out / "all.json") == [record("00019", f"{clips}/00019.mp4", "happy"),
                                         record("00020", f"{clips}/00020.mp4", "disappointed")]
    table = root / "Labels" / "single-set.xlsx"
    assert "ignored     1 not selected: no single label (0) 1" in result.output
    assert f"  {table}:6: clip 00022.mp4 not found under {root}" in result.output
    assert f"  {table}:7: clip 00019.mp4: single_label '12' is not a MAFW single label" in result.output
    assert check_ok(out / "all.json", "mafw") == {"happy": 1, "disappointed": 1}

    (root / "Labels" / "single-set.xlsx").write_bytes(b"not a zip")
    result = run_import("mafw", str(root), str(tmp_path / "bad"))
    assert result.exit_code == 2 and "not a readable .xlsx workbook" in result.output
