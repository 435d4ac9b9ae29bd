"""The one event representation used everywhere in stcsnn.

Events are a numpy structured array with exactly the layout of dv-processing's
``EventStore.numpy()`` (16-byte items: ``timestamp`` int64 µs, ``x`` int16,
``y`` int16, ``polarity`` int8, 3 padding bytes), so arrays pass between
dv-processing, our file readers, the ZeroMQ wire and the compressor without
conversion. The sensor size travels beside the array as a ``SensorSize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Same fields, offsets and itemsize as dv_processing.EventStore.numpy().
EVENT_DTYPE = np.dtype(
    {
        "names": ["timestamp", "x", "y", "polarity"],
        "formats": ["<i8", "<i2", "<i2", "i1"],
        "offsets": [0, 8, 10, 12],
        "itemsize": 16,
    }
)


class SensorSize(NamedTuple):
    """Sensor resolution in pixels (x < width, y < height)."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Recording:
    """Events of one source together with the sensor they came from."""

    events: np.ndarray  # EVENT_DTYPE, timestamps non-decreasing
    sensor: SensorSize
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.events)


class EventError(ValueError):
    """Bad event data. The message names the source and where the problem is."""

    def __init__(self, source: str, where: str, problem: str):
        self.source = str(source)
        self.where = where
        self.problem = problem
        super().__init__(f"{self.source}: {where}: {problem}" if where else f"{source}: {problem}")


class FormatError(EventError):
    """A file does not follow its format; ``where`` names the byte offset."""


class EventValidationError(EventError):
    """Decoded events break an invariant; ``where`` names the event index."""


# numpy 2 turns EVENT_DTYPE into a packed 13-byte dtype in np.concatenate and
# leaves the padding bytes of .copy() uninitialised; copying the 16-byte items
# as opaque void values keeps the exact dtype and bytes (and is much faster).
_EVENT_BYTES = np.dtype((np.void, EVENT_DTYPE.itemsize))


def copy_events(events: np.ndarray) -> np.ndarray:
    """A byte-exact copy of an EVENT_DTYPE array (padding bytes included)."""
    return np.ascontiguousarray(events).view(_EVENT_BYTES).copy().view(EVENT_DTYPE)


def concat_events(parts) -> np.ndarray:
    """Concatenate EVENT_DTYPE arrays, keeping the exact 16-byte layout."""
    parts = list(parts)
    if not parts:
        return empty_events()
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([np.ascontiguousarray(p).view(_EVENT_BYTES) for p in parts]).view(
        EVENT_DTYPE
    )


def empty_events(count: int = 0) -> np.ndarray:
    return np.zeros(count, dtype=EVENT_DTYPE)


def make_events(timestamp, x, y, polarity) -> np.ndarray:
    """Pack column arrays (any integer or bool dtype) into an EVENT_DTYPE array."""
    timestamp = np.asarray(timestamp)
    # zeros, not empty: the padding bytes stay defined, so equal events are equal bytes.
    events = np.zeros(timestamp.shape[0], dtype=EVENT_DTYPE)
    events["timestamp"] = timestamp
    events["x"] = x
    events["y"] = y
    events["polarity"] = polarity
    return events


def as_events(array: np.ndarray, source: str = "<memory>") -> np.ndarray:
    """Return ``array`` as EVENT_DTYPE, converting only when its layout differs."""
    if array.dtype == EVENT_DTYPE:
        return array
    names = set(array.dtype.names or ())
    if not {"timestamp", "x", "y", "polarity"} <= names:
        raise EventValidationError(
            source, "", f"expected fields timestamp, x, y, polarity; found {array.dtype}"
        )
    return make_events(array["timestamp"], array["x"], array["y"], array["polarity"])


def polarities_are_binary(events: np.ndarray) -> bool:
    """Every polarity is 0 or 1 (one reduction; a negative one reads as >= 128)."""
    return not len(events) or int(events["polarity"].view(np.uint8).max()) <= 1


def find_out_of_sensor(events: np.ndarray, sensor: SensorSize) -> int:
    """Index of the first event outside the sensor, or -1."""
    bad = (
        (events["x"] < 0)
        | (events["x"] >= sensor.width)
        | (events["y"] < 0)
        | (events["y"] >= sensor.height)
    )
    return int(np.argmax(bad)) if bad.any() else -1


def find_backwards(events: np.ndarray, previous_timestamp: int | None = None) -> int:
    """Index of the first event whose timestamp is below its predecessor's, or -1."""
    t = events["timestamp"]
    if len(t) == 0:
        return -1
    if previous_timestamp is not None and t[0] < previous_timestamp:
        return 0
    bad = np.flatnonzero(t[1:] < t[:-1])
    return int(bad[0]) + 1 if len(bad) else -1


def validate_events(
    events: np.ndarray,
    sensor: SensorSize,
    source: str = "<memory>",
    first_index: int = 0,
    previous_timestamp: int | None = None,
) -> None:
    """Raise EventValidationError unless every event is inside the sensor and
    timestamps never decrease. ``first_index`` offsets the reported index when
    ``events`` is one chunk of a longer stream."""
    if events.dtype != EVENT_DTYPE:
        raise EventValidationError(
            source, "", f"expected dtype {EVENT_DTYPE}, found {events.dtype}"
        )
    i = find_out_of_sensor(events, sensor)
    if i >= 0:
        e = events[i]
        raise EventValidationError(
            source,
            f"event {first_index + i}",
            f"x={int(e['x'])}, y={int(e['y'])} is outside the {sensor} sensor",
        )
    i = find_backwards(events, previous_timestamp)
    if i >= 0:
        before = previous_timestamp if i == 0 else int(events["timestamp"][i - 1])
        raise EventValidationError(
            source,
            f"event {first_index + i}",
            f"timestamp {int(events['timestamp'][i])} µs goes backwards (previous {before} µs)",
        )
    bad_polarity = (events["polarity"] != 0) & (events["polarity"] != 1)
    if bad_polarity.any():
        i = int(np.argmax(bad_polarity))
        raise EventValidationError(
            source,
            f"event {first_index + i}",
            f"polarity {int(events['polarity'][i])} is not 0 or 1",
        )
