"""A complete tiny Qwen3-Omni MoE thinker checkpoint, built locally (no downloads), for tests and
trials of the Qwen3-Omni backend: Qwen3-Omni's geometry (vision patch 16, temporal patch 2, merge
2, DeepStack features into the first two decoder layers; 128-mel audio encoder with 100-frame
chunks; TMRoPE with 13 positions per second, ``mrope_section`` summing to head_dim / 2; MoE
decoder layers) at tiny widths (text hidden 64, 2 layers, 4 experts, top 2; towers width 32;
~0.35 M parameters), a byte-level BPE tokenizer holding Qwen3-Omni's special media tokens
(``<|vision_start|>`` ... ``<|audio_pad|>``), a chat template writing Qwen3-Omni's media items
(no default system turn), and a video processor with a small pixel budget (4 to 16 merged tokens
per frame pair) so that CPU runs take seconds.
"""

from __future__ import annotations

import os

from r1omni_fast.model.qwen_omni import tiny as qwen_tiny
from r1omni_fast.model.tiny import seeded

#: Qwen3-Omni's chat and media special tokens (the tiny tokenizer's ids 0 ... 10).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<|audio_start|>", "<|audio_end|>",
                  "<|audio_pad|>"]
#: Qwen3-Omni's tokenizer attributes for its media tokens.
EXTRA_SPECIAL_TOKENS = {"image_token": "<|image_pad|>", "audio_token": "<|audio_pad|>", "video_token": "<|video_pad|>",
                        "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
                        "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"}

#: A chat template in Qwen3-Omni's layout: ChatML turns, media items as
#: ``<|vision_start|><|video_pad|><|vision_end|>`` / ``<|audio_start|><|audio_pad|><|audio_end|>``.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'audio' or 'audio' in content %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Per-frame pixel budget of the tiny checkpoint's video processor (min, max): 4 to 16 merged tokens.
TINY_PIXELS = (4 * 32 * 32, 16 * 32 * 32)


def build_tokenizer(vocab_size: int = 640):
    """Byte-level BPE over the tiny corpus with Qwen3-Omni's special tokens and media-token
    attributes; ``<think>``/``</think>``/``<answer>``/``</answer>`` and the emotion labels added."""
    return qwen_tiny.build_tokenizer(vocab_size, SPECIAL_TOKENS, EXTRA_SPECIAL_TOKENS)


def build_processor():
    """``Qwen3OmniMoeProcessor`` with the tiny tokenizer, Qwen2-VL's video / image processors at
    patch 16 (tiny pixel budget) and a 128-mel Whisper feature extractor."""
    from transformers import Qwen3OmniMoeProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    low, high = TINY_PIXELS
    video = Qwen2VLVideoProcessor(size={"shortest_edge": low, "longest_edge": high}, patch_size=16,
                                  temporal_patch_size=2, merge_size=2)
    image = Qwen2VLImageProcessor(size={"shortest_edge": low, "longest_edge": high}, patch_size=16, merge_size=2)
    return Qwen3OmniMoeProcessor(image_processor=image, video_processor=video,
                                 feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=build_tokenizer(),
                                 chat_template=CHAT_TEMPLATE)


def tiny_thinker_config(tokenizer):
    """``Qwen3OmniMoeThinkerConfig`` at tiny widths whose media token ids are the tokenizer's:
    2 MoE decoder layers (4 experts, top 2), head_dim 16 with ``mrope_section`` [2, 3, 3] (sums
    to 8 = head_dim / 2), vision and audio output width = the text hidden size (64), DeepStack
    features from both vision blocks, ``position_id_per_seconds`` 13 (the processor's)."""
    from transformers import Qwen3OmniMoeThinkerConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen3OmniMoeThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                          output_dim=64, n_window=50, n_window_infer=100, downsample_hidden_size=16,
                          max_source_positions=1500),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                           num_position_embeddings=64, deepstack_visual_indexes=[0, 1]),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                         moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1,
                         norm_topk_prob=True, tie_word_embeddings=False, pad_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"]),
        audio_token_id=ids["<|audio_pad|>"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        audio_start_token_id=ids["<|audio_start|>"], audio_end_token_id=ids["<|audio_end|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        position_id_per_seconds=13, pad_token_id=ids["<|endoftext|>"],
    )


def build_tiny_qwen3_model(seed: int = 0):
    """The tiny `Qwen3OmniThinkerPolicy` (CPU, float32) initialised from ``seed`` (the global
    torch RNG is left as it was)."""
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

    from r1omni_fast.media.qwen import QwenMediaSettings
    from r1omni_fast.model.qwen3_omni.policy import MEDIA_DEFAULTS, Qwen3OmniThinkerPolicy
    from r1omni_fast.model.qwen3_omni.processor import Qwen3OmniProcessor

    hf = build_processor()
    config = tiny_thinker_config(hf.tokenizer)
    thinker = seeded(seed, lambda: Qwen3OmniMoeThinkerForConditionalGeneration(config))
    low, high = TINY_PIXELS
    media = QwenMediaSettings(**{**MEDIA_DEFAULTS, "min_pixels": low, "max_pixels": high, "max_frames": 8})
    return Qwen3OmniThinkerPolicy(thinker.float().eval(), Qwen3OmniProcessor(hf, n_window=config.audio_config.n_window),
                                  media).eval()


def build_tiny_qwen3_checkpoint(out_dir: str | os.PathLike, seed: int = 0) -> str:
    """Write the tiny thinker-only checkpoint to ``out_dir``; returns the path."""
    out_dir = os.fspath(out_dir)
    build_tiny_qwen3_model(seed).save_pretrained(out_dir)
    return out_dir
