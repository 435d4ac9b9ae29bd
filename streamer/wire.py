"""The ZeroMQ wire format between producer, worker and dashboard (protocol v1).

Every message is multipart:

    frame 0  topic    b"<type>/<stream id>/"  (PUB/SUB prefix filtering by type and stream)
    frame 1  header   UTF-8 JSON object, always with "v" (protocol version), "type",
                      "stream", "session", "seq" and "sent_ns"
    frame 2  payload  only for type "events": the raw EVENT_DTYPE array (16 bytes/event)

Types: ``events`` (a chunk of one stream), ``labels`` (ground-truth segments of a
replay), ``end`` (end of stream), ``prediction`` (a worker's output), ``stats``
(a worker's counters) and ``preview`` (a decimated count image of a stream for
a dashboard; its payload frame is ``uint8 [2, H, W]``). See
docs/wire-protocol.md for every field. ``decode`` rejects anything malformed
with a ``WireError`` that says what is wrong; receivers count and drop those
(``WireStats``) and keep running.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.events import EVENT_DTYPE, SensorSize

PROTOCOL_VERSION = 1
MESSAGE_TYPES = ("events", "labels", "end", "prediction", "stats", "preview")
MAX_PREVIEW_SIDE = 1024
MAX_HEADER_BYTES = 1 << 20  # a header larger than this is garbage, not a message
MAX_EVENTS_PER_MESSAGE = 1 << 26


class WireError(ValueError):
    """A message that does not follow the protocol; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Message:
    """A decoded message: its header fields and, for ``events``, the event array."""

    type: str
    stream: str
    session: str
    seq: int
    header: dict[str, Any]
    events: np.ndarray | None = None
    image: np.ndarray | None = None  # ``preview`` only: uint8 [2, H, W] counts (OFF, ON)

    @property
    def sensor(self) -> SensorSize:
        return SensorSize(int(self.header["width"]), int(self.header["height"]))


def topic(message_type: str, stream: str = "") -> bytes:
    """Topic prefix to subscribe to: ``topic("events")`` takes every stream's events."""
    return f"{message_type}/{stream}/".encode() if stream else f"{message_type}/".encode()


def _frames(message_type: str, stream: str, session: str, seq: int, fields: dict) -> list:
    if "/" in stream:
        raise ValueError(f"stream id {stream!r} must not contain '/'")
    header = {
        "v": PROTOCOL_VERSION,
        "type": message_type,
        "stream": stream,
        "session": session,
        "seq": int(seq),
        "sent_ns": time.time_ns(),
        **fields,
    }
    return [topic(message_type, stream), json.dumps(header).encode()]


def encode_events(
    stream: str, session: str, seq: int, events: np.ndarray, sensor: SensorSize
) -> list:
    """Frames of an ``events`` message; the array is sent as is, without a copy."""
    if events.dtype != EVENT_DTYPE:
        raise ValueError(f"events must have EVENT_DTYPE, got {events.dtype}")
    events = np.ascontiguousarray(events)
    count = len(events)
    fields = {
        "count": count,
        "t_first_us": int(events["timestamp"][0]) if count else None,
        "t_last_us": int(events["timestamp"][-1]) if count else None,
        "width": int(sensor.width),
        "height": int(sensor.height),
        "dtype": "dv-event16",
    }
    return _frames("events", stream, session, seq, fields) + [memoryview(events).cast("B")]


def encode_labels(
    stream: str, session: str, seq: int, segments: list[dict], *, extra: dict | None = None
) -> list:
    """Ground truth of a replay: ``segments`` of ``{"label", "start_us", "end_us"}``.
    ``extra`` adds header fields (a worker forwarding labels adds ``source_session``)."""
    return _frames("labels", stream, session, seq, {**(extra or {}), "segments": segments})


def encode_end(
    stream: str,
    session: str,
    seq: int,
    reason: str = "end of source",
    *,
    extra: dict | None = None,
) -> list:
    return _frames("end", stream, session, seq, {**(extra or {}), "reason": reason})


def encode_prediction(stream: str, session: str, seq: int, fields: dict) -> list:
    return _frames("prediction", stream, session, seq, fields)


def encode_stats(stream: str, session: str, seq: int, fields: dict) -> list:
    """A worker's counters (see docs/streaming.md); ``stream`` is ``""`` for the worker."""
    return _frames("stats", stream, session, seq, fields)


def encode_preview(
    stream: str,
    session: str,
    seq: int,
    image: np.ndarray,
    *,
    t_start_us: int,
    t_end_us: int,
    events_per_count: int = 1,
    events: int | None = None,
) -> list:
    """A decimated count image of ``[t_start_us, t_end_us)`` of a stream for a display.

    ``image`` is ``uint8 [2, H, W]`` (polarity OFF, ON; saturating counts); one
    count stands for ``events_per_count`` events when the events were sampled.
    ``events`` is the exact number of events the image summarises (the image
    saturates, so its sum can be lower)."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] != 2:
        raise ValueError(f"preview image must be uint8 [2, H, W], got {image.dtype} {image.shape}")
    fields = {
        "width": int(image.shape[2]),
        "height": int(image.shape[1]),
        "dtype": "u8-2hw",
        "t_start_us": int(t_start_us),
        "t_end_us": int(t_end_us),
        "events_per_count": int(events_per_count),
        "events": int(image.sum(dtype=np.int64)) * int(events_per_count)
        if events is None
        else int(events),
    }
    return _frames("preview", stream, session, seq, fields) + [memoryview(image).cast("B")]


def _buffer(frame) -> memoryview:
    """A zero-copy view of a frame from ``recv_multipart(copy=False)`` or of bytes."""
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def _require(header: dict, name: str, kind: type | tuple) -> Any:
    value = header.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WireError("bad_field", f"header field {name!r} is {value!r}")
    return value


def decode(frames: list) -> Message:
    """Decode and check one multipart message. Raises ``WireError`` on anything wrong.

    The event array is a view on the received frame (no copy)."""
    if len(frames) < 2:
        raise WireError("short_message", f"{len(frames)} frame(s), expected at least 2")
    raw_header = _buffer(frames[1])
    if len(raw_header) > MAX_HEADER_BYTES:
        raise WireError("bad_header", f"header of {len(raw_header)} bytes")
    try:
        header = json.loads(bytes(raw_header))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WireError("bad_header", f"not JSON ({error})") from None
    if not isinstance(header, dict):
        raise WireError("bad_header", f"header is {type(header).__name__}, not an object")
    if header.get("v") != PROTOCOL_VERSION:
        raise WireError("bad_version", f"version {header.get('v')!r}, expected {PROTOCOL_VERSION}")
    message_type = header.get("type")
    if message_type not in MESSAGE_TYPES:
        raise WireError("bad_type", f"type {message_type!r}")
    stream = _require(header, "stream", str)
    session = _require(header, "session", str)
    seq = _require(header, "seq", int)
    _require(header, "sent_ns", int)
    events = image = None
    if message_type == "events":
        events = _decode_event_payload(header, frames)
    elif message_type == "preview":
        image = _decode_preview_payload(header, frames)
    elif len(frames) != 2:
        raise WireError("bad_frames", f"{message_type} message with {len(frames)} frames")
    return Message(message_type, stream, session, seq, header, events, image)


def _decode_event_payload(header: dict, frames: list) -> np.ndarray:
    if len(frames) != 3:
        raise WireError("bad_frames", f"events message with {len(frames)} frames, expected 3")
    if header.get("dtype") != "dv-event16":
        raise WireError("bad_dtype", f"dtype {header.get('dtype')!r}, expected 'dv-event16'")
    count = _require(header, "count", int)
    width = _require(header, "width", int)
    height = _require(header, "height", int)
    if not (0 <= count <= MAX_EVENTS_PER_MESSAGE) or width <= 0 or height <= 0:
        raise WireError("bad_field", f"count {count}, sensor {width}x{height}")
    payload = _buffer(frames[2])
    if len(payload) != count * EVENT_DTYPE.itemsize:
        raise WireError(
            "size_mismatch",
            f"payload of {len(payload)} bytes for {count} events "
            f"({count * EVENT_DTYPE.itemsize} expected)",
        )
    return np.frombuffer(payload, dtype=EVENT_DTYPE)


def _decode_preview_payload(header: dict, frames: list) -> np.ndarray:
    if len(frames) != 3:
        raise WireError("bad_frames", f"preview message with {len(frames)} frames, expected 3")
    if header.get("dtype") != "u8-2hw":
        raise WireError("bad_dtype", f"dtype {header.get('dtype')!r}, expected 'u8-2hw'")
    width = _require(header, "width", int)
    height = _require(header, "height", int)
    if not (0 < width <= MAX_PREVIEW_SIDE and 0 < height <= MAX_PREVIEW_SIDE):
        raise WireError("bad_field", f"preview of {width}x{height}")
    payload = _buffer(frames[2])
    if len(payload) != 2 * width * height:
        raise WireError(
            "size_mismatch",
            f"payload of {len(payload)} bytes for a 2x{height}x{width} preview "
            f"({2 * width * height} expected)",
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(2, height, width)


@dataclass
class WireStats:
    """What a receiver saw: messages by type, drops by reason, sequence gaps by stream."""

    received: Counter = field(default_factory=Counter)
    malformed: Counter = field(default_factory=Counter)
    gaps: Counter = field(default_factory=Counter)
    missing_messages: Counter = field(default_factory=Counter)
    restarts: Counter = field(default_factory=Counter)


class SequenceTracker:
    """Detects sequence gaps and producer restarts (a new session id) per stream."""

    def __init__(self, stats: WireStats):
        self.stats = stats
        self._last: dict[str, tuple[str, int]] = {}

    def observe(self, message: Message) -> str:
        """Return "new", "restart", "gap" or "ok" for this message, counting gaps."""
        previous = self._last.get(message.stream)
        self._last[message.stream] = (message.session, message.seq)
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
        log.warning(
            "dropped malformed message (%s); %d dropped so far",
            error,
            sum(stats.malformed.values()),
        )
        return None
    stats.received[message.type] += 1
    return message
