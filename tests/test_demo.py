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


def test_demo_data_is_the_configs_data_synth_command():
    """configs/tiny-sft.yaml's comment tells how to write the demo's data by hand: same settings."""
    from r1omni_fast.demo import DEMO_DATA

    text = (CONFIGS / "tiny-sft.yaml").read_text()
    line = next(x for x in text.splitlines() if "r1omni-fast data synth" in x)
    words = line.split()
    flags = {words[i][2:].replace("-", "_"): words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--")}
    assert flags == {"n": str(DEMO_DATA["n"]), "sft_fraction": str(DEMO_DATA["sft_fraction"]),
                     "reasoning": DEMO_DATA["reasoning"]}
    assert DEMO_DATA["test_fraction"] == 0.25  # the CLI's default
    assert "r1omni-fast model tiny runs/demo/tiny-model --pretrain-towers" in text


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, media_module):
    """`r1omni-fast demo` with a few steps: every stage trains, is evaluated and is tabulated."""
    pytest.importorskip("r1omni_fast.train.grpo", reason="the GRPO trainer is not in this tree")
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--sft-steps", "2", "--grpo-steps", "1",
                                       "--clips", "16", "--grounding", "--quiet"])
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("stage "):].splitlines()
    stages = [line.split()[0] for line in table[1:5]]
    assert stages == ["untrained", "sft", "grpo", "grpo-grounded"]
    for stage in stages:
        metrics = json.loads((out / "eval" / stage / "metrics.json").read_text())
        assert metrics["n"] == 4
        shown = table[1 + stages.index(stage)].split()[1:7]
        fmt, war, uar, cue = (float(x) for x in shown[:4])
        assert (fmt, war, uar) == tuple(round(metrics[k], 3) for k in ("format_rate", "war", "uar"))
        assert cue == round(metrics["faithfulness"]["cue_agreement"]["agreement"], 3)
        if stage == "untrained":
            assert shown[4:] == ["n/a", "n/a"] and not (out / "eval" / stage / "attribution.json").exists()
        else:  # the counterfactual attribution from the video-removed and audio-removed passes
            a = json.loads((out / "eval" / stage / "attribution.json").read_text())
            assert a["clips"] == 4 and a["cited"] + a["uncited"] == 8
            assert shown[4:] == [("n/a" if a[k] is None else f"{a[k]:.3f}")
                                 for k in ("cited_change_rate", "uncited_change_rate")]
            for kept in ("video", "audio"):
                assert json.loads((out / "eval" / stage / kept / "metrics.json").read_text())["modalities"] == [kept]
    cold = json.loads((out / "data" / "sft.json").read_text())
    assert len(cold) == 4 and {r["cue"] for r in cold} == {"video", "audio", "both"}  # one clip per class, every cue
    grounded = json.loads((out / "grpo-grounded" / "metrics.jsonl").read_text().splitlines()[0])
    assert "rewards/cue_grounding/mean" in grounded
    wars = {stage: json.loads((out / "eval" / stage / "metrics.json").read_text())["war"] for stage in stages}
    assert wars["grpo"] >= wars["sft"], wars
    for folder in ("tiny-model", "data", "sft", "grpo"):
        assert (out / folder).is_dir()
    assert (out / "grpo" / "model.safetensors").is_file() and (out / "sft" / "model.safetensors").is_file()
    assert "wall time" in result.output
    assert (out / "summary.png").stat().st_size > 0
    assert f"summary: {out / 'summary.png'}" in result.output
    assert f"GRPO curves: {out / 'grpo' / 'grpo_curves.png'}" in result.output
    assert (out / "grpo" / "grpo_curves.png").is_file()


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


def test_the_grounded_row_is_behind_a_flag():
    """The demo's main path (untrained, SFT, GRPO) leaves the second GRPO run to `--grounding`, so
    that it stays within minutes on the 2-core machine (docs/benchmarks.md#demo)."""
    import inspect

    from r1omni_fast.cli import main
    from r1omni_fast.demo import run_demo

    assert inspect.signature(run_demo).parameters["grounding"].default is False
    option = next(p for p in main.commands["demo"].params if p.name == "grounding")
    assert option.default is False and "--grounding" in option.opts


@pytest.mark.parametrize("earlier", ["sft", "summary.png"])
def test_a_folder_holding_a_demo_run_is_refused_before_anything_is_written(tmp_path, earlier):
    """`r1omni-fast demo --out` into a used folder: a usage error naming the folder and the way out;
    the earlier files are as they were and nothing is added."""
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    out = tmp_path / "demo"
    out.mkdir()
    if earlier == "summary.png":
        (out / earlier).write_bytes(b"png")
    else:
        (out / earlier).mkdir()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--clips", "16", "--quiet"])
    assert result.exit_code == 2, result.output
    assert str(out) in result.output and earlier in result.output and "--out DIR" in result.output
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    if earlier == "summary.png":
        assert (out / earlier).read_bytes() == b"png"
