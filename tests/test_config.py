"""Stage configs: defaults, YAML + flag precedence, typed parsing, one-line validation errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from r1omni_fast.config import (
    STAGES,
    ConfigError,
    GRPOConfig,
    SFTConfig,
    field_help,
    load_config,
)

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_sft_defaults_are_r1omnis_cold_start():
    c = SFTConfig()
    assert (c.learning_rate, c.lr_scheduler_type, c.warmup_ratio, c.num_frames) == (2e-5, "cosine", 0.03, 8)
    assert "vision_tower" not in c.tunable_parts and "audio_tower" not in c.tunable_parts
    assert c.image_aspect_ratio == "pad" and c.max_steps == -1


def test_grpo_defaults_follow_the_issue_and_trl_names():
    g = GRPOConfig()
    assert (g.num_generations, g.per_device_train_batch_size, g.max_prompt_length,
            g.max_completion_length) == (8, 1, 512, 512)
    assert (g.temperature, g.beta, g.epsilon, g.epsilon_high, g.delta) == (1.0, 0.04, 0.2, None, None)
    assert (g.loss_type, g.importance_sampling_level, g.num_iterations, g.scale_rewards) == (
        "grpo", "token", 1, "group")
    assert (g.reward_funcs, g.reward_weights, g.reward_mode, g.learning_rate) == (
        ["accuracy", "format"], None, "robust", 1e-6)
    assert g.sync_ref_model is False
    # list defaults are not shared between instances
    g.reward_funcs.append("x")
    assert GRPOConfig().reward_funcs == ["accuracy", "format"]


def test_flags_win_over_yaml_with_either_spelling(tmp_path):
    path = write(tmp_path, "stage: sft\nmax_steps: 10\nlearning_rate: 1e-4\nseed: 3\nbf16: false\n")
    c = load_config(path, ["--max-steps", "20", "--learning_rate=3e-4", "--bf16"])
    assert isinstance(c, SFTConfig)
    assert (c.max_steps, c.learning_rate, c.seed, c.bf16) == (20, 3e-4, 3, True)
    assert load_config(path, ["--max_steps", "30"]).max_steps == 30
    assert load_config(path, []).max_steps == 10


def test_typed_parsing_from_annotations(tmp_path):
    # PyYAML reads 1e-4 (no dot) as a string; the annotation makes it a float
    path = write(tmp_path, "stage: grpo\nlearning_rate: 1e-4\ntop_k: 50\n")
    g = load_config(path, [
        "--reward-funcs", "accuracy,format,mypkg.rewards.length",
        "--reward-weights", "[1, 0.5, 0.1]",
        "--top-k", "none",
        "--gradient-checkpointing",
        "--no-sync-ref-model",
        "--epsilon-high", "0.28",
        "--label-set", "happy, sad",
        "--num-generations", "4",
    ])
    assert g.learning_rate == 1e-4 and isinstance(g.learning_rate, float)
    assert g.reward_funcs == ["accuracy", "format", "mypkg.rewards.length"]
    assert g.reward_weights == [1.0, 0.5, 0.1]
    assert g.top_k is None and g.gradient_checkpointing is True and g.sync_ref_model is False
    assert g.epsilon_high == 0.28 and g.label_set == ["happy", "sad"] and g.num_generations == 4
    # a negative number after a flag is its value, not another flag
    with pytest.raises(ConfigError, match=r"^learning_rate must be > 0, got -0\.0005$"):
        load_config(path, ["--learning-rate", "-0.5e-3"])
    assert load_config(path, ["--scale-rewards", "false"]).scale_rewards == "none"  # via str
    assert GRPOConfig(scale_rewards=True).scale_rewards == "group"
    assert load_config(path, ["--bf16", "no"]).bf16 is False


@pytest.mark.parametrize("stage,flags,message", [
    ("sft", ["--learning-rate", "-1"], "learning_rate must be > 0, got -1.0"),
    ("sft", ["--learning-rate", "fast"], "learning_rate must be float, got 'fast'"),
    ("sft", ["--max-steps", "0"], "max_steps must be > 0, or -1 to use num_train_epochs; got 0"),
    ("sft", ["--max-steps", "2.5"], "max_steps must be int, got '2.5'"),
    ("sft", ["--warmup-ratio", "1.5"], "warmup_ratio must be in [0, 1), got 1.5"),
    ("sft", ["--lr-scheduler-type", "cosine_restarts"],
     "lr_scheduler_type must be one of constant, constant_with_warmup, linear, cosine; got 'cosine_restarts'"),
    ("sft", ["--tunable-parts", "llm"], "tunable_parts has unknown part(s) ['llm']"),
    ("sft", ["--image-aspect-ratio", "crop"], "image_aspect_ratio must be one of pad, resize; got 'crop'"),
    ("sft", ["--label-set", "affectnet"], "label_set: unknown label set 'affectnet'"),
    ("sft", ["--gradient-checkpointing", "maybe"], "gradient_checkpointing must be bool, got 'maybe'"),
    ("grpo", ["--num-generations", "1"], "num_generations must be >= 2, got 1"),
    ("grpo", ["--top-p", "0"], "top_p must be in (0, 1], got 0.0"),
    ("grpo", ["--epsilon-high", "0.1"], "epsilon_high must be >= epsilon (0.2), got 0.1"),
    ("grpo", ["--delta", "1.1"], "delta must exceed 1 + epsilon_high (the upper clip), got 1.1"),
    ("grpo", ["--loss-type", "ppo"],
     "loss_type must be one of grpo, bnpo, dr_grpo, dapo, cispo, sapo, luspo, vespo; got 'ppo'"),
    ("grpo", ["--loss-type", "luspo"], "loss_type luspo needs importance_sampling_level: sequence"),
    ("grpo", ["--loss-type", "luspo", "--importance-sampling-level", "sequence"], "loss_type luspo needs beta: 0"),
    ("grpo", ["--loss-type", "sapo", "--delta", "2"], "delta caps the clipped surrogate, which loss_type sapo"),
    ("grpo", ["--sapo-temperature-neg", "0"], "sapo_temperature_neg must be > 0"),
    ("grpo", ["--top-entropy-quantile", "1.5"], "top_entropy_quantile must be in [0, 1]"),
    ("grpo", ["--multi-objective-aggregation", "sum"],
     "multi_objective_aggregation must be one of sum_then_normalize, normalize_then_sum; got 'sum'"),
    ("grpo", ["--reward-weights", "1"], "reward_weights has 1 values for 2 reward_funcs"),
    ("grpo", ["--scale-rewards", "global"], "scale_rewards must be one of group, batch, none; got 'global'"),
])
def test_bad_value_gives_one_line_error_naming_the_field(tmp_path, stage, flags, message):
    path = write(tmp_path, f"stage: {stage}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, flags)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_bad_value_in_yaml_is_reported_the_same_way(tmp_path):
    path = write(tmp_path, "stage: sft\nper_device_train_batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"^per_device_train_batch_size must be >= 1, got 0$"):
        load_config(path, [])


def test_unknown_fields_list_close_matches(tmp_path):
    path = write(tmp_path, "stage: sft\nlearning_rat: 1e-5\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown field 'learning_rat' for stage sft; did you mean learning_rate\?"):
        load_config(path, [])
    ok = write(tmp_path, "stage: sft\n", "ok.yaml")
    with pytest.raises(ConfigError, match=r"flags: unknown field --num-generation for stage sft; see"):
        load_config(ok, ["--num-generation", "8"])  # a GRPO field, and misspelt
    with pytest.raises(ConfigError, match=r"unknown field --num-generation for stage grpo; did you mean num_generations"):
        load_config(ok, ["--stage", "grpo", "--num-generation", "8"])


def test_stage_selection_and_file_errors(tmp_path):
    assert isinstance(load_config(None, ["--stage", "grpo"]), GRPOConfig)
    with pytest.raises(ConfigError, match="stage"):  # evaluation is `r1omni-fast eval`, not a training stage
        load_config(None, ["--stage", "eval"])
    assert isinstance(load_config(write(tmp_path, "stage: sft\n"), ["--stage", "grpo"]), GRPOConfig)
    with pytest.raises(ConfigError, match="no stage given: add 'stage: sft'"):
        load_config(write(tmp_path, "seed: 1\n"), [])
    with pytest.raises(ConfigError, match="unknown stage 'dpo': use one of sft, grpo"):
        load_config(write(tmp_path, "stage: dpo\n"), [])
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: expected ','"):
        load_config(write(tmp_path, "stage: sft\nseed: [1\n", "bad.yaml"), [])
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- stage\n"), [])
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml", [])
    with pytest.raises(ConfigError, match="unexpected argument 'oops'"):
        load_config(None, ["--stage", "sft", "oops"])


def test_require_names_the_missing_field():
    with pytest.raises(ConfigError, match=r"^model_name_or_path is required: set 'model_name_or_path:' in the YAML or pass --model-name-or-path VALUE$"):
        SFTConfig().require("model_name_or_path", "data_file")
    SFTConfig(model_name_or_path="m", data_file="d").require("model_name_or_path", "data_file")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_to_yaml_round_trips(tmp_path, stage):
    cls = STAGES[stage]
    original = cls(model_name_or_path="m", seed=7, label_set=["happy", "sad"], num_frames=4)
    path = write(tmp_path, original.to_yaml())
    assert yaml.safe_load(path.read_text())["stage"] == stage
    assert load_config(path, []) == original
    assert list(original.to_dict())[1:] == [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load_and_validate(path):
    cfg = load_config(path, [])
    assert cfg.stage in path.name
    cfg.require("model_name_or_path", "data_file")


def test_shipped_configs_cover_the_demo_and_humanomni():
    names = {p.name for p in CONFIGS}
    assert {"tiny-sft.yaml", "tiny-grpo.yaml", "humanomni-0.5b-sft.yaml",
            "humanomni-0.5b-grpo-dfew.yaml"} <= names


def test_field_help_lists_every_field_with_a_description():
    for stage, cls in STAGES.items():
        rows = field_help(stage)
        assert [r[0] for r in rows] == [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(cls)]
        assert all(r[3] for r in rows), [r[0] for r in rows if not r[3]]


# --- non-finite values, bounded messages, YAML alias bombs (issue 34 item 7) ----------------------

NON_FINITE = [("sft", "max_grad_norm", "nan"), ("sft", "adam_epsilon", "inf"), ("grpo", "beta", "nan"),
              ("sft", "learning_rate", "inf"), ("sft", "weight_decay", "nan"), ("sft", "num_train_epochs", "inf"),
              ("grpo", "epsilon_high", "nan"), ("grpo", "temperature", "-inf"), ("grpo", "reward_bound", "inf"),
              ("sft", "lora_dropout", "nan"), ("grpo", "top_p", "nan"), ("grpo", "delta", "inf")]


@pytest.mark.parametrize("stage,name,value", NON_FINITE, ids=[f"{n}={v}" for _, n, v in NON_FINITE])
def test_every_float_field_refuses_nan_and_inf(stage, name, value):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["--stage", stage, f"--{name}", value])
    message = str(info.value)
    assert name in message and value.lstrip("-") in message and "finite" in message
    assert "\n" not in message


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_no_float_field_of_any_stage_takes_nan(stage):
    # mappings of floats (modality_dropout) take no bare value from a flag: their NaN case is below
    floats = [f.name for f in dataclasses.fields(STAGES[stage]) if "float" in str(f.type) and "Dict" not in str(f.type)]
    assert floats
    for name in floats:
        with pytest.raises(ConfigError, match=f"{name} must be a finite number"):
            load_config(None, ["--stage", stage, f"--{name}", "nan"])


def test_nan_inside_lists_and_mappings_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="reward_weights must be a finite number, got nan"):
        load_config(write(tmp_path, "stage: grpo\nreward_weights: [1.0, .nan]\n"))
    with pytest.raises(ConfigError, match="generation_kwargs.*must be a finite number, got inf"):
        load_config(write(tmp_path, "stage: grpo\ngeneration_kwargs: {temperature: .inf}\n"))
    with pytest.raises(ConfigError, match="modality_dropout.*must be a finite number, got nan"):
        load_config(write(tmp_path, "stage: grpo\nmodality_dropout: {audio: .nan}\n"))


BOMB = ('stage: sft\nlabel_set: &i [&h [&g [&f [&e [&d [&c [&b [&a ["lol","lol","lol","lol","lol","lol","lol",'
        '"lol","lol"],*a,*a,*a,*a,*a,*a,*a,*a,*a],*b,*b,*b,*b,*b,*b,*b,*b,*b],*c,*c,*c,*c,*c,*c,*c,*c,*c],'
        '*d,*d,*d,*d,*d,*d,*d,*d,*d],*e,*e,*e,*e,*e,*e,*e,*e,*e],*f,*f,*f,*f,*f,*f,*f,*f,*f],*g,*g,*g,*g,*g,'
        '*g,*g,*g,*g],*h,*h,*h,*h,*h,*h,*h,*h,*h]\n')


def _within_budget(call, seconds=5.0, peak_bytes=64 << 20):
    import time
    import tracemalloc

    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as info:
            call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - started < seconds
    assert peak < peak_bytes  # the expanded bomb: 9**9 strings, gigabytes
    return str(info.value)


def test_a_yaml_alias_bomb_is_refused_quickly_and_in_little_memory(tmp_path):
    assert len(BOMB) < 450
    path = write(tmp_path, BOMB)
    message = _within_budget(lambda: load_config(path))
    assert str(path) in message and "aliases" in message and len(message) < 400


def test_an_alias_bomb_in_a_flag_is_refused_too():
    bomb = "[" + ", ".join(["&a [x, x, x, x, x, x, x, x, x]"] + [f"&{c} [" + ", ".join([f"*{p}"] * 9) + "]"
                                                              for p, c in zip("abcdefg", "bcdefgh")]) + "]"
    message = _within_budget(lambda: load_config(None, ["--stage", "sft", "--label-set", bomb]))
    assert "aliases" in message and len(message) < 1000


def test_a_huge_value_is_shown_abridged():
    lol = ["lol"] * 9
    for _ in range(8):  # shared, as YAML aliases build it: 9**9 strings once expanded
        lol = [lol] * 9
    message = _within_budget(lambda: SFTConfig(label_set=lol))
    assert message.startswith("label_set must be") and len(message) < 400
    with pytest.raises(ConfigError) as info:
        load_config(None, ["--stage", "sft", "--label-set", "x" * 100_000])
    assert len(str(info.value)) < 500 and "use one of" in str(info.value)


def test_device_field_is_checked():
    assert SFTConfig().device == "auto" and GRPOConfig(device="cuda:1").device == "cuda:1"
    for bad in ("gpu", "cuda:x", "cpu:0", "cuda:-1"):
        with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
            load_config(None, ["--stage", "sft", f"--device={bad}"])
