"""Writing AEDAT 2.0 files (jAER's layout), the inverse of ``aedat2.py``.

For tests, benchmarks and conversions: ``write_aedat2`` writes DVS128 events
that ``read_aedat2`` reads back bit-exact; ``write_aedat2_records`` writes raw
(address, timestamp) records under the header of any chip, so tests can write
what a camera would (sync and special records, DAVIS APS and IMU words,
foreign addresses, wrapped timestamps); ``encode_davis_addresses`` gives the
DAVIS DVS addresses of events (the inverse of the reader's decoding).
"""

from __future__ import annotations

import os

import numpy as np

from core.events import EventValidationError, SensorSize, as_events, validate_events
from replay.formats.aedat2 import (
    COORDINATE_MASK,
    DAVIS_POLARITY_SHIFT,
    DAVIS_X_SHIFT,
    DAVIS_Y_SHIFT,
    END_OF_HEADER,
    RECORD_DTYPE,
    TIMESTAMP_WRAP_US,
    X_SHIFT,
    Y_SHIFT,
)
from replay.formats.jaer_chips import DVS128_SENSOR


def encode_dvs128_addresses(events: np.ndarray) -> np.ndarray:
    """The raw DVS128 addresses (uint32) of events, the inverse of our decoding."""
    raw_x = COORDINATE_MASK - events["x"].astype(np.uint32)
    raw_y = COORDINATE_MASK - events["y"].astype(np.uint32)
    raw_polarity = 1 - (events["polarity"].astype(np.uint32) & 1)
    return (raw_y << Y_SHIFT) | (raw_x << X_SHIFT) | raw_polarity


DVS128_CHIP = "ch.unizh.ini.jaer.chip.retina.DVS128"


def encode_davis_addresses(events: np.ndarray, sensor: SensorSize) -> np.ndarray:
    """The raw DAVIS DVS addresses (uint32) of events from a ``sensor``-sized
    chip: x mirrored and y counted from the bottom, as jAER stores them."""
    raw_x = sensor.width - 1 - events["x"].astype(np.int64)
    raw_y = sensor.height - 1 - events["y"].astype(np.int64)
    polarity = events["polarity"].astype(np.int64) & 1
    address = (
        (raw_y << DAVIS_Y_SHIFT) | (raw_x << DAVIS_X_SHIFT) | (polarity << DAVIS_POLARITY_SHIFT)
    )
    return address.astype(np.uint32)


def header_bytes(chip: str | None = DVS128_CHIP, *, end_line: bool = False) -> bytes:
    """An AEDAT 2.0 text header in jAER's style, naming ``chip`` (no ``AEChip``
    line for None) and, with ``end_line``, closed by ``#End Of ASCII Header``."""
    lines = [
        "#!AER-DAT2.0",
        "# This is a raw AE data file - do not edit",
        "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
        "# Timestamps tick is 1 us",
    ]
    if chip is not None:
        lines.append(f"# AEChip: {chip}")
    if end_line:
        lines.append(END_OF_HEADER.decode("ascii"))
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def write_aedat2_records(
    path: str | os.PathLike,
    addresses: np.ndarray,
    timestamps_us: np.ndarray,
    *,
    header: bytes | None = None,
) -> None:
    """Write raw (address, timestamp) records after ``header`` (by default a
    DVS128 one); timestamps are stored modulo 2^32."""
    addresses = np.asarray(addresses)
    timestamps_us = np.asarray(timestamps_us, dtype=np.int64)
    if addresses.shape != timestamps_us.shape or addresses.ndim != 1:
        raise ValueError("addresses and timestamps_us must be 1-D arrays of the same length")
    records = np.empty(len(addresses), dtype=RECORD_DTYPE)
    records["address"] = addresses.astype(np.uint32)
    records["timestamp"] = (timestamps_us % TIMESTAMP_WRAP_US).astype(np.uint32)
    with open(path, "wb") as f:
        f.write(header_bytes() if header is None else header)
        f.write(records.tobytes())


def write_aedat2(
    path: str | os.PathLike,
    events: np.ndarray,
    sensor: SensorSize = DVS128_SENSOR,
    *,
    check: bool = True,
) -> None:
    """Write events as a jAER AEDAT 2.0 DVS128 file.

    Timestamps are stored modulo 2^32, as a camera's counter would wrap; the
    reader unwraps them when consecutive events are less than 2^30 µs apart.
    ``check`` refuses events outside ``sensor`` or going backwards; tests that
    need such files pass ``check=False``.
    """
    source = str(path)
    events = as_events(np.asarray(events), source)
    if sensor.width > 128 or sensor.height > 128:
        raise ValueError(f"DVS128 addresses hold at most 128x128 pixels, not {sensor}")
    if check:
        validate_events(events, sensor, source)
    if len(events) and (int(events["timestamp"].min()) < 0):
        raise EventValidationError(source, "", "timestamps must not be negative")
    for axis in ("x", "y"):
        if len(events) and not (
            0 <= int(events[axis].min()) and int(events[axis].max()) <= COORDINATE_MASK
        ):
            raise EventValidationError(source, "", f"{axis} must lie in [0, 127] for DVS128")
    write_aedat2_records(path, encode_dvs128_addresses(events), events["timestamp"])
