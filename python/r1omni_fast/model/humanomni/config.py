"""`OmniConfig`: the HumanOmni checkpoint configuration (``model_type`` "HumanOmni_qwen2").

A HumanOmni ``config.json`` is a Qwen2 config with the multimodal fields added at the top
level (``mm_vision_tower``, ``mm_projector_type``, ...). `OmniConfig` keeps that flat layout
on disk and exposes the parts as typed objects: ``llm`` (a ``Qwen2Config``) plus the tower
configs (``vision``: ``SiglipVisionConfig``, ``audio``: ``WhisperConfig``, ``bert``:
``BertConfig``), which a HumanOmni checkpoint does not contain and which are therefore
resolved at load time from the checkpoint's sub-folders or from paths the user gives.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from transformers import BertConfig, Qwen2Config, SiglipVisionConfig, WhisperConfig

MODEL_TYPE = "HumanOmni_qwen2"
ARCHITECTURE = "HumanOmniQwen2ForCausalLM"

#: Multimodal fields of a HumanOmni config.json and their defaults (the 0.5B values).
MM_DEFAULTS: dict[str, Any] = {
    "mm_vision_tower": "google/siglip-base-patch16-224",
    "mm_audio_tower": "openai/whisper-large-v3",
    "mm_projector_type": "all_in_one_small",
    "mm_audio_projector_type": "mlp2x_gelu",
    "mm_hidden_size": 768,
    "audio_hidden_size": 1280,
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "num_frames": 8,
    "image_aspect_ratio": "pad",
    "mm_use_x_start_end": True,
    "use_mm_proj": True,
    "bert_gate_hidden_size": 3584,
    "mm_tunable_parts": "mm_mlp_adapter,audio_projector,bert_gate,mm_language_model",
}

# Keys of a transformers config dict that describe the file, not the model.
_BOOKKEEPING = {"transformers_version", "architectures", "model_type", "_name_or_path"}


class OmniConfig:
    """HumanOmni configuration: Qwen2 LLM fields + multimodal fields + tower configs.

    Attributes: ``llm`` (Qwen2Config), ``vision`` / ``audio`` / ``bert`` (tower configs or
    None until resolved), and every multimodal field of `MM_DEFAULTS` as an attribute.
    Unknown keys of a loaded config.json are kept in ``extra`` and written back unchanged.
    """

    def __init__(
        self,
        llm: Qwen2Config | dict,
        *,
        vision: SiglipVisionConfig | dict | None = None,
        audio: WhisperConfig | dict | None = None,
        bert: BertConfig | dict | None = None,
        extra: dict | None = None,
        **mm_fields: Any,
    ) -> None:
        unknown = set(mm_fields) - set(MM_DEFAULTS)
        if unknown:
            raise TypeError(f"OmniConfig: unknown multimodal field(s) {sorted(unknown)}")
        self.llm = llm if isinstance(llm, Qwen2Config) else Qwen2Config(**_strip(llm))
        for key, default in MM_DEFAULTS.items():
            setattr(self, key, copy.deepcopy(mm_fields.get(key, default)))
        self.vision = _as(SiglipVisionConfig, vision)
        self.audio = _as(WhisperConfig, audio)
        self.bert = _as(BertConfig, bert)
        self.extra = dict(extra or {})
        if self.mm_projector_type != "all_in_one_small":
            raise ValueError(
                f"mm_projector_type={self.mm_projector_type!r} is not supported: "
                "only HumanOmni's 'all_in_one_small' projector is implemented"
            )
        if self.mm_audio_projector_type != "mlp2x_gelu":
            raise ValueError(
                f"mm_audio_projector_type={self.mm_audio_projector_type!r} is not supported: "
                "only 'mlp2x_gelu' is implemented"
            )

    # ------------------------------------------------------------------ sizes
    @property
    def hidden_size(self) -> int:
        return int(self.llm.hidden_size)

    def num_video_tokens(self, num_frames: int | None = None) -> int:
        """Visual tokens per clip: ``k * ceil(P/2)**2`` with ``P = image_size // patch_size``.

        The projector's Conv3d keeps the frame count (stride 1 in time, last step dropped) and
        halves each spatial side, as the face branch's bilinear pooling does.
        """
        k = self.num_frames if num_frames is None else num_frames
        if self.vision is None:
            raise ValueError("the vision tower config is not resolved yet: cannot count video tokens")
        side = self.vision.image_size // self.vision.patch_size
        return int(k * ((side - 2) // 2 + 1) ** 2)

    def num_audio_tokens(self) -> int:
        """Audio tokens per clip: Whisper's ``max_source_positions`` (1500 for 30 s) / 3."""
        if self.audio is None:
            raise ValueError("the audio tower config is not resolved yet: cannot count audio tokens")
        return int(self.audio.max_source_positions) // 3

    @property
    def mel_frames(self) -> int:
        """Mel frames the audio tower expects: 2 x max_source_positions (3000 for 30 s)."""
        return 2 * int(self.audio.max_source_positions)

    # ----------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        """The flat HumanOmni config.json content (tower configs are not part of it)."""
        out = _strip(self.llm.to_dict())
        rope = out.get("rope_parameters") or {}
        if "rope_theta" in rope:  # transformers 4.x readers expect the top-level field
            out["rope_theta"] = rope["rope_theta"]
        out.update(self.extra)
        out.update({key: copy.deepcopy(getattr(self, key)) for key in MM_DEFAULTS})
        out["model_type"] = MODEL_TYPE
        out["architectures"] = [ARCHITECTURE]
        return out

    @classmethod
    def from_dict(cls, data: dict, **towers: Any) -> OmniConfig:
        data = dict(data)
        model_type = data.get("model_type")
        if model_type not in (MODEL_TYPE, "qwen2"):
            raise ValueError(
                f"config model_type is {model_type!r}: expected {MODEL_TYPE!r} (a HumanOmni / "
                "R1-Omni checkpoint)"
            )
        mm = {key: data.pop(key) for key in list(data) if key in MM_DEFAULTS}
        llm_keys = set(Qwen2Config().to_dict()) | {"rope_theta", "rope_scaling"}
        llm = {key: data.pop(key) for key in list(data) if key in llm_keys}
        extra = {key: value for key, value in data.items() if key not in _BOOKKEEPING}
        return cls(llm, extra=extra, **towers, **mm)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **towers: Any) -> OmniConfig:
        with open(path, encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, **towers)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")

    def copy(self) -> OmniConfig:
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        return (
            f"OmniConfig(hidden={self.hidden_size}, layers={self.llm.num_hidden_layers}, "
            f"vocab={self.llm.vocab_size}, vision={'yes' if self.vision else 'unresolved'}, "
            f"audio={'yes' if self.audio else 'unresolved'}, bert={'yes' if self.bert else 'unresolved'})"
        )

    # ------------------------------------------------------------------ presets
    @classmethod
    def humanomni_0_5b(cls) -> OmniConfig:
        """HumanOmni-0.5B / R1-Omni-0.5B: Qwen2.5-0.5B, SigLIP base-patch16-224,
        Whisper-large-v3 encoder, bert-base-uncased gate."""
        llm = Qwen2Config(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
            rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
            hidden_act="silu", bos_token_id=151643, eos_token_id=151645,
            use_sliding_window=False, max_window_layers=21, attention_dropout=0.0,
        )
        vision = SiglipVisionConfig(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            image_size=224, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
        )
        audio = WhisperConfig(
            d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
            decoder_layers=32, decoder_attention_heads=20, decoder_ffn_dim=5120,
            num_mel_bins=128, max_source_positions=1500, vocab_size=51866,
            classifier_proj_size=256, num_labels=2,
        )
        bert = BertConfig(
            vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
        )
        return cls(llm, vision=vision, audio=audio, bert=bert)


def _strip(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in _BOOKKEEPING}


def _as(kind: type, value: Any) -> Any:
    if value is None or isinstance(value, kind):
        return value
    return kind(**_strip(dict(value)))
