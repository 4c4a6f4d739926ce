"""A complete tiny checkpoint of the HumanOmni architecture, built locally (no downloads):
the embedded default for the demo and the tests.

Same layout and geometry as HumanOmni-0.5B (8 frames at 224/16 -> 392 visual tokens, 128-mel
30 s audio -> 500 audio tokens), tiny widths (LLM hidden 64, 2 layers; towers width 32), a
byte-level BPE tokenizer and a WordPiece BERT tokenizer trained here on a small fixed corpus.

Towers: random by default. ``pretrain_towers=True`` (``r1omni-fast model tiny --pretrain-towers``)
first trains the vision and audio towers to tell apart the synthetic generator's faces and voices
(:func:`pretrain_towers_on_cues`: seconds on a CPU, the same weights for the same seed on the same
machine and torch thread count), so that their features separate classes the way pretrained SigLIP and Whisper features
separate real faces and voices. The LLM, projectors and BERT gate stay as initialised.
"""

from __future__ import annotations

import os

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, PreTrainedTokenizerFast, Qwen2Config, SiglipVisionConfig, WhisperConfig

from r1omni_fast.model.humanomni.config import OmniConfig
from r1omni_fast.model.humanomni.processor import OmniProcessor
from r1omni_fast.model.tiny import byte_level_bpe, corpus, seeded, write_checkpoint_folder

#: Special tokens of the tiny LLM tokenizer, in id order.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<vi_start>", "<video>", "<vi_end>",
                  "<au_start>", "<audio>", "<au_end>", "<think>", "</think>", "<answer>", "</answer>"]

#: Qwen2's chat template (default system prompt, ``<|im_start|>role\n...<|im_end|>\n`` turns).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_llm_tokenizer(vocab_size: int = 640) -> PreTrainedTokenizerFast:
    tok = byte_level_bpe(SPECIAL_TOKENS, vocab_size)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=32768)


def build_bert_tokenizer() -> PreTrainedTokenizerFast:
    """WordPiece tokenizer over the corpus: specials, then every character (and its ``##`` form),
    then every whole word, each group sorted (built directly so the vocab is deterministic)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    words = sorted({w for line in corpus() for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(line))})
    chars = sorted({c for w in words for c in w})
    vocab = {tok: i for i, tok in enumerate(specials + chars + [f"##{c}" for c in chars] +
                                           [w for w in words if len(w) > 1])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = splitter
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)


def tiny_config(vocab_size: int, bert_vocab_size: int) -> OmniConfig:
    """Tiny widths, HumanOmni-0.5B geometry (224/16 frames, 128 mels x 3000, 8 frames)."""
    llm = Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                      use_sliding_window=False, max_window_layers=2)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=224, patch_size=16, layer_norm_eps=1e-6)
    audio = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                          decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=128,
                          max_source_positions=1500, vocab_size=64, classifier_proj_size=16, num_labels=2,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
    bert = BertConfig(vocab_size=bert_vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)
    return OmniConfig(llm, vision=vision, audio=audio, bert=bert, mm_hidden_size=32, audio_hidden_size=32,
                      bert_gate_hidden_size=64, mm_vision_tower="tiny-siglip", mm_audio_tower="tiny-whisper")


def build_tiny_model(seed: int = 0, *, pretrain_towers: bool = False):
    """The tiny `OmniModel` with its processor, initialised from ``seed`` (CPU, float32); with
    ``pretrain_towers``, its towers then pretrained by :func:`pretrain_towers_on_cues` (same seed)."""
    from r1omni_fast.model.humanomni.model import OmniModel

    tokenizer = build_llm_tokenizer()
    bert_tokenizer = build_bert_tokenizer()
    config = tiny_config(len(tokenizer), len(bert_tokenizer))
    model = seeded(seed, lambda: OmniModel(config))
    model.processor = OmniProcessor(tokenizer, bert_tokenizer, num_video_tokens=config.num_video_tokens(),
                                    num_audio_tokens=config.num_audio_tokens(),
                                    use_x_start_end=config.mm_use_x_start_end)
    if pretrain_towers:
        pretrain_towers_on_cues(model, seed=seed)
    return model.eval()


def build_tiny_checkpoint(out_dir: str | os.PathLike, seed: int = 0, *, pretrain_towers: bool = False) -> str:
    """Write the tiny checkpoint to ``out_dir`` (same files for the same seed and options on the
    same machine and thread count); returns the path. ``pretrain_towers``: see :func:`pretrain_towers_on_cues`."""
    return write_checkpoint_folder(out_dir, lambda: build_tiny_model(seed, pretrain_towers=pretrain_towers))


# ----------------------------------------------------------------------------- tower pretraining

#: Settings of :func:`pretrain_towers_on_cues`: examples drawn, optimizer steps per tower, batch size,
#: AdamW learning rate, and the audio window trained on (mel frames; the clips last 1.5 s).
TOWER_PRETRAINING = {"examples": 128, "steps": 40, "batch_size": 16, "learning_rate": 3e-3,
                     "audio_frames": 300}


def vision_features(tower, pixel_values: torch.Tensor, select_layer: int) -> torch.Tensor:
    """``tower(pixel_values, output_hidden_states=True).hidden_states[select_layer]`` without
    running the layers above ``select_layer``: (N, 3, S, S) -> (N, patches, C)."""
    layers = tower.encoder.layers
    keep = select_layer % (len(layers) + 1)  # hidden_states[0] is the embeddings' output
    h = tower.embeddings(pixel_values)
    for layer in layers[:keep]:
        h = layer(h, None)
        h = h[0] if isinstance(h, tuple) else h
    return h


def audio_features(encoder, mel: torch.Tensor) -> torch.Tensor:
    """``WhisperEncoder.last_hidden_state`` of the first T = mel.shape[-1] // 2 positions for a
    mel window of any even length (N, n_mels, 2T) -> (N, T, C); the full 3000-frame window gives
    exactly ``encoder(mel).last_hidden_state``."""
    import torch.nn.functional as F

    h = F.gelu(encoder.conv2(F.gelu(encoder.conv1(mel)))).permute(0, 2, 1)
    h = h + encoder.embed_positions.weight[: h.shape[1]]
    for layer in encoder.layers:
        h = layer(h, None)
        h = h[0] if isinstance(h, tuple) else h
    return encoder.layer_norm(h)


def pretrain_towers_on_cues(model, *, seed: int = 0, steps: int | None = None) -> dict[str, float]:
    """Train ``model``'s vision and audio towers in place to classify the synthetic generator's
    cues; returns each tower's final training loss.

    Data: ``TOWER_PRETRAINING["examples"]`` pictures and sounds of
    :func:`r1omni_fast.data.synthetic.cue_examples` (every class the generator draws, plus "no
    face" / "silence"; never the clips of a dataset), preprocessed as the model's media are (PIL
    bicubic to the tower's image size, mean = std = 0.5; Whisper log-mel). Objective:
    cross-entropy of a linear head (discarded afterwards) on the tokens the model reads, averaged:
    the selected vision layer over all patches, and the audio encoder's output over the positions
    the 1.5-s clips cover; the audio tower trains on the first ``audio_frames`` mel frames of its
    window (the rest of the 30 s is the same silence), which is ~10x cheaper than the whole
    window. AdamW, ``steps`` per tower (default ``TOWER_PRETRAINING["steps"]``). Deterministic for
    a seed on one machine and torch thread count (float sums depend on the thread count); the
    global torch RNG is left as it was. The towers end frozen (``requires_grad``
    False) and in eval mode, as HumanOmni's pretrained towers are.
    """
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    from r1omni_fast.data.synthetic import cue_examples
    from r1omni_fast.media import whisper_log_mel

    cfg = TOWER_PRETRAINING
    steps = cfg["steps"] if steps is None else steps
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    size = model.config.vision.image_size
    n_mels = model.config.audio.num_mel_bins
    ex = cue_examples(cfg["examples"], seed=seed)
    pixels = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC), np.float32)
                       for f in ex.frames]).transpose(0, 3, 1, 2)
    pixels = torch.from_numpy(np.ascontiguousarray((pixels / 255.0 - 0.5) / 0.5, dtype=np.float32))
    mel = torch.from_numpy(np.stack([whisper_log_mel(s, n_mels)[:, :cfg["audio_frames"]] for s in ex.sounds]))
    covered = -(-ex.sounds.shape[1] * 50 // 16000)  # Whisper encoder positions per second: 50
    select = model.config.mm_vision_select_layer
    vision, encoder = model.vision_tower, model.audio_tower.encoder
    jobs = [
        ("vision", vision, lambda x: vision_features(vision, x, select).mean(1), pixels, ex.frame_labels),
        ("audio", encoder, lambda x: audio_features(encoder, x)[:, :covered].mean(1), mel, ex.sound_labels),
    ]
    losses = {}
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for name, tower, features, inputs, labels in jobs:
            targets = torch.from_numpy(labels)
            tower.train()
            trainable = [p for n, p in tower.named_parameters() if "embed_positions" not in n]
            for p in trainable:
                p.requires_grad_(True)
            width = model.config.vision.hidden_size if name == "vision" else model.config.audio.d_model
            head = torch.nn.Linear(width, len(ex.labels) + 1)
            opt = torch.optim.AdamW(trainable + list(head.parameters()), lr=cfg["learning_rate"],
                                    weight_decay=0.0)
            loss = torch.tensor(float("nan"))
            for _ in range(steps):
                idx = torch.randint(len(targets), (cfg["batch_size"],))
                loss = F.cross_entropy(head(features(inputs[idx])), targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            tower.requires_grad_(False)
            tower.eval()
            losses[name] = float(loss.detach())
    finally:
        torch.random.set_rng_state(state)
    return losses
