"""Writing AEDAT 3.1 files in cAER's layout, the inverse of ``aedat3.py``.

For tests, benchmarks and conversions: ``write_aedat3`` writes events that
``read_aedat3`` reads back bit-exact, in polarity packets between which other
packets (``ExtraPacket``: special events, IMU samples, anything) can be put,
as a camera's recording holds them. ``encode_packet_header`` packs any values,
so tests can write hostile packet headers too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from core.events import EventValidationError, SensorSize, as_events, validate_events
from replay.formats.aedat3 import (
    COORDINATE_MASK,
    DEFAULT_SENSOR,
    PACKET_HEADER,
    POLARITY_EVENT,
    POLARITY_EVENT_BYTES,
    POLARITY_SHIFT,
    TIMESTAMP_OFFSET_BYTES,
    X_SHIFT,
    Y_SHIFT,
    sensor_for_source,
)

SPECIAL_EVENT = 0
IMU6_EVENT = 3
SPECIAL_EVENT_BYTES = 8
IMU6_EVENT_BYTES = 36  # info, timestamp, accel xyz, gyro xyz, temperature
SPECIAL_EXTERNAL_INPUT_RISING_EDGE = 2  # libcaer's special event type


@dataclass(frozen=True)
class ExtraPacket:
    """A non-polarity packet for ``write_aedat3``, written just before the
    polarity event with index ``at_event`` (``len(events)``: after the last)."""

    at_event: int
    event_type: int
    event_size: int
    body: bytes  # event_number * event_size bytes
    event_number: int  # also its eventCapacity and eventValid
    ts_overflow: int = 0


def encode_packet_header(
    event_type: int,
    event_size: int,
    event_capacity: int,
    event_number: int,
    event_valid: int,
    *,
    ts_offset: int = TIMESTAMP_OFFSET_BYTES,
    ts_overflow: int = 0,
    event_source: int = 1,
) -> bytes:
    """The 28-byte packet header (any values, so tests can write hostile ones)."""
    return PACKET_HEADER.pack(
        event_type,
        event_source,
        event_size,
        ts_offset,
        ts_overflow,
        event_capacity,
        event_number,
        event_valid,
    )


def header_bytes(source_name: str = "DVS128", start_time: datetime | None = None) -> bytes:
    """An AEDAT 3.1 text header as cAER writes it."""
    moment = start_time or datetime.now(timezone.utc)
    zone = moment.strftime("%z") or "+0000"
    lines = [
        "#!AER-DAT3.1",
        "#Format: RAW",
        f"#Source 1: {source_name}",
        f"#Start-Time: {moment.strftime('%Y-%m-%d %H:%M:%S')} (TZ{zone})",
        "#!END-HEADER",
    ]
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def special_packet(at_event: int, timestamps_us: Sequence[int] | np.ndarray) -> ExtraPacket:
    """A packet of special events: external input rising edges."""
    words, overflow = _typed_words(timestamps_us, SPECIAL_EVENT_BYTES // 4)
    words[:, 0] = 1 | (SPECIAL_EXTERNAL_INPUT_RISING_EDGE << 1)
    return ExtraPacket(
        at_event, SPECIAL_EVENT, SPECIAL_EVENT_BYTES, words.tobytes(), len(words), overflow
    )


def imu6_packet(at_event: int, timestamps_us: Sequence[int] | np.ndarray) -> ExtraPacket:
    """A packet of 6-axis IMU samples (1 g down, no rotation, 25 °C)."""
    words, overflow = _typed_words(timestamps_us, IMU6_EVENT_BYTES // 4)
    words[:, 0] = 1
    floats = words[:, 2:].view("<f4")
    floats[:] = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 25.0]
    return ExtraPacket(
        at_event, IMU6_EVENT, IMU6_EVENT_BYTES, words.tobytes(), len(words), overflow
    )


def _typed_words(timestamps_us, words_per_event: int) -> tuple[np.ndarray, int]:
    timestamps = np.asarray(timestamps_us, dtype=np.int64)
    overflow = set((timestamps >> 31).tolist())
    if len(overflow) > 1:
        raise ValueError("the timestamps of one packet must share eventTSOverflow (ts >> 31)")
    words = np.zeros((len(timestamps), words_per_event), dtype="<u4")
    words[:, 1] = timestamps & 0x7FFFFFFF
    return words, overflow.pop() if overflow else 0


def write_aedat3(
    path: str | os.PathLike,
    events: np.ndarray,
    sensor: SensorSize = DEFAULT_SENSOR,
    *,
    packet_events: int = 4096,
    source_name: str = "DVS128",
    extra_packets: Sequence[ExtraPacket] = (),
    valid: np.ndarray | None = None,
    start_time: datetime | None = None,
    check: bool = True,
) -> None:
    """Write ``events`` as an AEDAT 3.1 file in cAER's layout.

    Polarity packets hold at most ``packet_events`` events and never span a
    change of ``timestamp >> 31`` (each packet has one eventTSOverflow).
    ``valid`` (bool per event) writes False entries with the valid bit cleared.
    ``check`` refuses events outside ``sensor`` or going backwards; tests that
    need such files pass ``check=False``. Values the format cannot hold (negative
    timestamps, coordinates above 32767) are always refused.
    """
    source = str(path)
    events = as_events(np.asarray(events), source)
    n = len(events)
    if packet_events < 1:
        raise ValueError(f"packet_events must be >= 1, got {packet_events}")
    named = sensor_for_source(source_name)
    if named is not None and named != sensor:
        raise ValueError(
            f"source {source_name!r} is a {named} sensor but sensor={sensor}; "
            "pass a matching source_name"
        )
    if check:
        validate_events(events, sensor, source)
    timestamps = events["timestamp"]
    if n and (int(timestamps.min()) < 0 or int(timestamps.max()) >= 1 << 62):
        raise EventValidationError(source, "", "timestamps must lie in [0, 2^62) µs for AEDAT 3.1")
    for axis in ("x", "y"):
        if n and (int(events[axis].min()) < 0 or int(events[axis].max()) > COORDINATE_MASK):
            raise EventValidationError(source, "", f"{axis} must lie in [0, 32767] for AEDAT 3.1")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (n,):
            raise ValueError(f"valid must have one entry per event ({n}), got shape {valid.shape}")
    for extra in extra_packets:
        if not 0 <= extra.at_event <= n:
            raise ValueError(f"extra packet at_event {extra.at_event} outside [0, {n}]")

    words = np.empty((n, 2), dtype="<u4")
    data = (events["x"].astype(np.uint32) << X_SHIFT) | (events["y"].astype(np.uint32) << Y_SHIFT)
    data |= (events["polarity"].astype(np.uint32) & 1) << POLARITY_SHIFT
    data |= 1 if valid is None else valid.astype(np.uint32)
    words[:, 0] = data
    words[:, 1] = timestamps & 0x7FFFFFFF
    overflow = timestamps >> 31

    starts = np.arange(0, n, packet_events, dtype=np.int64)
    starts = np.union1d(starts, np.flatnonzero(overflow[1:] != overflow[:-1]) + 1)
    starts = np.union1d(starts, [e.at_event for e in extra_packets if e.at_event < n])
    starts = starts.astype(np.int64)
    bounds = np.append(starts, n)
    if valid is None:
        valid_counts = np.diff(bounds)
    else:
        valid_counts = np.add.reduceat(valid.astype(np.int64), starts) if n else starts

    extras_at: dict[int, list[ExtraPacket]] = {}
    for extra in extra_packets:
        extras_at.setdefault(extra.at_event, []).append(extra)

    with open(path, "wb") as f:
        f.write(header_bytes(source_name, start_time))
        packet_bounds = zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        for k, (start, end) in enumerate(packet_bounds):
            for extra in extras_at.get(start, ()):
                _write_extra(f, extra)
            count = end - start
            f.write(
                encode_packet_header(
                    POLARITY_EVENT,
                    POLARITY_EVENT_BYTES,
                    count,
                    count,
                    int(valid_counts[k]),
                    ts_overflow=int(overflow[start]),
                )
            )
            f.write(words[start:end])
        for extra in extras_at.get(n, ()):
            _write_extra(f, extra)


def _write_extra(f, extra: ExtraPacket) -> None:
    count = extra.event_number
    f.write(
        encode_packet_header(
            extra.event_type, extra.event_size, count, count, count, ts_overflow=extra.ts_overflow
        )
    )
    f.write(extra.body)
