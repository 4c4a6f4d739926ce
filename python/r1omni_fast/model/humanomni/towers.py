"""Frozen towers (SigLIP vision, Whisper audio encoder, BERT gate encoder) and the mapping
between HumanOmni's checkpoint names and this package's module names.

HumanOmni nests every tower inside the LLM's ``model``: ``model.vision_tower.vision_tower.
vision_model.*`` (a SiglipVisionModel saved by transformers 4.x), ``model.audio_tower.
audio_tower.*`` (a WhisperForAudioClassification), ``model.bert_model.*`` (a BertModel).
`OmniModel` holds the same modules side by side; `to_checkpoint_name` / `from_checkpoint_name`
translate, including the ``vision_model.`` level that transformers 5 no longer has.
"""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Iterable, Mapping

import torch
from transformers import (
    BertConfig,
    BertModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    WhisperConfig,
    WhisperForAudioClassification,
)

VISION_CKPT = "model.vision_tower.vision_tower.vision_model."
AUDIO_CKPT = "model.audio_tower.audio_tower."
BERT_CKPT = "model.bert_model."

#: Checkpoint keys that never influence outputs (Whisper's classification head, held by
#: HumanOmni's WhisperForAudioClassification); loaded when present, not required.
UNUSED_CHECKPOINT_KEYS = re.compile(r"^model\.audio_tower\.audio_tower\.(projector|classifier)\.")


@functools.lru_cache(maxsize=None)
def siglip_has_vision_model_level() -> bool:
    """True when the installed SiglipVisionModel names parameters ``vision_model.*`` (4.x)."""
    cfg = SiglipVisionConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                             image_size=16, patch_size=16)
    with torch.device("meta"):
        names = list(SiglipVisionModel(cfg).state_dict())
    return names[0].startswith("vision_model.")


def _prefix_pairs() -> list[tuple[str, str]]:
    """(module prefix, checkpoint prefix), longest checkpoint prefixes first."""
    vision_module = "vision_tower.vision_model." if siglip_has_vision_model_level() else "vision_tower."
    return [
        (vision_module, VISION_CKPT),
        ("audio_tower.", AUDIO_CKPT),
        ("bert_model.", BERT_CKPT),
        ("mm_projector.", "model.mm_projector."),
        ("audio_projector.", "model.audio_projector."),
        ("bert_gate.", "model.bert_gate."),
        ("llm.lm_head.", "lm_head."),
        ("llm.model.", "model."),
    ]


def to_checkpoint_name(module_name: str) -> str:
    """This package's parameter name -> HumanOmni checkpoint name."""
    for ours, theirs in _prefix_pairs():
        if module_name.startswith(ours):
            return theirs + module_name[len(ours):]
    raise KeyError(f"parameter {module_name!r} has no HumanOmni checkpoint name")


def from_checkpoint_name(ckpt_name: str) -> str | None:
    """HumanOmni checkpoint name -> this package's parameter name (None when unknown)."""
    for ours, theirs in _prefix_pairs():
        if ckpt_name.startswith(theirs):
            return ours + ckpt_name[len(theirs):]
    return None


# --------------------------------------------------------------------------- builders
def build_vision_tower(config: SiglipVisionConfig) -> SiglipVisionModel:
    return SiglipVisionModel(config)


def build_audio_tower(config: WhisperConfig) -> WhisperForAudioClassification:
    return WhisperForAudioClassification(config)


def build_bert(config: BertConfig) -> BertModel:
    return BertModel(config, add_pooling_layer=True)


# --------------------------------------------------------------- tower folders on disk
#: Sub-folder of a checkpoint that holds each part's config (and tokenizer / preprocessor).
PART_FOLDERS = {"vision_tower": "vision_tower", "audio_tower": "audio_tower", "bert": "bert"}


def read_tower_config(part: str, folder: str) -> SiglipVisionConfig | WhisperConfig | BertConfig:
    """The tower config in ``folder/config.json`` (a full SiglipConfig is reduced to its vision part)."""
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    data = {k: v for k, v in data.items() if k not in ("transformers_version", "architectures", "_name_or_path")}
    model_type = data.pop("model_type", None)
    if part == "vision_tower":
        if model_type == "siglip" or "vision_config" in data:
            data = dict(data.get("vision_config") or {})
            data.pop("model_type", None)
        return SiglipVisionConfig(**data)
    if part == "audio_tower":
        return WhisperConfig(**data)
    return BertConfig(**data)


def tower_weights_from_folder(part: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of a stand-alone tower folder, renamed to HumanOmni checkpoint names.

    Accepts the layouts the hub uses: SigLIP (``vision_model.*``, text tower skipped), Whisper
    (``model.encoder.*`` of WhisperForConditionalGeneration or ``encoder.*``), BERT (``bert.*``
    of BertForPreTraining or bare BertModel names; old ``gamma``/``beta`` LayerNorm names).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if part == "vision_tower":
            if name.startswith("vision_model."):
                name = name[len("vision_model."):]
            elif name.startswith(("text_model.", "logit_")):
                continue
            out[VISION_CKPT + name] = tensor
        elif part == "audio_tower":
            if name.startswith("model."):
                name = name[len("model."):]
            if name.startswith(("decoder.", "proj_out")):
                continue
            out[AUDIO_CKPT + name] = tensor
        else:
            if name.startswith("cls."):
                continue
            if name.startswith("bert."):
                name = name[len("bert."):]
            name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
            name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
            out[BERT_CKPT + name] = tensor
    return out


def checkpoint_prefix(part: str) -> str:
    return {"vision_tower": "model.vision_tower.", "audio_tower": "model.audio_tower.", "bert": "model.bert_model."}[part]


def has_part(keys: Iterable[str], part: str) -> bool:
    prefix = checkpoint_prefix(part)
    return any(k.startswith(prefix) for k in keys)
