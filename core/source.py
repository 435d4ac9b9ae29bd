"""What every event source is to the producer: one small protocol and its items.

A source (a live camera, a DV network stream and a synthetic generator in
``streamer/sources.py``; a file replay in ``replay/player.py``) is iterated by
the producer as ``source.items(stop_event)``, which yields ``SourceItem`` values:

* an ``EVENT_DTYPE`` array: one chunk of events, timestamps non-decreasing;
* ``Labels``: ground-truth segments (replays only), published before the
  events they describe;
* ``SourceEnd``: why a finite source stopped (the producer puts the reason in
  the ``end`` message; a source may also simply stop iterating).

``live`` sources (camera, network) deliver events in real time already, so the
producer sends them as they come; the others carry a simulated clock that
``streamer/pacing.py`` maps to the wall clock. ``TimeChunker`` cuts any source's
events into messages on a fixed time grid, so that message boundaries do not
depend on how a reader batched its output.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.events import EVENT_DTYPE, SensorSize, concat_events
from core.labels import LabelSegment

DEFAULT_CHUNK_US = 1000
DEFAULT_MAX_CHUNK_EVENTS = 1 << 16  # 1 MiB per message: keeps messages small at any rate


class SourceError(RuntimeError):
    """A source cannot start: no camera, unknown serial, unreachable host..."""


@dataclass(frozen=True)
class Labels:
    """Segments published as one ``labels`` message; ``sample`` names where they came from."""

    segments: tuple[LabelSegment, ...]
    sample: str = ""


@dataclass(frozen=True)
class SourceEnd:
    """A finite source is done; ``reason`` goes into the ``end`` message."""

    reason: str


SourceItem = np.ndarray | Labels | SourceEnd


class Source(Protocol):
    """What the producer needs from a source."""

    sensor: SensorSize  # native sensor size; the worker adapts it (core/adapt.py)
    description: str  # camera name and serial, file name, "synthetic 1 M ev/s"...
    live: bool  # True: events arrive in real time; False: the producer paces them

    def items(self, stop_event: threading.Event) -> Iterator[SourceItem]:
        """Yield chunks, labels and finally (for finite sources) ``SourceEnd``.

        Returns soon after ``stop_event`` is set, even while waiting for data."""
        ...

    def close(self) -> None: ...


# --- chunking --------------------------------------------------------------------------


def split_by_count(events: np.ndarray, max_chunk_events: int) -> list[np.ndarray]:
    """Views of at most ``max_chunk_events`` events each (no copy)."""
    if len(events) <= max_chunk_events:
        return [events] if len(events) else []
    return [events[i : i + max_chunk_events] for i in range(0, len(events), max_chunk_events)]


class TimeChunker:
    """Cuts a stream of event arrays into chunks of ``chunk_us`` of event time.

    Chunks follow a fixed grid ``origin_us + k * chunk_us`` so that message
    boundaries do not depend on how a reader happened to batch its output. The
    last, possibly incomplete window is held back until a later event (or
    ``flush``) closes it; it never holds more than ``max_chunk_events``.
    Empty windows produce no chunk."""

    def __init__(
        self,
        chunk_us: int = DEFAULT_CHUNK_US,
        origin_us: int = 0,
        max_chunk_events: int = DEFAULT_MAX_CHUNK_EVENTS,
    ):
        if chunk_us <= 0:
            raise ValueError(f"chunk_us must be positive, got {chunk_us}")
        if max_chunk_events <= 0:
            raise ValueError(f"max_chunk_events must be positive, got {max_chunk_events}")
        self.chunk_us = int(chunk_us)
        self.origin_us = int(origin_us)
        self.max_chunk_events = int(max_chunk_events)
        self._pending = np.empty(0, dtype=EVENT_DTYPE)

    def push(self, events: np.ndarray) -> list[np.ndarray]:
        """Add events; return the chunks of every window that is now complete."""
        if len(events) == 0:
            return []
        pending = events
        if len(self._pending):
            pending = concat_events([self._pending, events])
        window = (pending["timestamp"] - self.origin_us) // self.chunk_us
        last_window_start = int(np.searchsorted(window, window[-1], side="left"))
        complete, tail = pending[:last_window_start], pending[last_window_start:]
        chunks = self._split(complete, window[:last_window_start])
        if len(tail) > self.max_chunk_events:  # a dense window: send full pieces now
            cut = len(tail) - len(tail) % self.max_chunk_events
            chunks += split_by_count(tail[:cut], self.max_chunk_events)
            tail = tail[cut:]
        self._pending = tail.copy()  # at most one window: do not pin the caller's array
        return chunks

    def flush(self) -> list[np.ndarray]:
        """Chunks of what is held back (end of a sample or of the stream)."""
        pending, self._pending = self._pending, np.empty(0, dtype=EVENT_DTYPE)
        return split_by_count(pending, self.max_chunk_events)

    def _split(self, events: np.ndarray, window: np.ndarray) -> list[np.ndarray]:
        if len(events) == 0:
            return []
        boundaries = np.flatnonzero(window[1:] != window[:-1]) + 1
        chunks: list[np.ndarray] = []
        for piece in np.split(events, boundaries):
            chunks += split_by_count(piece, self.max_chunk_events)
        return chunks


# --- preloading -----------------------------------------------------------------------

DEFAULT_PRELOAD_MAX_BYTES = 4 << 30


class PreloadedSource:
    """Another finite source's items read into memory first, then replayed from there:
    for throughput benchmarks, where reading or generating the events must not compete
    with the pipeline under test for the cores. At most ``max_bytes`` of events."""

    live = False

    def __init__(
        self,
        source: Source,
        stop_event: threading.Event,
        max_bytes: int = DEFAULT_PRELOAD_MAX_BYTES,
    ):
        if source.live:
            raise SourceError(f"{source.description} is live: it cannot be preloaded")
        self.sensor = source.sensor
        self.description = f"{source.description}, preloaded"
        self.stats = getattr(source, "stats", None)  # a replay's counts, if any
        self.events = 0
        self._items: list[SourceItem] = []
        try:
            for item in source.items(stop_event):
                if isinstance(item, np.ndarray):
                    self.events += len(item)
                    if self.events * EVENT_DTYPE.itemsize > max_bytes:
                        raise SourceError(
                            f"{source.description}: more than {max_bytes / 2**30:g} GiB of "
                            "events to preload; shorten it (--duration-s, --limit)"
                        )
                self._items.append(item)
        finally:
            source.close()

    def items(self, stop_event: threading.Event) -> Iterator[SourceItem]:
        for item in self._items:
            if stop_event.is_set():
                return
            yield item

    def close(self) -> None:
        self._items = []
