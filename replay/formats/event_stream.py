"""Event Stream files (``.es``: Sepia, tarsier, the Neuromorphic Systems
recordings), decoded by faery.

Layout (the Event Stream specification, version 2.x): the 12 bytes
``Event Stream``, version major, minor, patch, a type byte (0 generic, 1 DVS,
2 ATIS, 3 display, 4 color) and, for DVS and ATIS, width and height as uint16
little-endian; then a byte-oriented state machine. A DVS event is one byte of
7-bit time delta (µs) and polarity, two bytes of x and two of y; each overflow
byte (0xFF) before it adds 127 µs, reset bytes resynchronise. ATIS events
carry a 6-bit delta, a polarity and an exposure flag (overflow bytes add 63 µs
times their 2-bit count).

Events come out with (0, 0) at the top left like those of every other reader
here: Event Stream counts y from the bottom row, so y becomes height - 1 - y
(as faery's own ``Decoder`` does). Polarity 1 = increase. Timestamps are µs
from the start of the stream (the first event's delta counts from 0). Of an
ATIS stream only the change detection events are kept; exposure measurement
events (threshold crossings) are skipped and counted (``EventStreamStats``).

Refused with FormatError: generic, display and color streams, versions other
than 2.x. A file cut inside an event loses that event without an error: the
byte stream has no framing that would tell a cut from an end.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.events import FormatError, Recording, SensorSize
from replay.formats.faery_chunks import EventChunker, checked_sensor, collect, guarded

FORMAT_NAME = "Event Stream (.es)"
SUFFIXES = (".es",)
MAGIC = b"Event Stream"
HEADER_BYTES = 20  # magic, 3 version bytes, type, width and height
SUPPORTED_MAJOR = 2
STREAM_TYPES = {0: "generic", 1: "dvs", 2: "atis", 3: "display", 4: "color"}
READ_TYPES = ("dvs", "atis")
DEFAULT_CHUNK_EVENTS = 1_000_000


@dataclass(frozen=True)
class EventStreamHeader:
    version: str  # "2.0.0"
    stream_type: str  # "dvs" or "atis"
    sensor: SensorSize


@dataclass
class EventStreamStats:
    """Counts collected while reading; pass one in to see what was skipped."""

    events: int = 0  # events yielded
    exposure_skipped: int = 0  # ATIS exposure measurement events

    def skipped(self) -> dict[str, int]:
        """Events decoded but not yielded, by kind."""
        return {"exposure": self.exposure_skipped}


def is_event_stream(head: bytes) -> bool:
    """Whether a file's first bytes are the Event Stream magic."""
    return head.startswith(MAGIC)


def read_event_stream_header(path: str | os.PathLike) -> EventStreamHeader:
    """Version, stream type and sensor from the 20-byte header; FormatError
    (naming the byte) for anything but a DVS or ATIS stream of version 2.x."""
    source = str(path)
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if not head.startswith(MAGIC):
        what = "empty file" if not head else f"starts with {head[:12]!r}"
        raise FormatError(source, "byte 0", f"{what}, not the Event Stream magic {MAGIC!r}")
    if len(head) < len(MAGIC) + 4:
        raise FormatError(source, f"byte {len(head)}", "file ends inside the Event Stream header")
    major, minor, patch, type_byte = head[12:16]
    version = f"{major}.{minor}.{patch}"
    if major != SUPPORTED_MAJOR:
        raise FormatError(
            source, "byte 12", f"Event Stream version {version} not supported (2.x is)"
        )
    stream_type = STREAM_TYPES.get(type_byte, f"unknown (0x{type_byte:02x})")
    if stream_type not in READ_TYPES:
        raise FormatError(
            source,
            "byte 15",
            f"Event Stream of {stream_type} events: not supported (DVS, ATIS are)",
        )
    if len(head) < HEADER_BYTES:
        raise FormatError(source, f"byte {len(head)}", "file ends inside the Event Stream header")
    width, height = struct.unpack("<HH", head[16:20])
    return EventStreamHeader(version, stream_type, checked_sensor(width, height, source, "byte 16"))


def iter_event_stream(
    path: str | os.PathLike,
    *,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    stats: EventStreamStats | None = None,
) -> Iterator[np.ndarray]:
    """The (change detection) events of an Event Stream file as EVENT_DTYPE
    arrays of ``chunk_events`` events (the last one shorter)."""
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    stats = stats if stats is not None else EventStreamStats()
    sensor, packets = _decoding(path, stats)
    chunker = EventChunker(sensor, str(path), chunk_events, flip_y_height=sensor.height)
    for chunk in chunker.chunks(packets):
        stats.events += len(chunk)
        yield chunk


def read_event_stream(
    path: str | os.PathLike, *, stats: EventStreamStats | None = None
) -> Recording:
    """The whole Event Stream file as one Recording (see ``iter_event_stream``)."""
    stats = stats if stats is not None else EventStreamStats()
    sensor, packets = _decoding(path, stats)
    events = collect(packets, sensor, str(path), flip_y_height=sensor.height)
    stats.events += len(events)
    return Recording(events, sensor, str(path))


def _decoding(path, stats: EventStreamStats):
    """(the sensor, faery's packets as (t, x, y, polarity) with its errors as FormatError)."""
    source = str(path)
    header = read_event_stream_header(path)
    from faery import es  # ~0.15 s to import: only when a file is decoded

    packets = _packets(es, source, header, stats)
    return header.sensor, guarded(packets, source, f"decoding {FORMAT_NAME}")


def _packets(es, source: str, header: EventStreamHeader, stats: EventStreamStats):
    """(t, x, y, polarity) of each packet faery's ``es`` decoder gives."""
    with es.Decoder(source, 0) as decoder:
        if decoder.event_type != header.stream_type:
            raise FormatError(
                source,
                "byte 15",
                f"the decoder read a {decoder.event_type} stream, this reader {header.stream_type}",
            )
        for events in decoder:
            if header.stream_type == "atis":
                events = _change_detection(events, stats)
            if len(events):
                yield events["t"], events["x"], events["y"], events["p"]


def _change_detection(events: np.ndarray, stats: EventStreamStats) -> np.ndarray:
    """The ATIS events that are changes (not exposure measurements), counting the rest."""
    exposure = events["exposure"]
    stats.exposure_skipped += int(np.count_nonzero(exposure))
    return events[~exposure]


__all__ = [
    "FORMAT_NAME",
    "EventStreamHeader",
    "EventStreamStats",
    "is_event_stream",
    "iter_event_stream",
    "read_event_stream",
    "read_event_stream_header",
]
