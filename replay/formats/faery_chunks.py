"""What the Prophesee and Event Stream readers share: faery's decoders turned
into checked EVENT_DTYPE chunks, and faery's errors turned into FormatError.

faery (https://github.com/aestream/faery, LGPL-3.0) decodes in Rust and hands
out packets of up to 64 KiB of file each, in its own 13-byte layout (``t``
uint64 µs, ``x``/``y`` uint16, ``on`` or ``payload``). ``EventChunker`` copies
them field by field into EVENT_DTYPE arrays of exactly ``chunk_events`` events
(the last one shorter), the chunking of the other readers' ``iter_*``;
``collect`` copies all of them into one array for ``read_*``. Both check what
they return with ``core.events.validate_events``.

Every exception faery raises on a bad file (``RuntimeError`` with messages such
as ``x overflow (x=700 should be strictly smaller than width=640)``, ``OSError``
for a short read) becomes a FormatError naming the file. A Rust panic reaches
Python as pyo3's ``PanicException``, which derives from BaseException (not
Exception): it is caught by name, so KeyboardInterrupt and SystemExit pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np

from core.events import EVENT_DTYPE, FormatError, SensorSize, validate_events

PANIC_EXCEPTION_NAME = "PanicException"  # pyo3's, raised for a Rust panic
MAX_SIDE = int(np.iinfo(EVENT_DTYPE["x"]).max) + 1  # x and y are int16


def checked_sensor(width: int, height: int, source: str, where: str) -> SensorSize:
    """The sensor a header names, FormatError unless EVENT_DTYPE can hold its pixels."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise FormatError(
            source, where, f"sensor {width}x{height}: each side must be 1 to {MAX_SIDE} pixels"
        )
    return SensorSize(width, height)


@contextmanager
def library_errors(source: str, where: Callable[[], str], doing: str):
    """Run a faery call; any error it raises becomes FormatError(source, where(), ...)."""
    try:
        yield
    except FormatError:
        raise
    except Exception as error:
        raise FormatError(source, where(), f"{doing}: {_one_line(error)}") from error
    except BaseException as error:
        if type(error).__name__ != PANIC_EXCEPTION_NAME:
            raise
        raise FormatError(
            source, where(), f"{doing}: the decoder failed ({_one_line(error)})"
        ) from error


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def guarded(packets: Iterable[tuple], source: str, doing: str) -> Iterator[tuple]:
    """faery's ``(t, x, y, polarity)`` packets, its errors while decoding them
    raised as FormatError naming how many events had been decoded."""
    iterator = iter(packets)
    decoded = [0]

    def where() -> str:
        return f"after event {decoded[0]}"

    while True:
        with library_errors(source, where, doing):
            packet = next(iterator, None)
        if packet is None:
            return
        decoded[0] += len(packet[0])
        yield packet


def fill(out: np.ndarray, t, x, y, polarity, flip_y_height: int | None) -> None:
    """Copy one packet's columns into EVENT_DTYPE ``out`` (as long as they are);
    ``flip_y_height``: y becomes height - 1 - y (Event Stream counts y from the bottom)."""
    out["timestamp"] = t
    out["x"] = x
    out["y"] = y if flip_y_height is None else flip_y_height - 1 - y.astype(np.int32)
    out["polarity"] = polarity


def collect(
    packets: Iterable[tuple], sensor: SensorSize, source: str, *, flip_y_height: int | None = None
) -> np.ndarray:
    """All the events of the packets as one checked EVENT_DTYPE array: one
    allocation and one copy (chunks and their concatenation would copy twice)."""
    parts = list(packets)
    events = np.zeros(sum(len(part[0]) for part in parts), dtype=EVENT_DTYPE)
    start = 0
    for t, x, y, polarity in parts:
        fill(events[start : start + len(t)], t, x, y, polarity, flip_y_height)
        start += len(t)
    validate_events(events, sensor, source)
    return events


class EventChunker:
    """Packets of (t, x, y, polarity) columns in, checked EVENT_DTYPE chunks of
    ``chunk_events`` events out (the last one shorter)."""

    def __init__(
        self,
        sensor: SensorSize,
        source: str,
        chunk_events: int,
        *,
        flip_y_height: int | None = None,
    ):
        if chunk_events < 1:
            raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
        self.sensor = sensor
        self.source = source
        self.chunk_events = chunk_events
        self.flip_y_height = flip_y_height
        self.events_out = 0  # events yielded so far: the index of the next chunk's first
        self._previous_us: int | None = None
        self._chunk = np.zeros(chunk_events, dtype=EVENT_DTYPE)
        self._filled = 0

    def chunks(self, packets: Iterable[tuple]) -> Iterator[np.ndarray]:
        for packet in packets:
            yield from self._add(*packet)
        if self._filled:
            yield self._emit()

    def _add(self, t, x, y, polarity) -> Iterator[np.ndarray]:
        """Append one packet's columns; yield every chunk it completes."""
        start, count = 0, len(t)
        while start < count:
            take = min(count - start, self.chunk_events - self._filled)
            stop = start + take
            out = self._chunk[self._filled : self._filled + take]
            fill(
                out,
                t[start:stop],
                x[start:stop],
                y[start:stop],
                polarity[start:stop],
                self.flip_y_height,
            )
            self._filled += take
            start = stop
            if self._filled == self.chunk_events:
                yield self._emit()

    def _emit(self) -> np.ndarray:
        chunk = self._chunk[: self._filled]
        validate_events(chunk, self.sensor, self.source, self.events_out, self._previous_us)
        self._previous_us = int(chunk["timestamp"][-1])
        self.events_out += len(chunk)
        self._chunk = np.zeros(self.chunk_events, dtype=EVENT_DTYPE)
        self._filled = 0
        return chunk
