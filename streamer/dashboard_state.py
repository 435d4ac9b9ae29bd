"""What the dashboard shows, as plain data: fed by decoded wire messages, read by the window.

The window (``streamer/dashboard.py``) only draws what this holds, so
everything that decides *what* is shown (which stream, the newest event image,
class probabilities, the top-1 timeline beside the ground truth, rolling
latency percentiles, events/s, drop counters, live/stalled/ended) lives here,
without Qt, where a unit test can feed it messages and read it back.

Messages are the worker's (docs/streaming.md): ``prediction`` and ``preview``
per stream, ``labels`` and ``end`` forwarded from the producer, and ``stats``
(stream ``""``) with the worker's counters, model, device and class names.
Messages arrive decoded and checked (streamer/wire.py: a prediction whose
probabilities are not a list of numbers, a label segment without times... is
counted as malformed under its ``WireError`` reason and never gets here); odd
values in a worker's stats are ignored: a dashboard never dies on its input.

Latency is the issue's processing latency: the prediction received here
minus ``sent_ns`` of the producer's last events message that went into it
(the worker copies it into the prediction). Both clocks are this machine's
only when producer and dashboard share a machine; otherwise the figure is
off by the clock offset (docs/dashboard.md).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from core.labels import LabelSegment, label_at
from streamer import wire

STALL_AFTER_S = 1.0  # no prediction or preview for longer than this: "stalled"
WORKER_ALIVE_S = 2.5  # the worker sends stats every second: one within this says it runs
TIMELINE_SPAN_US = 10_000_000  # stream time kept in the top-1 timeline
LATENCY_WINDOW = 200  # predictions in the rolling p50/p99
LATENCY_HISTORY_POINTS = 600  # p50/p99 points kept for the plot
LATENCY_SAMPLE_S = 0.1  # at most one p50/p99 point per this much wall time
RATE_WINDOW_S = 2.0  # events/s from previews over this much wall time
MAX_CLASSES = 1000
MAX_LABEL_SEGMENTS = 4096
MAX_TIMELINE_ENTRIES = 20_000
TIMING_NAMES = ("receive", "compress", "infer", "publish")
ON_RGB = (255, 70, 40)  # polarity 1 (brighter)
OFF_RGB = (40, 120, 255)  # polarity 0 (darker)


@dataclass(frozen=True)
class TimelineEntry:
    """One prediction on the timeline: window end (stream time), top-1, ground truth."""

    t_end_us: int
    top1: int
    truth: int | None


@dataclass(frozen=True)
class Connection:
    """What the status line says about the feed."""

    state: str  # "waiting", "live", "stalled" or "ended"
    idle_s: float | None  # since the shown stream's last prediction or preview
    detail: str


class DashboardState:
    """The dashboard's model of one stream (``stream``, or the first one seen).

    ``apply(message, received_ns)`` feeds it; the window reads the attributes
    and the ``*_version`` counters, which go up whenever what a panel shows
    changes, so it redraws only what changed."""

    def __init__(
        self,
        stream: str | None = None,
        *,
        stall_after_s: float = STALL_AFTER_S,
        timeline_span_us: int = TIMELINE_SPAN_US,
        latency_window: int = LATENCY_WINDOW,
        clock=time.monotonic,
    ):
        self.fixed_stream = stream
        self.stall_after_s = stall_after_s
        self.timeline_span_us = timeline_span_us
        self.latency_window = latency_window
        self.clock = clock
        # What the worker tells about itself (stats); kept across resets.
        self.info: dict[str, object] = {}
        self.class_names: list[str] = []
        self.peers_connected: int | None = None  # the feed's socket monitor; None: unknown
        self.reset()

    # -- state -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything shown (the r key): image, bars, timeline, latency, counters."""
        self.stream = self.fixed_stream
        self.wire_stats = wire.WireStats()
        self.tracker = wire.SequenceTracker(self.wire_stats)
        self.image: np.ndarray | None = None  # uint8 [2, H, W] (OFF, ON), newest preview
        self.image_t_end_us: int | None = None
        self.image_version = 0
        self._image_taken = 0
        self.previews_superseded = 0  # received but replaced before the window drew them
        self.probabilities: np.ndarray | None = None
        self.top1: int | None = None
        self.t_end_us: int | None = None
        self.prediction_version = 0
        self.timeline: deque[TimelineEntry] = deque(maxlen=MAX_TIMELINE_ENTRIES)
        self.segments: list[LabelSegment] = []  # sorted by start, the newest MAX_LABEL_SEGMENTS
        self.source_session: str | None = None
        self.scored = 0  # timeline entries with ground truth
        self.correct = 0
        self.latency_ms: deque[float] = deque(maxlen=self.latency_window)
        self.latency_history: deque[tuple[float, float, float]] = deque(
            maxlen=LATENCY_HISTORY_POINTS
        )
        self._last_latency_point_s = -math.inf
        self.timings_ms: dict[str, deque[float]] = {
            name: deque(maxlen=self.latency_window) for name in TIMING_NAMES
        }
        self._preview_events: deque[tuple[float, int, int]] = deque()  # (wall s, events, µs)
        self.events_per_s: float | None = None
        self._stats_events: tuple[float, int] | None = None  # (uptime_s, events received)
        self.worker_counters: dict[str, int] = {}
        self.other_streams: Counter = Counter()
        self.predictions = 0
        self.ended_reason: str | None = None
        self.started_s = self.clock()
        self.last_stream_message_s: float | None = None  # prediction or preview
        self.last_message_s: float | None = None  # anything decodable
        self.last_stats_s: float | None = None  # the worker's stats (about once a second)

    @property
    def malformed(self) -> Counter:
        return self.wire_stats.malformed

    @property
    def missing_messages(self) -> int:
        """Messages lost between the worker and this dashboard (sequence gaps)."""
        return sum(self.wire_stats.missing_messages.values())

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    # -- input -------------------------------------------------------------------------

    def note_malformed(self, reason: str) -> None:
        """A message that could not be decoded (``wire.WireError.reason``)."""
        self.wire_stats.malformed[reason] += 1

    def apply(self, message: wire.Message, received_ns: int | None = None) -> None:
        """Take one decoded message; never raises on odd contents (they are ignored)."""
        now_s = self.clock()
        self.last_message_s = now_s
        if isinstance(message, wire.Stats):
            self.last_stats_s = now_s
            self._observe(message)
            self._apply_stats(message)
            return
        if not isinstance(message, (wire.Prediction, wire.Preview, wire.Labels, wire.End)):
            self.other_streams["(type " + message.type + ")"] += 1
            return
        if self.stream is None:
            self.stream = message.stream
        if message.stream != self.stream:
            self.other_streams[message.stream] += 1
            return
        self.wire_stats.received[message.type] += 1
        self._observe(message)
        if isinstance(message, wire.Prediction):
            self._apply_prediction(message, received_ns, now_s)
        elif isinstance(message, wire.Preview):
            self._apply_preview(message, now_s)
        elif isinstance(message, wire.Labels):
            self._new_source_session(message.source_session)
            self._add_segments(message.segments)
        else:
            self.ended_reason = message.reason or "end of stream"
            self.prediction_version += 1

    def _observe(self, message: wire.Message) -> None:
        if self.tracker.observe(message) == "restart":
            self.source_session = None  # a worker restart: its timeline starts afresh

    def _new_source_session(self, session: str | None) -> None:
        """A new producer session (restart, new replay): its timeline is a new one."""
        if session and session != self.source_session:
            if self.source_session is not None:
                self.timeline.clear()
                self.segments.clear()
                self.prediction_version += 1
            self.source_session = session

    def _apply_prediction(self, message: wire.Prediction, received_ns, now_s: float) -> None:
        probs = np.clip(message.probs, 0.0, 1.0)
        t_end_us, top1 = message.t_end_us, message.top1
        self._learn_class_names(len(probs), top1, message.top1_name)
        self._new_source_session(message.source_session)
        if self.timeline and t_end_us < self.timeline[-1].t_end_us - self.timeline_span_us:
            self.timeline.clear()  # time went back by more than the view: a new timeline
        truth = self.truth_at(t_end_us)
        self.timeline.append(TimelineEntry(t_end_us, top1, truth))
        while self.timeline and self.timeline[0].t_end_us < t_end_us - self.timeline_span_us:
            self.timeline.popleft()
        if truth is not None:
            self.scored += 1
            self.correct += int(truth == top1)
        self.probabilities, self.top1, self.t_end_us = probs, top1, t_end_us
        self.predictions += 1
        self.prediction_version += 1
        self.last_stream_message_s = now_s
        self.ended_reason = None
        # A prediction without a model name ("" after decode) keeps the one the stats gave.
        self._note_info({"model": message.model or None, "hop_us": message.hop_us})
        self._note_latency(message, received_ns, now_s)

    def _note_latency(self, message: wire.Prediction, received_ns, now_s: float) -> None:
        for name in TIMING_NAMES:
            value = message.timings_ms.get(name)
            if value is not None and math.isfinite(value):
                self.timings_ms[name].append(float(value))
        if received_ns is None or message.sent_ns <= 0:
            return
        self.latency_ms.append((received_ns - message.sent_ns) / 1e6)
        if now_s - self._last_latency_point_s >= LATENCY_SAMPLE_S:
            p50, p99 = self.latency_percentiles_ms()
            self.latency_history.append((now_s, p50, p99))
            self._last_latency_point_s = now_s

    def _apply_preview(self, message: wire.Preview, now_s: float) -> None:
        if self.image_version > self._image_taken:
            self.previews_superseded += 1
        self.image = message.image
        self.image_t_end_us = message.t_end_us
        self.image_version += 1
        self.last_stream_message_s = now_s
        self.ended_reason = None
        if message.t_end_us > message.t_start_us:
            span_us = message.t_end_us - message.t_start_us
            self._preview_events.append((now_s, message.events, span_us))
            while self._preview_events and self._preview_events[0][0] < now_s - RATE_WINDOW_S:
                self._preview_events.popleft()

    def _add_segments(self, segments) -> None:
        merged = sorted([*self.segments, *segments], key=lambda s: (s.start_us, s.end_us))
        self.segments = merged[-MAX_LABEL_SEGMENTS:]
        self.prediction_version += 1

    def _apply_stats(self, message: wire.Stats) -> None:
        values = message.values
        self._note_info(values)
        names = values.get("class_names")
        if isinstance(names, list) and 0 < len(names) <= MAX_CLASSES:
            self.class_names = [str(name) for name in names]
        for name in ("dropped_events", "dropped_messages", "steps_skipped", "predictions_dropped"):
            value = values.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                self.worker_counters[name] = value
        missing = values.get("missing_messages")
        if isinstance(missing, dict):
            self.worker_counters["input_missing_messages"] = sum(
                v for v in missing.values() if isinstance(v, int)
            )
        received = values.get("events_received")
        uptime_s = values.get("uptime_s")
        if self.stream is not None and isinstance(received, dict):
            events = received.get(self.stream)
            if isinstance(events, int) and isinstance(uptime_s, (int, float)):
                previous, self._stats_events = self._stats_events, (float(uptime_s), events)
                if previous is not None and uptime_s > previous[0] and events >= previous[1]:
                    self.events_per_s = (events - previous[1]) / (uptime_s - previous[0])

    def _note_info(self, values) -> None:
        for name in ("model", "device", "source", "hop_us", "steps", "T"):
            value = values.get(name)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                self.info["T" if name == "steps" else name] = value

    def _learn_class_names(self, count: int, top1: int, name: str | None) -> None:
        if len(self.class_names) != count:
            self.class_names = [str(i) for i in range(count)]
        if name:
            self.class_names[top1] = name

    # -- queries -----------------------------------------------------------------------

    def truth_at(self, t_end_us: int) -> int | None:
        """The ground-truth class of a hop ending at ``t_end_us`` (at its last µs)."""
        return label_at(self.segments, t_end_us - 1)

    def take_image(self) -> np.ndarray | None:
        """The newest preview if the window has not drawn it yet, else None."""
        if self.image_version == self._image_taken:
            return None
        self._image_taken = self.image_version
        return self.image

    def latency_percentiles_ms(self) -> tuple[float, float]:
        if not self.latency_ms:
            return math.nan, math.nan
        p50, p99 = np.percentile(np.fromiter(self.latency_ms, float), [50, 99])
        return float(p50), float(p99)

    def median_timings_ms(self) -> dict[str, float]:
        return {
            name: float(np.median(np.fromiter(values, float)))
            for name, values in self.timings_ms.items()
            if values
        }

    def preview_events_per_s(self) -> float | None:
        """Events/s the previews summarised (their ``events`` field, else their counts,
        a lower bound since counts saturate at 255)."""
        covered_us = sum(span for _, _, span in self._preview_events)
        if not covered_us:
            return None
        return sum(events for _, events, _ in self._preview_events) / (covered_us / 1e6)

    def rate_per_s(self) -> float | None:
        """Input events/s: the worker's count when it reports one, else the previews'."""
        return self.events_per_s if self.events_per_s is not None else self.preview_events_per_s()

    def timeline_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(window end s, top-1, truth with NaN where unknown) of the timeline."""
        entries = list(self.timeline)
        t_s = np.fromiter((e.t_end_us for e in entries), np.float64, len(entries)) / 1e6
        top1 = np.fromiter((e.top1 for e in entries), np.float64, len(entries))
        truth = np.fromiter(
            (math.nan if e.truth is None else e.truth for e in entries), np.float64, len(entries)
        )
        return t_s, top1, truth

    def truth_steps(self, t_from_us: int, t_to_us: int) -> tuple[np.ndarray, np.ndarray]:
        """The ground truth over ``[t_from_us, t_to_us]`` as a step line: (s, class) with
        NaN between segments, so a plot draws each segment flat from start to end."""
        x: list[float] = []
        y: list[float] = []
        for label, start_us, end_us in self.segments:
            if end_us < t_from_us or start_us > t_to_us:
                continue
            x += [start_us / 1e6, end_us / 1e6, math.nan]
            y += [label, label, math.nan]
        return np.asarray(x, np.float64), np.asarray(y, np.float64)

    def connection(self, now_s: float | None = None) -> Connection:
        now_s = self.clock() if now_s is None else now_s
        if self.last_message_s is None:
            if self.peers_connected == 0:
                return Connection("waiting", None, "no publisher connected")
            return Connection("waiting", None, "no message yet")
        if self.ended_reason is not None:
            return Connection("ended", None, self.ended_reason)
        if self.last_stream_message_s is None:
            return Connection("waiting", None, "worker alive, no prediction yet")
        idle_s = now_s - self.last_stream_message_s
        if idle_s <= self.stall_after_s:
            return Connection("live", idle_s, "")
        if self.last_stats_s is not None and now_s - self.last_stats_s <= WORKER_ALIVE_S:
            detail = f"no prediction for {idle_s:.1f} s; worker alive"
        else:
            detail = f"no message for {now_s - self.last_message_s:.1f} s"
        if self.peers_connected == 0:
            detail += "; publisher disconnected"
        return Connection("stalled", idle_s, detail)


# Fixed levels: a pixel with n events of a polarity is drawn at 1 - 2**-n of full colour
# (1 event half, 3 events 7/8), the same at every event rate, so a dense and a sparse
# stream look different rather than being rescaled to look alike.
_LEVEL_OF_COUNT = 1.0 - 0.5 ** np.arange(256, dtype=np.float32)


def preview_rgb(image: np.ndarray) -> np.ndarray:
    """``uint8 [2, H, W]`` counts (OFF, ON) -> ``uint8 [H, W, 3]``: ON red, OFF blue,
    both magenta, none black."""
    off = _LEVEL_OF_COUNT[image[0]][..., None]
    on = _LEVEL_OF_COUNT[image[1]][..., None]
    rgb = on * np.asarray(ON_RGB, np.float32) + off * np.asarray(OFF_RGB, np.float32)
    return np.minimum(rgb, 255.0).astype(np.uint8)
