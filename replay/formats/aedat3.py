"""AEDAT 3.1 files (cAER / libcaer): the format of the DVS128 Gesture recordings.

Layout (little-endian throughout):

- a text header of lines starting with ``#``: ``#!AER-DAT3.1``, ``#Format: RAW``,
  ``#Source 1: DVS128``, ``#Start-Time: ...``, closed by ``#!END-HEADER\\r\\n``;
- then packets, each a 28-byte header (eventType int16, eventSource int16,
  eventSize int32, eventTSOffset int32, eventTSOverflow int32, eventCapacity int32,
  eventNumber int32, eventValid int32) followed by ``eventCapacity * eventSize``
  bytes of events (files are written with capacity == number; readers such as
  SpikingJelly's also skip ``capacity * size`` bytes, so we do too and decode the
  first ``eventNumber`` events);
- polarity events (type 1) are 8 bytes: uint32 data (bit 0 valid, bit 1 polarity,
  y in bits 2-16, x in bits 17-31) and an int32 timestamp in µs whose full value
  is ``(eventTSOverflow << 31) | timestamp``.

Other packet types (special, frame, IMU, ...; the libcaer list in
``PACKET_TYPE_NAMES``) are skipped without reading their bodies and counted.
Packet types outside that list mean a corrupt file or a format we do not know:
an error by default, skipped on request.

Why the reader looks the way it does: recordings reach hundreds of MB, so it
reads the file in bounded blocks (``block_bytes``) and never holds more than a
block plus one output chunk; DVS128 Gesture files hold many small packets, so
within a block it walks packet headers in Python but decodes all the polarity
events of the block in one set of numpy operations. Every packet header is
checked against the bytes that remain in the file before anything is read or
allocated, so a hostile header cannot make it allocate without bound or loop
forever (every packet advances the offset by at least its 28-byte header).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from core.events import (
    EVENT_DTYPE,
    FormatError,
    Recording,
    SensorSize,
    concat_events,
    copy_events,
)
from replay.formats.aedat_header import read_text_header
from replay.formats.checks import check_order, inside_sensor

VERSION = "3.1"
END_HEADER = b"#!END-HEADER"

PACKET_HEADER = struct.Struct("<hhiiiiii")
PACKET_HEADER_BYTES = PACKET_HEADER.size  # 28

POLARITY_EVENT = 1
POLARITY_EVENT_BYTES = 8
TIMESTAMP_OFFSET_BYTES = 4  # every libcaer event stores its timestamp at byte 4

# libcaer's caer_default_event_types; ids below 100 are reserved by libcaer.
PACKET_TYPE_NAMES = {
    0: "special",
    1: "polarity",
    2: "frame",
    3: "imu6",
    4: "imu9",
    5: "sample",
    6: "ear",
    7: "config",
    8: "point1d",
    9: "point2d",
    10: "point3d",
    11: "point4d",
    12: "spike",
    13: "matrix4x4",
}

DEFAULT_SENSOR = SensorSize(128, 128)
# Camera names as cAER writes them in "#Source N: NAME"; longest prefix wins.
SOURCE_SENSORS = {
    "DVS128": SensorSize(128, 128),
    "EDVS": SensorSize(128, 128),
    "DAVIS128": SensorSize(128, 128),
    "DAVIS240": SensorSize(240, 180),
    "DAVIS346": SensorSize(346, 260),
    "DAVIS640": SensorSize(640, 480),
    "DVS132S": SensorSize(132, 104),
    "DVXPLORER LITE": SensorSize(320, 240),
    "DVXPLORER_LITE": SensorSize(320, 240),
    "DVXPLORER": SensorSize(640, 480),
}

DEFAULT_BLOCK_BYTES = 4 << 20
MIN_BLOCK_BYTES = 64

_SOURCE_LINE = re.compile(r"^#Source (\d+):\s*(.*?)\s*$")
_FORMAT_LINE = re.compile(r"^#Format:\s*(.*?)\s*$")
_START_TIME_LINE = re.compile(r"^#Start-Time:\s*(.*?)\s*$")

# Polarity event data word: bit 0 valid, bit 1 polarity, y in bits 2-16, x in 17-31.
X_SHIFT, Y_SHIFT, POLARITY_SHIFT = 17, 2, 1
COORDINATE_MASK = 0x7FFF
_TS_LOW_LIMIT = 1 << 31


@dataclass(frozen=True)
class Aedat3Header:
    """What the text header says, and where the packets start."""

    data_offset: int  # byte where the first packet header starts
    header_lines: list[str]  # without line endings, magic and end marker included
    sensor: SensorSize  # from the first "#Source" line we know, else 128x128
    version: str = VERSION
    sources: dict[int, str] = field(default_factory=dict)  # "#Source 1: DVS128" -> {1: "DVS128"}
    sensor_from_header: bool = False  # False when ``sensor`` is the 128x128 default
    start_time: str | None = None
    data_format: str = "RAW"


@dataclass
class Aedat3Stats:
    """Counts collected while reading; pass one in to see what was skipped."""

    packets: int = 0
    polarity_packets: int = 0
    polarity_events: int = 0  # events yielded
    invalid_events_dropped: int = 0  # valid bit 0
    out_of_sensor_dropped: int = 0  # only with on_out_of_sensor="skip"
    declared_valid_events: int = 0  # sum of eventValid over polarity packets
    skipped_packets_by_type: dict[str, int] = field(default_factory=dict)  # known types
    skipped_events_by_type: dict[str, int] = field(default_factory=dict)  # their eventNumber
    unknown_packets_by_type: dict[int, int] = field(default_factory=dict)

    @property
    def unknown_packets(self) -> int:
        return sum(self.unknown_packets_by_type.values())

    def skipped(self) -> dict[str, int]:
        """Events read but not yielded, by kind: invalid polarity events, those
        outside the sensor, and the events of skipped packets by packet type
        (``unknown_packets``: packets of types libcaer does not define)."""
        counts = {
            "invalid": self.invalid_events_dropped,
            "out_of_sensor": self.out_of_sensor_dropped,
        }
        counts.update(self.skipped_events_by_type)
        if self.unknown_packets:
            counts["unknown_packets"] = self.unknown_packets
        return counts

    @property
    def skipped_packets(self) -> int:
        return sum(self.skipped_packets_by_type.values())


class _BlockPieces(NamedTuple):
    """Where the polarity events of the current block lie: for each packet (or
    the part of one inside the block) its first word, event count and overflow."""

    block: bytes
    block_start: int  # file offset of block[0]; events lie at 4-byte multiples from it
    word_starts: list[int]  # index of the first uint32 word of each piece in the block
    counts: list[int]  # events per piece
    overflows: list[int]  # eventTSOverflow per piece

    def byte_of(self, raw_index: int) -> int:
        """File offset of the ``raw_index``-th event of the block (invalid ones included)."""
        k = int(np.searchsorted(np.cumsum(self.counts), raw_index, side="right"))
        first = sum(self.counts[:k])
        return self.block_start + 4 * self.word_starts[k] + (raw_index - first) * 8


# ---------------------------------------------------------------- header


def sensor_for_source(name: str) -> SensorSize | None:
    """The sensor size of a camera named in a ``#Source`` line, or None if unknown."""
    upper = name.strip().upper()
    for prefix in sorted(SOURCE_SENSORS, key=len, reverse=True):
        if upper.startswith(prefix):
            return SOURCE_SENSORS[prefix]
    return None


def read_aedat3_header(path: str | os.PathLike) -> Aedat3Header:
    """Parse the text header; FormatError (naming the byte) unless it is AEDAT 3.1 RAW."""
    text = read_text_header(path, VERSION, END_HEADER)
    sources: dict[int, str] = {}
    start_time = None
    data_format = "RAW"
    for line, line_start in zip(text.lines, text.line_starts, strict=True):
        if m := _SOURCE_LINE.match(line):
            sources[int(m.group(1))] = m.group(2)
        elif m := _FORMAT_LINE.match(line):
            data_format = m.group(1)
            if data_format.upper() != "RAW":
                raise FormatError(
                    str(path),
                    f"byte {line_start}",
                    f"format {data_format[:40]!r} is not supported (only RAW packets)",
                )
        elif m := _START_TIME_LINE.match(line):
            start_time = m.group(1)

    sensor = None
    for source_id in sorted(sources):
        sensor = sensor_for_source(sources[source_id])
        if sensor is not None:
            break
    return Aedat3Header(
        data_offset=text.data_offset,
        header_lines=text.lines,
        sensor=sensor or DEFAULT_SENSOR,
        version=text.version,
        sources=sources,
        sensor_from_header=sensor is not None,
        start_time=start_time,
        data_format=data_format,
    )


# ---------------------------------------------------------------- reading


def iter_aedat3(
    path: str | os.PathLike,
    *,
    chunk_events: int = 1_000_000,
    sensor: SensorSize | None = None,
    on_unknown_packet: str = "error",
    on_out_of_sensor: str = "error",
    stats: Aedat3Stats | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Iterator[np.ndarray]:
    """Yield the valid polarity events of an AEDAT 3.1 file as EVENT_DTYPE arrays
    of ``chunk_events`` events each (the last one shorter).

    ``sensor`` overrides the size named by the header. Events with the valid bit
    cleared are dropped and counted. ``on_unknown_packet``: ``"error"`` raises
    FormatError for a packet type libcaer does not define, ``"skip"`` skips and
    counts it. ``on_out_of_sensor``: ``"error"`` raises EventValidationError for
    an event outside the sensor, ``"skip"`` drops and counts it. Timestamps going
    backwards always raise EventValidationError. Errors name the file, the event
    index (among the events yielded) and the byte offset.
    """
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    batcher = _ChunkBatcher(chunk_events)
    for events in _iter_decoded_blocks(
        path, sensor, on_unknown_packet, on_out_of_sensor, stats, block_bytes
    ):
        yield from batcher.push(events)
    yield from batcher.flush()


def _iter_decoded_blocks(
    path: str | os.PathLike,
    sensor: SensorSize | None,
    on_unknown_packet: str,
    on_out_of_sensor: str,
    stats: Aedat3Stats | None,
    block_bytes: int,
    out: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """The checked events of each block read, in file order (sizes vary). With
    ``out``, blocks are decoded one after the other into it and yielded as views."""
    if on_unknown_packet not in ("error", "skip"):
        raise ValueError(f"on_unknown_packet must be 'error' or 'skip', got {on_unknown_packet!r}")
    if on_out_of_sensor not in ("error", "skip"):
        raise ValueError(f"on_out_of_sensor must be 'error' or 'skip', got {on_out_of_sensor!r}")
    if block_bytes < MIN_BLOCK_BYTES:
        raise ValueError(f"block_bytes must be >= {MIN_BLOCK_BYTES}, got {block_bytes}")
    header = read_aedat3_header(path)
    decoder = _PolarityDecoder(
        str(path),
        sensor or header.sensor,
        on_out_of_sensor,
        stats if stats is not None else Aedat3Stats(),
    )
    count = 0
    with open(path, "rb") as f:
        scanner = _scan_polarity_pieces(
            f, str(path), header.data_offset, block_bytes, on_unknown_packet, decoder.stats
        )
        for pieces in scanner:
            events = decoder.decode(pieces, None if out is None else out[count:])
            count += len(events)
            yield events


def read_aedat3(
    path: str | os.PathLike,
    *,
    sensor: SensorSize | None = None,
    on_unknown_packet: str = "error",
    on_out_of_sensor: str = "error",
    stats: Aedat3Stats | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Recording:
    """The whole file as one Recording (see ``iter_aedat3`` for the options)."""
    header = read_aedat3_header(path)
    resolved = sensor or header.sensor
    # Decode straight into one array with room for as many events as the file
    # could hold (8 bytes each), so there is no second copy: pages of a large
    # np.zeros that are never written are never backed by memory, and the
    # final resize hands the unused tail back.
    room = max(0, os.path.getsize(path) - header.data_offset) // POLARITY_EVENT_BYTES
    events = np.zeros(room, dtype=EVENT_DTYPE)
    blocks = _iter_decoded_blocks(
        path, resolved, on_unknown_packet, on_out_of_sensor, stats, block_bytes, events
    )
    count = sum(len(block) for block in blocks)
    if count < room:
        events = copy_events(events[:count]) if count < room // 2 else _shrink(events, count)
    return Recording(events, resolved, str(path))


def _shrink(events: np.ndarray, count: int) -> np.ndarray:
    """Drop the unused tail in place (realloc), copying only if numpy refuses."""
    try:
        events.resize(count, refcheck=False)
        return events
    except ValueError:
        return copy_events(events[:count])


def _scan_polarity_pieces(
    f, source: str, data_offset: int, block_bytes: int, on_unknown_packet: str, stats: Aedat3Stats
) -> Iterator[_BlockPieces]:
    """Walk the packets; yield where the polarity events of each block read lie.

    A block is yielded (and decoded) before the next one replaces it, so memory
    stays at one block. The loop runs once per packet, not per event; polarity
    packets with sane headers take the short path.
    """
    file_size = os.fstat(f.fileno()).st_size
    block_bytes -= block_bytes % POLARITY_EVENT_BYTES
    block = b""
    block_start = data_offset
    block_end = data_offset
    starts: list[int] = []
    counts: list[int] = []
    overflows: list[int] = []
    unpack_from = PACKET_HEADER.unpack_from

    def load(offset: int, needed: int) -> None:
        nonlocal block, block_start, block_end
        f.seek(offset)
        block = f.read(min(block_bytes, file_size - offset))
        block_start = offset
        block_end = offset + len(block)
        if len(block) < needed:  # the size was checked against fstat: it shrank
            raise FormatError(source, f"byte {offset}", "file shrank while being read")

    offset = data_offset
    while offset < file_size:
        if offset + PACKET_HEADER_BYTES > block_end:
            remaining = file_size - offset
            if remaining < PACKET_HEADER_BYTES:
                raise FormatError(
                    source,
                    f"byte {offset}",
                    f"truncated packet header: {remaining} bytes left, a header needs "
                    f"{PACKET_HEADER_BYTES}",
                )
            if starts:
                yield _BlockPieces(block, block_start, starts, counts, overflows)
                starts, counts, overflows = [], [], []
            load(offset, PACKET_HEADER_BYTES)
        header = unpack_from(block, offset - block_start)
        (event_type, _, event_size, ts_offset, ts_overflow, capacity, number, valid) = header
        body_start = offset + PACKET_HEADER_BYTES
        end = body_start + number * POLARITY_EVENT_BYTES
        stats.packets += 1
        if (
            event_type == POLARITY_EVENT
            and event_size == POLARITY_EVENT_BYTES
            and ts_offset == TIMESTAMP_OFFSET_BYTES
            and 0 <= valid <= number == capacity
            and ts_overflow >= 0
            and end <= block_end
        ):
            # The usual packet: whole inside the block, nothing to doubt.
            if number:
                starts.append((body_start - block_start) >> 2)
                counts.append(number)
                overflows.append(ts_overflow)
            stats.polarity_packets += 1
            stats.declared_valid_events += valid
            offset = end
            continue
        body_bytes = _check_packet_header(
            source,
            offset,
            file_size - body_start,
            event_type,
            event_size,
            ts_offset,
            ts_overflow,
            capacity,
            number,
            valid,
            on_unknown_packet,
        )
        if event_type == POLARITY_EVENT:
            stats.polarity_packets += 1
            stats.declared_valid_events += valid
            position = body_start
            while position < end:
                if block_end - position < POLARITY_EVENT_BYTES:
                    if starts:
                        yield _BlockPieces(block, block_start, starts, counts, overflows)
                        starts, counts, overflows = [], [], []
                    load(position, POLARITY_EVENT_BYTES)
                take = min(end - position, block_end - position) // POLARITY_EVENT_BYTES
                starts.append((position - block_start) >> 2)
                counts.append(take)
                overflows.append(ts_overflow)
                position += take * POLARITY_EVENT_BYTES
        else:
            name = PACKET_TYPE_NAMES.get(event_type)
            if name is None:
                stats.unknown_packets_by_type[event_type] = (
                    stats.unknown_packets_by_type.get(event_type, 0) + 1
                )
            else:
                stats.skipped_packets_by_type[name] = stats.skipped_packets_by_type.get(name, 0) + 1
                stats.skipped_events_by_type[name] = (
                    stats.skipped_events_by_type.get(name, 0) + number
                )
        offset = body_start + body_bytes
    if starts:
        yield _BlockPieces(block, block_start, starts, counts, overflows)


def _check_packet_header(
    source: str,
    offset: int,
    bytes_after_header: int,
    event_type: int,
    event_size: int,
    ts_offset: int,
    ts_overflow: int,
    capacity: int,
    number: int,
    valid: int,
    on_unknown_packet: str,
) -> int:
    """Raise FormatError for a header that cannot be right; return the body size."""
    where = f"byte {offset}"
    if event_type not in PACKET_TYPE_NAMES and on_unknown_packet == "error":
        raise FormatError(
            source,
            where,
            f"unknown packet type {event_type} (libcaer defines 0-13; "
            "on_unknown_packet='skip' skips such packets)",
        )
    if event_size <= 0:
        raise FormatError(source, where, f"packet eventSize {event_size} is not positive")
    if capacity < 0 or number < 0 or valid < 0:
        raise FormatError(
            source,
            where,
            f"negative packet counts: capacity {capacity}, number {number}, valid {valid}",
        )
    if not valid <= number <= capacity:
        raise FormatError(
            source,
            where,
            f"packet counts out of order: expected valid {valid} <= number {number} "
            f"<= capacity {capacity}",
        )
    if ts_overflow < 0:
        raise FormatError(source, where, f"negative eventTSOverflow {ts_overflow}")
    if not 0 <= ts_offset <= event_size - 4:
        raise FormatError(
            source,
            where,
            f"eventTSOffset {ts_offset} does not leave room for a 4-byte timestamp "
            f"in {event_size}-byte events",
        )
    if event_type == POLARITY_EVENT and (
        event_size != POLARITY_EVENT_BYTES or ts_offset != TIMESTAMP_OFFSET_BYTES
    ):
        raise FormatError(
            source,
            where,
            f"polarity packet with eventSize {event_size} and eventTSOffset {ts_offset}; "
            f"expected {POLARITY_EVENT_BYTES} and {TIMESTAMP_OFFSET_BYTES}",
        )
    body_bytes = capacity * event_size
    if body_bytes > bytes_after_header:
        raise FormatError(
            source,
            where,
            f"packet of type {event_type} declares {capacity} events of {event_size} bytes "
            f"({body_bytes} bytes) but only {bytes_after_header} bytes follow its header "
            "(truncated file or corrupt header)",
        )
    return body_bytes


class _PolarityDecoder:
    """Turns the polarity pieces of one block into checked EVENT_DTYPE events."""

    def __init__(self, source: str, sensor: SensorSize, on_out_of_sensor: str, stats: Aedat3Stats):
        self.source = source
        self.sensor = sensor
        self.on_out_of_sensor = on_out_of_sensor
        self.stats = stats
        self.events_before = 0  # events yielded so far: the index of the next one
        self.last_timestamp: int | None = None

    def decode(self, pieces: _BlockPieces, out: np.ndarray | None = None) -> np.ndarray:
        """The checked events of one block, written to the start of ``out`` when
        given (it must have room for every event of the block) and returned."""
        block = pieces.block
        words = np.frombuffer(block, dtype="<u4", count=len(block) // 4)
        counts = pieces.counts
        if len(counts) == 1:
            first = pieces.word_starts[0]
            pairs = words[first : first + 2 * counts[0]]
            data = pairs[0::2]
            ts_low = pairs[1::2]
        else:
            # One gather for all packets of the block: event j of piece k sits at
            # word word_starts[k] + 2 * (j - first event of piece k).
            count_array = np.asarray(counts, dtype=np.int64)
            before = np.cumsum(count_array) - count_array
            shift = np.asarray(pieces.word_starts, dtype=np.int64) - 2 * before
            index = np.repeat(shift, count_array)
            index += 2 * np.arange(len(index), dtype=np.int64)
            data = words[index]
            index += 1
            ts_low = words[index]
            del index
        overflows = pieces.overflows
        overflow: int | np.ndarray = overflows[0]
        if any(o != overflow for o in overflows):
            overflow = np.repeat(np.asarray(overflows, dtype=np.int64), counts)

        # raw_index maps each surviving event back to its place in the block,
        # so an error can name its byte; None while nothing has been dropped.
        raw_index: np.ndarray | None = None
        valid = (data & 1).astype(bool)
        n_valid = int(np.count_nonzero(valid))
        if n_valid < len(data):
            self.stats.invalid_events_dropped += len(data) - n_valid
            raw_index = np.flatnonzero(valid)
            data = data[raw_index]
            ts_low = ts_low[raw_index]
            if isinstance(overflow, np.ndarray):
                overflow = overflow[raw_index]

        def byte_of(i: int) -> int:
            return pieces.byte_of(int(raw_index[i]) if raw_index is not None else i)

        negative = ts_low >= _TS_LOW_LIMIT
        if negative.any():
            i = int(np.argmax(negative))
            raise FormatError(
                self.source,
                f"byte {byte_of(i)}",
                f"polarity event {self.events_before + i} has a negative timestamp field "
                f"{int(ts_low[i].astype(np.int64)) - (1 << 32)}",
            )

        x = data >> X_SHIFT
        y = (data >> Y_SHIFT) & COORDINATE_MASK
        kept = inside_sensor(
            x, y, self.sensor, self.on_out_of_sensor, self.source, self.events_before, byte_of
        )
        if kept is not None:
            self.stats.out_of_sensor_dropped += len(x) - len(kept)
            raw_index = kept if raw_index is None else raw_index[kept]
            data, ts_low, x, y = data[kept], ts_low[kept], x[kept], y[kept]
            if isinstance(overflow, np.ndarray):
                overflow = overflow[kept]

        events = np.zeros(len(data), dtype=EVENT_DTYPE) if out is None else out[: len(data)]
        timestamp = ts_low.astype(np.int64)
        if isinstance(overflow, np.ndarray):
            timestamp |= overflow << 31
        elif overflow:
            timestamp |= np.int64(overflow) << 31
        events["timestamp"] = timestamp
        events["x"] = x
        events["y"] = y
        events["polarity"] = (data >> POLARITY_SHIFT) & 1

        check_order(events, self.last_timestamp, self.source, self.events_before, byte_of)
        if len(events):
            self.last_timestamp = int(timestamp[-1])
        self.events_before += len(events)
        self.stats.polarity_events += len(events)
        return events


class _ChunkBatcher:
    """Regroups decoded arrays into chunks of exactly ``size`` events (last shorter)."""

    def __init__(self, size: int):
        self.size = size
        self.parts: list[np.ndarray] = []
        self.count = 0

    def push(self, events: np.ndarray) -> Iterator[np.ndarray]:
        while len(events):
            room = self.size - self.count
            self.parts.append(events[:room])
            self.count += min(room, len(events))
            events = events[room:]
            if self.count == self.size:
                yield self._take()

    def flush(self) -> Iterator[np.ndarray]:
        if self.count:
            yield self._take()

    def _take(self) -> np.ndarray:
        chunk = concat_events(self.parts)
        self.parts = []
        self.count = 0
        return chunk
