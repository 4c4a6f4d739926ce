"""Batch order, the clip collator and background prefetching, on real decoded clips."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from _data_fixtures import make_synth, pyav_load_batch
from r1omni_fast.data import DataError, read_data
from r1omni_fast.data.collate import ClipCollator, epoch_batches, prefetch
from r1omni_fast.data.synthetic import CLASS_CUES

LABELS = ["happy", "sad", "angry", "neutral"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth"), n=12, seed=5, test_fraction=0.0)


@pytest.fixture(scope="module")
def samples(synth):
    return read_data(synth.train, labels=LABELS, on_error="raise").samples


@pytest.fixture(scope="module")
def params(synth):
    return {c["id"]: c for c in json.loads(synth.manifest.read_text())["clips"]}


def collator(**kw):
    kw.setdefault("loader", pyav_load_batch)
    return ClipCollator(num_frames=4, image_size=48, aspect="pad", n_mels=32, **kw)


def frame_rgb(frames: np.ndarray) -> np.ndarray:
    """Undo the (x/255 - 0.5)/0.5 normalisation."""
    return (np.asarray(frames) * 0.5 + 0.5) * 255.0


def assert_batch_matches_samples(batch, params):
    """Each row holds its own sample's clip: the face colour (or a plain screen) and its audio."""
    for row, sample in enumerate(batch.samples):
        info = params[sample.id]
        rgb = frame_rgb(batch.frames[row])  # (k, 3, S, S)
        S = rgb.shape[-1]
        cx = info["params"]["cx"] / 96 * S - 0.55 * info["params"]["radius"] / 96 * S
        cy = info["params"]["cy"] / 96 * S + 0.05 * info["params"]["radius"] / 96 * S
        patch = rgb[:, :, int(round(cy)), int(round(cx))].mean(axis=0)
        if info["cue"] == "audio":
            assert np.abs(patch - info["params"]["background"]).max() < 6
        else:
            np.testing.assert_allclose(patch, CLASS_CUES[sample.label].colour, atol=20)
        assert bool(batch.has_audio[row])
        silent = info["cue"] == "video"
        assert (float(batch.mel[row].max()) < -5) == silent


def test_epoch_batches_is_a_reproducible_partition():
    a = epoch_batches(10, 3, seed=1, epoch=0)
    assert a == epoch_batches(10, 3, seed=1, epoch=0)
    assert [len(b) for b in a] == [3, 3, 3, 1]
    assert sorted(i for b in a for i in b) == list(range(10))
    assert a != epoch_batches(10, 3, seed=1, epoch=1)
    assert a != epoch_batches(10, 3, seed=2, epoch=0)
    assert epoch_batches(10, 3, seed=1, epoch=0, drop_last=True) == a[:3]
    assert epoch_batches(5, 2, seed=0, epoch=0, shuffle=False) == [[0, 1], [2, 3], [4]]
    expected = np.random.default_rng([1, 0]).permutation(10).tolist()
    assert [i for b in a for i in b] == expected
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        epoch_batches(10, 0, seed=0, epoch=0)


def test_collator_stacks_each_samples_own_clip(samples, params):
    batch = collator()(samples[:5], index=7)
    assert batch.index == 7 and len(batch) == 5 and batch.skipped == []
    assert tuple(batch.frames.shape) == (5, 4, 3, 48, 48)
    assert tuple(batch.mel.shape) == (5, 32, 3000)
    assert tuple(batch.frame_indices.shape) == (5, 4)
    assert batch.frame_indices[0].tolist() == [1, 4, 7, 10]  # seg = 11/4 over 12 frames
    assert_batch_matches_samples(batch, params)


def test_prefetch_keeps_input_order_when_workers_finish_out_of_order(samples, params):
    order = epoch_batches(len(samples), 3, seed=0, epoch=0)
    first_paths = {str(samples[b[0]].video) for b in order[::2]}

    def uneven_loader(paths, **kw):  # even-numbered batches finish last
        if str(paths[0]) in first_paths:
            time.sleep(0.15)
        return pyav_load_batch(paths, **kw)

    batches = list(prefetch(([samples[i] for i in b] for b in order),
                            collator(loader=uneven_loader), depth=3, workers=3))
    assert [b.index for b in batches] == list(range(len(order)))
    assert [[s.id for s in b.samples] for b in batches] == [[samples[i].id for i in b] for b in order]
    for b in batches:
        assert_batch_matches_samples(b, params)


def test_prefetch_runs_at_most_depth_batches_ahead(samples):
    started = []
    lock = threading.Lock()
    collate = collator()

    def counting(items, index):
        with lock:
            started.append(index)
        return collate(items, index)

    chunks = [samples[i:i + 2] for i in range(0, len(samples), 2)]
    consumed = 0
    for batch in prefetch(chunks, counting, depth=2, workers=2):
        consumed += 1
        time.sleep(0.05)  # a slow "training step": workers would run ahead if unbounded
        with lock:
            assert len(started) <= consumed + 2
        assert batch.index == consumed - 1
    assert sorted(started) == list(range(len(chunks)))


def test_prefetch_loads_the_next_batch_while_the_consumer_works(samples):
    started = {i: threading.Event() for i in range(4)}

    def collate(items, index):
        started[index].set()
        return index

    for index in prefetch([[s] for s in samples[:4]], collate, depth=1, workers=1):
        if index + 1 < 4:
            # Still holding batch `index`: the next one must already be loading in the background.
            assert started[index + 1].wait(timeout=10), f"batch {index + 1} did not start ahead"


def test_prefetch_reraises_at_the_failing_batch_and_stops_cleanly(samples):
    def flaky(items, index):
        if index == 2:
            raise RuntimeError("decoder exploded on batch 2")
        return index

    got = []
    with pytest.raises(RuntimeError, match="batch 2"):
        for index in prefetch([[s] for s in samples], flaky, depth=2, workers=2):
            got.append(index)
    assert got == [0, 1]

    started = []
    gen = prefetch([[s] for s in samples], lambda items, i: started.append(i) or i, depth=2)
    assert next(gen) == 0
    gen.close()
    assert len(started) <= 3


@pytest.fixture
def with_corrupt(samples, tmp_path):
    bad_path = tmp_path / "corrupt.mp4"
    bad_path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    from dataclasses import replace

    bad = replace(samples[1], id="broken-clip", video=bad_path)
    return [samples[0], bad, samples[2]]


def test_media_errors_are_skipped_with_the_sample_id(with_corrupt, params):
    batch = collator()(with_corrupt)
    assert [s.id for s in batch.samples] == [with_corrupt[0].id, with_corrupt[2].id]
    assert [sid for sid, _ in batch.skipped] == ["broken-clip"]
    assert "corrupt.mp4" in batch.skipped[0][1]
    assert batch.frames.shape[0] == 2
    assert_batch_matches_samples(batch, params)


def test_media_errors_raise_with_the_sample_id_when_asked(with_corrupt):
    with pytest.raises(DataError, match=r"sample broken-clip \(.*train\.json:\d+\): cannot load media: .*corrupt\.mp4"):
        collator(on_error="raise")(with_corrupt)


def test_a_batch_whose_every_item_fails_is_empty_not_dropped(with_corrupt):
    batches = list(prefetch([[with_corrupt[1]], with_corrupt[:1]], collator(), depth=2))
    assert [len(b) for b in batches] == [0, 1]
    assert batches[0].frames is None and batches[0].skipped[0][0] == "broken-clip"


def test_separate_audio_files_and_text_fn_reach_the_loader(samples, tmp_path):
    from dataclasses import replace

    seen = {}

    def recording_loader(paths, **kw):
        seen.update(kw)
        return pyav_load_batch(paths, **kw)

    # the audio of clip 3 attached to clip 0's picture
    mixed = [replace(samples[0], audio=samples[3].video), samples[1]]
    batch = collator(loader=recording_loader, text_fn=lambda ss: [s.label for s in ss])(mixed)
    assert seen["audio_paths"] == [str(samples[3].video), None]
    assert batch.text == [samples[0].label, samples[1].label]
    alone = collator()([samples[3]])
    np.testing.assert_array_equal(batch.mel[0].numpy(), alone.mel[0].numpy())


def test_default_loader_is_r1omni_fast_media(samples):
    media = pytest.importorskip("r1omni_fast.media")
    coll = ClipCollator(num_frames=4, image_size=48, n_mels=80)
    assert coll.loader is media.load_batch
    batch = coll(samples[:2])
    assert tuple(batch.frames.shape) == (2, 4, 3, 48, 48) and tuple(batch.mel.shape) == (2, 80, 3000)
