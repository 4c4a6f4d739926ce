"""Media as phones and datasets make it: display rotation, edit lists, headers that lie, open
GOPs, multichannel audio, PIL-exact resizing, bounds on requests (DESIGN.md §2).

Every recipe is made at test time with the ``ffmpeg`` command line; the references are FFmpeg's
own decoding (``ffmpeg``/``ffprobe``), the PyAV + PIL implementation and, for the resize, Pillow.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import _media_fixtures as F
from r1omni_fast import media
from r1omni_fast.media import pyav as ref

pytestmark = [
    pytest.mark.skipif(not media.native_available(), reason="native extension not built"),
    pytest.mark.skipif(not F.ffmpeg_available(), reason="the ffmpeg command line is not installed"),
]

SMALL = dict(num_frames=8, image_size=48, audio=False)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    return F.rotation_recipes(tmp_path_factory.mktemp("rotation"))


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    return F.edit_list_recipes(tmp_path_factory.mktemp("edit_lists"))


@pytest.fixture(scope="module")
def lying(tmp_path_factory):
    return F.lying_header_recipes(tmp_path_factory.mktemp("lying"))


@pytest.fixture(scope="module")
def open_gops(tmp_path_factory):
    return F.open_gop_recipes(tmp_path_factory.mktemp("open_gop"))


@pytest.fixture(scope="module")
def multichannel(tmp_path_factory):
    return F.multichannel_recipes(tmp_path_factory.mktemp("multichannel"))


# --- display rotation and flips ---

# The transform FFmpeg 5.1's command line applies, as a numpy function of the stored picture.
UPRIGHT = {
    "upright": lambda a: a,
    "rot90": lambda a: np.rot90(a, 1, axes=(1, 2)),  # rotate=90 -> transpose=cclock
    "rot180": lambda a: a[:, ::-1, ::-1],
    "rot270": lambda a: np.rot90(a, -1, axes=(1, 2)),  # rotate=270 -> transpose=clock
    "hflip": lambda a: a[:, :, ::-1],
    "vflip": lambda a: a[:, ::-1],
    "transpose": lambda a: a.transpose(0, 2, 1, 3),
    "antitranspose": lambda a: a.transpose(0, 2, 1, 3)[:, ::-1, ::-1],
}


@pytest.mark.parametrize("name", list(UPRIGHT))
def test_display_matrix_is_applied_as_ffmpeg_does(rotated, name):
    p = rotated[name]
    stored = media.decode_frames(rotated["upright"], range(50))
    got = media.decode_frames(p, range(50))
    # The recipes are stream copies: the displayed pictures are the stored ones transformed.
    want = np.ascontiguousarray(UPRIGHT[name](stored))
    assert got.shape == want.shape and np.array_equal(got, want)
    # FFmpeg's command line (autorotate) and the PyAV reference agree exactly.
    assert np.array_equal(F.ffmpeg_rgb_frames(p, *got.shape[1:3]), got)
    assert np.array_equal(ref.decode_frames(p, range(50)), got)
    # Rotation comes before the pad and resize: the clip equals the reference pipeline.
    clip, want_clip = media.load_clip(p, **SMALL), ref.load_clip(p, **SMALL)
    assert np.array_equal(clip.frames, want_clip.frames)


def test_rotated_clip_is_padded_on_the_displayed_axis(rotated):
    # Stored 160x96 landscape, displayed 96x160 portrait: grey bars left and right, not above.
    c = media.load_clip(rotated["rot90"], num_frames=1, image_size=160, aspect="pad", audio=False)
    grey = (127 / 255 - 0.5) / 0.5
    assert np.allclose(c.frames[0, :, :, :20], grey, atol=1e-6)
    assert not np.allclose(c.frames[0, :, :20, 40:120], grey, atol=1e-6)


# --- packets that are not frames (edit lists) and headers that lie ---

@pytest.mark.parametrize("name", ["cut06", "cut03", "cut_at_key", "cut_bframes", "cut_mov",
                                  "cut_mkv"])
def test_edit_list_frames_are_the_presented_frames(cuts, name):
    p = cuts[name]
    n = F.ffprobe_frame_count(p)
    clip = media.load_clip(p, **SMALL)
    assert clip.num_video_frames == n == ref.video_frame_count(p)
    assert list(clip.frame_indices) == ref.uniform_indices(n, 8)
    got = media.decode_frames(p, range(n))
    assert np.array_equal(got, F.ffmpeg_rgb_frames(p, *got.shape[1:3]))
    assert np.array_equal(clip.frames, ref.load_clip(p, **SMALL).frames)


def test_cut_drops_the_packets_before_the_cut(cuts):
    # -ss 0.6 on a 25 fps clip: the first presented frame is source frame 15.
    clip = media.load_clip(cuts["cut06"], **SMALL)
    assert clip.num_video_frames == 35 and clip.declared_frames == 50


@pytest.mark.parametrize("declared", [80, 30])
def test_declared_frame_count_is_a_hint(lying, declared):
    p = lying[f"declares{declared}"]
    clip = media.load_clip(p, **SMALL)
    want = ref.load_clip(p, **SMALL)
    assert clip.num_video_frames == want.num_video_frames == F.ffprobe_frame_count(p) == 50
    assert clip.declared_frames == want.declared_frames == declared
    assert np.array_equal(clip.frames, want.frames)
    assert clip.fps == pytest.approx(25.0)


# --- open GOPs ---

@pytest.mark.parametrize("name", ["open_gop_k10_b3", "open_gop_k7_b2", "open_gop_k12_b3_pyramid",
                                  "open_gop_hevc"])
def test_open_gop_every_index_alone_and_in_sets(open_gops, name):
    p = open_gops[name]
    n = F.ffprobe_frame_count(p)
    want = ref.decode_frames(p, range(n))
    assert np.array_equal(want, F.ffmpeg_rgb_frames(p, *want.shape[1:3]))
    for i in range(n):
        assert np.array_equal(media.decode_frames(p, [i], decoder_threads=1)[0], want[i]), i
    rng = np.random.default_rng(n)
    for _ in range(12):
        idx = [int(i) for i in rng.integers(0, n, int(rng.integers(2, 9)))]
        assert np.array_equal(media.decode_frames(p, idx), want[idx]), idx
    clip = media.load_clip(p, **SMALL)
    assert np.array_equal(clip.frames, ref.load_clip(p, **SMALL).frames)


# --- multichannel audio as HumanOmni heard it ---

@pytest.mark.parametrize("name", ["mono", "stereo", "surround51", "surround71_pcm"])
def test_downmix_is_ffmpegs(multichannel, name):
    p = multichannel[name]
    want = F.ffmpeg_mono_16k(p)  # ffmpeg -ac 1 -ar 16000
    got = media.load_audio(p)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-6
    mean = media.load_audio(p, downmix="mean")
    if name in ("mono", "stereo"):
        # Stereo: (L + R) / sqrt 2 against (L + R) / 2, sqrt 2 louder (tones of distinct
        # frequencies, so the powers add); mono is unchanged.
        ratio = {"mono": 1.0, "stereo": 2 ** 0.5}[name]
        assert np.sqrt((got ** 2).mean() / (mean ** 2).mean()) == pytest.approx(ratio, rel=0.01)
    else:
        assert np.sqrt((got ** 2).mean() / (mean ** 2).mean()) > 2.5  # the mean is far quieter
    clip = media.load_clip(p, image_size=32, n_mels=80)
    assert clip.has_audio and clip.audio_seconds == pytest.approx(len(want) / 16000)
    np.testing.assert_allclose(clip.mel, media.whisper_log_mel(want, 80), atol=1e-4)


@pytest.mark.parametrize("name", ["mono", "stereo", "surround51"])
@pytest.mark.parametrize("downmix", ["ffmpeg", "mean"])
def test_downmix_matches_the_pyav_reference(multichannel, name, downmix):
    # (PyAV aborts the process on the 7.1 PCM MOV: that recipe is checked against ffmpeg only.)
    p = multichannel[name]
    got = media.load_audio(p, downmix=downmix)
    want = ref.load_audio(p, downmix=downmix)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-6


def test_bad_downmix_is_a_value_error(multichannel):
    with pytest.raises(ValueError, match="downmix"):
        media.load_audio(multichannel["stereo"], downmix="average")
    with pytest.raises(ValueError, match="downmix"):
        media.load_clip(multichannel["stereo"], downmix="sum")


def test_audio_decoding_stops_after_the_seconds_the_features_use(tmp_path):
    # 45 s of audio: the clip decodes ~31 s, its mel equals the mel of the whole stream, and
    # audio_seconds still reports the stream's length.
    p = tmp_path / "long.mp4"
    F.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=5:duration=45", "-f", "lavfi", "-i",
             "sine=frequency=300:sample_rate=22050:duration=45", "-c:v", "libx264", "-preset",
             "ultrafast", "-c:a", "aac", "-shortest", str(p))
    whole = media.load_audio(p)
    first = media.load_audio(p, max_seconds=30)
    assert len(first) == 480_000 and np.array_equal(first, whole[:480_000])
    clip = media.load_clip(p, image_size=16, n_mels=80, num_frames=2)
    want = ref.load_clip(p, image_size=16, n_mels=80, num_frames=2)
    assert clip.audio_seconds == pytest.approx(45.0, abs=0.1)
    assert want.audio_seconds == pytest.approx(clip.audio_seconds, abs=1e-6)
    np.testing.assert_allclose(clip.mel, media.whisper_log_mel(whole, 80), atol=1e-6)
    np.testing.assert_allclose(clip.mel, want.mel, atol=1e-4)


# --- PIL-exact resize ---

def _pil_frame(rgb, size, aspect, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    return ref.preprocess_frame(rgb, size, aspect, mean, std)


def _bicubic(x: float) -> float:
    x, a = abs(x), -0.5
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _pillow_pass(img: np.ndarray, out: int) -> np.ndarray:
    """One horizontal pass of Pillow's ImagingResample (src/libImaging/Resample.c:
    precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleHorizontal_8bpc), in Python."""
    n = img.shape[1]
    scale = n / out
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    res = np.zeros((img.shape[0], out, 3), np.uint8)
    for xx in range(out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n) - xmin
        w = [_bicubic((x + xmin - center + 0.5) / filterscale) for x in range(xmax)]
        ww = sum(w)
        k = [v / ww if ww != 0 else v for v in w]
        k = [int(v * (1 << 22) + (-0.5 if v < 0 else 0.5)) for v in k]
        acc = np.full((img.shape[0], 3), 1 << 21, np.int64)
        for j, kj in enumerate(k):
            acc += img[:, xmin + j].astype(np.int64) * kj
        res[:, xx] = np.clip(acc >> 22, 0, 255)
    return res


def _pillow_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Pillow's two-pass bicubic resize as its C source states it, each pass rounding to 8 bits
    (a pass is skipped when its size does not change). The order is Pillow 13's: vertical pass
    first when the height shrinks by more than twice as many pixels as the width
    (``h - size > 2 * (w - size)``, Pillow pull request 9549), horizontal pass first otherwise."""
    def horizontal(a):
        return a if a.shape[1] == size else _pillow_pass(a, size)

    def vertical(a):
        return a if a.shape[0] == size else _pillow_pass(a.transpose(1, 0, 2), size).transpose(1, 0, 2)

    h, w = img.shape[:2]
    if size < h and h - size > 2 * (w - size):
        return np.ascontiguousarray(horizontal(vertical(img)))
    return np.ascontiguousarray(vertical(horizontal(img)))


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    return np.rint((frame * 0.5 + 0.5) * 255).astype(np.uint8).transpose(1, 2, 0)


@settings(max_examples=120, deadline=None)
@given(w=st.integers(1, 300), h=st.integers(1, 300), size=st.integers(1, 260),
       aspect=st.sampled_from(["pad", "resize"]), seed=st.integers(0, 2 ** 32 - 1),
       lines=st.booleans())
def test_resize_is_bit_exact_with_pil(w, h, size, aspect, seed, lines):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if lines:  # thin saturated lines: the worst case for rounding between the passes
        rgb[:] = 0
        rgb[::3, :, 0] = 255
        rgb[:, ::4, 1] = 255
    got = media.preprocess_frame(rgb, size, aspect)
    assert got.shape == (3, size, size) and got.dtype == np.float32
    # Against Pillow's algorithm as its C source states it, in every case.
    from PIL import Image

    canvas = rgb if aspect == "resize" else np.asarray(
        ref.expand2square(Image.fromarray(rgb), (127, 127, 127)))
    assert np.array_equal(_to_uint8(got), _pillow_resize(canvas, size))
    # Against the installed Pillow, in every case.
    assert np.array_equal(got, _pil_frame(rgb, size, aspect))


@settings(max_examples=80, deadline=None)
@given(data=st.data(), widen=st.booleans(), seed=st.integers(0, 2 ** 32 - 1), lines=st.booleans())
def test_squashed_portrait_resize_is_bit_exact_with_pil(data, widen, seed, lines):
    """Portrait pictures squashed (``aspect="resize"``, the height reduced): Pillow 13 runs the
    vertical pass first when the height shrinks by more than twice as many pixels as the width
    -- always when the width grows or stays (``widen``) -- and so does the native resize."""
    w = data.draw(st.integers(1, 200), label="w")
    size = data.draw(st.integers(w, 220) if widen else st.integers(1, w), label="size")
    h = data.draw(st.integers(max(size + 1, w), 300), label="h")
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if lines:
        rgb[:] = 0
        rgb[::3, :, 0] = 255
        rgb[:, ::4, 1] = 255
    got = media.preprocess_frame(rgb, size, "resize")
    assert np.array_equal(_to_uint8(got), _pillow_resize(rgb, size))
    assert np.array_equal(got, _pil_frame(rgb, size, "resize"))


def test_preprocess_frame_options(rotated):
    rgb = media.decode_frames(rotated["upright"], [7])[0]
    mean, std = (0.48, 0.45, 0.4), (0.26, 0.26, 0.27)
    for aspect in ("pad", "resize"):
        got = media.preprocess_frame(rgb, 224, aspect, mean=mean, std=std)
        assert np.array_equal(got, _pil_frame(rgb, 224, aspect, mean, std))
    with pytest.raises(ValueError):
        media.preprocess_frame(rgb[..., :2], 32)


# --- bounds on requests ---

def test_requests_beyond_the_limits_are_value_errors(rotated):
    p = rotated["upright"]
    with pytest.raises(ValueError, match="max_output_bytes"):
        media.load_batch([p], num_frames=1000, image_size=4096)
    with pytest.raises(ValueError, match="max_num_frames"):
        media.load_clip(p, num_frames=media.MAX_NUM_FRAMES + 1)
    with pytest.raises(ValueError, match="max_image_size"):
        media.load_clip(p, image_size=media.MAX_IMAGE_SIZE + 1)
    # The total of a batch counts: one clip fits, 64 do not.
    one = media.output_bytes(8, 224, 128, True)
    media.load_clip(p, image_size=224, num_frames=8, max_output_bytes=one)
    with pytest.raises(ValueError, match="max_output_bytes"):
        media.load_batch([p] * 64, max_output_bytes=one * 63)
    # The limits are configurable.
    assert media.load_clip(p, num_frames=3, max_num_frames=3, audio=False).frames.shape[0] == 3
    with pytest.raises(ValueError, match="max_num_frames=2"):
        media.load_clip(p, num_frames=3, max_num_frames=2)


def test_native_checks_the_limits_itself(rotated):
    # The same checks inside the extension (for callers of the Rust API), as MediaErrors.
    from r1omni_fast import _native

    p = str(rotated["upright"])
    opts = dict(num_frames=8, image_size=64, n_mels=80, max_image_size=64)
    items = _native.media_load_batch([p, p], 1, **opts, max_output_bytes=10**6)
    assert all(isinstance(i, media.MediaError) and "max_output_bytes" in i.reason for i in items)
    with pytest.raises(media.MediaError, match="max_num_frames=4"):
        _native.media_load_clip(p, **opts, max_num_frames=4)


def test_native_clip_options_are_keywords_with_load_clips_defaults(rotated):
    # Each option of the extension's clip functions is a keyword with load_clip's default.
    from r1omni_fast import _native

    p = str(rotated["upright"])
    ours = media.load_clip(p, decoder_threads=0)
    for d in (_native.media_load_clip(p), _native.media_load_batch([p], 1)[0]):
        assert sorted(d) == sorted(f.name for f in dataclasses.fields(ours))
        for k, v in d.items():
            np.testing.assert_array_equal(v, getattr(ours, k), err_msg=k)
    with pytest.raises(TypeError, match='unexpected clip option "frames"'):
        _native.media_load_clip(p, frames=8)
    with pytest.raises(TypeError, match="audio_path is an option of one clip"):
        _native.media_load_batch([p], 1, audio_path=p)
    with pytest.raises(TypeError, match="argument 'num_frames'"):
        _native.media_load_clip(p, num_frames="8")
    with pytest.raises(ValueError, match='aspect must be "pad" or "resize", got "wide"'):
        _native.media_load_clip(p, aspect="wide")
    with pytest.raises(ValueError, match="downmix must be"):
        _native.media_load_batch([p], 1, downmix="left")


# --- pixel formats: 10-bit, 4:2:2, 4:4:4, full range, matrix tags ---

@pytest.fixture(scope="module")
def pixel_formats(tmp_path_factory):
    return F.pixel_format_recipes(tmp_path_factory.mktemp("pixel_formats"))


@pytest.mark.parametrize("name", list(F.PIXEL_FORMAT_RECIPES))
def test_pixel_formats_convert_as_the_ffmpeg_command_line(pixel_formats, name):
    """Every frame byte-equal to ``ffmpeg -pix_fmt rgb24`` (the same FFmpeg libraries: swscale
    with the command line's bicubic flags, the tagged matrix and range), and close to the
    source picture: within 2/255 everywhere for 4:4:4; where chroma is subsampled (4:2:0, 4:2:2)
    its interpolation on ``testsrc2``'s saturated colour bars costs at most a mean 3.5/255."""
    p = pixel_formats[name]
    src = pixel_formats[("source", "odd" in name)]
    got = media.decode_frames(p, range(10))
    assert got.shape == src.shape
    assert np.array_equal(got, F.ffmpeg_rgb_frames(p, *src.shape[1:3]))
    err = np.abs(got.astype(int) - src)
    if "444" in name:
        assert err.max() <= 2, f"error up to {err.max()}/255 against the source"
    else:
        assert err.mean() <= 3.5, f"mean error {err.mean():.2f}/255 against the source"
    # The whole clip pipeline decodes the same pictures.
    clip = media.load_clip(p, num_frames=4, image_size=48, audio=False)
    want = np.stack([media.preprocess_frame(got[i], 48) for i in clip.frame_indices])
    assert np.array_equal(clip.frames, want)


def test_pixel_format_neighbours_are_distinct_conversions(pixel_formats):
    """The matrix and range tags are honoured, not ignored: bt709 and bt601 tags, and full and
    limited range, give different pictures of the same source, each as the command line."""
    frames = {n: media.decode_frames(pixel_formats[n], [0])[0]
              for n in ("h264_bt709_tv.mp4", "h264_bt601_tv.mp4", "h264_bt709_pc.mp4")}
    a, b, c = frames.values()
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


# --- every recipe through load_batch ---

def test_every_recipe_through_load_batch(rotated, cuts, lying, open_gops, multichannel):
    paths = [*rotated.values(), *cuts.values(), *lying.values(), *open_gops.values(),
             *multichannel.values()]
    out = media.load_batch(paths, threads=2, num_frames=4, image_size=32, n_mels=80)
    errors = [o for o in out if isinstance(o, media.MediaError)]
    assert not errors, errors
    for p, clip in zip(paths, out):
        assert clip.fps == pytest.approx(25.0), p
        assert clip.num_video_frames == F.ffprobe_frame_count(p), p
        assert np.isfinite(clip.frames).all() and np.isfinite(clip.mel).all()


# --- no silent fallback ---

def test_missing_extension_is_an_error_and_pyav_a_choice(rotated, monkeypatch):
    p = rotated["upright"]
    want = media.load_clip(p, **SMALL)
    got = media.load_clip(p, backend="pyav", **SMALL)
    assert np.array_equal(got.frames, want.frames)
    monkeypatch.setattr(media, "_native", lambda: None)
    with pytest.raises(ImportError, match="backend=\"pyav\""):
        media.load_clip(p, **SMALL)
    with pytest.raises(ImportError, match="setup.sh"):
        media.load_batch([p], **SMALL)
    assert media.load_batch([p], backend="pyav", **SMALL)[0].num_video_frames == 50
    with pytest.raises(ValueError, match="backend"):
        media.decode_frames(p, [0], backend="decord")


# --- log-mel on resampled audio ---

@pytest.mark.parametrize("rate", [8000, 11025, 44100])
@pytest.mark.parametrize("signal", ["sine=frequency=440", "sine=frequency=3000",
                                    "anoisesrc=c=pink:a=0.3"])
def test_log_mel_of_resampled_audio(tmp_path, rate, signal):
    """The log-mel of audio resampled to 16 kHz against a float64 oracle (transformers' numpy
    path) and transformers' default (float32 torch) path, on the same samples.

    A pure tone's Hann-window leakage puts mel bins 70 dB and more below the frame's peak, where
    a float32 FFT's round-off moves the log-mel by up to 2e-4: transformers' torch path does
    (against the oracle), the native one computes the FFT and power in float64 and stays within
    1e-5 of the oracle."""
    from transformers import WhisperFeatureExtractor

    p = tmp_path / "tone.m4a"
    source = f"{signal}:sample_rate={rate}:duration=3" if signal.startswith("sine") \
        else f"{signal}:r={rate}:d=3"
    F.ffmpeg("-f", "lavfi", "-i", source, "-c:a", "aac", str(p))
    x = media.load_audio(p)
    fe = WhisperFeatureExtractor(feature_size=80)
    want = fe(x, sampling_rate=16000, return_tensors="np")["input_features"][0]
    padded = np.zeros(480000, np.float64)
    padded[:len(x)] = x
    oracle = fe._np_extract_fbank_features(padded[None], "cpu")[0]
    got = media.whisper_log_mel(x, 80)
    assert np.abs(got - oracle).max() <= 1e-5
    bound = 2e-4 if signal.startswith("sine") else 1e-4
    assert np.abs(got - want).max() <= bound
    assert np.abs(want - oracle).max() <= bound  # the bound is transformers' own float32 error
