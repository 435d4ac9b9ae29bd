"""The dashboard's input: a SUB socket on the worker's prediction endpoint(s), drained
without ever blocking, into a ``DashboardState``.

The dashboard must never slow the worker or the producer, so it:

* never subscribes to raw ``events`` (the worker sends it a decimated
  ``preview`` image per stream instead, at most ~30 per second);
* drains *everything* pending whenever the socket signals and on every frame,
  keeping only the newest preview (``DashboardState.previews_superseded``
  counts the ones it never drew);
* keeps a small receive queue (``receive_hwm`` messages): what does not fit
  waits in the worker's send queue, and a gap in the worker's sequence numbers
  (``DashboardState.missing_messages``) shows anything lost.

The socket's monitor says whether a publisher is connected at all, so the
status line can tell "no publisher" from "publisher silent". Qt-free: the
window (streamer/dashboard.py) calls ``drain()`` from its timer and from a
socket notifier on ``fd``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import zmq

from streamer import wire
from streamer.dashboard_state import DashboardState
from streamer.transport import PeerMonitor

log = logging.getLogger("stcsnn.dashboard")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"  # the worker's default prediction endpoint
DEFAULT_RECEIVE_HWM = 64  # messages; ~2 frames' worth at 1 M events/s
SUBSCRIBED_TYPES = ("prediction", "preview", "labels", "end", "stats")
MAX_MESSAGES_PER_DRAIN = 10_000  # bounds one drain's time; the next frame takes the rest
MALFORMED_LOG_INTERVAL_S = 1.0


def check_connect_endpoint(endpoint: str) -> str:
    """``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``, else a clear ValueError."""
    transport, sep, address = endpoint.partition("://")
    if not sep or transport not in ("tcp", "ipc", "inproc") or not address:
        raise ValueError(
            f"endpoint {endpoint!r}: expected tcp://HOST:PORT (e.g. {DEFAULT_ENDPOINT}), "
            "ipc://PATH or inproc://NAME"
        )
    if transport == "tcp":
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint {endpoint!r}: expected tcp://HOST:PORT")
    return endpoint


class DashboardFeed:
    """A SUB socket connected to ``endpoints``, feeding ``state``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        state: DashboardState,
        *,
        stream: str | None = None,
        receive_hwm: int = DEFAULT_RECEIVE_HWM,
        context: zmq.Context | None = None,
        curve=None,
    ):
        if not endpoints:
            raise ValueError("no endpoint to connect to")
        self.endpoints = [check_connect_endpoint(e) for e in endpoints]
        self.state = state
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.SUB)
        if curve is not None:  # a streamer.curve.Curve with the worker's public key
            curve.connect(self.socket)
        self.socket.setsockopt(zmq.RCVHWM, receive_hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        for message_type in SUBSCRIBED_TYPES:
            # Worker stats travel on stream "" (topic "stats/"), whatever stream is shown.
            for_stream = "" if message_type == "stats" else (stream or "")
            self.socket.setsockopt(zmq.SUBSCRIBE, wire.topic(message_type, for_stream))
        self.monitor = PeerMonitor(self.socket)
        state.peers_connected = 0
        try:
            for endpoint in self.endpoints:
                self.socket.connect(endpoint)
        except zmq.ZMQError as error:
            self.close()
            raise ValueError(f"cannot connect to {endpoint}: {error}") from None
        self.messages = 0
        self.drains = 0
        self._malformed_logged_s = -MALFORMED_LOG_INTERVAL_S
        self._malformed_since_log = 0

    @property
    def fd(self) -> int:
        """The socket's file descriptor, readable (edge-triggered) when messages arrive."""
        return self.socket.getsockopt(zmq.FD)

    def drain(self, max_messages: int = MAX_MESSAGES_PER_DRAIN) -> int:
        """Receive and apply everything pending (at most ``max_messages``); never blocks."""
        self._drain_monitor()
        taken = 0
        while taken < max_messages:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            received_ns = time.time_ns()
            taken += 1
            try:
                message = wire.decode(frames)
            except wire.WireError as error:
                self.state.note_malformed(error.reason)
                self._log_malformed(error)
                continue
            self.state.apply(message, received_ns)
        self.messages += taken
        self.drains += 1
        return taken

    def _drain_monitor(self) -> None:
        if self.monitor.drain():
            self.state.peers_connected = len(self.monitor.peers)

    def _log_malformed(self, error: wire.WireError) -> None:
        """One log line per second at most: a stream of garbage must not flood the log."""
        self._malformed_since_log += 1
        now = time.monotonic()
        if now - self._malformed_logged_s >= MALFORMED_LOG_INTERVAL_S:
            log.warning(
                "dropped %d malformed message(s), last: %s; %d so far",
                self._malformed_since_log,
                error,
                sum(self.state.malformed.values()),
            )
            self._malformed_logged_s = now
            self._malformed_since_log = 0

    def close(self) -> None:
        self.monitor.close()
        self.socket.close(0)
