"""ZeroMQ plumbing shared by the processes: endpoint checks, the publishing socket,
subscriber counting, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import threading
import time

import zmq

log = logging.getLogger("stcsnn.transport")

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


class Subscriptions:
    """Counts the subscribers of some topics from an XPUB's (verbose) subscription
    messages; ``count`` is the main topic's (producer: this stream's events;
    worker: predictions).

    A SUB socket sends its subscriptions on connect in its own (sorted) order, so
    a worker's ``labels/`` reaches a producer after its ``events/``: having seen
    the main ones, ``wait_for`` also waits, briefly, for as many subscriptions of
    the ``companions`` topics, else the first labels would go out before anyone
    listens. ``watched`` topics are counted and never waited for (the worker's
    previews: made only while someone subscribes)."""

    COMPANION_WAIT_S = 1.0  # a subscriber that never wants them delays the start this much

    def __init__(
        self,
        socket: zmq.Socket,
        main: bytes,
        companions: dict[str, bytes] | None = None,
        watched: dict[str, bytes] | None = None,
    ):
        self.socket = socket
        self.waited = ["main", *(companions or {})]
        self.topics = {"main": main, **(companions or {}), **(watched or {})}
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
            lambda: min(self.counts[name] for name in self.waited) >= wanted,
            stop_event,
            time.monotonic() + self.COMPANION_WAIT_S,
        )
        return not stop_event.is_set()


def bind_xpub(
    context: zmq.Context, endpoint: str, send_hwm: int, linger_ms: int, curve=None
) -> zmq.Socket:
    """An XPUB bound to ``endpoint`` that reports its subscriptions and, at a full
    queue, raises EAGAIN instead of dropping silently (producer and worker); a CURVE
    server if ``curve`` (``streamer.curve.Curve``) serves."""
    socket = context.socket(zmq.XPUB)
    if curve is not None:
        curve.serve(socket)
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


class PeerMonitor:
    """Which endpoints a connecting socket is connected to right now, from its ZeroMQ
    monitor (connects succeed at once whether or not anyone listens)."""

    def __init__(self, socket: zmq.Socket):
        self.socket = socket
        self.monitor = socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.peers: set[str] = set()

    def drain(self) -> list[tuple[str, str]]:
        """The changes since the last call: ``("connected" | "disconnected", endpoint)``."""
        from zmq.utils.monitor import recv_monitor_message

        changes = []
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return changes
            endpoint = event.get("endpoint", b"")
            endpoint = endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)
            if event["event"] == zmq.EVENT_CONNECTED:
                self.peers.add(endpoint)
                changes.append(("connected", endpoint))
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.peers.discard(endpoint)
                changes.append(("disconnected", endpoint))

    def close(self) -> None:
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)


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
