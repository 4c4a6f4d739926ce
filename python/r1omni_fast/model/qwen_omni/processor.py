"""The Qwen2.5-Omni backend's processor: prompts through the checkpoint's chat template with
Qwen's system turn, media placeholders expanded, targets -> labels, batching."""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from r1omni_fast.model.types import TagKeepingDecoder, IGNORE_INDEX, CheckpointError
from r1omni_fast.model.types import pad_rows as _pad
from r1omni_fast.prompts import MODALITIES, normalise_modalities

from r1omni_fast.media.qwen import SAMPLE_RATE, QwenClip

#: The system turn Qwen2.5-Omni was trained with (its model card: needed for its audio paths).
QWEN_OMNI_SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
                    "auditory and visual inputs, as well as generating text and speech.")
_PLACEHOLDERS = re.compile(r"<vi_start>|<vi_end>|<au_start>|<au_end>|<video>\n?|<audio>\n?")

#: The processor files a checkpoint folder needs, and what each gives.
PROCESSOR_FILES = {"tokenizer": ("tokenizer.json", "tokenizer_config.json"),
                   "processor": ("preprocessor_config.json", "processor_config.json"),
                   "chat template": ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")}


class ProcessorError(CheckpointError):
    """A checkpoint's processor files are missing or unusable (names the file and the fix)."""



class QwenOmniProcessor(TagKeepingDecoder):
    """Instructions + :class:`QwenClip` media -> thinker batch, through ``Qwen2_5OmniProcessor``'s
    chat template, video processor and Whisper feature extractor.

    ``__call__`` returns ``input_ids`` / ``attention_mask`` (B, L) padded on ``padding_side``,
    ``labels`` with targets, and for the rows with media: ``pixel_values_videos`` (patches, C*2*14*14),
    ``video_grid_thw`` (videos, 3), ``video_second_per_grid`` (videos,), ``input_features``
    (audios, 128, L) and ``feature_attention_mask`` (audios, L), L the longest audio's mel frames
    (10 ms each; not padded to Whisper's 30 s), plus ``video_rows`` /
    ``audio_rows`` (B,) bool and ``audio_in_video`` (B,) bool (audio from the video's own track,
    interleaved with its frames in 2-second chunks).
    """

    #: ``chat_template`` settings this processor renders (the checkpoint's own template only).
    chat_templates = ("checkpoint",)
    #: the model family (messages) and transformers' processor class of its checkpoints
    FAMILY = "Qwen2.5-Omni"
    HF_PROCESSOR = "Qwen2_5OmniProcessor"
    #: the system turn of every prompt (None: no system turn)
    SYSTEM_PROMPT: str | None = QWEN_OMNI_SYSTEM

    def __init__(self, hf_processor: Any, *, system_prompt: str | None = None, source: str = "") -> None:
        self.hf = hf_processor
        self.tokenizer = hf_processor.tokenizer
        self.system_prompt = self.SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.source = source
        tok = self.tokenizer
        for attr in ("video_token", "audio_token", "vision_bos_token", "audio_bos_token"):
            if getattr(tok, attr, None) is None:
                raise ProcessorError(f"{source or 'the tokenizer'}: tokenizer_config.json defines no {attr} "
                                     f"({self.FAMILY}'s special tokens): use the tokenizer files of a {self.FAMILY} checkpoint")
        self.video_token_id = tok.convert_tokens_to_ids(tok.video_token)
        self.audio_token_id = tok.convert_tokens_to_ids(tok.audio_token)
        self.media_token_ids = (self.video_token_id, self.audio_token_id)
        if tok.pad_token_id is None:
            raise ProcessorError(f"{source or 'the tokenizer'}: the tokenizer has no pad token")
        self._skipped_ids: frozenset | None = None
        self.check_chat_template()

    # -------------------------------------------------------------- checks
    def check_chat_template(self) -> None:
        """The chat template must render a video item as ``<|vision_bos|><|VIDEO|><|vision_eos|>``
        and an audio item as ``<|audio_bos|><|AUDIO|><|audio_eos|>``; raises `ProcessorError`
        naming the template file otherwise."""
        try:
            text = self.render("x", video=True, audio=True)
        except Exception as exc:  # a missing or broken template
            raise ProcessorError(f"{self._template_file()}: cannot render a chat with a video and an audio item ({exc}); "
                                 f"copy chat_template.jinja (or chat_template.json) from a {self.FAMILY} checkpoint") from None
        tok = self.tokenizer
        missing = [t for t in (tok.vision_bos_token + tok.video_token, tok.audio_bos_token + tok.audio_token) if t not in text]
        if missing:
            raise ProcessorError(f"{self._template_file()}: the chat template does not write the media tokens {missing} "
                                 f"for video / audio items: use {self.FAMILY}'s chat template (chat_template.jinja)")

    def _template_file(self) -> str:
        for name in ("chat_template.jinja", "chat_template.json"):
            if self.source and os.path.isfile(os.path.join(self.source, name)):
                return os.path.join(self.source, name)
        return os.path.join(self.source, "chat_template.jinja") if self.source else "the processor's chat template"

    # ---------------------------------------------------------------- text
    @property
    def eos_token_ids(self) -> list[int]:
        """``<|im_end|>`` and the tokenizer's EOS."""
        ids = {self.tokenizer.convert_tokens_to_ids("<|im_end|>"), self.tokenizer.eos_token_id}
        unk = self.tokenizer.unk_token_id
        return sorted(i for i in ids if i is not None and i != unk)

    def render(self, text: str, *, video: bool, audio: bool) -> str:
        """The chat-templated prompt (the system turn, when :attr:`system_prompt` is set, then a
        user turn holding a video item when ``video``, an audio item when ``audio``, then ``text``)
        with the generation prompt."""
        content: list[dict] = []
        if video:
            content.append({"type": "video", "video": "clip"})
        if audio:
            content.append({"type": "audio", "audio": "clip"})
        content.append({"type": "text", "text": text})
        messages = [{"role": "user", "content": content}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @staticmethod
    def instruction_text(instruction: str) -> str:
        """The instruction without HumanOmni's media placeholders."""
        return _PLACEHOLDERS.sub("", instruction).strip()

    def _video_inputs(self, clip: QwenClip) -> dict:
        vp = self.hf.video_processor
        out = vp(videos=[clip.frames], do_sample_frames=False, return_tensors="pt", cap_pixels_per_frame=False,
                 size={"shortest_edge": 1, "longest_edge": int(clip.frames.shape[1] * clip.frames.shape[2])})
        out = dict(out)
        out["video_second_per_grid"] = torch.tensor([vp.temporal_patch_size / clip.sample_fps])
        return out

    def _audio_inputs(self, wave: np.ndarray) -> dict:
        """Whisper log-mel features of ``wave`` (16 kHz) as the processor's feature extractor makes
        them, natively and without the padding (``r1omni_fast.media.qwen_audio_features``):
        ``input_features`` (1, n_mels, L) float32 with L = ceil(samples / 160), its mask (1, L)."""
        from r1omni_fast.media import qwen_audio_features

        fe = self.hf.feature_extractor
        feats, mask = qwen_audio_features(wave, n_mels=fe.feature_size, sampling_rate=SAMPLE_RATE)
        mask = torch.from_numpy(np.asarray(mask, np.int64))[None]
        return {"input_features": torch.from_numpy(np.ascontiguousarray(feats, np.float32))[None],
                "feature_attention_mask": mask, "num_audio_tokens": self.audio_tokens(int(mask.sum()))}

    def audio_tokens(self, mel_frames: int) -> int:
        """Audio tokens the thinker's audio encoder makes of ``mel_frames`` log-mel frames (two
        stride-2 steps: ``((L - 1) // 2 + 1 - 2) // 2 + 1``)."""
        return int(_audio_output_length(torch.tensor([mel_frames]))[0])

    def _expand(self, prompt: str, video: dict | None, audio: dict | None, interleave: bool) -> str:
        tok = self.tokenizer
        merge = self.hf.video_processor.merge_size
        if video is not None:
            if interleave:
                seq = self.hf.replace_video_with_audio_token(
                    {"video_grid_thw": video["video_grid_thw"].numpy(),
                     "video_second_per_grid": video["video_second_per_grid"].tolist()},
                    0, {"num_audio_tokens": [audio["num_audio_tokens"]]}, 0,
                    position_id_per_seconds=self.hf.position_id_per_seconds, seconds_per_chunk=self.hf.seconds_per_chunk)
            else:
                seq = tok.video_token * int(video["video_grid_thw"][0].prod() // merge**2)
            prompt = prompt.replace(tok.video_token, seq, 1)
        if audio is not None and not interleave:
            prompt = prompt.replace(tok.audio_token, tok.audio_token * audio["num_audio_tokens"], 1)
        return prompt

    def __call__(self, instructions: Sequence[str], targets: Sequence[str] | None = None, *,
                 pixel_values: Sequence[QwenClip] | None = None, audio_features: Sequence[Any] | None = None,
                 modalities: str | Sequence[str] = MODALITIES, padding_side: str = "left",
                 chat_template: str = "checkpoint", bert_texts: Sequence[str] | None = None,
                 template_turn_end: bool = False) -> dict:
        """Rows from ``instructions`` (HumanOmni-style, with ``<video>``/``<audio>`` placeholders
        saying which media the row uses) and the collator's media: ``pixel_values`` its
        :class:`QwenClip` list, ``audio_features`` their audio (float32 16 kHz or None). A row
        whose instruction holds ``<audio>`` without audio, or ``<video>`` without a clip, is a
        ValueError. ``chat_template`` must be "checkpoint"; ``bert_texts`` is not used. Targets end
        with ``<|im_end|>``, or with the template's whole turn end ``<|im_end|>\n`` when
        ``template_turn_end`` (SFT ``prompt_style: humanomni``)."""
        if isinstance(instructions, str):
            raise TypeError("instructions must be a list of strings (one per row)")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}: use 'left' or 'right'")
        if chat_template != "checkpoint":
            raise ValueError(f"chat_template={chat_template!r}: the {self.FAMILY} backend uses its checkpoint's template "
                             "(chat_template: checkpoint)")
        keep = normalise_modalities(modalities)
        if targets is not None and len(targets) != len(instructions):
            raise ValueError(f"{len(instructions)} instructions but {len(targets)} targets")
        n = len(instructions)
        clips = list(pixel_values) if pixel_values is not None else [None] * n
        waves = list(audio_features) if audio_features is not None else [None] * n
        if len(clips) != n or len(waves) != n:
            raise ValueError(f"{n} instructions but {len(clips)} clips and {len(waves)} audio inputs")
        rows, label_rows = [], []
        videos, audios = [], []
        video_rows, audio_rows, interleaved = [], [], []
        for i, instruction in enumerate(instructions):
            wants_video = "video" in keep and "<video>" in instruction
            wants_audio = "audio" in keep and "<audio>" in instruction
            clip, wave = clips[i], waves[i]
            if wants_video and clip is None:
                raise ValueError(f"row {i}: the instruction holds <video> but no clip was given")
            if wants_audio and wave is None:
                raise ValueError(f"row {i}: the instruction holds <audio> but its clip has no audio "
                                 "(the collator loads audio for records whose prompt holds <audio>)")
            source = getattr(clip, "audio_source", None) if clip is not None else None
            interleave = wants_video and wants_audio and source == "video"
            video = self._video_inputs(clip) if wants_video else None
            audio = self._audio_inputs(np.asarray(wave, np.float32)) if wants_audio else None
            prompt = self.render(self.instruction_text(instruction), video=wants_video, audio=wants_audio and not interleave)
            ids = self.tokenizer.encode(self._expand(prompt, video, audio, interleave), add_special_tokens=False)
            if targets is not None:
                end = "<|im_end|>\n" if template_turn_end else "<|im_end|>"
                target = self.tokenizer.encode(targets[i] + end, add_special_tokens=False)
                rows.append(ids + target)
                label_rows.append([IGNORE_INDEX] * len(ids) + target)
            else:
                rows.append(ids)
            if video is not None:
                videos.append(video)
            if audio is not None:
                audios.append(audio)
            video_rows.append(video is not None)
            audio_rows.append(audio is not None)
            interleaved.append(interleave)
        batch = _pad(rows, self.tokenizer.pad_token_id, padding_side)
        if targets is not None:
            batch["labels"] = _pad(label_rows, IGNORE_INDEX, padding_side)["input_ids"]
        if videos:
            batch["pixel_values_videos"] = torch.cat([v["pixel_values_videos"] for v in videos])
            batch["video_grid_thw"] = torch.cat([v["video_grid_thw"] for v in videos])
            batch["video_second_per_grid"] = torch.cat([v["video_second_per_grid"] for v in videos])
        if audios:
            width = max(a["input_features"].shape[-1] for a in audios)  # the longest audio, not 30 s
            batch["input_features"] = torch.cat([F.pad(a["input_features"], (0, width - a["input_features"].shape[-1]))
                                                 for a in audios])
            batch["feature_attention_mask"] = torch.cat(
                [F.pad(a["feature_attention_mask"], (0, width - a["feature_attention_mask"].shape[-1])) for a in audios])
        batch["video_rows"] = torch.tensor(video_rows)
        batch["audio_rows"] = torch.tensor(audio_rows)
        batch["audio_in_video"] = torch.tensor(interleaved)
        return batch

    # ------------------------------------------------------------- decoding

    def save_pretrained(self, path: str) -> None:
        self.hf.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str) -> QwenOmniProcessor:
        """:attr:`HF_PROCESSOR` (``Qwen2_5OmniProcessor``) from ``path``; missing files raise
        `ProcessorError` naming them."""
        import transformers

        hf_class = getattr(transformers, cls.HF_PROCESSOR)
        missing = [f"{what} ({' or '.join(files)})" for what, files in PROCESSOR_FILES.items()
                   if not any(os.path.isfile(os.path.join(path, f)) for f in files)]
        if missing:
            raise ProcessorError(f"{path}: missing processor file(s): {'; '.join(missing)}. Copy them from the "
                                 f"{cls.FAMILY} checkpoint the weights come from ({cls.HF_PROCESSOR}.save_pretrained "
                                 "writes them)")
        try:
            hf = hf_class.from_pretrained(path)
        except AttributeError as exc:  # the processor reads the tokenizer's multimodal special tokens
            raise ProcessorError(f"{path}: {cls.HF_PROCESSOR} cannot load the processor files ({exc}): "
                                 f"tokenizer_config.json must name {cls.FAMILY}'s special tokens (image_token, "
                                 "audio_token, video_token, vision_bos_token, ...): use the tokenizer files of a "
                                 f"{cls.FAMILY} checkpoint") from None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ProcessorError(f"{path}: {cls.HF_PROCESSOR} cannot load the processor files ({exc})") from None
        return cls(hf, source=path)


def _audio_output_length(lengths: torch.Tensor) -> torch.Tensor:
    """Audio tokens of ``lengths`` mel frames (the thinker's audio encoder: two stride-2 steps)."""
    lengths = (lengths - 1) // 2 + 1
    return (lengths - 2) // 2 + 1


