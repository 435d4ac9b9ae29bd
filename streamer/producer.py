"""A source -> ZeroMQ: one loop that paces, encodes (streamer/wire.py) and publishes.

Socket: an XPUB bound to ``endpoint`` (loopback unless ``bind_any``). It
behaves as a PUB socket for subscribers, and it also sees their
subscriptions, which lets ``wait_subscribers`` hold the stream back until N
subscribers are listening: PUB/SUB joins asynchronously, so without that wait
the first messages go to nobody.

Full queues: each subscriber has a send queue of ``send_hwm`` messages. The
socket runs with ``ZMQ_XPUB_NODROP``, so a full queue is visible to the
producer (EAGAIN) instead of ZeroMQ dropping silently, and:

* ``on_full="drop"`` (default, for live data): the producer drops that
  message for every subscriber of the stream and counts it
  (``ProducerStats.dropped_messages``/``dropped_events``); ``seq`` still
  advances, so receivers see the gap too (``wire.SequenceTracker``). One
  slow subscriber therefore costs the others that message as well: give slow
  consumers (a dashboard) their own, thinner stream.
* ``on_full="block"`` (lossless replays, evaluation): the producer waits
  until every subscriber has room, so the slowest one sets the pace; the time
  spent waiting is counted in ``ProducerStats.blocked_s``.

Plain PUB semantics (silent per-subscriber drops) were measured to lose even
the final ``end`` message after a burst; with NODROP ``end`` waits for room
(up to ``linger_ms``; with ``on_full="block"`` or once a finite source has
ended, up to LOSSLESS_FLUSH_MS, and the socket lingers as long, so a slow
subscriber still gets the queued tail).

One session id (random) per run, ``seq`` +1 per message of any type, an
``end`` message when the source finishes or the run is stopped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import numpy as np
import zmq

from core.source import Labels, Source, SourceEnd
from streamer import wire
from streamer.curve import Curve, ServingContext, check_exposure
from streamer.pacing import Pacer
from streamer.transport import Subscriptions, bind_xpub, check_endpoint

log = logging.getLogger("stcsnn.producer")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_SEND_HWM = 1000  # messages per subscriber; 1 s of 1 ms chunks
DEFAULT_LINGER_MS = 500  # time to flush queued messages (the end message) at close
NOBODY_WARNING_S = 2.0  # publishing to no subscriber for this long is worth a warning
# A lossless replay's subscribers may still be working through a full queue
# when the source ends: wait this long for them to take the rest and `end`.
LOSSLESS_FLUSH_MS = 60_000


@dataclass
class ProducerStats:
    """What one run published."""

    stream_id: str
    session: str
    endpoint: str = ""  # the bound address (resolves a ":0" port)
    description: str = ""
    messages: int = 0  # every message sent: events, labels and end
    dropped_messages: int = 0  # on_full="drop": not sent because a queue was full
    dropped_events: int = 0
    event_messages: int = 0  # sent (not dropped)
    events: int = 0
    label_messages: int = 0
    end_reason: str = ""
    first_event_us: int | None = None
    last_event_us: int | None = None
    wall_s: float = 0.0  # first event message to end
    first_events_ns: int | None = None  # time.time_ns() when the first events were sent
    max_lateness_s: float = 0.0  # pacing: how far behind schedule the producer fell
    blocked_s: float = 0.0  # on_full="block": time waiting for slow subscribers
    subscribers: int = 0  # subscriptions covering this stream's events when it ended

    def as_dict(self) -> dict:
        return asdict(self)


def _send_end(
    socket: zmq.Socket, frames: list, timeout_ms: int, stop_event: threading.Event
) -> bool:
    """Send ``end`` without dropping it at a full queue, waiting at most ``timeout_ms``
    (or until ``stop_event``, when the wait was for a lossless flush).

    Receivers that miss ``end`` never learn that the stream ended, so unlike
    events it is not dropped at once."""
    deadline = time.monotonic() + timeout_ms / 1000
    stopped_already = stop_event.is_set()
    while True:
        try:
            socket.send_multipart(frames, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            if time.monotonic() > deadline or (stop_event.is_set() and not stopped_already):
                return False
            time.sleep(0.001)
        except zmq.ZMQError:
            return False


class _Sender:
    """Sends one stream's messages on the XPUB under the ``on_full`` policy (module
    docstring), numbering them: ``seq`` advances also for a dropped message, so
    receivers see the gap."""

    def __init__(self, socket, stats: ProducerStats, on_full: str, stop_event: threading.Event):
        self.socket = socket
        self.stats = stats
        self.on_full = on_full
        self.stop_event = stop_event
        self.seq = 0
        self.first_events_s: float | None = None  # time.monotonic() at the first events message

    def envelope(self) -> dict:
        return {"stream": self.stats.stream_id, "session": self.stats.session, "seq": self.seq}

    def send(self, message: wire.Message, events: int = 0) -> bool:
        """Send one message; False if it was dropped, or not sent because of a stop."""
        frames = wire.encode(message)
        self.seq += 1
        blocked_since = None
        try:
            while True:
                try:
                    self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    self.stats.messages += 1
                    return True
                except zmq.Again:
                    if self.on_full == "drop":
                        self.stats.dropped_messages += 1
                        self.stats.dropped_events += events
                        return False
                    # XPUB signals no POLLOUT readiness, so retry on a short timer.
                    blocked_since = blocked_since or time.monotonic()
                    if self.stop_event.wait(0.0005):
                        return False
        finally:
            if blocked_since is not None:
                self.stats.blocked_s += time.monotonic() - blocked_since


class _Audience:
    """Says when the stream has had no subscriber for NOBODY_WARNING_S (its events go
    nowhere: a worker not started, or connected elsewhere), and when one arrives."""

    def __init__(self, subscriptions: Subscriptions, stream_id: str, endpoint: str):
        self.subscriptions = subscriptions
        self.endpoint = endpoint
        self.where = f"stream {stream_id!r} on {endpoint}"
        self.alone_since: float | None = None
        self.warned = False

    def check(self) -> None:
        now = time.monotonic()
        if self.subscriptions.count > 0:
            if self.warned:
                log.warning("%s: a subscriber connected", self.where)
            self.alone_since, self.warned = None, False
            return
        self.alone_since = self.alone_since or now
        if not self.warned and now - self.alone_since >= NOBODY_WARNING_S:
            self.warned = True
            log.warning(
                "%s: nobody subscribes; its events go nowhere (start a worker with "
                "--connect %s, or give --wait-subscribers 1 to hold the stream)",
                self.where,
                self.endpoint,
            )


def _publish(
    source: Source,
    sender: _Sender,
    pacer: Pacer,
    subscriptions: Subscriptions,
    stop_event: threading.Event,
) -> str:
    """Pace and send everything the source yields; the reason it stopped."""
    stats = sender.stats
    audience = _Audience(subscriptions, stats.stream_id, stats.endpoint)
    for item, until_us in _with_watermarks(source, stop_event):
        if stop_event.is_set():
            return "stopped"
        subscriptions.drain()
        audience.check()
        if isinstance(item, np.ndarray):
            if len(item) == 0:
                continue
            first_us, last_us = int(item["timestamp"][0]), int(item["timestamp"][-1])
            if not pacer.wait(first_us, last_us, stop_event):
                return "stopped"
            message = wire.Events(
                **sender.envelope(), events=item, sensor=source.sensor, until_us=until_us
            )
            if sender.send(message, len(item)):
                stats.event_messages += 1
                stats.events += len(item)
            if sender.first_events_s is None:
                sender.first_events_s = time.monotonic()
                stats.first_events_ns = time.time_ns()
                stats.first_event_us = first_us
            stats.last_event_us = last_us
        elif isinstance(item, Labels):
            if sender.send(wire.Labels(**sender.envelope(), segments=tuple(item.segments))):
                stats.label_messages += 1
        elif isinstance(item, SourceEnd):
            return item.reason
        else:
            raise TypeError(f"source yielded {type(item).__name__}, not a SourceItem")
    return "stopped" if stop_event.is_set() else "end of source"


def _with_watermarks(source: Source, stop_event: threading.Event):
    """``(item, until_us)`` for each item of the source. For a recorded or synthetic
    source the next item is read ahead (it is there at once), and a chunk followed by
    another carries the next one's first timestamp: no event before it will come, so a
    worker can close the hop it ends without waiting for the next message (the
    chunk's duration less latency). A live source is not read ahead (the next batch
    is in the future): ``until_us`` is None. Neither is a chunk whose successor starts
    at its own last timestamp (a dense window cut at the event cap): more events of
    that microsecond follow, and a watermark must lie after every event sent."""
    items = source.items(stop_event)
    if source.live:
        for item in items:
            yield item, None
        return
    item = next(items, None)
    while item is not None:
        following = next(items, None)
        until_us = None
        if isinstance(item, np.ndarray) and isinstance(following, np.ndarray) and len(following):
            next_us = int(following["timestamp"][0])
            if not len(item) or next_us > int(item["timestamp"][-1]):
                until_us = next_us
        yield item, until_us
        item = following


def run_producer(
    source: Source,
    endpoint: str = DEFAULT_ENDPOINT,
    *,
    stream_id: str = "replay",
    bind_any: bool = False,
    speed: float = 1.0,
    wait_subscribers: int = 0,
    wait_timeout_s: float | None = None,
    settle_s: float = 0.3,
    send_hwm: int = DEFAULT_SEND_HWM,
    on_full: str = "drop",
    linger_ms: int = DEFAULT_LINGER_MS,
    stop_event: threading.Event | None = None,
    context: zmq.Context | None = None,
    on_bound=None,
    curve: Curve | None = None,
    insecure: bool = False,
) -> ProducerStats:
    """Publish ``source`` on ``endpoint`` until it ends or ``stop_event`` is set.

    ``speed`` paces non-live sources (1.0 real time, ``math.inf`` as fast as
    possible); live sources are sent as they arrive. ``wait_subscribers`` > 0
    holds the first message until that many subscribers of this stream's
    events are connected; otherwise ``settle_s`` gives subscribers that are
    already running time to (re)connect. ``on_bound(stats)`` is called once
    the socket is bound (``stats.endpoint`` holds the actual address).
    ``curve`` serves with CURVE (streamer/curve.py); ``bind_any`` needs it, or
    ``insecure``. Always sends ``end`` and closes the socket, also on error."""
    check_endpoint(endpoint, bind_any)
    check_exposure(bind_any, curve, insecure)
    if "/" in stream_id or not stream_id:
        raise ValueError(f"stream id {stream_id!r} must be non-empty and contain no '/'")
    if on_full not in ("drop", "block"):
        raise ValueError(f"on_full must be 'drop' or 'block', got {on_full!r}")
    stop_event = stop_event or threading.Event()
    serving = ServingContext(context, curve)  # closing it waits for the queued messages
    try:
        socket = bind_xpub(serving.context, endpoint, send_hwm, linger_ms, curve)
    except BaseException:
        serving.close()
        raise
    stats = ProducerStats(
        stream_id=stream_id,
        session=uuid.uuid4().hex[:12],
        endpoint=socket.getsockopt(zmq.LAST_ENDPOINT).decode(),
        description=source.description,
    )
    log.debug("publishing %s as stream %r on %s", source.description, stream_id, stats.endpoint)
    subscriptions = Subscriptions(
        socket,
        wire.topic("events", stream_id),
        {name: wire.topic(name, stream_id) for name in ("labels", "end")},
    )
    pacer = Pacer(math.inf if source.live else speed)
    sender = _Sender(socket, stats, on_full, stop_event)
    if on_bound is not None:
        on_bound(stats)
    reason = "stopped"
    try:
        if wait_subscribers > 0:
            log.info("waiting for %d subscriber(s) on %s", wait_subscribers, stats.endpoint)
            subscriptions.wait_for(wait_subscribers, stop_event, wait_timeout_s)
        elif settle_s > 0:
            stop_event.wait(settle_s)
        if not stop_event.is_set():
            reason = _publish(source, sender, pacer, subscriptions, stop_event)
        if stop_event.is_set():
            reason = "stopped"
    except Exception as error:
        reason = f"producer error: {type(error).__name__}: {error}"
        raise
    finally:
        stats.end_reason = reason
        if sender.first_events_s is not None:
            stats.wall_s = time.monotonic() - sender.first_events_s
        stats.max_lateness_s = pacer.max_lateness_s
        # Lossless, or a finite source that has ended or failed (nothing live is
        # left to keep up with), and not stopped: slow subscribers get the whole
        # queue and `end`. Cutting the queue here would lose messages counted as sent.
        flushing = on_full == "block" or not source.live
        flush_ms = LOSSLESS_FLUSH_MS if flushing and not stop_event.is_set() else linger_ms
        try:
            subscriptions.drain()
            stats.subscribers = subscriptions.count
            end = wire.encode(wire.End(**sender.envelope(), reason=reason))
            if _send_end(socket, end, flush_ms, stop_event):
                stats.messages += 1
            else:
                log.warning("end message not delivered: a subscriber's queue stayed full")
        finally:
            socket.close(flush_ms)
            serving.close()  # returns once the queue is sent, or after flush_ms
            source.close()
        log.info(
            "stream %r ended (%s): %d events in %d messages, %.2f s",
            stream_id,
            reason,
            stats.events,
            stats.messages,
            stats.wall_s,
        )
    return stats
