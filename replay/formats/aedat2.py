"""AEDAT 2.0 files (jAER) with DVS128 addresses: the format of CIFAR10-DVS.

Layout: a text header whose first line is ``#!AER-DAT2.0\\r\\n``, further lines
starting with ``#``, then big-endian 8-byte records (uint32 address, uint32
timestamp in µs) up to the end of the file.

DVS128 address (16 bits used): bit 0 polarity, bits 1-7 x, bits 8-14 y, bit 15
the external (sync) input. We decode as the camera's own software does:

- ``x = 127 - raw_x``: jAER's ``DVS128.Extractor`` (``setFlipx(true)``) and libcaer's
  ``dvs128.c`` both flip x, "to correct for flipped camera";
- ``y = 127 - raw_y``: libcaer flips y "to convert to CG format", i.e. (0, 0) at
  the top left, the convention of dv-processing and of our other readers. jAER
  keeps ``raw_y`` because its renderer puts y = 0 at the bottom: the same picture;
- ``polarity = 1 - (address & 1)``: raw 0 is an ON event in both jAER
  (``setFliptype(true)``) and libcaer ("Invert polarity bit. Hardware is like this").
- Records with bit 15 (jAER's ``SYNC_EVENT_BITMASK``, the external input) or bit 31
  (jAER's special-event bit) set are not pixel events: skipped and counted.
- An address with any of bits 16-30 set is not a DVS128 address (DAVIS files
  put x and y there): FormatError, or skipped and counted with
  ``on_foreign_address="skip"``.

Other readers differ: SpikingJelly's ``cifar10_dvs.py`` returns
``x = 127 - raw_y, y = 127 - raw_x, p = 1 - raw_p`` (the image transposed relative
to ours; it notes ``x = 127 - raw_x, y = raw_y`` reproduces the dataset authors'
``dat2mat.m``), and Tonic's ``read_dvs_128`` takes ``x = raw bits 8-14,
y = raw bits 1-7, p = raw bit 0`` without flips. None of them skips the sync bit.
The difference is a fixed flip/transpose of every sample, which a classifier
trained on one convention does not notice; we follow the recording software.

Timestamps are 32-bit µs counters and wrap after about 71.6 minutes. A wrap is
handled, not rejected: when a timestamp in the top quarter of the 32-bit range
(>= 3 * 2^30) is followed by one in the bottom quarter (< 2^30), 2^32 µs is added
from there on. Any other decrease is a timestamp going backwards
(EventValidationError naming the event index and its byte).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from core.events import (
    EVENT_DTYPE,
    EventValidationError,
    FormatError,
    Recording,
    SensorSize,
    as_events,
    concat_events,
    validate_events,
)

MAGIC = b"#!AER-DAT"
VERSION = "2.0"
MAX_HEADER_BYTES = 1 << 20
HEADER_PROBE_BYTES = 64 << 10  # read first; the rest only for unusually long headers
RECORD_BYTES = 8
RECORD_DTYPE = np.dtype([("address", ">u4"), ("timestamp", ">u4")])
DVS128_SENSOR = SensorSize(128, 128)

POLARITY_BIT = 0x1
X_SHIFT, Y_SHIFT, COORDINATE_MASK = 1, 8, 0x7F
SYNC_EVENT_BIT = 0x8000  # bit 15: external input
SPECIAL_EVENT_BIT = 0x80000000  # bit 31: jAER special event
FOREIGN_ADDRESS_BITS = 0x7FFF0000  # bits 16-30: not used by DVS128 addresses

_WRAP_US = 1 << 32
_WRAP_FROM = 3 << 30  # a wrap starts in the top quarter of the range...
_WRAP_TO = 1 << 30  # ...and lands in the bottom quarter


@dataclass(frozen=True)
class Aedat2Header:
    data_offset: int  # byte of the first record
    header_lines: list[str]  # without line endings, the magic line included
    version: str = VERSION


@dataclass
class Aedat2Stats:
    records: int = 0
    polarity_events: int = 0  # events yielded
    special_events_skipped: int = 0  # bit 15 or bit 31 set
    foreign_addresses_skipped: int = 0  # only with on_foreign_address="skip"
    out_of_sensor_dropped: int = 0  # only with on_out_of_sensor="skip"
    timestamp_wraps: int = 0


def read_aedat2_header(path: str | os.PathLike) -> Aedat2Header:
    """Parse the text header; FormatError (naming the byte) unless it is AEDAT 2.0."""
    source = str(path)
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER_PROBE_BYTES)
        if len(head) < file_size and not _header_ends_within(head):
            head += f.read(MAX_HEADER_BYTES - len(head))
    if not head:
        raise FormatError(
            source, "byte 0", "empty file; expected an AEDAT 2.0 header '#!AER-DAT2.0'"
        )
    if not head.startswith(MAGIC):
        raise FormatError(
            source, "byte 0", f"not an AEDAT file: expected '#!AER-DAT2.0', found {head[:16]!r}"
        )
    lines: list[str] = []
    position = 0
    # Header lines start with '#'; the first line that does not is the data.
    # DVS128 addresses are below 2^16, so a record never starts with '#' (0x23).
    while position < len(head) and head[position : position + 1] == b"#":
        line_end = head.find(b"\n", position)
        if line_end < 0:
            if file_size > len(head):
                problem = f"header line longer than {MAX_HEADER_BYTES} bytes"
            else:
                problem = "file ends inside a header line"
            raise FormatError(source, f"byte {position}", problem)
        lines.append(head[position:line_end].rstrip(b"\r").decode("ascii", "replace"))
        position = line_end + 1
    if position >= len(head) and file_size > len(head):
        raise FormatError(
            source, f"byte {position}", f"header longer than {MAX_HEADER_BYTES} bytes"
        )
    version = lines[0][len(MAGIC) :].strip()
    if version != VERSION:
        hint = {
            "3.1": "it is AEDAT 3.1: read it with replay.formats.aedat3",
            "4.0": "it is AEDAT 4.0: read it with replay.formats.aedat4",
        }.get(version, "only AEDAT 2.0 is supported by this reader")
        raise FormatError(source, "byte 0", f"AEDAT version {version[:20]!r}: {hint}")
    return Aedat2Header(data_offset=position, header_lines=lines, version=version)


def _header_ends_within(head: bytes) -> bool:
    """Whether ``head`` holds the whole header: a line start that is not '#'."""
    position = 0
    while head[position : position + 1] == b"#":
        line_end = head.find(b"\n", position)
        if line_end < 0:
            return False
        position = line_end + 1
    return position < len(head)


def iter_aedat2(
    path: str | os.PathLike,
    *,
    chunk_events: int = 1_000_000,
    sensor: SensorSize = DVS128_SENSOR,
    on_out_of_sensor: str = "error",
    on_foreign_address: str = "error",
    stats: Aedat2Stats | None = None,
) -> Iterator[np.ndarray]:
    """Yield the polarity events as EVENT_DTYPE arrays of at most ``chunk_events``
    events, reading ``chunk_events`` records at a time (see the module docstring
    for the address convention, skipped records and timestamp wraps)."""
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    for name, value in (
        ("on_out_of_sensor", on_out_of_sensor),
        ("on_foreign_address", on_foreign_address),
    ):
        if value not in ("error", "skip"):
            raise ValueError(f"{name} must be 'error' or 'skip', got {value!r}")
    source = str(path)
    header = read_aedat2_header(path)
    stats = stats if stats is not None else Aedat2Stats()
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        data_bytes = file_size - header.data_offset
        leftover = data_bytes % RECORD_BYTES
        if leftover:
            last = header.data_offset + data_bytes - leftover
            raise FormatError(
                source,
                f"byte {last}",
                f"file ends {leftover} bytes into an 8-byte record (truncated file)",
            )
        f.seek(header.data_offset)
        record_index = 0  # of the first record of this chunk
        events_before = 0
        wraps = 0
        previous_raw: int | None = None  # raw timestamp of the record before this chunk
        previous_full: int | None = None  # full timestamp of the last event yielded
        while True:
            raw = f.read(chunk_events * RECORD_BYTES)
            if not raw:
                break
            if len(raw) % RECORD_BYTES:
                raise FormatError(source, f"byte {f.tell()}", "file changed while being read")
            records = np.frombuffer(raw, dtype=RECORD_DTYPE)
            address = records["address"].astype(np.uint32)
            raw_ts = records["timestamp"].astype(np.int64)

            # Unwrap over all records (the clock is shared by special events).
            before = np.empty_like(raw_ts)
            before[1:] = raw_ts[:-1]
            before[0] = raw_ts[0] if previous_raw is None else previous_raw
            wrapped = (before >= _WRAP_FROM) & (raw_ts < _WRAP_TO)
            full_ts = raw_ts + (wraps + np.cumsum(wrapped)) * _WRAP_US
            chunk_wraps = int(np.count_nonzero(wrapped))
            stats.timestamp_wraps += chunk_wraps
            wraps += chunk_wraps
            previous_raw = int(raw_ts[-1])

            special = (address & (SYNC_EVENT_BIT | SPECIAL_EVENT_BIT)) != 0
            foreign = ~special & ((address & FOREIGN_ADDRESS_BITS) != 0)
            if foreign.any():
                if on_foreign_address == "error":
                    i = int(np.argmax(foreign))
                    raise FormatError(
                        source,
                        f"byte {header.data_offset + (record_index + i) * RECORD_BYTES}",
                        f"address 0x{int(address[i]):08x} uses bits above 15: not a DVS128 "
                        "address (a DAVIS file?); on_foreign_address='skip' skips such records",
                    )
                stats.foreign_addresses_skipped += int(np.count_nonzero(foreign))
            stats.special_events_skipped += int(np.count_nonzero(special))
            keep = np.flatnonzero(~(special | foreign))

            address = address[keep]
            x = COORDINATE_MASK - ((address >> X_SHIFT) & COORDINATE_MASK)
            y = COORDINATE_MASK - ((address >> Y_SHIFT) & COORDINATE_MASK)
            outside = (x >= sensor.width) | (y >= sensor.height)
            if outside.any():
                if on_out_of_sensor == "error":
                    i = int(np.argmax(outside))
                    byte = header.data_offset + (record_index + int(keep[i])) * RECORD_BYTES
                    raise EventValidationError(
                        source,
                        f"event {events_before + i}",
                        f"x={int(x[i])}, y={int(y[i])} is outside the {sensor} sensor "
                        f"(byte {byte}; on_out_of_sensor='skip' drops such events)",
                    )
                stats.out_of_sensor_dropped += int(np.count_nonzero(outside))
                inside = np.flatnonzero(~outside)
                keep, address, x, y = keep[inside], address[inside], x[inside], y[inside]

            events = np.zeros(len(keep), dtype=EVENT_DTYPE)
            events["timestamp"] = full_ts[keep]
            events["x"] = x
            events["y"] = y
            events["polarity"] = 1 - (address & POLARITY_BIT)

            t = events["timestamp"]
            back = np.flatnonzero(t[1:] < t[:-1]) + 1
            if previous_full is not None and len(t) and t[0] < previous_full:
                back = np.concatenate([[0], back])
            if len(back):
                i = int(back[0])
                prior = previous_full if i == 0 else int(t[i - 1])
                byte = header.data_offset + (record_index + int(keep[i])) * RECORD_BYTES
                raise EventValidationError(
                    source,
                    f"event {events_before + i}",
                    f"timestamp {int(t[i])} µs goes backwards (previous {prior} µs; byte {byte})",
                )
            if len(t):
                previous_full = int(t[-1])
            record_index += len(records)
            stats.records += len(records)
            stats.polarity_events += len(events)
            events_before += len(events)
            if len(events):
                yield events


def read_aedat2(
    path: str | os.PathLike,
    *,
    sensor: SensorSize = DVS128_SENSOR,
    on_out_of_sensor: str = "error",
    on_foreign_address: str = "error",
    stats: Aedat2Stats | None = None,
) -> Recording:
    """The whole file as one Recording (see ``iter_aedat2``)."""
    chunks = list(
        iter_aedat2(
            path,
            chunk_events=4_000_000,
            sensor=sensor,
            on_out_of_sensor=on_out_of_sensor,
            on_foreign_address=on_foreign_address,
            stats=stats,
        )
    )
    return Recording(concat_events(chunks), sensor, str(path))


# ---------------------------------------------------------------- writing


def encode_dvs128_addresses(events: np.ndarray) -> np.ndarray:
    """The raw DVS128 addresses (uint32) of events, the inverse of our decoding."""
    raw_x = COORDINATE_MASK - events["x"].astype(np.uint32)
    raw_y = COORDINATE_MASK - events["y"].astype(np.uint32)
    raw_polarity = 1 - (events["polarity"].astype(np.uint32) & 1)
    return (raw_y << Y_SHIFT) | (raw_x << X_SHIFT) | raw_polarity


def header_bytes(extra_lines: Sequence[str] = ()) -> bytes:
    """An AEDAT 2.0 text header in jAER's style."""
    lines = [
        "#!AER-DAT2.0",
        "# This is a raw AE data file - do not edit",
        "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
        "# Timestamps tick is 1 us",
        "# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128",
        *extra_lines,
    ]
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def write_aedat2_records(
    path: str | os.PathLike,
    addresses: np.ndarray,
    timestamps_us: np.ndarray,
    *,
    header: bytes | None = None,
) -> None:
    """Write raw (address, timestamp) records; timestamps are stored modulo 2^32."""
    addresses = np.asarray(addresses)
    timestamps_us = np.asarray(timestamps_us, dtype=np.int64)
    if addresses.shape != timestamps_us.shape or addresses.ndim != 1:
        raise ValueError("addresses and timestamps_us must be 1-D arrays of the same length")
    records = np.empty(len(addresses), dtype=RECORD_DTYPE)
    records["address"] = addresses.astype(np.uint32)
    records["timestamp"] = (timestamps_us % _WRAP_US).astype(np.uint32)
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
    """Write events as a jAER AEDAT 2.0 DVS128 file (for tests and conversions).

    Timestamps are stored modulo 2^32, as a camera's counter would wrap; the
    reader unwraps them when consecutive events are less than 2^30 µs apart.
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
