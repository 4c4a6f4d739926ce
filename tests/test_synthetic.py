"""The synthetic dataset: determinism, decodability, and cues that really carry the label."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from _data_fixtures import decode_audio_16k, decode_rgb, make_synth
from r1omni_fast.data import read_data
from r1omni_fast.data.synthetic import CLASS_CUES


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth"), n=16, seed=3)


@pytest.fixture(scope="module")
def manifest(synth):
    return json.loads(synth.manifest.read_text())


def file_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_decoded_content(tmp_path):
    a = make_synth(tmp_path / "a", n=8, seed=11)
    b = make_synth(tmp_path / "b", n=8, seed=11)
    c = make_synth(tmp_path / "c", n=8, seed=12)
    assert file_hashes(a.root) == file_hashes(b.root)
    for pa, pb in zip(a.clips, b.clips):
        np.testing.assert_array_equal(decode_rgb(str(pa)), decode_rgb(str(pb)))
        np.testing.assert_array_equal(decode_audio_16k(str(pa)), decode_audio_16k(str(pb)))
    assert file_hashes(a.root) != file_hashes(c.root)
    changed = [not np.array_equal(decode_rgb(str(pa)), decode_rgb(str(pc)))
               for pa, pc in zip(a.clips, c.clips)]
    assert any(changed)


@pytest.mark.parametrize("size", [(96, 96), (80, 72)])
def test_encoding_the_same_frames_twice_gives_the_same_bytes(tmp_path, size):
    # The encoder must not read uninitialised memory: repeated encodes in one process (whose frame
    # buffers land on different memory each time) are byte-identical, also where a plane's
    # size is not a multiple of 16.
    from r1omni_fast.data import synthetic

    rng = np.random.default_rng(0)
    h, w = size
    blocks = rng.integers(0, 255, (12, h // 8, w // 8, 3), dtype=np.uint8)
    frames = np.ascontiguousarray(np.repeat(np.repeat(blocks, 8, 1), 8, 2))
    samples = (0.1 * rng.standard_normal(24000)).astype(np.float32)
    digests = set()
    for i in range(6):
        path = tmp_path / f"{i}.mp4"
        synthetic._write_mp4(path, frames, samples, 8, 16000, synthetic._default_video_codec())
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_clips_are_short_h264_or_mpeg4_with_aac_mono_16k(synth, manifest):
    import av

    assert manifest["video_codec"] in ("libx264", "mpeg4")
    for path in synth.clips:
        with av.open(str(path)) as container:
            v = container.streams.video[0]
            a = container.streams.audio[0]
            assert v.codec_context.name in ("h264", "mpeg4")
            assert (v.width, v.height) == (96, 96)
            assert float(v.average_rate) == 8.0
            assert a.codec_context.name == "aac" and a.rate == 16000
            assert a.layout.name == "mono"
            assert container.duration / av.time_base == pytest.approx(1.5, abs=0.1)
        assert len(decode_rgb(str(path))) == 12


def test_json_files_hold_the_split_and_read_back_cleanly(synth, manifest):
    clips = manifest["clips"]
    sft, train, test = (read_data(p, labels=manifest["labels"], on_error="raise")
                        for p in (synth.sft, synth.train, synth.test))
    train_ids = {c["id"] for c in clips if c["split"] == "train"}
    test_ids = {c["id"] for c in clips if c["split"] == "test"}
    assert {s.id for s in sft} == {s.id for s in train} == train_ids
    assert {s.id for s in test} == test_ids
    assert train_ids.isdisjoint(test_ids) and len(train_ids | test_ids) == 16
    assert all(s.is_reasoning for s in sft) and not any(s.is_reasoning for s in train)
    by_id = {c["id"]: c for c in clips}
    for s in list(sft) + list(train) + list(test):
        assert s.label == by_id[s.id]["label"]
        assert s.extra["cue"] == by_id[s.id]["cue"]
    # balanced labels, every class held out at least once
    assert sorted(c["label"] for c in clips) == sorted(["happy", "sad", "angry", "neutral"] * 4)
    assert {s.label for s in test} == {"happy", "sad", "angry", "neutral"}
    assert {c["cue"] for c in clips} == {"video", "audio", "both"}


def face_colour(rgb: np.ndarray, params: dict) -> np.ndarray:
    """Mean colour of a cheek patch (inside the face, away from eyes, brows and mouth)."""
    x = int(round(params["cx"] - 0.55 * params["radius"]))
    y = int(round(params["cy"] + 0.05 * params["radius"]))
    return rgb[:, y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(axis=0)


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * 16000 / len(samples))


def test_the_recorded_cue_is_what_the_clip_contains(synth, manifest):
    for clip in manifest["clips"]:
        path = str(synth.root / clip["video"])
        rgb, audio = decode_rgb(path), decode_audio_16k(path)
        cues, p = CLASS_CUES[clip["label"]], clip["params"]
        if clip["cue"] in ("video", "both"):
            np.testing.assert_allclose(face_colour(rgb, p), cues.colour, atol=14)
        else:  # no face: a plain screen at the background shade
            assert rgb.astype(float).std() < 3.0
            assert abs(rgb.astype(float).mean() - p["background"]) < 3.0
        rms = float(np.sqrt(np.mean(audio**2)))
        if clip["cue"] in ("audio", "both"):
            assert rms > 0.05
            if cues.glide == 1.0:
                expected = cues.f0 * p["pitch_scale"] * (1 + np.argmax(cues.harmonics))
                assert dominant_hz(audio[2000:22000]) == pytest.approx(expected, rel=0.03)
        else:
            assert rms < 1e-3


def test_reasoning_mentions_only_the_cues_present(synth, manifest):
    cue_of = {c["id"]: c["cue"] for c in manifest["clips"]}
    for s in read_data(synth.sft, labels=manifest["labels"]):
        cues = CLASS_CUES[s.label]
        think = s.target.split("</think>")[0]
        assert s.target.endswith(f"</think>\n<answer>{s.label}</answer>")
        assert (cues.colour_name in think) == (cue_of[s.id] != "audio")
        assert (cues.voice_words in think) == (cue_of[s.id] != "video")
        assert ("silent" in think) == (cue_of[s.id] == "video")


def test_every_drawable_class_has_distinct_cues(tmp_path):
    labels = sorted(CLASS_CUES)
    ds = make_synth(tmp_path, n=len(labels), seed=0, labels=labels, test_fraction=0.0)
    assert len(read_data(ds.train, labels=labels, on_error="raise")) == len(labels)
    assert len({c.colour for c in CLASS_CUES.values()}) == len(CLASS_CUES)
    assert len({(c.f0, c.glide, c.pulses_per_second, c.tremolo_hz) for c in CLASS_CUES.values()}) == len(CLASS_CUES)


@pytest.mark.parametrize("kwargs,message", [
    ({"labels": ["happy", "contemptuous"]}, "cannot draw ['contemptuous']"),
    ({"labels": ["happy"]}, "at least two distinct classes"),
    ({"n": 2}, "n must be at least the number of labels (4)"),
    ({"test_fraction": 1.0}, "test_fraction must be in [0, 1)"),
    ({"size": 33}, "size must be an even number >= 32"),
    ({"sft_fraction": 1.0}, "sft_fraction must be in (0, 1) or None"),
])
def test_bad_arguments_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as info:
        make_synth(tmp_path, **kwargs)
    assert message in str(info.value)


def test_clips_decode_with_r1omni_fast_media(synth, manifest):
    media = pytest.importorskip("r1omni_fast.media")
    clip_info = manifest["clips"][0]
    clip = media.load_clip(str(synth.root / clip_info["video"]), num_frames=8, image_size=96,
                           aspect="resize", n_mels=128)
    assert clip.frames.shape == (8, 3, 96, 96)
    assert clip.num_video_frames == 12 and clip.fps == pytest.approx(8.0)
    assert clip.has_audio and clip.mel.shape == (128, 3000)
    assert clip.audio_seconds == pytest.approx(1.5, abs=0.1)
    # exact RGB of the decoded frames, then the documented normalisation (mean = std = 0.5)
    rgb = media.decode_frames(str(synth.root / clip_info["video"]), clip.frame_indices)
    np.testing.assert_array_equal(rgb, decode_rgb(str(synth.root / clip_info["video"]))[clip.frame_indices])
    np.testing.assert_allclose(clip.frames, (rgb.transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.5, atol=1e-5)


def test_short_reasoning_names_only_the_carrying_cue(tmp_path):
    import json

    from r1omni_fast.data.synthetic import SHORT_REASONING, generate

    ds = generate(tmp_path / "d", n=8, seed=3, num_frames=2, reasoning="short")
    for r in json.loads(ds.sft.read_text()):
        value = r["conversations"][1]["value"]
        assert value.startswith(f"<think>{SHORT_REASONING[r['cue']]}</think>\n<answer>")
    with pytest.raises(ValueError, match="reasoning must be 'full' or 'short'"):
        generate(tmp_path / "e", n=8, reasoning="long")


def test_sft_fraction_gives_a_small_reasoning_split_and_a_disjoint_label_only_split(tmp_path):
    """R1-Omni's regime: small cold start with reasoning, larger RL split with labels only."""
    ds = make_synth(tmp_path / "d", n=48, seed=5, num_frames=2, test_fraction=0.25, sft_fraction=0.25,
                    reasoning="short")
    manifest = json.loads(ds.manifest.read_text())
    labels = manifest["labels"]
    sft, train, test = (read_data(p, labels=labels, on_error="raise") for p in (ds.sft, ds.train, ds.test))
    split = {c["id"]: c["split"] for c in manifest["clips"]}
    assert {s.id for s in sft} == {i for i, v in split.items() if v == "sft"}
    assert {s.id for s in train} == {i for i, v in split.items() if v == "train"}
    assert {s.id for s in test} == {i for i, v in split.items() if v == "test"}
    # 12 clips per class: 3 held out, then 9 training clips of which round(0.25 * 9) = 2 cold-start
    for label in labels:
        assert [sum(s.label == label for s in part) for part in (sft, train, test)] == [2, 7, 3]
    assert all(s.is_reasoning for s in sft) and not any(s.is_reasoning for s in list(train) + list(test))
    assert manifest["sft_fraction"] == 0.25
    # the held-out split is the one the default (shared SFT/RL clips) would hold out
    same = make_synth(tmp_path / "e", n=48, seed=5, num_frames=2, test_fraction=0.25, reasoning="short")
    assert {s.id for s in read_data(same.test, labels=labels)} == {s.id for s in test}


def test_the_cold_start_split_covers_every_cue_and_is_class_balanced_in_order(tmp_path):
    """sft.json lists the cold start round-robin over the classes with cues video, audio, both, ...;
    the clips outside it keep the cues (and bytes) they are drawn with."""
    from r1omni_fast.data.synthetic import CUES, SHORT_REASONING

    ds = make_synth(tmp_path / "d", n=64, seed=2, num_frames=2, test_fraction=0.25, sft_fraction=0.25,
                    reasoning="short")
    records = json.loads(ds.sft.read_text())
    labels = json.loads(ds.manifest.read_text())["labels"]
    assert len(records) == 12  # 16 clips per class: 4 held out, round(0.25 * 12) = 3 of the rest
    assert [r["conversations"][1]["value"].rsplit("<answer>", 1)[1] for r in records] == [
        f"{label}</answer>" for _ in range(3) for label in labels]
    assert [r["cue"] for r in records] == [CUES[j % 3] for j in range(12)]
    for r in records:  # the reasoning names the assigned cue
        assert r["conversations"][1]["value"].startswith(f"<think>{SHORT_REASONING[r['cue']]}</think>")
    for k in range(3, 13):
        assert {r["cue"] for r in records[:k]} == set(CUES)
    # the other clips are those of a generation without a cold start: same cues, same files
    plain = make_synth(tmp_path / "e", n=64, seed=2, num_frames=2, test_fraction=0.25, reasoning="short")
    cue_of = {c["id"]: c["cue"] for c in json.loads(plain.manifest.read_text())["clips"]}
    cold = {r["id"] for r in records}
    for clip in json.loads(ds.manifest.read_text())["clips"]:
        if clip["id"] not in cold:
            assert clip["cue"] == cue_of[clip["id"]]
            assert (ds.root / clip["video"]).read_bytes() == (plain.root / clip["video"]).read_bytes()


def test_cue_examples_are_deterministic_and_carry_their_labels():
    from r1omni_fast.data.synthetic import cue_examples

    a = cue_examples(24, seed=4, labels=("happy", "sad", "angry"))
    b = cue_examples(24, seed=4, labels=("happy", "sad", "angry"))
    c = cue_examples(24, seed=5, labels=("happy", "sad", "angry"))
    for field in ("frames", "frame_labels", "sounds", "sound_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (24, 96, 96, 3) and a.sounds.shape == (24, 24000)
    assert set(a.frame_labels.tolist()) <= {0, 1, 2, 3} and len(set(a.frame_labels.tolist())) > 2
    for frame, k in zip(a.frames, a.frame_labels):
        colours = {tuple(px) for px in frame.reshape(-1, 3)}
        if k == 3:  # no cue: a plain screen
            assert len(colours) == 1
        else:
            assert CLASS_CUES[a.labels[k]].colour in colours
    for sound, k in zip(a.sounds, a.sound_labels):
        if k == 3:
            assert not sound.any()
        elif CLASS_CUES[a.labels[k]].glide == 1.0:
            cues = CLASS_CUES[a.labels[k]]
            assert dominant_hz(sound) == pytest.approx(cues.f0 * (1 + np.argmax(cues.harmonics)), rel=0.06)
    with pytest.raises(ValueError, match="cannot draw"):
        cue_examples(4, labels=("happy", "bored"))
