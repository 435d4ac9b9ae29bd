"""The inference worker: its queue policies, step runner and per-stream pipeline in-process
(no sockets), and the real `stcsnn worker` process fed by a raw socket of the test with
garbage, sequence gaps, invalid events, a time jump and a producer restart."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time

import numpy as np
import pytest
import torch
import zmq

from core.compress import CompressionConfig
from core.events import SensorSize, make_events
from models.checkpoint import load_checkpoint, save_checkpoint
from models.default_checkpoints import default_checkpoint
from models.runner import (
    CudaGraphRunner,
    StepRunner,
    WindowRunner,
    choose_device,
    default_checkpoint_path,
    load_model,
    make_runner,
)
from streamer import wire
from streamer.stream_pipeline import _Provenance, stream_compression
from streamer.transport import Subscriptions, bind_xpub
from streamer.worker import WorkerOptions, shard_of
from streamer.worker_queue import Pending, PendingQueue
from tests.pipeline_helpers import Subscriber, save_test_checkpoint, start_worker


def _pending(stream: str, count: int, message_type: str = "events", seq: int = 0) -> Pending:
    events = make_events(np.arange(count), np.zeros(count), np.zeros(count), np.ones(count))
    envelope = {"stream": stream, "session": "s", "seq": seq}
    if message_type == "events":
        message = wire.Events(**envelope, events=events, sensor=SensorSize(34, 34))
    elif message_type == "labels":
        message = wire.Labels(**envelope, segments=())
    else:
        message = wire.End(**envelope)
    return Pending(message, time.time_ns())


# --- the queue between the receiving and the processing thread ------------------------


def test_drop_policy_keeps_the_newest_events_and_every_control_message():
    queue = PendingQueue(max_events=100, max_messages=1000, policy="drop")
    stop = threading.Event()
    queue.put(_pending("a", 0, "labels"), stop)
    for seq in range(30):
        queue.put(_pending("a", 10, seq=seq), stop)
    queue.put(_pending("a", 0, "end", seq=30), stop)
    assert queue.peak_events <= 100
    items = queue.take_all(0)
    kept = [i.message.seq for i in items if i.message.type == "events"]
    assert kept == list(range(30 - len(kept), 30))  # the newest, in order
    assert [i.message.type for i in items][0] == "labels" and items[-1].message.type == "end"
    assert queue.dropped_events["a"] == 10 * (30 - len(kept))
    assert queue.dropped_messages["a"] == 30 - len(kept)
    assert queue.take_all(0) == [] and queue.counts() == (0, 0)


def test_drop_policy_drops_a_message_larger_than_the_whole_queue():
    queue = PendingQueue(max_events=100, max_messages=10, policy="drop")
    queue.put(_pending("a", 101), threading.Event())
    assert queue.take_all(0) == [] and queue.dropped_events["a"] == 101


def test_block_policy_waits_for_room_and_loses_nothing():
    queue = PendingQueue(max_events=50, max_messages=1000, policy="block")
    stop = threading.Event()
    done = threading.Event()

    def producer():
        for seq in range(20):
            queue.put(_pending("a", 10, seq=seq), stop)
        done.set()

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    time.sleep(0.2)
    assert not done.is_set()  # blocked at the bound
    assert queue.counts()[0] <= 50
    taken = []
    while not done.is_set() or queue.counts()[1]:
        taken += queue.take_all(0.05)
    thread.join(2)
    assert [i.message.seq for i in taken] == list(range(20))
    assert sum(queue.dropped_events.values()) == 0 and queue.blocked_s > 0


def test_provenance_names_the_last_contributing_and_the_closing_message():
    provenance = _Provenance(
        first_us=np.array([0, 10, 20]),
        last_us=np.array([9, 19, 29]),
        sent_ns=np.array([100, 200, 300]),
        received_ns=np.array([110, 210, 310]),
        before_sent_ns=50,
    )
    # A step ending at 15: message 1 holds its last events, message 1 closes it.
    assert provenance.for_step(15) == (200, 200, 210)
    # Ending at 20 (exclusive): message 1 holds the last events, message 2 closes it.
    assert provenance.for_step(20) == (200, 300, 310)
    # Ending at 0: no message of this push had events before it.
    assert provenance.for_step(0) == (50, 100, 110)
    # Ending after every event (closed by advance_to/flush): the last message.
    assert provenance.for_step(40) == (300, 300, 310)


def test_options_shards_and_hop_override():
    assert stream_compression(CompressionConfig(34, 34, steps=4, window_us=300_000), 10_000) == (
        CompressionConfig(34, 34, steps=4, window_us=40_000)
    )
    ids = [f"cam{i}" for i in range(200)]
    shards = [shard_of(s, 3) for s in ids]
    assert set(shards) == {0, 1, 2} and shards == [shard_of(s, 3) for s in ids]  # stable
    halves = [shard_of(f"cam{i}", 2) for i in range(100)]  # sequential ids spread too
    assert 35 <= sum(halves) <= 65
    for bad in (
        dict(connect=[]),
        dict(connect=["tcp://x:1"], overload="fast"),
        dict(connect=["tcp://x:1"], shard=(2, 2)),
        dict(connect=["tcp://x:1"], streams=("a/b",)),
        dict(connect=["tcp://x:1"], max_steps_per_push=0),
    ):
        with pytest.raises(ValueError):
            WorkerOptions(**bad)
    with pytest.raises(ValueError, match="hop_us"):
        stream_compression(CompressionConfig(34, 34), 0)


# --- the step runner ---------------------------------------------------------------------


def trained_nmnist():
    """The committed N-MNIST network: its readout moves with the input (an untrained
    one at these input scales often never spikes, which would let any runner pass)."""
    model, config, _ = load_checkpoint(default_checkpoint("nmnist"))
    return model, config


def test_runner_steps_equal_the_clip_forward_and_keep_streams_apart():
    torch.manual_seed(1)
    model, config = trained_nmnist()
    runner = make_runner(model, choose_device("cpu"))
    assert isinstance(runner, StepRunner)
    clip = torch.rand(6, 2, *config.input_shape) * 3  # two streams of 6 steps
    with torch.no_grad():
        expected = model(clip).numpy()  # [T, B, classes]
    assert expected.std(axis=0).max() > 0.1 and np.abs(expected[:, 0] - expected[:, 1]).max() > 0.1
    a, b = runner.new_slot(), runner.new_slot()
    for t in range(6):  # interleaved
        np.testing.assert_allclose(runner.step(clip[t, 0].numpy(), a), expected[t, 0], atol=1e-5)
        np.testing.assert_allclose(runner.step(clip[t, 1].numpy(), b), expected[t, 1], atol=1e-5)
    runner.reset(a)
    np.testing.assert_allclose(runner.step(clip[0, 0].numpy(), a), expected[0, 0], atol=1e-5)


def test_window_runner_answers_the_mean_readout_of_the_last_n_steps_from_zero_state():
    torch.manual_seed(3)
    model, config = trained_nmnist()
    runner = make_runner(model, choose_device("cpu"), window_steps=3)
    assert isinstance(runner, WindowRunner) and "window of 3" in runner.description
    clip = torch.rand(7, 2, *config.input_shape) * 3  # two streams of 7 steps
    a, b = runner.new_slot(), runner.new_slot()
    for t in range(7):  # interleaved
        for slot, stream in ((a, 0), (b, 1)):
            window = clip[max(0, t - 2) : t + 1, stream : stream + 1]
            with torch.no_grad():
                expected = model(window).mean(0)[0].numpy()  # a clip from zero state
            x = clip[t, stream].numpy().copy()
            answer = runner.step(x, slot)
            x[:] = 0  # the runner keeps its own copy of the step
            np.testing.assert_allclose(answer, expected, atol=1e-5)
    # Nothing older than the window: the stateful step differs from it after 3 steps.
    stateful = make_runner(model, choose_device("cpu"))
    slot = stateful.new_slot()
    last = [stateful.step(clip[t, 0].numpy(), slot) for t in range(7)][-1]
    assert not np.allclose(last, runner.step(clip[6, 0].numpy(), runner.new_slot()))
    runner.reset(a)
    assert len(a.steps) == 0
    with pytest.raises(ValueError, match="window"):
        make_runner(model, choose_device("cpu"), window_steps=0)
    with pytest.raises(ValueError, match="--window"):
        make_runner(model, choose_device("cpu"), window_steps=2, compile=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_graph_runner_equals_eager_across_interleaved_streams():
    torch.manual_seed(2)
    # The committed networks (N-MNIST; the 4-block gesture shape): untrained ones
    # stay silent on random input, which would let any runner pass.
    for name in ("nmnist", "dvs_sign"):
        model, config, _ = load_checkpoint(default_checkpoint(name))
        copy, _, _ = load_checkpoint(default_checkpoint(name))
        eager = make_runner(model, torch.device("cuda"))
        graph = make_runner(copy, torch.device("cuda"), cuda_graph=True)
        assert isinstance(graph, CudaGraphRunner)
        slots = [(eager.new_slot(), graph.new_slot()) for _ in range(3)]
        outputs = []
        for t in range(5):
            for k, (e_slot, g_slot) in enumerate(slots):
                x = (torch.rand(*config.input_shape) * 3).numpy()
                expected = eager.step(x, e_slot)
                outputs.append(expected)
                np.testing.assert_allclose(graph.step(x, g_slot), expected, rtol=1e-4, atol=1e-4)
                if t == 2 and k == 1:
                    eager.reset(e_slot)
                    graph.reset(g_slot)
        assert np.std(outputs, axis=0).max() > 0.01, f"{name}: the readout never moved"


def test_default_model_is_the_default_checkpoint_or_an_untrained_network():
    loaded = load_model(None)
    if default_checkpoint_path() is None:
        assert not loaded.trained and "UNTRAINED" in loaded.description
    else:
        assert loaded.trained and str(default_checkpoint_path()) in loaded.description
    assert not loaded.model.training


# --- the worker process against a raw socket of the test ---------------------------------

SENSOR = SensorSize(34, 34)


def _chunk(t0_us: int, count: int = 40, polarity=None) -> np.ndarray:
    rng = np.random.default_rng(t0_us)
    return make_events(
        t0_us + np.sort(rng.integers(0, 1000, count)),
        rng.integers(0, 34, count),
        rng.integers(0, 34, count),
        rng.integers(0, 2, count) if polarity is None else np.full(count, polarity),
    )


def _events(session: str, seq: int, events: np.ndarray) -> list:
    return wire.encode(
        wire.Events(stream="cam0", session=session, seq=seq, events=events, sensor=SENSOR)
    )


def _garbage(header_changes: dict) -> list:
    frames = _events("s1", 99, _chunk(0))
    header = json.loads(bytes(frames[1]))
    header.update(header_changes)
    return [frames[0], json.dumps(header).encode(), bytes(frames[2])]


def test_the_worker_streams_as_the_checkpoint_says_unless_told_otherwise(tmp_path):
    model, config, _ = load_checkpoint(save_test_checkpoint(tmp_path / "model.pt"))
    windowed = save_checkpoint(
        tmp_path / "windowed.pt", model, config.with_changes(stream_window_steps=3)
    )
    for args, expected in (
        ((), "window of 3 steps"),
        (("--window", "5"), "window of 5 steps"),
        (("--window", "0"), "cpu eager, 1 thread"),
    ):
        worker, _ = start_worker("tcp://127.0.0.1:9", "--model", str(windowed), *args)
        try:
            assert expected in worker.ready["device"]
        finally:
            worker.stop()


def test_worker_survives_garbage_counts_gaps_and_resets_on_jumps_and_restarts(tmp_path):
    model = save_test_checkpoint(tmp_path / "model.pt")
    xpub = zmq.Context.instance().socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    worker, endpoint = start_worker(
        f"tcp://127.0.0.1:{port}",
        "--model", str(model), "--hop-us", "10000", "--lossless", "--wait-subscribers", "1",
    )  # fmt: skip
    sub = Subscriber(endpoint)
    try:
        assert xpub.poll(30_000), "the worker never subscribed"
        time.sleep(0.2)  # its three subscriptions (events/, labels/, end/)
        while xpub.poll(0):
            xpub.recv()

        def send(frames):
            xpub.send_multipart(frames)
            time.sleep(0.001)

        for k in range(30):  # session s1: 0-30 ms
            send(_events("s1", k, _chunk(k * 1000)))
        send([b"events/cam0/", b"not json", b"x"])
        send([b"events/cam0/"])
        send(_garbage({"v": 2}))
        send(_garbage({"count": 41}))
        for k in range(35, 50):  # seq 30-34 missing
            send(_events("s1", k, _chunk(k * 1000)))
        send(_events("s1", 50, _chunk(50_000, 7, polarity=3)))
        outside = _chunk(51_000)
        outside["x"][:2], outside["y"][2] = (34, -1), 40  # beyond the 34x34 sensor
        send(_events("s1", 51, outside))
        for k in range(52, 60):
            send(_events("s1", k, _chunk(k * 1000)))
        for k in range(60, 70):  # event time jumps to 5 s
            send(_events("s1", k, _chunk(5_000_000 + k * 1000)))
        for k in range(20):  # a restarted producer: session s2, time from 0
            send(_events("s2", k, _chunk(k * 1000)))
        send(wire.encode(wire.End(stream="cam0", session="s2", seq=20)))
        sub.collect(lambda m: m.type == "stats" and "cam0" in m.values["ended_streams"], 30)
        assert worker.returncode is None, "the worker died"
        worker.signal(signal.SIGINT)
        assert worker.process.wait(10) == 0
    finally:
        sub.close()
        xpub.close(0)
        worker.stop()
    stats = worker.result()
    assert stats["malformed"] == {
        "bad_header": 1,
        "short_message": 1,
        "bad_version": 1,
        "size_mismatch": 1,
    }
    assert stats["gaps"] == {"cam0": 1} and stats["missing_messages"] == {"cam0": 5}
    assert stats["restarts"] == {"cam0": 1}
    cam0 = stats["streams"]["cam0"]
    assert cam0["events_rejected"] == 7
    assert cam0["events_outside_input"] == 3  # dropped by the adapter, the stream goes on
    assert cam0["resets"] == 2 and cam0["sessions"] == 2 and cam0["ended"] == 1
    assert cam0["steps"] == cam0["predictions"] == 9 and stats["errors"] == 0
    predictions = [(m.source_session, m.t_end_us, m.step) for m in sub.of_type("prediction")]
    assert predictions == [
        *[("s1", 10_000 * (k + 1), k) for k in range(6)],  # the last one flushed at the jump
        ("s1", 5_070_000, 0),  # a new grid after the jump, flushed at the restart
        ("s2", 10_000, 0),
        ("s2", 20_000, 1),  # flushed at end
    ]
    assert [m.type for m in sub.messages if m.type in ("prediction", "end")][-1] == "end"
    for message in sub.of_type("prediction"):
        probs = message.probs
        assert abs(probs.sum() - 1) < 1e-9 and message.top1 == int(np.argmax(probs))
        timings = message.timings_ms
        assert set(timings) == {
            "receive", "compress", "step", "readout", "infer", "publish", "worker",
        }  # fmt: skip
        assert timings["infer"] == pytest.approx(timings["step"] + timings["readout"], abs=2e-4)
        # The worker's clock readings: the closing message arrived, then this went out.
        assert message.closed_by_sent_ns <= message.closed_by_received_ns
        assert message.closed_by_received_ns < message.published_ns
    previews = sub.of_type("preview")
    assert previews and all(p.image.shape == (2, 34, 34) for p in previews)
    assert sum(p.events for p in previews) == (30 + 15 + 9 + 10 + 20) * 40 - 3


def test_preview_and_stats_messages_round_trip_and_bad_previews_are_refused():
    image = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    envelope = {"stream": "cam0", "session": "w", "seq": 3}
    frames = wire.encode(
        wire.Preview(**envelope, image=image, t_start_us=5, t_end_us=9, events=int(image.sum()))
    )
    message = wire.decode(frames)
    assert message.type == "preview" and message.events == int(image.sum())
    np.testing.assert_array_equal(message.image, image)
    stats = wire.Stats(stream="", session="w", seq=0, values={"errors": 0})
    assert wire.decode(wire.encode(stats)).values["errors"] == 0
    header = json.loads(bytes(frames[1]))
    for changes, reason in (({"width": 5}, "size_mismatch"), ({"dtype": "f4"}, "bad_dtype")):
        bad = [frames[0], json.dumps({**header, **changes}).encode(), bytes(frames[2])]
        with pytest.raises(wire.WireError, match=reason):
            wire.decode(bad)
    with pytest.raises(wire.WireError, match="bad_frames"):
        wire.decode(frames[:2])
    with pytest.raises(ValueError):
        wrong = image.astype(np.uint16)
        wire.encode(wire.Preview(**envelope, image=wrong, t_start_us=0, t_end_us=1, events=0))


def test_the_default_checkpoint_follows_the_sensor_size():
    from core.events import SensorSize
    from models.runner import default_checkpoint_path

    assert default_checkpoint_path().name == "nmnist.pt"
    assert default_checkpoint_path(SensorSize(34, 34)).name == "nmnist.pt"
    assert default_checkpoint_path(SensorSize(128, 128)).name == "dvs_sign.pt"
    assert default_checkpoint_path(SensorSize(346, 260)).name == "dvs_sign.pt"


def test_runners_fold_batchnorm_into_a_copy_and_answer_as_before():
    from core.compress import compress_clip
    from models.runner import for_inference
    from replay.formats.nmnist import read_nmnist
    from tests.conftest import shared_path

    model, config = trained_nmnist()
    folded = for_inference(model)
    assert all(isinstance(b.bn, torch.nn.BatchNorm2d) for b in model.blocks)  # untouched
    assert not any(isinstance(b.bn, torch.nn.BatchNorm2d) for b in folded.blocks)
    events = read_nmnist(shared_path("recordings/nmnist_single.bin")).events
    compression = dataclasses.replace(config.compression, steps=30, window_us=300_000)
    clip = torch.from_numpy(compress_clip(events, compression, t0_us=0))[:, None]
    with torch.inference_mode():
        expected, answered = model(clip), folded(clip)
    assert expected.std(0).max() > 0.1  # a readout that moves
    torch.testing.assert_close(answered, expected, rtol=1e-4, atol=1e-4)


def test_the_worker_counts_preview_subscribers_without_waiting_for_them():
    """Previews are made only while someone subscribes to them; a subscriber of
    predictions alone neither gets them nor delays the start waiting for one."""
    context = zmq.Context.instance()
    xpub = bind_xpub(context, "tcp://127.0.0.1:0", 100, 0)
    endpoint = xpub.getsockopt(zmq.LAST_ENDPOINT).decode()
    subscriptions = Subscriptions(
        xpub, wire.topic("prediction"), watched={"preview": wire.topic("preview")}
    )
    predictions_only = context.socket(zmq.SUB)
    everything = context.socket(zmq.SUB)
    try:
        predictions_only.setsockopt(zmq.SUBSCRIBE, wire.topic("prediction"))
        predictions_only.connect(endpoint)
        started = time.monotonic()
        assert subscriptions.wait_for(1, threading.Event(), timeout_s=5)
        assert time.monotonic() - started < Subscriptions.COMPANION_WAIT_S
        assert subscriptions.counts["preview"] == 0
        everything.setsockopt(zmq.SUBSCRIBE, b"")
        everything.connect(endpoint)
        deadline = time.monotonic() + 5
        while subscriptions.counts["preview"] == 0 and time.monotonic() < deadline:
            xpub.poll(50)
            subscriptions.drain()
        assert subscriptions.counts == {"main": 2, "preview": 1}
    finally:
        predictions_only.close(0)
        everything.close(0)
        xpub.close(0)
