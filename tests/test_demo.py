"""The end-to-end demo: its settings are those of configs/tiny-*.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
