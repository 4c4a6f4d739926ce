"""A complete tiny Qwen2.5-Omni thinker checkpoint, built locally (no downloads), for tests and
trials of the Qwen backend: Qwen2.5-Omni's geometry (patch 14, temporal patch 2, merge 2, 128-mel
Whisper features, TMRoPE with 25 positions per second and 2-second chunks) at tiny widths (text
hidden 64, 2 layers; towers width 32; ~0.4 M parameters), a byte-level BPE tokenizer trained on the
tiny corpus that holds Qwen2.5-Omni's special tokens in their order (``<|endoftext|>`` ...
``<|VIDEO|>``), Qwen2.5-Omni's chat template, and a video processor with a small pixel budget
(4 to 16 merged tokens per frame pair) so that CPU runs take seconds.
"""

from __future__ import annotations

import os


from r1omni_fast.model.tiny import byte_level_bpe, seeded

#: Qwen2.5-Omni's special tokens in id order (151643 ... 151656 there; 0 ... 13 here).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                  "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>",
                  "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>"]
#: Qwen2.5-Omni's tokenizer attributes for its media tokens.
EXTRA_SPECIAL_TOKENS = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
                        "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
                        "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}

#: Qwen2.5-Omni's chat template (its ``chat_template.jinja``).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: {% endif %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Per-frame pixel budget of the tiny checkpoint's video processor (min, max): 4 to 16 merged tokens.
TINY_PIXELS = (4 * 28 * 28, 16 * 28 * 28)


def build_tokenizer(vocab_size: int = 640, special_tokens: list[str] = SPECIAL_TOKENS,
                    media_tokens: dict[str, str] = EXTRA_SPECIAL_TOKENS):
    """Byte-level BPE over the tiny corpus with ``special_tokens`` (Qwen2.5-Omni's) and the
    media-token attributes ``media_tokens``; ``<think>``/``</think>``/``<answer>``/``</answer>``
    and the emotion labels added."""
    from transformers import PreTrainedTokenizerFast

    tok = byte_level_bpe(list(special_tokens), vocab_size, added=("<think>", "</think>", "<answer>", "</answer>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=32768, extra_special_tokens=dict(media_tokens))


def build_processor():
    """``Qwen2_5OmniProcessor`` with the tiny tokenizer, Qwen2-VL's video / image processors (tiny
    pixel budget) and a 128-mel Whisper feature extractor."""
    from transformers import Qwen2_5OmniProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    low, high = TINY_PIXELS
    video = Qwen2VLVideoProcessor(size={"shortest_edge": low, "longest_edge": high}, temporal_patch_size=2)
    image = Qwen2VLImageProcessor(size={"shortest_edge": low, "longest_edge": high})
    return Qwen2_5OmniProcessor(image_processor=image, video_processor=video,
                                feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=build_tokenizer(),
                                chat_template=CHAT_TEMPLATE)


def tiny_thinker_config(tokenizer):
    """``Qwen2_5OmniThinkerConfig`` at tiny widths whose media token ids are the tokenizer's."""
    from transformers import Qwen2_5OmniThinkerConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                          output_dim=64, n_window=100, max_source_positions=1500),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], window_size=112, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, in_channels=3),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                         tie_word_embeddings=False, pad_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"]),
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"], audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"], vision_end_token_id=ids["<|vision_eos|>"],
        position_id_per_seconds=25, seconds_per_chunk=2, pad_token_id=ids["<|endoftext|>"],
    )


def build_tiny_qwen_model(seed: int = 0):
    """The tiny `QwenOmniThinkerPolicy` (CPU, float32) initialised from ``seed`` (the global
    torch RNG is left as it was)."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from r1omni_fast.media.qwen import QwenMediaSettings
    from r1omni_fast.model.qwen_omni.policy import QwenOmniThinkerPolicy
    from r1omni_fast.model.qwen_omni.processor import QwenOmniProcessor

    hf = build_processor()
    config = tiny_thinker_config(hf.tokenizer)
    thinker = seeded(seed, lambda: Qwen2_5OmniThinkerForConditionalGeneration(config))
    low, high = TINY_PIXELS
    media = QwenMediaSettings(min_pixels=low, max_pixels=high, max_frames=8)
    return QwenOmniThinkerPolicy(thinker.float().eval(), QwenOmniProcessor(hf), media).eval()


def build_tiny_qwen_checkpoint(out_dir: str | os.PathLike, seed: int = 0) -> str:
    """Write the tiny thinker-only checkpoint to ``out_dir``; returns the path."""
    out_dir = os.fspath(out_dir)
    build_tiny_qwen_model(seed).save_pretrained(out_dir)
    return out_dir
