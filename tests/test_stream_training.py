"""Stream-aware training (opt-in): crops as the streaming worker sees samples in a
replay (models/stream_clips.py ``StreamCropClips``), the loss on the scored steps
(models/train.py), the options' defaults, and the streaming measure of
experiments/streaming_nmnist.py; real N-MNIST samples, CI-sized."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from core.labels import LabelSegment
from models.checkpoint import load_checkpoint
from models.clips import RandomCropClips, compress_span
from models.networks import get_config
from models.splits import SplitSpec, stratified_subset
from models.stream_clips import (
    StreamCrop,
    StreamCropClips,
    collate_stream_clips,
    replay_pieces,
    stream_crop_plan,
)
from models.train import TrainConfig, scored_readout, stream_loss, train
from replay.datasets import open_dataset
from replay.datasets.base import Subset

NMNIST = get_config("nmnist").compression  # T=4, hop 75 ms
COUNTS = dataclasses.replace(NMNIST, mode="count")  # exact event counts per step
HOP = NMNIST.step_us


@pytest.fixture(scope="module")
def few():
    """20 real samples, two per digit."""
    train_split = open_dataset("nmnist", shared_path("nmnist"), "train")
    return Subset(train_split, stratified_subset(train_split.labels, 20, seed=0))


def test_stream_crop_plan_puts_the_onset_at_the_phase():
    # No context, no phase: the grid starts at the onset; scored to the last step
    # that ends by the end (a 290 ms sample: 3 hops end inside it, as in a replay).
    assert stream_crop_plan(1_000, 291_000, 0, HOP, 0) == StreamCrop(1_000, 0, 3, 1_000)
    # 150 ms of context, onset 10 ms into a step: two steps before the onset's.
    plan = stream_crop_plan(1_000, 301_000, 150_000, HOP, 10_000)
    assert plan == StreamCrop(1_000 - 10_000 - 2 * HOP, 2, 6, 1_000)
    first_end = plan.t0_us + (plan.first + 1) * HOP
    assert plan.t0_us + plan.first * HOP < plan.onset_us < first_end
    assert plan.t0_us + plan.scored * HOP <= 301_000 < plan.t0_us + (plan.scored + 1) * HOP
    # Context shorter than the phase fits in the onset's step; a very short target
    # still gets one scored step.
    assert stream_crop_plan(1_000, 301_000, 10, HOP, 10_000).first == 0
    assert stream_crop_plan(1_000, 2_000, 0, HOP, 50_000).scored == 1
    with pytest.raises(ValueError, match="phase"):
        stream_crop_plan(0, 1, 0, HOP, HOP)


def test_replay_pieces_are_played_back_to_back(few):
    rng = np.random.default_rng(0)
    before = replay_pieces(few, 1_000_000, 500_000, 2_000, rng, before=True, exclude=3)
    after = replay_pieces(few, 1_000_000, 500_000, 2_000, rng, before=False, exclude=3)
    assert len(before) >= 2 and len(after) >= 2  # samples last ~300 ms
    # Before: the tails end gap before the next piece (last event + 1 + gap = next start).
    assert int(before[-1]["timestamp"][-1]) < 1_000_000 - 2_000
    for earlier, later in zip(before[:-1], before[1:], strict=True):
        assert int(earlier["timestamp"][-1]) < int(later["timestamp"][0]) - 2_000
    assert int(before[0]["timestamp"][0]) >= 1_000_000 - 500_000 - 2 * 2_000
    # After: heads from gap after the point on, in order.
    assert int(after[0]["timestamp"][0]) >= 1_000_000 + 2_000
    for earlier, later in zip(after[:-1], after[1:], strict=True):
        assert int(earlier["timestamp"][-1]) < int(later["timestamp"][0]) - 2_000
    for piece in before + after:
        assert np.all(np.diff(piece["timestamp"].astype(np.int64)) >= 0)
    # The excluded sample never appears: no piece is a shifted copy of its events.
    excluded = few[3].events
    assert all(len(p) != len(excluded) or not np.array_equal(p["x"], excluded["x"]) for p in before)


def test_without_context_a_stream_crop_is_the_plain_crop(few):
    plain = RandomCropClips(few, NMNIST, seed=3)
    stream = StreamCropClips(few, NMNIST, probability=0.0, seed=3)
    for i in (0, 5, 19):
        clip, label, steps = plain[(2, i)]
        long_clip, long_label, scored, first = stream[(2, i)]
        assert (long_label, scored, first) == (label, steps, 0)
        assert long_clip.shape == (stream.total_steps, *NMNIST.output_shape)
        # The steps after the crop carry the stream on (the rest of the sample, then others).
        np.testing.assert_array_equal(long_clip[:steps].numpy(), clip.numpy())
        assert float(long_clip[steps:].sum()) > 0


def test_a_stream_clip_holds_context_then_the_target(few):
    """Counts per step: other samples' tails before the onset, then exactly the
    target's events on a grid from its onset (no phase)."""
    clips = StreamCropClips(
        few,
        COUNTS,
        (375_000, 375_000),  # longer than every sample: the target is the whole sample
        probability=1.0,
        context_us=(150_000, 150_000),
        random_phase=False,
        seed=1,
    )
    assert clips.total_steps == 2 + 5 + 1
    for i in range(len(few)):
        clip, label, scored, first = clips[(0, i)]
        sample = few[i]
        assert label == sample.label and first == 2 and scored > first
        counts = clip.sum(dim=(1, 2, 3)).numpy()
        assert np.all(counts[:first] > 0)
        t = sample.events["timestamp"].astype(np.int64)
        onset = sample.start_us
        edges = onset + HOP * np.arange(scored - first + 1)
        np.testing.assert_array_equal(counts[first:scored], np.diff(np.searchsorted(t, edges)))
        assert onset + (scored - first) * HOP <= sample.end_us  # the last scored step ends inside
        # The clip is the compressor's output over those events on that grid.
        target = sample.events[np.searchsorted(t, onset) : np.searchsorted(t, edges[-1])]
        alone = compress_span(target, COUNTS, onset, scored - first)
        np.testing.assert_array_equal(clip[first:scored].numpy(), alone)


def test_a_random_phase_moves_the_onset_within_its_step(few):
    # 100 ms of context: the onset's step is step 2 for a phase below 25 ms, else step 1.
    phased = StreamCropClips(few, NMNIST, probability=1.0, context_us=(100_000, 100_000), seed=2)
    firsts = [phased[(epoch, i)][3] for epoch in range(3) for i in range(len(few))]
    assert set(firsts) == {1, 2} and 0.15 < firsts.count(2) / len(firsts) < 0.55
    fixed = StreamCropClips(
        few, NMNIST, probability=1.0, context_us=(100_000, 100_000), random_phase=False
    )
    assert {fixed[(0, i)][3] for i in range(len(few))} == {2}


def test_stream_clips_are_seeded_and_collate_without_padding(few):
    clips = StreamCropClips(few, NMNIST, probability=0.5, seed=7)
    a = clips[(4, 2)]
    b = StreamCropClips(few, NMNIST, probability=0.5, seed=7)[(4, 2)]
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    items = [clips[(0, i)] for i in range(8)]
    assert {item[3] > 0 for item in items} == {True, False}  # both kinds at p = 0.5
    batch = collate_stream_clips(items)
    assert batch.clips.shape == (clips.total_steps, 8, *NMNIST.output_shape)
    assert batch.steps.tolist() == [item[2] for item in items]
    assert batch.first.tolist() == [item[3] for item in items]
    for b_index, item in enumerate(items):
        assert torch.equal(batch.clips[:, b_index], item[0])
    with pytest.raises(ValueError, match="probability"):
        StreamCropClips(few, NMNIST, probability=1.5)
    with pytest.raises(ValueError, match="context"):
        StreamCropClips(few, NMNIST, context_us=(2, 1))


def test_stream_loss_counts_only_the_scored_steps():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, 10, requires_grad=True)
    labels = torch.tensor([1, 2, 3])
    first, steps = torch.tensor([0, 2, 5]), torch.tensor([4, 5, 6])
    batch = collate_stream_clips(
        [
            (torch.zeros(6, 2, 34, 34), int(y), int(n), int(f))
            for y, n, f in zip(labels, steps, first, strict=True)
        ]
    )
    mean, mask = scored_readout(logits, batch.first, batch.steps)
    assert mask.sum(0).tolist() == [4, 3, 1]
    torch.testing.assert_close(mean[1], logits[2:5, 1].mean(0))
    clip_logits, loss = stream_loss(logits, batch, "mean")
    torch.testing.assert_close(loss, F.cross_entropy(mean, labels))
    _, each = stream_loss(logits, batch, "each")
    expected = torch.stack(
        [
            F.cross_entropy(logits[f:n, b], labels[b].expand(n - f))
            for b, (f, n) in enumerate(zip(first.tolist(), steps.tolist(), strict=True))
        ]
    ).mean()
    torch.testing.assert_close(each, expected)
    # Steps outside the scored ones get no gradient.
    each.backward()
    assert (
        float(logits.grad[0:2, 1].abs().sum()) == 0 and float(logits.grad[:5, 2].abs().sum()) == 0
    )


def test_the_options_are_off_by_default_and_leave_the_config_as_before():
    tc = TrainConfig(dataset="nmnist", root="x")
    saved = tc.to_dict()
    assert not any(key.startswith("stream") for key in saved)  # runs resume and compare as before
    assert tc.stream_training is None
    on = TrainConfig(dataset="nmnist", root="x", stream_context=0.5, stream_context_us=(0, 150_000))
    assert on.to_dict()["stream_context"] == 0.5
    assert on.to_dict()["stream_context_us"] == [0, 150_000]
    assert on.stream_training == {
        "context": 0.5,
        "context_us": [0, 150_000],
        "gap_us": 0,
        "phase": True,
        "loss": "mean",
    }
    with pytest.raises(ValueError, match="stream_loss"):
        TrainConfig(dataset="nmnist", root="x", stream_loss="last")
    with pytest.raises(ValueError, match="random crops"):
        TrainConfig(dataset="nmnist", root="x", stream_context=0.5, random_crop=False)


def test_cli_flags_fill_the_stream_options():
    from stcsnn.commands.train import configure, train_config

    parser = argparse.ArgumentParser()
    configure(parser)
    base = ["--dataset", "nmnist", "--root", "x"]
    assert train_config(parser.parse_args(base)).stream_training is None
    tc = train_config(
        parser.parse_args(
            base
            + ["--stream-context", "0.5", "--stream-context-us", "0:225000"]
            + ["--stream-gap-us", "1000", "--no-stream-phase", "--stream-loss", "each"]
        )
    )
    assert tc.stream_training == {
        "context": 0.5,
        "context_us": [0, 225_000],
        "gap_us": 1000,
        "phase": False,
        "loss": "each",
    }
    with pytest.raises(ValueError, match="stream-context-us"):
        train_config(parser.parse_args(base + ["--stream-context-us", "a:b"]))


def test_a_tiny_stream_aware_run_records_how_it_was_trained(tmp_path):
    tc = TrainConfig(
        dataset="nmnist",
        root=str(shared_path("nmnist")),
        changes={"steps": 2, "channels": [4, 8], "hidden": 32},
        epochs=1,
        batch_size=8,
        split=SplitSpec(validation_count=10, limit=30, seed=0),
        out=str(tmp_path / "run"),
        device="cpu",
        workers=0,
        cache_dir=str(tmp_path / "cache"),
        stream_context=0.5,
        stream_loss="each",
    )
    summary = train(tc, log=lambda message: None)
    _, config, extra = load_checkpoint(summary["best_checkpoint"])
    assert extra["stream_training"]["loss"] == "each"
    assert extra["train_config"]["stream_context"] == 0.5
    line = json.loads(Path(summary["run_dir"], "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(line["train_loss"]) and 0 <= line["val_accuracy"] <= 1
    assert config.compression.steps == 2


def _experiment():
    path = Path(__file__).resolve().parents[1] / "experiments" / "streaming_nmnist.py"
    spec = importlib.util.spec_from_file_location("streaming_nmnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stream_scores_match_the_demo_definitions():
    experiment = _experiment()
    hop = 10
    t_end = np.arange(1, 13) * hop  # hops ending at 10 .. 120
    segments = [LabelSegment(1, 0, 55), LabelSegment(2, 55, 118)]  # the 2nd starts mid-hop
    top1 = np.array([0, 1, 1, 1, 1, 2, 1, 2, 0, 2, 2, 2])
    raw = np.array([1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0])
    result = experiment.score_stream(t_end, top1, raw, segments, hop)
    # Answers: the last hop ending inside each segment (50 -> 1, 110 -> 2).
    assert result["streaming_accuracy"] == 1.0 and result["segments"] == 2
    by_hop = result["hop_accuracy_by_hop_since_onset"]
    # The first hop of each: wrong at 10, right at 60 (smoothed); right, wrong (raw).
    assert by_hop[0]["hops"] == 2 and by_hop[0]["accuracy"] == 0.5
    assert by_hop[0]["accuracy_unsmoothed"] == 0.5
    assert [e["hops"] for e in by_hop[:6]] == [2, 2, 2, 2, 2, 1]
    assert result["top1_changes_per_sample"] == (1 + 4) / 2  # 0->1; 2->1->2->0->2
    latency = result["decision_latency_ms"]
    # Segment 1: correct from the hop ending at 20 (20 µs after onset 0); segment 2:
    # wrong at 90, correct from 100 on (45 µs after its onset 55).
    assert latency["decided"] == 2 and latency["median"] == pytest.approx((0.020 + 0.045) / 2)
    ema = experiment.ema_readout(np.array([[1.0, 0.0], [0.0, 1.0]]), 0.5)
    np.testing.assert_allclose(ema[1], [0.5 / 1.5, 1 / 1.5])
