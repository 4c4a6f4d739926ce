"""`r1omni-fast study`: cells, the mean ± std over seeds (hand-computed), a tiny study end to end
whose table is its cells' evaluations, and resuming: a finished cell is not rerun, an
interrupted one is."""

from __future__ import annotations

import json

import pytest

from _eval_fixtures import media_module  # noqa: F401  (fixture)


def test_cells_of_each_study():
    from r1omni_fast.study import DEMO_GRPO, MODALITY_DROPOUT_ON, study_cells

    assert [(c.name, c.sft_clips) for c in study_cells("cold-start")] == [
        ("0 clips", 0), ("1 clips", 1), ("4 clips", 4), ("16 clips", 16)]
    sft, off, on = study_cells("modality-dropout")
    assert sft.grpo is None and off.grpo == {} and on.grpo == {"modality_dropout": MODALITY_DROPOUT_ON}
    sft, *rewards = study_cells("rewards")
    assert sft.grpo is None and sft.name == "SFT only"
    assert [c.grpo["reward_funcs"] for c in rewards] == [["accuracy"], ["accuracy", "format"],
                                                         ["accuracy", "format", "cue_grounding"]]
    assert rewards[1].grpo["reward_funcs"] == DEMO_GRPO["reward_funcs"]  # the demo's grpo row
    assert [c.slug for c in rewards] == ["accuracy", "accuracy-format", "accuracy-format-grounding"]
    with pytest.raises(ValueError, match="unknown study 'dropout'"):
        study_cells("dropout")
    with pytest.raises(ValueError, match="clip counts >= 0"):
        study_cells("cold-start", sizes=(-1,))


def test_mean_and_sample_std_hand_computed():
    from r1omni_fast.study import mean_std

    got = mean_std([0.5, 0.7, 0.9])
    assert got["mean"] == pytest.approx(0.7) and got["std"] == pytest.approx(0.2) and got["n"] == 3
    assert mean_std([0.25]) == {"mean": 0.25, "std": 0.0, "n": 1}
    assert mean_std([None, 1.0, 0.0])["std"] == pytest.approx(2 ** -0.5)  # None: not measured, left out
    assert mean_std([None]) is None


def test_cold_start_fraction_gives_the_largest_size_per_class():
    from r1omni_fast.study import cold_start_fraction, plan_study

    # 256 clips, 4 classes: 64 per class, 16 held out, 48 for training; 16 clips = 4 per class
    assert round(cold_start_fraction(256, 4, 16, 0.25) * 48) == 4
    assert plan_study("cold-start")[1]["sft_fraction"] == pytest.approx(4 / 48)
    assert "sft_fraction" in plan_study("rewards")[1]  # the demo's own (4 clips)
    with pytest.raises(ValueError, match="raise --clips or lower the sizes"):
        cold_start_fraction(16, 4, 16, 0.25)


def test_parse_seeds():
    from r1omni_fast.study import parse_seeds

    assert parse_seeds("0,1, 2") == [0, 1, 2]
    for bad in ("", "0,x", "1,1"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)


def _tiny_study(tmp_path, study, monkeypatch, **kw):
    from r1omni_fast import demo
    from r1omni_fast.study import run_study

    grpo_runs = []
    starts = kw.pop("starts", [])
    real = demo.DemoStages.grpo

    def counted(self, model_dir, name, defaults, steps=None, **overrides):
        grpo_runs.append((self.seed, name))
        starts.append((self.seed, name, model_dir))
        return real(self, model_dir, name, defaults, steps, **overrides)

    monkeypatch.setattr(demo.DemoStages, "grpo", counted)
    table = run_study(study, tmp_path / "s", seeds=kw.pop("seeds", (0,)), sft_steps=1, grpo_steps=1, clips=16,
                      progress=False, echo=lambda line: None, **kw)
    return table, grpo_runs


@pytest.mark.slow
def test_a_tiny_rewards_study_tabulates_its_cells_and_resumes(tmp_path, monkeypatch, media_module):
    from r1omni_fast.study import MEASURES, cell_measures

    table, runs = _tiny_study(tmp_path, "rewards", monkeypatch)
    root = tmp_path / "s" / "rewards"
    assert runs == [(0, "accuracy"), (0, "accuracy-format"), (0, "accuracy-format-grounding")]
    assert [c["name"] for c in table["cells"]][0] == "SFT only"
    for cell in table["cells"]:
        slug = cell["name"].lower().replace("+", "-").replace(" ", "-")
        metrics = json.loads((root / "seed-0" / "eval" / slug / "metrics.json").read_text())
        attribution = json.loads((root / "seed-0" / "eval" / slug / "attribution.json").read_text())
        assert cell["seeds"]["0"] == cell_measures(metrics, attribution)
        assert cell["seeds"]["0"]["war"] == metrics["war"] and metrics["n"] == 4
        for m in MEASURES:
            value = cell["seeds"]["0"][m]
            assert cell["summary"][m] == (None if value is None else {"mean": value, "std": 0.0, "n": 1})
    assert json.loads((root / "table.json").read_text()) == table
    text = (root / "table.md").read_text()
    assert text.startswith("| rewards | WAR | UAR | format | cue agreement |") and "accuracy+format+grounding" in text
    assert (root / "plot.png").stat().st_size > 0
    # all done: nothing reruns and the table is the same
    again, runs = _tiny_study(tmp_path, "rewards", monkeypatch)
    assert runs == [] and again == table
    # an interrupted cell (its folder there, its marker not) is rerun from scratch, alone
    (root / "seed-0" / "cell-accuracy-format.done.json").unlink()
    (root / "seed-0" / "accuracy-format" / "leftover").write_text("half a run")
    again, runs = _tiny_study(tmp_path, "rewards", monkeypatch)
    assert runs == [(0, "accuracy-format")] and not (root / "seed-0" / "accuracy-format" / "leftover").exists()
    assert again == table  # the same seed gives the same cell


@pytest.mark.slow
def test_a_tiny_cold_start_study_trains_from_the_first_clips(tmp_path, monkeypatch, media_module):
    starts = []
    table, runs = _tiny_study(tmp_path, "cold-start", monkeypatch, sizes=(0, 1), starts=starts)
    seed_dir = tmp_path / "s" / "cold-start" / "seed-0"
    assert [c["name"] for c in table["cells"]] == ["0 clips", "1 clips"]
    assert runs == [(0, "0-clips"), (0, "1-clips")]
    first = json.loads((seed_dir / "data" / "sft.json").read_text())[:1]
    assert json.loads((seed_dir / "data" / "sft-1.json").read_text()) == first
    # 0 clips: GRPO from the untrained checkpoint, no SFT at all; 1 clip: from the SFT on sft-1.json
    assert [start for _, _, start in starts] == [seed_dir / "tiny-model", seed_dir / "sft-1"]
    assert not (seed_dir / "sft-0").exists()
    assert (seed_dir / "sft-1.done.json").is_file()


def test_study_cli_refuses_bad_seeds_and_a_too_large_cold_start(tmp_path):
    from click.testing import CliRunner

    from r1omni_fast.cli import main
    from r1omni_fast.exit_status import EXIT_USAGE

    result = CliRunner().invoke(main, ["study", "rewards", "--seeds", "0,0", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE and "distinct" in result.output
    result = CliRunner().invoke(main, ["study", "cold-start", "--clips", "16", "--out", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE and "raise --clips or lower the sizes" in result.output
    assert not (tmp_path / "cold-start").exists()
