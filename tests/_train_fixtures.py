"""Helpers of the trainer tests: a small synthetic dataset, the tiny checkpoint, run configs, and a
CLI launcher for real subprocesses.

The clip loader is ``r1omni_fast.media.load_batch`` when that module is built, else the PyAV
loader of ``_data_fixtures`` (same signature, real decoding). ``python tests/_train_fixtures.py
train --config FILE ...`` runs the real ``r1omni-fast`` CLI with that loader installed, so a
subprocess can be SIGKILLed mid-run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

TESTS = Path(__file__).resolve().parent
LABELS = ["happy", "sad", "angry", "neutral"]


def clip_loader():
    """The native media loader when available, else the PyAV reference loader."""
    try:
        from r1omni_fast.media import load_batch

        return load_batch
    except ImportError:
        sys.path.insert(0, str(TESTS))
        from _data_fixtures import pyav_load_batch

        return pyav_load_batch


def install_loader() -> None:
    """Make ``r1omni_fast.media.load_batch`` importable (the PyAV loader when media is not built)."""
    try:
        import r1omni_fast.media  # noqa: F401
    except ImportError:
        module = types.ModuleType("r1omni_fast.media")
        module.load_batch = clip_loader()
        sys.modules["r1omni_fast.media"] = module


def make_data(root: Path, n: int = 16, seed: int = 0):
    from r1omni_fast.data.synthetic import generate

    return generate(root, n=n, seed=seed, labels=LABELS, num_frames=4, fps=8)


_ASSETS: Dict[str, Any] = {}


def shared_assets(tmp_path_factory) -> Tuple[Path, Any]:
    """(tiny checkpoint folder, synthetic dataset) built once per test session."""
    if "assets" not in _ASSETS:
        from r1omni_fast.model.humanomni.tiny import build_tiny_checkpoint

        root = tmp_path_factory.mktemp("train-assets")
        _ASSETS["assets"] = (Path(build_tiny_checkpoint(root / "tiny", seed=0)), make_data(root / "data"))
    return _ASSETS["assets"]


def write_config(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def sft_fields(model: Path, data, out: Path, **over: Any) -> Dict[str, Any]:
    """A small CPU SFT run: 1 frame per clip, 2 samples per step, no eval, no plots needed."""
    fields = dict(stage="sft", model_name_or_path=str(model), data_file=str(data.sft), output_dir=str(out),
                  label_set=LABELS, seed=0, num_frames=1, max_steps=6, learning_rate=1e-3,
                  lr_scheduler_type="cosine", warmup_ratio=0.1, per_device_train_batch_size=2,
                  tunable_parts=["mm_language_model", "mm_mlp_adapter", "audio_projector"],
                  max_length=2048, save_steps=3, save_total_limit=2, logging_steps=1, bf16=False)
    fields.update(over)
    return fields


def grpo_fields(model: Path, data, out: Path, **over: Any) -> Dict[str, Any]:
    """A small CPU GRPO run: 1 frame, 2 prompts x 2 samples per step, 8-token completions."""
    fields = dict(stage="grpo", model_name_or_path=str(model), data_file=str(data.train), output_dir=str(out),
                  label_set=LABELS, seed=0, num_frames=1, max_steps=2, learning_rate=1e-3,
                  lr_scheduler_type="constant", per_device_train_batch_size=2, num_generations=2,
                  max_prompt_length=256, max_completion_length=8, beta=0.04, save_steps=2,
                  save_total_limit=2, tunable_parts=["mm_language_model"], bf16=False)
    fields.update(over)
    return fields


def _content(completion):
    """A completion's text: TRL passes chat messages for conversational data (or plain strings)."""
    return completion if isinstance(completion, str) else completion[0]["content"]


def grpo_trainer(model_dir, data, out, **over):
    """A GRPOTrainer on the small CPU run of :func:`grpo_fields` (fields overridden by ``over``),
    clips from :func:`clip_loader`, no progress bar."""
    from r1omni_fast.config import GRPOConfig
    from r1omni_fast.train.grpo import GRPOTrainer

    fields = grpo_fields(model_dir, data, out, **over)
    fields.pop("stage")
    return GRPOTrainer(GRPOConfig(**fields), loader=clip_loader(), progress=False)


def answer_length_reward(completions, solution, label, prompts, completion_ids, **kwargs):
    """A TRL-style user reward for the tests: characters / 100, capped at 1."""
    assert len(solution) == len(label) == len(prompts) == len(completion_ids) == len(completions)
    return [min(len(_content(c)), 100) / 100 for c in completions]


def infinite_reward(completions, **kwargs):
    """A user reward returning inf for every completion (a non-finite reward must not reach the weights)."""
    return [float("inf")] * len(completions)


def huge_on_first_reward(completions, **kwargs):
    """A user reward far beyond any bound for the first completion of each call, 0.5 for the others."""
    return [1e9] + [0.5] * (len(completions) - 1)


#: signals ``length_reward_sending_signals`` sends to its own process, one per call, while any are left
PENDING_SIGNALS: List[int] = []


def length_reward_sending_signals(completions, **kwargs):
    """``answer_length_reward``'s values; first sends the next of ``PENDING_SIGNALS`` to this
    process (a real signal arriving in the middle of a GRPO step)."""
    if PENDING_SIGNALS:
        os.kill(os.getpid(), PENDING_SIGNALS.pop(0))
    return [min(len(_content(c)), 100) / 100 for c in completions]


def reward_failing_on_rank_1(completions, **kwargs):
    """A reward that raises on rank 1 of a torchrun job (the failed-rank test)."""
    if os.environ.get("RANK") == "1":
        raise RuntimeError("reward_failing_on_rank_1: rank 1 gives up")
    return [0.0] * len(completions)


def run_cli(args: List[str], *, timeout: float = 600, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """``r1omni-fast ARGS`` in a subprocess (this file as launcher)."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent / "python"), full_env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def kill_after(args: List[str], marker: Path, log: Path, timeout: float = 600) -> int:
    """Start ``r1omni-fast ARGS`` in a subprocess, SIGKILL it as soon as ``marker`` exists, and
    return its exit status (output in ``log``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent / "python"), env.get("PYTHONPATH", "")])
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        try:
            while not marker.exists():
                if proc.poll() is not None:
                    raise AssertionError(f"the run ended before {marker} appeared:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{marker} did not appear within {timeout} s")
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return proc.returncode


if __name__ == "__main__":
    install_loader()
    from r1omni_fast.cli import main

    main(sys.argv[1:], prog_name="r1omni-fast")


# R1-Omni's GRPO reward functions as its trainer calls them (TRL's interface: completions are
# chat messages, keyword arguments), written out from their published behaviour.
def r1omni_accuracy_reward(completions, solution, **kwargs):
    contents = [completion[0]["content"] for completion in completions]
    rewards = []
    for content, sol in zip(contents, solution):
        sol_match = re.search(r"<answer>(.*?)</answer>", sol)
        ground_truth = sol_match.group(1).strip() if sol_match else sol.strip()
        content_match = re.search(r"<answer>(.*?)</answer>", content)
        student_answer = content_match.group(1).strip() if content_match else content.strip()
        rewards.append(1.0 if student_answer == ground_truth else 0.0)
    return rewards


def r1omni_format_reward(completions, **kwargs):
    pattern = r"<think>.*?</think>\s*<answer>.*?</answer>"
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if re.fullmatch(pattern, content, re.DOTALL) else 0.0 for content in contents]


#: every call's keyword arguments, recorded by ``recording_reward``
RECORDED_CALLS: List[dict] = []


def recording_reward(**kwargs):
    """Records what the trainer passes; scores 1 for the first completion of each group, None
    (not scored) for the others of the second group only."""
    RECORDED_CALLS.append(kwargs)
    n = len(kwargs["completions"])
    return [1.0 if i % 2 == 0 else (None if i >= n // 2 else 0.0) for i in range(n)]


async def async_length_reward(completions, **kwargs):
    """An ``async def`` reward: the trainer awaits it."""
    import asyncio

    await asyncio.sleep(0)
    return [min(len(_content(c)), 100) / 100 for c in completions]
