"""DashboardState without Qt: real wire messages (encoded, then decoded) in, what the
dashboard would show out; odd contents are counted, never raised."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.labels import LabelSegment
from streamer import wire
from streamer.dashboard_state import (
    OFF_RGB,
    ON_RGB,
    DashboardState,
    preview_rgb,
)

NAMES = ["zero", "one", "two"]
TIMINGS_MS = {"receive": 0.1, "compress": 0.2, "infer": 1.5, "publish": 0.05}


class FakeClock:
    """Wall time the test sets (the state's stall detection reads it)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def decoded(frames: list) -> wire.Message:
    return wire.decode([bytes(f) for f in frames])


def sent(message: wire.Message) -> wire.Message:
    """``message`` as a receiver gets it: encoded, then decoded."""
    return decoded(wire.encode(message))


def raw_frames(message_type: str, fields: dict, *, stream="s1", seq=1) -> list[bytes]:
    """[topic, header] of a message built by hand (what no encoder would write)."""
    header = {
        "v": wire.PROTOCOL_VERSION,
        "type": message_type,
        "stream": stream,
        "session": "w1",
        "seq": seq,
        "sent_ns": 1,
        **fields,
    }
    return [wire.topic(message_type, stream), json.dumps(header).encode()]


def deliver(state: DashboardState, frames: list) -> None:
    """What the dashboard's feed does with each message it receives."""
    try:
        message = decoded(frames)
    except wire.WireError as error:
        state.note_malformed(error.reason)
        return
    state.apply(message)


def prediction(seq, t_end_us, probs, *, stream="s1", session="w1", sent_ns=0, **extra):
    probs = np.asarray(probs, np.float64)
    top1 = int(np.argmax(probs))
    fields = {
        "top1_name": NAMES[top1] if len(probs) == len(NAMES) else str(top1),
        "source_session": "p1",
        "timings_ms": TIMINGS_MS,
        **extra,
    }
    message = wire.Prediction(
        stream=stream,
        session=session,
        seq=seq,
        sent_ns=sent_ns,
        t_end_us=t_end_us,
        hop_us=100_000,
        probs=probs,
        top1=top1,
        **fields,
    )
    return sent(message)


def preview(seq, image, *, stream="s1", t_start_us=0, t_end_us=33_000, per_count=1, events=-1):
    """A preview message; ``events`` sets the header's exact count (None: no such field,
    -1: the image's counts times ``per_count``)."""
    message = wire.Preview(
        stream=stream,
        session="w1",
        seq=seq,
        image=image,
        t_start_us=t_start_us,
        t_end_us=t_end_us,
        events=int(image.sum(dtype=np.int64)) * per_count if events in (-1, None) else events,
        events_per_count=per_count,
    )
    frames = wire.encode(message)
    if events is None:
        header = json.loads(bytes(frames[1]))
        del header["events"]
        frames = [frames[0], json.dumps(header).encode(), frames[2]]
    return decoded(frames)


def labels(seq, segments, *, stream="s1"):
    message = wire.Labels(
        stream=stream,
        session="w1",
        seq=seq,
        segments=tuple(LabelSegment(c, a, b) for c, a, b in segments),
        source_session="p1",
    )
    return sent(message)


def stats(seq, **fields):
    return sent(wire.Stats(stream="", session="w1", seq=seq, values=fields))


def test_prediction_sets_bars_names_timeline_and_latency():
    state = DashboardState()
    state.apply(labels(1, [(2, 0, 1_000_000)]))
    state.apply(prediction(2, 100_000, [0.1, 0.2, 0.7], sent_ns=1_000_000_000), 1_004_000_000)
    state.apply(prediction(3, 200_000, [0.6, 0.3, 0.1], sent_ns=1_000_000_000), 1_002_000_000)
    assert state.stream == "s1"
    np.testing.assert_allclose(state.probabilities, [0.6, 0.3, 0.1])
    assert state.top1 == 0
    # Without worker stats, names are learned from top1_name as classes win.
    assert state.class_names == ["zero", "1", "two"]
    assert [(e.t_end_us, e.top1, e.truth) for e in state.timeline] == [
        (100_000, 2, 2),
        (200_000, 0, 2),
    ]
    assert state.accuracy == pytest.approx(0.5)
    t_s, top1, truth = state.timeline_arrays()
    np.testing.assert_allclose(t_s, [0.1, 0.2])
    np.testing.assert_allclose(top1, [2, 0])
    np.testing.assert_allclose(truth, [2, 2])
    assert list(state.latency_ms) == pytest.approx([4.0, 2.0])
    p50, p99 = state.latency_percentiles_ms()
    assert p50 == pytest.approx(3.0) and 3.9 < p99 <= 4.0
    assert state.median_timings_ms()["infer"] == pytest.approx(1.5)
    assert state.predictions == 2


def test_ground_truth_missing_outside_label_segments():
    state = DashboardState()
    state.apply(labels(1, [(1, 0, 300_000), (0, 500_000, 800_000)]))
    for seq, t in enumerate((100_000, 400_000, 600_000), start=2):
        state.apply(prediction(seq, t, [0.2, 0.5, 0.3]))
    _, _, truth = state.timeline_arrays()
    assert truth[0] == 1 and np.isnan(truth[1]) and truth[2] == 0
    assert state.scored == 2 and state.correct == 1
    x_s, y = state.truth_steps(400_000, 2_000_000)  # the first segment ends before the view
    np.testing.assert_allclose(x_s, [0.5, 0.8, np.nan])
    np.testing.assert_allclose(y, [0, 0, np.nan])


def test_ground_truth_is_the_label_at_the_hops_last_microsecond():
    """A hop ending at ``t_end_us`` holds events before it: its truth is the label at
    ``t_end_us - 1`` (a hop ending where a segment starts has none of its events)."""
    state = DashboardState()
    state.apply(labels(1, [(1, 0, 300_000), (2, 300_000, 500_000), (0, 600_000, 800_000)]))
    ends = (1, 300_000, 300_001, 500_000, 500_001, 600_000, 600_001, 800_000, 800_001)
    for seq, t in enumerate(ends, start=2):
        state.apply(prediction(seq, t, [0.2, 0.5, 0.3]))
    truths = [e.truth for e in state.timeline]
    assert truths == [1, 1, 2, 2, None, None, 0, 0, None]
    assert [state.truth_at(t) for t in (0, 1)] == [None, 1]


def test_label_messages_are_merged_in_time_order():
    state = DashboardState()
    state.apply(labels(1, [(0, 500_000, 800_000)]))
    state.apply(labels(2, [(1, 0, 300_000)]))
    assert state.segments == [LabelSegment(1, 0, 300_000), LabelSegment(0, 500_000, 800_000)]
    assert [state.truth_at(t) for t in (100_000, 400_000, 600_000)] == [1, None, 0]


def test_timeline_keeps_only_its_span_and_restarts_with_a_new_producer_session():
    state = DashboardState(timeline_span_us=1_000_000)
    for seq in range(1, 31):
        state.apply(prediction(seq, seq * 100_000, [0.2, 0.5, 0.3]))
    times = [e.t_end_us for e in state.timeline]
    assert times[0] >= times[-1] - 1_000_000 and times[-1] == 3_000_000
    state.apply(prediction(31, 50_000, [0.2, 0.5, 0.3], source_session="p2"))
    assert [e.t_end_us for e in state.timeline] == [50_000]


def test_newest_preview_wins_and_undrawn_ones_are_counted():
    state = DashboardState()
    images = [np.full((2, 4, 6), k, np.uint8) for k in range(1, 4)]
    for seq, image in enumerate(images, start=1):
        state.apply(preview(seq, image))
    drawn = state.take_image()
    np.testing.assert_array_equal(drawn, images[-1])
    assert state.previews_superseded == 2
    assert state.take_image() is None  # nothing new since
    state.apply(preview(4, images[0]))
    assert state.take_image() is not None
    assert state.previews_superseded == 2


def test_events_per_s_from_worker_stats_else_from_previews():
    state = DashboardState()
    image = np.zeros((2, 4, 4), np.uint8)
    image[1, 0, :] = 10  # 40 counts x 5 events per count = 200 events in 10 ms
    # Without the exact count, events/s is estimated from the image.
    state.apply(preview(1, image, t_start_us=0, t_end_us=10_000, per_count=5, events=None))
    assert state.rate_per_s() == pytest.approx(20_000)
    state.apply(preview(2, image, t_start_us=10_000, t_end_us=20_000, events=3_000))
    assert state.rate_per_s() == pytest.approx((200 + 3_000) / 0.02)
    state.apply(stats(1, uptime_s=1.0, events_received={"s1": 1_000}))
    state.apply(stats(2, uptime_s=3.0, events_received={"s1": 2_001_000}))
    assert state.rate_per_s() == pytest.approx(1_000_000)


def test_stats_fill_status_and_worker_drop_counters():
    state = DashboardState()
    state.apply(
        stats(
            1,
            model="nmnist",
            device="cpu (1 thread)",
            hop_us=75_000,
            steps=4,
            class_names=[str(d) for d in range(10)],
            dropped_events=123,
            steps_skipped=4,
            missing_messages={"s1": 2, "s2": 1},
        )
    )
    assert state.info == {"model": "nmnist", "device": "cpu (1 thread)", "hop_us": 75_000, "T": 4}
    assert state.class_names[7] == "7" and len(state.class_names) == 10
    assert state.worker_counters["dropped_events"] == 123
    assert state.worker_counters["steps_skipped"] == 4
    assert state.worker_counters["input_missing_messages"] == 3


DROP = object()  # a header field left out
GOOD_PREDICTION = {"t_end_us": 1, "hop_us": 1_000, "probs": [0.5, 0.5], "top1": 0}


def prediction_frames(**changes) -> list[bytes]:
    fields = {**GOOD_PREDICTION, **changes}
    return raw_frames("prediction", {k: v for k, v in fields.items() if v is not DROP})


def test_a_hand_built_prediction_is_taken():
    state = DashboardState()
    deliver(state, prediction_frames())
    assert not state.malformed and state.top1 == 0 and state.class_names == ["0", "1"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"probs": "high"}, "probs"),
        ({"probs": [0.5, "x"]}, "probs"),
        ({"probs": [[0.5], [0.5]]}, "probs"),
        ({"probs": [0.5, float("nan")]}, "probs"),
        ({"probs": []}, "probs"),
        ({"t_end_us": "late"}, "t_end_us"),
        ({"t_end_us": DROP}, "t_end_us"),
        ({"hop_us": DROP}, "hop_us"),
        ({"top1": DROP}, "top1"),
        ({"top1": True}, "top1"),
        # A top-1 outside the probabilities is not the sender's argmax: it is rejected.
        ({"top1": 7}, "top1"),
        ({"top1": -1}, "top1"),
        ({"logits": [1.0, 2.0, 3.0]}, "logits"),
        ({"timings_ms": {"infer": "slow"}}, "timings_ms"),
    ],
)
def test_odd_prediction_fields_are_counted_not_raised(changes, field):
    frames = prediction_frames(**changes)
    with pytest.raises(wire.WireError, match=field) as error:
        decoded(frames)
    assert error.value.reason == "bad_prediction"
    state = DashboardState()
    deliver(state, frames)
    assert dict(state.malformed) == {"bad_prediction": 1}
    assert state.probabilities is None and not state.timeline and state.predictions == 0


def test_odd_labels_and_stats_are_counted_not_raised():
    state = DashboardState()
    deliver(state, raw_frames("labels", {"segments": [{"label": 1, "start_us": "a"}]}))
    deliver(state, raw_frames("labels", {"segments": ["not a segment"]}, seq=2))
    deliver(state, raw_frames("labels", {"segments": "0-10"}, seq=3))
    state.apply(stats(1, class_names="abc", hop_us=[1], events_received=7, uptime_s="x"))
    assert dict(state.malformed) == {"bad_labels": 3}
    assert not state.segments
    assert state.class_names == [] and "hop_us" not in state.info
    deliver(state, raw_frames("end", {"reason": 3}, seq=4))
    assert state.malformed["bad_end"] == 1 and state.ended_reason is None


def test_other_streams_are_ignored_and_counted():
    state = DashboardState()
    state.apply(prediction(1, 10, [0.1, 0.2, 0.7], stream="a"))
    state.apply(prediction(1, 10, [0.9, 0.05, 0.05], stream="b"))
    assert state.stream == "a" and state.top1 == 2
    assert state.other_streams["b"] == 1
    fixed = DashboardState(stream="b")
    fixed.apply(prediction(1, 10, [0.1, 0.2, 0.7], stream="a"))
    fixed.apply(prediction(1, 10, [0.9, 0.05, 0.05], stream="b"))
    assert fixed.top1 == 0 and fixed.other_streams["a"] == 1


def test_sequence_gaps_between_worker_and_dashboard_are_counted():
    state = DashboardState()
    for seq in (1, 2, 5, 6, 9):
        state.apply(prediction(seq, seq * 1000, [0.1, 0.2, 0.7]))
    assert state.missing_messages == 4


def test_connection_waiting_live_stalled_ended():
    clock = FakeClock()
    state = DashboardState(stall_after_s=1.0, clock=clock)
    assert state.connection().state == "waiting"
    state.peers_connected = 0
    assert "no publisher" in state.connection().detail
    state.peers_connected = 1
    state.apply(stats(1, model="m"))
    assert state.connection().detail == "worker alive, no prediction yet"
    state.apply(prediction(1, 1000, [0.1, 0.2, 0.7]))
    assert state.connection().state == "live"
    clock.now += 1.5
    stalled = state.connection()
    assert stalled.state == "stalled" and "no prediction for 1.5 s; worker alive" in stalled.detail
    clock.now += 5.0
    assert "no message for 6.5 s" in state.connection().detail
    state.peers_connected = 0
    assert "publisher disconnected" in state.connection().detail
    state.apply(sent(wire.End(stream="s1", session="w1", seq=2, reason="replay done")))
    assert state.connection().state == "ended" and state.connection().detail == "replay done"
    state.apply(prediction(3, 2000, [0.1, 0.2, 0.7]))
    assert state.connection().state == "live"


def test_reset_clears_the_view_but_keeps_what_the_worker_said_about_itself():
    state = DashboardState()
    state.apply(stats(1, model="m", class_names=NAMES))
    state.apply(preview(1, np.ones((2, 3, 3), np.uint8)))
    state.apply(prediction(2, 1000, [0.1, 0.2, 0.7], sent_ns=1), 2_000_001)
    state.note_malformed("bad_header")
    state.reset()
    assert state.image is None and state.take_image() is None
    assert state.probabilities is None and not state.timeline and not state.latency_ms
    assert not state.malformed and state.predictions == 0
    assert state.connection().state == "waiting"
    assert state.info["model"] == "m" and state.class_names == NAMES


def test_preview_rgb_fixed_levels_on_red_off_blue():
    image = np.zeros((2, 2, 3), np.uint8)
    image[1, 0, 0] = 1  # one ON event
    image[1, 0, 1] = 200  # many ON events
    image[0, 1, 0] = 200  # many OFF events
    image[:, 1, 1] = 200  # both
    rgb = preview_rgb(image)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], np.asarray(ON_RGB) // 2)
    np.testing.assert_array_equal(rgb[0, 1], ON_RGB)
    np.testing.assert_array_equal(rgb[1, 0], OFF_RGB)
    np.testing.assert_array_equal(rgb[1, 1], np.minimum(np.add(ON_RGB, OFF_RGB), 255))
    np.testing.assert_array_equal(rgb[0, 2], [0, 0, 0])
