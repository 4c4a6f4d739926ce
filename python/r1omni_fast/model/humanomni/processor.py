"""Prompt building: R1-Omni's instruction, the checkpoint's chat template, multimodal
placeholders expanded to -201 / -202 runs, optional assistant targets -> labels, batching.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import torch

from r1omni_fast.model.humanomni.config import OmniConfig
from r1omni_fast.model.types import TagKeepingDecoder, AUDIO_TOKEN_INDEX, IGNORE_INDEX, VIDEO_TOKEN_INDEX
from r1omni_fast.model.types import pad_rows as _pad
from r1omni_fast.prompts import MEDIA_WRAP as _WRAP
from r1omni_fast.prompts import MODALITIES, normalise_modalities

_PLACEHOLDER = re.compile(r"(<video>|<audio>)")
_MARKERS = re.compile(r"<vi_start>|<vi_end>|<au_start>|<au_end>|<video>|<audio>")

#: The chat-template renderings (``GRPOConfig.chat_template``).
CHAT_TEMPLATES = ("checkpoint", "qwen2vl")
#: The system turn Qwen2-VL's chat template adds when the conversation has none.
QWEN2VL_SYSTEM = "You are a helpful assistant."


def qwen2vl_chat(user_text: str, *, video: bool) -> str:
    """The prompt string Qwen2-VL's chat template renders for one user turn with a generation
    prompt: its default system turn, then the user turn whose content is a video item (rendered
    ``<|vision_start|><|video_pad|><|vision_end|>``, when ``video``) followed by ``user_text``."""
    vision = "<|vision_start|><|video_pad|><|vision_end|>" if video else ""
    return (f"<|im_start|>system\n{QWEN2VL_SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{vision}{user_text}<|im_end|>\n<|im_start|>assistant\n")


class OmniProcessor(TagKeepingDecoder):
    """Turns instructions (+ optional targets) and media tensors into a model batch.

    ``__call__`` returns a dict with ``input_ids`` / ``attention_mask`` (padded, ``padding_side``),
    ``labels`` when targets are given (-100 over prompt, features and padding), ``pixel_values``
    (clips, k, 3, S, S) and ``bert_input_ids`` / ``bert_attention_mask`` for rows with video,
    ``audio_features`` (clips, n_mels, 3000) for rows with audio. The BERT gate reads each
    instruction without its placeholders (:meth:`bert_text`), or ``bert_texts[i]`` when given (one
    per instruction, e.g. :func:`humanomni_sft_turn`'s). ``chat_template`` as in :meth:`prompt_text`.

    A target is followed by ``<|im_end|>`` (the token generation stops at), or with
    ``template_turn_end`` by whatever the checkpoint's chat template writes after an assistant turn
    (:meth:`assistant_turn_end`, ``"<|im_end|>\n"`` for Qwen2's): HumanOmni's SFT labels every
    token of the rendered conversation after the prompt, that newline included.
    """

    #: Placeholder ids of the media runs in ``input_ids``.
    media_token_ids = (VIDEO_TOKEN_INDEX, AUDIO_TOKEN_INDEX)

    #: the chat-template renderings it supports (``GRPOConfig.chat_template``)
    chat_templates: tuple[str, ...] = CHAT_TEMPLATES

    def __init__(self, tokenizer, bert_tokenizer, *, num_video_tokens: int, num_audio_tokens: int,
                 use_x_start_end: bool = True) -> None:
        self.tokenizer = tokenizer
        self.bert_tokenizer = bert_tokenizer
        self.num_video_tokens = num_video_tokens
        self.num_audio_tokens = num_audio_tokens
        self.use_x_start_end = use_x_start_end
        self._skipped_ids: frozenset | None = None
        self._turn_end: str | None = None
        if tokenizer.pad_token_id is None:
            raise ValueError("the LLM tokenizer has no pad token")

    @classmethod
    def from_pretrained(cls, path: str, bert_folder: str, config: OmniConfig) -> OmniProcessor | None:
        """Tokenizer from the checkpoint folder and BERT tokenizer from ``bert_folder``;
        None when the checkpoint has no tokenizer files."""
        from transformers import AutoTokenizer

        if not any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
            return None
        # config= keeps AutoTokenizer from reading config.json, whose model_type it does not know
        return cls(AutoTokenizer.from_pretrained(path, config=config.llm),
                   AutoTokenizer.from_pretrained(bert_folder, config=config.bert),
                   num_video_tokens=config.num_video_tokens(), num_audio_tokens=config.num_audio_tokens(),
                   use_x_start_end=config.mm_use_x_start_end)

    def save_pretrained(self, path: str) -> None:
        self.tokenizer.save_pretrained(path)
        self.bert_tokenizer.save_pretrained(os.path.join(path, "bert"))

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end an assistant turn: ``<|im_end|>`` and the tokenizer's EOS."""
        ids = {self.tokenizer.convert_tokens_to_ids("<|im_end|>"), self.tokenizer.eos_token_id}
        unk = self.tokenizer.unk_token_id
        return sorted(i for i in ids if i is not None and i != unk)

    def assistant_turn_end(self) -> str:
        """What the checkpoint's chat template writes after an assistant turn's content (the text
        between the content and the end of the rendered conversation), e.g. ``"<|im_end|>\n"``.
        Raises ValueError when the template does not render the content verbatim."""
        if self._turn_end is None:
            marker = "\x00r1omni-fast target\x00"
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}],
                tokenize=False, add_generation_prompt=False)
            if text.count(marker) != 1:
                raise ValueError("the checkpoint's chat template does not render an assistant turn verbatim; "
                                 "its end cannot be found")
            self._turn_end = text.split(marker, 1)[1]
        return self._turn_end

    # ------------------------------------------------------------------ text
    def prompt_text(self, instruction: str, modalities: Sequence[str] = MODALITIES,
                    chat_template: str = "checkpoint") -> str:
        """The chat-templated prompt string with wrapped placeholders for the kept modalities.

        ``chat_template``: "checkpoint" (the tokenizer's own template) or "qwen2vl" (the rendering
        of Qwen2-VL's template that R1-Omni's GRPO used, :func:`qwen2vl_chat`; the video item is
        present when the prompt keeps ``<video>``). Raises ValueError for another value.
        """
        if chat_template not in CHAT_TEMPLATES:
            raise ValueError(f"chat_template={chat_template!r}: use one of {', '.join(CHAT_TEMPLATES)}")
        text = instruction
        for m in MODALITIES:
            start, token, end = _WRAP[m]
            text = text.replace(start, "").replace(end, "")
            if m not in modalities:
                text = re.sub(re.escape(token) + r"\n?", "", text)
            elif self.use_x_start_end:
                text = text.replace(token, start + token + end)
        if chat_template == "qwen2vl":
            return qwen2vl_chat(text, video="<video>" in text)
        messages = [{"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @staticmethod
    def bert_text(instruction: str) -> str:
        """What the BERT gate reads: the instruction without placeholders."""
        return " ".join(_MARKERS.sub(" ", instruction).split())

    def _encode_prompt(self, prompt: str) -> list[int]:
        ids: list[int] = []
        for piece in _PLACEHOLDER.split(prompt):
            if piece == "<video>":
                ids += [VIDEO_TOKEN_INDEX] * self.num_video_tokens
            elif piece == "<audio>":
                ids += [AUDIO_TOKEN_INDEX] * self.num_audio_tokens
            elif piece:
                ids += self.tokenizer.encode(piece, add_special_tokens=False)
        return ids

    def __call__(self, instructions: Sequence[str], targets: Sequence[str] | None = None, *,
                 pixel_values: torch.Tensor | Sequence[torch.Tensor] | None = None,
                 audio_features: torch.Tensor | Sequence[torch.Tensor] | None = None,
                 modalities: str | Sequence[str] = MODALITIES, padding_side: str = "left",
                 chat_template: str = "checkpoint", bert_texts: Sequence[str] | None = None,
                 template_turn_end: bool = False) -> dict:
        if isinstance(instructions, str):
            raise TypeError("instructions must be a list of strings (one per row)")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}: use 'left' or 'right'")
        keep = normalise_modalities(modalities)
        if targets is not None and len(targets) != len(instructions):
            raise ValueError(f"{len(instructions)} instructions but {len(targets)} targets")
        if bert_texts is not None and len(bert_texts) != len(instructions):
            raise ValueError(f"{len(instructions)} instructions but {len(bert_texts)} bert_texts")
        rows, label_rows = [], []
        has = {"video": [], "audio": []}
        turn_end = self.assistant_turn_end() if targets is not None and template_turn_end else "<|im_end|>"
        for i, instruction in enumerate(instructions):
            prompt_ids = self._encode_prompt(self.prompt_text(instruction, keep, chat_template))
            for m, idx in (("video", VIDEO_TOKEN_INDEX), ("audio", AUDIO_TOKEN_INDEX)):
                has[m].append(idx in prompt_ids)
            if targets is not None:
                target_ids = self.tokenizer.encode(targets[i] + turn_end, add_special_tokens=False)
                rows.append(prompt_ids + target_ids)
                label_rows.append([IGNORE_INDEX] * len(prompt_ids) + target_ids)
            else:
                rows.append(prompt_ids)
        batch = _pad(rows, self.tokenizer.pad_token_id, padding_side)
        if targets is not None:
            batch["labels"] = _pad(label_rows, IGNORE_INDEX, padding_side)["input_ids"]
        if any(has["video"]):
            batch["pixel_values"] = _select(pixel_values, has["video"], "pixel_values", "<video>")
            texts = bert_texts if bert_texts is not None else [self.bert_text(t) for t in instructions]
            bert = self.bert_tokenizer([t for t, v in zip(texts, has["video"]) if v],
                                       return_tensors="pt", padding=True, truncation=True)
            batch["bert_input_ids"] = bert["input_ids"]
            batch["bert_attention_mask"] = bert["attention_mask"]
        if any(has["audio"]):
            batch["audio_features"] = _select(audio_features, has["audio"], "audio_features", "<audio>")
        return batch


def _select(values, rows_with: list[bool], name: str, token: str) -> torch.Tensor:
    """One clip per row that holds ``token``: a stacked tensor (rows, ...) or a list per row."""
    if values is None:
        raise ValueError(f"{sum(rows_with)} prompt(s) hold {token} but {name} was not given")
    if isinstance(values, torch.Tensor) and values.shape[0] == len(rows_with):
        clips = [values[i] for i, keep in enumerate(rows_with) if keep]
    elif len(values) == sum(rows_with):
        clips = list(values)
    elif len(values) == len(rows_with):
        clips = [values[i] for i, keep in enumerate(rows_with) if keep]
    else:
        raise ValueError(f"{name} has {len(values)} clips; expected one per row ({len(rows_with)}) "
                         f"or one per row holding {token} ({sum(rows_with)})")
    return torch.stack([torch.as_tensor(c, dtype=torch.float32) for c in clips])
