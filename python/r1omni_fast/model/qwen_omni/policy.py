"""Qwen2.5-Omni thinker policy backend (``transformers.Qwen2_5OmniThinkerForConditionalGeneration``;
text output only, the talker and token2wav are never built).

Checkpoints: a full Qwen2.5-Omni folder (``model_type`` "qwen2_5_omni": only the ``thinker.``
weights are read) or a thinker-only folder ("qwen2_5_omni_thinker", what :meth:`save_pretrained`
writes and transformers' ``Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained`` loads),
with the processor files (``Qwen2_5OmniProcessor``: tokenizer, chat template, video processor,
Whisper feature extractor).

Media per record (:func:`r1omni_fast.media.qwen.load_qwen_clip`, the one media step): frames sampled by time as
``qwen-omni-utils`` does (``fps`` 2, ``min_frames``/``max_frames``, an even count, indices
``linspace(0, N-1, n).round()``), resized by ``smart_resize`` (multiples of 28, per-frame and total
pixel budgets, bicubic with antialias) — natively, ``r1omni_fast.media.qwen_video``, bit-exact with
the utilities' ``fetch_video`` — and 16 kHz audio: from a separate file named in the record,
from the video's own track (the time-interleaved ``use_audio_in_video`` layout), or none. Audio
is loaded when the record's prompt holds ``<audio>``; a record that asks for audio its file does
not have is a ``MediaError`` naming the file (raised or counted as a skip by ``on_bad_record``).

Prompts: the checkpoint's chat template with Qwen's system turn (:data:`QWEN_OMNI_SYSTEM`); the
video / audio items come first in the user turn, then the instruction text without HumanOmni's
``<video>``/``<audio>`` placeholders. Positions: the thinker's 3-D multimodal rotary positions
(TMRoPE, ``get_rope_index``), given to ``r1omni_fast.model.generation`` by :meth:`rope_positions`.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterable

import torch
from torch import nn

from r1omni_fast.model.generation import PrefixSharedGeneration
from r1omni_fast.model.types import CheckpointError, DeepstackFeatures, OmniOutput, lm_output

from r1omni_fast.media.qwen import QwenMediaSettings
from r1omni_fast.model.qwen_omni.collator import QwenClipCollator
from r1omni_fast.model.qwen_omni.processor import QwenOmniProcessor

MODEL_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")
#: ``tunable_parts`` names (HumanOmni's) -> the thinker modules they unfreeze.
TUNABLE_PARTS: dict[str, tuple[str, ...]] = {
    "mm_language_model": ("model.language_model", "lm_head"),
    "mm_vision_tower": ("model.visual.patch_embed", "model.visual.blocks"),
    "mm_mlp_adapter": ("model.visual.merger",),
    "mm_audio_tower": ("model.audio_tower.conv1", "model.audio_tower.conv2", "model.audio_tower.layers",
                       "model.audio_tower.ln_post", "model.audio_tower.audio_bos_eos_token"),
    "audio_projector": ("model.audio_tower.proj",),
}
_NO_PART = {"bert_gate": "HumanOmni's BERT gate", "bert_model": "HumanOmni's BERT encoder"}


class _TextLM:
    """The view of the thinker that ``r1omni_fast.model.generation`` uses as ``model.llm``:
    ``model`` (the text decoder), ``lm_head``, ``config`` (the text config). Not a module, so
    parameters are not registered twice."""

    def __init__(self, thinker: nn.Module) -> None:
        self._thinker = thinker

    @property
    def model(self) -> nn.Module:
        return self._thinker.model.language_model

    @property
    def lm_head(self) -> nn.Module:
        return self._thinker.lm_head

    @property
    def config(self) -> Any:
        return self._thinker.config.text_config

    def get_input_embeddings(self) -> nn.Module:
        return self._thinker.model.language_model.embed_tokens

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether the thinker recomputes activations (the generation module then avoids a cache)."""
        return bool(self._thinker.is_activation_checkpointing)


class QwenOmniThinkerPolicy(PrefixSharedGeneration, nn.Module):
    """Qwen2.5-Omni thinker as a policy (see the module docstring). ``thinker`` is the
    ``Qwen2_5OmniThinkerForConditionalGeneration``; ``processor`` a :class:`QwenOmniProcessor`;
    ``media`` the :class:`QwenMediaSettings` of its clips (``max_frames`` follows
    :meth:`set_num_frames`)."""

    #: LoRA (``r1omni_fast.model.lora``): the thinker's LLM is its text decoder and head; the
    #: vision blocks' MLPs and the audio tower's attention share the projections' names and stay out.
    LORA_LANGUAGE_MODEL = ("thinker.model.language_model", "thinker.lm_head")
    #: transformers' weight-conversion scoping (peft reads it): this wrapper adds no prefix of its own
    base_model_prefix = ""
    #: the model family (messages); the ``model_type`` of a full checkpoint and of a thinker-only one;
    #: transformers' classes: the full config, the thinker's config and the thinker
    FAMILY = "Qwen2.5-Omni"
    FULL_MODEL_TYPE, THINKER_MODEL_TYPE = MODEL_TYPES
    HF_CLASSES = ("Qwen2_5OmniConfig", "Qwen2_5OmniThinkerConfig", "Qwen2_5OmniThinkerForConditionalGeneration")
    PROCESSOR: type = QwenOmniProcessor
    #: ``tunable_parts`` -> thinker modules; media settings beyond `QwenMediaSettings`' defaults
    TUNABLE: dict[str, tuple[str, ...]] = TUNABLE_PARTS
    MEDIA_DEFAULTS: dict[str, Any] = {}
    #: dtype of the TMRoPE positions (Qwen3-Omni's are fractional: float32)
    POSITION_DTYPE = torch.long

    def __init__(self, thinker: nn.Module, processor: QwenOmniProcessor | None = None,
                 media: QwenMediaSettings | None = None) -> None:
        super().__init__()
        self.thinker = thinker
        self.processor = processor
        self.media = media or QwenMediaSettings(**self.MEDIA_DEFAULTS)
        self.preprocessor_configs: dict = {}
        self.prefill_rows = 0
        self.load_report: dict | None = None
        self.name_or_path: str | None = None

    @property
    def config(self) -> Any:
        return self.thinker.config

    @property
    def llm(self) -> _TextLM:
        return _TextLM(self.thinker)

    def get_output_embeddings(self) -> nn.Module:
        return self.thinker.lm_head

    @property
    def device(self) -> torch.device:
        return self.thinker.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.thinker.lm_head.weight.dtype

    # ----------------------------------------------------------- settings
    @property
    def num_frames(self) -> int:
        """The most frames per clip (``media.max_frames``; the count follows the clip's length at
        ``media.fps``)."""
        return self.media.max_frames

    def set_num_frames(self, num_frames: int) -> None:
        """At most ``num_frames`` frames per clip (rounded down to even; at least 2)."""
        if num_frames < 2:
            raise ValueError(f"num_frames={num_frames}: {self.FAMILY} needs at least 2 frames per clip")
        self.media.max_frames = int(num_frames)

    @contextlib.contextmanager
    def frames_context(self, num_frames: int):
        before = self.media.max_frames
        self.set_num_frames(num_frames)
        try:
            yield
        finally:
            self.media.max_frames = before

    def media_collator(self, *, num_frames: int, image_size: int | None = None, aspect: str = "pad",
                       n_mels: int | None = None, audio: bool | str = True, loader=None, on_error: str = "skip",
                       loader_kwargs: dict | None = None) -> QwenClipCollator:
        """:class:`QwenClipCollator` with this model's media settings and at most ``num_frames``
        frames per clip; ``audio``: "record" (the records whose prompt holds ``<audio>``), True
        (every sample), False, or a callable ``sample -> bool``. ``image_size``, ``aspect`` and ``loader_kwargs`` (HumanOmni's square
        frames) do not apply: sizes follow ``smart_resize``; ``n_mels`` must be None or the
        feature extractor's."""
        if n_mels is not None and self.processor is not None and n_mels != self.processor.hf.feature_extractor.feature_size:
            raise ValueError(f"n_mels={n_mels}: this checkpoint's feature extractor has "
                             f"{self.processor.hf.feature_extractor.feature_size} mel bins (set n_mels: null)")
        settings = QwenMediaSettings(**{**self.media.__dict__, "max_frames": int(num_frames)})
        return QwenClipCollator(settings=settings, audio=audio, loader=loader, on_error=on_error)

    # ----------------------------------------------------- trainable parts
    def set_trainable_parts(self, parts: str | Iterable[str]) -> None:
        """Unfreeze exactly the named parts (HumanOmni's names mapped onto the thinker:
        ``mm_language_model`` the text decoder and LM head, ``mm_vision_tower`` the vision blocks,
        ``mm_mlp_adapter`` the vision merger, ``mm_audio_tower`` the audio encoder, ``audio_projector``
        its output projection); ValueError for ``bert_gate`` / ``bert_model`` (no BERT here) or an
        unknown name."""
        names = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
        absent = [p for p in names if p in _NO_PART]
        if absent:
            raise ValueError(f"{absent}: {self.FAMILY} has no {' / '.join(_NO_PART[p] for p in absent)}; "
                             f"choose from {sorted(self.TUNABLE)}")
        unknown = sorted(set(names) - set(self.TUNABLE))
        if unknown:
            raise ValueError(f"unknown trainable part(s) {unknown}: choose from {sorted(self.TUNABLE)}")
        self.requires_grad_(False)
        for name in names:
            for module in self.TUNABLE[name]:
                owner, _, attr = module.rpartition(".")
                target = getattr(self.thinker.get_submodule(owner), attr)  # a module or a parameter
                target.requires_grad_(True)
        self._parts = names

    def trainable_parts(self) -> list[str]:
        return list(getattr(self, "_parts", []))

    def train(self, mode: bool = True) -> QwenOmniThinkerPolicy:
        """Like nn.Module.train; frozen towers stay in eval mode."""
        super().train(mode)
        for module in (self.thinker.model.visual, self.thinker.model.audio_tower):
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def reference_view(self, source: QwenOmniThinkerPolicy | None = None, *, share_frozen: bool = True):
        """GRPO's reference: a policy computing like this one with the trainable tensors frozen at
        their current values (or ``source``'s); the frozen tensors are this policy's own, shared,
        not copied (copied too when not ``share_frozen``)."""
        import copy

        frozen = {id(p): p for p in self.thinker.parameters() if not p.requires_grad} if share_frozen else {}
        ref = copy.copy(self)
        ref.__dict__ = {k: (copy.copy(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}
        thinker = copy.deepcopy(self.thinker, memo=dict(frozen))
        if source is not None:
            theirs = dict(source.thinker.named_parameters())
            with torch.no_grad():
                for name, p in thinker.named_parameters():
                    if id(p) not in frozen:
                        p.copy_(theirs[name])
        ref._modules["thinker"] = thinker.requires_grad_(False).eval()
        return ref

    def gradient_checkpointing_enable(self) -> None:
        """Recompute the decoder layers in the backward pass (non-reentrant)."""
        self.thinker.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def gradient_checkpointing_disable(self) -> None:
        self.thinker.activation_checkpointing_disable()

    # --------------------------------------------------------------- inputs
    def embed_prompts(self, batch: dict) -> torch.Tensor:
        """(B, L, H) embeddings of ``batch["input_ids"]`` with the video and audio features in
        place of their video / audio tokens (:meth:`prompt_inputs`)."""
        return self.prompt_inputs(batch)[0]

    def prompt_inputs(self, batch: dict) -> tuple[torch.Tensor, DeepstackFeatures | None]:
        """``(embeds, deepstack)``: (B, L, H) embeddings of ``batch["input_ids"]`` with the video
        and audio features in place of their video / audio tokens, and the vision tower's
        DeepStack features at the video tokens when it makes them (Qwen3-Omni; None for
        Qwen2.5-Omni). Raises ValueError when the counts of tokens and features differ."""
        inner = self.thinker.model
        deepstack = None
        ids = batch["input_ids"].to(self.device)
        embeds = inner.get_input_embeddings()(ids)
        video_mask = ids == self.config.video_token_id
        audio_mask = ids == self.config.audio_token_id
        if "pixel_values_videos" in batch:
            with _grad_if(inner.visual):
                out = inner.get_video_features(batch["pixel_values_videos"].to(self.device),
                                               batch["video_grid_thw"].to(self.device), return_dict=True)
            feats = torch.cat(list(out.pooler_output), 0).to(embeds.dtype)
            if feats.shape[0] != int(video_mask.sum()):
                raise ValueError(f"{int(video_mask.sum())} <|VIDEO|> tokens but {feats.shape[0]} video features")
            embeds = embeds.masked_scatter(video_mask[..., None], feats)
            layers = getattr(out, "deepstack_features", None)
            if layers:
                deepstack = DeepstackFeatures(video_mask, [torch.cat(list(f), 0) for f in layers])
        elif video_mask.any():
            raise ValueError("input_ids hold <|VIDEO|> tokens but the batch has no pixel_values_videos")
        if "input_features" in batch:
            with _grad_if(inner.audio_tower):
                feats = inner.get_audio_features(batch["input_features"].to(self.device),
                                                 batch["feature_attention_mask"].to(self.device),
                                                 return_dict=True).last_hidden_state.to(embeds.dtype)
            if feats.shape[0] != int(audio_mask.sum()):
                raise ValueError(f"{int(audio_mask.sum())} <|AUDIO|> tokens but {feats.shape[0]} audio features")
            embeds = embeds.masked_scatter(audio_mask[..., None], feats)
        elif audio_mask.any():
            raise ValueError("input_ids hold <|AUDIO|> tokens but the batch has no input_features")
        return embeds, deepstack

    def rope_positions(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """TMRoPE positions of the batch's rows: ``(positions (3, B, L) int64, offsets (B,))``.

        Row by row over its unpadded tokens, ``get_rope_index`` with the row's video grid, audio
        length and ``use_audio_in_video`` flag; padding columns hold 1. ``offsets[b]`` = the row's
        largest position + 1 - its token count: the first completion token of row b sits at
        position ``tokens_b + offsets[b]`` (all three axes), as transformers decodes."""
        ids = batch["input_ids"]
        mask = batch["attention_mask"].bool() if "attention_mask" in batch else torch.ones_like(ids, dtype=torch.bool)
        b, width = ids.shape
        video_rows = batch.get("video_rows", torch.zeros(b, dtype=torch.bool)).tolist()
        audio_rows = batch.get("audio_rows", torch.zeros(b, dtype=torch.bool)).tolist()
        interleaved = batch.get("audio_in_video", torch.zeros(b, dtype=torch.bool)).tolist()
        lengths = (batch["feature_attention_mask"].sum(-1).cpu() if "feature_attention_mask" in batch else None)
        grids = batch["video_grid_thw"].cpu() if "video_grid_thw" in batch else None
        seconds = batch["video_second_per_grid"].cpu() if "video_second_per_grid" in batch else None
        positions = torch.ones(3, b, width, dtype=self.POSITION_DTYPE)
        offsets = torch.zeros(b, dtype=self.POSITION_DTYPE)
        vi = ai = 0
        inner = self.thinker.model
        for row in range(b):
            valid = mask[row].cpu()
            row_ids = ids[row].cpu()[valid][None]
            grid = grids[vi:vi + 1] if video_rows[row] else None
            sec = seconds[vi:vi + 1] if video_rows[row] else None
            audio_len = lengths[ai:ai + 1] if audio_rows[row] else None
            pos, delta = inner.get_rope_index(row_ids, None, grid, torch.ones_like(row_ids),
                                              bool(interleaved[row]), audio_len, sec)
            positions[:, row, valid] = pos[:, 0].to(self.POSITION_DTYPE)
            offsets[row] = delta.reshape(-1)[0].to(self.POSITION_DTYPE)
            vi += int(video_rows[row])
            ai += int(audio_rows[row])
        return positions.to(ids.device), offsets.to(ids.device)

    # -------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                labels: torch.Tensor | None = None, logits_to_keep: int | torch.Tensor = 0,
                return_hidden_states: bool = False, inputs_embeds: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, deepstack: DeepstackFeatures | None = None,
                **media: Any) -> OmniOutput:
        """Training / scoring forward with `OmniModel.forward`'s contract (packed logits over the
        supervised positions with ``labels``; ``logits_to_keep`` otherwise). ``inputs_embeds``
        needs ``position_ids`` (3, B, L) (and ``deepstack``, the rows' `DeepstackFeatures`, for a
        decoder that takes them); with ``input_ids`` the media (``pixel_values_videos``,
        ``input_features``, ... as the processor returns them) are embedded and the positions
        computed by :meth:`rope_positions`."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("forward needs exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            batch = dict(media, input_ids=input_ids)
            if attention_mask is not None:
                batch["attention_mask"] = attention_mask
            embeds, deepstack = self.prompt_inputs(batch)
            if position_ids is None:
                position_ids = self.rope_positions(batch)[0]
        else:
            embeds = inputs_embeds
            if position_ids is None:
                raise ValueError("forward with inputs_embeds needs position_ids (3, B, L)")
        extra = {} if deepstack is None else deepstack.decoder_kwargs()
        hidden = self.thinker.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                                   position_ids=position_ids.to(embeds.device),
                                                   use_cache=False, **extra).last_hidden_state
        return lm_output(hidden, self.thinker.lm_head, labels=labels, logits_to_keep=logits_to_keep,
                         return_hidden_states=return_hidden_states)

    # ---------------------------------------------------------- checkpoints
    def checkpoint_state_dict(self, state_dict: dict | None = None) -> dict:
        """Tensors under the thinker's own names (``model.language_model...``, ``lm_head.weight``;
        the tied LM head left out when tied)."""
        state = self.state_dict() if state_dict is None else state_dict
        out = {k[len("thinker."):]: v for k, v in state.items() if k.startswith("thinker.")}
        if getattr(self.config.get_text_config(), "tie_word_embeddings", False) or self.config.tie_word_embeddings:
            out.pop("lm_head.weight", None)
        return out

    def save_pretrained(self, path: str | os.PathLike, *, state_dict: dict | None = None) -> None:
        """A thinker-only folder (``model_type`` "qwen2_5_omni_thinker": config.json,
        model.safetensors, processor files) that
        ``transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained`` loads and
        :meth:`from_pretrained` reloads. ``state_dict`` (this module's names) replaces the module's."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        full = None if state_dict is None else {k[len("thinker."):]: v for k, v in state_dict.items()
                                                if k.startswith("thinker.")}
        self.thinker.save_pretrained(path, state_dict=full, safe_serialization=True)
        with open(os.path.join(path, "r1omni_media.json"), "w", encoding="utf-8") as fh:
            json.dump(self.media.__dict__, fh, indent=2, sort_keys=True)
        if self.processor is not None:
            self.processor.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, strict: bool = True) -> QwenOmniThinkerPolicy:
        """Load a :attr:`FAMILY` folder (full, model_type :attr:`FULL_MODEL_TYPE`, its ``thinker.``
        weights only) or a thinker-only one (:attr:`THINKER_MODEL_TYPE`) with its processor. Raises
        `CheckpointError` naming the file: another architecture, missing weights or keys
        (``strict``), missing or unusable processor files, a chat template without the media tokens."""
        import transformers

        from r1omni_fast.model.policy import model_type_of

        full_config, thinker_config, thinker_class = (getattr(transformers, name) for name in cls.HF_CLASSES)
        path = os.fspath(path)
        model_type = model_type_of(path)
        config_file = os.path.join(path, "config.json")
        if model_type == cls.FULL_MODEL_TYPE:
            config = full_config.from_pretrained(path).thinker_config
        elif model_type == cls.THINKER_MODEL_TYPE:
            config = thinker_config.from_pretrained(path)
        else:
            raise CheckpointError(f"{config_file}: model_type {model_type!r} is not {cls.FAMILY} "
                                  f"({cls.FULL_MODEL_TYPE} or {cls.THINKER_MODEL_TYPE})")
        if not any(os.path.isfile(os.path.join(path, f)) for f in ("model.safetensors", "model.safetensors.index.json")):
            raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json (the thinker's weights)")
        processor = cls.PROCESSOR.from_pretrained(path)
        for what, ids, token in (("video", ("video_token_id", "video_token_index"), processor.video_token_id),
                                 ("audio", ("audio_token_id", "audio_token_index"), processor.audio_token_id)):
            configured = next((getattr(config, n) for n in ids if getattr(config, n, None) is not None), None)
            if configured is not None and configured != token:  # else the model finds no media token in a prompt
                raise CheckpointError(f"{config_file}: {ids[0]} is {configured}, but the tokenizer's {what} token "
                                      f"is id {token}: the config and the tokenizer files come from different "
                                      "checkpoints; use both from the same one")
        thinker, info = thinker_class.from_pretrained(
            path, config=config, dtype=torch.float32 if dtype is None else dtype, output_loading_info=True)
        missing = sorted(info.get("missing_keys", []))
        mismatched = info.get("mismatched_keys", [])
        if mismatched or (strict and missing):
            raise CheckpointError(f"{path}: {len(missing)} missing and {len(mismatched)} mismatched thinker weight(s)"
                                  + "".join(f"\n  missing: {k}" for k in missing[:20])
                                  + "".join(f"\n  mismatched: {k}" for k in list(mismatched)[:20]))
        size = getattr(processor.hf.video_processor, "size", None) or {}
        settings_file = os.path.join(path, "r1omni_media.json")
        try:
            if os.path.isfile(settings_file):  # written by save_pretrained
                with open(settings_file, encoding="utf-8") as fh:
                    media = QwenMediaSettings(**json.load(fh))
            elif size.get("shortest_edge") and size.get("longest_edge"):  # the video processor's pixel budget
                media = QwenMediaSettings(**{**cls.MEDIA_DEFAULTS, "min_pixels": int(size["shortest_edge"]),
                                             "max_pixels": int(size["longest_edge"])})
            else:
                media = QwenMediaSettings(**cls.MEDIA_DEFAULTS)
        except (TypeError, ValueError) as exc:
            files = [settings_file] + [os.path.join(path, f) for f in
                                       ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json")]
            where = next((f for f in files if os.path.isfile(f)), files[-1])
            raise CheckpointError(f"{where}: unusable frame settings ({exc}); fix the video processor's "
                                  "size.shortest_edge <= size.longest_edge (pixels per frame)") from None
        model = cls(thinker, processor, media)
        model.load_report = {"missing": missing, "unexpected": sorted(info.get("unexpected_keys", []))}
        model.requires_grad_(False)
        if device is not None:
            model.to(device)
        model.eval()
        return model


def _grad_if(module: nn.Module):
    return contextlib.nullcontext() if any(p.requires_grad for p in module.parameters()) else torch.no_grad()


__all__ = ["MODEL_TYPES", "TUNABLE_PARTS", "QwenOmniThinkerPolicy"]
