"""Record and compare the numerics of short fixed-seed runs, to show that a change meant to leave
results alone does (a refactor, a move of code between modules).

    python scripts/numerics.py record OUT.json [--work DIR]
    python scripts/numerics.py compare BEFORE.json AFTER.json

``record`` builds the tiny HumanOmni and tiny Qwen2.5-Omni checkpoints and a small synthetic
dataset, then runs through the real ``r1omni-fast`` CLI, for each backend: SFT (4 steps) and GRPO
(3 steps, from the SFT model, KL against it). It writes, per run: every number of every line of
``metrics.jsonl`` except wall-clock ones, every completion of ``completions.jsonl`` and a SHA-256 of
every tensor of the final model, plus the demo-style eval rows (format rate, WAR, UAR) of the
GRPO model on the held-out split. ``compare`` prints each difference and exits 1 if there is any.

Runs on a CPU in a few minutes; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import yaml

LABELS = ["happy", "sad", "angry", "neutral"]
#: metric keys that measure time or memory, not numerics
UNTIMED = ("time", "second", "per_sec", "throughput", "memory", "elapsed")


def _timed(key: str) -> bool:
    return any(u in key.lower() for u in UNTIMED) or key.endswith("_s")


def _cli(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "r1omni_fast.cli", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"r1omni-fast {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")


def _numeric_metrics(path: Path) -> List[Dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows.append({k: v for k, v in row.items()
                     if isinstance(v, (int, float)) and not _timed(k)})
    return rows


def _weights(folder: Path) -> Dict[str, str]:
    import torch
    from safetensors import safe_open

    digests = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for name in sorted(f.keys()):
                t = f.get_tensor(name).contiguous()
                digests[f"{file.name}:{name}"] = hashlib.sha256(t.view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    return digests


def _completions(path: Path) -> List[Any]:
    if not path.exists():
        return []
    return [{k: v for k, v in json.loads(line).items() if not _timed(k)}
            for line in path.read_text().splitlines()]


def _run(work: Path, name: str, fields: Dict[str, Any]) -> Dict[str, Any]:
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump(fields, sort_keys=False))
    _cli("train", "--config", str(config))
    out = Path(fields["output_dir"])
    return {"metrics": _numeric_metrics(out / "metrics.jsonl"), "completions": _completions(out / "completions.jsonl"),
            "weights": _weights(out)}


def record(path: Path, work: Path) -> None:
    from r1omni_fast.data.synthetic import generate

    data = generate(work / "data", n=16, seed=0, labels=LABELS, num_frames=4, fps=8)
    result: Dict[str, Any] = {}
    for arch in ("humanomni", "qwen2_5_omni"):
        model = work / f"tiny-{arch}"
        _cli("model", "tiny", "--arch", arch, str(model))
        common = dict(label_set=LABELS, seed=0, num_frames=2, learning_rate=5e-3, lr_scheduler_type="constant",
                      per_device_train_batch_size=2, logging_steps=1, save_total_limit=1, bf16=False,
                      tunable_parts=["mm_language_model", "mm_mlp_adapter", "audio_projector"])
        sft_out, grpo_out = work / f"{arch}-sft", work / f"{arch}-grpo"
        result[f"{arch}/sft"] = _run(work, f"{arch}-sft", dict(
            stage="sft", model_name_or_path=str(model), data_file=str(data.sft), output_dir=str(sft_out),
            max_steps=4, save_steps=4, max_length=2048, **common))
        result[f"{arch}/grpo"] = _run(work, f"{arch}-grpo", dict(
            stage="grpo", model_name_or_path=str(sft_out), data_file=str(data.train), output_dir=str(grpo_out),
            max_steps=3, save_steps=3, num_generations=4, max_prompt_length=1024, max_completion_length=12,
            beta=0.04, temperature=1.0, reward_funcs=["accuracy", "format"], **common))
        eval_out = work / f"{arch}-eval"
        _cli("eval", "--model", str(grpo_out), "--data", str(data.test), "--out", str(eval_out), "--num-frames", "2",
             "--max-new-tokens", "12", "--labels", ",".join(LABELS), "--device", "cpu")
        metrics = json.loads((eval_out / "metrics.json").read_text())
        result[f"{arch}/eval"] = {k: v for k, v in metrics.items() if not _timed(k)}
        result[f"{arch}/eval"]["predictions"] = _completions(eval_out / "predictions.jsonl")
    # the run folders' own paths are not numerics: every run names them "<work>"
    path.write_text(json.dumps(result, indent=1, sort_keys=True).replace(str(work.resolve()), "<work>")
                    .replace(str(work), "<work>"))
    print(f"wrote {path}: {', '.join(result)}")


def _diff(a: Any, b: Any, where: str, out: List[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'after' if k not in a else 'before'}")
            else:
                _diff(a[k], b[k], f"{where}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} entries before, {len(b)} after")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{where}[{i}]", out)
    elif a != b:
        out.append(f"{where}: {a!r} before, {b!r} after")


def compare(before: Path, after: Path) -> int:
    diffs: List[str] = []
    _diff(json.loads(before.read_text()), json.loads(after.read_text()), "", diffs)
    for d in diffs[:200]:
        print(d)
    if diffs:
        print(f"{len(diffs)} difference(s)")
        return 1
    print("identical: per-step metrics, completions, final weights and eval rows")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--work", type=Path, default=None, help="an empty or new folder for the runs (default: a temporary one)")
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("before", type=Path)
    cmp_.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "compare":
        return compare(args.before, args.after)
    if args.work is not None:
        if args.work.exists() and any(args.work.iterdir()):
            parser.error(f"--work {args.work} is not empty: give a new or empty folder (the runs are written there)")
        args.work.mkdir(parents=True, exist_ok=True)
        record(args.out, args.work)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            record(args.out, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
