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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.events import (
    EVENT_DTYPE,
    FormatError,
    Recording,
    SensorSize,
    concat_events,
)
from replay.formats.aedat_header import read_text_header
from replay.formats.checks import check_order, inside_sensor

VERSION = "2.0"
RECORD_BYTES = 8
RECORD_DTYPE = np.dtype([("address", ">u4"), ("timestamp", ">u4")])
DVS128_SENSOR = SensorSize(128, 128)

POLARITY_BIT = 0x1
X_SHIFT, Y_SHIFT, COORDINATE_MASK = 1, 8, 0x7F
SYNC_EVENT_BIT = 0x8000  # bit 15: external input
SPECIAL_EVENT_BIT = 0x80000000  # bit 31: jAER special event
FOREIGN_ADDRESS_BITS = 0x7FFF0000  # bits 16-30: not used by DVS128 addresses

TIMESTAMP_WRAP_US = 1 << 32
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
    """Parse the text header; FormatError (naming the byte) unless it is AEDAT 2.0.

    The header ends at the first line not starting with '#': DVS128 addresses
    are below 2^16 and special ones start with 0x80, so a record never starts
    with '#' (0x23)."""
    header = read_text_header(path, VERSION)
    return Aedat2Header(header.data_offset, header.lines, header.version)


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
    decoder = _RecordDecoder(
        source,
        header.data_offset,
        sensor,
        on_out_of_sensor,
        on_foreign_address,
        stats if stats is not None else Aedat2Stats(),
    )
    with open(path, "rb") as f:
        data_bytes = os.fstat(f.fileno()).st_size - header.data_offset
        leftover = data_bytes % RECORD_BYTES
        if leftover:
            last = header.data_offset + data_bytes - leftover
            raise FormatError(
                source,
                f"byte {last}",
                f"file ends {leftover} bytes into an 8-byte record (truncated file)",
            )
        f.seek(header.data_offset)
        while raw := f.read(chunk_events * RECORD_BYTES):
            if len(raw) % RECORD_BYTES:
                raise FormatError(source, f"byte {f.tell()}", "file changed while being read")
            events = decoder.decode(np.frombuffer(raw, dtype=RECORD_DTYPE))
            if len(events):
                yield events


class _RecordDecoder:
    """Turns successive blocks of records into checked events, carrying the
    timestamp unwrapping and the ordering check from one block to the next."""

    def __init__(
        self,
        source: str,
        data_offset: int,
        sensor: SensorSize,
        on_out_of_sensor: str,
        on_foreign_address: str,
        stats: Aedat2Stats,
    ):
        self.source = source
        self.data_offset = data_offset
        self.sensor = sensor
        self.on_out_of_sensor = on_out_of_sensor
        self.on_foreign_address = on_foreign_address
        self.stats = stats
        self.records_before = 0  # records decoded so far: the index of the block's first
        self.events_before = 0  # events yielded so far: the index of the block's first
        self.wraps = 0
        self.previous_raw: int | None = None  # raw timestamp of the last record decoded
        self.previous_full: int | None = None  # full timestamp of the last event yielded

    def decode(self, records: np.ndarray) -> np.ndarray:
        """The checked polarity events of one block of records."""
        address = records["address"].astype(np.uint32)
        full_ts = self._unwrap(records["timestamp"].astype(np.int64))
        keep = self._pixel_records(address)  # event i comes from record keep[i]

        def byte_of(i: int) -> int:
            return self._byte_of_record(int(keep[i]))

        address = address[keep]
        x = COORDINATE_MASK - ((address >> X_SHIFT) & COORDINATE_MASK)
        y = COORDINATE_MASK - ((address >> Y_SHIFT) & COORDINATE_MASK)
        inside = inside_sensor(
            x, y, self.sensor, self.on_out_of_sensor, self.source, self.events_before, byte_of
        )
        if inside is not None:
            self.stats.out_of_sensor_dropped += len(keep) - len(inside)
            keep, address, x, y = keep[inside], address[inside], x[inside], y[inside]

        events = np.zeros(len(keep), dtype=EVENT_DTYPE)
        events["timestamp"] = full_ts[keep]
        events["x"] = x
        events["y"] = y
        events["polarity"] = 1 - (address & POLARITY_BIT)
        check_order(events, self.previous_full, self.source, self.events_before, byte_of)
        if len(events):
            self.previous_full = int(events["timestamp"][-1])

        self.records_before += len(records)
        self.events_before += len(events)
        self.stats.records += len(records)
        self.stats.polarity_events += len(events)
        return events

    def _byte_of_record(self, record: int) -> int:
        """File offset of record ``record`` of the current block."""
        return self.data_offset + (self.records_before + record) * RECORD_BYTES

    def _unwrap(self, raw_ts: np.ndarray) -> np.ndarray:
        """Full timestamps of all records (special ones share the clock)."""
        before = np.empty_like(raw_ts)
        before[1:] = raw_ts[:-1]
        before[0] = raw_ts[0] if self.previous_raw is None else self.previous_raw
        wrapped = (before >= _WRAP_FROM) & (raw_ts < _WRAP_TO)
        full_ts = raw_ts + (self.wraps + np.cumsum(wrapped)) * TIMESTAMP_WRAP_US
        block_wraps = int(np.count_nonzero(wrapped))
        self.stats.timestamp_wraps += block_wraps
        self.wraps += block_wraps
        self.previous_raw = int(raw_ts[-1])
        return full_ts

    def _pixel_records(self, address: np.ndarray) -> np.ndarray:
        """Indices of the records that are DVS128 pixel events; counts the others."""
        special = (address & (SYNC_EVENT_BIT | SPECIAL_EVENT_BIT)) != 0
        foreign = ~special & ((address & FOREIGN_ADDRESS_BITS) != 0)
        if foreign.any():
            if self.on_foreign_address == "error":
                i = int(np.argmax(foreign))
                raise FormatError(
                    self.source,
                    f"byte {self._byte_of_record(i)}",
                    f"address 0x{int(address[i]):08x} uses bits above 15: not a DVS128 "
                    "address (a DAVIS file?); on_foreign_address='skip' skips such records",
                )
            self.stats.foreign_addresses_skipped += int(np.count_nonzero(foreign))
        self.stats.special_events_skipped += int(np.count_nonzero(special))
        return np.flatnonzero(~(special | foreign))


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
