"""Soak of the data-file reader: mutated R1-Omni data files through ``read_data``, counted by
mutation kind and outcome.

Each file starts from a valid data file (a JSON list or JSONL, SFT and label records, with and
without a separate audio file) and gets one mutation: bytes flipped, inserted or cut; a record or a
value replaced by deep nesting (up to 200,000 levels), a number of 5,000+ digits, a 2 MB string,
a wrong JSON type, a path component over 255 bytes or a path over PATH_MAX, invalid UTF-8, a BOM,
NUL bytes, lone surrogates, broken conversations; or the file is empty, a single object or a
pretty-printed list. Each file is read twice (``on_error="skip"`` and ``"raise"``) under a 10 s
alarm. Outcomes:

- ``ok``: every record good; ``bad_records``: records reported with file:line (skipped, or
  raised together as one DataError with ``on_error="raise"``); ``no_records``: every record bad
  (skip); ``data_error``: the file as a whole refused with DataError (unreadable, not UTF-8, a
  syntax error inside a JSON list, a single object);
- ``crash``: any other exception (a traceback: a bug), ``hang``: the alarm fired (a bug),
  ``no_line``: a reported problem without a line number (a bug).

    PYTHONPATH=python python bench/soak_data.py [--files 1000] [--seed 0] [--keep DIR]

Exits 1 when any crash, hang or problem without a line happened. Prints the first tracebacks.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from r1omni_fast.data import DataError, read_data
from r1omni_fast.prompts import FORMAT_SUFFIX, R1_OMNI_QUESTION

LABELS = ["happy", "sad", "angry", "neutral", "surprise", "fear", "disgust"]
HUMAN = f"<video>\n<audio>\n{R1_OMNI_QUESTION} {FORMAT_SUFFIX}"
TIMEOUT_S = 10
BUGS = ("crash", "hang", "no_line")


class Hang(Exception):
    pass


def base_records(rng: random.Random, n: int) -> list:
    out = []
    for i in range(n):
        label = rng.choice(LABELS)
        gpt = f"<think>the face looks {label}</think>\n<answer>{label}</answer>" if rng.random() < 0.5 else label
        rec = {"id": f"clip{i:04d}", "video": f"clips/{i % 4}.mp4",
               "conversations": [{"from": "human", "value": HUMAN}, {"from": "gpt", "value": gpt}]}
        if rng.random() < 0.3:
            rec["audio"] = "clips/voice.wav"
        out.append(rec)
    return out


def serialise(records: list, rng: random.Random) -> tuple[str, str]:
    """(text, suffix) as a JSON list (compact or pretty) or JSONL."""
    style = rng.choice(["list", "pretty", "jsonl"])
    if style == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=rng.random() < 0.5) + "\n" for r in records), ".jsonl"
    return json.dumps(records, indent=2 if style == "pretty" else None), ".json"


def _random_value(rng: random.Random):
    return rng.choice([None, True, 0, -1, 1.5e308, "", "x", [], {}, [1, 2], {"a": 1}, "<answer>", "\u0000"])


def _set_random_field(records: list, rng: random.Random, value) -> None:
    rec = rng.choice(records)
    where = rng.choice(["video", "audio", "id", "conversations", "turn", "value", "from", "record"])
    if where in ("video", "audio", "id", "conversations"):
        rec[where] = value
    elif where == "turn":
        rec["conversations"][rng.randrange(2)] = value
    elif where in ("value", "from"):
        rec["conversations"][rng.randrange(2)][where] = value
    else:
        records[records.index(rec)] = value


def mutate(kind: str, rng: random.Random, records: list) -> tuple[bytes, str]:
    """One mutated file: (bytes, suffix)."""
    records = json.loads(json.dumps(records))
    if kind == "deep_nesting":
        depth = rng.choice([65, 200, 1000, 5000, 100_000, 200_000])
        nested = "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
        text, suffix = serialise(records, rng)
        if suffix == ".jsonl":
            lines = text.splitlines()
            lines.insert(rng.randrange(len(lines) + 1), nested)
            return ("\n".join(lines) + "\n").encode(), suffix
        if rng.random() < 0.2:
            return nested.encode(), suffix  # the whole file
        body = ",".join([json.dumps(r) for r in records[:2]] + [nested] + [json.dumps(r) for r in records[2:]])
        return f"[{body}]".encode(), suffix
    if kind == "long_path":
        rec = rng.choice(records)
        rec[rng.choice(["video", "audio"])] = rng.choice([
            "clips/" + "x" * rng.randint(256, 5000) + ".mp4",  # one component over NAME_MAX
            "/".join(["d" * 200] * rng.randint(21, 60)) + "/a.mp4",  # the path over PATH_MAX
            "clips/" + "\u00e9" * 130 + ".mp4"])  # 260 bytes in UTF-8, 130 characters
        text, suffix = serialise(records, rng)
        return text.encode(), suffix
    if kind == "huge_number":
        _set_random_field(records, rng, 0)
        text, suffix = serialise(records, rng)
        return text.replace(": 0", ": " + "9" * rng.randint(4301, 20000), 1).replace(
            ":0", ":" + "9" * rng.randint(4301, 20000), 1).encode(), suffix
    if kind == "huge_string":
        _set_random_field(records, rng, "y" * 2_000_000)
    elif kind == "wrong_type":
        _set_random_field(records, rng, _random_value(rng))
    elif kind == "bad_unicode":
        _set_random_field(records, rng, rng.choice(["\ud800", "a\udfffb", "\u202e", "\uffff", "clips/\ud83d.mp4"]))
    elif kind == "conversation":
        rec = rng.choice(records)
        conv = rec["conversations"]
        rec["conversations"] = rng.choice([[], conv[:1], conv + conv[:1], conv[::-1], [conv[0], {"from": "gpt"}],
                                           [conv[0], {"from": "gpt", "value": "<answer>sad"}], "text", {"a": 1}])
    text, suffix = serialise(records, rng)
    data = text.encode("utf-8", "surrogatepass")
    if kind == "byte_flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        data = bytes(b)
    elif kind == "insert_bytes":
        pos = rng.randrange(len(data) + 1)
        data = data[:pos] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[pos:]
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "nul_bytes":
        pos = rng.randrange(len(data) + 1)
        data = data[:pos] + b"\x00" * rng.randint(1, 4) + data[pos:]
    elif kind == "bom":
        data = rng.choice([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]) + data
    elif kind == "empty":
        data = rng.choice([b"", b"\n", b"   ", b"[", b"]", b"{}", b"null", b"[]garbage", b"[{}"])
    elif kind == "single_object":
        data = json.dumps({"data": records}, indent=rng.choice([None, 2])).encode()
    return data, suffix


KINDS = ["byte_flip", "insert_bytes", "truncate", "nul_bytes", "bom", "empty", "single_object", "deep_nesting",
         "long_path", "huge_number", "huge_string", "wrong_type", "bad_unicode", "conversation"]


def read_once(path: Path, on_error: str) -> tuple[str, str]:
    """(outcome, detail) of one read."""
    try:
        signal.alarm(TIMEOUT_S)
        try:
            data = read_data(path, labels=LABELS, on_error=on_error)
        finally:
            signal.alarm(0)
    except Hang:
        return "hang", f"no answer after {TIMEOUT_S} s"
    except DataError as exc:
        if any(p.line < 1 for p in exc.problems):
            return "no_line", str(exc)[:300]
        return ("bad_records" if exc.problems else "data_error"), ""
    except Exception:  # noqa: BLE001 - any other exception is what the soak looks for
        return "crash", traceback.format_exc()
    if any(p.line < 1 for p in data.problems):
        return "no_line", "; ".join(str(p) for p in data.problems)[:300]
    if not data.problems:
        return "ok", ""
    return ("bad_records" if len(data) else "no_records"), ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="mutated data files to read")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="keep the files that crashed or hung in this folder")
    args = parser.parse_args()

    def on_alarm(signum, frame):
        raise Hang

    signal.signal(signal.SIGALRM, on_alarm)
    rng = random.Random(args.seed)
    counts: dict = collections.defaultdict(collections.Counter)
    bugs = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="soak-data-") as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        for name in ("0.mp4", "1.mp4", "2.mp4", "3.mp4", "voice.wav"):
            (root / "clips" / name).write_bytes(b"the reader only checks that media files exist")
        for i in range(args.files):
            kind = KINDS[i % len(KINDS)]
            data, suffix = mutate(kind, rng, base_records(rng, rng.randint(1, 12)))
            path = root / f"data{i}{suffix}"
            path.write_bytes(data)
            for on_error in ("skip", "raise"):
                outcome, detail = read_once(path, on_error)
                counts[kind][outcome] += 1
                if outcome in BUGS:
                    bugs.append((kind, on_error, path.name, detail))
                    if args.keep:
                        Path(args.keep).mkdir(parents=True, exist_ok=True)
                        shutil.copy(path, Path(args.keep) / path.name)
            path.unlink()
    elapsed = time.perf_counter() - started

    outcomes = ["ok", "bad_records", "no_records", "data_error", *BUGS]
    print(f"{args.files} mutated data files, each read with on_error=skip and raise "
          f"({2 * args.files} reads, {elapsed:.1f} s, seed {args.seed})")
    print(f"{'kind':<15}" + "".join(f"{o:>12}" for o in outcomes))
    total: collections.Counter = collections.Counter()
    for kind in KINDS:
        total.update(counts[kind])
        print(f"{kind:<15}" + "".join(f"{counts[kind][o]:>12}" for o in outcomes))
    print(f"{'total':<15}" + "".join(f"{total[o]:>12}" for o in outcomes))
    for kind, on_error, name, detail in bugs[:5]:
        print(f"\n--- {kind} ({name}, on_error={on_error}) ---\n{detail}")
    return 1 if bugs else 0


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)  # every skipped record is logged; the table is the report
    sys.exit(main())
