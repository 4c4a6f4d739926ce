"""Qwen2.5-Omni inputs made natively (media.qwen_video, media.qwen_audio_features) against the
reference: qwen-omni-utils (``fetch_video``, ``smart_resize``, ``process_audio_info``) and
transformers (the Whisper feature extractor as Qwen2.5-Omni's processor calls it, the Qwen2-VL
video processor for ``video_grid_thw``), on clips made with the ``ffmpeg`` command line."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import _media_fixtures as F
from r1omni_fast import media

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("qwen_omni_utils")

pytestmark = [
    pytest.mark.skipif(not media.native_available(), reason="native extension not built"),
    pytest.mark.skipif(not F.ffmpeg_available(), reason="the ffmpeg command line is not installed"),
]

# PyTorch's x86-64 kernels for these CPU levels fuse multiply-adds as rust/media/qwen.rs does;
# its baseline ("DEFAULT") build does not, and differs in the last float bit (then by 1 level).
EXACT = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _torch_resize(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    out = TF.resize(t, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return out.permute(0, 2, 3, 1).numpy()


def _assert_resize_equal(got, want):
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    if EXACT:
        assert diff.max() == 0, f"{int((diff > 0).sum())} values differ, by up to {diff.max()}"
    else:
        assert diff.max() <= 1


# --- the resize ---

@pytest.mark.parametrize("size,out", [((96, 160), (252, 420)), ((480, 640), (280, 364)),
                                      ((97, 161), (56, 84)), ((1, 1), (28, 28)),
                                      ((3, 500), (28, 56)), ((200, 120), (200, 56)),
                                      ((200, 120), (56, 120)), ((33, 17), (33, 17))])
def test_resize_equals_torchvision(size, out):
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    frames = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
    frames[:, :, ::7] = [255, 0, 255]  # thin saturated lines: bicubic overshoots, then clamps
    _assert_resize_equal(media.resize_bicubic_antialias(frames, *out), _torch_resize(frames, *out))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 90), st.integers(1, 90), st.integers(1, 90), st.integers(1, 90),
       st.integers(0, 2**32 - 1))
def test_resize_equals_torchvision_on_random_sizes(h, w, oh, ow, seed):
    frames = np.random.default_rng(seed).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    _assert_resize_equal(media.resize_bicubic_antialias(frames, oh, ow),
                         _torch_resize(frames, oh, ow))


def test_resize_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        media.resize_bicubic_antialias(np.zeros((1, 4, 4, 3), np.float32), 2, 2)
    with pytest.raises(ValueError, match="height and width"):
        media.resize_bicubic_antialias(np.zeros((4, 4, 3), np.uint8), 0, 2)


# --- sampling and sizes, as the utilities compute them ---

def test_linspace_equals_torch():
    for total in list(range(2, 120)) + [299, 750, 1001, 4097]:
        for n in sorted({2, 3, 4, 6, 16, 17, 33, total // 3 * 2, total}):
            if 2 <= n <= total:
                for first in (0, 3):
                    if first < total - 1:
                        want = torch.linspace(first, total - 1, n).numpy()
                        np.testing.assert_array_equal(media._linspace_f32(first, total - 1, n),
                                                      want, err_msg=f"{first}..{total - 1}, {n}")


def _reference_indices(total, video_fps, ele):
    from qwen_omni_utils.v2_5 import vision_process as vp

    first, last, count = vp.calculate_video_frame_range(ele, total, video_fps)
    n = vp.smart_nframes(ele, total_frames=count, video_fps=video_fps)
    idx = torch.linspace(first, last, n).round().long().numpy()
    return idx, n / max(count, 1e-6) * video_fps


@pytest.mark.parametrize("total,video_fps", [(50, 25.0), (51, 25.0), (300, 29.97), (7, 30.0),
                                             (1000, 24.0), (4000, 60.0), (9, 1.0)])
@pytest.mark.parametrize("ele", [{}, {"fps": 1.0}, {"fps": 4.0, "min_frames": 6},
                                 {"nframes": 6}, {"max_frames": 10},
                                 {"video_start": 0.1, "video_end": 1.3}, {"video_start": 0.5}])
def test_frame_indices_equal_qwen_omni_utils(total, video_fps, ele):
    kw = dict(ele)
    try:
        want = _reference_indices(total, video_fps, ele)
    except (ValueError, AssertionError):
        with pytest.raises(ValueError):
            media.qwen_frame_indices(total, video_fps, **kw)
        return
    idx, fps = media.qwen_frame_indices(total, video_fps, **kw)
    np.testing.assert_array_equal(idx, want[0])
    assert fps == want[1]


def test_smart_resize_equals_qwen_omni_utils():
    from qwen_omni_utils.v2_5.vision_process import smart_resize

    rng = np.random.default_rng(0)
    sizes = [(96, 160), (1080, 1920), (1920, 1080), (28, 28), (1, 150), (2000, 11), (37, 53)]
    sizes += [tuple(int(v) for v in rng.integers(1, 4000, 2)) for _ in range(200)]
    budgets = [(100352, 602112), (3136, 12845056), (100352, 105366.0), (50176, 235200.0)]
    for h, w in sizes:
        for lo, hi in budgets:
            try:
                want = smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)
            except ValueError:
                with pytest.raises(ValueError):
                    media.qwen_smart_resize(h, w, min_pixels=lo, max_pixels=hi)
                continue
            assert media.qwen_smart_resize(h, w, min_pixels=lo, max_pixels=hi) == want


# --- whole clips against fetch_video and the processor ---

def _clip(folder, name, size="160x96", rate=25, seconds=2, extra=()):
    p = folder / f"{name}.mp4"
    F.ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
             "-c:v", "libx264", "-pix_fmt", "yuv420p", *extra, "-c:a", "aac", "-shortest", str(p))
    return p


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen")
    return {
        "small": _clip(d, "small"),
        "wide": _clip(d, "wide", size="640x360", rate=30, seconds=5),
        "odd": _clip(d, "odd", size="161x97", rate=24, seconds=3),
        "tall_bframes": _clip(d, "tall", size="240x426", rate=25, seconds=4,
                              extra=("-bf", "3", "-g", "12")),
    }


def _fetch_video(ele):
    from qwen_omni_utils.v2_5 import fetch_video

    video, fps = fetch_video(ele, return_video_sample_fps=True)
    return video.numpy(), fps


def _grid(frames_tchw):
    from transformers import Qwen2VLVideoProcessor

    # As Qwen2.5-Omni's processor configures it (its videos_kwargs["size"]).
    vp = Qwen2VLVideoProcessor(size={"shortest_edge": 128 * 28 * 28,
                                     "longest_edge": 768 * 28 * 28})
    out = vp(videos=[torch.as_tensor(frames_tchw)], do_sample_frames=False, return_tensors="pt")
    return out["video_grid_thw"].tolist(), out["pixel_values_videos"].numpy()


@pytest.mark.parametrize("name,ele", [("small", {}), ("wide", {}), ("odd", {"fps": 3.0}),
                                      ("tall_bframes", {"nframes": 10}),
                                      ("wide", {"video_start": 1.0, "video_end": 3.5}),
                                      ("wide", {"max_pixels": 60000, "min_pixels": 28 * 28 * 8}),
                                      ("small", {"total_pixels": 4 * 28 * 28 * 300})])
def test_qwen_video_equals_fetch_video(clips, name, ele):
    path = str(clips[name])
    want, want_fps = _fetch_video({"video": path, **ele})
    got, fps = media.qwen_video(path, **ele)
    assert got.dtype == np.uint8 and got.ndim == 4 and got.shape[0] % 2 == 0
    assert got.shape[1] % 28 == 0 and got.shape[2] % 28 == 0
    assert fps == want_fps
    ours = got.transpose(0, 3, 1, 2).astype(np.float32)
    assert ours.shape == want.shape
    diff = np.abs(ours - want)
    # Both decode with FFmpeg (the utilities through torchcodec); the resize is reproduced.
    assert diff.max() <= (0 if EXACT else 1), f"{int((diff > 0).sum())} values differ"
    grid, pixels = _grid(ours)
    want_grid, want_pixels = _grid(want)
    assert grid == want_grid
    t, h, w = grid[0]
    if 128 * 28 * 28 <= got.shape[1] * got.shape[2] <= 768 * 28 * 28:
        # Within the processor's own per-frame budget its resize is the identity.
        assert (t, h * 14, w * 14) == (got.shape[0] // 2, got.shape[1], got.shape[2])
    assert t * h * w // 4 == want_grid[0][0] * want_grid[0][1] * want_grid[0][2] // 4
    np.testing.assert_allclose(pixels, want_pixels, atol=0 if EXACT else 1 / 255 / 0.26 + 1e-6)


def test_qwen_video_errors_name_the_file_and_the_budget(clips, tmp_path):
    path = str(clips["wide"])
    with pytest.raises(media.MediaError, match="total_pixels=20000") as e:
        media.qwen_video(path, total_pixels=20000)
    assert e.value.path == path
    one = tmp_path / "one.mp4"
    F.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=0.04", "-c:v", "libx264",
             str(one))
    with pytest.raises(media.MediaError, match="frames to sample") as e:
        media.qwen_video(one)
    assert e.value.path == str(one)
    with pytest.raises(media.MediaError):
        media.qwen_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="max_pixels"):
        media.qwen_video(path, max_pixels=0)


# --- audio ---

def _processor_audio(x, n_mels=128):
    """What Qwen2_5OmniProcessor._process_audio computes for one clip's samples."""
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import (
        _get_feat_extract_output_lengths,
    )

    fe = WhisperFeatureExtractor(feature_size=n_mels, chunk_length=300, sampling_rate=16000,
                                 return_attention_mask=True)
    out = fe([x], sampling_rate=16000, return_attention_mask=True, padding="max_length",
             return_tensors="np")
    mask = out["attention_mask"][0]
    tokens = int(_get_feat_extract_output_lengths(mask.sum()))
    return out["input_features"][0], mask, tokens, fe


def _signals():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 4) / 16000
    return {
        "tone": (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        "noise": (0.2 * rng.standard_normal(16000 * 3 + 77)).astype(np.float32),
        "short": (0.3 * rng.standard_normal(161)).astype(np.float32),
        "loud_tail": np.concatenate([np.full(16000, 1e-3, np.float32),
                                     np.full(50, 0.9, np.float32)]),
    }


@pytest.mark.parametrize("name", list(_signals()))
def test_qwen_audio_features_equal_the_processor(name):
    x = _signals()[name]
    want, want_mask, tokens, fe = _processor_audio(x)
    feats, mask = media.qwen_audio_features(x)
    valid = int(want_mask.sum())
    assert valid == math.ceil(len(x) / 160) and mask.shape == (valid,) and mask.all()
    assert feats.shape == (128, valid) and feats.dtype == np.float32
    assert np.abs(feats - want[:, :valid]).max() <= 1e-4
    # The token count the processor gives the audio encoder.
    assert ((valid - 1) // 2 + 1 - 2) // 2 + 1 == tokens
    # Against the float64 oracle (transformers' numpy path) on the same padded signal.
    padded = np.zeros(16000 * 300, np.float64)
    padded[:len(x)] = x
    oracle = fe._np_extract_fbank_features(padded[None], "cpu")[0][:, :valid]
    assert np.abs(feats - oracle).max() <= 1e-4
    full, full_mask = media.qwen_audio_features(x, pad=True)
    assert full.shape == want.shape and np.array_equal(full_mask, want_mask)
    assert np.abs(full - want).max() <= 1e-4


# librosa's audioread fallback imports modules Python 3.11 deprecates (aifc, sunau, audioop).
@pytest.mark.filterwarnings("ignore:'(aifc|sunau|audioop)' is deprecated:DeprecationWarning")
def test_qwen_audio_from_a_file_equals_process_audio_info(tmp_path):
    from qwen_omni_utils.v2_5 import process_audio_info

    wav = tmp_path / "a.wav"
    F.ffmpeg("-f", "lavfi", "-i", "sine=frequency=700:sample_rate=16000:duration=2.5",
             "-ac", "2", "-c:a", "pcm_s16le", str(wav))
    conv = [{"role": "user", "content": [{"type": "audio", "audio": str(wav),
                                          "audio_start": 0.5, "audio_end": 2.0}]}]
    (samples,) = process_audio_info(conv, use_audio_in_video=False)
    want, want_mask, _, _ = _processor_audio(samples)
    feats, mask = media.qwen_audio_features(wav, start=0.5, end=2.0)
    assert len(mask) == int(want_mask.sum()) == math.ceil(len(samples) / 160)
    assert np.abs(feats - want[:, :len(mask)]).max() <= 1e-4


def test_qwen_audio_bad_input(tmp_path, clips):
    with pytest.raises(ValueError, match="16000"):
        media.qwen_audio_features(np.zeros(100, np.float32), sampling_rate=8000)
    with pytest.raises(ValueError, match="empty"):
        media.qwen_audio_features(np.zeros(0, np.float32))
    silent = tmp_path / "silent.mp4"
    F.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=1", "-c:v", "libx264",
             str(silent))
    with pytest.raises(media.MediaError, match="no audio stream") as e:
        media.qwen_audio_features(silent)
    assert e.value.path == str(silent)
    # A clip's own track: its decoded samples (AAC adds priming and padding to the 2 s).
    feats, mask = media.qwen_audio_features(clips["small"])
    samples = media.load_audio(clips["small"], downmix="mean")
    assert feats.shape == (128, math.ceil(len(samples) / 160)) == (128, len(mask))
    np.testing.assert_array_equal(feats, media.qwen_audio_features(samples)[0])
