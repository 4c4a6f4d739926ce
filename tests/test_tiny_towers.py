"""`r1omni-fast model tiny --pretrain-towers`: towers that tell the synthetic cues apart, nothing else
changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def held_out():
    """Tower inputs of 36 cue examples from a seed the pretraining never uses (9 classes)."""
    from PIL import Image

    from r1omni_fast.data.synthetic import cue_examples
    from r1omni_fast.media import whisper_log_mel

    ex = cue_examples(36, seed=1234)
    px = np.stack([np.asarray(Image.fromarray(f).resize((224, 224), Image.BICUBIC), np.float32)
                   for f in ex.frames]).transpose(0, 3, 1, 2)
    pixels = torch.from_numpy(np.ascontiguousarray((px / 255.0 - 0.5) / 0.5))
    mel = torch.from_numpy(np.stack([whisper_log_mel(s) for s in ex.sounds]))
    return pixels, torch.from_numpy(ex.frame_labels), mel, torch.from_numpy(ex.sound_labels)


def class_mean_cosine(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cosine similarity between the class means (1 = the classes look alike)."""
    means = torch.stack([features[labels == k].mean(0) for k in labels.unique()])
    cos = F.cosine_similarity(means[:, None], means[None], dim=-1)
    return float(cos[~torch.eye(len(means), dtype=torch.bool)].mean())


def tower_separation(model, held_out):
    """(vision, audio) class-mean cosine of the features the model reads, on the full inputs."""
    pixels, frame_labels, mel, sound_labels = held_out
    with torch.no_grad():
        v = model.vision_tower(pixels, output_hidden_states=True).hidden_states[model.config.mm_vision_select_layer]
        a = model.audio_tower.encoder(mel).last_hidden_state[:, :75]  # the 1.5 s the sounds cover
    return class_mean_cosine(v.mean(1), frame_labels), class_mean_cosine(a.mean(1), sound_labels)


def test_the_pretraining_forwards_equal_the_towers(held_out):
    from r1omni_fast.model.humanomni.tiny import audio_features, build_tiny_model, vision_features

    model = build_tiny_model(0)
    pixels, _, mel, _ = held_out
    with torch.no_grad():
        for select in (-2, 1):
            expected = model.vision_tower(pixels[:2], output_hidden_states=True).hidden_states[select]
            torch.testing.assert_close(vision_features(model.vision_tower, pixels[:2], select), expected)
        expected = model.audio_tower.encoder(mel[:2]).last_hidden_state
        torch.testing.assert_close(audio_features(model.audio_tower.encoder, mel[:2]), expected)


def test_pretrained_towers_separate_the_classes_and_nothing_else_changes(held_out):
    from r1omni_fast.model.humanomni.tiny import build_tiny_model, pretrain_towers_on_cues

    plain = build_tiny_model(0)
    model = build_tiny_model(0)
    losses = pretrain_towers_on_cues(model, seed=0, steps=6)
    assert set(losses) == {"vision", "audio"} and all(np.isfinite(list(losses.values())))
    before, after = tower_separation(plain, held_out), tower_separation(model, held_out)
    print(f"class-mean cosine: vision {before[0]:.3f} -> {after[0]:.3f}, audio {before[1]:.3f} -> {after[1]:.3f}")
    assert before[1] > 0.99  # random Whisper features: every class looks the same
    assert after[0] < before[0] - 0.15 and after[1] < before[1] - 0.15
    # only the towers changed, and they end frozen and in eval mode
    p0, p1 = dict(plain.named_parameters()), dict(model.named_parameters())
    changed = {n.split(".")[0] for n in p0 if not torch.equal(p0[n], p1[n])}
    assert changed == {"vision_tower", "audio_tower"}
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    assert not any(p.requires_grad for p in model.audio_tower.parameters())
    assert not model.vision_tower.training and not model.audio_tower.training
    # same seed, same weights; the global RNG is left as it was
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    again = build_tiny_model(0)
    pretrain_towers_on_cues(again, seed=0, steps=6)
    assert torch.equal(torch.rand(3), expected_draw)
    for name, p in again.named_parameters():
        assert torch.equal(p, p1[name]), name
