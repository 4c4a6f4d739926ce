"""Training speed when the machine is shared: 20 SFT steps of the demo recipe, process start
included, alone, beside one busy process, and two trainings side by side.

    python bench/contention.py [--steps 20] [--repeats 1] [--env KEY=VALUE ...]
                               [--alone-rounds N --versus KEY=VALUE ...]

Prints the wall time of each case and its ratio to the run alone. Fair sharing of the cores
predicts 2x for two trainings side by side on a 2-core machine (each gets half of it) and
between 1x and 2x beside one single-threaded busy process. ``--env`` sets variables for the
training processes (e.g. ``--env OMP_NUM_THREADS=2`` to compare thread settings;
``--env OMP_WAIT_POLICY=`` leaves libgomp at its own default, threads that spin while they wait,
which is how r1omni-fast ran before it chose passive waiting: libgomp prints one warning about
the empty value).

``--alone-rounds N --versus KEY=VALUE`` first compares the run alone with and without the
``--versus`` variables in N paired rounds (the two runs of a round back to back, their order
alternating), and prints both medians and the median of the per-round ratios: on a host whose
speed drifts by 10-20 % between minutes, that ratio resolves a difference of a few percent that
best-of-N times cannot (``--versus OMP_WAIT_POLICY=`` asks what passive waiting costs alone).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 3600: pass\n"


def cli(*args: str) -> list:
    return [sys.executable, "-m", "r1omni_fast", *args]


def prepare(work: Path) -> None:
    subprocess.run(cli("model", "tiny", str(work / "tiny-model")), check=True, stdout=subprocess.DEVNULL)
    subprocess.run(cli("data", "synth", str(work / "data"), "--reasoning", "short"), check=True,
                   stdout=subprocess.DEVNULL)


def train_cmd(work: Path, out: str, steps: int) -> list:
    return cli("train", "--config", str(ROOT / "configs" / "tiny-sft.yaml"),
               "--model-name-or-path", str(work / "tiny-model"),
               "--data-file", str(work / "data" / "sft.json"), "--eval-file", "",
               "--output-dir", str(work / out), "--max-steps", str(steps),
               "--save-steps", str(steps), "--logging-steps", str(steps))


def timed(cmds: list, env: dict) -> list:
    """Start every command at once; return each one's wall time in seconds."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    ends = []
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"training failed (exit {p.returncode}):\n{err.decode()[-2000:]}")
        ends.append(time.perf_counter() - start)
    return ends


def with_env(env: dict, pairs: list) -> dict:
    """``env`` updated in place with ``KEY=VALUE`` strings; returns it."""
    for kv in pairs:
        key, eq, value = kv.partition("=")
        if not key or not eq:
            raise SystemExit(f"--env/--versus take KEY=VALUE (an empty VALUE sets it empty), got {kv!r}")
        env[key] = value
    return env


def paired_alone(work: Path, env: dict, other: dict, args) -> None:
    """Alone, ``env`` against ``other`` in paired rounds (order alternating); prints the medians
    and the median per-round ratio."""
    mine, theirs = [], []
    for r in range(args.alone_rounds):
        order = ((mine, env), (theirs, other)) if r % 2 == 0 else ((theirs, other), (mine, env))
        for out, e in order:
            out.append(timed([train_cmd(work, "paired", args.steps)], e)[0])
    ratios = [a / b for a, b in zip(mine, theirs)]
    label = " ".join(args.versus)
    print(f"alone, {args.alone_rounds} paired rounds ({args.steps} SFT steps, process start included):")
    print(f"  this setting            median {statistics.median(mine):5.1f} s   "
          + " ".join(f"{t:.1f}" for t in mine))
    print(f"  with {label:<18s} median {statistics.median(theirs):5.1f} s   "
          + " ".join(f"{t:.1f}" for t in theirs))
    print(f"  ratio per round: median {statistics.median(ratios):.3f}, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1, help="best of N for each case")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--alone-rounds", type=int, default=0, help="paired rounds alone, with and without --versus")
    ap.add_argument("--versus", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    if args.alone_rounds and not args.versus:
        ap.error("--alone-rounds needs --versus KEY=VALUE (the variables to compare with)")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "python") + os.pathsep + env.get("PYTHONPATH", "")
    with_env(env, args.env)
    with tempfile.TemporaryDirectory(prefix="r1omni-contention-") as tmp:
        work = Path(tmp)
        prepare(work)
        timed([train_cmd(work, "warm", 2)], env)  # page cache and compiled kernels warm
        if args.alone_rounds:
            paired_alone(work, env, with_env(dict(env), args.versus), args)
        alone, busy, pair = [], [], []
        for _ in range(args.repeats):
            alone.append(timed([train_cmd(work, "alone", args.steps)], env)[0])
            hog = subprocess.Popen([sys.executable, "-c", BUSY])
            try:
                busy.append(timed([train_cmd(work, "busy", args.steps)], env)[0])
            finally:
                hog.kill()
                hog.wait()
            pair.append(max(timed([train_cmd(work, "a", args.steps), train_cmd(work, "b", args.steps)], env)))
    base = min(alone)
    print(f"machine: {os.cpu_count()} logical CPUs; {args.steps} SFT steps of the demo recipe, process start included")
    print(f"{'case':<34}{'wall s':>9}{'vs alone':>10}{'fair':>7}")
    for name, t, fair in (("alone", base, "1x"), ("beside one busy process", min(busy), "<=2x"),
                          ("two trainings side by side (each)", min(pair), "2x")):
        print(f"{name:<34}{t:>9.1f}{t / base:>9.2f}x{fair:>7}")


if __name__ == "__main__":
    main()
