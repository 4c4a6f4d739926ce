"""Pure-Python reference of the rewards, written with ``re`` the way R1-Omni writes them.

The oracle of tests/test_rewards*.py and the anchor of bench/rewards.py: slow, obviously
correct, and independent of the native scanners it checks.
"""

from __future__ import annotations

import re
import string
import sys
from typing import Optional, Tuple

from r1omni_fast.labels import LabelSet

# R1-Omni's three patterns, verbatim.
FORMAT_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>")
# Robust mode and parsing search with DOTALL, and parsing needs the format pattern's groups.
ANSWER_DOTALL = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
THINK_DOTALL = re.compile(r"<think>(.*?)</think>", re.DOTALL)
FORMAT_GROUPS = re.compile(r"<think>(.*?)</think>\s*<answer>(.*?)</answer>", re.DOTALL)

#: What robust mode trims from both ends of an answer: Python whitespace, ASCII punctuation and
#: the typographic / CJK punctuation listed in rust/reward/labels.rs.
ROBUST_TRIM = (
    "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    + string.punctuation
    + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2039\u203a\u201e\u201a\u2026\u3002\uff0c\u3001\uff01"
    + "\uff1f\uff1a\uff1b\uff08\uff09\u3010\u3011\u300a\u300b\u300c\u300d\u300e\u300f\u2013\u2014"
    + "\u00b7\u00a1\u00bf"
)


def format_reward(text: str) -> float:
    return 1.0 if FORMAT_PATTERN.fullmatch(text) else 0.0


def r1omni_answer(text: str) -> str:
    m = ANSWER_PATTERN.search(text)
    return m.group(1).strip() if m else text.strip()


def accuracy_r1omni(completion: str, solution: str) -> float:
    return 1.0 if r1omni_answer(completion) == r1omni_answer(solution) else 0.0


def robust_label(text: str, label_set: LabelSet) -> Optional[str]:
    m = ANSWER_DOTALL.search(text)
    answer = m.group(1) if m else text
    return label_set.canonical(answer.strip(ROBUST_TRIM))


def accuracy_robust(completion: str, solution: str, label_set: LabelSet) -> float:
    truth = robust_label(solution, label_set)
    if truth is None:
        raise ValueError(f"solution {solution!r} names no label of {label_set.labels}")
    return 1.0 if robust_label(completion, label_set) == truth else 0.0


def parse_completion(text: str) -> Tuple[Optional[str], Optional[str], bool]:
    m = FORMAT_GROUPS.fullmatch(text)
    if m:
        return m.group(1).strip(), m.group(2).strip(), True
    think, answer = THINK_DOTALL.search(text), ANSWER_DOTALL.search(text)
    return (
        think.group(1).strip() if think else None,
        answer.group(1).strip() if answer else None,
        False,
    )
