"""The policy backend interface: what the trainers, evaluation and prediction use of a model, and
the registry that picks the backend from a checkpoint's ``config.json`` ``model_type``.

Backends (one folder each, one :data:`SPECS` entry each): ``r1omni_fast.model.humanomni``
(HumanOmni / R1-Omni, ``OmniModel``), ``r1omni_fast.model.qwen_omni`` (Qwen2.5-Omni thinker,
``QwenOmniThinkerPolicy``) and ``r1omni_fast.model.qwen3_omni`` (Qwen3-Omni MoE thinker,
``Qwen3OmniThinkerPolicy``). :func:`load_policy` reads ``model_type`` and calls the registered
backend's ``from_pretrained``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Protocol, Sequence, runtime_checkable

import torch

from r1omni_fast.model.types import CheckpointError


@runtime_checkable
class PolicyProcessor(Protocol):
    """Text and media -> model batch, and completions back to text.

    ``__call__(instructions, targets=None, *, pixel_values, audio_features, modalities,
    padding_side, chat_template, bert_texts)`` returns a dict of tensors with at least
    ``input_ids`` / ``attention_mask`` (B, L) and, with targets, ``labels`` (-100 outside the
    targets). ``pixel_values`` / ``audio_features`` are what the backend's collator put in
    ``Batch.frames`` / ``Batch.mel``. ``media_token_ids``: the ids of media placeholder tokens in
    ``input_ids`` (a run of them counts once for ``max_prompt_length``).
    """

    tokenizer: Any
    media_token_ids: tuple

    def __call__(self, instructions: Sequence[str], targets: Sequence[str] | None = None, **kwargs: Any) -> dict: ...

    @property
    def eos_token_ids(self) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save_pretrained(self, path: str) -> None: ...


@runtime_checkable
class Policy(Protocol):
    """What a policy backend provides (an ``nn.Module``).

    - ``processor`` (:class:`PolicyProcessor`), ``num_frames`` (the clip frame setting),
      ``preprocessor_configs`` (dict, may be empty), ``prefill_rows`` (int counter);
    - ``forward(**batch)`` -> object with ``loss`` (mean token cross-entropy over labels) and
      ``logits``; ``generate(batch, **kw)`` -> ``GenerationOutput`` (prefix-shared G samples);
      ``completion_logits(prompts, completion_ids, mask, group, *, share_prefix)`` -> (N, T, V);
    - ``set_trainable_parts(parts)``, ``set_num_frames(n)``, ``frames_context(n)`` (a context
      during which evaluation uses n frames), ``gradient_checkpointing_enable()``;
    - ``media_collator(*, num_frames, image_size, aspect, n_mels, audio, loader, on_error,
      loader_kwargs)`` -> a collator ``(samples, index) -> Batch`` with a ``media_kwargs`` dict,
      a ``loader`` attribute, ``preview_arrays(batch) -> {id: r1omni_fast.data.ClipPreview}``
      (what eval's report renders) and ``to_device(batch, device, dtype) -> batch`` (the batch's
      media on the device, where the backend's batch holds tensors); ``audio``: "record" (as each record's prompt asks), True (every
      sample), False, or a callable ``sample -> bool`` (a backend that always loads a clip's sound
      may treat it as True: a prompt without ``<audio>`` leaves the sound unused);
    - ``save_pretrained(path, *, state_dict=None)``, ``checkpoint_state_dict(state_dict=None)``,
      ``from_pretrained(path, *, dtype=None, device=None)`` (classmethod);
    - for ``r1omni_fast.model.generation``: ``llm`` (``.model`` decoder taking ``cache``,
      ``.lm_head``, ``.config``, ``.get_input_embeddings()``), ``embed_prompts(batch)`` -> (B, L, H)
      prompt embeddings with the media features in place, and ``rope_positions(batch)`` -> None
      (1-D token positions) or ``(positions (3, B, L), offsets (B,))`` (multimodal rotary
      positions, int64 or, for Qwen3-Omni's fractional temporal positions, float32; the first completion
      token of row b sits at ``tokens_b + offsets[b]``), and ``prompt_inputs(batch)`` ->
      ``(embed_prompts(batch), DeepstackFeatures | None)`` (``r1omni_fast.model.types``: features the
      decoder adds after its first layers at the visual positions, as Qwen3-Omni's does; the prompt
      passes of generation give them to the decoder; ``forward(inputs_embeds=..., deepstack=...)``);
    - ``reference_view(source=None, *, share_frozen=True)`` -> GRPO's reference: a model computing
      like this one with its trainable tensors frozen at their current values (or ``source``'s),
      the frozen ones shared unless not ``share_frozen``;
    - ``routing()`` -> a context manager yielding a `r1omni_fast.model.routing.RouterRecord`: the MoE
      routers of the forward passes run inside it (none for a dense decoder), for the trainers'
      ``router_aux_loss_coef`` and expert-load metric;
    - class attribute ``LORA_LANGUAGE_MODEL`` (dotted paths of the modules forming the LLM, where
      LoRA adapters go) and ``processor.chat_templates`` (the ``chat_template`` settings it supports).
    """

    processor: Any
    preprocessor_configs: dict
    prefill_rows: int

    @property
    def num_frames(self) -> int: ...

    def generate(self, batch: dict, **kwargs: Any) -> Any: ...

    def completion_logits(self, prompts: dict, completion_ids: torch.Tensor, mask: torch.Tensor, group: int, *,
                          share_prefix: bool = True) -> torch.Tensor: ...

    def set_trainable_parts(self, parts: str | Iterable[str]) -> None: ...

    def set_num_frames(self, num_frames: int) -> None: ...

    def frames_context(self, num_frames: int) -> ContextManager[None]: ...

    def media_collator(self, **kwargs: Any) -> Callable: ...

    def save_pretrained(self, path: str | os.PathLike, *, state_dict: dict | None = None) -> None: ...

    def checkpoint_state_dict(self, state_dict: dict | None = None) -> dict: ...

    def embed_prompts(self, batch: dict) -> torch.Tensor: ...

    def prompt_inputs(self, batch: dict) -> tuple[torch.Tensor, Any]: ...

    def routing(self) -> Any: ...

    def rope_positions(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor] | None: ...

    def reference_view(self, source: Any = None, *, share_frozen: bool = True) -> Any: ...


@dataclass(frozen=True)
class BackendSpec:
    """One policy backend, as the registry knows it (after torchtitan's ``TrainSpec``): one folder
    under ``r1omni_fast/model/`` and one entry of :data:`SPECS`.

    - ``name``: the ``r1omni-fast model tiny --arch`` name; ``title``: for messages;
    - ``model_types``: the ``config.json`` ``model_type`` values it loads;
    - ``policy``: ``"module:Class"`` of the :class:`Policy` (imported on first use). Its
      ``processor`` attribute is the backend's :class:`PolicyProcessor`, its ``media_collator()``
      the backend's collator, its ``LORA_LANGUAGE_MODEL`` where LoRA adapters go;
    - ``tiny``: ``"module:function"`` building the tiny policy, ``function(seed, **tiny_options)``;
      ``tiny_options``: the keyword options it takes (e.g. ``pretrain_towers``);
    - ``tunable_parts``: the ``tunable_parts`` names the policy's ``set_trainable_parts`` accepts
      (a run's config is checked against them before the model loads).
    """

    name: str
    title: str
    model_types: tuple[str, ...]
    policy: str
    tiny: str
    tunable_parts: tuple[str, ...]
    tiny_options: tuple[str, ...] = ()

    def policy_class(self) -> type:
        return _target(self.policy)

    def tiny_builder(self) -> Callable[..., Any]:
        return _target(self.tiny)


def _target(reference: str) -> Any:
    import importlib

    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


#: The backends, by name. Adding one: its folder under r1omni_fast/model/ and one entry here
#: (tests/test_backend_conformance.py is the checklist).
SPECS: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec(name="humanomni", title="HumanOmni / R1-Omni", model_types=("HumanOmni_qwen2", "qwen2"),
                policy="r1omni_fast.model.humanomni.model:OmniModel",
                tiny="r1omni_fast.model.humanomni.tiny:build_tiny_model", tiny_options=("pretrain_towers",),
                tunable_parts=("mm_language_model", "mm_vision_tower", "mm_mlp_adapter", "mm_audio_tower",
                               "audio_projector", "bert_gate", "bert_model")),
    BackendSpec(name="qwen2_5_omni", title="Qwen2.5-Omni (thinker)",
                model_types=("qwen2_5_omni", "qwen2_5_omni_thinker"),
                policy="r1omni_fast.model.qwen_omni.policy:QwenOmniThinkerPolicy",
                tiny="r1omni_fast.model.qwen_omni.tiny:build_tiny_qwen_model",
                tunable_parts=("mm_language_model", "mm_vision_tower", "mm_mlp_adapter", "mm_audio_tower",
                               "audio_projector")),
    BackendSpec(name="qwen3_omni_moe", title="Qwen3-Omni (MoE thinker)",
                model_types=("qwen3_omni_moe", "qwen3_omni_moe_thinker"),
                policy="r1omni_fast.model.qwen3_omni.policy:Qwen3OmniThinkerPolicy",
                tiny="r1omni_fast.model.qwen3_omni.tiny:build_tiny_qwen3_model",
                tunable_parts=("mm_language_model", "mm_vision_tower", "mm_mlp_adapter", "mm_audio_tower",
                               "audio_projector")),
)}


def register(spec: BackendSpec) -> None:
    """Add ``spec`` to :data:`SPECS` (a backend living outside this package). Raises ValueError
    when its name or one of its ``model_types`` is taken."""
    taken = [t for t in spec.model_types if any(t in other.model_types for other in SPECS.values())]
    if spec.name in SPECS or taken:
        raise ValueError(f"backend {spec.name!r}: name or model_type {taken} already registered")
    SPECS[spec.name] = spec


def spec_for_model_type(model_type: str) -> BackendSpec | None:
    return next((s for s in SPECS.values() if model_type in s.model_types), None)


def _supported() -> str:
    return ", ".join(f"{t} ({s.title})" for s in SPECS.values() for t in s.model_types)


def model_type_of(path: str | os.PathLike) -> str:
    """``model_type`` of ``path/config.json``. Raises `CheckpointError` naming the file when it is
    missing, unreadable or has no ``model_type``."""
    path = os.fspath(path)
    config = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise CheckpointError(f"model folder {path} does not exist: check the path (a checkpoint folder, e.g. "
                              "from `r1omni-fast model tiny OUT` or a run's output_dir)")
    if not os.path.isdir(path):
        raise CheckpointError(f"{path} is a file, not a model folder: pass the folder holding config.json")
    if not os.path.isfile(config):
        raise CheckpointError(f"{path}: no config.json (pass a checkpoint folder, e.g. from `r1omni-fast model tiny OUT`)")
    try:
        with open(config, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config}: cannot read it as JSON ({exc})") from None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if not isinstance(model_type, str) or not model_type:
        found = ""
        if isinstance(data, dict) and data:  # say what the file is (a sub-model's config, e.g. a talker's)
            keys = sorted(data)
            found = f" (it holds {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}: not a whole model's config)"
        raise CheckpointError(f"{config}: no model_type field{found}; supported: {_supported()}")
    return model_type


def spec_for(path: str | os.PathLike) -> BackendSpec:
    """The :class:`BackendSpec` of the checkpoint at ``path``. Raises `CheckpointError` naming
    ``config.json``, its ``model_type`` and the supported types for an unknown one."""
    model_type = model_type_of(path)
    spec = spec_for_model_type(model_type)
    if spec is None:
        raise CheckpointError(f"{os.path.join(os.fspath(path), 'config.json')}: model_type {model_type!r} has no "
                              f"policy backend; supported: {_supported()}")
    return spec


def backend_for(path: str | os.PathLike) -> type:
    """The policy class of the checkpoint at ``path`` (:func:`spec_for`)."""
    return spec_for(path).policy_class()


#: Tokenizer files transformers can build a complete tokenizer from (any one set suffices):
#: tokenizer.json (fast), or the slow tokenizers' vocabularies (BPE, SentencePiece, WordPiece).
#: ``tokenizer_config.json`` alone is not one: transformers then builds an (almost) empty
#: tokenizer without complaint and every answer is garbage.
TOKENIZER_FILE_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",), ("vocab.txt",))


def check_tokenizer_files(path: str | os.PathLike) -> None:
    """Raise `CheckpointError` naming ``path`` and what is missing unless the folder holds one of
    :data:`TOKENIZER_FILE_SETS`."""
    path = os.fspath(path)
    if any(all(os.path.isfile(os.path.join(path, f)) for f in files) for files in TOKENIZER_FILE_SETS):
        return
    present = sorted(f for files in TOKENIZER_FILE_SETS for f in files if os.path.isfile(os.path.join(path, f)))
    config = os.path.isfile(os.path.join(path, "tokenizer_config.json"))
    held = ", ".join(present + (["tokenizer_config.json"] if config else [])) or "no tokenizer file"
    wanted = " or ".join(" + ".join(files) for files in TOKENIZER_FILE_SETS)
    raise CheckpointError(f"{path}: the tokenizer is incomplete (the folder holds {held}; it needs {wanted}): "
                          "copy tokenizer.json (and tokenizer_config.json) from the model the weights come from")


def load_policy(path: str | os.PathLike, **kwargs: Any) -> Any:
    """The policy at ``path`` by its backend's ``from_pretrained(path, **kwargs)`` (``dtype=``,
    ``device=``). Every command loads its model here (train, eval, predict, merge: an adapter's
    base too), so the checks come first: `CheckpointError` naming the folder when it does not
    exist, has no usable ``config.json``, or lacks the tokenizer files
    (:func:`check_tokenizer_files`); :class:`r1omni_fast.model.files.DamagedFileError` naming a
    cut, empty or unreadable JSON or safetensors file (:func:`r1omni_fast.model.files.check_model_files`)."""
    from r1omni_fast.model.files import check_model_files

    backend = backend_for(path)
    check_tokenizer_files(path)
    check_model_files(path)
    return backend.from_pretrained(path, **kwargs)


__all__ = ["SPECS", "BackendSpec", "Policy", "PolicyProcessor", "backend_for", "check_tokenizer_files", "load_policy",
           "model_type_of", "register", "spec_for", "spec_for_model_type"]
