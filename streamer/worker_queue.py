"""The bounded queue between the worker's receiving and processing threads.

Bounded in events and messages; at the bound, ``policy`` decides (the overload
policy of docs/streaming.md): ``"drop"`` sheds the oldest event messages
(counted per stream) and keeps control messages in order, ``"block"`` makes the
receiving thread wait, so that ZeroMQ's queues fill and a lossless producer
waits too.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

from streamer import wire


@dataclass
class Pending:
    """One received message and when it was taken off the socket (``time.time_ns``)."""

    message: wire.Message
    received_ns: int
    # Events: every polarity 0 or 1, checked by the receiving thread while the
    # processing thread works (its first pass over the message, about a tenth of the
    # processing thread's time at full speed); None: not checked yet.
    polarity_ok: bool | None = None

    @property
    def events(self) -> int:
        return len(self.message.events) if isinstance(self.message, wire.Events) else 0


class PendingQueue:
    """Messages from the receiving thread to the processing thread, bounded in events
    and messages; ``policy`` says what happens at the bound (module docstring)."""

    def __init__(self, max_events: int, max_messages: int, policy: str):
        self.max_events = max_events
        self.max_messages = max_messages
        self.policy = policy
        self._items: deque[Pending] = deque()
        self._events = 0
        self._condition = threading.Condition()
        self.dropped_events: Counter = Counter()  # by stream
        self.dropped_messages: Counter = Counter()  # by stream
        self.peak_events = 0
        self.peak_messages = 0
        self.blocked_s = 0.0

    def _over(self, extra_events: int = 0, extra_messages: int = 0) -> bool:
        return (
            self._events + extra_events > self.max_events
            or len(self._items) + extra_messages > self.max_messages
        )

    def put(self, item: Pending, stop_event: threading.Event) -> None:
        with self._condition:
            if self.policy == "block":
                blocked_since = None
                while self._items and self._over(item.events, 1) and not stop_event.is_set():
                    blocked_since = blocked_since or time.monotonic()
                    self._condition.wait(0.05)
                if blocked_since is not None:
                    self.blocked_s += time.monotonic() - blocked_since
            elif item.events > self.max_events:
                self._drop(item)
                return
            self._items.append(item)
            self._events += item.events
            if self.policy == "drop" and self._over():
                self._shed()
            self.peak_events = max(self.peak_events, self._events)
            self.peak_messages = max(self.peak_messages, len(self._items))
            self._condition.notify()

    def _drop(self, item: Pending) -> None:
        self.dropped_events[item.message.stream] += item.events
        self.dropped_messages[item.message.stream] += 1

    def _shed(self) -> None:
        """Drop the oldest event messages down to 3/4 of the bounds; keep control
        messages (labels, end) in order unless they alone exceed half the message bound."""
        target_events = self.max_events * 3 // 4
        target_messages = self.max_messages * 3 // 4
        kept: list[Pending] = []
        while self._items and (
            self._events > target_events or len(self._items) + len(kept) > target_messages
        ):
            item = self._items.popleft()
            if item.message.type == "events":
                self._events -= item.events
                self._drop(item)
            else:
                kept.append(item)
                if len(kept) > self.max_messages // 2:
                    self._drop(kept.pop(0))
        self._items.extendleft(reversed(kept))

    def take_all(self, timeout_s: float) -> list[Pending]:
        """Everything pending (waiting up to ``timeout_s`` when nothing is)."""
        with self._condition:
            if not self._items:
                self._condition.wait(timeout_s)
            items = list(self._items)
            self._items.clear()
            self._events = 0
            self._condition.notify_all()
            return items

    def counts(self) -> tuple[int, int]:
        with self._condition:
            return self._events, len(self._items)
