"""The wire format over real ZeroMQ sockets on loopback."""

import json
import logging

import numpy as np
import pytest
import zmq

from core.events import SensorSize, make_events
from core.labels import LabelSegment
from streamer import wire
from streamer.wire import SequenceTracker, WireError, WireStats, decode, encode, receive, topic

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


SENSOR = SensorSize(128, 128)


def events_message(stream, session, seq, events):
    return wire.Events(stream=stream, session=session, seq=seq, events=events, sensor=SENSOR)


def test_events_roundtrip_zero_copy(pair):
    push, pull = pair
    events = sample_events()
    push.send_multipart(encode(events_message("cam0", "s1", 7, events)))
    message = receive(pull, WireStats(), log, timeout_ms=2000)
    assert isinstance(message, wire.Events) and message.type == "events"
    assert message.stream == "cam0" and message.seq == 7 and message.sent_ns > 0
    assert message.sensor == SensorSize(128, 128)
    np.testing.assert_array_equal(message.events, events)
    # A view on the received frame, not a copy.
    assert not message.events.flags.owndata


def test_other_types_roundtrip(pair):
    push, pull = pair
    envelope = {"stream": "cam0", "session": "s1"}
    push.send_multipart(encode(wire.Labels(**envelope, seq=1, segments=(LabelSegment(3, 0, 9),))))
    push.send_multipart(encode(wire.End(**envelope, seq=2, source_session="p1")))
    stats = WireStats()
    labels = receive(pull, stats, log, timeout_ms=2000)
    end = receive(pull, stats, log, timeout_ms=2000)
    assert labels.segments == (LabelSegment(3, 0, 9),) and labels.source_session is None
    assert isinstance(end, wire.End) and end.reason == "end of source"
    assert end.source_session == "p1"
    assert stats.received == {"labels": 1, "end": 1}


def test_prediction_preview_and_stats_roundtrip():
    envelope = {"stream": "cam0", "session": "w1", "seq": 4}
    prediction = wire.Prediction(
        **envelope,
        sent_ns=123,
        t_end_us=75_000,
        hop_us=75_000,
        probs=np.array([0.25, 0.75]),
        logits=np.array([-1.0, 2.0], np.float32),
        top1=1,
        top1_name="one",
        top1_prob=0.75,
        closed_by_sent_ns=456,
        timings_ms={"infer": 1.5},
    )
    back = decode(encode(prediction))
    assert isinstance(back, wire.Prediction) and back.sent_ns == 123  # kept, not restamped
    np.testing.assert_array_equal(back.probs, [0.25, 0.75])
    assert back.top1_raw == 1 and back.top1_name == "one" and back.closed_by_sent_ns == 456
    assert back.timings_ms == {"infer": 1.5} and back.hop_us == 75_000
    image = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    preview = decode(
        encode(wire.Preview(**envelope, image=image, t_start_us=0, t_end_us=10, events=1000))
    )
    np.testing.assert_array_equal(preview.image, image)
    assert preview.events == 1000 and preview.events_per_count == 1
    stats = decode(encode(wire.Stats(**envelope, values={"steps": 3, "streams": {"a": {}}})))
    assert stats.values == {"steps": 3, "streams": {"a": {}}}


def raw_frames(message_type: str, **fields) -> list[bytes]:
    """A message built by hand: the envelope plus ``fields``, as a foreign sender might."""
    header = {"v": 1, "type": message_type, "stream": "a", "session": "s", "seq": 0}
    header.update(sent_ns=1, **fields)
    return [topic(message_type, "a"), json.dumps(header).encode()]


GOOD_PREDICTION = {"t_end_us": 1, "hop_us": 1, "probs": [0.5, 0.5], "top1": 0}


@pytest.mark.parametrize(
    "changes",
    [
        {"top1": 2},  # outside the classes
        {"probs": ["a", "b"]},
        {"probs": []},
        {"probs": [1e400, 0.0]},  # infinite
        {"t_end_us": "1"},
        {"t_end_us": None},
        {"logits": [1, 2, 3]},  # not one per class
        {"timings_ms": {"infer": "fast"}},
    ],
)
def test_malformed_predictions_are_rejected(changes):
    assert isinstance(decode(raw_frames("prediction", **GOOD_PREDICTION)), wire.Prediction)
    with pytest.raises(WireError) as error:
        decode(raw_frames("prediction", **{**GOOD_PREDICTION, **changes}))
    assert error.value.reason == "bad_prediction"


def test_malformed_labels_and_ends_are_rejected():
    for segments in ([{"label": 1, "start_us": "a", "end_us": 2}], ["x"], "x"):
        with pytest.raises(WireError, match="bad_labels"):
            decode(raw_frames("labels", segments=segments))
    with pytest.raises(WireError, match="bad_end"):
        decode(raw_frames("end", reason=7))


def test_deeply_nested_header_is_malformed_not_a_crash():
    frames = [b"events/a/", b"[" * 200_000 + b"]" * 200_000]
    with pytest.raises(WireError) as error:
        decode(frames)
    assert error.value.reason == "bad_header"


def good_frames():
    return [bytes(f) for f in encode(events_message("a", "s", 0, sample_events(10)))]


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
        return decode(encode(events_message(stream, session, seq, events)))

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
            pub.send_multipart(encode(events_message("cam10", "s", attempt, events)))
            pub.send_multipart(encode(events_message("cam1", "s", attempt, events)))
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


def test_a_watermark_travels_with_events_and_must_follow_them():
    events = sample_events(10)
    last = int(events["timestamp"][-1])
    message = wire.Events(
        stream="a", session="s", seq=0, events=events, sensor=SENSOR, until_us=last + 1
    )
    assert decode(encode(message)).until_us == last + 1
    assert decode(encode(events_message("a", "s", 0, events))).until_us is None
    frames = [bytes(f) for f in encode(message)]
    header = json.loads(frames[1])
    for bad in (last, "soon"):
        frames[1] = json.dumps({**header, "until_us": bad}).encode()
        with pytest.raises(WireError, match="bad_field"):
            decode(frames)


@pytest.mark.parametrize(
    "changes",
    [
        {"width": 1 << 20},
        {"height": 0},
        {"sent_ns": -1},
        {"sent_ns": 1 << 64},
        {"seq": -3},
        {"stream": "a/b"},
        {"stream": "x" * 200},
        {"session": "tab\there"},
    ],
)
def test_header_integers_and_ids_are_range_checked(changes):
    with pytest.raises(WireError) as error:
        decode(with_header(**changes))
    assert error.value.reason == "bad_field"


def test_event_timestamps_and_label_spans_are_range_checked():
    events = sample_events(3)
    events["timestamp"][0] = -1
    with pytest.raises(WireError, match="timestamp"):
        decode(encode(events_message("a", "s", 0, events)))
    events["timestamp"][0] = 1 << 60
    with pytest.raises(WireError, match="timestamp"):
        decode(encode(events_message("a", "s", 0, events)))
    backwards = [{"label": 1, "start_us": 10, "end_us": 5}]
    with pytest.raises(WireError, match="bad_labels"):
        decode(raw_frames("labels", segments=backwards))


def test_malformed_messages_are_logged_once_a_second_per_reason(pair, caplog):
    push, pull = pair
    stats = WireStats()
    for _ in range(50):
        push.send_multipart([b"events/a/", b"not json"])
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            assert receive(pull, stats, log, timeout_ms=2000) is None
    assert stats.malformed == {"bad_header": 50}
    assert caplog.text.count("dropped malformed message") == 1
