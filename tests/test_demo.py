"""The end-to-end demo: its settings are those of configs/tiny-*.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from _eval_fixtures import SYNTH_LABELS, media_module, synth_eval  # noqa: F401  (fixtures)
from tests._model_fixtures import tiny_ckpt  # noqa: F401  (fixture)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_demo_settings_are_the_tiny_configs(stage):
    from r1omni_fast.config import STAGES
    from r1omni_fast.demo import DEMO_GRPO, DEMO_SFT

    settings = {"sft": DEMO_SFT, "grpo": DEMO_GRPO}[stage]
    config = yaml.safe_load((CONFIGS / f"tiny-{stage}.yaml").read_text())
    assert config["stage"] == stage
    for key, value in settings.items():
        assert key in config, f"configs/tiny-{stage}.yaml lacks {key}"
        assert config[key] == value, key
    STAGES[stage](**settings)  # and they are a valid configuration


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, media_module):
    """`r1omni-fast demo` with a few steps: every stage trains, is evaluated and is tabulated."""
    pytest.importorskip("r1omni_fast.train.grpo", reason="the GRPO trainer is not in this tree")
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--sft-steps", "2", "--grpo-steps", "1",
                                       "--clips", "16", "--quiet"])
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("stage "):].splitlines()
    stages = [line.split()[0] for line in table[1:4]]
    assert stages == ["untrained", "sft", "grpo"]
    for stage in stages:
        metrics = json.loads((out / "eval" / stage / "metrics.json").read_text())
        assert metrics["n"] == 4
        fmt, war, uar = (float(x) for x in table[1 + stages.index(stage)].split()[1:4])
        assert (fmt, war, uar) == tuple(round(metrics[k], 3) for k in ("format_rate", "war", "uar"))
    wars = {stage: json.loads((out / "eval" / stage / "metrics.json").read_text())["war"] for stage in stages}
    assert wars["grpo"] >= wars["sft"], wars
    for folder in ("tiny-model", "data", "sft", "grpo"):
        assert (out / folder).is_dir()
    assert (out / "grpo" / "model.safetensors").is_file() and (out / "sft" / "model.safetensors").is_file()
    assert "wall time" in result.output


def test_answer_budget_covers_every_sft_target(tiny_ckpt, synth_eval):
    """The demo's evaluations must leave room for a whole learned answer."""
    from r1omni_fast.data import read_data
    from r1omni_fast.demo import answer_budget
    from r1omni_fast.model import OmniModel

    budget = answer_budget(tiny_ckpt, synth_eval.sft, SYNTH_LABELS)
    tokenizer = OmniModel.from_pretrained(tiny_ckpt).processor.tokenizer
    lengths = [len(tokenizer.encode(s.target + "<|im_end|>", add_special_tokens=False))
               for s in read_data(synth_eval.sft, labels=list(SYNTH_LABELS))]
    assert max(lengths) < budget <= 2 * max(lengths)
