"""Data files as editors write them: a UTF-8 byte-order mark, CRLF line ends, and Unicode line
separators raw inside JSON strings (which are valid JSON and are not line ends)."""

from __future__ import annotations

import json

import pytest

from r1omni_fast.prompts import FORMAT_SUFFIX, R1_OMNI_QUESTION
from r1omni_fast.data import read_data

HUMAN = f"<video>\n<audio>\n{R1_OMNI_QUESTION} {FORMAT_SUFFIX}"

# Every character str.splitlines() treats as a line boundary, besides "\n" itself.
SEPARATORS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def rec(video, gpt="sad", **extra):
    return {"video": video, "conversations": [{"from": "human", "value": HUMAN},
                                              {"from": "gpt", "value": gpt}], **extra}


@pytest.fixture
def folder(tmp_path):
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


RECORDS = [rec("a.mp4", "sad"), rec("b.mp4", "happy"), rec("c.mp4", "angry")]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".txt"])
def test_bom_is_not_data(folder, suffix):
    path = folder / f"data{suffix}"
    if suffix == ".json":
        body = json.dumps(RECORDS, indent=1)
    else:
        body = "\n".join(json.dumps(r) for r in RECORDS) + "\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    data = read_data(path, on_error="raise", check_media=False)
    assert [s.label for s in data] == ["sad", "happy", "angry"]
    assert data.num_skipped == 0


def test_crlf_jsonl(folder):
    path = folder / "data.jsonl"
    body = "\r\n".join(json.dumps(r) for r in RECORDS) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    data = read_data(path, on_error="raise", check_media=False)
    assert [s.label for s in data] == ["sad", "happy", "angry"]


@pytest.mark.parametrize("sep", SEPARATORS, ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_unicode_line_separators_inside_strings(folder, sep, suffix):
    # ensure_ascii=False writes the separator raw (JSON only requires escaping U+0000-U+001F,
    # and json.dumps escapes those anyway; U+0085, U+2028, U+2029 stay raw).
    records = [rec("a.mp4", "sad", note=f"one{sep}two"), rec("b.mp4", "happy"),
               rec("c.mp4", "angry", id=f"clip{sep}c")]
    path = folder / f"data{suffix}"
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    if sep in ("\u2028", "\u2029", "\x85"):
        assert all(sep in line for line in (lines[0], lines[2]))
    body = json.dumps(records, ensure_ascii=False) if suffix == ".json" else "\n".join(lines)
    path.write_text(body + "\n", encoding="utf-8")
    data = read_data(path, on_error="raise", check_media=False)
    assert [s.label for s in data] == ["sad", "happy", "angry"]
    assert data.num_records == 3 and data.num_skipped == 0


def test_bad_line_numbers_count_newlines_only(folder):
    path = folder / "data.jsonl"
    path.write_text(json.dumps(rec("a.mp4"), ensure_ascii=False) + "\n"
                    + json.dumps(rec("b.mp4", note="x\u2028y"), ensure_ascii=False) + "\n"
                    + "{not json\n", encoding="utf-8")
    data = read_data(path, check_media=False)
    assert len(data) == 2 and [p.line for p in data.problems] == [3]
