"""The R1-Omni JSON / JSONL reader: good files, every bad-record kind with its file:line."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from r1omni_fast.prompts import FORMAT_SUFFIX, R1_OMNI_QUESTION
from r1omni_fast.data import DataError, read_data

HUMAN = f"<video>\n<audio>\n{R1_OMNI_QUESTION} {FORMAT_SUFFIX}"


def rec(video="a.mp4", gpt="sad", **extra):
    r = {"video": video, "conversations": [{"from": "human", "value": HUMAN},
                                           {"from": "gpt", "value": gpt}]}
    r.update(extra)
    return r


@pytest.fixture
def folder(tmp_path):
    for name in ("a.mp4", "b.mp4", "c.mp4", "voice.wav"):
        (tmp_path / name).write_bytes(b"not decoded by the reader")
    return tmp_path


def write_jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_json_list_reads_sft_and_label_records(folder):
    path = folder / "data.json"
    path.write_text(json.dumps([
        rec("a.mp4", "<think>The face frowns.</think>\n<answer>sad</answer>"),
        rec("b.mp4", "Happy", audio="voice.wav", id="clip-b"),
        rec("c.mp4", " fear "),
    ], indent=2))
    data = read_data(path)
    assert [s.label for s in data] == ["sad", "happy", "fear"]
    assert [s.solution for s in data] == ["<answer> sad </answer>", "<answer> happy </answer>",
                                         "<answer> fear </answer>"]
    assert [s.is_reasoning for s in data] == [True, False, False]
    a, b, c = data.samples
    assert a.target == "<think>The face frowns.</think>\n<answer>sad</answer>"
    assert a.video == folder / "a.mp4" and a.audio is None
    assert b.audio == folder / "voice.wav" and b.id == "clip-b"
    assert a.id == "a" and c.id == "c"
    assert a.prompt == HUMAN
    assert a.instruction == f"{R1_OMNI_QUESTION} {FORMAT_SUFFIX}"
    # indent=2 puts each object's opening brace alone on a line: that line is the record's
    starts = [i for i, line in enumerate(path.read_text().splitlines(), 1) if line == "  {"]
    assert len(starts) == 3 and starts[0] == 2
    assert [s.source for s in data] == [f"{path}:{n}" for n in starts]
    assert data.num_records == 3 and data.num_skipped == 0


def test_jsonl_matches_json_list(folder):
    records = [rec("a.mp4", "angry"), rec("b.mp4", "<think>x</think><answer>neutral</answer>")]
    (folder / "d.json").write_text(json.dumps(records))
    write_jsonl(folder / "d.jsonl", records)
    as_list = read_data(folder / "d.json")
    as_lines = read_data(folder / "d.jsonl")
    assert [(s.id, s.label, s.target) for s in as_list] == [(s.id, s.label, s.target) for s in as_lines]
    assert [s.source.rsplit(":", 1)[1] for s in as_lines] == ["1", "2"]


def test_ravdess_names_map_onto_dfew_labels(folder):
    path = write_jsonl(folder / "r.jsonl", [rec(gpt="fearful"), rec(gpt="Surprised"), rec(gpt="calm")])
    data = read_data(path, labels="ravdess")
    assert [s.label for s in data] == ["fear", "surprise", "calm"]
    # calm is not a DFEW class
    with pytest.raises(DataError, match=r"r\.jsonl:3: unknown label 'calm'"):
        read_data(path, labels="dfew", on_error="raise")


def test_custom_label_set_restricts_labels(folder):
    path = write_jsonl(folder / "c.jsonl", [rec(gpt="happy"), rec(gpt="fear")])
    data = read_data(path, labels=["happy", "sad"])
    assert [s.label for s in data] == ["happy"]
    assert str(data.problems[0]).endswith("c.jsonl:2: unknown label 'fear': expected one of happy, sad "
                                          "(choose the label set: label_set in a run config, --labels on the command line)")


def test_duplicate_video_keeps_both_records_under_distinct_ids(folder):
    path = write_jsonl(folder / "dup.jsonl", [rec("a.mp4", "sad"), rec("a.mp4", "happy")])
    assert [s.id for s in read_data(path)] == ["a", "a#2"]


BAD_LINES = [
    # (line content, expected message)
    ('{"video": "a.mp4", "conversations": [', "invalid JSON at column 38: Expecting value"),
    ('[1, 2]', "record is a JSON list, expected an object with 'video' and 'conversations'"),
    (rec("missing.mp4"), "missing media: video file '{folder}/missing.mp4' does not exist"),
    (rec("a.mp4", audio="gone.wav"), "missing media: audio file '{folder}/gone.wav' does not exist"),
    ({"conversations": rec()["conversations"]}, "missing media: no 'video' key"),
    (rec(gpt="bored"), "unknown label 'bored': expected one of happy, surprise, neutral, angry, "
                       "disgust, sad, fear (choose the label set: label_set in a run config, --labels on the command line)"),
    (rec(gpt="<think>hm</think><answer>bored</answer>"), "unknown label 'bored'"),
    ({"video": "a.mp4"}, "malformed conversation: no 'conversations' key"),
    ({"video": "a.mp4", "conversations": [rec()["conversations"][0]]},
     "malformed conversation: expected a list of 2 turns [human, gpt], got 1 turns"),
    ({"video": "a.mp4", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
     "malformed conversation: turn 0 must be from 'human', got 'gpt'"),
    ({"video": "a.mp4", "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": ""}]},
     "malformed conversation: turn 1 (gpt) needs a non-empty string 'value', got ''"),
    (rec(gpt="<think>no closing</think><answer>sad"), "malformed conversation: unclosed <answer> tag"),
]


@pytest.mark.parametrize("bad,message", BAD_LINES)
def test_each_bad_record_kind_is_reported_with_file_and_line(folder, bad, message):
    path = write_jsonl(folder / "bad.jsonl", [rec("a.mp4", "sad"), "", bad, rec("b.mp4", "happy")])
    expected = f"{path}:3: {message.format(folder=folder)}"
    with pytest.raises(DataError) as info:
        read_data(path, on_error="raise")
    assert len(info.value.problems) == 1
    assert str(info.value.problems[0]).startswith(expected)
    assert expected in str(info.value)

    data = read_data(path, on_error="skip")
    assert [s.id for s in data] == ["a", "b"]
    assert data.num_skipped == 1 and data.num_records == 3
    assert str(data.problems[0]).startswith(expected)


def test_raise_reports_every_bad_record_not_just_the_first(folder):
    lines = [rec("a.mp4"), rec("nope.mp4"), "{oops", rec(gpt="bored"), rec("b.mp4"), 7]
    path = write_jsonl(folder / "many.jsonl", lines)
    with pytest.raises(DataError) as info:
        read_data(path, on_error="raise")
    assert [p.line for p in info.value.problems] == [2, 3, 4, 6]
    assert str(info.value).startswith(f"{path}: 4 of 6 records are bad:")
    assert "record is a JSON number" in str(info.value.problems[3])


def test_skip_logs_each_bad_record_and_a_count(folder, caplog):
    path = write_jsonl(folder / "s.jsonl", [rec("a.mp4"), rec("nope.mp4"), rec(gpt="bored")])
    with caplog.at_level(logging.WARNING, logger="r1omni_fast.data.reader"):
        data = read_data(path)
    assert len(data) == 1
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"{path}:2: missing media" in m for m in logged)
    assert any(f"{path}:3: unknown label" in m for m in logged)
    assert f"{path}: 2 of 3 records are bad and were skipped; 1 remain" in logged


def test_json_list_reports_the_line_where_each_bad_object_starts(folder):
    path = folder / "list.json"
    path.write_text(
        "[\n"
        f"  {json.dumps(rec('a.mp4'))},\n"            # line 2
        "  \"just a string\",\n"                      # line 3
        "  {\n"                                       # line 4: object spanning lines 4-7
        "    \"video\": \"missing.mp4\",\n"
        f"    \"conversations\": {json.dumps(rec()['conversations'])}\n"
        "  },\n"
        f"\n  {json.dumps(rec('b.mp4', 'bored'))}\n"  # line 9
        "]\n")
    data = read_data(path)
    assert [(p.line, p.message.split(":")[0]) for p in data.problems] == [
        (3, "record is a JSON string, expected an object with 'video' and 'conversations'"),
        (4, "missing media"), (9, "unknown label 'bored'")]
    assert [s.source for s in data] == [f"{path}:2"]


def test_json_list_syntax_error_is_fatal_and_names_the_line(folder):
    path = folder / "broken.json"
    path.write_text("[\n" + json.dumps(rec()) + ",\n" + '{"video": "a.mp4",, }\n' + "]\n")
    for mode in ("skip", "raise"):
        with pytest.raises(DataError, match=rf"{path}:3: invalid JSON at column 19: Expecting property name.*cannot be read"):
            read_data(path, on_error=mode)


def test_kind_sft_requires_reasoning_and_kind_label_requires_bare_labels(folder):
    path = write_jsonl(folder / "k.jsonl", [rec(gpt="sad"), rec(gpt="<think>t</think>\n<answer>sad</answer>")])
    sft = read_data(path, kind="sft")
    assert [p.line for p in sft.problems] == [1]
    assert "the gpt value has no <answer>...</answer>" in sft.problems[0].message
    label = read_data(path, kind="label")
    assert [p.line for p in label.problems] == [2]
    assert "expected a bare label as the gpt value" in label.problems[0].message


def test_unreadable_file_and_bad_options_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="nothing.json: cannot read data file"):
        read_data(tmp_path / "nothing.json")
    (tmp_path / "obj.json").write_text(json.dumps({"data": [rec()]}, indent=1))
    with pytest.raises(DataError, match="obj.json: the file holds a single JSON object; expected a JSON list"):
        read_data(tmp_path / "obj.json")
    (tmp_path / "x.json").write_text(json.dumps([rec()]))
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise'"):
        read_data(tmp_path / "x.json", on_error="ignore")
    with pytest.raises(ValueError, match="unknown label set 'affectnet'"):
        read_data(tmp_path / "x.json", labels="affectnet")


@given(layout=st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.sampled_from(["sad", "bored", 5])),
                       min_size=1, max_size=8))
def test_json_list_line_of_each_record_for_any_layout(tmp_path_factory, layout):
    """Records written with random blank lines and one-line / multi-line bodies: every good record
    and every problem carries the line where its object starts."""
    folder = tmp_path_factory.mktemp("layout")
    (folder / "a.mp4").write_bytes(b"x")
    lines, starts = ["["], []
    for i, (blank, pretty, gpt) in enumerate(layout):
        lines.extend([""] * blank)
        starts.append(len(lines) + 1)
        body = json.dumps(rec("a.mp4", gpt) if gpt != 5 else 5, indent=2 if pretty else None)
        lines.extend((body + ("," if i < len(layout) - 1 else "")).splitlines())
    lines.append("]")
    path = folder / "layout.json"
    path.write_text("\n".join(lines))
    data = read_data(path)
    good = [s for s, (_, _, gpt) in zip(starts, layout) if gpt == "sad"]
    bad = [s for s, (_, _, gpt) in zip(starts, layout) if gpt != "sad"]
    assert [s.source for s in data] == [f"{path}:{n}" for n in good]
    assert [p.line for p in data.problems] == bad


def test_deep_nesting_is_a_bad_record_with_its_line_in_json_lists_and_jsonl(folder):
    """'[' * 100000 overflows Python's JSON parser (RecursionError) and a record within the
    parser's limit can still nest beyond MAX_DEPTH: both are bad records, the others are kept."""
    from r1omni_fast.data.reader import MAX_DEPTH

    bomb = "[" * 100000 + "]" * 100000
    nested: object = "x"
    for _ in range(MAX_DEPTH + 1):
        nested = [nested]
    lst = folder / "deep.json"
    lst.write_text("[" + json.dumps(rec()) + ",\n" + bomb + ",\n" + json.dumps(rec("b.mp4", tags=nested))
                   + ",\n" + json.dumps(rec("c.mp4")) + "]")
    data = read_data(lst)
    assert [s.id for s in data] == ["a", "c"]
    assert [p.line for p in data.problems] == [2, 3]
    assert all(f"deeper than {MAX_DEPTH} levels" in p.message for p in data.problems)
    jsonl = write_jsonl(folder / "deep.jsonl", [rec(), bomb, rec("b.mp4", tags=nested)])
    data = read_data(jsonl)
    assert [p.line for p in data.problems] == [2, 3] and len(data) == 1
    (folder / "bomb.json").write_text(bomb)  # the whole file is one over-deep list
    assert [p.line for p in read_data(folder / "bomb.json").problems] == [1]
    # a string holding brackets does not confuse the skip to the end of an over-deep record
    (folder / "strings.json").write_text("[" + "[" * 5000 + json.dumps("]]\\\"]") + "]" * 5000 + ",\n"
                                         + json.dumps(rec()) + "]")
    data = read_data(folder / "strings.json")
    assert [s.id for s in data] == ["a"] and [p.line for p in data.problems] == [1]


def test_unusable_media_paths_are_bad_records_not_file_errors(folder):
    too_long = "x" * 300 + "/a.mp4"  # a component over 255 bytes: ENAMETOOLONG from the filesystem
    path = write_jsonl(folder / "paths.jsonl", [rec(), rec(too_long), rec("a\x00b.mp4"), rec("b.mp4")])
    data = read_data(path)
    assert len(data) == 2
    assert [p.line for p in data.problems] == [2, 3]
    assert "cannot be used: File name too long" in data.problems[0].message
    assert "does not exist" in data.problems[1].message


def test_the_file_reader_raises_only_data_error(tmp_path):
    (tmp_path / "dir.json").mkdir()
    for bad in (tmp_path / "dir.json", tmp_path / ("y" * 300 + ".json"), tmp_path / "nul\x00.json"):
        with pytest.raises(DataError, match="cannot read data file"):
            read_data(bad)
    (tmp_path / "latin1.json").write_bytes(b"[\xff]")
    with pytest.raises(DataError, match="cannot read data file"):
        read_data(tmp_path / "latin1.json")


def test_an_integer_beyond_pythons_digit_limit_is_a_bad_record(folder):
    huge = "9" * 5000  # int() refuses more than 4300 digits
    jsonl = folder / "big.jsonl"
    jsonl.write_text(json.dumps(rec()) + "\n" + '{"video": "a.mp4", "n": ' + huge + "}\n")
    data = read_data(jsonl)
    assert len(data) == 1 and [p.line for p in data.problems] == [2]
    assert "invalid JSON value" in data.problems[0].message
    lst = folder / "big.json"
    lst.write_text("[" + '{"n": ' + huge + "},\n" + json.dumps(rec()) + "]")
    data = read_data(lst)
    assert len(data) == 1 and [p.line for p in data.problems] == [1]


@pytest.mark.parametrize("name,text", [("d.json", ""), ("d.jsonl", ""), ("d.jsonl", "  \n\n"), ("d.json", "[]"),
                                       ("d.json", "[\n]\n")])
def test_a_file_without_records_is_an_error_naming_it(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as info:
        read_data(tmp_path / name)
    assert str(info.value).startswith(f"{tmp_path / name}: the data file is empty (no records)")


def test_a_trailing_comma_is_named(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([rec(), rec()])[:-1] + ",\n]")
    with pytest.raises(DataError, match=r"list.json:2: invalid JSON at column 1: trailing comma before '\]'"):
        read_data(tmp_path / "list.json")
    record = json.dumps(rec())
    (tmp_path / "obj.json").write_text("[" + record[:-1] + ", }]")
    with pytest.raises(DataError, match="trailing comma before '}' .*remove the last ','"):
        read_data(tmp_path / "obj.json")
    (tmp_path / "lines.jsonl").write_text(record + "\n" + record[:-1] + ",}\n")
    data = read_data(tmp_path / "lines.jsonl", check_media=False)
    assert len(data) == 1 and "trailing comma before '}'" in data.problems[0].message
