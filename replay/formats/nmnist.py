"""N-MNIST ``.bin`` files (Orchard et al. 2015): 5 bytes per event, no header.

Layout of one 40-bit record: byte 0 = x, byte 1 = y, byte 2 bit 7 = polarity,
byte 2 bits 0-6 + byte 3 + byte 4 = a 23-bit timestamp in µs (most significant
bits first). The sensor is the 34x34 crop of the ATIS camera.

A sample is ~300 ms and ~4,000 events (20 KB), so ``read_nmnist`` reads the
file whole and decodes it with a handful of numpy operations; ``iter_nmnist``
reads it in bounded blocks for the rare large file (the reader benchmark writes
10 M events into one). A file has no header to check, so everything that can be
checked is: the length is a whole number of records, coordinates are inside the
sensor, timestamps never decrease (23 bits cover 8.4 s; a wrap would show up as
a decrease, and real samples are far shorter). Errors name the file and the
event index together with the byte offset of its record.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from core.events import (
    EVENT_DTYPE,
    EventValidationError,
    FormatError,
    Recording,
    SensorSize,
    find_backwards,
    find_out_of_sensor,
)

NMNIST_SENSOR = SensorSize(34, 34)
RECORD_BYTES = 5
MAX_TIMESTAMP_US = (1 << 23) - 1
MAX_COORDINATE = 255  # one byte each for x and y
DEFAULT_CHUNK_EVENTS = 1_000_000


def decode_nmnist(
    raw: bytes,
    source: str = "<memory>",
    *,
    sensor: SensorSize | None = NMNIST_SENSOR,
    first_index: int = 0,
    previous_timestamp: int | None = None,
) -> np.ndarray:
    """Decode whole 5-byte records into EVENT_DTYPE and check them against
    ``sensor`` (None: decode only). ``first_index`` and ``previous_timestamp``
    place ``raw`` inside a longer file, for error messages and the ordering check.

    FormatError if ``raw`` ends inside a record (naming the byte offset of the
    partial record); EventValidationError for an event outside the sensor or a
    timestamp going backwards (naming the event index and its byte offset).
    """
    count, partial = divmod(len(raw), RECORD_BYTES)
    first_byte = first_index * RECORD_BYTES
    if partial:
        raise FormatError(
            source,
            f"byte {first_byte + count * RECORD_BYTES}",
            f"file ends inside a 5-byte event record ({partial} trailing byte(s) after "
            f"{first_index + count} whole events); truncated or not an N-MNIST .bin file",
        )
    records = np.frombuffer(raw, dtype=np.uint8, count=count * RECORD_BYTES).reshape(
        count, RECORD_BYTES
    )
    events = np.empty(count, dtype=EVENT_DTYPE)
    events["x"] = records[:, 0]
    events["y"] = records[:, 1]
    events["polarity"] = records[:, 2] >> 7
    timestamp = events["timestamp"]
    timestamp[:] = records[:, 2] & 0x7F
    timestamp <<= 8
    timestamp |= records[:, 3]
    timestamp <<= 8
    timestamp |= records[:, 4]
    if sensor is not None:
        _check_decoded(events, sensor, source, first_index, previous_timestamp)
    return events


def _check_decoded(
    events: np.ndarray,
    sensor: SensorSize,
    source: str,
    first_index: int,
    previous_timestamp: int | None,
) -> None:
    i = find_out_of_sensor(events, sensor)
    if i >= 0:
        index = first_index + i
        raise EventValidationError(
            source,
            f"event {index}",
            f"x={int(events['x'][i])}, y={int(events['y'][i])} is outside the {sensor} "
            f"sensor (record at byte {index * RECORD_BYTES})",
        )
    i = find_backwards(events, previous_timestamp)
    if i >= 0:
        index = first_index + i
        before = previous_timestamp if i == 0 else int(events["timestamp"][i - 1])
        raise EventValidationError(
            source,
            f"event {index}",
            f"timestamp {int(events['timestamp'][i])} µs goes backwards (previous {before} µs; "
            f"record at byte {index * RECORD_BYTES})",
        )


def _checked_size(source: str, size: int) -> None:
    if size == 0:
        raise FormatError(
            source, "byte 0", "empty file: an N-MNIST sample holds at least one 5-byte event"
        )
    partial = size % RECORD_BYTES
    if partial:
        whole = size - partial
        raise FormatError(
            source,
            f"byte {whole}",
            f"file size {size} is not a multiple of 5: it ends inside an event record "
            f"({partial} trailing byte(s) after {whole // RECORD_BYTES} whole events); "
            "truncated or not an N-MNIST .bin file",
        )


def check_nmnist_size(path: str | os.PathLike) -> int:
    """The number of events the file holds; FormatError if it is empty or not
    a whole number of 5-byte records."""
    size = os.path.getsize(path)
    _checked_size(str(path), size)
    return size // RECORD_BYTES


def read_nmnist(path: str | os.PathLike, *, sensor: SensorSize = NMNIST_SENSOR) -> Recording:
    """One N-MNIST sample as a Recording (timestamps from the file, µs from 0)."""
    source = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        _checked_size(source, size)
        raw = f.read(size)
    if len(raw) != size:
        raise FormatError(
            source, f"byte {len(raw)}", f"file shrank while being read ({size} bytes expected)"
        )
    return Recording(decode_nmnist(raw, source, sensor=sensor), sensor, source)


def iter_nmnist(
    path: str | os.PathLike,
    *,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    sensor: SensorSize = NMNIST_SENSOR,
) -> Iterator[np.ndarray]:
    """The events of an N-MNIST file in arrays of ``chunk_events`` (the last one
    shorter), reading ``chunk_events`` records at a time."""
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    source = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        _checked_size(source, size)
        first_index = 0
        previous = None
        while first_index * RECORD_BYTES < size:
            raw = f.read(chunk_events * RECORD_BYTES)
            if not raw:
                raise FormatError(
                    source,
                    f"byte {first_index * RECORD_BYTES}",
                    f"file shrank while being read ({size} bytes expected)",
                )
            events = decode_nmnist(
                raw,
                source,
                sensor=sensor,
                first_index=first_index,
                previous_timestamp=previous,
            )
            first_index += len(events)
            previous = int(events["timestamp"][-1])
            yield events
