"""Bad inputs: every one is a MediaError naming the path; nothing crashes, panics or hangs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _media_fixtures as F
from r1omni_fast import media
from r1omni_fast.media import pyav as media_pyav

pytestmark = pytest.mark.skipif(not media.native_available(),
                                reason="native extension not built")

SMALL = dict(num_frames=4, image_size=32, n_mels=80)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    spec = F.ClipSpec("mutate_me", 96, 64, 12, b_frames=2, gop=4, audio_codec="aac",
                      sample_rate=16000)
    return F.write_clip(spec, folder)


def assert_media_error(path, **kw):
    with pytest.raises(media.MediaError) as e:
        media.load_clip(path, **{**SMALL, **kw})
    assert e.value.path == str(path), e.value
    assert e.value.reason
    with pytest.raises(media.MediaError):
        media.decode_frames(path, [0])
    return e.value


def test_missing_path(tmp_path):
    err = assert_media_error(tmp_path / "nope.mp4")
    assert "cannot read" in err.reason


def test_directory(tmp_path):
    assert_media_error(tmp_path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    assert "empty" in assert_media_error(p).reason


def test_text_file(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("these are not the frames you are looking for\n" * 50)
    assert_media_error(p)


def test_png(tmp_path):
    p = F.write_png(tmp_path)
    assert "still image" in assert_media_error(p).reason
    with pytest.raises(media.MediaError, match="still image"):
        media_pyav.load_clip(p)


def test_random_bytes(tmp_path):
    p = tmp_path / "random.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    assert_media_error(p)


@pytest.mark.parametrize("codec", ["aac", "mp3"])
def test_audio_only_file(tmp_path, codec):
    p = F.write_audio_only(tmp_path, codec)
    err = assert_media_error(p)
    assert "no video stream" in err.reason
    assert media.load_audio(p) is not None


@pytest.mark.parametrize("where", ["header", "mdat_30", "mdat_60", "mdat_95", "moov_start",
                                   "moov_middle"])
def test_truncated_mp4(good, tmp_path, where):
    data = good.read_bytes()
    moov = data.rfind(b"moov") - 4
    mdat = data.find(b"mdat") + 4
    cut = {"header": 20, "mdat_30": mdat + (moov - mdat) * 3 // 10,
           "mdat_60": mdat + (moov - mdat) * 6 // 10, "mdat_95": mdat + (moov - mdat) * 95 // 100,
           "moov_start": moov + 16, "moov_middle": moov + (len(data) - moov) // 2}[where]
    p = tmp_path / f"cut_{where}.mp4"
    p.write_bytes(data[:cut])
    assert_media_error(p)


def test_truncated_faststart_mp4(tmp_path):
    # moov first: the index survives the cut, the packets do not.
    import av

    src = F.write_clip(F.ClipSpec("faststart", 96, 64, 30, gop=5), tmp_path)
    fast = tmp_path / "fast.mp4"
    with av.open(str(src)) as i, av.open(str(fast), "w", options={"movflags": "faststart"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for pkt in i.demux(i.streams.video[0]):
            if pkt.dts is None:
                continue
            pkt.stream = s
            o.mux(pkt)
    data = fast.read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")
    cut = tmp_path / "fast_cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    err = assert_media_error(cut)
    assert "truncated" in err.reason


def test_corrupt_packets_mid_stream(good, tmp_path):
    # Overwrite a stretch in the middle of mdat with garbage: decode must either give frames
    # or a MediaError, never crash; with the picture data gone, the clip is reported corrupt or
    # decodes with concealment (both acceptable), and it must not hang.
    data = bytearray(good.read_bytes())
    start = data.find(b"mdat") + 8
    mid = start + (len(data) - start) // 2
    data[mid: mid + 4000] = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    p = tmp_path / "corrupt_mid.mp4"
    p.write_bytes(bytes(data))
    try:
        c = media.load_clip(p, **SMALL)
        assert c.frames.shape == (4, 3, 32, 32) and np.isfinite(c.frames).all()
    except media.MediaError as e:
        assert e.path == str(p)


def test_dimension_limit(good):
    with pytest.raises(media.MediaError) as e:
        media.load_clip(good, max_dimension=64, **SMALL)  # the clip is 96x64
    assert "dimension limit" in e.value.reason and e.value.path == str(good)
    assert media.load_clip(good, max_dimension=96, **SMALL).frames.shape[0] == 4


def test_index_out_of_range(good):
    with pytest.raises(media.MediaError, match="out of range"):
        media.decode_frames(good, [0, 12])
    with pytest.raises(media.MediaError, match="negative"):
        media.decode_frames(good, [-1])


def test_bad_options_are_value_errors(good):
    for kw in [dict(num_frames=0), dict(image_size=0), dict(aspect="crop"), dict(n_mels=0),
               dict(std=(1.0, 0.0, 1.0)), dict(mean=(0.5, 0.5))]:
        with pytest.raises(ValueError):
            media.load_clip(good, **kw)


def test_batch_of_bad_items(good, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    paths = [empty, good, tmp_path / "missing.mp4", good]
    out = media.load_batch(paths, **SMALL)
    assert isinstance(out[0], media.MediaError) and out[0].path == str(empty)
    assert isinstance(out[2], media.MediaError)
    assert np.array_equal(out[1].frames, out[3].frames)


def mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for kind, pos, value, length in edits:
        if not b:  # cut to nothing: no byte left to edit
            break
        i = pos % len(b)
        if kind == "set":
            b[i] = value
        elif kind == "fill":
            b[i:i + length] = bytes([value]) * len(b[i:i + length])
        elif kind == "cut":
            del b[i:]
        elif kind == "dup":
            b[i:i] = b[i:i + length]
    return bytes(b)


edit = st.tuples(st.sampled_from(["set", "set", "fill", "cut", "dup"]),
                 st.integers(0, 1 << 24), st.integers(0, 255), st.integers(1, 512))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(edit, min_size=1, max_size=6))
def test_mutated_bytes_never_crash(good, tmp_path, edits):
    p = tmp_path / "mutant.mp4"
    p.write_bytes(mutate(good.read_bytes(), edits))
    out = media.load_batch([p], **SMALL)
    assert len(out) == 1
    if isinstance(out[0], media.MediaError):
        assert out[0].path == str(p)
    else:
        assert out[0].frames.shape == (4, 3, 32, 32)
        assert np.isfinite(out[0].frames).all() and np.isfinite(out[0].mel).all()
        assert out[0].fps != 0.0  # a rate, a timestamp-derived rate, or NaN; never 0
    os.remove(p)
