"""Map event time to the wall clock: real time, a speed factor, or as fast as possible.

Deadlines are computed from one anchor (the wall time at which the first
event was due), never by accumulating sleeps, so a long replay does not drift:
a late chunk is sent at once and the next one is again on schedule.
"""

from __future__ import annotations

import math
import threading
import time
from typing import NamedTuple

from core.source import DEFAULT_CHUNK_US, DEFAULT_MAX_CHUNK_EVENTS

# --speed max --lossless: 16 ms of event time, up to 262,144 events (4 MiB) a message.
UNPACED_LOSSLESS_CHUNK_US = 16_000
UNPACED_LOSSLESS_MAX_CHUNK_EVENTS = 1 << 18


class MessageSize(NamedTuple):
    """How a producer cuts its source into messages."""

    chunk_us: int  # event time per message
    max_events: int  # at most this many events: a denser window is cut into several


DEFAULT_MESSAGE_SIZE = MessageSize(DEFAULT_CHUNK_US, DEFAULT_MAX_CHUNK_EVENTS)


def parse_speed(text: str | float) -> float:
    """``"max"``/``"inf"`` -> inf (no pacing), ``"2"`` -> 2.0 (twice real time)."""
    if isinstance(text, str) and text.strip().lower() in ("max", "inf", "unlimited"):
        return math.inf
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(f"speed must be a positive number or 'max', got {text!r}") from None
    if not speed > 0:
        raise ValueError(f"speed must be a positive number or 'max', got {text!r}")
    return speed


def message_size_for_speed(
    speed: float,
    lossless: bool = False,
    *,
    chunk_us: int | None = None,
    max_events: int | None = None,
) -> MessageSize:
    """Event time and events per message for a pace; ``chunk_us`` / ``max_events``
    (``--chunk-us`` / ``--max-chunk-events``), where given, win.

    Paced: one millisecond of wall time, a live sensor's packet rate; at a fixed 1 ms of
    event time a 4x replay sent 4,000 messages a second, whose per-message cost on the
    two cores (producer, the worker's receiver and the worker) tripled the worker's step
    and gave a p99 of 38-73 ms against 5-6 ms. Unpaced and lossless (evaluations,
    benchmarks): only throughput matters; 16 ms messages went through producer -> worker
    40 % faster than 1 ms ones, and lifting their event cap from 65,536 to 262,144 (one
    message per 16 ms at 10 M ev/s instead of three) another 14-24 %: each message costs
    the worker a hand-over between its threads (docs/benchmarks.md). Unpaced with drops
    keeps 1 ms and the general cap: its send queue counts messages, and 1,000 large ones
    would hold gigabytes."""
    if math.isfinite(speed):
        size = MessageSize(max(1, round(DEFAULT_CHUNK_US * speed)), DEFAULT_MAX_CHUNK_EVENTS)
    elif lossless:
        size = MessageSize(UNPACED_LOSSLESS_CHUNK_US, UNPACED_LOSSLESS_MAX_CHUNK_EVENTS)
    else:
        size = DEFAULT_MESSAGE_SIZE
    size = MessageSize(
        size.chunk_us if chunk_us is None else chunk_us,
        size.max_events if max_events is None else max_events,
    )
    if size.chunk_us <= 0 or size.max_events <= 0:
        raise ValueError(
            f"--chunk-us and --max-chunk-events must be positive, got {size.chunk_us} "
            f"and {size.max_events}"
        )
    return size


class Pacer:
    """Waits until an event timestamp is due on the wall clock.

    ``speed`` 1.0 is real time, 2.0 twice as fast, ``inf`` never waits. The
    first call anchors event time ``t`` to now; a chunk is released when its
    last event is due, i.e. when it would have been complete on a live
    sensor."""

    def __init__(self, speed: float = 1.0, clock=time.monotonic):
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = float(speed)
        self.clock = clock
        self._anchor_wall_s: float | None = None
        self._anchor_event_us = 0
        self.max_lateness_s = 0.0  # how far behind schedule a release came (CPU too slow)

    @property
    def paced(self) -> bool:
        return math.isfinite(self.speed)

    def anchor(self, event_us: int) -> None:
        """Make ``event_us`` due now (the start of the stream)."""
        self._anchor_wall_s = self.clock()
        self._anchor_event_us = int(event_us)

    def due_s(self, event_us: int) -> float:
        """Wall-clock time (on ``clock``) at which ``event_us`` is due."""
        return self._anchor_wall_s + (int(event_us) - self._anchor_event_us) / 1e6 / self.speed

    def wait(self, first_us: int, last_us: int, stop_event: threading.Event | None = None) -> bool:
        """Block until ``last_us`` is due. Returns False if ``stop_event`` was set meanwhile."""
        if not self.paced:
            return not (stop_event is not None and stop_event.is_set())
        if self._anchor_wall_s is None:
            self.anchor(first_us)
        remaining_s = self.due_s(last_us) - self.clock()
        if remaining_s <= 0:
            self.max_lateness_s = max(self.max_lateness_s, -remaining_s)
            return not (stop_event is not None and stop_event.is_set())
        if stop_event is None:
            time.sleep(remaining_s)
            return True
        return not stop_event.wait(remaining_s)
