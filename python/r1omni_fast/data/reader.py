"""Reader for R1-Omni's data files: a JSON list of records, or JSONL (one record per line).

A record (DESIGN.md §6)::

    {"video": "clips/0001.mp4", "audio": "optional.wav",
     "conversations": [{"from": "human", "value": "<video>\\n<audio>\\nAs an emotional ..."},
                       {"from": "gpt", "value": "<think>...</think>\\n<answer>sad</answer>"}]}

Media paths are relative to the data file's folder. The gpt value is either a reasoning target
(it contains ``<answer>label</answer>``: SFT data) or a bare label (GRPO / evaluation data); in
both cases the label is mapped onto the label set with ``labels.resolve(...).canonical`` and the
sample's ``solution`` is ``"<answer> {label} </answer>"``, the form R1-Omni's accuracy reward reads.

Every bad record is reported with ``file:line`` (the JSONL line, or the line where the object
starts in a JSON list) and either skipped with a count (``on_error="skip"``) or, after all records
were checked, raised together as one :class:`DataError` (``on_error="raise"``). Nothing is dropped
silently. A record nested deeper than :data:`MAX_DEPTH` levels (arrays and objects) and a media
path the filesystem rejects (a component over 255 bytes, a path over PATH_MAX) are bad records
like any other. :func:`read_data` raises nothing but :class:`DataError` for a file's content.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

from r1omni_fast import labels as label_sets

log = logging.getLogger(__name__)

#: Media placeholders R1-Omni puts before the instruction in the human turn.
MEDIA_PLACEHOLDERS = ("<video>", "<audio>")

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PLACEHOLDER_RE = re.compile(r"\A(?:\s*<(?:video|audio|image)>\s*)+")

LabelSpec = Union[str, Sequence[str], label_sets.LabelSet, None]

#: Deepest nesting of arrays and objects a record may have (R1-Omni's records have 4 levels).
MAX_DEPTH = 64


class DataError(ValueError):
    """One or more bad records (or an unreadable file); ``problems`` lists each with file:line."""

    def __init__(self, message: str, problems: Sequence["RecordProblem"] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class RecordProblem:
    """Why one record was rejected; ``str()`` gives ``file:line: message``."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Sample:
    """One validated record.

    ``prompt`` is the human turn verbatim (media placeholders included); ``instruction`` is the
    same text without the leading ``<video>``/``<audio>`` placeholders. ``target`` is the gpt turn
    verbatim: the reasoning + answer for SFT data, the bare label for GRPO data. ``label`` is the
    canonical class name and ``solution`` is ``"<answer> {label} </answer>"``. ``audio`` is None
    when the audio comes from the video file itself. ``source`` is ``file:line``.
    """

    id: str
    video: Path
    audio: Optional[Path]
    prompt: str
    target: str
    label: str
    solution: str
    is_reasoning: bool
    source: str
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def instruction(self) -> str:
        return _PLACEHOLDER_RE.sub("", self.prompt)


@dataclass
class DataFile:
    """The result of :func:`read_data`: the good samples and every rejected record."""

    path: Path
    samples: List[Sample]
    problems: List[RecordProblem]
    num_records: int
    label_set: label_sets.LabelSet

    @property
    def num_skipped(self) -> int:
        return len(self.problems)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]


def solution_for(label: str) -> str:
    """The GRPO solution string for a canonical label: ``"<answer> sad </answer>"``."""
    return f"<answer> {label} </answer>"


def read_data(
    path: Union[str, os.PathLike],
    *,
    labels: LabelSpec = "dfew",
    on_error: str = "skip",
    kind: str = "auto",
    check_media: bool = True,
) -> DataFile:
    """Read and validate an R1-Omni JSON / JSONL data file.

    ``kind``: "auto" (a gpt value containing ``<answer>`` is a reasoning target, anything else a
    bare label), "sft" (every gpt value must contain ``<answer>label</answer>``) or "label"
    (every gpt value is a bare label). ``check_media`` checks that media files exist.
    ``on_error``: "skip" logs each bad record and leaves it out (``DataFile.problems`` keeps them);
    "raise" checks every record, then raises one :class:`DataError` listing all of them.
    A file that cannot be read or parsed as a whole, or holds no record at all (empty, ``[]``),
    raises :class:`DataError` either way.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if kind not in ("auto", "sft", "label"):
        raise ValueError(f"kind must be 'auto', 'sft' or 'label', got {kind!r}")
    path = Path(path)
    label_set = label_sets.resolve(labels)
    try:
        return _read(path, label_set, on_error, kind, check_media)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: a file's content only ever gives DataError
        raise DataError(f"{path}: cannot read data file: {type(exc).__name__}: {exc}") from exc


def _read(path: Path, label_set: label_sets.LabelSet, on_error: str, kind: str, check_media: bool) -> DataFile:
    try:
        # utf-8-sig: a byte-order mark (as Windows editors write) is not part of the data.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read data file: {exc}") from None

    samples: list[Sample] = []
    problems: list[RecordProblem] = []
    seen_ids: dict[str, int] = {}
    num_records = 0
    for line, record, parse_error in _iter_records(path, text):
        num_records += 1
        try:
            if parse_error is not None:
                raise _BadRecord(parse_error)
            if _depth(record) > MAX_DEPTH:
                raise _BadRecord(_TOO_DEEP)
            sample = _make_sample(record, path, line, label_set, kind, check_media)
        except _BadRecord as bad:
            problems.append(RecordProblem(str(path), line, str(bad)))
            continue
        n = seen_ids.get(sample.id, 0)
        seen_ids[sample.id] = n + 1
        if n:  # the same clip listed twice keeps both records, under distinct ids
            sample = replace(sample, id=f"{sample.id}#{n + 1}")
        samples.append(sample)

    if not num_records:
        raise DataError(f"{path}: the data file is empty (no records): expected a JSON list of R1-Omni records "
                        "or JSONL, one record per line")
    if problems:
        summary = f"{path}: {len(problems)} of {num_records} records are bad"
        if on_error == "raise":
            details = "\n".join(f"  {p}" for p in problems)
            raise DataError(f"{summary}:\n{details}", problems)
        for p in problems:
            log.warning("skipping record %s", p)
        log.warning("%s and were skipped; %d remain", summary, len(samples))
    return DataFile(path, samples, problems, num_records, label_set)


class _BadRecord(Exception):
    pass


_TOO_DEEP = f"record nests arrays/objects deeper than {MAX_DEPTH} levels"


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _skip_value(text: str, pos: int) -> Optional[int]:
    """End of the array/object starting at ``text[pos]`` (bracket matching outside strings), or
    None when it never closes. Used only for records too deep for ``json``."""
    token = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
    level = 0
    for m in token.finditer(text, pos):
        ch = m.group()
        if ch in "[{":
            level += 1
        elif ch in "]}":
            level -= 1
            if level == 0:
                return m.end()
    return None


def _json_problem(text: str, exc: json.JSONDecodeError) -> str:
    """``exc.msg``, or "trailing comma ..." when a ``,`` stands right before the ``]`` / ``}`` where
    the parser wanted another value (Python's own wording says only "Expecting value")."""
    before = text[:exc.pos].rstrip()
    if before.endswith(",") and text.startswith(("]", "}"), exc.pos):
        return f"trailing comma before '{text[exc.pos]}' (JSON allows none): remove the last ','"
    return exc.msg


def _iter_records(path: Path, text: str) -> Iterator[Tuple[int, Any, Optional[str]]]:
    """Yield (line, record, parse_error) for a JSON list or a JSONL file."""
    stripped = text.lstrip()
    if path.suffix.lower() != ".jsonl" and stripped.startswith("["):
        yield from _iter_json_list(path, text)
        return
    if stripped.startswith("{") and "\n" in stripped.rstrip():
        try:  # a pretty-printed single object would otherwise fail line by line
            whole = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            whole = None
        if isinstance(whole, dict):
            raise DataError(f"{path}: the file holds a single JSON object; expected a JSON list of "
                            "records or JSONL (one record per line)")
    # JSONL lines end at "\n" only (a "\r" before it is JSON whitespace): str.splitlines would
    # also split at U+2028, U+0085, ... which JSON allows raw inside strings.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield lineno, None, f"invalid JSON at column {exc.colno}: {_json_problem(raw, exc)}"
            continue
        except RecursionError:
            yield lineno, None, _TOO_DEEP
            continue
        except ValueError as exc:  # e.g. an integer beyond Python's digit limit
            yield lineno, None, f"invalid JSON value: {exc}"
            continue
        yield lineno, record, None


def _iter_json_list(path: Path, text: str) -> Iterator[Tuple[int, Any, Optional[str]]]:
    """Walk a top-level JSON list element by element, tracking the line each element starts on.

    A syntax error inside a list cannot be skipped (the rest of the list has no reliable
    boundary), so it is fatal and names the line and column. An element nested too deeply for the
    parser is skipped to its matching bracket and reported as a bad record.
    """
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]

    def line_of(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    def fatal(pos: int, what: str) -> DataError:
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return DataError(
            f"{path}:{line_of(pos)}: invalid JSON at column {col}: {what}; the rest of the list "
            "cannot be read (fix the file, or write one record per line as JSONL so that bad "
            "lines can be skipped)"
        )

    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, 0).end() + 1  # past "["
    pos = ws.match(text, pos).end()
    if text.startswith("]", pos):
        end = ws.match(text, pos + 1).end()
        if end != len(text):
            raise fatal(end, "extra data after the closing ']'")
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fatal(exc.pos, _json_problem(text, exc)) from None
        except (RecursionError, ValueError) as exc:  # too deep, or a value json cannot hold (huge integer)
            end = _skip_value(text, pos) if text.startswith(("[", "{"), pos) else None
            if end is None:
                raise fatal(pos, _TOO_DEEP if isinstance(exc, RecursionError) else str(exc)) from None
            yield line_of(pos), None, _TOO_DEEP if isinstance(exc, RecursionError) else f"invalid JSON value: {exc}"
        else:
            yield line_of(pos), obj, None
        pos = ws.match(text, end).end()
        if text.startswith(",", pos):
            pos = ws.match(text, pos + 1).end()
            continue
        if text.startswith("]", pos):
            end = ws.match(text, pos + 1).end()
            if end != len(text):
                raise fatal(end, "extra data after the closing ']'")
            return
        raise fatal(pos, "expected ',' or ']' after a record")


def _make_sample(
    record: Any, path: Path, line: int, label_set: label_sets.LabelSet, kind: str, check_media: bool
) -> Sample:
    if not isinstance(record, dict):
        raise _BadRecord(
            f"record is a JSON {_json_type(record)}, expected an object with 'video' and "
            "'conversations'"
        )
    errors: list[str] = []
    folder = path.parent

    video = _media_path(record, "video", folder, check_media, required=True, errors=errors)
    audio = _media_path(record, "audio", folder, check_media, required=False, errors=errors)
    prompt, target = _conversation(record, errors)

    label = None
    is_reasoning = False
    if target is not None:
        is_reasoning = "<answer>" in target
        if kind == "sft" and not is_reasoning:
            errors.append(
                "malformed conversation: the gpt value has no <answer>...</answer> "
                f"(SFT data needs '<think>...</think>\\n<answer>label</answer>'), got {_short(target)}"
            )
        elif kind == "label" and is_reasoning:
            errors.append(
                "malformed conversation: expected a bare label as the gpt value, got a reasoning "
                f"target {_short(target)}"
            )
        else:
            if is_reasoning:
                answers = _ANSWER_RE.findall(target)
                word = answers[-1] if answers else None
                if word is None:
                    errors.append(
                        f"malformed conversation: unclosed <answer> tag in {_short(target)}"
                    )
            else:
                word = target
            if word is not None:
                label = label_set.canonical(word)
                if label is None:
                    errors.append(
                        f"unknown label {word.strip()!r}: expected one of "
                        f"{', '.join(label_set.labels)} (choose the label set: label_set in a run config, "
                        "--labels on the command line)"
                    )
    if errors:
        raise _BadRecord("; ".join(errors))

    assert video is not None and prompt is not None and target is not None and label is not None
    rid = record.get("id")
    if rid is None:
        rid = os.path.splitext(str(record["video"]))[0]
    extra = {k: v for k, v in record.items() if k not in ("id", "video", "audio", "conversations")}
    return Sample(
        id=str(rid),
        video=video,
        audio=audio,
        prompt=prompt,
        target=target,
        label=label,
        solution=solution_for(label),
        is_reasoning=is_reasoning,
        source=f"{path}:{line}",
        extra=extra,
    )


def _media_path(
    record: dict, key: str, folder: Path, check: bool, *, required: bool, errors: list
) -> Optional[Path]:
    value = record.get(key)
    if value is None:
        if required:
            errors.append(f"missing media: no '{key}' key")
        return None
    if not isinstance(value, str) or not value:
        errors.append(f"missing media: '{key}' must be a non-empty path string, got {value!r}")
        return None
    media = Path(value)
    if not media.is_absolute():
        media = folder / media
    if check:
        try:
            exists = media.is_file()
        except (OSError, ValueError) as exc:  # e.g. a component longer than the filesystem allows
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            errors.append(f"missing media: {key} path {_short(str(media))} cannot be used: {reason}")
            return None
        if not exists:
            errors.append(f"missing media: {key} file {str(media)!r} does not exist")
            return None
    return media


def _conversation(record: dict, errors: list) -> Tuple[Optional[str], Optional[str]]:
    conv = record.get("conversations")
    if conv is None:
        errors.append("malformed conversation: no 'conversations' key")
        return None, None
    if not isinstance(conv, list) or len(conv) != 2:
        got = f"{len(conv)} turns" if isinstance(conv, list) else f"a JSON {_json_type(conv)}"
        errors.append(
            f"malformed conversation: expected a list of 2 turns [human, gpt], got {got}"
        )
        return None, None
    values = []
    for i, (turn, role) in enumerate(zip(conv, ("human", "gpt"))):
        if not isinstance(turn, dict):
            errors.append(f"malformed conversation: turn {i} is a JSON {_json_type(turn)}, "
                          "expected {\"from\": ..., \"value\": ...}")
            return None, None
        if turn.get("from") != role:
            errors.append(
                f"malformed conversation: turn {i} must be from {role!r}, got {turn.get('from')!r}"
            )
            return None, None
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            errors.append(f"malformed conversation: turn {i} ({role}) needs a non-empty string "
                          f"'value', got {value!r}")
            return None, None
        values.append(value)
    return values[0], values[1]


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
