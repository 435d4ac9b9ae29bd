"""Prophesee event files: RAW (EVT 2.0, EVT 3.0) and DAT, decoded by faery.

Layouts (Prophesee's published "Data Encoding Formats" and "File Formats"):

- RAW ``.raw``: text lines ``% key value`` ending with ``% end``, then the
  camera's little-endian words. EVT 2.0: 32-bit words, type in bits 28-31;
  CD_OFF (0) / CD_ON (1) carry 6 timestamp bits (22-27), x (11-21) and y
  (0-10); EVT_TIME_HIGH (8) the 28 high timestamp bits. EVT 3.0: 16-bit words
  of a state machine (EVT_ADDR_Y, EVT_ADDR_X, VECT_BASE_X then VECT_12 / VECT_8
  validity masks, a 24-bit time in EVT_TIME_HIGH / EVT_TIME_LOW that wraps
  every 16.8 s and is unwrapped). The encoding is named by ``% evt 3.0`` or
  ``% format EVT3;height=720;width=1280``, the sensor by that format line or
  ``% geometry 1280x720``.
- DAT ``.dat``: ``% key value`` lines (``% Version 2``, ``% Width``, ``% Height``),
  two bytes (event type: 0x0C CD, or 0x00 Event2d as the Gen1 ATIS automotive
  dataset writes; event size 8), then 8-byte records: uint32 µs, uint32 with x
  in bits 0-13, y in 14-27, polarity in 28-31.

faery decodes (why faery: docs/sources.md; its errors become FormatError in
``replay.formats.faery_chunks``). This module reads only the text header:
to tell the format (``detect_prophesee``), the sensor and where the binary
data starts, so that a file ending inside a word is reported as truncated
(faery drops a partial last word silently). A header without a size falls
back on the camera generation (``% generation``/``% sensor_generation`` 3.1:
640x480; 4.x: 1280x720; plugin names gen31, gen41, imx636), then on the
``sensor=`` argument, else FormatError.

Events come out as in the file: (0, 0) top left as Metavision shows it,
polarity 1 = CD_ON (increase), timestamps in µs plus the ``% t0`` offset of
the header if any (faery writes one with ``zero_t0``). External trigger events
are skipped and counted (``PropheseeStats``); OTHERS and CONTINUED words are
ignored. What faery does that the layout leaves open: timestamps never go
backwards (a decrease is held at the last value); EVT 2.0 events before the
first EVT_TIME_HIGH keep their 6 low bits; in EVT 3.0 a first EVT_TIME_HIGH of
0xFFE or 0xFFF is not taken (the events of the first ~8 ms of such a file come
out near 0 µs). Refused with FormatError: EVT 2.1 (faery 0.7 has no decoder
for it), DAT files of trigger events, and RAW data whose first bytes look like
one more ``%`` header line (faery 0.7 would read them as header).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.events import FormatError, Recording, SensorSize
from replay.formats.faery_chunks import EventChunker, checked_sensor, collect, guarded

FORMAT_NAMES = {
    "evt2": "Prophesee RAW EVT 2.0 (.raw)",
    "evt3": "Prophesee RAW EVT 3.0 (.raw)",
    "dat": "Prophesee DAT (.dat)",
}
SUFFIXES = (".raw", ".dat")
HEADER_MARK = b"%"
MAX_HEADER_BYTES = 1 << 20
WORD_BYTES = {"evt2": 4, "evt3": 2, "dat": 8}  # DAT: one record
DAT_TYPE_BYTES = 2  # event type, event size
DAT_EVENT_TYPES = {0x00: "Event2d", 0x0C: "EventCD"}
DAT_TRIGGER_TYPE = 0x0E
DAT_RECORD_BYTES = 8
DEFAULT_CHUNK_EVENTS = 1_000_000

# Values of `% evt` and of the first field of `% format` -> format.
ENCODINGS = {
    "2": "evt2",
    "2.0": "evt2",
    "evt2": "evt2",
    "evt2.0": "evt2",
    "3": "evt3",
    "3.0": "evt3",
    "evt3": "evt3",
    "evt3.0": "evt3",
    "2.1": "evt2.1",
    "evt2.1": "evt2.1",
    "evt21": "evt2.1",
}
VGA = SensorSize(640, 480)  # Gen3.1
HD = SensorSize(1280, 720)  # Gen4.x, IMX636
GENERATION_SENSORS = {"3.1": VGA, "4.0": HD, "4.1": HD, "4.2": HD}
PLUGIN_SENSORS = (("gen31", VGA), ("gen41", HD), ("imx636", HD))


@dataclass(frozen=True)
class PropheseeHeader:
    kind: str  # "evt2", "evt3" or "dat"
    sensor: SensorSize | None  # None: the header names none
    data_offset: int  # the first byte after the text lines
    lines: tuple[str, ...]  # the text after each '%', stripped

    @property
    def records_offset(self) -> int:
        """The first byte of the event words (DAT: after its type and size bytes)."""
        return self.data_offset + (DAT_TYPE_BYTES if self.kind == "dat" else 0)


@dataclass
class PropheseeStats:
    """Counts collected while reading; pass one in to see what was skipped."""

    events: int = 0  # events yielded
    triggers_skipped: int = 0  # EVT EXT_TRIGGER events

    def skipped(self) -> dict[str, int]:
        """Events decoded but not yielded, by kind."""
        return {"trigger": self.triggers_skipped}


def read_prophesee_header(path: str | os.PathLike) -> PropheseeHeader:
    """The text header: format, sensor, data offset. FormatError (naming the
    byte) for a file that is no Prophesee RAW or DAT file we read, or that ends
    inside a word or record."""
    source = str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        lines, data_offset = _text_lines(f, source)
        pairs = _pairs(lines)
        kind = _kind(pairs, source, data_offset, Path(path).suffix.lower())
        f.seek(data_offset)
        if kind == "dat":
            _check_dat_type(f.read(DAT_TYPE_BYTES), source, data_offset)
        else:
            _check_data_start(f.readline(MAX_HEADER_BYTES), source, data_offset)
    header = PropheseeHeader(kind, _sensor(pairs, source), data_offset, tuple(lines))
    _check_length(header, size, source)
    return header


def detect_prophesee(path: str | os.PathLike) -> str:
    """The format of a file starting with '%': "evt2", "evt3" or "dat", from its
    text lines only (FormatError when they name none of them we read)."""
    source = str(path)
    with open(path, "rb") as f:
        lines, data_offset = _text_lines(f, source)
    return _kind(_pairs(lines), source, data_offset, Path(path).suffix.lower())


def _text_lines(f, source: str) -> tuple[list[str], int]:
    """The header's lines (text after '%', stripped) and the offset after them.
    Like faery, the header ends at '% end', at a line not starting with '%', or
    at one that is not UTF-8 (binary data that happens to start with '%')."""
    lines: list[str] = []
    offset = 0
    while True:
        line = f.readline(MAX_HEADER_BYTES)
        if not line.startswith(HEADER_MARK):
            break
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            break
        if not line.endswith(b"\n"):
            what = "a header line longer than 1 MiB" if line else "end of file"
            raise FormatError(source, f"byte {offset}", f"{what} inside the '%' text header")
        offset += len(line)
        if offset > MAX_HEADER_BYTES:
            raise FormatError(source, f"byte {offset}", "text header longer than 1 MiB")
        lines.append(text[1:].strip())
        if lines[-1] == "end":
            break
    if not lines:
        what = "empty file" if offset == 0 and not line else "no '%' text header"
        raise FormatError(source, "byte 0", f"{what}: not a Prophesee RAW or DAT file")
    return lines, offset


def _pairs(lines: list[str]) -> list[tuple[str, str]]:
    """(key, value) of each header line ('geometry', '640x480')."""
    pairs = []
    for line in lines:
        key, _, value = line.partition(" ")
        pairs.append((key, value.strip()))
    return pairs


def _kind(pairs: list[tuple[str, str]], source: str, data_offset: int, suffix: str) -> str:
    """The format the header names: RAW by `% evt` or `% format`, DAT by
    `% Version` or `% Data file containing` (or a .dat name)."""
    encoding = None
    for key, value in pairs:
        if key == "evt":
            encoding = value
        elif key == "format":
            encoding = value.split(";")[0]
    if encoding is not None:
        kind = ENCODINGS.get(encoding.lower().strip())
        if kind in ("evt2", "evt3"):
            return kind
        what = "EVT 2.1" if kind == "evt2.1" else f"encoding {encoding!r}"
        raise FormatError(
            source,
            f"byte {data_offset}",
            f"Prophesee RAW file in {what}: not supported (EVT 2.0 and EVT 3.0 are)",
        )
    keys = {key for key, _ in pairs}
    if "Version" in keys or "Data" in keys or suffix == ".dat":
        return "dat"
    raise FormatError(
        source,
        "byte 0",
        "'%' text header names no encoding (no '% evt' or '% format' line) and no DAT "
        "version: not a Prophesee RAW or DAT file we read",
    )


def _check_dat_type(type_and_size: bytes, source: str, offset: int) -> None:
    if len(type_and_size) < DAT_TYPE_BYTES:
        raise FormatError(
            source, f"byte {offset}", "file ends before the DAT event type and size bytes"
        )
    event_type, event_size = type_and_size
    if event_type == DAT_TRIGGER_TYPE:
        raise FormatError(
            source, f"byte {offset}", "DAT file of external trigger events, not CD events"
        )
    if event_type not in DAT_EVENT_TYPES:
        raise FormatError(
            source,
            f"byte {offset}",
            f"DAT event type 0x{event_type:02x} not supported (0x0c CD or 0x00 Event2d are)",
        )
    if event_size != DAT_RECORD_BYTES:
        raise FormatError(
            source, f"byte {offset + 1}", f"DAT event size {event_size}, expected 8 bytes"
        )


def _check_data_start(first_line: bytes, source: str, offset: int) -> None:
    """RAW data right after '% end' that reads as one more '%' text line would
    be taken for header by faery 0.7, shifting every word: refuse it."""
    if not first_line.startswith(HEADER_MARK):
        return
    try:
        first_line.decode("utf-8")
    except UnicodeDecodeError:
        return
    raise FormatError(
        source,
        f"byte {offset}",
        "the event data after '% end' starts like a '%' header line, which the decoder "
        "(faery) would skip as header: not supported",
    )


def _sensor(pairs: list[tuple[str, str]], source: str) -> SensorSize | None:
    """The sensor the header names (later lines win, as in faery), else the
    one its camera generation implies, else None."""
    width = height = None
    for key, value in pairs:
        if key == "format":
            fields = dict(f.partition("=")[::2] for f in value.split(";")[1:])
            if fields.get("width", "").isdigit() and fields.get("height", "").isdigit():
                width, height = int(fields["width"]), int(fields["height"])
        elif key == "geometry":
            w, _, h = value.partition("x")
            if w.strip().isdigit() and h.strip().isdigit():
                width, height = int(w), int(h)
        elif key == "Width" and value.isdigit():
            width = int(value)
        elif key == "Height" and value.isdigit():
            height = int(value)
    if width is not None and height is not None:
        return checked_sensor(width, height, source, "byte 0")
    return _sensor_of_generation(pairs)


def _sensor_of_generation(pairs: list[tuple[str, str]]) -> SensorSize | None:
    for key, value in pairs:
        if key in ("generation", "sensor_generation") and value in GENERATION_SENSORS:
            return GENERATION_SENSORS[value]
    for key, value in pairs:
        if key == "plugin_name":
            for part, sensor in PLUGIN_SENSORS:
                if part in value.lower():
                    return sensor
    return None


def _check_length(header: PropheseeHeader, size: int, source: str) -> None:
    word = WORD_BYTES[header.kind]
    leftover = (size - header.records_offset) % word
    if leftover:
        what = "record" if header.kind == "dat" else "word"
        raise FormatError(
            source,
            f"byte {size - leftover}",
            f"file ends {leftover} byte(s) into a {word}-byte {what} (truncated file)",
        )


def _resolved_sensor(header: PropheseeHeader, sensor: SensorSize | None, source: str):
    if header.sensor is not None:
        return header.sensor
    if sensor is not None:
        return checked_sensor(*sensor, source, "byte 0")
    raise FormatError(
        source,
        "byte 0",
        "the header names no sensor size (no '% geometry', '% format ...;width=;height=', "
        "'% Width'/'% Height' or known '% generation' line); pass sensor=",
    )


def prophesee_sensor(path: str | os.PathLike, sensor: SensorSize | None = None) -> SensorSize:
    """The sensor of a RAW or DAT file: the header's, else ``sensor``, else
    FormatError (the header problems of ``read_prophesee_header`` too)."""
    return _resolved_sensor(read_prophesee_header(path), sensor, str(path))


def iter_prophesee(
    path: str | os.PathLike,
    *,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
    sensor: SensorSize | None = None,
    stats: PropheseeStats | None = None,
) -> Iterator[np.ndarray]:
    """The CD events of a RAW or DAT file as EVENT_DTYPE arrays of
    ``chunk_events`` events (the last one shorter); ``sensor`` is used only
    when the header names none."""
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    stats = stats if stats is not None else PropheseeStats()
    resolved, packets = _decoding(path, sensor, stats)
    for chunk in EventChunker(resolved, str(path), chunk_events).chunks(packets):
        stats.events += len(chunk)
        yield chunk


def read_prophesee(
    path: str | os.PathLike,
    *,
    sensor: SensorSize | None = None,
    stats: PropheseeStats | None = None,
) -> Recording:
    """The whole RAW or DAT file as one Recording (see ``iter_prophesee``)."""
    stats = stats if stats is not None else PropheseeStats()
    resolved, packets = _decoding(path, sensor, stats)
    events = collect(packets, resolved, str(path))
    stats.events += len(events)
    return Recording(events, resolved, str(path))


def _decoding(path, sensor: SensorSize | None, stats: PropheseeStats):
    """(the sensor, faery's packets as (t, x, y, polarity) with its errors as FormatError)."""
    source = str(path)
    header = read_prophesee_header(path)
    resolved = _resolved_sensor(header, sensor, source)
    from faery import dat, evt  # ~0.15 s to import: only when a file is decoded

    if header.kind == "dat":
        packets = _dat_packets(dat, source, resolved)
    else:
        packets = _evt_packets(evt, source, header.kind, resolved, stats)
    return resolved, guarded(packets, source, f"decoding {FORMAT_NAMES[header.kind]}")


def _evt_packets(evt, source: str, kind: str, sensor: SensorSize, stats: PropheseeStats):
    """(t, x, y, polarity) of each packet faery's ``evt`` decoder gives for a RAW file."""
    with evt.Decoder(source, tuple(sensor), kind) as decoder:
        _check_dimensions(decoder.dimensions, sensor, source)
        for packet in decoder:
            stats.triggers_skipped += len(packet.get("triggers", ()))
            events = packet.get("events")
            if events is not None and len(events):
                yield events["t"], events["x"], events["y"], events["on"]


def _dat_packets(dat, source: str, sensor: SensorSize):
    """(t, x, y, polarity) of each packet faery's ``dat`` decoder gives for a DAT file
    (the version from its '% Version' line: no fallback)."""
    with dat.Decoder(source, tuple(sensor), None) as decoder:
        _check_dimensions(decoder.dimensions, sensor, source)
        for events in decoder:
            if len(events):
                yield events["t"], events["x"], events["y"], events["payload"] != 0


def _check_dimensions(dimensions, sensor: SensorSize, source: str) -> None:
    if dimensions is None or SensorSize(*dimensions) != sensor:
        raise FormatError(
            source,
            "byte 0",
            f"the decoder read sensor {dimensions} from the header, this reader {sensor}",
        )


__all__ = [
    "FORMAT_NAMES",
    "PropheseeHeader",
    "PropheseeStats",
    "detect_prophesee",
    "iter_prophesee",
    "prophesee_sensor",
    "read_prophesee",
    "read_prophesee_header",
]
