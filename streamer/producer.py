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
(up to ``linger_ms``; with ``on_full="block"`` up to LOSSLESS_FLUSH_MS, and the
socket lingers as long, so a slow subscriber still gets the queued tail).

One session id (random) per run, ``seq`` +1 per message of any type, an
``end`` message when the source finishes or the run is stopped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import numpy as np
import zmq

from streamer import wire
from streamer.pacing import Pacer
from streamer.sources import Labels, Source, SourceEnd

log = logging.getLogger("stcsnn.producer")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_SEND_HWM = 1000  # messages per subscriber; 1 s of 1 ms chunks
DEFAULT_LINGER_MS = 500  # time to flush queued messages (the end message) at close
# A lossless replay's subscribers may still be working through a full queue
# when the source ends: wait this long for them to take the rest and `end`.
LOSSLESS_FLUSH_MS = 60_000
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class EndpointError(ValueError):
    """An endpoint that would expose the stream beyond this machine without consent."""


def check_endpoint(endpoint: str, bind_any: bool = False) -> str:
    """Return ``endpoint`` if it binds to loopback (or ipc/inproc), or if ``bind_any``.

    Binding to another interface publishes the event stream to the network,
    so it takes an explicit option."""
    transport, sep, address = endpoint.partition("://")
    if not sep:
        raise EndpointError(f"endpoint {endpoint!r} has no transport (e.g. tcp://127.0.0.1:5555)")
    if transport in ("ipc", "inproc"):
        return endpoint
    if transport != "tcp":
        raise EndpointError(f"endpoint {endpoint!r}: transport {transport!r} is not supported")
    host = address.rpartition(":")[0].strip("[]")
    if not host:
        raise EndpointError(f"endpoint {endpoint!r} has no host (e.g. tcp://127.0.0.1:5555)")
    if bind_any or host in LOOPBACK_NAMES:
        return endpoint
    try:
        if ipaddress.ip_address(host).is_loopback:
            return endpoint
    except ValueError:
        pass
    raise EndpointError(
        f"endpoint {endpoint!r} binds beyond loopback and would publish the stream "
        "to the network: pass bind_any=True (--bind-any) to allow it"
    )


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
    max_lateness_s: float = 0.0  # pacing: how far behind schedule the producer fell
    blocked_s: float = 0.0  # on_full="block": time waiting for slow subscribers
    subscribers: int = 0  # subscriptions covering this stream's events when it ended

    def as_dict(self) -> dict:
        return asdict(self)


class Subscriptions:
    """Counts the subscribers of some topics from an XPUB's (verbose) subscription
    messages; ``count`` is the main topic's (producer: this stream's events;
    worker: predictions).

    A SUB socket sends its subscriptions on connect in its own (sorted) order, so
    a worker's ``labels/`` reaches a producer after its ``events/``: having seen
    the main ones, ``wait_for`` also waits, briefly, for as many subscriptions of
    the ``companions`` topics, else the first labels would go out before anyone
    listens."""

    COMPANION_WAIT_S = 1.0  # a subscriber that never wants them delays the start this much

    def __init__(self, socket: zmq.Socket, main: bytes, companions: dict[str, bytes] | None = None):
        self.socket = socket
        self.topics = {"main": main, **(companions or {})}
        self.counts = dict.fromkeys(self.topics, 0)

    @property
    def count(self) -> int:
        """Subscribers of the main topic."""
        return self.counts["main"]

    def drain(self) -> None:
        while self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            message = self.socket.recv()
            if not message or message[0] not in (0, 1):
                continue
            for name, topic in self.topics.items():
                if topic.startswith(message[1:]):
                    self.counts[name] += 1 if message[0] == 1 else -1

    def _poll_until(self, done, stop_event: threading.Event, deadline: float | None) -> bool:
        while not done():
            if stop_event.is_set() or (deadline is not None and time.monotonic() > deadline):
                return False
            if self.socket.poll(50, zmq.POLLIN):
                self.drain()
        return True

    def wait_for(self, wanted: int, stop_event: threading.Event, timeout_s: float | None) -> bool:
        """Until ``wanted`` subscribers of the main topic (TimeoutError after
        ``timeout_s``), then up to COMPANION_WAIT_S for as many of each companion;
        False if ``stop_event`` was set meanwhile."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if not self._poll_until(lambda: self.count >= wanted, stop_event, deadline):
            if stop_event.is_set():
                return False
            raise TimeoutError(f"only {self.count} of {wanted} subscriber(s) after {timeout_s:g} s")
        self._poll_until(
            lambda: min(self.counts.values()) >= wanted,
            stop_event,
            time.monotonic() + self.COMPANION_WAIT_S,
        )
        return not stop_event.is_set()


def bind_xpub(context: zmq.Context, endpoint: str, send_hwm: int, linger_ms: int) -> zmq.Socket:
    """An XPUB bound to ``endpoint`` that reports its subscriptions and, at a full
    queue, raises EAGAIN instead of dropping silently (producer and worker)."""
    socket = context.socket(zmq.XPUB)
    socket.setsockopt(zmq.SNDHWM, send_hwm)
    socket.setsockopt(zmq.LINGER, linger_ms)
    socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription, to count subscribers
    socket.setsockopt(zmq.XPUB_NODROP, 1)  # full queue -> EAGAIN, handled per on_full
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as error:
        socket.close(0)
        raise EndpointError(f"cannot bind {endpoint}: {error}") from None
    return socket


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
) -> ProducerStats:
    """Publish ``source`` on ``endpoint`` until it ends or ``stop_event`` is set.

    ``speed`` paces non-live sources (1.0 real time, ``math.inf`` as fast as
    possible); live sources are sent as they arrive. ``wait_subscribers`` > 0
    holds the first message until that many subscribers of this stream's
    events are connected; otherwise ``settle_s`` gives subscribers that are
    already running time to (re)connect. ``on_bound(stats)`` is called once
    the socket is bound (``stats.endpoint`` holds the actual address).
    Always sends ``end`` and closes the socket, also on error."""
    check_endpoint(endpoint, bind_any)
    if "/" in stream_id or not stream_id:
        raise ValueError(f"stream id {stream_id!r} must be non-empty and contain no '/'")
    if on_full not in ("drop", "block"):
        raise ValueError(f"on_full must be 'drop' or 'block', got {on_full!r}")
    stop_event = stop_event or threading.Event()
    context = context or zmq.Context.instance()
    socket = bind_xpub(context, endpoint, send_hwm, linger_ms)
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
    seq = 0
    started = None

    def send(frames: list, events: int = 0) -> bool:
        """Send one message; False if it was dropped, or not sent because of a stop."""
        nonlocal seq
        seq += 1  # also for a dropped message: receivers see the gap
        blocked_since = None
        try:
            while True:
                try:
                    socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    stats.messages += 1
                    return True
                except zmq.Again:
                    if on_full == "drop":
                        stats.dropped_messages += 1
                        stats.dropped_events += events
                        return False
                    # XPUB signals no POLLOUT readiness, so retry on a short timer.
                    blocked_since = blocked_since or time.monotonic()
                    if stop_event.wait(0.0005):
                        return False
        finally:
            if blocked_since is not None:
                stats.blocked_s += time.monotonic() - blocked_since

    if on_bound is not None:
        on_bound(stats)
    reason = "stopped"
    try:
        if wait_subscribers > 0:
            log.info("waiting for %d subscriber(s) on %s", wait_subscribers, stats.endpoint)
            subscriptions.wait_for(wait_subscribers, stop_event, wait_timeout_s)
        elif settle_s > 0:
            stop_event.wait(settle_s)
        for item in source.items(stop_event):
            if stop_event.is_set():
                break
            subscriptions.drain()
            if isinstance(item, np.ndarray):
                if len(item) == 0:
                    continue
                first_us, last_us = int(item["timestamp"][0]), int(item["timestamp"][-1])
                if not pacer.wait(first_us, last_us, stop_event):
                    break
                frames = wire.encode_events(stream_id, stats.session, seq, item, source.sensor)
                if send(frames, len(item)):
                    stats.event_messages += 1
                    stats.events += len(item)
                if started is None:
                    started = time.monotonic()
                    stats.first_event_us = first_us
                stats.last_event_us = last_us
            elif isinstance(item, Labels):
                segments = [segment.to_wire() for segment in item.segments]
                if send(wire.encode_labels(stream_id, stats.session, seq, segments)):
                    stats.label_messages += 1
            elif isinstance(item, SourceEnd):
                reason = item.reason
                break
            else:
                raise TypeError(f"source yielded {type(item).__name__}, not a SourceItem")
        else:
            reason = "end of source"
        if stop_event.is_set():
            reason = "stopped"
    except Exception as error:
        reason = f"producer error: {type(error).__name__}: {error}"
        raise
    finally:
        stats.end_reason = reason
        stats.wall_s = time.monotonic() - started if started is not None else 0.0
        stats.max_lateness_s = pacer.max_lateness_s
        # Lossless and not stopped: slow subscribers get the whole queue and `end`.
        flush_ms = (
            LOSSLESS_FLUSH_MS if on_full == "block" and not stop_event.is_set() else linger_ms
        )
        try:
            subscriptions.drain()
            stats.subscribers = subscriptions.count
            end = wire.encode_end(stream_id, stats.session, seq, reason)
            if _send_end(socket, end, flush_ms, stop_event):
                stats.messages += 1
            else:
                log.warning("end message not delivered: a subscriber's queue stayed full")
        finally:
            socket.close(flush_ms)
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


@contextlib.contextmanager
def stop_on_signals(stop_event: threading.Event, signals=(signal.SIGINT, signal.SIGTERM)):
    """Within the block, SIGINT/SIGTERM set ``stop_event`` instead of raising.

    The producer then leaves its loop, sends ``end`` and closes its socket.
    A second signal of the same kind restores the default behaviour."""
    previous = {}

    def handler(signum, frame):
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop_event.set()
        signal.signal(signum, previous.get(signum, signal.SIG_DFL))

    for signum in signals:
        previous[signum] = signal.signal(signum, handler)
    try:
        yield stop_event
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
