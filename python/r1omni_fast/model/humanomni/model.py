"""`OmniModel`: HumanOmni's architecture (Qwen2 LLM + SigLIP + Whisper encoder + BERT-gated
three-branch projector) with HumanOmni's checkpoint names, loading without hard-coded paths.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import Qwen2ForCausalLM

from r1omni_fast.model.humanomni import towers
from r1omni_fast.model.humanomni.config import OmniConfig
from r1omni_fast.model.humanomni.projector import AllInOneSmallProjector, mlp_2x_gelu
from r1omni_fast.model.generation import PrefixSharedGeneration
from r1omni_fast.model.types import AUDIO_TOKEN_INDEX, VIDEO_TOKEN_INDEX, CheckpointError, OmniOutput, lm_output

#: HumanOmni ``mm_tunable_parts`` names -> the modules they unfreeze.
TUNABLE_PARTS: dict[str, tuple[str, ...]] = {
    "mm_language_model": ("llm",),
    "mm_mlp_adapter": ("mm_projector",),
    "audio_projector": ("audio_projector",),
    "bert_gate": ("bert_gate",),
    "mm_vision_tower": ("vision_tower",),
    "mm_audio_tower": ("audio_tower",),
    "bert_model": ("bert_model",),
}

PART_TITLES = {"vision_tower": "vision tower (SigLIP)", "audio_tower": "audio tower (Whisper encoder)",
               "bert": "BERT gate encoder (bert-base-uncased)"}
PART_CONFIG_FIELD = {"vision_tower": "mm_vision_tower", "audio_tower": "mm_audio_tower", "bert": None}
PART_DEFAULT_NAME = {"vision_tower": "siglip-base-patch16-224", "audio_tower": "whisper-large-v3",
                     "bert": "bert-base-uncased"}


class OmniModel(PrefixSharedGeneration, nn.Module):
    """HumanOmni / R1-Omni policy. Modules: ``llm`` (Qwen2ForCausalLM), ``vision_tower``
    (SiglipVisionModel), ``audio_tower`` (WhisperForAudioClassification, encoder used),
    ``bert_model`` (BertModel), ``mm_projector`` (all_in_one_small), ``audio_projector``,
    ``bert_gate``. `checkpoint_state_dict` gives HumanOmni's names.
    """

    #: the modules forming the LLM, where LoRA adapters go (``r1omni_fast.model.lora``)
    LORA_LANGUAGE_MODEL: tuple[str, ...] = ("llm",)

    def __init__(self, config: OmniConfig) -> None:
        super().__init__()
        missing = [name for name, cfg in (("vision", config.vision), ("audio", config.audio), ("bert", config.bert)) if cfg is None]
        if missing:
            raise ValueError(f"OmniConfig has unresolved tower config(s) {missing}: use OmniModel.from_pretrained "
                             "or set config.vision / config.audio / config.bert")
        if config.mm_hidden_size != config.vision.hidden_size:
            raise ValueError(f"mm_hidden_size={config.mm_hidden_size} but the vision tower's hidden_size is {config.vision.hidden_size}")
        if config.audio_hidden_size != config.audio.d_model:
            raise ValueError(f"audio_hidden_size={config.audio_hidden_size} but the audio tower's d_model is {config.audio.d_model}")
        self.config = config
        hidden = config.hidden_size
        self.llm = Qwen2ForCausalLM(config.llm)
        self.vision_tower = towers.build_vision_tower(config.vision)
        self.audio_tower = towers.build_audio_tower(config.audio)
        self.bert_model = towers.build_bert(config.bert)
        self.mm_projector = AllInOneSmallProjector(config.mm_hidden_size, hidden)
        self.audio_projector = mlp_2x_gelu(config.audio_hidden_size, hidden)
        self.bert_gate = nn.Sequential(
            nn.Linear(config.bert.hidden_size, config.bert_gate_hidden_size), nn.GELU(),
            nn.Linear(config.bert_gate_hidden_size, 3),
        )
        #: The tokenizers (an `OmniProcessor`), set by from_pretrained when the checkpoint has them.
        self.processor = None
        #: Tower preprocessing settings written back by save_pretrained.
        self.preprocessor_configs: dict[str, dict] = {}
        #: {"missing": [...], "unexpected": [...]} checkpoint keys of the last load (from_pretrained).
        self.load_report: dict[str, list[str]] | None = None
        #: Prompt rows that went through an LLM prefill in `generate` (one per prompt when shared).
        self.prefill_rows = 0
        # A checkpoint may name parts this architecture does not have (e.g. a resampler): skip them.
        listed = config.mm_tunable_parts.split(",") if isinstance(config.mm_tunable_parts, str) else config.mm_tunable_parts
        self.set_trainable_parts([p.strip() for p in listed if p.strip() in TUNABLE_PARTS])

    # ------------------------------------------------------------ trainable parts
    def set_trainable_parts(self, parts: str | Iterable[str]) -> None:
        """Unfreeze exactly the named parts (HumanOmni ``mm_tunable_parts``, comma-separated or a
        list); everything else is frozen. Frozen towers then run under ``torch.no_grad``."""
        names = [p.strip() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
        unknown = sorted(set(names) - set(TUNABLE_PARTS))
        if unknown:
            raise ValueError(f"unknown trainable part(s) {unknown}: choose from {sorted(TUNABLE_PARTS)}")
        self.requires_grad_(False)
        for name in names:
            for module in TUNABLE_PARTS[name]:
                getattr(self, module).requires_grad_(True)
        self.config.mm_tunable_parts = ",".join(names)

    def train(self, mode: bool = True) -> OmniModel:
        """Like nn.Module.train, but frozen towers stay in eval mode (BERT's dropout would
        otherwise make the gate random in training)."""
        super().train(mode)
        for name in ("vision_tower", "audio_tower", "bert_model"):
            module = getattr(self, name)
            if not _trains(module):
                module.eval()
        return self

    def trainable_parts(self) -> list[str]:
        return [n for n, mods in TUNABLE_PARTS.items() if all(_trains(getattr(self, m)) for m in mods)]

    # ------------------------------------------------------ policy interface (model/policy.py)
    @property
    def num_frames(self) -> int:
        """Frames per clip (``config.num_frames``)."""
        return self.config.num_frames

    def set_num_frames(self, num_frames: int) -> None:
        """Frames per clip from now on: the config and the processor's ``<video>`` placeholder count."""
        self.config.num_frames = num_frames
        if self.processor is not None:
            self.processor.num_video_tokens = self.config.num_video_tokens(num_frames)

    @contextlib.contextmanager
    def frames_context(self, num_frames: int):
        """The processor's ``<video>`` placeholder count for ``num_frames`` frames for the duration
        (restored afterwards; the trainers evaluate their policy in place)."""
        processor = self.processor
        tokens = processor.num_video_tokens
        processor.num_video_tokens = self.config.num_video_tokens(num_frames)
        try:
            yield
        finally:
            processor.num_video_tokens = tokens

    def media_collator(self, *, num_frames: int, image_size: int | None = None, aspect: str = "pad",
                       n_mels: int | None = None, audio: bool | str = True, loader=None, on_error: str = "skip",
                       loader_kwargs: dict | None = None):
        """`r1omni_fast.data.ClipCollator` for this model: ``image_size`` / ``n_mels`` default to
        the towers' (``config.vision.image_size``, ``config.audio.num_mel_bins``); ``audio=False``
        loads no audio, True or "record" (the policy interface's "as each record asks") the audio
        of every clip (a record without ``<audio>`` leaves it unused)."""
        from r1omni_fast.data import ClipCollator

        return ClipCollator(num_frames=num_frames, image_size=image_size or self.config.vision.image_size,
                            aspect=aspect, n_mels=(n_mels or self.config.audio.num_mel_bins) if audio else None,
                            loader=loader, on_error=on_error, loader_kwargs=loader_kwargs)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute the LLM's decoder layers in the backward pass (non-reentrant)."""
        # transformers >= 5.x renamed the method; the old name warns there.
        if hasattr(self.llm, "activation_checkpointing_enable"):
            self.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def gradient_checkpointing_disable(self) -> None:
        disable = getattr(self.llm, "activation_checkpointing_disable", None) or self.llm.gradient_checkpointing_disable
        disable()

    @property
    def device(self) -> torch.device:
        return self.llm.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.lm_head.weight.dtype

    # ------------------------------------------------------------------ encoders
    def encode_video(self, pixel_values: torch.Tensor, bert_input_ids: torch.Tensor,
                     bert_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, k, 3, S, S) frames -> (N, num_video_tokens, H) gated visual tokens.

        ``video*p0 + body*p1 + face*p2`` with ``p = softmax(bert_gate(BERT(instruction)[CLS]))``.
        """
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be (clips, frames, 3, S, S), got {tuple(pixel_values.shape)}")
        n, k = pixel_values.shape[:2]
        tower_dtype = self.vision_tower.embeddings.patch_embedding.weight.dtype
        with _grad_if(self.vision_tower):
            out = self.vision_tower(pixel_values.flatten(0, 1).to(tower_dtype), output_hidden_states=True)
            feats = out.hidden_states[self.config.mm_vision_select_layer]
        feats = feats.reshape(n, k, feats.shape[1], feats.shape[2]).to(self.mm_projector.mlp_2xgelu_face[0].weight.dtype)
        video, body, face = self.mm_projector(feats)
        with _grad_if(self.bert_model):
            cls = self.bert_model(input_ids=bert_input_ids, attention_mask=bert_attention_mask).last_hidden_state[:, 0]
        probs = torch.softmax(self.bert_gate(cls.to(self.bert_gate[0].weight.dtype)), dim=-1).to(video.dtype)
        if probs.shape[0] != n:
            raise ValueError(f"{n} clips but {probs.shape[0]} BERT instruction rows")
        return video * probs[:, 0, None, None] + body * probs[:, 1, None, None] + face * probs[:, 2, None, None]

    def encode_audio(self, audio_features: torch.Tensor) -> torch.Tensor:
        """(N, n_mels, 3000) log-mel -> Whisper encoder (N, 1500, C) -> avg_pool1d(3,3) -> projector (N, 500, H)."""
        if audio_features.dim() != 3:
            raise ValueError(f"audio_features must be (clips, n_mels, frames), got {tuple(audio_features.shape)}")
        tower_dtype = self.audio_tower.encoder.conv1.weight.dtype
        with _grad_if(self.audio_tower):
            hidden = self.audio_tower.encoder(audio_features.to(tower_dtype)).last_hidden_state
        pooled = F.avg_pool1d(hidden.transpose(1, 2), kernel_size=3, stride=3).transpose(1, 2)
        return self.audio_projector(pooled.to(self.audio_projector[0].weight.dtype))

    def embed(self, input_ids: torch.Tensor, *, pixel_values: torch.Tensor | None = None,
              audio_features: torch.Tensor | None = None, bert_input_ids: torch.Tensor | None = None,
              bert_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the -201 / -202 placeholder runs replaced by projected features.

        Rows with a video run take the clips of ``pixel_values`` in row order (one clip per row,
        exactly ``config.num_video_tokens`` placeholders); likewise audio.
        """
        video_mask = input_ids == VIDEO_TOKEN_INDEX
        audio_mask = input_ids == AUDIO_TOKEN_INDEX
        text_ids = input_ids.masked_fill(video_mask | audio_mask, 0)
        if (text_ids < 0).any():
            raise ValueError(f"input_ids holds negative ids other than {VIDEO_TOKEN_INDEX}/{AUDIO_TOKEN_INDEX}")
        embeds = self.llm.get_input_embeddings()(text_ids)
        if video_mask.any():
            if pixel_values is None or bert_input_ids is None:
                raise ValueError("input_ids holds <video> placeholders but pixel_values / bert_input_ids are missing")
            self._check_runs(video_mask, pixel_values.shape[0], self.config.num_video_tokens(pixel_values.shape[1]), "video")
            feats = self.encode_video(pixel_values.to(embeds.device), bert_input_ids, bert_attention_mask)
            embeds = embeds.masked_scatter(video_mask[..., None], feats.to(embeds.dtype))
        if audio_mask.any():
            if audio_features is None:
                raise ValueError("input_ids holds <audio> placeholders but audio_features is missing")
            self._check_runs(audio_mask, audio_features.shape[0], self.config.num_audio_tokens(), "audio")
            feats = self.encode_audio(audio_features.to(embeds.device))
            embeds = embeds.masked_scatter(audio_mask[..., None], feats.to(embeds.dtype))
        return embeds

    def embed_prompts(self, batch: dict) -> torch.Tensor:
        """(B, L, H) embeddings of ``batch["input_ids"]`` with the batch's media features in place
        (:meth:`embed` with the processor's ``pixel_values`` / ``audio_features`` / BERT inputs)."""
        device = self.device

        def to(value):
            return None if value is None else value.to(device)

        return self.embed(batch["input_ids"].to(device), pixel_values=batch.get("pixel_values"),
                          audio_features=batch.get("audio_features"), bert_input_ids=to(batch.get("bert_input_ids")),
                          bert_attention_mask=to(batch.get("bert_attention_mask")))

    def rope_positions(self, batch: dict) -> None:
        """None: the LLM's rotary positions are the plain 1-D token positions."""
        return None

    def reference_view(self, source: OmniModel | None = None, *, share_frozen: bool = True) -> OmniModel:
        """GRPO's reference: a model computing like this one with the trainable parts frozen at
        their current values (or ``source``'s). Child modules without a trainable parameter (the
        towers, BERT, …) are this model's own objects, shared, not copied (copied too when not
        ``share_frozen``)."""
        import copy

        ref = copy.copy(self)
        # nn.Module keeps its children, parameters and hooks in dicts: the view gets its own
        ref.__dict__ = {k: (copy.copy(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}
        for name, module in self.named_children():
            if not share_frozen or any(p.requires_grad for p in module.parameters()):
                own = copy.deepcopy(module) if source is None else getattr(source, name)
                ref._modules[name] = own.requires_grad_(False).eval()
        return ref

    @staticmethod
    def _check_runs(mask: torch.Tensor, clips: int, per_clip: int, what: str) -> None:
        counts = mask.sum(1)
        rows = counts > 0
        if int(rows.sum()) != clips:
            raise ValueError(f"{int(rows.sum())} rows hold <{what}> placeholders but {clips} {what} clips were given")
        bad = counts[rows] != per_clip
        if bad.any():
            raise ValueError(f"each <{what}> needs exactly {per_clip} placeholder ids, got {counts[rows].tolist()}")

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                pixel_values: torch.Tensor | None = None, audio_features: torch.Tensor | None = None,
                bert_input_ids: torch.Tensor | None = None, bert_attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, logits_to_keep: int | torch.Tensor = 0,
                return_hidden_states: bool = False, inputs_embeds: torch.Tensor | None = None) -> OmniOutput:
        """Training / scoring forward; the LM head runs only where logits are needed.

        ``inputs_embeds`` (B, L, H), e.g. `embed` output reused across a group of completions,
        replaces ``input_ids`` and the media arguments.

        - ``labels`` given: positions t with ``labels[:, t+1] != -100`` are packed; returns
          (M, V) logits (or (M, D) hidden states), ``targets`` and the mean cross-entropy.
        - else ``logits_to_keep``: int k > 0 keeps the last k positions (TRL's convention for
          completions), a 1-D index tensor keeps those positions, 0 keeps all.
        Positions are ``cumsum(attention_mask) - 1`` so left padding is transparent.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("forward needs exactly one of input_ids and inputs_embeds")
        embeds = inputs_embeds if inputs_embeds is not None else self.embed(
            input_ids, pixel_values=pixel_values, audio_features=audio_features,
            bert_input_ids=bert_input_ids, bert_attention_mask=bert_attention_mask)
        position_ids = None
        if attention_mask is not None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.llm.model(inputs_embeds=embeds, attention_mask=attention_mask,
                                position_ids=position_ids, use_cache=False).last_hidden_state
        return lm_output(hidden, self.llm.lm_head, labels=labels, logits_to_keep=logits_to_keep,
                         return_hidden_states=return_hidden_states)

    # -------------------------------------------------------------- checkpoints
    def checkpoint_state_dict(self, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Parameters under HumanOmni's checkpoint names (what save_pretrained writes), from
        ``state_dict`` (this module's names, e.g. gathered from shards) or the module itself.

        ``lm_head.weight`` is left out when the embeddings are tied, as transformers does."""
        state = self.state_dict() if state_dict is None else state_dict
        out = {towers.to_checkpoint_name(k): v for k, v in state.items()}
        if self.config.llm.tie_word_embeddings:
            out.pop("lm_head.weight", None)
        return out

    def save_pretrained(self, path: str | os.PathLike, *, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write config.json, model.safetensors, tokenizer files and the tower sub-folders
        (``vision_tower/``, ``audio_tower/``, ``bert/``: config, preprocessor config, BERT tokenizer).
        ``state_dict`` (full tensors under this module's names) replaces the module's own, e.g. the
        consolidation of a sharded model."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.config.save(os.path.join(path, "config.json"))
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.checkpoint_state_dict(state_dict).items()}
        save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        for part, cfg in (("vision_tower", self.config.vision), ("audio_tower", self.config.audio), ("bert", self.config.bert)):
            folder = os.path.join(path, towers.PART_FOLDERS[part])
            os.makedirs(folder, exist_ok=True)
            cfg.to_json_file(os.path.join(folder, "config.json"))
            pre = self.preprocessor_configs.get(part) or _default_preprocessor_config(part, self.config)
            if pre:
                with open(os.path.join(folder, "preprocessor_config.json"), "w", encoding="utf-8") as fh:
                    json.dump(pre, fh, indent=2, sort_keys=True)
        if self.processor is not None:
            self.processor.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, vision_tower: str | os.PathLike | None = None,
                        audio_tower: str | os.PathLike | None = None, bert: str | os.PathLike | None = None,
                        dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                        strict: bool = True) -> OmniModel:
        """Load a HumanOmni / R1-Omni checkpoint folder (config.json + model.safetensors or a
        sharded ``model.safetensors.index.json``).

        Each tower / BERT comes from, in order: the folder passed as argument; the checkpoint's
        sub-folder (``vision_tower/``, ``audio_tower/``, ``bert/``); a folder beside the checkpoint
        named like the config's tower (e.g. ``../siglip-base-patch16-224``); the config's own path
        if it exists here. Its weights come from the checkpoint when present there, else from that
        folder. Anything missing raises one `CheckpointError` listing every missing part and how to
        supply it. ``strict``: missing or unexpected checkpoint keys raise (otherwise they are
        reported in ``model.load_report``).
        """
        path = os.fspath(path)
        config_path = os.path.join(path, "config.json")
        if not os.path.isfile(config_path):
            raise CheckpointError(f"{path}: no config.json (is this a HumanOmni / R1-Omni checkpoint folder?)")
        config = OmniConfig.from_json_file(config_path)
        weights = _read_weights(path)
        given = {"vision_tower": vision_tower, "audio_tower": audio_tower, "bert": bert}
        problems: list[str] = []
        resolved: dict[str, str | None] = {}
        for part in ("vision_tower", "audio_tower", "bert"):
            folder, searched = _find_part_folder(part, path, config, given[part])
            in_ckpt = towers.has_part(weights, part)
            needs = []
            if folder is None:
                needs.append("its config.json" + (" and weights" if not in_ckpt else ""))
            elif not in_ckpt and not _has_weights(folder):
                needs.append(f"weights (not in the checkpoint, no model.safetensors in {folder})")
            if part == "bert" and (folder is None or not _has_tokenizer(folder)):
                needs.append("its tokenizer (vocab.txt or tokenizer.json)")
            if needs:
                problems.append(_missing_part_message(part, needs, searched, config))
            resolved[part] = folder
        if problems:
            raise CheckpointError(f"cannot load {path}: {len(problems)} part(s) missing\n" + "\n".join(problems))
        config.vision = towers.read_tower_config("vision_tower", resolved["vision_tower"])
        config.audio = towers.read_tower_config("audio_tower", resolved["audio_tower"])
        config.bert = towers.read_tower_config("bert", resolved["bert"])
        for part in ("vision_tower", "audio_tower", "bert"):
            if not towers.has_part(weights, part):
                weights.update(towers.tower_weights_from_folder(part, _read_weights(resolved[part])))
        model = cls(config)
        model.load_report = model.load_checkpoint_state_dict(weights, strict=strict, source=path)
        for part in ("vision_tower", "audio_tower"):
            pre = os.path.join(resolved[part], "preprocessor_config.json")
            if os.path.isfile(pre):
                with open(pre, encoding="utf-8") as fh:
                    model.preprocessor_configs[part] = json.load(fh)
        from r1omni_fast.model.humanomni.processor import OmniProcessor

        model.processor = OmniProcessor.from_pretrained(path, resolved["bert"], config)
        if dtype is not None:
            model.to(dtype)
        if device is not None:
            model.to(device)
        model.eval()
        return model

    def load_checkpoint_state_dict(self, weights: dict[str, torch.Tensor], *, strict: bool = True,
                                   source: str = "state dict") -> dict[str, list[str]]:
        """Load tensors named as in a HumanOmni checkpoint; returns {"missing": [...], "unexpected": [...]}
        (checkpoint names). ``strict`` raises `CheckpointError` when either list is non-empty or a
        shape differs."""
        own = self.state_dict()
        mapped: dict[str, torch.Tensor] = {}
        unexpected, mismatched = [], []
        tied = self.config.llm.tie_word_embeddings
        for name, tensor in weights.items():
            ours = towers.from_checkpoint_name(name)
            if tied and name == "lm_head.weight":
                continue  # tied to model.embed_tokens.weight, which is loaded
            if ours is None or ours not in own:
                unexpected.append(name)
            elif tuple(own[ours].shape) != tuple(tensor.shape):
                mismatched.append(f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(own[ours].shape)}")
            else:
                mapped[ours] = tensor
        missing = sorted(
            ck for ck in (towers.to_checkpoint_name(k) for k in own if k not in mapped)
            if not (tied and ck == "lm_head.weight") and not towers.UNUSED_CHECKPOINT_KEYS.match(ck)
        )
        if mismatched:
            raise CheckpointError(f"{source}: {len(mismatched)} shape mismatch(es):\n  " + "\n  ".join(mismatched))
        if strict and (missing or unexpected):
            raise CheckpointError(
                f"{source}: {len(missing)} missing and {len(unexpected)} unexpected key(s) "
                "(pass strict=False to load anyway)\n"
                + "".join(f"  missing: {k}\n" for k in missing[:50])
                + "".join(f"  unexpected: {k}\n" for k in sorted(unexpected)[:50])
            )
        self.load_state_dict(mapped, strict=False)
        return {"missing": missing, "unexpected": sorted(unexpected)}


# ----------------------------------------------------------------------- helpers
def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _grad_if(module: nn.Module):
    return contextlib.nullcontext() if _trains(module) else torch.no_grad()


def _read_weights(folder: str) -> dict[str, torch.Tensor]:
    single = os.path.join(folder, "model.safetensors")
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as fh:
            files = sorted({os.path.join(folder, f) for f in json.load(fh)["weight_map"].values()})
    else:
        raise CheckpointError(f"{folder}: neither model.safetensors nor model.safetensors.index.json")
    out: dict[str, torch.Tensor] = {}
    for file in files:
        if not os.path.isfile(file):
            raise CheckpointError(f"{folder}: shard {os.path.basename(file)} listed in the index is missing")
        with safe_open(file, framework="pt") as fh:
            for key in fh.keys():
                out[key] = fh.get_tensor(key)
    return out


def _has_weights(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("model.safetensors", "model.safetensors.index.json"))


def _has_tokenizer(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("vocab.txt", "tokenizer.json"))


def _find_part_folder(part: str, ckpt: str, config: OmniConfig, given: str | os.PathLike | None) -> tuple[str | None, list[str]]:
    """First candidate folder holding a config.json, and the folders searched."""
    if given is not None:
        given = os.fspath(given)
        return (given if os.path.isfile(os.path.join(given, "config.json")) else None), [given]
    candidates = [os.path.join(ckpt, towers.PART_FOLDERS[part])]
    field = PART_CONFIG_FIELD[part]
    named = getattr(config, field) if field else None
    base = os.path.basename(os.path.normpath(named)) if named else PART_DEFAULT_NAME[part]
    parent = os.path.dirname(os.path.abspath(ckpt))
    candidates += [os.path.join(ckpt, base), os.path.join(parent, base)]
    if named and os.path.isabs(named):
        candidates.append(named)
    seen: list[str] = []
    for folder in candidates:
        if folder in seen:
            continue
        seen.append(folder)
        if os.path.isfile(os.path.join(folder, "config.json")):
            return folder, seen
    return None, seen


def _missing_part_message(part: str, needs: Sequence[str], searched: Sequence[str], config: OmniConfig) -> str:
    field = PART_CONFIG_FIELD[part]
    named = f" (config {field}={getattr(config, field)!r})" if field else ""
    files = ["config.json"]
    if any("weights" in need for need in needs):
        files.append("model.safetensors")
    if part == "bert":
        files.append("vocab.txt")
    listed = files[0] if len(files) == 1 else ", ".join(files[:-1]) + " and " + files[-1]
    return (
        f"  - {PART_TITLES[part]}{named}: missing {', '.join(needs)}; searched {', '.join(searched)}.\n"
        f"    Fix: pass {part}='/path/to/{PART_DEFAULT_NAME[part]}' (a folder with {listed}) to "
        f"OmniModel.from_pretrained, or place that folder at {searched[0]}."
    )


def _default_preprocessor_config(part: str, config: OmniConfig) -> dict | None:
    if part == "vision_tower":
        size = config.vision.image_size
        return {"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                "size": {"height": size, "width": size}, "resample": 3, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5], "num_frames": config.num_frames,
                "image_aspect_ratio": config.image_aspect_ratio}
    if part == "audio_tower":
        return {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": config.audio.num_mel_bins,
                "sampling_rate": 16000, "hop_length": 160, "n_fft": 400, "chunk_length": 30,
                "n_samples": 480000, "nb_max_frames": config.mel_frames, "padding_value": 0.0,
                "return_attention_mask": False}
    return None
