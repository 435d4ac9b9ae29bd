"""The producer on real ZeroMQ sockets over loopback: what a subscriber receives, pacing,
stop and end, full-queue policies, the DV network source end to end, and the
`stcsnn produce` command as a subprocess stopped by SIGINT."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from core.events import EVENT_DTYPE, SensorSize
from core.source import PreloadedSource, SourceEnd, SourceError
from streamer import processes, wire
from streamer.pacing import Pacer, message_size_for_speed, parse_speed
from streamer.producer import run_producer
from streamer.sources import DvNetworkSource, SyntheticSource
from streamer.transport import EndpointError, check_endpoint
from tests.pipeline_helpers import nmnist_playlist, start_producer
from tests.test_sources import DvServer, _events

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("test_producer")


class Running:
    """run_producer in a thread, with a SUB socket of the test connected to it."""

    def __init__(self, source, *, rcvhwm=100_000, topics=(b"",), **options):
        self.stop = threading.Event()
        self.stats = None
        self.error = None
        bound = threading.Event()
        self.endpoint = None

        def on_bound(stats):
            self.endpoint = stats.endpoint
            bound.set()

        def target():
            try:
                self.stats = run_producer(
                    source,
                    "tcp://127.0.0.1:0",
                    stop_event=self.stop,
                    on_bound=on_bound,
                    **{"wait_subscribers": 1, "stream_id": "s1", **options},
                )
            except Exception as error:  # reported by join()
                self.error = error
                bound.set()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        assert bound.wait(5), "producer never bound"
        assert self.error is None, self.error
        self.sub = zmq.Context.instance().socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sub.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        self.sub.connect(self.endpoint)
        self.wire_stats = wire.WireStats()
        self.tracker = wire.SequenceTracker(self.wire_stats)

    def receive_until_end(self, timeout_s=10.0, per_message=None) -> list[wire.Message]:
        messages = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = wire.receive(self.sub, self.wire_stats, log, timeout_ms=100)
            if message is None:
                continue
            if isinstance(message, wire.Events):  # keep it beyond the frame's lifetime
                message = dataclasses.replace(message, events=message.events.copy())
            self.tracker.observe(message)
            messages.append(message)
            if per_message:
                per_message(message)
            if message.type == "end":
                return messages
        raise AssertionError(f"no end message within {timeout_s} s ({len(messages)} received)")

    def join(self, timeout_s=10.0):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "producer did not stop"
        self.sub.close(0)
        if self.error:
            raise self.error
        return self.stats


def _events_of(messages) -> np.ndarray:
    chunks = [m.events for m in messages if m.type == "events"]
    return np.concatenate(chunks, dtype=EVENT_DTYPE) if chunks else np.empty(0, EVENT_DTYPE)


def test_loopback_is_the_default_and_anything_else_needs_consent():
    for ok in ("tcp://127.0.0.1:5555", "tcp://localhost:0", "tcp://[::1]:5", "ipc:///tmp/x"):
        assert check_endpoint(ok) == ok
    assert check_endpoint("tcp://127.0.0.2:5555")  # all of 127/8 is loopback
    for wide in ("tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://192.168.1.5:5555", "tcp://eth0:1"):
        with pytest.raises(EndpointError, match="--bind-any"):
            check_endpoint(wide)
        assert check_endpoint(wide, bind_any=True) == wide
    with pytest.raises(EndpointError, match="transport"):
        check_endpoint("127.0.0.1:5555")
    with pytest.raises(EndpointError, match="--bind-any"):
        run_producer(SyntheticSource(1000), "tcp://0.0.0.0:0")


def test_a_subscriber_receives_every_event_in_order_then_end():
    source = SyntheticSource(50_000, sensor=SensorSize(40, 30), duration_us=100_000, seed=2)
    expected = np.concatenate(
        list(SyntheticSource(50_000, sensor=SensorSize(40, 30), duration_us=100_000, seed=2)
             .items(threading.Event()))[:-1], dtype=EVENT_DTYPE,
    )  # fmt: skip
    running = Running(source, speed=math.inf)
    messages = running.receive_until_end()
    stats = running.join()
    assert [m.seq for m in messages] == list(range(len(messages)))
    assert {m.session for m in messages} == {stats.session}
    assert {m.stream for m in messages} == {"s1"}
    assert messages[-1].reason.startswith("synthetic source done")
    events = _events_of(messages)
    assert np.array_equal(events, expected)
    assert all(m.sensor == SensorSize(40, 30) for m in messages if m.type == "events")
    assert stats.events == len(expected) and stats.messages == len(messages)
    assert stats.subscribers == 1
    assert sum(running.wire_stats.malformed.values()) == 0


def test_the_first_labels_wait_for_a_labels_subscription_that_comes_late(tmp_path):
    """A SUB sends its subscriptions in sorted order: a worker's labels/ comes after
    its events/, which is what --wait-subscribers counts. The producer must not
    send the first labels before it has seen the labels subscription too."""
    playlist = nmnist_playlist(tmp_path, digits=range(2))
    producer, endpoint = start_producer(
        "--replay", str(playlist), "--speed", "max", "--lossless", "--wait-subscribers", "1"
    )
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, wire.topic("events"))
        sub.setsockopt(zmq.SUBSCRIBE, wire.topic("end"))
        sub.connect(endpoint)
        time.sleep(0.3)  # the producer has counted its subscriber by now
        sub.setsockopt(zmq.SUBSCRIBE, wire.topic("labels"))
        labels = []
        while sub.poll(10_000):
            message = wire.decode(sub.recv_multipart())
            if message.type == "labels":
                labels += [s.label for s in message.segments]
            if message.type == "end":
                break
        assert labels == [0, 1]
        assert producer.process.wait(10) == 0
    finally:
        sub.close(0)
        producer.stop()


def test_each_run_has_its_own_session():
    sessions = set()
    for _ in range(2):
        running = Running(SyntheticSource(1000, duration_us=10_000), speed=math.inf)
        running.receive_until_end()
        sessions.add(running.join().session)
    assert len(sessions) == 2


def _paced_wall_s(speed: float, duration_us: int) -> tuple[float, float]:
    source = SyntheticSource(20_000, chunk_us=5000, duration_us=duration_us, seed=1)
    running = Running(source, speed=speed)
    arrivals = []
    messages = running.receive_until_end(per_message=lambda m: arrivals.append(time.monotonic()))
    stats = running.join()
    event_span_s = (stats.last_event_us - stats.first_event_us) / 1e6
    assert len(messages) > 2
    return arrivals[-2] - arrivals[0], event_span_s / speed


def test_real_time_pacing_takes_the_event_time_and_max_is_much_faster():
    wall_s, expected_s = _paced_wall_s(1.0, 400_000)
    assert expected_s * 0.7 < wall_s < expected_s * 1.3
    wall_s, expected_s = _paced_wall_s(2.0, 400_000)
    assert expected_s * 0.7 < wall_s < expected_s * 1.3
    fast_s, _ = _paced_wall_s(math.inf, 400_000)
    assert fast_s < 0.1


def test_pacer_deadlines_come_from_the_start_so_lateness_does_not_accumulate():
    pacer = Pacer(1.0)
    assert pacer.wait(1_000_000, 1_000_000)  # anchors event time 1 s to now
    start = pacer.due_s(1_000_000)
    time.sleep(0.05)  # fall 50 ms behind
    assert pacer.wait(1_010_000, 1_010_000)  # late: returns at once
    assert pacer.max_lateness_s > 0.03
    assert pacer.wait(1_080_000, 1_080_000)
    assert abs(time.monotonic() - (start + 0.08)) < 0.01  # back on the original schedule
    assert parse_speed("max") == math.inf and parse_speed("0.5") == 0.5
    for bad in ("0", "-1", "fast"):
        with pytest.raises(ValueError, match="speed"):
            parse_speed(bad)


def test_stop_event_ends_an_endless_stream_with_end():
    running = Running(SyntheticSource(100_000, seed=4), speed=1.0)
    messages = []

    def stop_after_some(message):
        if len(messages) == 20:
            running.stop.set()
        messages.append(message)

    running.receive_until_end(per_message=stop_after_some)
    stats = running.join()
    assert messages[-1].type == "end" and messages[-1].reason == "stopped"
    assert stats.end_reason == "stopped"
    assert running.wire_stats.gaps["s1"] == 0


class BigChunks:
    """A finite source of large ready-made chunks, faster than any subscriber."""

    live = False
    sensor = SensorSize(128, 128)
    description = "big chunks"

    def __init__(self, count=40, events_per_chunk=50_000):
        self.chunks = [_events(np.arange(events_per_chunk) + k * events_per_chunk)
                       for k in range(count)]  # fmt: skip

    def items(self, stop_event):
        yield from self.chunks

    def close(self):
        pass


def test_block_policy_is_lossless_for_a_slow_subscriber():
    running = Running(BigChunks(), speed=math.inf, send_hwm=2, rcvhwm=2, on_full="block")
    messages = running.receive_until_end(per_message=lambda m: time.sleep(0.005))
    stats = running.join()
    assert running.wire_stats.gaps["s1"] == 0
    assert stats.event_messages == 40 == sum(m.type == "events" for m in messages)
    assert stats.blocked_s > 0.05
    assert stats.end_reason == "end of source"


def test_block_policy_delivers_a_long_queued_tail_and_end_to_a_slow_subscriber():
    # ~20 messages still queued when the source ends, read at 50 ms each: far
    # longer than the default linger, which used to cut the tail and `end`.
    running = Running(BigChunks(count=40), speed=math.inf, send_hwm=20, rcvhwm=2, on_full="block")
    messages = running.receive_until_end(timeout_s=20, per_message=lambda m: time.sleep(0.05))
    running.join(timeout_s=20)
    assert running.wire_stats.gaps["s1"] == 0
    assert sum(m.type == "events" for m in messages) == 40


def test_drop_policy_never_waits_counts_drops_and_the_receiver_sees_the_gap():
    running = Running(BigChunks(), speed=math.inf, send_hwm=2, rcvhwm=2)
    time.sleep(0.3)  # subscriber not reading: its queues fill, the producer keeps going
    messages = running.receive_until_end()
    stats = running.join()
    assert stats.wall_s < 0.25
    assert stats.dropped_messages > 5
    assert stats.event_messages + stats.dropped_messages == 40
    assert stats.dropped_events == 50_000 * stats.dropped_messages
    assert running.wire_stats.missing_messages["s1"] == stats.dropped_messages
    assert len(messages) == stats.messages == stats.event_messages + 1
    assert messages[-1].type == "end"  # never dropped


def test_drop_policy_still_delivers_a_finite_sources_queued_tail_and_end():
    # The drop policy drops at a full queue while the source runs, but once a
    # replay has ended, what is queued (counted as sent) must still arrive, even
    # when reading it takes far longer than the default linger (~50 messages x
    # 50 ms; with 20 the socket buffers hid the loss).
    running = Running(BigChunks(count=100), speed=math.inf, send_hwm=50, rcvhwm=2)
    messages = running.receive_until_end(timeout_s=20, per_message=lambda m: time.sleep(0.05))
    stats = running.join(timeout_s=20)
    assert stats.dropped_messages > 5  # the drop policy did drop while the source ran
    assert sum(m.type == "events" for m in messages) == stats.event_messages
    assert running.wire_stats.missing_messages["s1"] == stats.dropped_messages
    assert messages[-1].type == "end"


def test_dv_network_stream_through_the_producer():
    server = DvServer(sensor=(320, 240), name="DVXplorer_NET01")
    try:
        source = DvNetworkSource("127.0.0.1", server.port)
        server.wait_for_client()
        running = Running(source, stream_id="dv")
        sent = _events(np.arange(5_000_000, 5_000_000 + 20_000, 7))
        server.write(sent[:1000])  # the reader queues what arrives before the producer reads
        server.write(sent[1000:])

        def stop_when_all_arrived(message):
            if running.stats is None and len(_events_of(received)) >= len(sent):
                running.stop.set()

        received = []
        messages = running.receive_until_end(
            per_message=lambda m: (received.append(m), stop_when_all_arrived(m))
        )
        stats = running.join()
        assert np.array_equal(_events_of(messages), sent)
        assert all(m.sensor == SensorSize(320, 240) for m in messages if m.type == "events")
        assert messages[-1].type == "end" and stats.end_reason == "stopped"
        assert "DVXplorer_NET01" in stats.description
    finally:
        server.close()  # after the producer closed the source (the reader)


def _messages_from(endpoint: str, timeout_s: float, stats: wire.WireStats | None = None):
    """What a SUB socket subscribed to everything on ``endpoint`` receives, up to and
    including ``end`` (or until ``timeout_s``)."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(endpoint)
    stats = stats or wire.WireStats()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            message = wire.receive(sub, stats, log, timeout_ms=100)
            if message is None:
                continue
            yield message
            if message.type == "end":
                return
    finally:
        sub.close(0)


def test_produce_command_stops_cleanly_on_sigint_and_sends_end():
    producer = processes.start_producer(
        ["--synthetic", "200k", "--wait-subscribers", "1", "--stream-id", "load", "--json"],
        cwd=ROOT,
        timeout_s=20,
    )
    try:
        assert producer.ready["stream"] == "load" and producer.ready["session"]
        stats = wire.WireStats()
        tracker = wire.SequenceTracker(stats)
        types = []
        for message in _messages_from(producer.endpoint, 10, stats):
            tracker.observe(message)
            types.append(message.type)
            if len(types) == 30:
                producer.signal(signal.SIGINT)
            if message.type == "end":
                assert message.reason == "stopped"
        assert producer.process.wait(10) == 0, producer.failure("failed")
    finally:
        producer.stop()
    assert types[-1] == "end" and types.count("events") >= 30
    assert stats.gaps["load"] == 0
    summary = producer.result()
    assert summary["end_reason"] == "stopped" and summary["stream_id"] == "load"
    assert summary["messages"] == len(types)
    assert json.loads(producer.stdout_lines[-1]) == summary  # --json prints the same


def test_a_lossless_produce_command_delivers_its_whole_queue_before_it_exits():
    """The process ends right after the source: the messages still queued (sent without
    a copy) must reach a slow subscriber, and ``end`` after them. (Before the producer
    terminated its own context, the exit freed them mid-send: 600-779 of 1,251
    messages arrived and the producer died of SIGSEGV or SIGABRT.)"""
    producer = processes.start_producer(
        ["--synthetic", "2M", "--duration-s", "2", "--chunk-us", "4000", "--speed", "max"]
        + ["--lossless", "--preload", "--wait-subscribers", "1", "--json"],
        cwd=ROOT,
        timeout_s=60,
    )
    try:
        received, events = [], 0
        for message in _messages_from(producer.endpoint, 60):
            received.append(message.type)
            if message.type == "events":
                events += len(message.events)
                if len(received) < 20:
                    time.sleep(0.05)  # slow at first: the producer finishes meanwhile
        assert producer.process.wait(30) == 0, producer.failure("failed")
    finally:
        producer.stop()
    summary = producer.result()
    assert received[-1] == "end" and summary["end_reason"].startswith("synthetic source done")
    assert len(received) == summary["messages"] and events == summary["events"]
    assert "preloaded" in summary["description"]


def test_preloaded_source_replays_its_items_and_refuses_what_it_cannot_hold():
    source = SyntheticSource(100_000, duration_us=50_000, seed=3)
    expected = [i for i in source.items(threading.Event()) if isinstance(i, np.ndarray)]
    preloaded = PreloadedSource(
        SyntheticSource(100_000, duration_us=50_000, seed=3), threading.Event()
    )
    items = list(preloaded.items(threading.Event()))
    assert isinstance(items[-1], SourceEnd)
    assert np.array_equal(np.concatenate(items[:-1]), np.concatenate(expected))
    assert preloaded.events == sum(len(c) for c in expected)
    with pytest.raises(SourceError, match="more than .* GiB of events to preload"):
        PreloadedSource(SyntheticSource(1e6, duration_us=100_000), threading.Event(), 16_000)


def _run_command(capsys, *argv) -> tuple[int, str]:
    import argparse

    from stcsnn.commands import produce

    parser = argparse.ArgumentParser()
    produce.configure(parser)
    code = produce.run(parser.parse_args(list(argv)))
    return code, capsys.readouterr().err


def test_produce_command_refuses_bad_input_before_starting(capsys, tmp_path):
    code, err = _run_command(capsys, "--replay", str(tmp_path / "missing"))
    assert code == 1 and "does not exist" in err and "missing" in err
    code, err = _run_command(capsys, "--synthetic", "1k", "--endpoint", "tcp://0.0.0.0:5555")
    assert code == 1 and "--bind-any" in err
    code, err = _run_command(capsys, "--synthetic", "1k", "--speed", "fast")
    assert code == 1 and "speed" in err
    code, err = _run_command(capsys, "--dv-stream", "localhost")
    assert code == 1 and "HOST:PORT" in err
    code, err = _run_command(capsys, "--synthetic", "1k", "--preload")
    assert code == 1 and "--preload needs a finite source" in err
    if not __import__("streamer.sources").sources.discover_cameras():
        code, err = _run_command(capsys, "--camera")
        assert code == 1 and "no iniVation camera attached" in err


def test_configuring_the_command_imports_nothing_heavy():
    code = (
        "import argparse, sys; from stcsnn.commands import produce; "
        "produce.configure(argparse.ArgumentParser()); "
        "print(sorted(m for m in ('torch', 'zmq', 'dv_processing', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_recorded_chunks_carry_the_next_chunks_first_time_as_watermark():
    """A non-live source is read one item ahead: each events message says until when the
    stream is complete, so a worker need not wait for the next message to close a hop."""
    source = SyntheticSource(50_000, sensor=SensorSize(34, 34), duration_us=20_000, seed=3)
    running = Running(source, speed=math.inf)
    messages = running.receive_until_end()
    running.join()
    chunks = [m for m in messages if m.type == "events"]
    assert len(chunks) == 20
    for message, following in zip(chunks, chunks[1:], strict=False):
        assert message.until_us == int(following.events["timestamp"][0])
        assert message.until_us > int(message.events["timestamp"][-1])
    assert chunks[-1].until_us is None  # nothing follows the last one


def test_a_window_cut_at_the_event_cap_carries_no_watermark_inside_a_microsecond():
    """5 M ev/s in 16 ms windows is 80,000 events a window, cut at 65,536: the pieces of
    a window may share a timestamp, and a watermark equal to the last event's would
    make the worker reject the message (it did, for 149 of 375 messages)."""
    source = SyntheticSource(
        5_000_000, sensor=SensorSize(34, 34), duration_us=64_000, seed=3, chunk_us=16_000
    )
    running = Running(source, speed=math.inf)
    messages = running.receive_until_end()
    running.join()
    chunks = [m for m in messages if m.type == "events"]
    assert len(chunks) == 8 and max(len(m.events) for m in chunks) == 65_536
    shared = 0
    for message, following in zip(chunks, chunks[1:], strict=False):
        last_us, next_us = (
            int(message.events["timestamp"][-1]),
            int(following.events["timestamp"][0]),
        )
        shared += next_us == last_us
        assert message.until_us == (None if next_us == last_us else next_us)
    assert shared  # the seed gives a cut inside a microsecond: the case is exercised


def test_live_sources_are_not_read_ahead_and_carry_no_watermark():
    class Live(SyntheticSource):
        live = True

    running = Running(Live(50_000, sensor=SensorSize(34, 34), duration_us=5_000, seed=3))
    messages = running.receive_until_end()
    running.join()
    assert all(m.until_us is None for m in messages if m.type == "events")


def test_a_producer_with_nobody_listening_says_so(caplog, monkeypatch):
    monkeypatch.setattr("streamer.producer.NOBODY_WARNING_S", 0.2)
    caplog.set_level(logging.WARNING, logger="stcsnn.producer")
    stats = run_producer(
        SyntheticSource(10_000, duration_us=600_000), "tcp://127.0.0.1:0", settle_s=0
    )
    warnings = [r.getMessage() for r in caplog.records if "nobody subscribes" in r.getMessage()]
    assert len(warnings) == 1 and stats.endpoint in warnings[0]
    assert f"--connect {stats.endpoint}" in warnings[0]


def test_a_worker_waits_for_its_producer_and_says_when_it_comes_and_goes(tmp_path):
    lines: list[str] = []
    endpoint = "tcp://127.0.0.1:" + str(_free_port())
    worker = processes.start_worker(
        endpoint, ["--threads", "1"], cwd=ROOT, timeout_s=60, echo=lines.append
    )
    try:
        _wait_for_line(lines, f"waiting for a producer at {endpoint}")
        assert not any("connected" in line for line in lines)
        producer = processes.start_producer(
            ["--synthetic", "10k", "--endpoint", endpoint, "--quiet"], cwd=ROOT, timeout_s=20
        )
        _wait_for_line(lines, f"producer at {endpoint} connected")
        producer.stop()
        _wait_for_line(lines, f"producer at {endpoint} disconnected")
    finally:
        worker.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_line(lines: list[str], text: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(text in line for line in lines):
            return
        time.sleep(0.05)
    raise AssertionError(f"no line with {text!r} in {lines[-10:]}")


def test_chunks_hold_one_millisecond_of_wall_time_at_any_speed():
    assert message_size_for_speed(1.0) == (1000, 65_536)
    assert message_size_for_speed(4.0) == (4000, 65_536)
    assert message_size_for_speed(0.5) == (500, 65_536)
    # Unpaced and lossless: large messages; with drops the queue counts messages.
    assert message_size_for_speed(math.inf, lossless=True) == (16_000, 262_144)
    assert message_size_for_speed(math.inf) == (1000, 65_536)
    # --chunk-us / --max-chunk-events win; neither may be zero.
    assert message_size_for_speed(math.inf, True, chunk_us=4000) == (4000, 262_144)
    assert message_size_for_speed(1.0, max_events=500) == (1000, 500)
    with pytest.raises(ValueError, match="must be positive"):
        message_size_for_speed(1.0, chunk_us=0)


@pytest.mark.parametrize(
    ("extra", "largest"), [((), 262_144), (("--max-chunk-events", "50000"), 50_000)]
)
def test_an_unpaced_lossless_producer_sends_messages_up_to_its_event_cap(extra, largest):
    """20 M ev/s in 16 ms windows is 320,000 events a window: cut at 262,144 events
    unless --max-chunk-events says otherwise; every event arrives once."""
    producer = processes.start_producer(
        ["--synthetic", "20M", "--duration-s", "0.048", "--speed", "max", "--lossless"]
        + ["--seed", "3", "--wait-subscribers", "1", *extra],
        cwd=ROOT,
        timeout_s=60,
    )
    try:
        sizes = [len(m.events) for m in _messages_from(producer.endpoint, 60) if m.type == "events"]
    finally:
        producer.stop()
    assert max(sizes) == largest
    same = SyntheticSource(20e6, duration_us=48_000, seed=3, chunk_us=16_000)
    items = same.items(threading.Event())
    assert sum(sizes) == sum(len(i) for i in items if isinstance(i, np.ndarray))


@pytest.mark.parametrize(("extra", "chunk_us"), [((), 4000), (("--chunk-us", "1000"), 1000)])
def test_a_fast_replay_sends_fewer_larger_messages_unless_told(extra, chunk_us):
    """At --speed 4 a message holds 4 ms of event time (1 ms of wall time); an explicit
    --chunk-us wins."""
    producer = processes.start_producer(
        ["--synthetic", "200k", "--duration-s", "0.4", "--speed", "4", "--seed", "3"]
        + ["--wait-subscribers", "1", *extra],
        cwd=ROOT,
        timeout_s=60,
    )
    try:
        spans = []
        for message in _messages_from(producer.endpoint, 60):
            if message.type == "events" and len(message.events):
                t = message.events["timestamp"]
                assert t[0] // chunk_us == t[-1] // chunk_us  # never across the grid
                spans.append(int(t[-1] - t[0]))
        assert producer.process.wait(10) == 0, producer.failure("failed")
    finally:
        producer.stop()
    assert len(spans) > 50 and max(spans) > 0.8 * chunk_us
