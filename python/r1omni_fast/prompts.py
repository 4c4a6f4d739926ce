"""The prompt texts of the R1-Omni recipe, in one place: R1-Omni's question and format
instruction, the media placeholders, the GRPO and HumanOmni-SFT user turns. Plain strings, no
model: the data reader, every backend's processor, the trainers and evaluation import them.

Sources: R1-Omni's ``src/r1-v/src/open_r1/grpo.py`` (question, format instruction, GRPO turn),
its README's inference example, HumanOmni's ``preprocess_multimodal`` (the SFT turn).
"""

from __future__ import annotations

from typing import Sequence

#: R1-Omni's emotion question (DFEW / MAFW evaluation prompt).
R1_OMNI_QUESTION = ("As an emotional recognition expert; throughout the video, which emotion conveyed by the "
                    "characters is the most obvious to you?")
#: R1-Omni's format suffix.
FORMAT_SUFFIX = "Output the thinking process in <think> </think> and final emotion in <answer> </answer> tags."

#: The tags the rewards parse; every backend's processor ``decode`` keeps them even when they are special tokens.
REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")

#: The media a prompt may ask for, in the order their placeholders come.
MODALITIES = ("video", "audio")
#: HumanOmni's wrapping of each placeholder (``mm_use_x_start_end``): start marker, placeholder, end marker.
MEDIA_WRAP = {"video": ("<vi_start>", "<video>", "<vi_end>"), "audio": ("<au_start>", "<audio>", "<au_end>")}


def build_instruction(question: str = R1_OMNI_QUESTION, *, modalities: Sequence[str] = MODALITIES,
                      format_suffix: bool = True) -> str:
    """``"<video>\\n<audio>\\n" + question + " " + FORMAT_SUFFIX`` (placeholders per modality)."""
    head = "".join(f"<{m}>\n" for m in MODALITIES if m in modalities)
    return head + question + (" " + FORMAT_SUFFIX if format_suffix else "")


#: The instruction of R1-Omni's inference example (its README's ``inference.py --instruct``): its
#: training question, two spaces, the format instruction.
R1OMNI_INFER_INSTRUCTION = R1_OMNI_QUESTION + "  " + FORMAT_SUFFIX

#: The user-turn styles of GRPO (``GRPOConfig.prompt_style``).
PROMPT_STYLES = ("data", "r1omni")


def r1omni_grpo_instruction(question: str = R1_OMNI_QUESTION, *,
                            modalities: Sequence[str] = MODALITIES) -> str:
    """R1-Omni's GRPO user turn: ``"<video>\\n<audio>\\n" + question + "\\n" + FORMAT_SUFFIX``.

    R1-Omni's GRPO ignores the record's human turn: the text is its fixed question, a newline and
    the format instruction, and the media placeholders (wrapped in ``<vi_start>``/``<vi_end>``,
    ``<au_start>``/``<au_end>`` by the processor) come first, one line each. ``modalities`` keeps
    the placeholders of the modalities the record has, in the order video, audio.
    """
    head = "".join(f"<{m}>\n" for m in MODALITIES if m in modalities)
    return head + question + "\n" + FORMAT_SUFFIX


def humanomni_sft_turn(human: str) -> tuple[str, str]:
    """HumanOmni's SFT preprocessing of a human turn (``preprocess_multimodal`` with
    ``mm_use_x_start_end``, then the ``guided_prompt`` its BERT gate reads): ``(instruction,
    bert_text)``.

    For each of ``<audio>``, ``<video>``, ``<image>`` in that order, when present: every occurrence
    is removed, the text stripped, and the placeholder put in front on a line of its own. So
    ``"<video>\\n<audio>\\nQ"`` becomes ``"<video>\\n<audio>\\n\\n\\nQ"`` (three newlines before the
    question). The BERT text is that turn with ``<vi_start>``/``<au_start>`` wrapping, then
    ``<image>``, every newline and ``<video>`` removed: ``"<vi_start><vi_end><au_start><audio><au_end>Q"``.
    """
    text = human
    for token in ("<audio>", "<video>", "<image>"):
        if token in text:
            text = (token + "\n" + text.replace(token, "").strip()).strip()
    wrapped = text
    for start, token, end in MEDIA_WRAP.values():
        wrapped = wrapped.replace(token, start + token + end)
    bert = wrapped.replace("<image>", "").replace("\n", "").replace("<video>", "")
    return text, bert


def asks_for_format(instruction: str) -> bool:
    """Whether a prompt names both the ``<think>`` and the ``<answer>`` tags (what the format
    reward checks)."""
    return "<think>" in instruction and "<answer>" in instruction


def normalise_modalities(modalities: str | Sequence[str]) -> tuple[str, ...]:
    """``"audio,video"`` or a sequence -> the modalities in :data:`MODALITIES` order. Raises
    ValueError naming the input for an empty list or a name other than video / audio."""
    items = modalities.split(",") if isinstance(modalities, str) else list(modalities)
    items = [m.strip() for m in items if m.strip()]
    bad = sorted(set(items) - set(MODALITIES))
    if bad or not items:
        raise ValueError(f"modalities {list(items)!r}: use 'video', 'audio' or both")
    return tuple(m for m in MODALITIES if m in items)
