"""Clips for training and evaluation (models/clips.py, clip_cache.py, splits.py, loaders.py)
on real N-MNIST samples."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import shared_path

from core.compress import StreamingCompressor
from models.clip_cache import ClipCache, cached_clips
from models.clips import (
    RandomCropClips,
    collate_clips,
    compress_span,
    parse_crop_us,
    plan_clips,
    random_crop,
)
from models.evaluate import mean_readout
from models.loaders import EpochSampler, clip_loader
from models.networks import build_network, get_config
from models.splits import SplitSpec, open_part, split_parts, stratified_subset
from replay.datasets import open_dataset
from replay.datasets.base import Subset

NMNIST = get_config("nmnist").compression  # 34x34, T=4, window 300 ms, hop 75 ms


@pytest.fixture(scope="module")
def nmnist_train():
    return open_dataset("nmnist", shared_path("nmnist"), "train")


@pytest.fixture(scope="module")
def few(nmnist_train):
    """20 real samples, two per digit."""
    return Subset(nmnist_train, stratified_subset(nmnist_train.labels, 20, seed=0))


def test_parse_crop_us():
    assert parse_crop_us(None) is None
    assert parse_crop_us("off") is None
    assert parse_crop_us("500000:1500000") == (500_000, 1_500_000)
    assert parse_crop_us("3e5") == (300_000, 300_000)
    for bad in ("1:0", "x:1", "0:5", "1:2:3"):
        with pytest.raises(ValueError, match="crop"):
            parse_crop_us(bad)


def test_plan_whole_and_windows_are_on_the_hop_grid():
    hop = NMNIST.step_us
    assert plan_clips(1000, 1000 + 306_000, NMNIST, "whole") == [(1000, 4)]  # 4.08 hops
    assert plan_clips(0, 340_000, NMNIST, "whole") == [(0, 5)]  # 4.53 hops
    assert plan_clips(0, 10, NMNIST, "whole") == [(0, 1)]  # at least one step
    assert plan_clips(0, 3_900_000, NMNIST, "windows") == [(i * 4 * hop, 4) for i in range(13)]
    with pytest.raises(ValueError, match="clip mode"):
        plan_clips(0, 1, NMNIST, "random")


@pytest.mark.parametrize("length_us", [100_000, 300_000, 2_000_000])
def test_random_crop_stays_on_the_sample(length_us):
    rng = np.random.default_rng(0)
    hop = 50_000
    starts = []
    for _ in range(200):
        t0, steps = random_crop(1_000, 1_000 + length_us, hop, (100_000, 400_000), rng)
        assert 2 <= steps <= 8
        end = t0 + steps * hop
        if steps * hop <= length_us:  # the crop lies inside the sample
            assert 1_000 <= t0 and end <= 1_000 + length_us
        else:  # the sample lies inside the crop
            assert t0 <= 1_000 and end >= 1_000 + length_us
        starts.append(t0)
    assert len(set(starts)) > 100  # start drawn per µs, not on a grid


def test_random_crops_are_seeded_per_epoch_and_sample(few):
    crops = RandomCropClips(few, NMNIST, (150_000, 300_000), seed=3)
    a, label, steps = crops[(0, 5)]
    b, _, _ = crops[(0, 5)]
    assert torch.equal(a, b)
    assert label == few.labels[5] and a.shape == (steps, *NMNIST.output_shape)
    assert 2 <= steps <= 4
    others = [crops[(epoch, 5)] for epoch in range(1, 6)]
    assert any(c.shape != a.shape or not torch.equal(c, a) for c, _, _ in others)
    again = RandomCropClips(few, NMNIST, (150_000, 300_000), seed=3)
    assert torch.equal(again[(0, 5)][0], a)
    # The crop is the compressor's output over all the sample's events on its grid.
    sample = few[5]
    rng = np.random.default_rng([3, 0, 5])
    t0, n = random_crop(sample.start_us, sample.end_us, NMNIST.step_us, (150_000, 300_000), rng)
    assert n == steps
    np.testing.assert_array_equal(a.numpy(), compress_span(sample.events, NMNIST, t0, n))


def test_whole_clip_is_what_the_streaming_compressor_emits(few, tmp_path):
    """Training clips and the live worker agree: same hop grid, same numbers."""
    clips = cached_clips(few, NMNIST, "whole", cache_dir=tmp_path)
    for i in (0, 7, 19):
        sample = few[i]
        clip, label, steps = clips[i]
        assert label == sample.label
        stream = StreamingCompressor(NMNIST, start_us=sample.start_us)
        emitted = [stream.push(sample.events)]
        emitted.append(stream.advance_to(sample.start_us + steps * NMNIST.step_us))
        streamed = np.concatenate([e.values for e in emitted])[:steps]
        assert len(streamed) == steps
        np.testing.assert_allclose(clip.numpy(), streamed, rtol=1e-5, atol=1e-6)
        assert float(clip.sum()) > 0


def test_clip_cache_is_reused_and_keyed_by_config(few, tmp_path):
    first, hit = ClipCache.open(few, NMNIST, "whole", name="nmnist-few", cache_dir=tmp_path)
    assert not hit and len(first) == len(few)
    again, hit = ClipCache.open(few, NMNIST, "whole", name="nmnist-few", cache_dir=tmp_path)
    assert hit and again.path == first.path
    np.testing.assert_array_equal(again.clips, first.clips)

    for changed in (
        get_config("nmnist").with_changes(steps=2).compression,
        get_config("nmnist").with_changes(mode="count").compression,
        get_config("nmnist").with_changes(tau_s_us=30_000.0).compression,
    ):
        other, hit = ClipCache.open(few, changed, "whole", name="nmnist-few", cache_dir=tmp_path)
        assert not hit and other.path != first.path
    windows, hit = ClipCache.open(few, NMNIST, "windows", name="nmnist-few", cache_dir=tmp_path)
    assert not hit and windows.path != first.path
    assert len({p.name for p in tmp_path.iterdir()}) == 5
    assert not list(tmp_path.glob(".*.tmp"))  # no temporaries left behind

    # The cached values are the compressor's, not a stale copy.
    sample = few[3]
    t0, steps = int(first.index[3, 1]), int(first.index[3, 2])
    fresh = compress_span(sample.events, NMNIST, t0, steps)
    np.testing.assert_array_equal(first.clip(3)[0], fresh)


def test_clip_cache_notices_a_changed_file(tmp_path):
    from tests.synthetic_datasets import write_nmnist_folder

    write_nmnist_folder(tmp_path / "data", splits=("Train",), per_class=1)
    data = open_dataset("nmnist", tmp_path / "data", "train")
    first, _ = ClipCache.open(data, NMNIST, "whole", cache_dir=tmp_path / "cache")
    path = data.files[0]
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again, hit = ClipCache.open(data, NMNIST, "whole", cache_dir=tmp_path / "cache")
    assert not hit and again.path != first.path


def test_a_damaged_clip_cache_entry_is_rebuilt(few, tmp_path):
    first, _ = ClipCache.open(few, NMNIST, "whole", name="nmnist-few", cache_dir=tmp_path)
    clips = np.array(first.clips)
    (first.path / "index.npy").write_bytes(b"\x93NUMPY truncated by a crash")
    again, hit = ClipCache.open(few, NMNIST, "whole", name="nmnist-few", cache_dir=tmp_path)
    assert not hit and again.path == first.path
    np.testing.assert_array_equal(again.clips, clips)
    assert not list(tmp_path.glob(".*.tmp"))


def test_padding_after_a_clip_does_not_change_its_readout(few, tmp_path):
    """Clips of different lengths share a batch: zero steps are appended and
    the causal network's mean readout over the real steps is unchanged."""
    torch.manual_seed(0)
    net = build_network(get_config("nmnist")).eval()
    crops = RandomCropClips(few, NMNIST, (75_000, 450_000), seed=1)
    items = [crops[(0, i)] for i in range(6)]
    assert len({steps for _, _, steps in items}) > 1
    batch = collate_clips(items)
    assert batch.clips.shape[:2] == (max(s for _, _, s in items), 6)
    with torch.no_grad():
        batched = mean_readout(net(batch.clips), batch.steps)
        for b, (clip, _, steps) in enumerate(items):
            alone = net(clip[:, None]).mean(0)[0]
            torch.testing.assert_close(batched[b], alone, rtol=1e-5, atol=1e-5)
            assert batch.clips[steps:, b].abs().sum() == 0


def test_split_parts_are_stratified_disjoint_and_repeatable(nmnist_train):
    spec = SplitSpec(validation_count=100, seed=0)
    train, val = split_parts(nmnist_train, spec)
    assert len(train) == 900 and len(val) == 100
    assert not set(train.indices) & set(val.indices)
    assert np.bincount(val.labels, minlength=10).min() >= 9
    again = open_part("nmnist", shared_path("nmnist"), "val", spec)
    np.testing.assert_array_equal(again.indices, val.indices)

    limited_train, limited_val = split_parts(nmnist_train, SplitSpec(validation_count=10, limit=50))
    assert len(limited_train) == 40 and len(limited_val) == 10
    assert set(np.bincount(limited_val.labels, minlength=10)) == {1}

    folds = [split_parts(nmnist_train, SplitSpec(folds=5, fold=f))[1] for f in range(5)]
    assert sorted(np.concatenate([f.indices for f in folds]).tolist()) == list(range(1000))


def test_split_spec_refuses_contradictions():
    with pytest.raises(ValueError, match="not both"):
        SplitSpec(validation_count=10, validation_fraction=0.1)
    with pytest.raises(ValueError, match="fold"):
        SplitSpec(folds=5, fold=5)
    with pytest.raises(ValueError, match="folds"):
        SplitSpec(fold=1)
    assert not SplitSpec(validation_count=0).has_validation


def test_epoch_sampler_shuffles_per_epoch_and_shards():
    sampler = EpochSampler(10, seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(i for _, i in first) == list(range(10)) and {e for e, _ in first} == {0}
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for _, i in second] != [i for _, i in first] and {e for e, _ in second} == {1}
    shards = [EpochSampler(10, seed=0, rank=r, world=2) for r in range(2)]
    seen = [i for s in shards for _, i in s]
    assert sorted(seen) == list(range(10))


def test_loader_gives_time_major_batches(few, tmp_path):
    loader = clip_loader(RandomCropClips(few, NMNIST, seed=0), batch_size=8, train=True)
    loader.sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == 2  # 20 samples, the last partial batch dropped
    assert batches[0].clips.shape == (4, 8, *NMNIST.output_shape)
    assert batches[0].steps.tolist() == [4] * 8
    evaluation = clip_loader(
        cached_clips(few, NMNIST, cache_dir=tmp_path), batch_size=8, train=False
    )
    labels = torch.cat([b.labels for b in evaluation])
    np.testing.assert_array_equal(labels.numpy(), few.labels)
