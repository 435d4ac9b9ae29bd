"""Producer process -> worker process -> a subscriber of the test, on loopback: the
predictions equal an offline evaluation of the same windows; producer and worker
restarts; a producer far faster than the worker."""

from __future__ import annotations

import dataclasses
import math
import signal
import threading

import numpy as np
import torch

from core.compress import compress_clip
from core.events import concat_events
from core.source import Labels
from models.checkpoint import load_checkpoint
from replay.player import open_replay
from tests.pipeline_helpers import (
    Subscriber,
    nmnist_playlist,
    save_test_checkpoint,
    start_producer,
    start_worker,
)

HOP_US = 10_000


def test_replayed_nmnist_predictions_equal_offline_evaluation_of_the_same_windows(tmp_path):
    playlist = nmnist_playlist(tmp_path, digits=range(5))
    checkpoint = save_test_checkpoint(tmp_path / "model.pt")
    producer, producer_endpoint = start_producer(
        "--replay", str(playlist), "--speed", "max", "--lossless", "--wait-subscribers", "1"
    )
    worker, endpoint = start_worker(
        producer_endpoint,
        "--model", str(checkpoint), "--hop-us", str(HOP_US), "--lossless",
        "--wait-subscribers", "1", "--exit-on-end",
    )  # fmt: skip
    sub = Subscriber(endpoint)
    try:
        sub.collect(lambda m: m.type == "end", 30, children=(producer, worker))
        assert worker.process.wait(10) == 0 and producer.process.wait(10) == 0
    finally:
        sub.close()
        worker.stop()
        producer.stop()
    # Offline: the same events on the same grid, one clip through the network's forward.
    chunks, segments = [], []
    for item in open_replay(playlist).items(threading.Event()):
        if isinstance(item, np.ndarray):
            chunks.append(item)
        elif isinstance(item, Labels):
            segments += item.segments
    events = concat_events(chunks)
    model, config, _ = load_checkpoint(checkpoint)
    t0 = int(events["timestamp"][0]) - int(events["timestamp"][0]) % HOP_US
    steps = (int(events["timestamp"][-1]) - t0) // HOP_US + 1  # the last one flushed at end
    compression = dataclasses.replace(config.compression, steps=steps, window_us=steps * HOP_US)
    clip = torch.from_numpy(compress_clip(events, compression, t0_us=t0, window_us=steps * HOP_US))
    with torch.no_grad():
        expected_logits = model(clip[:, None])[:, 0].numpy()
    assert expected_logits.std(axis=0).max() > 0.1  # a readout that moves: a real comparison
    predictions = sub.of_type("prediction")
    assert [p.step for p in predictions] == list(range(steps))
    assert [p.t_end_us for p in predictions] == [t0 + HOP_US * (k + 1) for k in range(steps)]
    logits = np.array([p.logits for p in predictions])
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    # The smoothed probabilities: an EMA of the readout, tau from the checkpoint.
    decay = math.exp(-HOP_US / config.stream_ema_tau_us)
    weights = decay ** np.arange(steps)[::-1]
    for k in (0, 1, steps // 2, steps - 1):
        smoothed = (weights[-k - 1 :, None] * expected_logits[: k + 1]).sum(0)
        smoothed /= weights[-k - 1 :].sum()
        probs = np.exp(smoothed - smoothed.max())
        np.testing.assert_allclose(predictions[k].probs, probs / probs.sum(), atol=1e-5)
    # Ground truth is forwarded, in order, before the predictions it covers.
    forwarded = [s for m in sub.of_type("labels") for s in m.segments]
    assert forwarded == segments and [s.label for s in segments] == [0, 1, 2, 3, 4]
    stats = worker.result()
    assert stats["dropped_events"] == 0 and stats["steps_skipped"] == 0
    assert stats["streams"]["replay"]["events"] == len(events)
    assert producer.result()["events"] == len(events)


def _synthetic_producer(*extra: str):
    return start_producer(
        "--synthetic", "200k", "--sensor", "34x34", "--speed", "1", "--wait-subscribers", "1",
        *extra,
    )  # fmt: skip


def test_producer_restart_mid_stream_resets_the_worker_state(tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "model.pt")
    first, endpoint = _synthetic_producer()
    worker, predictions_endpoint = start_worker(
        endpoint, "--model", str(checkpoint), "--hop-us", str(HOP_US), "--wait-subscribers", "1"
    )
    sub = Subscriber(predictions_endpoint)
    second = None
    try:
        children = (first, worker)
        sub.collect(lambda m: m.type == "prediction" and m.step >= 10, 20, children)
        first_session = sub.of_type("prediction")[0].source_session
        first.signal(signal.SIGKILL)  # no end message: the worker only sees a new session
        first.process.wait(5)
        second, _ = _synthetic_producer("--endpoint", endpoint, "--settle-s", "0")
        sub.collect(
            lambda m: m.type == "prediction" and m.source_session != first_session and m.step >= 5,
            20,
            (second, worker),
        )
        sub.collect(lambda m: m.type == "stats", 5, (worker,))
    finally:
        sub.close()
        worker.stop()
        first.stop()
        if second is not None:
            second.stop()
    predictions = sub.of_type("prediction")
    sessions = [p.source_session for p in predictions]
    switch = sessions.index(next(s for s in sessions if s != first_session))
    assert set(sessions[switch:]) == {sessions[switch]}  # no prediction of the old one after
    restarted = [p.step for p in predictions[switch:]]
    assert restarted[:5] == [0, 1, 2, 3, 4]  # a fresh grid and state from the restart
    # Time restarted from 0 with the new producer: the new grid's first hop ends at 10 ms.
    assert predictions[switch].t_end_us == HOP_US
    stats = worker.result()
    assert stats["restarts"] == {"synthetic": 1}
    assert stats["streams"]["synthetic"]["sessions"] == 2
    assert stats["errors"] == 0


def test_a_new_worker_process_picks_up_a_running_stream(tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "model.pt")
    producer, endpoint = _synthetic_producer()
    args = ("--model", str(checkpoint), "--hop-us", str(HOP_US), "--wait-subscribers", "1")
    first, first_endpoint = start_worker(endpoint, *args, name="worker 1")
    sub = Subscriber(first_endpoint)
    second = sub2 = None
    try:
        sub.collect(lambda m: m.type == "prediction", 20, (producer, first))
        first.signal(signal.SIGINT)
        assert first.process.wait(10) == 0
        last_t_us = sub.of_type("prediction")[-1].t_end_us
        second, second_endpoint = start_worker(endpoint, *args, name="worker 2")
        sub2 = Subscriber(second_endpoint)
        sub2.collect(lambda m: m.type == "prediction" and m.step >= 3, 20, (producer, second))
        assert producer.returncode is None  # the producer never noticed beyond a subscriber
    finally:
        sub.close()
        if sub2 is not None:
            sub2.close()
        for child in (second, first, producer):
            if child is not None:
                child.stop()
    picked_up = sub2.of_type("prediction")
    assert picked_up[0].step == 0  # a fresh state for the stream
    assert picked_up[0].t_end_us > last_t_us  # where the stream is now, not its start
    assert picked_up[0].source_session == sub.of_type("prediction")[0].source_session
    assert first.result()["final"] is True


def test_a_producer_far_faster_than_the_worker_keeps_memory_bounded_and_counts_drops(tmp_path):
    checkpoint = save_test_checkpoint(tmp_path / "model.pt")
    max_pending_events = 100_000
    # 3 s of 5 M ev/s, unpaced (~14 M ev/s of generation); 1 ms hops: 3,000 steps
    # of the network wanted, far more than the worker does in the time.
    producer, endpoint = start_producer(
        "--synthetic", "5M", "--duration-s", "3", "--speed", "max", "--wait-subscribers", "1"
    )
    worker, predictions_endpoint = start_worker(
        endpoint,
        "--model", str(checkpoint), "--hop-us", "1000", "--wait-subscribers", "1",
        "--max-pending-events", str(max_pending_events), "--exit-on-end",
    )  # fmt: skip
    sub = Subscriber(predictions_endpoint)
    try:
        sub.collect(lambda m: m.type == "end", 60, (producer, worker))
        assert worker.process.wait(20) == 0 and producer.process.wait(10) == 0
    finally:
        sub.close()
        worker.stop()
        producer.stop()
    produced = producer.result()
    stats = worker.result()
    stream = stats["streams"]["synthetic"]
    # Every event is accounted for: sent or dropped by the producer, then processed or
    # dropped by the worker's queue; every step either ran the network or was skipped.
    assert stats["events_received"]["synthetic"] == produced["events"]
    assert produced["events"] == stream["events"] + stats["dropped_events"]
    assert stream["steps"] == stream["predictions"] + stream["steps_skipped"]
    dropped = produced["dropped_events"] + stats["dropped_events"] + stream["steps_skipped"]
    assert dropped > 0, (produced, stats)
    assert stats["peak_pending_events"] <= max_pending_events
    # Memory: the queue is bounded, so the worker's peak resident memory stays near what
    # torch and the model take (about 250-265 MB here); an unbounded queue would have
    # held most of the 240 MB of events the producer sent.
    assert stats["peak_rss_mb"] < 400, stats["peak_rss_mb"]
    assert stats["errors"] == 0
    print(
        f"\noverload: producer sent {produced['events']:,} and dropped "
        f"{produced['dropped_events']:,} events; worker dropped {stats['dropped_events']:,}, "
        f"skipped {stream['steps_skipped']} of {stream['steps']} steps; "
        f"peak queue {stats['peak_pending_events']:,} events; peak RSS {stats['peak_rss_mb']} MB"
    )


def test_workers_share_streams_by_id_and_by_shard(tmp_path):
    from streamer.worker import shard_of

    assert (shard_of("cam0", 2), shard_of("cam2", 2)) == (0, 1)
    checkpoint = save_test_checkpoint(tmp_path / "model.pt")
    cam0, endpoint0 = _synthetic_producer("--stream-id", "cam0")
    cam2, endpoint2 = _synthetic_producer("--stream-id", "cam2")
    both = f"{endpoint0},{endpoint2}"
    args = ("--model", str(checkpoint), "--hop-us", str(HOP_US), "--wait-subscribers", "1")
    by_id, by_id_endpoint = start_worker(both, *args, "--streams", "cam2", name="worker cam2")
    by_shard, by_shard_endpoint = start_worker(both, *args, "--shard", "0/2", name="shard 0/2")
    subs = [Subscriber(by_id_endpoint), Subscriber(by_shard_endpoint)]
    children = (cam0, cam2, by_id, by_shard)
    try:
        for sub in subs:
            sub.collect(lambda m: m.type == "prediction" and m.step >= 5, 20, children)
        subs[1].collect(lambda m: m.type == "stats", 5, children)
    finally:
        for sub in subs:
            sub.close()
        for child in children:
            child.stop()
    assert {m.stream for m in subs[0].of_type("prediction")} == {"cam2"}
    assert {m.stream for m in subs[1].of_type("prediction")} == {"cam0"}
    # --streams subscribes per stream: the producer never sends cam0 to that worker;
    # --shard receives everything and drops the other shard's messages.
    assert by_id.result()["ignored_messages"] == 0
    assert by_shard.result()["ignored_messages"] > 0
