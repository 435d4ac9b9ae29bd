"""Writing N-MNIST ``.bin`` files, the inverse of ``nmnist.py``.

For tests, benchmarks and conversions: ``write_nmnist`` writes events that
``read_nmnist`` reads back bit-exact, refusing what the 5-byte records cannot
hold rather than wrapping it.
"""

from __future__ import annotations

import os

import numpy as np

from core.events import (
    EventValidationError,
    SensorSize,
    as_events,
    find_backwards,
    find_out_of_sensor,
)
from replay.formats.nmnist import MAX_COORDINATE, MAX_TIMESTAMP_US, NMNIST_SENSOR, RECORD_BYTES


def encode_nmnist(events: np.ndarray, source: str = "<memory>") -> bytes:
    """The 5-byte records of ``events``; EventValidationError for what the format
    cannot hold (coordinates above 255, timestamps outside 0..2^23-1 µs,
    polarity other than 0/1, timestamps going backwards)."""
    events = as_events(events, source)
    x, y = events["x"], events["y"]
    t, p = events["timestamp"], events["polarity"]
    checks = (
        ((x < 0) | (x > MAX_COORDINATE) | (y < 0) | (y > MAX_COORDINATE), "x, y must be 0-255"),
        ((t < 0) | (t > MAX_TIMESTAMP_US), f"timestamp must be 0-{MAX_TIMESTAMP_US} µs (23 bits)"),
        ((p != 0) & (p != 1), "polarity must be 0 or 1"),
    )
    for bad, rule in checks:
        if bad.any():
            i = int(np.argmax(bad))
            e = events[i]
            raise EventValidationError(
                source,
                f"event {i}",
                f"{rule}; found t={int(e['timestamp'])}, x={int(e['x'])}, y={int(e['y'])}, "
                f"p={int(e['polarity'])}",
            )
    i = find_backwards(events)
    if i >= 0:
        raise EventValidationError(
            source,
            f"event {i}",
            f"timestamp {int(t[i])} µs goes backwards (previous {int(t[i - 1])} µs)",
        )
    records = np.empty((len(events), RECORD_BYTES), dtype=np.uint8)
    records[:, 0] = x
    records[:, 1] = y
    records[:, 2] = (p.astype(np.uint8) << 7) | (t >> 16).astype(np.uint8)
    records[:, 3] = (t >> 8) & 0xFF
    records[:, 4] = t & 0xFF
    return records.tobytes()


def write_nmnist(
    path: str | os.PathLike, events: np.ndarray, *, sensor: SensorSize = NMNIST_SENSOR
) -> None:
    """Write ``events`` as an N-MNIST ``.bin`` file that ``read_nmnist`` reads back
    bit-exact. The events must lie inside ``sensor`` (34x34 by default; at most
    256x256, what one byte per coordinate holds)."""
    if sensor.width > MAX_COORDINATE + 1 or sensor.height > MAX_COORDINATE + 1:
        raise ValueError(f"N-MNIST coordinates are one byte each; sensor {sensor} is too large")
    events = as_events(events, str(path))
    i = find_out_of_sensor(events, sensor)
    if i >= 0:
        raise EventValidationError(
            str(path),
            f"event {i}",
            f"x={int(events['x'][i])}, y={int(events['y'][i])} is outside the {sensor} sensor",
        )
    data = encode_nmnist(events, str(path))
    with open(path, "wb") as f:
        f.write(data)
