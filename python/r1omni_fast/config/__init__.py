"""Run configuration: one dataclass per stage, loaded from YAML and overridden by flags.

Every field is at once a keyword argument, a YAML key and a ``--flag`` (``--max-steps`` and
``--max_steps`` both work; flags win over the YAML). Field names follow TRL where TRL has one
(DESIGN.md §7). Values are converted from their annotation (int, float, bool, str, lists,
Optional), so ``learning_rate: 2e-5`` in YAML (a string to PyYAML) is a float here. Validation in
``__post_init__`` raises :class:`ConfigError` with a one-line message naming the field and what to
set instead. A ``stage:`` key picks the dataclass: ``sft`` -> :class:`SFTConfig`, ``grpo`` ->
:class:`GRPOConfig` (evaluation takes its settings as ``r1omni-fast eval`` flags).

In GRPO, ``per_device_train_batch_size`` counts prompts; each prompt is sampled
``num_generations`` times (TRL counts completions and requires divisibility).
"""

from r1omni_fast.config.loader import load_config
from r1omni_fast.config.schema import (ASPECTS, GENERATION_KWARGS, GRPO_LOSS_TYPES, MODEL_PARTS, SCHEDULERS, STAGES,
                                       TRACKER_PACKAGES, TRL_ONLY_FIELDS, AnyConfig, GRPOConfig, SFTConfig,
                                       field_help, missing_tracker_packages, parse_device)
from r1omni_fast.config.values import MAX_YAML_VALUES, SHOWN_CHARS, ConfigError, safe_yaml, shown

__all__ = ["ASPECTS", "GENERATION_KWARGS", "GRPO_LOSS_TYPES", "MAX_YAML_VALUES", "MODEL_PARTS", "SCHEDULERS",
           "SHOWN_CHARS", "STAGES", "TRACKER_PACKAGES", "TRL_ONLY_FIELDS", "AnyConfig", "ConfigError", "GRPOConfig",
           "SFTConfig", "field_help", "load_config", "missing_tracker_packages", "parse_device", "safe_yaml", "shown"]
