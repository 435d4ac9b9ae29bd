"""The ZeroMQ wire format between producer, worker and dashboard (protocol v1).

One frozen dataclass per message type, each with its encoding and decoding:

    ``Events``      a chunk of one stream's events (producer)
    ``Labels``      ground-truth segments of a replay (producer; forwarded by the worker)
    ``End``         end of a stream (producer; forwarded by the worker)
    ``Prediction``  one network step's output for one stream (worker)
    ``Preview``     a decimated count image of a stream for a display (worker)
    ``Stats``       a worker's counters (worker)

``encode(message)`` gives the frames to send, ``decode(frames)`` the message
back. Every message is multipart:

    frame 0  topic    b"<type>/<stream id>/"  (PUB/SUB prefix filtering by type and stream)
    frame 1  header   UTF-8 JSON object, always with "v" (protocol version), "type",
                      "stream", "session", "seq" and "sent_ns"
    frame 2  payload  ``Events``: the raw EVENT_DTYPE array (16 bytes/event);
                      ``Preview``: ``uint8 [2, H, W]``; no other type has one

docs/wire-protocol.md lists every field. ``decode`` rejects anything malformed
with a ``WireError`` whose ``reason`` says what is wrong; ``receive`` counts
those (``WireStats``) and drops them, so receivers keep running.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from core.events import EVENT_DTYPE, SensorSize
from core.labels import LabelSegment

PROTOCOL_VERSION = 1
MAX_PREVIEW_SIDE = 1024
MAX_HEADER_BYTES = 1 << 20  # a header larger than this is garbage, not a message
MAX_EVENTS_PER_MESSAGE = 1 << 26
MAX_CLASSES = 1000
MAX_SEGMENTS_PER_MESSAGE = 1 << 16
MAX_SENSOR_SIDE = 1 << 14  # pixels; the largest event cameras have 1280 x 720
MAX_ID_CHARS = 128  # stream and session ids
MAX_TIME = (1 << 63) - 1  # seq, sent_ns: non-negative int64
MAX_TIMESTAMP_US = 1 << 53  # events: 285 years of µs, exact in a float64
MALFORMED_LOG_INTERVAL_S = 1.0


class WireError(ValueError):
    """A message that does not follow the protocol; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


def topic(message_type: str, stream: str = "") -> bytes:
    """Topic prefix to subscribe to: ``topic("events")`` takes every stream's events."""
    return f"{message_type}/{stream}/".encode() if stream else f"{message_type}/".encode()


# --- header field checks ------------------------------------------------------------------


_REQUIRED = object()


def _integer(header: Mapping, name: str, reason: str, default: Any = _REQUIRED) -> int:
    """An int field (not a bool); ``default`` where the field is absent, if given."""
    if name not in header and default is not _REQUIRED:
        return default
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(reason, f"header field {name!r} is {value!r}")
    return value


def _text(header: Mapping, name: str, reason: str, default: Any = _REQUIRED) -> str:
    """A str field; ``default`` where the field is absent, if given."""
    if name not in header and default is not _REQUIRED:
        return default
    value = header.get(name)
    if not isinstance(value, str):
        raise WireError(reason, f"header field {name!r} is {value!r}")
    return value


def _payload_size(header: Mapping, dtype: str) -> tuple[int, int]:
    """``(width, height)`` of a message whose payload must be of ``dtype``."""
    if header.get("dtype") != dtype:
        raise WireError("bad_dtype", f"dtype {header.get('dtype')!r}, expected {dtype!r}")
    return _integer(header, "width", "bad_field"), _integer(header, "height", "bad_field")


def _numbers(header: Mapping, name: str, reason: str) -> np.ndarray:
    """A flat list of 1 to MAX_CLASSES finite numbers as float64."""
    values = header.get(name)
    if not isinstance(values, list) or not 0 < len(values) <= MAX_CLASSES:
        raise WireError(reason, f"{name} is not a list of 1 to {MAX_CLASSES} numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise WireError(reason, f"{name} holds something other than numbers")
    try:
        array = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        raise WireError(reason, f"{name} holds a number beyond float64") from None
    if not np.all(np.isfinite(array)):
        raise WireError(reason, f"{name} holds a number that is not finite")
    return array


# --- the messages -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, eq=False)
class Message:
    """What every message carries.

    ``sent_ns`` is ``time.time_ns()`` at send (``encode`` stamps it when left at
    0); a ``Prediction`` carries instead the send time of the newest events
    message that went into it, so that receipt minus ``sent_ns`` is the latency
    from the event source to the prediction (one clock only on one machine)."""

    type: ClassVar[str]
    stream: str
    session: str
    seq: int
    sent_ns: int = 0

    def fields(self) -> dict[str, Any]:
        """The header fields of this type (JSON values)."""
        return {}

    def payload(self) -> memoryview | None:
        return None


@dataclass(frozen=True, kw_only=True, eq=False)
class Events(Message):
    """A chunk of events of one stream, from a sensor of ``sensor`` pixels. ``until_us``
    (optional): the stream has no further event before this time (a watermark), so a
    receiver may close the time steps that end at or before it."""

    type: ClassVar[str] = "events"
    events: np.ndarray  # EVENT_DTYPE; after decode a view on the received frame
    sensor: SensorSize
    until_us: int | None = None

    def fields(self) -> dict[str, Any]:
        count = len(self.events)
        return {
            "count": count,
            "t_first_us": int(self.events["timestamp"][0]) if count else None,
            "t_last_us": int(self.events["timestamp"][-1]) if count else None,
            "width": int(self.sensor.width),
            "height": int(self.sensor.height),
            "dtype": "dv-event16",
            **({} if self.until_us is None else {"until_us": int(self.until_us)}),
        }

    def payload(self) -> memoryview:
        if self.events.dtype != EVENT_DTYPE:
            raise ValueError(f"events must have EVENT_DTYPE, got {self.events.dtype}")
        return memoryview(np.ascontiguousarray(self.events)).cast("B")

    @classmethod
    def decode(cls, envelope: dict, header: Mapping, payload: memoryview) -> Events:
        width, height = _payload_size(header, "dv-event16")
        count = _integer(header, "count", "bad_field")
        if not (0 <= count <= MAX_EVENTS_PER_MESSAGE) or not (
            0 < width <= MAX_SENSOR_SIDE and 0 < height <= MAX_SENSOR_SIDE
        ):
            raise WireError("bad_field", f"count {count}, sensor {width}x{height}")
        if len(payload) != count * EVENT_DTYPE.itemsize:
            raise WireError(
                "size_mismatch",
                f"payload of {len(payload)} bytes for {count} events "
                f"({count * EVENT_DTYPE.itemsize} expected)",
            )
        events = np.frombuffer(payload, dtype=EVENT_DTYPE)
        # One reduction checks both bounds: a negative timestamp read as uint64 is huge.
        if count and not int(events["timestamp"].view(np.uint64).max()) < MAX_TIMESTAMP_US:
            raise WireError("bad_field", "an event timestamp outside 0..2**53 µs")
        until_us = _integer(header, "until_us", "bad_field", None)
        if until_us is not None and count and until_us <= events["timestamp"][-1]:
            raise WireError("bad_field", f"until_us {until_us} not after the last event")
        return cls(**envelope, events=events, sensor=SensorSize(width, height), until_us=until_us)


@dataclass(frozen=True, kw_only=True, eq=False)
class Labels(Message):
    """Ground truth of a replay in the stream's event time. ``source_session`` is the
    producer's session when a worker forwards the message (None from the producer)."""

    type: ClassVar[str] = "labels"
    segments: tuple[LabelSegment, ...]
    source_session: str | None = None

    def fields(self) -> dict[str, Any]:
        segments = [
            {"label": int(s.label), "start_us": int(s.start_us), "end_us": int(s.end_us)}
            for s in self.segments
        ]
        extra = {} if self.source_session is None else {"source_session": self.source_session}
        return {**extra, "segments": segments}

    @classmethod
    def decode(cls, envelope: dict, header: Mapping, payload: None) -> Labels:
        raw = header.get("segments")
        if not isinstance(raw, list) or len(raw) > MAX_SEGMENTS_PER_MESSAGE:
            raise WireError("bad_labels", "segments is not a list (of at most 65,536)")
        segments = []
        for segment in raw:
            if not isinstance(segment, dict):
                raise WireError("bad_labels", f"segment {segment!r} is not an object")
            label = LabelSegment(
                *(_integer(segment, k, "bad_labels") for k in LabelSegment._fields)
            )
            if label.label < 0 or not 0 <= label.start_us <= label.end_us < MAX_TIMESTAMP_US:
                raise WireError("bad_labels", f"segment {label} is not a class over a time span")
            segments.append(label)
        source_session = _text(header, "source_session", "bad_labels", None)
        return cls(**envelope, segments=tuple(segments), source_session=source_session)


@dataclass(frozen=True, kw_only=True, eq=False)
class End(Message):
    """A stream ended (``reason``); ``source_session`` as for ``Labels``."""

    type: ClassVar[str] = "end"
    reason: str = "end of source"
    source_session: str | None = None

    def fields(self) -> dict[str, Any]:
        extra = {} if self.source_session is None else {"source_session": self.source_session}
        return {**extra, "reason": self.reason}

    @classmethod
    def decode(cls, envelope: dict, header: Mapping, payload: None) -> End:
        reason = _text(header, "reason", "bad_end", "")
        source_session = _text(header, "source_session", "bad_end", None)
        return cls(**envelope, reason=reason, source_session=source_session)


@dataclass(frozen=True, kw_only=True, eq=False)
class Prediction(Message):
    """The network's answer for one step (hop) of a stream; docs/streaming.md.

    ``probs`` is the smoothed (EMA) class distribution, ``logits`` the step's raw
    readout; ``top1`` indexes ``probs``. ``closed_by_sent_ns`` is the send time of
    the events message that closed the step, ``closed_by_received_ns`` when the
    worker received it, ``published_ns`` when the prediction left the worker (all
    ``time.time_ns()``: one clock on one machine); ``timings_ms`` the worker's
    stages (docs/streaming.md)."""

    type: ClassVar[str] = "prediction"
    t_end_us: int  # the step's end in stream time: it holds events before this
    hop_us: int
    probs: np.ndarray  # float64 [C]
    top1: int
    top1_name: str = ""
    top1_prob: float = math.nan
    logits: np.ndarray | None = None  # float [C]
    step: int = 0  # index of the step since the stream's (re)start
    skipped: int = 0  # steps skipped just before this one (overload)
    closed_by_sent_ns: int = 0
    closed_by_received_ns: int = 0  # when the worker took that message off its socket
    published_ns: int = 0  # when the worker handed this prediction to its socket
    source_session: str = ""
    model: str = ""
    timings_ms: Mapping[str, float] = field(default_factory=dict)

    @property
    def top1_raw(self) -> int | None:
        """The top class of the step's own readout (no smoothing), if sent."""
        return None if self.logits is None else int(np.argmax(self.logits))

    def fields(self) -> dict[str, Any]:
        return {
            "t_end_us": int(self.t_end_us),
            "hop_us": int(self.hop_us),
            "step": int(self.step),
            "skipped": int(self.skipped),
            "probs": np.asarray(self.probs, dtype=np.float64).tolist(),
            "logits": None if self.logits is None else np.asarray(self.logits, np.float64).tolist(),
            "top1": int(self.top1),
            "top1_name": self.top1_name,
            "top1_prob": float(self.top1_prob),
            "closed_by_sent_ns": int(self.closed_by_sent_ns),
            "closed_by_received_ns": int(self.closed_by_received_ns),
            "published_ns": int(self.published_ns),
            "source_session": self.source_session,
            "model": self.model,
            "timings_ms": dict(self.timings_ms),
        }

    @classmethod
    def decode(cls, envelope: dict, header: Mapping, payload: None) -> Prediction:
        bad = "bad_prediction"
        probs = _numbers(header, "probs", bad)
        top1 = _integer(header, "top1", bad)
        if not 0 <= top1 < len(probs):
            raise WireError(bad, f"top1 {top1} outside the {len(probs)} classes")
        logits = None if header.get("logits") is None else _numbers(header, "logits", bad)
        if logits is not None and len(logits) != len(probs):
            raise WireError(bad, f"{len(logits)} logits for {len(probs)} classes")
        timings = header.get("timings_ms", {})
        if not isinstance(timings, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in timings.values()
        ):
            raise WireError(bad, "timings_ms is not an object of numbers")
        top1_prob = header.get("top1_prob", probs[top1])
        if not isinstance(top1_prob, (int, float)) or isinstance(top1_prob, bool):
            raise WireError(bad, f"top1_prob is {top1_prob!r}")
        try:  # an integer beyond float64 passes the checks above
            top1_prob = float(top1_prob)
            timings = {str(k): float(v) for k, v in timings.items()}
        except OverflowError:
            raise WireError(bad, "top1_prob or timings_ms beyond float64") from None
        t_end_us, hop_us = _integer(header, "t_end_us", bad), _integer(header, "hop_us", bad)
        if not (0 <= t_end_us < MAX_TIMESTAMP_US and 0 < hop_us < MAX_TIMESTAMP_US):
            raise WireError(bad, f"t_end_us {t_end_us}, hop_us {hop_us}")
        return cls(
            **envelope,
            t_end_us=t_end_us,
            hop_us=hop_us,
            probs=probs,
            top1=top1,
            top1_name=_text(header, "top1_name", bad, str(top1)),
            top1_prob=top1_prob,
            logits=logits,
            step=_integer(header, "step", bad, 0),
            skipped=_integer(header, "skipped", bad, 0),
            closed_by_sent_ns=_integer(header, "closed_by_sent_ns", bad, envelope["sent_ns"]),
            closed_by_received_ns=_integer(header, "closed_by_received_ns", bad, 0),
            published_ns=_integer(header, "published_ns", bad, 0),
            source_session=_text(header, "source_session", bad, ""),
            model=_text(header, "model", bad, ""),
            timings_ms=timings,
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Preview(Message):
    """A decimated count image of ``[t_start_us, t_end_us)`` of a stream for a display.

    ``image`` is ``uint8 [2, H, W]`` (polarity OFF, ON; saturating counts); one
    count stands for ``events_per_count`` events when the events were sampled;
    ``events`` is the exact number of events it summarises (the image saturates,
    so its sum can be lower)."""

    type: ClassVar[str] = "preview"
    image: np.ndarray
    t_start_us: int
    t_end_us: int
    events: int
    events_per_count: int = 1

    def fields(self) -> dict[str, Any]:
        height, width = self.image.shape[1:]
        return {
            "width": int(width),
            "height": int(height),
            "dtype": "u8-2hw",
            "t_start_us": int(self.t_start_us),
            "t_end_us": int(self.t_end_us),
            "events_per_count": int(self.events_per_count),
            "events": int(self.events),
        }

    def payload(self) -> memoryview:
        image = self.image
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] != 2:
            raise ValueError(
                f"preview image must be uint8 [2, H, W], got {image.dtype} {image.shape}"
            )
        return memoryview(np.ascontiguousarray(image)).cast("B")

    @classmethod
    def decode(cls, envelope: dict, header: Mapping, payload: memoryview) -> Preview:
        width, height = _payload_size(header, "u8-2hw")
        if not (0 < width <= MAX_PREVIEW_SIDE and 0 < height <= MAX_PREVIEW_SIDE):
            raise WireError("bad_field", f"preview of {width}x{height}")
        if len(payload) != 2 * width * height:
            raise WireError(
                "size_mismatch",
                f"payload of {len(payload)} bytes for a 2x{height}x{width} preview "
                f"({2 * width * height} expected)",
            )
        image = np.frombuffer(payload, dtype=np.uint8).reshape(2, height, width)
        t_start_us = _integer(header, "t_start_us", "bad_preview")
        t_end_us = _integer(header, "t_end_us", "bad_preview")
        per_count = _integer(header, "events_per_count", "bad_preview", 1)
        if per_count < 1:
            raise WireError("bad_preview", f"events_per_count {per_count}")
        events = _integer(header, "events", "bad_preview", None)
        if events is None or events < 0:  # a sender without the exact count: a lower bound
            events = int(image.sum(dtype=np.int64)) * per_count
        return cls(
            **envelope,
            image=image,
            t_start_us=t_start_us,
            t_end_us=t_end_us,
            events=events,
            events_per_count=per_count,
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Stats(Message):
    """A worker's counters, model, device and class names (stream ``""``): a JSON
    object whose keys docs/streaming.md lists ("Stats messages")."""

    type: ClassVar[str] = "stats"
    values: Mapping[str, Any]

    def fields(self) -> dict[str, Any]:
        return dict(self.values)

    @classmethod
    def decode(cls, envelope: dict, header: Mapping, payload: None) -> Stats:
        envelope_keys = ("v", "type", "stream", "session", "seq", "sent_ns")
        return cls(**envelope, values={k: v for k, v in header.items() if k not in envelope_keys})


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.type: cls for cls in (Events, Labels, End, Prediction, Preview, Stats)
}
_WITH_PAYLOAD = ("events", "preview")


# --- encode and decode --------------------------------------------------------------------


def encode(message: Message) -> list:
    """The frames of ``message``; an event array or image is sent as is, without a copy."""
    if "/" in message.stream:
        raise ValueError(f"stream id {message.stream!r} must not contain '/'")
    header = {
        "v": PROTOCOL_VERSION,
        "type": message.type,
        "stream": message.stream,
        "session": message.session,
        "seq": int(message.seq),
        "sent_ns": int(message.sent_ns) or time.time_ns(),
        **message.fields(),
    }
    frames = [topic(message.type, message.stream), json.dumps(header).encode()]
    payload = message.payload()
    return frames if payload is None else [*frames, payload]


def _buffer(frame) -> memoryview:
    """A zero-copy view of a frame from ``recv_multipart(copy=False)`` or of bytes."""
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def _header(frame) -> dict:
    raw = _buffer(frame)
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError("bad_header", f"header of {len(raw)} bytes")
    try:
        header = json.loads(bytes(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WireError("bad_header", f"not JSON ({error})") from None
    except RecursionError:  # "[[[[..." nested deeper than the parser's stack
        raise WireError("bad_header", "JSON nested too deeply") from None
    except ValueError as error:  # an integer of over 4,300 digits (Python's limit)
        raise WireError("bad_header", f"not JSON we read ({error})") from None
    if not isinstance(header, dict):
        raise WireError("bad_header", f"header is {type(header).__name__}, not an object")
    return header


def _check_envelope(envelope: dict) -> None:
    for name in ("stream", "session"):
        value = envelope[name]
        if len(value) > MAX_ID_CHARS or "/" in value or not value.isprintable():
            raise WireError("bad_field", f"{name} id {value[:40]!r}: at most {MAX_ID_CHARS} "
                            "printable characters without '/'")  # fmt: skip
    for name in ("seq", "sent_ns"):
        if not 0 <= envelope[name] <= MAX_TIME:
            raise WireError("bad_field", f"{name} {envelope[name]} outside 0..2**63-1")


def decode(frames: list) -> Message:
    """Decode and check one multipart message. Raises ``WireError`` on anything wrong.

    An event array or preview image is a view on the received frame (no copy)."""
    if len(frames) < 2:
        raise WireError("short_message", f"{len(frames)} frame(s), expected at least 2")
    header = _header(frames[1])
    if header.get("v") != PROTOCOL_VERSION:
        raise WireError("bad_version", f"version {header.get('v')!r}, expected {PROTOCOL_VERSION}")
    message_type = header.get("type")
    if not isinstance(message_type, str) or message_type not in MESSAGE_TYPES:
        raise WireError("bad_type", f"type {message_type!r}")
    envelope = {
        "stream": _text(header, "stream", "bad_field"),
        "session": _text(header, "session", "bad_field"),
        "seq": _integer(header, "seq", "bad_field"),
        "sent_ns": _integer(header, "sent_ns", "bad_field"),
    }
    _check_envelope(envelope)
    expected_frames = 3 if message_type in _WITH_PAYLOAD else 2
    if len(frames) != expected_frames:
        raise WireError(
            "bad_frames",
            f"{message_type} message with {len(frames)} frames, expected {expected_frames}",
        )
    payload = _buffer(frames[2]) if expected_frames == 3 else None
    return MESSAGE_TYPES[message_type].decode(envelope, header, payload)


# --- receiving ----------------------------------------------------------------------------


@dataclass
class WireStats:
    """What a receiver saw: messages by type, drops by reason, sequence gaps by stream."""

    received: Counter = field(default_factory=Counter)
    malformed: Counter = field(default_factory=Counter)
    gaps: Counter = field(default_factory=Counter)
    missing_messages: Counter = field(default_factory=Counter)
    restarts: Counter = field(default_factory=Counter)
    logged_s: dict = field(default_factory=dict)  # reason -> when it was last logged

    def log_malformed(self, log, error: WireError) -> None:
        """One log line per reason per second at most: garbage must not flood the log."""
        now = time.monotonic()
        if now - self.logged_s.get(error.reason, -math.inf) < MALFORMED_LOG_INTERVAL_S:
            return
        self.logged_s[error.reason] = now
        log.warning(
            "dropped malformed message (%s); %d with this reason, %d in all so far",
            error,
            self.malformed[error.reason],
            sum(self.malformed.values()),
        )


class SequenceTracker:
    """Detects sequence gaps and producer restarts (a new session id) per stream; it
    remembers the last ``max_streams`` streams (a stream forgotten and seen again
    counts as new)."""

    def __init__(self, stats: WireStats, max_streams: int = 4096):
        self.stats = stats
        self.max_streams = max_streams
        self._last: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def observe(self, message: Message) -> str:
        """Return "new", "restart", "gap" or "ok" for this message, counting gaps."""
        previous = self._last.pop(message.stream, None)
        self._last[message.stream] = (message.session, message.seq)
        if len(self._last) > self.max_streams:
            self._last.popitem(last=False)
        if previous is None:
            return "new"
        session, seq = previous
        if session != message.session:
            self.stats.restarts[message.stream] += 1
            return "restart"
        if message.seq != seq + 1:
            self.stats.gaps[message.stream] += 1
            self.stats.missing_messages[message.stream] += max(message.seq - seq - 1, 0)
            return "gap"
        return "ok"


def receive(socket, stats: WireStats, log, *, timeout_ms: int | None = None) -> Message | None:
    """Receive and decode one message from a ZeroMQ socket without copying the payload.

    Returns None on timeout or on a malformed message, which is counted in
    ``stats.malformed`` and logged; the caller keeps running either way."""
    if timeout_ms is not None and not socket.poll(timeout_ms):
        return None
    frames = socket.recv_multipart(copy=False)
    try:
        message = decode(frames)
    except WireError as error:
        stats.malformed[error.reason] += 1
        stats.log_malformed(log, error)
        return None
    stats.received[message.type] += 1
    return message
