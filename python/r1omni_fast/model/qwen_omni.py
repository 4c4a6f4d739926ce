"""Qwen2.5-Omni thinker policy backend (``transformers.Qwen2_5OmniThinkerForConditionalGeneration``;
text output only, the talker and token2wav are never built).

Checkpoints: a full Qwen2.5-Omni folder (``model_type`` "qwen2_5_omni": only the ``thinker.``
weights are read) or a thinker-only folder ("qwen2_5_omni_thinker", what :meth:`save_pretrained`
writes and transformers' ``Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained`` loads),
with the processor files (``Qwen2_5OmniProcessor``: tokenizer, chat template, video processor,
Whisper feature extractor).

Media per record (:func:`load_qwen_clip`, the one media step): frames sampled by time as
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
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from r1omni_fast.model.types import IGNORE_INDEX, CheckpointError, OmniOutput
from r1omni_fast.model.prompt import _pad
from r1omni_fast.prompts import MODALITIES, REASONING_TAGS, normalise_modalities

#: The system turn Qwen2.5-Omni was trained with (its model card: needed for its audio paths).
QWEN_OMNI_SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
                    "auditory and visual inputs, as well as generating text and speech.")
MODEL_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")
SAMPLE_RATE = 16000

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

_PLACEHOLDERS = re.compile(r"<vi_start>|<vi_end>|<au_start>|<au_end>|<video>\n?|<audio>\n?")

#: The processor files a checkpoint folder needs, and what each gives.
PROCESSOR_FILES = {"tokenizer": ("tokenizer.json", "tokenizer_config.json"),
                   "processor": ("preprocessor_config.json", "processor_config.json"),
                   "chat template": ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")}


class ProcessorError(CheckpointError):
    """A checkpoint's processor files are missing or unusable (names the file and the fix)."""


# ----------------------------------------------------------------------------------------- media
@dataclass
class QwenMediaSettings:
    """Frame timing and sizing of ``qwen-omni-utils`` (``vision_process.py``): ``fps`` frames per
    second, ``min_frames``/``max_frames`` (rounded to even), per-frame pixels in
    [``min_pixels``, ``max_pixels``] and at most ``total_pixels`` over the clip; ``factor`` 28
    (patch 14 x merge 2). ``max_audio_seconds``: audio kept (Whisper's 30 s window)."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 768
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    total_pixels: float = 128000 * 28 * 28 * 0.9
    factor: int = 28
    max_audio_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps={self.fps}: must be > 0")
        if self.max_frames < 2:
            raise ValueError(f"max_frames={self.max_frames}: Qwen2.5-Omni needs at least 2 frames (one temporal patch)")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} > max_pixels={self.max_pixels}")


@dataclass
class QwenClip:
    """One clip's media for Qwen2.5-Omni: ``frames`` uint8 (T, H, W, 3), T even, H and W multiples
    of 28; ``sample_fps`` frames per second of the sampled frames; ``frame_indices`` (T,) int64;
    ``audio`` float32 (n,) at 16 kHz or None; ``audio_source`` "video" (the file's own track),
    "file" (a separate audio file) or None."""

    frames: np.ndarray
    sample_fps: float
    frame_indices: np.ndarray
    audio: Optional[np.ndarray] = None
    audio_source: Optional[str] = None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def load_qwen_clip(video: str | os.PathLike, *, audio_path: str | os.PathLike | None = None, audio: bool = True,
                   require_audio: bool = False, settings: QwenMediaSettings | None = None) -> QwenClip:
    """THE media step of this backend (one clip): frames sampled by time and smart-resized, and
    16 kHz audio (see the module docstring).

    ``audio``: load audio (from ``audio_path`` when given, else the video's own track);
    ``require_audio``: a missing audio stream is an error instead of ``audio=None``.
    Returns a :class:`QwenClip`. Raises ``MediaError`` naming the file for an undecodable input,
    a clip under 2 frames or missing required audio.
    """
    from r1omni_fast.media import MediaError, load_audio, load_clip, qwen_frame_indices, qwen_video

    settings = settings or QwenMediaSettings()
    path = os.fspath(video)
    probe = load_clip(path, num_frames=1, image_size=16, aspect="resize", audio=False)
    try:
        idx, _ = qwen_frame_indices(int(probe.num_video_frames), float(probe.fps), fps=settings.fps,
                                    min_frames=settings.min_frames, max_frames=settings.max_frames)
    except ValueError as exc:
        raise MediaError(path, str(exc)) from None
    # native: decoded, sampled by time and resized as qwen-omni-utils' fetch_video (bit-exact)
    frames, sample_fps = qwen_video(path, fps=settings.fps, min_frames=settings.min_frames,
                                    max_frames=settings.max_frames, min_pixels=settings.min_pixels,
                                    max_pixels=settings.max_pixels, total_pixels=settings.total_pixels)
    if len(frames) != len(idx):
        raise MediaError(path, f"{len(frames)} frames decoded where {len(idx)} were sampled")
    wave, source = None, None
    if audio:
        source_path = path if audio_path is None else os.fspath(audio_path)
        wave = load_audio(source_path, max_seconds=settings.max_audio_seconds)
        if wave is None and require_audio:
            what = "the audio file" if audio_path is not None else "the video"
            raise MediaError(source_path, f"{what} has no audio stream but the record asks for audio (<audio> in "
                                          "its prompt): give the record an audio file with sound, or remove <audio>")
        source = None if wave is None else ("file" if audio_path is not None else "video")
    return QwenClip(frames, float(sample_fps), np.asarray(idx, np.int64), wave, source)


def load_qwen_batch(paths: Sequence[str], *, audio_paths: Sequence[Optional[str]] | None = None,
                    audio: bool | Sequence[bool] = True, require_audio: bool | Sequence[bool] = False,
                    settings: QwenMediaSettings | None = None, threads: int | None = None, **ignored: Any) -> list:
    """:func:`load_qwen_clip` over ``paths`` (``audio`` / ``require_audio`` one flag or one per
    path): a list of :class:`QwenClip` or ``MediaError`` per path, in order. Other keyword
    arguments (HumanOmni's loader settings, e.g. from ``data check``) are ignored."""
    from concurrent.futures import ThreadPoolExecutor

    from r1omni_fast.media import MediaError

    n = len(paths)
    audio_paths = list(audio_paths) if audio_paths is not None else [None] * n
    want = list(audio) if isinstance(audio, (list, tuple)) else [bool(audio)] * n
    need = list(require_audio) if isinstance(require_audio, (list, tuple)) else [bool(require_audio)] * n

    def one(i: int):
        try:
            return load_qwen_clip(paths[i], audio_path=audio_paths[i], audio=want[i], require_audio=need[i],
                                  settings=settings)
        except MediaError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, threads or min(4, n))) as pool:
        return list(pool.map(one, range(n)))


class QwenClipCollator:
    """Samples -> :class:`r1omni_fast.data.Batch` for the Qwen backend: ``frames`` is the list of
    :class:`QwenClip` (one per loaded sample), ``mel`` the list of their audio (float32 16 kHz or
    None), ``has_audio`` (B,) bool, ``frame_indices`` the list of frame index arrays.

    Which samples get audio: ``audio="record"`` those whose prompt holds ``<audio>`` (training:
    the record chooses), ``True`` every sample, ``False`` none, or a callable ``sample -> bool``
    (evaluation: ``eval.runner.record_modalities``). Audio asked for is required (an error naming the file when absent: raised with
    ``on_error="raise"``, else the sample is skipped and listed in ``Batch.skipped``). ``loader``
    (default :func:`load_qwen_batch`) takes the same arguments."""

    def __init__(self, *, settings: QwenMediaSettings, audio: bool | str = "record", loader=None,
                 on_error: str = "skip") -> None:
        if audio not in (True, False, "record") and not callable(audio):
            raise ValueError(f"audio={audio!r}: use True, False, 'record' or a callable sample -> bool")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.settings = settings
        self.audio = audio
        self.on_error = on_error
        self.loader = loader or load_qwen_batch
        #: what preflight / ``data check`` pass to ``loader`` (and ``require_audio`` for predict)
        self.media_kwargs: dict[str, Any] = {"settings": settings, "audio": audio}

    def wants_audio(self, sample: Any) -> bool:
        if callable(self.audio):
            return bool(self.audio(sample))
        if self.audio == "record":
            return "<audio>" in sample.prompt
        return bool(self.audio)

    def __call__(self, samples: Sequence[Any], index: int = 0):
        from r1omni_fast.data import Batch, DataError

        samples = list(samples)
        want = [self.wants_audio(s) for s in samples]
        kwargs = {k: v for k, v in self.media_kwargs.items() if k not in ("audio", "require_audio")}
        results = self.loader([str(s.video) for s in samples],
                              audio_paths=[None if s.audio is None else str(s.audio) for s in samples],
                              audio=want, require_audio=[w or bool(self.media_kwargs.get("require_audio")) for w in want],
                              **kwargs)
        kept, clips, skipped = [], [], []
        for sample, clip in zip(samples, results):
            if isinstance(clip, Exception):
                if self.on_error == "raise":
                    raise DataError(f"sample {sample.id} ({sample.source}): cannot load media: {clip}") from clip
                skipped.append((sample.id, str(clip)))
                continue
            kept.append(sample)
            clips.append(clip)
        if not clips:
            return Batch(index, [], None, None, None, None, skipped)
        has_audio = torch.tensor([c.has_audio for c in clips])
        return Batch(index, kept, clips, [c.audio for c in clips], has_audio, [c.frame_indices for c in clips], skipped)

    @staticmethod
    def preview_arrays(batch: Any) -> dict:
        """``r1omni_fast.data.ClipPreview`` of each clip of a batch of this collator, by sample id:
        the frames as the model sees them (k, 3, H, W) in [0, 1], and the 128-bin log-mel of the
        audio given to the model (None without audio)."""
        from r1omni_fast.data import ClipPreview
        from r1omni_fast.media import whisper_log_mel

        out = {}
        for sample, clip in zip(batch.samples, batch.frames or []):
            pixels = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255.0
            mel = whisper_log_mel(clip.audio, 128) if clip.audio is not None else None
            out[sample.id] = ClipPreview(pixels, mel, clip.has_audio)
        return out


# ------------------------------------------------------------------------------------ processor
class QwenOmniProcessor:
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

    def __init__(self, hf_processor: Any, *, system_prompt: str = QWEN_OMNI_SYSTEM, source: str = "") -> None:
        self.hf = hf_processor
        self.tokenizer = hf_processor.tokenizer
        self.system_prompt = system_prompt
        self.source = source
        tok = self.tokenizer
        for attr in ("video_token", "audio_token", "vision_bos_token", "audio_bos_token"):
            if getattr(tok, attr, None) is None:
                raise ProcessorError(f"{source or 'the tokenizer'}: tokenizer_config.json defines no {attr} "
                                     "(Qwen2.5-Omni's special tokens): use the tokenizer files of a Qwen2.5-Omni checkpoint")
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
                                 "copy chat_template.jinja (or chat_template.json) from a Qwen2.5-Omni checkpoint") from None
        tok = self.tokenizer
        missing = [t for t in (tok.vision_bos_token + tok.video_token, tok.audio_bos_token + tok.audio_token) if t not in text]
        if missing:
            raise ProcessorError(f"{self._template_file()}: the chat template does not write the media tokens {missing} "
                                 "for video / audio items: use Qwen2.5-Omni's chat template (chat_template.jinja)")

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
        """The chat-templated prompt (Qwen's system turn, then a user turn holding a video item when
        ``video``, an audio item when ``audio``, then ``text``) with the generation prompt."""
        content: list[dict] = []
        if video:
            content.append({"type": "video", "video": "clip"})
        if audio:
            content.append({"type": "audio", "audio": "clip"})
        content.append({"type": "text", "text": text})
        messages = [{"role": "system", "content": [{"type": "text", "text": self.system_prompt}]},
                    {"role": "user", "content": content}]
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
                "feature_attention_mask": mask, "num_audio_tokens": int(_audio_output_length(mask.sum(-1))[0])}

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
            raise ValueError(f"chat_template={chat_template!r}: the Qwen2.5-Omni backend uses its checkpoint's template "
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
    @property
    def skipped_ids(self) -> frozenset:
        """Ids :meth:`decode` leaves out: special tokens except the reasoning tags."""
        if self._skipped_ids is None:
            tok = self.tokenizer
            special = set(tok.all_special_ids)
            special |= {i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
            tags = {tok.convert_tokens_to_ids(t) for t in REASONING_TAGS} - {tok.unk_token_id}
            self._skipped_ids = frozenset(special - tags)
        return self._skipped_ids

    def decode(self, ids: Sequence[int]) -> str:
        """Completion text without special tokens (the ``<think>``/``<answer>`` tags kept)."""
        skipped = self.skipped_ids
        return self.tokenizer.decode([i for i in ids if i not in skipped], skip_special_tokens=False)

    def save_pretrained(self, path: str) -> None:
        self.hf.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path: str) -> QwenOmniProcessor:
        """``Qwen2_5OmniProcessor`` from ``path``; missing files raise `ProcessorError` naming them."""
        from transformers import Qwen2_5OmniProcessor

        missing = [f"{what} ({' or '.join(files)})" for what, files in PROCESSOR_FILES.items()
                   if not any(os.path.isfile(os.path.join(path, f)) for f in files)]
        if missing:
            raise ProcessorError(f"{path}: missing processor file(s): {'; '.join(missing)}. Copy them from the "
                                 "Qwen2.5-Omni checkpoint the weights come from (Qwen2_5OmniProcessor.save_pretrained writes them)")
        try:
            hf = Qwen2_5OmniProcessor.from_pretrained(path)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ProcessorError(f"{path}: Qwen2_5OmniProcessor cannot load the processor files ({exc})") from None
        return cls(hf, source=path)


def _audio_output_length(lengths: torch.Tensor) -> torch.Tensor:
    """Audio tokens of ``lengths`` mel frames (the thinker's audio encoder: two stride-2 steps)."""
    lengths = (lengths - 1) // 2 + 1
    return (lengths - 2) // 2 + 1


# ---------------------------------------------------------------------------------------- policy
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


class QwenOmniThinkerPolicy(nn.Module):
    """Qwen2.5-Omni thinker as a policy (see the module docstring). ``thinker`` is the
    ``Qwen2_5OmniThinkerForConditionalGeneration``; ``processor`` a :class:`QwenOmniProcessor`;
    ``media`` the :class:`QwenMediaSettings` of its clips (``max_frames`` follows
    :meth:`set_num_frames`)."""

    #: LoRA (``r1omni_fast.model.lora``): the thinker's LLM is its text decoder and head; the
    #: vision blocks' MLPs and the audio tower's attention share the projections' names and stay out.
    LORA_LANGUAGE_MODEL = ("thinker.model.language_model", "thinker.lm_head")
    #: transformers' weight-conversion scoping (peft reads it): this wrapper adds no prefix of its own
    base_model_prefix = ""

    def __init__(self, thinker: nn.Module, processor: QwenOmniProcessor | None = None,
                 media: QwenMediaSettings | None = None) -> None:
        super().__init__()
        self.thinker = thinker
        self.processor = processor
        self.media = media or QwenMediaSettings()
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
            raise ValueError(f"num_frames={num_frames}: Qwen2.5-Omni needs at least 2 frames per clip")
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
            raise ValueError(f"{absent}: Qwen2.5-Omni has no {' / '.join(_NO_PART[p] for p in absent)}; "
                             f"choose from {sorted(TUNABLE_PARTS)}")
        unknown = sorted(set(names) - set(TUNABLE_PARTS))
        if unknown:
            raise ValueError(f"unknown trainable part(s) {unknown}: choose from {sorted(TUNABLE_PARTS)}")
        self.requires_grad_(False)
        for name in names:
            for module in TUNABLE_PARTS[name]:
                target = self.thinker.get_submodule(module) if not module.endswith("audio_bos_eos_token") else \
                    self.thinker.model.audio_tower.audio_bos_eos_token
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
        place of their ``<|VIDEO|>`` / ``<|AUDIO|>`` tokens. Raises ValueError when the counts of
        tokens and features differ."""
        inner = self.thinker.model
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
        return embeds

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
        positions = torch.ones(3, b, width, dtype=torch.long)
        offsets = torch.zeros(b, dtype=torch.long)
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
            positions[:, row, valid] = pos[:, 0].long()
            offsets[row] = int(delta.reshape(-1)[0])
            vi += int(video_rows[row])
            ai += int(audio_rows[row])
        return positions.to(ids.device), offsets.to(ids.device)

    # -------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                labels: torch.Tensor | None = None, logits_to_keep: int | torch.Tensor = 0,
                return_hidden_states: bool = False, inputs_embeds: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **media: Any) -> OmniOutput:
        """Training / scoring forward with `OmniModel.forward`'s contract (packed logits over the
        supervised positions with ``labels``; ``logits_to_keep`` otherwise). ``inputs_embeds``
        needs ``position_ids`` (3, B, L); with ``input_ids`` the media (``pixel_values_videos``,
        ``input_features``, ... as the processor returns them) are embedded and the positions
        computed by :meth:`rope_positions`."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("forward needs exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            batch = dict(media, input_ids=input_ids)
            if attention_mask is not None:
                batch["attention_mask"] = attention_mask
            embeds = self.embed_prompts(batch)
            if position_ids is None:
                position_ids = self.rope_positions(batch)[0]
        else:
            embeds = inputs_embeds
            if position_ids is None:
                raise ValueError("forward with inputs_embeds needs position_ids (3, B, L)")
        hidden = self.thinker.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                                   position_ids=position_ids.to(embeds.device),
                                                   use_cache=False).last_hidden_state
        lm_head = self.thinker.lm_head
        if labels is not None:
            next_labels = labels[:, 1:].to(hidden.device)
            selected = next_labels != IGNORE_INDEX
            hidden = hidden[:, :-1][selected]
            targets = next_labels[selected]
            if return_hidden_states:
                return OmniOutput(hidden_states=hidden, targets=targets)
            logits = lm_head(hidden)
            loss = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
            return OmniOutput(logits=logits, targets=targets, loss=loss)
        if isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        elif logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        if return_hidden_states:
            return OmniOutput(hidden_states=hidden)
        return OmniOutput(logits=lm_head(hidden))

    def generate(self, batch: dict, **kwargs: Any):
        """Prefix-shared sampling (`r1omni_fast.model.generation.generate`)."""
        from r1omni_fast.model.generation import generate

        return generate(self, batch, **kwargs)

    def completion_logits(self, prompts: dict, completion_ids: torch.Tensor, mask: torch.Tensor, group: int, *,
                          share_prefix: bool = True) -> torch.Tensor:
        """(N, T, V) logits of sampled completions (`r1omni_fast.model.generation.completion_logits`)."""
        from r1omni_fast.model.generation import completion_logits

        return completion_logits(self, prompts, completion_ids, mask, group, share_prefix=share_prefix)

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
        """Load a Qwen2.5-Omni folder (full, model_type "qwen2_5_omni", its ``thinker.`` weights) or a
        thinker-only one ("qwen2_5_omni_thinker") with its processor. Raises `CheckpointError`
        naming the file: another architecture, missing weights or keys (``strict``), missing or
        unusable processor files, a chat template without the media tokens."""
        from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

        from r1omni_fast.model.policy import model_type_of

        path = os.fspath(path)
        model_type = model_type_of(path)
        config_file = os.path.join(path, "config.json")
        if model_type == "qwen2_5_omni":
            config = Qwen2_5OmniConfig.from_pretrained(path).thinker_config
        elif model_type == "qwen2_5_omni_thinker":
            config = Qwen2_5OmniThinkerConfig.from_pretrained(path)
        else:
            raise CheckpointError(f"{config_file}: model_type {model_type!r} is not Qwen2.5-Omni ({' or '.join(MODEL_TYPES)})")
        if not any(os.path.isfile(os.path.join(path, f)) for f in ("model.safetensors", "model.safetensors.index.json")):
            raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json (the thinker's weights)")
        processor = QwenOmniProcessor.from_pretrained(path)
        thinker, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
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
                media = QwenMediaSettings(min_pixels=int(size["shortest_edge"]), max_pixels=int(size["longest_edge"]))
            else:
                media = QwenMediaSettings()
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


__all__ = ["QWEN_OMNI_SYSTEM", "ProcessorError", "QwenClip", "QwenClipCollator", "QwenMediaSettings",
           "QwenOmniProcessor", "QwenOmniThinkerPolicy", "load_qwen_batch", "load_qwen_clip"]
