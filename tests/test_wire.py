"""The wire format over real ZeroMQ sockets on loopback."""

import json
import logging

import numpy as np
import pytest
import zmq

from core.events import SensorSize, make_events
from streamer.wire import (
    SequenceTracker,
    WireError,
    WireStats,
    decode,
    encode_end,
    encode_events,
    encode_labels,
    receive,
    topic,
)

log = logging.getLogger("test_wire")


@pytest.fixture
def pair():
    """A connected PUSH -> PULL pair on a loopback TCP port."""
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    yield push, pull
    push.close(linger=0)
    pull.close(linger=0)
    context.term()


def sample_events(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    return make_events(
        np.sort(rng.integers(0, 1_000_000, n)),
        rng.integers(0, 128, n),
        rng.integers(0, 128, n),
        rng.integers(0, 2, n),
    )


def test_events_roundtrip_zero_copy(pair):
    push, pull = pair
    events = sample_events()
    push.send_multipart(encode_events("cam0", "s1", 7, events, SensorSize(128, 128)))
    message = receive(pull, WireStats(), log, timeout_ms=2000)
    assert message.type == "events" and message.stream == "cam0" and message.seq == 7
    assert message.sensor == SensorSize(128, 128)
    assert message.header["t_first_us"] == events["timestamp"][0]
    np.testing.assert_array_equal(message.events, events)
    # A view on the received frame, not a copy.
    assert not message.events.flags.owndata


def test_other_types_roundtrip(pair):
    push, pull = pair
    push.send_multipart(encode_labels("cam0", "s1", 1, [{"label": 3, "start_us": 0, "end_us": 9}]))
    push.send_multipart(encode_end("cam0", "s1", 2))
    stats = WireStats()
    labels = receive(pull, stats, log, timeout_ms=2000)
    end = receive(pull, stats, log, timeout_ms=2000)
    assert labels.header["segments"][0]["label"] == 3
    assert end.type == "end"
    assert stats.received == {"labels": 1, "end": 1}


def good_frames():
    return [bytes(f) for f in encode_events("a", "s", 0, sample_events(10), SensorSize(128, 128))]


def with_header(**changes):
    frames = good_frames()
    header = json.loads(frames[1])
    header.update(changes)
    frames[1] = json.dumps(header).encode()
    return frames


@pytest.mark.parametrize(
    "frames, reason",
    [
        ([b"events/a/"], "short_message"),
        ([b"events/a/", b"\xff\xfe garbage"], "bad_header"),
        ([b"events/a/", b"[1, 2]"], "bad_header"),
        (with_header(v=2), "bad_version"),
        (with_header(type="nonsense"), "bad_type"),
        (with_header(seq="7"), "bad_field"),
        (with_header(dtype="float32"), "bad_dtype"),
        (with_header(count=11), "size_mismatch"),
        (with_header(count=-1), "bad_field"),
        (good_frames()[:2], "bad_frames"),
        (good_frames() + [b"extra"], "bad_frames"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(frames, reason):
    with pytest.raises(WireError) as error:
        decode(frames)
    assert error.value.reason == reason


def test_receiver_counts_malformed_and_keeps_running(pair, caplog):
    push, pull = pair
    stats = WireStats()
    push.send_multipart([b"events/a/", b"not json"])
    push.send_multipart(with_header(count=3))
    push.send_multipart(good_frames())
    with caplog.at_level(logging.WARNING):
        results = [receive(pull, stats, log, timeout_ms=2000) for _ in range(3)]
    assert results[0] is None and results[1] is None
    assert results[2].type == "events"
    assert stats.malformed == {"bad_header": 1, "size_mismatch": 1}
    assert "dropped malformed message" in caplog.text


def test_sequence_gaps_and_restarts_are_counted():
    stats = WireStats()
    tracker = SequenceTracker(stats)
    events = sample_events(1)

    def message(session, seq, stream="a"):
        return decode(encode_events(stream, session, seq, events, SensorSize(128, 128)))

    states = [tracker.observe(message("s1", seq)) for seq in (0, 1, 2, 5, 6)]
    assert states == ["new", "ok", "ok", "gap", "ok"]
    assert tracker.observe(message("s2", 0)) == "restart"
    assert tracker.observe(message("s1", 0, stream="b")) == "new"
    assert stats.gaps == {"a": 1} and stats.missing_messages == {"a": 2}
    assert stats.restarts == {"a": 1}


def test_topics_filter_by_type_and_stream():
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    sub.setsockopt(zmq.SUBSCRIBE, topic("events", "cam1"))
    pub = context.socket(zmq.PUB)
    pub.connect(f"tcp://127.0.0.1:{port}")
    try:
        events = sample_events(3)
        # PUB/SUB joins asynchronously: publish until the subscriber sees one.
        for attempt in range(200):
            pub.send_multipart(encode_events("cam10", "s", attempt, events, SensorSize(128, 128)))
            pub.send_multipart(encode_events("cam1", "s", attempt, events, SensorSize(128, 128)))
            message = receive(sub, WireStats(), log, timeout_ms=10)
            if message is not None:
                break
        assert message.stream == "cam1"
        while (message := receive(sub, WireStats(), log, timeout_ms=50)) is not None:
            assert message.stream == "cam1"
    finally:
        pub.close(linger=0)
        sub.close(linger=0)
        context.term()
