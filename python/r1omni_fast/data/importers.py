"""``r1omni-fast data import``: public emotion datasets, as released, to R1-Omni JSON.

Each importer reads one dataset's own distribution layout (its annotation files or its file-name
code), maps its labels onto this project's label sets (:mod:`r1omni_fast.labels`) and writes one
R1-Omni JSON list per split into ``OUT``::

    {"id": "00001", "video": "../DFEW/Clip/original/00001.mp4",
     "conversations": [{"from": "human", "value": "<video>\\n<audio>\\nAs an emotional recognition expert; ..."},
                       {"from": "gpt", "value": "happy"}]}

Media paths are relative to ``OUT`` (the folder of the written file, as :func:`read_data` resolves
them), so the written files pass ``r1omni-fast data check``. The human turn is R1-Omni's: the two
media placeholders and its training question, without the output-format instruction (R1-Omni's
GRPO adds that itself; here ``prompt_style: r1omni`` does, or ``with_format=True`` writes it into
the turn as the synthetic data do). The gpt value is the canonical label.

Every annotation row (or, for datasets coded in file names, every media file) that cannot be
imported is reported as an :class:`ImportProblem` with its file and line: a clip that is not on
disk, a label outside the dataset's code, a malformed row. Nothing is dropped silently; files that
are not part of the selection (RAVDESS's audio-only and video-only versions, CREMA-D's audio
files) are counted in :attr:`ImportResult.ignored`.

Layouts (where each is documented):

- **DFEW** (https://dfew-dataset.github.io/; Jiang et al., ACM MM 2020): the 5-fold single-label
  split files ``EmoLabel_DataSplit/train(single-labeled)/set_{1..5}.csv`` and
  ``test(single-labeled)/set_{1..5}.csv``, header ``video_name,label``, ``video_name`` the clip
  number (``1`` -> clip ``00001``), ``label`` 1-7 = happy, sad, neutral, angry, surprise, disgust,
  fear (the same tables saved as ``set_{1..5}.xlsx`` are read too). The clips
  (``Clip/original/00001.mp4`` ...) are found by their five-digit name anywhere under SRC (or
  ``clips``).
- **MAFW** (https://mafw-database.github.io/MAFW/; Liu et al., ACM MM 2022): the single-label
  split files ``Train & Test Set/single/no_caption/set_{1..5}/{train,test}.txt``, one clip per
  line: ``<clip file> <label>`` (``with_caption/``: tab-separated, captions after the label; ``compound/``
  is the multi-label set and is not read) with the label one of anger, disgust, fear, happiness, neutral,
  sadness, surprise, contempt, anxiety, helplessness, disappointment (or its number 1-11 in that
  order, the paper's). Clips (``data/clips/00001.mp4``) are found by name under SRC. Without split
  files, the single-label annotation table ``Labels/single-set.xlsx`` (a ``clip`` column and
  ``single_label`` 1-11, 0 = none) gives one ``all.json``.
- **RAVDESS** (https://zenodo.org/records/1188976, Livingstone & Russo 2018): the file-name code
  ``MM-VV-EE-II-SS-RR-AA.mp4`` = modality (01 audio-video, 02 video-only, 03 audio-only), vocal
  channel (01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry,
  06 fearful, 07 disgust, 08 surprised), intensity (01 normal, 02 strong; none strong for
  neutral), statement (01, 02), repetition (01, 02), actor (01-24), in ``Actor_XX/`` folders.
  The audio-video files (01) are imported; calm is kept, merged into neutral, or dropped.
- **CREMA-D** (https://github.com/CheyneyComputerScience/CREMA-D, Cao et al. 2014): the
  file-name code ``ActorID_Sentence_Emotion_Level`` (``1001_DFA_ANG_XX.flv`` in ``VideoFlash/``),
  actors 1001-1091, twelve sentence codes, emotions ANG, DIS, FEA, HAP, NEU, SAD, levels LO, MD,
  HI, XX (unspecified). The audio-visual video files are imported; ``AudioWAV``/``AudioMP3`` are
  ignored.
- **MELD** (https://github.com/declare-lab/MELD, Poria et al., ACL 2019): the CSV splits
  ``train_sent_emo.csv``, ``dev_sent_emo.csv``, ``test_sent_emo.csv`` (columns ``Sr No.``,
  ``Utterance``, ``Speaker``, ``Emotion``, ``Sentiment``, ``Dialogue_ID``, ``Utterance_ID``,
  ``Season``, ``Episode``, ``StartTime``, ``EndTime``) beside the clip folders ``train_splits/``,
  ``dev_splits_complete/``, ``output_repeated_splits_test/`` holding ``dia{D}_utt{U}.mp4`` (the
  test folder's names may carry a ``final_videos_test`` prefix). Emotions: anger, disgust, fear,
  joy, neutral, sadness, surprise.
- **R1-Omni JSON** (https://github.com/HumanMLLM/R1-Omni, its README's data format): a JSON list
  (or JSONL) of ``video`` + ``conversations`` records whose media paths are relative to a data
  root (``media_root``, default the file's folder); rewritten with paths relative to ``OUT`` and
  labels mapped onto the label set (reasoning targets are kept verbatim).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from r1omni_fast import labels as label_sets
from r1omni_fast.prompts import FORMAT_SUFFIX, R1_OMNI_QUESTION
from r1omni_fast.data.reader import LabelSpec, _BadRecord, _iter_records, _make_sample

#: Dataset names ``import_dataset`` accepts.
DATASETS: Tuple[str, ...] = ("dfew", "mafw", "ravdess", "cremad", "meld", "r1omni")

#: The label set each dataset's labels map onto unless ``labels=`` says otherwise.
DEFAULT_LABELS: Mapping[str, str] = {
    "dfew": "dfew", "mafw": "mafw", "ravdess": "ravdess", "cremad": "dfew", "meld": "dfew", "r1omni": "mafw",
}

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg")

#: DFEW's label ids (its split files' ``label`` column).
DFEW_LABELS: Mapping[str, str] = {"1": "happy", "2": "sad", "3": "neutral", "4": "angry", "5": "surprise",
                                  "6": "disgust", "7": "fear"}
#: MAFW's eleven single-label names, in the paper's order (their numbers are 1-11).
MAFW_NAMES: Tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
                               "contempt", "anxiety", "helplessness", "disappointment")
RAVDESS_EMOTIONS: Mapping[str, str] = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                                       "06": "fear", "07": "disgust", "08": "surprise"}
CREMAD_EMOTIONS: Mapping[str, str] = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy",
                                      "NEU": "neutral", "SAD": "sad"}
CREMAD_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
CREMAD_LEVELS: Mapping[str, str] = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
MELD_EMOTIONS: Mapping[str, str] = {"anger": "angry", "disgust": "disgust", "fear": "fear", "joy": "happy",
                                    "neutral": "neutral", "sadness": "sad", "surprise": "surprise"}
MELD_SPLITS: Mapping[str, Tuple[str, ...]] = {  # split -> its clip folder's names, the released one first
    "train": ("train_splits",),
    "dev": ("dev_splits_complete", "dev_splits"),
    "test": ("output_repeated_splits_test", "test_splits"),
}


class DatasetLayoutError(ValueError):
    """SRC does not hold the dataset's layout at all (no split file, no coded file name)."""


@dataclass(frozen=True)
class ImportProblem:
    """One annotation row or media file that was not imported; ``str()`` gives ``file:line: message``.

    ``kind``: "missing" (the clip is not on disk), "label" (a label outside the dataset's code or
    the label set), "format" (a malformed row or file name)."""

    source: str
    line: Optional[int]
    kind: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class ImportResult:
    """What :func:`import_dataset` wrote: one file per split, its records' labels, every problem."""

    dataset: str
    out: Path
    label_set: label_sets.LabelSet
    files: Dict[str, Path] = field(default_factory=dict)
    counts: Dict[str, Counter] = field(default_factory=dict)  # split -> label -> records
    problems: List[ImportProblem] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)  # reason -> files left out by the selection

    @property
    def num_records(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def num_missing(self) -> int:
        return sum(1 for p in self.problems if p.kind == "missing")


@dataclass
class _Row:
    """One clip as an importer found it, before the common checks and writing."""

    split: str
    source: str
    line: Optional[int]
    id: str
    label: Optional[str]  # the canonical label, None when the importer reported a problem
    video: Optional[Path]
    audio: Optional[Path] = None
    gpt: Optional[str] = None  # a reasoning target kept verbatim (R1-Omni JSON); else the label
    human: Optional[str] = None  # the record's own human turn (R1-Omni JSON)
    extra: dict = field(default_factory=dict)


def human_turn(with_format: bool = False) -> str:
    """R1-Omni's human turn: ``"<video>\\n<audio>\\n"`` + its question (+ ``" "`` + the format
    instruction when ``with_format``, the synthetic data's layout)."""
    return f"<video>\n<audio>\n{R1_OMNI_QUESTION}" + (f" {FORMAT_SUFFIX}" if with_format else "")


def import_dataset(
    dataset: str,
    src: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    *,
    labels: LabelSpec = None,
    folds: Optional[Sequence[int]] = None,
    calm: str = "keep",
    test_actors: Sequence[int] = (),
    with_format: bool = False,
    clips: Union[str, os.PathLike, None] = None,
    media_root: Union[str, os.PathLike, None] = None,
) -> ImportResult:
    """Import ``dataset`` (one of :data:`DATASETS`) from its released layout under ``src`` into
    R1-Omni JSON files in ``out`` (created), one per split, and ``out/import_summary.json``
    (:func:`import_summary`).

    ``labels``: the label set the labels map onto (default :data:`DEFAULT_LABELS`); a label that
    does not map is a problem, not a record. ``folds`` (DFEW, MAFW): which of the 5 folds to write
    (default all found); files ``set_K_train.json``, ``set_K_test.json``. ``calm`` (RAVDESS):
    "keep" (its own class), "neutral" (merged) or "drop". ``test_actors`` (RAVDESS, CREMA-D): the
    actors of ``test.json``, the rest in ``train.json``; without it one ``all.json``. MELD writes
    ``train.json``, ``dev.json``, ``test.json``; R1-Omni JSON ``<src stem>.json``; MAFW from its
    annotation table ``all.json``. ``clips``
    (DFEW, MAFW): the folder searched for the clips (default ``src``). ``media_root`` (R1-Omni
    JSON): what the file's media paths are relative to (default its folder).

    Raises :class:`DatasetLayoutError` when ``src`` holds none of the dataset's files, ValueError
    for a bad option. Per-row problems are returned, not raised.
    """
    dataset = dataset.lower()
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    if calm not in ("keep", "neutral", "drop"):
        raise ValueError(f"calm must be 'keep', 'neutral' or 'drop', got {calm!r}")
    src = Path(src)
    if not src.exists():
        raise DatasetLayoutError(f"{src}: no such file or folder")
    out = Path(out)
    label_set = label_sets.resolve(labels if labels is not None else DEFAULT_LABELS[dataset])
    result = ImportResult(dataset, out, label_set)

    if dataset == "dfew":
        rows = _dfew(src, Path(clips) if clips else src, folds, result)
    elif dataset == "mafw":
        rows = _mafw(src, Path(clips) if clips else src, folds, result)
    elif dataset == "ravdess":
        rows = _ravdess(src, calm, set(test_actors), result)
    elif dataset == "cremad":
        rows = _cremad(src, set(test_actors), result)
    elif dataset == "meld":
        rows = _meld(src, result)
    else:
        rows = _r1omni(src, Path(media_root) if media_root else src.parent, label_set, result)

    by_split: Dict[str, List[dict]] = {}
    human = human_turn(with_format)
    for row in rows:
        if row.label is None:
            continue
        label = label_set.canonical(row.label)
        if label is None:
            result.problems.append(ImportProblem(row.source, row.line, "label",
                                                 f"label {row.label!r} is not in the label set "
                                                 f"({', '.join(label_set.labels)}); choose one with --labels"))
            continue
        record: dict = {"id": row.id, "video": _relative(row.video, out)}
        if row.audio is not None:
            record["audio"] = _relative(row.audio, out)
        record["conversations"] = [{"from": "human", "value": row.human if row.human is not None else human},
                                   {"from": "gpt", "value": row.gpt if row.gpt is not None else label}]
        record.update(row.extra)
        by_split.setdefault(row.split, []).append(record)
        result.counts.setdefault(row.split, Counter())[label] += 1

    if f"{Path(SUMMARY_FILE).stem}" in by_split:
        raise ValueError(f"a split named {Path(SUMMARY_FILE).stem!r} would overwrite the import summary "
                         f"{out / SUMMARY_FILE}: rename the source file")
    out.mkdir(parents=True, exist_ok=True)
    for split, records in by_split.items():
        path = out / f"{split}.json"
        _write_json(path, records)
        result.files[split] = path
    _write_json(out / SUMMARY_FILE, import_summary(result, src))
    return result


SUMMARY_FILE = "import_summary.json"


def import_summary(result: ImportResult, src: Union[str, os.PathLike]) -> dict:
    """The machine-readable summary that :func:`import_dataset` writes as ``OUT/import_summary.json``:
    ``dataset``, ``source``, ``label_set``; ``files`` (per split: ``path`` relative to OUT,
    ``records``, ``per_class``); ``records`` (all splits); ``ignored`` (reason -> files not
    selected); ``missing`` (clips not on disk); ``problems`` (each ``source``, ``line`` or null,
    ``kind``, ``message``) -- the same facts as :func:`format_import_summary` prints."""
    files = {}
    for split, path in result.files.items():
        counts = result.counts[split]
        per_class = {label: counts[label] for label in result.label_set.labels if counts[label]}
        per_class.update((label, n) for label, n in counts.items() if label not in per_class)
        files[split] = {"path": path.name, "records": sum(counts.values()), "per_class": per_class}
    return {
        "dataset": result.dataset,
        "source": str(Path(src).resolve()),
        "label_set": list(result.label_set.labels),
        "files": files,
        "records": result.num_records,
        "ignored": dict(result.ignored),
        "missing": result.num_missing,
        "problems": [{"source": p.source, "line": p.line, "kind": p.kind, "message": p.message}
                     for p in result.problems],
    }


def _write_json(path: Path, value) -> None:
    """``value`` as indented UTF-8 JSON at ``path``, through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def format_import_summary(result: ImportResult) -> str:
    """The terminal summary: files written with counts per class, what was ignored, every problem."""
    lines = [f"dataset     {result.dataset} -> {result.out} (label set: {', '.join(result.label_set.labels)})"]
    width = max([len(str(p)) for p in result.files.values()] + [4])
    for split, path in result.files.items():
        counts = result.counts[split]
        per_class = ", ".join(f"{label} {counts[label]}" for label in result.label_set.labels if counts[label])
        per_class += "".join(f", {label} {n}" for label, n in counts.items() if label not in result.label_set.labels)
        lines.append(f"wrote       {str(path):<{width}}  {sum(counts.values()):>6} records: {per_class}")
    totals = Counter()
    for counts in result.counts.values():
        totals.update(counts)
    if len(result.files) > 1:
        lines.append("all splits  " + ", ".join(f"{label} {totals[label]}" for label in result.label_set.labels
                                                if totals[label]))
    if result.ignored:
        lines.append(f"ignored     {sum(result.ignored.values())} not selected: "
                     + ", ".join(f"{why} {n}" for why, n in result.ignored.items()))
    kinds = Counter(p.kind for p in result.problems)
    lines.append(f"missing     {result.num_missing} clip(s) not on disk")
    if result.problems:
        lines.append(f"not imported {len(result.problems)} row(s) ("
                     + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) + "):")
        lines.extend(f"  {p}" for p in result.problems)
    return "\n".join(lines)


# --- shared helpers ------------------------------------------------------------------------------


def _relative(path: Optional[Path], out: Path) -> str:
    assert path is not None
    return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()


def _add_found(rows: List[_Row], result: ImportResult, index: "_MediaIndex", names: List[str], what: str,
               row: _Row) -> None:
    """Appends ``row`` with its video when ``index`` finds the clip under one of ``names``; else
    records a "missing" problem at the row's file and line (``what`` names the clip)."""
    video, why = index.find(names, what)
    if video is None:
        result.problems.append(ImportProblem(row.source, row.line, "missing", str(why)))
    else:
        row.video = video
        rows.append(row)


class _MediaIndex:
    """Every media file under a folder, by file-name stem (one walk)."""

    def __init__(self, root: Path, extensions: Tuple[str, ...] = VIDEO_EXTENSIONS,
                 strip_prefix: str = "") -> None:
        self.root = root
        self.by_stem: Dict[str, List[Path]] = {}
        if not root.is_dir():
            return
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext.lower() not in extensions:
                    continue
                if strip_prefix and stem.startswith(strip_prefix):
                    stem = stem[len(strip_prefix):]
                self.by_stem.setdefault(stem, []).append(Path(folder) / name)

    def find(self, stems: Iterable[str], what: str) -> Tuple[Optional[Path], Optional[str]]:
        """The one file named by one of ``stems``, or (None, why not)."""
        stems = list(dict.fromkeys(stems))
        for stem in stems:
            hits = self.by_stem.get(stem)
            if not hits:
                continue
            if len(hits) > 1:
                listed = ", ".join(str(h) for h in hits[:3])
                return None, (f"{what} is found {len(hits)} times under {self.root} ({listed}): pass the "
                              "folder of the copy to use with --clips")
            return hits[0], None
        return None, f"{what} not found under {self.root} (looked for {' or '.join(stems)} with a video extension)"


def _read_text(path: Path) -> str:
    """A text annotation file: UTF-8 (a byte-order mark dropped), else Windows-1252."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _csv_rows(path: Path) -> Iterator[Tuple[int, Dict[str, str]]]:
    """(line where the row starts, {lower-cased header: value}) for each data row of a CSV file."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header = None
    start = 1
    for row in reader:
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [h.strip().lower() for h in row]
            continue
        yield line, dict(zip(header, (cell.strip() for cell in row)))


_XLSX_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
            "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
            "p": "http://schemas.openxmlformats.org/package/2006/relationships"}


def _xlsx_rows(path: Path) -> Iterator[Tuple[int, List[str]]]:
    """(row number, cell texts) of the first worksheet of an .xlsx file (Office Open XML, read
    with the standard library: shared strings, inline strings, numbers; an integral number is
    written without ``.0``). Raises DatasetLayoutError for a file that is not a workbook."""
    import zipfile
    from xml.etree import ElementTree

    def col(ref: str) -> int:
        n = 0
        for ch in ref:
            if not ch.isalpha():
                break
            n = n * 26 + ord(ch.upper()) - 64
        return n - 1

    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            shared = []
            if "xl/sharedStrings.xml" in names:
                for si in ElementTree.fromstring(z.read("xl/sharedStrings.xml")).findall("m:si", _XLSX_NS):
                    shared.append("".join(t.text or "" for t in si.iter(f"{{{_XLSX_NS['m']}}}t")))
            book = ElementTree.fromstring(z.read("xl/workbook.xml"))
            rid = book.find("m:sheets/m:sheet", _XLSX_NS).get(f"{{{_XLSX_NS['r']}}}id")
            rels = ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
            target = next(r.get("Target") for r in rels.findall("p:Relationship", _XLSX_NS) if r.get("Id") == rid)
            sheet = ElementTree.fromstring(z.read(target.lstrip("/") if target.startswith("/") else "xl/" + target))
    except (zipfile.BadZipFile, KeyError, StopIteration, AttributeError, ElementTree.ParseError) as exc:
        raise DatasetLayoutError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__}: {exc}); "
                                 "save it as CSV instead") from None
    for row in sheet.iter(f"{{{_XLSX_NS['m']}}}row"):
        cells: Dict[int, str] = {}
        for i, c in enumerate(row.findall("m:c", _XLSX_NS)):
            kind, ref = c.get("t"), c.get("r")
            v = c.find("m:v", _XLSX_NS)
            if kind == "inlineStr":
                text = "".join(t.text or "" for t in c.iter(f"{{{_XLSX_NS['m']}}}t"))
            elif v is None or v.text is None:
                text = ""
            elif kind == "s":
                text = shared[int(v.text)]
            elif kind in ("str", "b", "e"):
                text = v.text
            else:
                number = float(v.text)
                text = str(int(number)) if number.is_integer() else v.text
            cells[col(ref) if ref else i] = text.strip()
        width = max(cells, default=-1) + 1
        yield int(row.get("r", 0)), [cells.get(i, "") for i in range(width)]


def _table_rows(path: Path, header_has: str = "") -> Iterator[Tuple[int, Dict[str, str]]]:
    """(line or row number, {lower-cased header: value}) of each data row of a CSV or .xlsx table;
    the header is the first non-empty row (the first naming ``header_has`` when given)."""
    if path.suffix.lower() != ".xlsx":
        yield from _csv_rows(path)
        return
    header = None
    for number, cells in _xlsx_rows(path):
        if not any(cells):
            continue
        if header is None:
            if not header_has or header_has in (c.lower() for c in cells):
                header = [c.lower() for c in cells]
            continue
        yield number, dict(zip(header, cells))


def _fold_of(path: Path) -> Optional[int]:
    m = re.fullmatch(r"set_?(\d+)", path.stem if path.suffix else path.name, re.IGNORECASE)
    return int(m.group(1)) if m else None


# --- DFEW ----------------------------------------------------------------------------------------


def _dfew(src: Path, clips: Path, folds: Optional[Sequence[int]], result: ImportResult) -> List[_Row]:
    split_files = []
    found = sorted(src.rglob("set_*.csv"))
    found += [p for p in sorted(src.rglob("set_*.xlsx")) if p.with_suffix(".csv") not in found]
    for path in found:
        parent = path.parent.name.lower()
        split = "train" if parent.startswith("train") else "test" if parent.startswith("test") else None
        fold = _fold_of(path)
        if split is None or fold is None or (folds and fold not in folds):
            continue
        split_files.append((fold, split, path))
    if not split_files:
        raise DatasetLayoutError(
            f"{src}: no DFEW split files (expected EmoLabel_DataSplit/train(single-labeled)/set_1.csv ... "
            "and test(single-labeled)/set_1.csv ...)" + (f" for folds {list(folds)}" if folds else ""))
    index = _MediaIndex(clips)
    rows = []
    for fold, split, path in split_files:
        for line, cells in _table_rows(path, "video_name"):
            name, code = cells.get("video_name", ""), cells.get("label", "")
            if not name.isdigit():
                result.problems.append(ImportProblem(str(path), line, "format",
                                                     f"video_name {name!r} is not a clip number (header video_name,label)"))
                continue
            clip_id = f"{int(name):05d}"
            label = DFEW_LABELS.get(code.split(".")[0] if code.endswith(".0") else code)
            if label is None:
                result.problems.append(ImportProblem(str(path), line, "label",
                                                     f"clip {clip_id}: label {code!r} is not a DFEW label id (1-7)"))
                continue
            _add_found(rows, result, index, [clip_id, str(int(name))], f"clip {clip_id}",
                       _Row(f"set_{fold}_{split}", str(path), line, clip_id, label, None))
    return rows


# --- MAFW ----------------------------------------------------------------------------------------


def _mafw(src: Path, clips: Path, folds: Optional[Sequence[int]], result: ImportResult) -> List[_Row]:
    candidates = []
    for path in sorted(src.rglob("*.txt")):
        parts = [p.lower() for p in path.relative_to(src).parts]
        if path.stem.lower() not in ("train", "test") or "compound" in parts or "multiple" in parts:
            continue
        fold = _fold_of(path.parent)
        if fold is None or (folds and fold not in folds):
            continue
        candidates.append((fold, path.stem.lower(), path, "no_caption" in parts))
    if any(no_caption for *_, no_caption in candidates):  # with_caption lists a subset (no neutral clips)
        candidates = [c for c in candidates if c[3]]
    names = {name: name for name in MAFW_NAMES}
    names.update({str(i): name for i, name in enumerate(MAFW_NAMES, start=1)})
    index = _MediaIndex(clips)
    if not candidates:
        tables = [p for p in sorted(src.rglob("single-set.*")) if p.suffix.lower() in (".xlsx", ".csv")]
        if not tables or folds:
            raise DatasetLayoutError(
                f"{src}: no MAFW single-label split files (expected 'Train & Test Set/single/no_caption/set_1/"
                "train.txt' and test.txt ...)" + (f" for folds {list(folds)}" if folds else
                                                   " nor its annotation file Labels/single-set.xlsx"))
        return _mafw_single_set(tables[0], names, index, result)
    rows = []
    for fold, split, path, _ in candidates:
        for line, text in enumerate(_read_text(path).split("\n"), start=1):
            fields = text.replace(",", " ").split()
            if not fields:
                continue
            if len(fields) < 2:
                result.problems.append(ImportProblem(str(path), line, "format",
                                                     f"expected '<clip file> <label>', got {text.strip()!r}"))
                continue
            clip, code = fields[0], fields[1].lower()
            stem = os.path.splitext(clip)[0]
            name = names.get(code)
            if name is None:
                result.problems.append(ImportProblem(str(path), line, "label",
                                                     f"clip {clip}: label {fields[1]!r} is not a MAFW single label "
                                                     f"({', '.join(MAFW_NAMES)} or 1-11)"))
                continue
            _add_found(rows, result, index, [stem], f"clip {clip}",
                       _Row(f"set_{fold}_{split}", str(path), line, stem, name, None))
    return rows


def _mafw_single_set(path: Path, names: Mapping[str, str], index: _MediaIndex, result: ImportResult) -> List[_Row]:
    """MAFW's single-label annotation table (``Labels/single-set.xlsx``: a ``clip`` column, one
    column per emotion, ``single_label`` 1-11, 0 for a clip without one) -> one split, ``all``."""
    rows = []
    for line, cells in _table_rows(path, "clip"):
        clip = cells.get("clip", "")
        code = cells.get("single_label", list(cells.values())[-1] if cells else "").lower()
        if not clip:
            result.problems.append(ImportProblem(str(path), line, "format", "no clip name in the clip column"))
            continue
        if code in ("", "0"):
            result.ignored["no single label (0)"] += 1
            continue
        stem = os.path.splitext(clip)[0]
        name = names.get(code)
        if name is None:
            result.problems.append(ImportProblem(str(path), line, "label",
                                                 f"clip {clip}: single_label {code!r} is not a MAFW single label "
                                                 f"(1-11 or {', '.join(MAFW_NAMES)})"))
            continue
        _add_found(rows, result, index, [stem], f"clip {clip}", _Row("all", str(path), line, stem, name, None))
    return rows


# --- RAVDESS -------------------------------------------------------------------------------------

_RAVDESS_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")


def _ravdess(src: Path, calm: str, test_actors: set, result: ImportResult) -> List[_Row]:
    rows = []
    seen = 0
    for path in _media_files(src):
        m = _RAVDESS_NAME.fullmatch(path.stem)
        if m is None:
            result.problems.append(ImportProblem(str(path), None, "format",
                                                 "not a RAVDESS file name (MM-VV-EE-II-SS-RR-AA, e.g. "
                                                 "01-01-06-01-02-01-12.mp4)"))
            continue
        seen += 1
        modality, channel, emotion, intensity, statement, repetition, actor = m.groups()
        bad = []
        if modality not in ("01", "02", "03"):
            bad.append(f"modality {modality} (01-03)")
        if channel not in ("01", "02"):
            bad.append(f"vocal channel {channel} (01-02)")
        if emotion not in RAVDESS_EMOTIONS:
            bad.append(f"emotion {emotion} (01-08)")
        if intensity not in ("01", "02") or (emotion == "01" and intensity == "02"):
            bad.append(f"intensity {intensity} (01-02; neutral has no strong intensity)")
        if statement not in ("01", "02"):
            bad.append(f"statement {statement} (01-02)")
        if repetition not in ("01", "02"):
            bad.append(f"repetition {repetition} (01-02)")
        if not 1 <= int(actor) <= 24:
            bad.append(f"actor {actor} (01-24)")
        if bad:
            result.problems.append(ImportProblem(str(path), None, "format",
                                                 "invalid RAVDESS code: " + ", ".join(bad)))
            continue
        if modality != "01" or path.suffix.lower() not in VIDEO_EXTENSIONS:
            result.ignored["video-only (modality 02)" if modality == "02" else "audio-only (modality 03)"] += 1
            continue
        label = RAVDESS_EMOTIONS[emotion]
        if label == "calm" and calm != "keep":
            if calm == "drop":
                result.ignored["calm (dropped)"] += 1
                continue
            label = "neutral"
        split = ("test" if int(actor) in test_actors else "train") if test_actors else "all"
        rows.append(_Row(split, str(path), None, path.stem, label, path,
                         extra={"actor": int(actor), "vocal_channel": "speech" if channel == "01" else "song",
                                "intensity": "normal" if intensity == "01" else "strong"}))
    if not seen:
        raise DatasetLayoutError(f"{src}: no RAVDESS files (Actor_01/01-01-01-01-01-01-01.mp4 ...)")
    return rows


def _media_files(src: Path) -> List[Path]:
    found = []
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        found.extend(Path(folder) / n for n in sorted(files)
                     if os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS + AUDIO_EXTENSIONS)
    return found


# --- CREMA-D -------------------------------------------------------------------------------------

_CREMAD_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})")


def _cremad(src: Path, test_actors: set, result: ImportResult) -> List[_Row]:
    rows = []
    seen = 0
    for path in _media_files(src):
        m = _CREMAD_NAME.fullmatch(path.stem)
        if m is None:
            result.problems.append(ImportProblem(str(path), None, "format",
                                                 "not a CREMA-D file name (ActorID_Sentence_Emotion_Level, e.g. "
                                                 "1001_DFA_ANG_XX.flv)"))
            continue
        seen += 1
        actor, sentence, emotion, level = m.groups()
        bad = []
        if not 1001 <= int(actor) <= 1091:
            bad.append(f"actor {actor} (1001-1091)")
        if sentence not in CREMAD_SENTENCES:
            bad.append(f"sentence {sentence} ({', '.join(CREMAD_SENTENCES)})")
        if emotion not in CREMAD_EMOTIONS:
            bad.append(f"emotion {emotion} ({', '.join(CREMAD_EMOTIONS)})")
        if level not in CREMAD_LEVELS:
            bad.append(f"level {level} ({', '.join(CREMAD_LEVELS)})")
        if bad:
            result.problems.append(ImportProblem(str(path), None, "format", "invalid CREMA-D code: " + ", ".join(bad)))
            continue
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            result.ignored["audio-only (AudioWAV/AudioMP3)"] += 1
            continue
        split = ("test" if int(actor) in test_actors else "train") if test_actors else "all"
        rows.append(_Row(split, str(path), None, path.stem, CREMAD_EMOTIONS[emotion], path,
                         extra={"actor": int(actor), "sentence": sentence, "level": CREMAD_LEVELS[level]}))
    if not seen:
        raise DatasetLayoutError(f"{src}: no CREMA-D files (VideoFlash/1001_DFA_ANG_XX.flv ...)")
    return rows


# --- MELD ----------------------------------------------------------------------------------------


def _meld(src: Path, result: ImportResult) -> List[_Row]:
    csv_files = {split: sorted(src.rglob(f"{split}_sent_emo.csv")) for split in MELD_SPLITS}
    if not any(csv_files.values()):
        raise DatasetLayoutError(f"{src}: no MELD CSV splits (train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv)")
    rows = []
    for split, paths in csv_files.items():
        if not paths:
            continue
        path = paths[0]
        folders = [d for name in MELD_SPLITS[split] for d in sorted(src.rglob(name)) if d.is_dir()]
        index = _MediaIndex(folders[0], strip_prefix="final_videos_test") if folders else None
        for line, cells in _csv_rows(path):
            dia, utt, emotion = cells.get("dialogue_id", ""), cells.get("utterance_id", ""), cells.get("emotion", "")
            if not (dia.isdigit() and utt.isdigit()):
                result.problems.append(ImportProblem(str(path), line, "format",
                                                     f"Dialogue_ID {dia!r} / Utterance_ID {utt!r} are not numbers"))
                continue
            clip = f"dia{int(dia)}_utt{int(utt)}"
            label = MELD_EMOTIONS.get(emotion.lower())
            if label is None:
                result.problems.append(ImportProblem(str(path), line, "label",
                                                     f"{clip}: emotion {emotion!r} is not a MELD emotion "
                                                     f"({', '.join(MELD_EMOTIONS)})"))
                continue
            if index is None:
                result.problems.append(ImportProblem(str(path), line, "missing",
                                                     f"{clip}.mp4 not found: no {MELD_SPLITS[split][0]}/ folder "
                                                     f"under {src}"))
                continue
            extra = {k: cells[c] for k, c in (("speaker", "speaker"), ("utterance", "utterance")) if cells.get(c)}
            _add_found(rows, result, index, [clip], f"clip {clip}.mp4",
                       _Row(split, str(path), line, clip, label, None, extra=extra))
    return rows


# --- R1-Omni JSON --------------------------------------------------------------------------------


def _r1omni(src: Path, media_root: Path, label_set: label_sets.LabelSet, result: ImportResult) -> List[_Row]:
    if not src.is_file():
        raise DatasetLayoutError(f"{src}: R1-Omni data must be a JSON or JSONL file")
    text = _read_text(src)
    rows = []
    split = src.stem
    for line, record, parse_error in _iter_records(src, text):
        try:
            if parse_error is not None:
                raise _BadRecord(parse_error)
            sample = _make_sample(record, src, line, label_set, "auto", False)
        except _BadRecord as bad:
            message = str(bad)
            result.problems.append(ImportProblem(str(src), line, "label" if message.startswith("unknown label")
                                                 else "format", message))
            continue
        media = {}
        missing = []
        for key in ("video", "audio"):
            value = record.get(key)
            if value is None:
                continue
            path = Path(value) if Path(value).is_absolute() else media_root / value
            if not path.is_file():
                missing.append(f"{key} file {str(path)!r} does not exist")
            media[key] = path
        if missing:
            result.problems.append(ImportProblem(str(src), line, "missing", "; ".join(missing)))
            continue
        rows.append(_Row(split, str(src), line, sample.id, sample.label, media["video"], media.get("audio"),
                         gpt=sample.target if sample.is_reasoning else None, human=sample.prompt,
                         extra=dict(sample.extra)))
    return rows
