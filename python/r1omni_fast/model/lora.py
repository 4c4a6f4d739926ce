"""LoRA adapters through `peft`, for any policy ``torch.nn.Module`` (TRL's ``use_peft`` fields).

What trains (``use_peft: true``):

- the LLM's weights are frozen; LoRA adapters (rank ``lora_r``, scale ``lora_alpha / lora_r``,
  ``lora_dropout`` on their input) are added to ``lora_target_modules``: by default the LLM's
  attention and MLP projections (:data:`DEFAULT_TARGET_MODULES`), ``all-linear`` for every linear
  layer of the LLM but its output head, or a list of names. A name matches the LLM's modules
  whose dotted name ends with it (peft's rule, e.g. ``q_proj`` or ``self_attn.q_proj``) or, given
  as a full dotted path from the model root, that one module anywhere (a tower's layer, say);
- exactly the other parts that full training with the same ``tunable_parts`` trains (the
  projectors by default: HumanOmni's, the Qwen thinker's vision merger and audio projection, not
  the towers holding them) train in full as peft ``modules_to_save``: a trainable copy beside the
  frozen original, saved with the adapter; ``lora_modules_to_save`` adds more (e.g. ``lm_head``). ``mm_language_model`` in
  ``tunable_parts`` has no effect under ``use_peft`` (the adapters are the LLM's trainable part).

The base model is therefore untouched: with the adapters disabled (:func:`adapter_disabled`, peft's
``disable_adapter``) the policy computes exactly as the model it was loaded from, which GRPO uses
as its reference model (:class:`AdapterDisabled`): no second copy of any weight.

Files: :func:`save_adapter` writes peft's ``adapter_model.safetensors`` and
``adapter_config.json`` (``base_model_name_or_path``: the absolute path of the base folder) plus
the tokenizer files; :func:`merge` writes a full checkpoint folder (``r1omni-fast merge``) that
the backend's ``from_pretrained`` loads; :func:`load_model` loads either kind.

Backend hooks: every policy class sets ``LORA_LANGUAGE_MODEL`` (part of the policy interface), the
dotted paths of the modules forming its LLM (``("llm",)`` for HumanOmni; the Qwen omni thinker,
held as ``thinker``, says ``("thinker.model.language_model", "thinker.lm_head")``, leaving its towers out, whose MLPs also have
``gate_proj`` / ``up_proj`` / ``down_proj``). The default targets are found by name inside those
modules; the output head is the ``get_output_embeddings()`` of the policy or of those modules.
The parts trained in full are read from ``requires_grad`` after the backend's own
``set_trainable_parts``: the outermost modules outside the LLM all of whose parameters train.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: The LLM's attention and MLP projections (Qwen2 and the Qwen omni thinkers name them alike).
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Adapted layer kinds (what peft's LoRA supports here).
_ADAPTABLE = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)
_HANDLE = "_r1omni_peft_model"  # in the policy's __dict__ (not a submodule: no reference cycle in modules())


class LoraError(ValueError):
    """A LoRA setting that cannot be applied to this model, or an adapter folder that cannot be
    loaded; the message names the field or the file and what to do."""


# ------------------------------------------------------------------------------ which modules


def language_model_names(model: torch.nn.Module) -> tuple:
    """Dotted paths of the modules of ``model`` forming its LLM (its ``LORA_LANGUAGE_MODEL``)."""
    names = tuple(model.LORA_LANGUAGE_MODEL)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise LoraError(f"{type(model).__name__} has no module {missing} (LORA_LANGUAGE_MODEL names its LLM)")
    return names


def _in_llm(name: str, llm: Sequence[str]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in llm)


def _llm_root(name: str, llm: Sequence[str]) -> str:
    return next(root for root in llm if name == root or name.startswith(root + "."))


def _output_heads(model: torch.nn.Module) -> set:
    heads = set()
    for m in [model] + [model.get_submodule(n) for n in language_model_names(model)]:
        get = getattr(m, "get_output_embeddings", None)
        if callable(get):
            try:
                head = get()
            except (NotImplementedError, AttributeError):
                head = None
            if head is not None:
                heads.add(id(head))
    return heads


def _llm_modules(model: torch.nn.Module) -> List[tuple]:
    """(dotted name, module) of every module inside the LLM."""
    llm = language_model_names(model)
    return [(n, m) for n, m in model.named_modules() if _in_llm(n, llm)]


def target_module_names(model: torch.nn.Module, targets: Optional[Sequence[str]]) -> List[str]:
    """Dotted names of the modules given adapters for ``lora_target_modules`` = ``targets`` (see the
    module docstring). Raises :class:`LoraError` naming the field when a name matches nothing."""
    heads = _output_heads(model)
    llm = [(n, m) for n, m in _llm_modules(model) if isinstance(m, _ADAPTABLE)]
    if targets is None or list(targets) == ["all-linear"]:
        if targets is None:
            found = [n for n, m in llm if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in DEFAULT_TARGET_MODULES]
            what = f"the LLM's attention and MLP projections ({' '.join(DEFAULT_TARGET_MODULES)})"
        else:
            found = [n for n, m in llm if isinstance(m, torch.nn.Linear) and id(m) not in heads]
            what = "all-linear (the LLM's linear layers)"
        if not found:
            raise LoraError(f"lora_target_modules: {type(model).__name__} has no module for {what}: "
                            "name the modules to adapt")
        return found
    everything = dict(model.named_modules())
    found: List[str] = []
    for target in targets:
        hits = [target] if target in everything and isinstance(everything[target], _ADAPTABLE) else \
            [n for n, _ in llm if n == target or n.endswith("." + target)]
        if not hits:
            fused = sorted({n for n, _ in model.named_parameters() if _in_llm(n, language_model_names(model))
                            and (n == target or n.endswith("." + target))})
            if fused:  # e.g. transformers 5's MoE experts: one (experts, out, in) tensor, no layer per expert
                raise LoraError(f"lora_target_modules: {target!r} is a parameter of the LLM ({fused[0]}, a fused "
                                "expert weight), not a layer: LoRA adapters go on linear layers; the experts stay "
                                "frozen under use_peft")
            endings = sorted({n.rsplit(".", 1)[-1] for n, m in llm if isinstance(m, torch.nn.Linear)})
            raise LoraError(f"lora_target_modules: {target!r} matches no linear, embedding or convolution layer "
                            f"of the LLM (and is no full module path): the LLM's linear layers end in "
                            f"{', '.join(endings)}")
        found += [h for h in hits if h not in found]
    return found


def modules_to_save(model: torch.nn.Module, extra: Optional[Sequence[str]] = None) -> List[str]:
    """The modules trained in full beside the adapters, then each of ``extra``
    (``lora_modules_to_save``: a full dotted path or a name ending, matched anywhere).

    The trained modules are read from ``requires_grad`` (what ``tunable_parts`` unfroze): outside
    the LLM, the outermost modules all of whose parameters train. A module holding both trainable
    and frozen parameters (a tower whose merger or output projection trains, the tower itself
    frozen) is never copied whole: its trainable members are, so that LoRA trains exactly what full
    training trains. The members of a ``Sequential`` or ``ModuleList`` are listed one by one (so
    that indexing it still works). Raises :class:`LoraError` for a module with a trainable
    parameter of its own beside frozen members (no module can be copied for it alone)."""
    llm = language_model_names(model)
    out: List[str] = []

    def visit(prefix: str, module: torch.nn.Module) -> None:
        for c, child in module.named_children():
            n = f"{prefix}{c}"
            flags = [p.requires_grad for p in child.parameters()]
            if _in_llm(n, llm) or not any(flags):
                continue
            holds_llm = any(root.startswith(n + ".") for root in llm)
            if holds_llm or not all(flags) or isinstance(child, (torch.nn.Sequential, torch.nn.ModuleList)):
                own = [k for k, p in child.named_parameters(recurse=False) if p.requires_grad]
                if own:
                    raise LoraError(f"{type(model).__name__}.{n} has trainable parameters of its own ({', '.join(own)}) "
                                    "beside frozen ones: under use_peft a module trains in full or not at all; "
                                    "change tunable_parts")
                visit(n + ".", child)  # holds the LLM or frozen parts, or keep a container indexable: its members
            else:
                out.append(n)

    visit("", model)
    everything = [n for n, _ in model.named_modules() if n]
    for name in extra or ():
        hits = [n for n in everything if n == name or n.endswith("." + name)]
        if not hits:
            raise LoraError(f"lora_modules_to_save: {name!r} names no module of {type(model).__name__} "
                            f"(top-level modules: {', '.join(n for n, _ in model.named_children())})")
        out += [h for h in hits if h not in out]
    return out


def _full_match(model: torch.nn.Module, names: Sequence[str]) -> str:
    r"""A regular expression that peft matches in full against exactly the modules ``names`` of
    ``model``: the LLM's names by their endings (``^(?:llm\.(?:.*\.)?(?:q_proj|v_proj))$``) when that
    selects exactly them, else every name spelled out."""
    llm = language_model_names(model)
    inside = [n for n in names if _in_llm(n, llm) and n not in llm]
    alternatives = [re.escape(n) for n in names if n not in inside]
    if inside:
        roots = sorted({_llm_root(n, llm) for n in inside})
        ends = sorted({n.rsplit(".", 1)[-1] for n in inside})
        alternatives.insert(0, f"(?:{'|'.join(map(re.escape, roots))})\\.(?:.*\\.)?(?:{'|'.join(map(re.escape, ends))})")
    pattern = "^(?:" + "|".join(alternatives) + ")$"
    if {n for n, _ in model.named_modules() if re.fullmatch(pattern, n)} == set(names):
        return pattern
    return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"


def lora_config(model: torch.nn.Module, cfg: Any):
    """peft ``LoraConfig`` for ``model`` from the run's fields (``lora_r``, ``lora_alpha``,
    ``lora_dropout``, ``lora_target_modules``, ``lora_modules_to_save``). The targets and the
    modules to save are resolved here to exact module names (a regular expression peft matches in
    full), so the adapter folder says exactly which modules it holds."""
    from peft import LoraConfig

    targets = target_module_names(model, cfg.lora_target_modules)
    saved = modules_to_save(model, getattr(cfg, "lora_modules_to_save", None))
    overlap = [n for n in saved if any(t == n or t.startswith(n + ".") for t in targets)]
    if overlap:
        raise LoraError(f"lora_modules_to_save / tunable_parts: {overlap} also hold LoRA targets: a module is "
                        "either adapted or trained in full")
    llm = language_model_names(model)
    fused_experts = any(".experts." in n for n, _ in model.named_parameters() if _in_llm(n, llm))
    # peft rewrites a regex target of a MoE model transformers 5 converts (Qwen3-Omni's) into layer-name
    # endings, which would reach the towers' layers of the same names: such models get the exact names
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(targets) if fused_experts else _full_match(model, targets),
                      modules_to_save=saved or None, bias="none")


# ------------------------------------------------------------------------------ applying


def apply_lora(model: torch.nn.Module, cfg: Any, *, adapter: Optional[str | os.PathLike] = None,
               base_path: Optional[str | os.PathLike] = None) -> torch.nn.Module:
    """Add LoRA adapters to ``model`` in place (peft ``get_peft_model``) and return ``model`` itself.

    Call it after the backend selected its trainable parts (``set_trainable_parts``): the
    trainable children outside the LLM become ``modules_to_save``; then only the adapters and
    those copies have ``requires_grad``. ``adapter``: an adapter folder (a checkpoint) whose
    weights replace the fresh ones; its ``adapter_config.json`` must describe the same adapters as
    ``cfg`` (else :class:`LoraError` naming the differing field). ``base_path`` is recorded as
    ``base_model_name_or_path``. The peft wrapper is kept on the model (:func:`peft_model`)."""
    from peft import get_peft_model

    if peft_model(model) is not None:
        raise LoraError(f"{type(model).__name__} already has LoRA adapters")
    config = lora_config(model, cfg)
    model.requires_grad_(False)  # the LLM's weights and the originals of the modules to save stay frozen
    wrapper = get_peft_model(model, config)
    # set after wrapping (peft warns when it differs from the model's own name_or_path, which has none)
    wrapper.peft_config["default"].base_model_name_or_path = (
        None if base_path is None else os.path.abspath(os.fspath(base_path)))
    model.__dict__[_HANDLE] = wrapper
    if adapter is not None:
        _check_same_adapter(adapter, config)
        load_adapter_weights(model, adapter)
    return model


def _check_same_adapter(folder: str | os.PathLike, config: Any) -> None:
    saved = read_adapter_config(folder)
    fields = {"r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
              "target_modules": "lora_target_modules", "modules_to_save": "lora_modules_to_save / tunable_parts"}
    for key, field in fields.items():
        ours = getattr(config, key)
        ours = sorted(ours) if isinstance(ours, (set, list)) else ours
        theirs = saved.get(key)
        theirs = sorted(theirs) if isinstance(theirs, list) else theirs
        if ours != theirs:
            raise LoraError(f"{field}: the run asks for {ours!r} but the adapter in {folder} was trained with "
                            f"{theirs!r}: resume with the settings it was trained with")


def peft_model(model: Any) -> Any:
    """The peft ``PeftModel`` wrapping ``model`` (None when it has no adapters)."""
    return getattr(model, "__dict__", {}).get(_HANDLE)


def is_lora(model: Any) -> bool:
    return peft_model(model) is not None


@contextlib.contextmanager
def adapter_disabled(model: torch.nn.Module) -> Iterator[None]:
    """Within the block ``model`` computes as its base model: adapters off and the original of
    each module to save in use (peft's ``disable_adapter``). A no-op without adapters."""
    wrapper = peft_model(model)
    if wrapper is None:
        yield
        return
    with wrapper.disable_adapter():
        yield


class AdapterDisabled(torch.nn.Module):
    """GRPO's reference model under LoRA: ``policy`` with its adapters disabled. It holds no weight
    of its own (its parameters are the policy's). ``completion_logits`` and ``forward`` run the
    policy inside :func:`adapter_disabled`."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with adapter_disabled(self.policy):
            return self.policy(*args, **kwargs)

    def completion_logits(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with adapter_disabled(self.policy):
            return self.policy.completion_logits(*args, **kwargs)


# ------------------------------------------------------------------------------ files


def is_adapter_folder(path: Any) -> bool:
    """Whether ``path`` is a folder holding a peft adapter (``adapter_config.json``)."""
    return path is not None and os.path.isfile(os.path.join(os.fspath(path), ADAPTER_CONFIG))


def read_adapter_config(folder: str | os.PathLike) -> dict:
    path = os.path.join(os.fspath(folder), ADAPTER_CONFIG)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise LoraError(f"{path}: cannot read the adapter config ({exc})") from None


def _trainable_state(model: torch.nn.Module, dist: Any) -> Optional[dict]:
    """Full tensors of the trainable parameters (and the buffers of the modules to save) on rank
    0, None elsewhere; under FSDP gathered from the shards (every rank must call it)."""
    if dist is not None and dist.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True, ignore_frozen_params=True))
    else:
        state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if dist is not None and not dist.is_main:
        return None
    state.update({n: b for n, b in model.named_buffers() if ".modules_to_save." in n})
    return state


def save_adapter(model: torch.nn.Module, folder: str | os.PathLike, dist: Any = None) -> None:
    """Write the adapter of ``model`` into ``folder``: ``adapter_model.safetensors`` (LoRA weights
    and the modules to save, peft's names), ``adapter_config.json`` and the tokenizer files of
    ``model.processor``. Under FSDP every rank calls it (the trainable tensors are gathered);
    rank 0 writes."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    wrapper = peft_model(model)
    if wrapper is None:
        raise LoraError(f"{type(model).__name__} has no LoRA adapters to save")
    state = _trainable_state(model, dist)
    if state is None:
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefixed = {"base_model.model." + k: v for k, v in state.items()}
    # The vocabulary is never resized here, and embeddings that train are adapters or modules to
    # save (kept anyway): peft's "auto" would instead look for config.json in base_model_name_or_path
    # (or on the Hub), which an adapter folder as base (GRPO on an SFT adapter) lacks, and warn.
    tensors = get_peft_model_state_dict(wrapper, state_dict=prefixed, save_embedding_layers=False)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(folder / ADAPTER_WEIGHTS),
              metadata={"format": "pt"})
    wrapper.peft_config["default"].save_pretrained(str(folder))
    processor = getattr(model, "processor", None)
    if processor is not None:
        processor.save_pretrained(str(folder))


def load_adapter_weights(model: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Load ``folder/adapter_model.safetensors`` into the adapters of ``model`` (every tensor must
    match; else :class:`LoraError` naming the file)."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    path = os.path.join(os.fspath(folder), ADAPTER_WEIGHTS)
    if not os.path.isfile(path):
        raise LoraError(f"{folder}: no {ADAPTER_WEIGHTS} beside {ADAPTER_CONFIG}: the adapter folder is incomplete")
    weights = load_file(path)
    wrapper = peft_model(model)
    expected = set(_adapter_keys(wrapper))
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise LoraError(f"{path}: {len(missing)} missing and {len(unexpected)} unexpected adapter tensor(s) "
                        f"(first: {(missing + unexpected)[0]}): it does not belong to this model and these settings")
    shapes = dict(get_peft_model_state_dict(wrapper, save_embedding_layers=False))
    wrong = [k for k in sorted(weights) if tuple(weights[k].shape) != tuple(shapes[k].shape)]
    if wrong:  # another base model (other sizes): one line, not torch's list of size mismatches
        raise LoraError(f"{path}: {len(wrong)} adapter tensor(s) do not fit the base model's shapes (first: {wrong[0]} "
                        f"is {tuple(weights[wrong[0]].shape)}, the model's {tuple(shapes[wrong[0]].shape)}): the "
                        "adapter was trained on another base model; load it with the base it was trained on")
    set_peft_model_state_dict(wrapper, weights)


def _adapter_keys(wrapper: Any) -> List[str]:
    """The tensor names of the adapter's file (as :func:`save_adapter` writes them)."""
    from peft.utils import get_peft_model_state_dict

    return list(get_peft_model_state_dict(wrapper, save_embedding_layers=False).keys())


def base_model_path(folder: str | os.PathLike, base: Optional[str | os.PathLike] = None) -> str:
    """The base model folder of an adapter: ``base`` when given, else the config's
    ``base_model_name_or_path`` (relative paths are taken from the adapter folder)."""
    if base is not None:
        return os.fspath(base)
    recorded = read_adapter_config(folder).get("base_model_name_or_path")
    if not recorded:
        raise LoraError(f"{folder}/{ADAPTER_CONFIG} names no base_model_name_or_path: point it at the base model "
                        "folder (merge also takes --base DIR)")
    path = recorded if os.path.isabs(recorded) else os.path.join(os.fspath(folder), recorded)
    if not os.path.isdir(path):
        raise LoraError(f"{folder}: its base model {path} (base_model_name_or_path in {ADAPTER_CONFIG}) does not "
                        "exist: point base_model_name_or_path at the base model folder (merge also takes --base DIR)")
    return path


def adapter_chain(folder: str | os.PathLike) -> List[Path]:
    """``folder`` and, while the folder is an adapter folder, its base model folder, that folder's
    base, and so on (resolved paths, ``folder`` first, the full model last). Training must write
    into none of them. Raises :class:`LoraError` when a base is missing (as
    :func:`base_model_path`) or when the adapters name each other in a cycle (naming the cycle)."""
    chain = [Path(folder).resolve()]
    while is_adapter_folder(chain[-1]):
        base = Path(base_model_path(chain[-1])).resolve()
        if base in chain:
            cycle = " -> ".join(str(p) for p in chain[chain.index(base):] + [base])
            raise LoraError(f"{folder}: the adapter's base model folders form a cycle ({cycle}; base_model_name_or_path "
                            f"in {ADAPTER_CONFIG}): point base_model_name_or_path at the full model the adapter was "
                            "trained on (merge also takes --base DIR)")
        chain.append(base)
    return chain


def load_with_adapter(folder: str | os.PathLike, *, base: Optional[str | os.PathLike] = None,
                      loader: Any = None, **kwargs: Any) -> torch.nn.Module:
    """The base model of the adapter in ``folder`` (``loader(path, **kwargs)``, default
    :func:`load_model`, so the base may itself be an adapter folder) with the adapter loaded
    (not merged). The adapter's settings come from its ``adapter_config.json``; a cut or empty
    adapter file is a :class:`r1omni_fast.model.files.DamagedFileError` naming it."""
    from peft import LoraConfig, get_peft_model

    from r1omni_fast.model.files import check_model_files

    check_model_files(folder)
    saved = read_adapter_config(folder)
    if base is None:
        adapter_chain(folder)  # a cycle of adapters is one LoraError, not a RecursionError
    base = base_model_path(folder, base)
    model = (loader or load_model)(base, **kwargs)
    model.requires_grad_(False)
    config = LoraConfig(r=saved["r"], lora_alpha=saved["lora_alpha"], lora_dropout=saved["lora_dropout"],
                        target_modules=saved.get("target_modules"), modules_to_save=saved.get("modules_to_save"),
                        bias="none")
    model.__dict__[_HANDLE] = wrapper = get_peft_model(model, config)
    wrapper.peft_config["default"].base_model_name_or_path = os.path.abspath(base)
    load_adapter_weights(model, folder)
    return model


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its adapters merged into the base weights and the trained copies of the
    modules to save in place of the originals (peft ``merge_and_unload``); no peft layer is left."""
    wrapper = peft_model(model)
    if wrapper is None:
        return model
    out = wrapper.merge_and_unload()
    out.__dict__.pop(_HANDLE, None)
    out.__dict__.pop("peft_config", None)  # peft's copy on the injected model
    return out


def load_model(path: str | os.PathLike, **kwargs: Any) -> torch.nn.Module:
    """The policy at ``path`` (its backend chosen by the checkpoint's ``model_type``,
    ``r1omni_fast.model.policy.load_policy``), or for an adapter folder its base model with the
    adapter merged in."""
    if is_adapter_folder(path):
        return merged(load_with_adapter(path, **kwargs))
    from r1omni_fast.model.policy import load_policy

    return load_policy(path, **kwargs)


def merge(folder: str | os.PathLike, out: str | os.PathLike, *, base: Optional[str | os.PathLike] = None) -> Path:
    """``r1omni-fast merge``: write the model of the adapter in ``folder`` with the adapter merged
    (a full checkpoint folder: config, model.safetensors, tokenizers, towers) into ``out``; fp32
    merge on the CPU. ``out`` is built in a temporary sibling and renamed into place
    (``atomic.atomic_folder``): an interrupt or a full disk leaves the old ``out`` or none, never a
    mixture. Raises :class:`LoraError` when ``folder`` is no adapter folder, or when ``out`` is
    the adapter folder or its base model folder (naming both)."""
    from r1omni_fast.atomic import atomic_folder

    if not is_adapter_folder(folder):
        raise LoraError(f"{folder} holds no {ADAPTER_CONFIG}: merge needs the output or a checkpoint of a "
                        "use_peft run")
    target = Path(out).resolve()
    base_folder = base_model_path(folder, base)
    for what, path in (("the adapter folder", folder), ("its base model folder", base_folder)):
        if target == Path(path).resolve():
            raise LoraError(f"--out {out} is {what} {path}: merging there would overwrite what the merge reads; "
                            "choose another folder")
    model = merged(load_with_adapter(folder, base=base, device="cpu"))
    if not hasattr(model, "save_pretrained"):
        raise LoraError(f"{type(model).__name__} cannot save_pretrained")
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
    return Path(out)


__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "AdapterDisabled", "adapter_chain", "DEFAULT_TARGET_MODULES", "LoraError",
    "adapter_disabled", "apply_lora", "base_model_path", "is_adapter_folder", "is_lora", "language_model_names",
    "load_adapter_weights", "load_model", "load_with_adapter", "lora_config", "merge", "merged",
    "modules_to_save", "peft_model", "read_adapter_config", "save_adapter", "target_module_names",
]
