"""Loading a run configuration: a YAML file (``stage:`` picks the dataclass) with ``--field
value`` overrides."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence, Union

import yaml

from r1omni_fast.config.schema import STAGES, TRL_ONLY_FIELDS, AnyConfig, GRPOConfig
from r1omni_fast.config.values import (ConfigError, _unknown_message, safe_yaml,
                                       shown)


def load_config(path: Optional[Union[str, os.PathLike]], overrides: Sequence[str] = ()) -> AnyConfig:
    """Read a YAML config (``stage:`` picks the dataclass), apply ``--field value`` overrides.

    Overrides: ``--field value``, ``--field=value``, a bare ``--flag`` for a bool field (True),
    ``--no-flag`` (False); dashes and underscores are interchangeable. ``--stage`` may pick the
    stage when there is no file. Raises :class:`ConfigError` with a one-line message.
    """
    values: Dict[str, Any] = {}
    source = "flags"
    if path is not None:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = safe_yaml(fh, source)
        except OSError as exc:
            raise ConfigError(f"cannot read config {source}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError(f"{source}{where}: {problem}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: expected a mapping of field: value, got a {type(loaded).__name__}")
        values.update(loaded)

    flag_values = _parse_overrides(overrides)
    stage = flag_values.pop("stage", None) or values.pop("stage", None)
    values.pop("stage", None)
    if stage is None:
        raise ConfigError(f"{source}: no stage given: add 'stage: sft' (or grpo, eval) or pass --stage")
    cls = STAGES.get(str(stage))
    if cls is None:
        raise ConfigError(f"{source}: unknown stage {shown(stage)}: use one of {', '.join(STAGES)}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in flag_values:
        trl_only = cls is GRPOConfig and (key in TRL_ONLY_FIELDS or key.startswith("vllm_"))
        if key not in names and not trl_only:  # TRL-only fields: GRPOConfig.from_dict explains them
            raise ConfigError(_unknown_message(key, names, cls.stage, "flags", flag=True))
    return cls.from_dict({**values, **flag_values}, source=source)  # flags win


def _parse_overrides(args: Sequence[str]) -> Dict[str, Any]:
    """``["--max-steps", "10", "--bf16", "--lr=1"]`` -> {"max_steps": "10", "bf16": True, ...}.

    Values stay strings; the dataclass converts them by annotation. A flag with no value (next
    token is another flag, or the end) means True; ``--no-x`` means False.
    """
    out: Dict[str, Any] = {}
    i = 0
    args = list(args)
    while i < len(args):
        token = args[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"unexpected argument {shown(token)}: overrides look like --field value")
        body = token[2:]
        if "=" in body:
            name, value = body.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not _looks_like_flag(args[i + 1]):
            name, value = body, args[i + 1]
            i += 2
        else:
            name, value = body, True
            if name.startswith("no-") or name.startswith("no_"):
                name, value = name[3:], False
            i += 1
        out[name.replace("-", "_")] = value
    return out


def _looks_like_flag(token: str) -> bool:
    if not token.startswith("--"):
        return False
    try:  # "--1" is not a flag name but could not be a value either; treat names only as flags
        float(token)
        return False
    except ValueError:
        return True
