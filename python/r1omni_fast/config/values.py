"""Values of a run configuration: YAML read safely (an alias bomb refused), flag and YAML
strings converted to each field's annotation, finite numbers, and short messages."""

from __future__ import annotations

import difflib
import functools
import math
import reprlib
import typing
from typing import Any, Dict, List, Union

import yaml



_TRUE = {"true", "yes", "on", "1"}


_FALSE = {"false", "no", "off", "0"}


_NONE = {"none", "null", "~", ""}


class ConfigError(ValueError):
    """A bad configuration value or key; the message is one line naming the field."""


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_message(key: str, names, stage: str, source: str, flag: bool = False) -> str:
    shown_key = f"--{key.replace('_', '-')}" if flag else shown(key)
    close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.6)
    hint = (f"; did you mean {', '.join(close)}?" if close
            else f"; see `r1omni-fast train --help` for the {stage} fields")
    return f"{source}: unknown field {shown_key} for stage {stage}{hint}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if origin in (dict, Dict):
        return "mapping"
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


#: Longest value shown in an error message (a repr is cut beyond it).
SHOWN_CHARS = 200


#: Most values (scalars, list items, mapping entries) a YAML document may expand to once its
#: aliases are followed: a few hundred bytes of nested aliases ("billion laughs") would expand to
#: gigabytes in a message or a saved config.
MAX_YAML_VALUES = 100_000


_REPR = reprlib.Repr()


_REPR.maxstring = _REPR.maxother = SHOWN_CHARS


_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 12


_REPR.maxlevel = 3


def shown(value: Any) -> str:
    """``repr(value)`` for a message: nested containers and long strings abridged with ``...``,
    never longer than about :data:`SHOWN_CHARS` characters, and never expanding a shared
    (aliased) structure in full."""
    return _clip(_REPR.repr(value))


def _clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut in the middle to at most ``limit`` characters (its end often holds the fix)."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def safe_yaml(stream: Any, source: str = "config") -> Any:
    """``yaml.safe_load(stream)``, refusing a document whose aliases expand to more than
    :data:`MAX_YAML_VALUES` values (ConfigError naming ``source``) before anything is built.
    Raises yaml.YAMLError for invalid YAML."""
    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_VALUES:
            raise ConfigError(f"{source}: its YAML aliases (*name) expand to more than {MAX_YAML_VALUES} values: "
                              "write the values out instead of nesting aliases")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: Any) -> int:
    """Values of ``node`` with every alias followed, counted over the shared node graph (each
    node once: linear in the document, however far its aliases expand). Counting stops past the
    limit; a recursive alias counts as beyond it."""
    sizes: Dict[int, int] = {}
    pending: set = set()

    def size(n: Any) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in pending:  # an anchor inside itself expands without end
            return MAX_YAML_VALUES + 1
        pending.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_VALUES:
                break
        pending.discard(key)
        sizes[key] = total
        return total

    return size(node)


def _require_finite(name: str, value: Any) -> None:
    """ConfigError naming ``name`` when ``value`` is, or holds (list items, mapping values), a
    NaN or infinite float: NaN passes every ``<`` / ``>`` bound check and inf every positivity
    check, and either poisons a run silently."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{name} must be a finite number, got {item!r}: give a real value (or leave it "
                              "unset for the default)")


def _convert(name: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (from YAML or a flag string) to the annotation ``tp`` or raise ConfigError."""
    try:
        return _coerce(value, tp)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be {_type_name(tp)}, got {shown(value)} ({exc})") from None


def _coerce(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _coerce(value, rest[0])
        # Union[str, List[str]] (label_set): a list, or a string with commas, is the list form.
        list_arm = next((a for a in rest if typing.get_origin(a) in (list, List)), None)
        if list_arm is not None and (isinstance(value, (list, tuple)) or
                                     (isinstance(value, str) and ("," in value or value.strip().startswith("[")))):
            return _coerce(value, list_arm)
        for arm in rest:
            try:
                return _coerce(value, arm)
            except (TypeError, ValueError):
                continue
        raise ValueError("no matching type")
    if origin in (dict, Dict):
        if isinstance(value, str):
            value = safe_yaml(value, "the value")
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got a {type(value).__name__}")
        return dict(value)
    if origin in (list, List):
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = safe_yaml(text, "the value")
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got a {type(value).__name__}")
        return [_coerce(v, item) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise TypeError("expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise TypeError(f"expected an integer, got a {type(value).__name__}")
    if tp is float:
        if isinstance(value, bool):
            raise TypeError("expected a number, got a boolean")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise TypeError(f"expected a number, got a {type(value).__name__}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"expected a string, got a {type(value).__name__}")
    raise TypeError(f"unsupported field type {tp!r}")
