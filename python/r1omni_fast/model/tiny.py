"""Tiny checkpoints, built locally (no downloads): the text every backend's tiny tokenizer is
trained on and the atomic folder writer. The builders live in each backend's folder
(``r1omni_fast.model.humanomni.tiny``, ``r1omni_fast.model.qwen_omni.tiny``); the registry names
them (``r1omni_fast.model.policy.BACKENDS``, ``r1omni-fast model tiny --arch``).
"""

from __future__ import annotations

import os
from typing import Any, Callable

from r1omni_fast.labels import DFEW, MAFW, RAVDESS
from r1omni_fast.prompts import FORMAT_SUFFIX, R1_OMNI_QUESTION

#: Every label of the built-in label sets (DFEW, MAFW, RAVDESS): the tiny tokenizers hold each as one token.
EMOTION_LABELS = sorted(set(DFEW) | set(MAFW) | set(RAVDESS))

_REASONS = [
    "the face shows {cue} and the voice sounds {tone}",
    "the speaker looks {cue} while the tone of voice is {tone}",
    "in the video the person appears {cue}; the audio is {tone}",
    "facial expression: {cue}. vocal cues: {tone}.",
]
_CUES = ["raised eyebrows", "a wide smile", "a frown", "tears", "clenched teeth", "a blank stare", "wide eyes"]
_TONES = ["loud", "soft", "trembling", "flat", "cheerful", "sharp", "slow"]


def corpus() -> list[str]:
    """The fixed training text of the tiny tokenizers (instructions, labels, short rationales)."""
    lines = [R1_OMNI_QUESTION, FORMAT_SUFFIX, "You are a helpful assistant.", "system", "user", "assistant"]
    for i, label in enumerate(EMOTION_LABELS):
        for j, template in enumerate(_REASONS):
            reason = template.format(cue=_CUES[(i + j) % len(_CUES)], tone=_TONES[(i * 3 + j) % len(_TONES)])
            lines.append(f"<think>{reason}, so the emotion is {label}.</think>\n<answer>{label}</answer>")
            lines.append(f"The person seems {label} because {reason}.")
    return lines



def seeded(seed: int, build: Callable[[], Any]) -> Any:
    """``build()`` run with the global torch RNG seeded with ``seed`` (its weights' initialisation),
    the RNG's state restored afterwards."""
    import torch

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return build()
    finally:
        torch.random.set_rng_state(state)


def write_checkpoint_folder(out_dir: str | os.PathLike, build: Callable[[], Any]) -> str:
    """``build()``'s model saved (``save_pretrained``) as the folder ``out_dir``: written into a
    temporary sibling created before ``build`` runs (so a read-only or missing parent fails at
    once, with OSError) and renamed into place (``r1omni_fast.atomic.atomic_folder``); a failure
    or interrupt leaves ``out_dir`` as it was. A folder already at ``out_dir`` is replaced whole.
    Returns the path."""
    from r1omni_fast.atomic import atomic_folder

    out_dir = os.fspath(out_dir)
    with atomic_folder(out_dir) as tmp:
        build().save_pretrained(os.fspath(tmp))
    return out_dir


def byte_level_bpe(special_tokens: list[str], vocab_size: int, added: tuple[str, ...] = ()) -> Any:
    """A ``tokenizers.Tokenizer``: byte-level BPE trained on :func:`corpus` with
    ``special_tokens`` first (in id order), then the ``added`` tokens, then every one of
    :data:`EMOTION_LABELS` as a single-word token (same vocabulary for the same arguments)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    if added:
        tok.add_tokens([AddedToken(t, normalized=False) for t in added])
    tok.add_tokens([AddedToken(label, single_word=True, normalized=False) for label in EMOTION_LABELS])
    return tok
