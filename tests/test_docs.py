"""The documentation and the code say the same: every `r1omni-fast` command shown in README.md and
docs/ exists, every flag shown with it is one that command takes (train: a config field), the docs'
pages are all in mkdocs.yml's nav, and the README stays a first-hour page. Also the test tiers:
R1OMNI_REQUIRE_ALL=1 turns a skip for a missing tool into a failure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
SHELL = ("", "bash", "sh", "console")


def _shell_blocks(text: str):
    """The bodies of the text's fenced code blocks whose language is a shell (or unnamed)."""
    body, language = None, None
    for line in text.splitlines():
        if line.startswith("```"):
            if body is None:
                body, language = [], line[3:].strip()
            else:
                if language in SHELL:
                    yield "\n".join(body) + "\n"
                body = None
        elif body is not None:
            body.append(line)


def _commands():
    """{"eval": click.Command, "data check": ..., ...} of the CLI."""
    from r1omni_fast.cli import main

    out = {}

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            full = f"{prefix} {name}".strip()
            if isinstance(cmd, click.Group):
                walk(cmd, full)
            else:
                out[full] = cmd
    walk(main, "")
    return out


def _flags(cmd: click.Command) -> set:
    flags = set()
    for p in cmd.params:
        flags.update(o for o in p.opts + p.secondary_opts if o.startswith("--"))
    return flags


def _train_flags() -> set:
    import dataclasses

    from r1omni_fast.config import STAGES

    names = {f.name for cls in STAGES.values() for f in dataclasses.fields(cls)} | {"stage"}
    flags = {f"--{n.replace('_', '-')}" for n in names} | {f"--{n}" for n in names}
    flags |= {f"--no-{n.replace('_', '-')}" for n in names}
    return flags | {"--config", "--resume", "--help"}


def _invocations(text: str):
    """(command words, flags) of every `r1omni-fast ...` line in the text's shell blocks, with
    backslash continuations joined."""
    for block in _shell_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if "r1omni-fast " not in line:
                continue
            tail = line[line.index("r1omni-fast ") + len("r1omni-fast "):]
            tail = tail.split("&&")[0].split("|")[0] if "[" not in tail else tail.split("&&")[0]
            words = tail.split()
            yield words, set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", tail))


def _sources():
    return [ROOT / "README.md", *DOCS]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_every_command_and_flag_shown_exists(path):
    commands = _commands()
    train = _train_flags()
    problems = []
    for words, flags in _invocations(path.read_text(encoding="utf-8")):
        if not words or words[0].startswith("-"):
            continue  # r1omni-fast --help
        name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
        if name not in commands:
            problems.append(f"`r1omni-fast {' '.join(words[:2])}`: no such command")
            continue
        known = train if name == "train" else _flags(commands[name]) | {"--help"}
        problems += [f"`r1omni-fast {name} {flag}`: the command has no such flag" for flag in sorted(flags - known)]
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_the_check_fails_on_a_renamed_flag():
    """The check above is not vacuous: a flag the code does not have is reported."""
    commands = _commands()
    text = "```bash\nr1omni-fast eval --model m --data d --out o --num-frame 4\n```\n"
    (words, flags), = list(_invocations(text))
    assert words[0] == "eval" and "--num-frame" in flags - _flags(commands["eval"])


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(entries):
        for entry in entries:
            for value in entry.values() if isinstance(entry, dict) else [entry]:
                if isinstance(value, list):
                    yield from pages(value)
                else:
                    yield value
    listed = set(pages(nav))
    assert listed == {p.name for p in DOCS}


def test_the_readme_is_a_first_hour_page_and_keeps_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "bash scripts/setup.sh && ~/.cache/r1omni-fast/venv/bin/r1omni-fast demo" in text
    assert "bash scripts/test.sh" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_require_all_turns_a_missing_tool_skip_into_a_failure(tmp_path):
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n\ndef test_a():\n    pytest.skip('the ffmpeg command line is not installed')\n\n\n"
        "def test_b():\n    pytest.skip('needs a CUDA device')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]))
    env.pop("R1OMNI_REQUIRE_ALL", None)  # CI runs the suite itself with it set; the loose run must not inherit it

    def run(**extra):
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
                              capture_output=True, text=True, env=dict(env, **extra), cwd=tmp_path)
    loose = run()
    assert loose.returncode == 0 and "2 skipped" in loose.stdout, loose.stdout
    strict = run(R1OMNI_REQUIRE_ALL="1")
    assert strict.returncode == 1 and "1 failed, 1 skipped" in strict.stdout, strict.stdout
    assert "a required tool is missing" in strict.stdout


def test_quick_leaves_out_the_slow_tests():
    """scripts/test.sh --quick passes -m "not slow": the minute-plus modules are then deselected."""
    assert '-m "not slow"' in (ROOT / "scripts" / "test.sh").read_text()
    for module in ("test_wheel.py", "test_train_distributed.py"):
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               "-m", "not slow", str(ROOT / "tests" / module)], capture_output=True, text=True,
                              cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT / "python")))
        assert "deselected" in done.stdout and " selected" not in done.stdout.replace("deselected", ""), done.stdout
