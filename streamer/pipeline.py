"""The streaming pipeline as a library: producer -> worker (-> dashboard) as processes on
loopback, and the worker's messages, typed, in the calling process.

    from streamer.pipeline import Pipeline
    from streamer import wire

    with Pipeline(["--replay", "samples/"], producer_args=["--speed", "max", "--lossless"],
                  worker_args=["--lossless"]) as pipeline:
        for message, received_ns in pipeline.messages(timeout_s=60):  # until all ended
            if isinstance(message, wire.Prediction):
                print(message.stream, message.t_end_us, message.top1_name)
    print(pipeline.worker_stats["streams"])

Each process is an ``stcsnn`` command (``produce``, ``worker``, ``dashboard``)
started by ``streamer/processes.py``, which learns its endpoint from the
command's status channel. The producer waits for the worker, the worker for
this process's subscriber (and the dashboard's, if any), so no message goes
out before someone listens. Leaving the ``with`` block (or ``stop()``) stops
every process cleanly and collects their final stats.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import zmq

from streamer import wire
from streamer.processes import (
    DEFAULT_START_TIMEOUT_S,
    Child,
    ChildFailed,
    Supervisor,
    freeze_startup_objects,
    start_producer,
    start_worker,
)

log = logging.getLogger("stcsnn.pipeline")

SUBSCRIBER_HWM = 100_000
# What this process reads of a worker: not its previews, which the worker then need
# not make unless a dashboard subscribes to them.
PIPELINE_TOPICS = tuple(wire.topic(t) for t in ("prediction", "labels", "end", "stats"))


def is_activity(message: wire.Message) -> bool:
    """Whether a message from a worker shows that a stream is still moving: anything
    but stats, or stats that say the worker still has input pending. (A receiver
    that gives up on a lost ``end`` after a quiet spell must not give up on a
    worker that is only busy.)"""
    if not isinstance(message, wire.Stats):
        return True
    values = message.values
    return bool(values.get("pending_messages") or values.get("pending_events"))


class Subscriber:
    """A SUB socket on a worker's (or producer's) endpoint, giving typed messages.
    Malformed messages are counted in ``stats`` and skipped."""

    def __init__(self, endpoint: str, topics: Sequence[bytes] = (b"",)):
        self.endpoint = endpoint
        self.socket = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, SUBSCRIBER_HWM)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        self.socket.connect(endpoint)
        self.stats = wire.WireStats()

    def receive(self, timeout_ms: int = 100) -> tuple[wire.Message, int] | None:
        """The next message and when it arrived (``time.time_ns()`` as the socket had it,
        before decoding), or None on timeout or a malformed message (counted)."""
        if not self.socket.poll(timeout_ms):
            return None
        received_ns = time.time_ns()
        message = wire.receive(self.socket, self.stats, log, timeout_ms=0)
        return None if message is None else (message, received_ns)

    def close(self) -> None:
        self.socket.close(0)


class Pipeline:
    """Producer, worker and optionally a dashboard, supervised together (module docstring).

    ``source_args`` name the producer's source (``["--replay", PATH]``,
    ``["--synthetic", "1M"]``...); ``producer_args``, ``worker_args`` and
    ``dashboard_args`` (None: no dashboard) go to the commands as they are.
    ``echo`` receives the processes' log lines, prefixed with their names.
    ``transport``: "tcp" (loopback, free ports) or "ipc" (Unix sockets in a temporary
    folder: same host only, and cheaper per byte)."""

    def __init__(
        self,
        source_args: Sequence[str],
        *,
        producer_args: Sequence[str] = (),
        worker_args: Sequence[str] = (),
        dashboard_args: Sequence[str] | None = None,
        echo: Callable[[str], None] | None = None,
        cwd: str | os.PathLike | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        transport: str = "tcp",
    ):
        if transport not in ("tcp", "ipc"):
            raise ValueError(f"transport must be 'tcp' or 'ipc', got {transport!r}")
        self.transport = transport
        self.ipc_folder: str | None = None
        self.source_args = list(source_args)
        self.producer_args = list(producer_args)
        self.worker_args = list(worker_args)
        self.dashboard_args = None if dashboard_args is None else list(dashboard_args)
        self.echo = echo
        self.cwd = cwd
        self.start_timeout_s = start_timeout_s
        self.supervisor = Supervisor()
        self.producer: Child | None = None
        self.worker: Child | None = None
        self.dashboard: Child | None = None
        self.subscriber: Subscriber | None = None
        self.producer_stats: dict[str, Any] | None = None
        self.worker_stats: dict[str, Any] | None = None
        self.last_activity_s = time.monotonic()  # the worker's last sign of a moving stream

    def start(self) -> Pipeline:
        """Start the processes in order; ``ChildFailed`` if one exits or never gets ready
        (then nothing is left running)."""
        started = {"echo": self.echo, "cwd": self.cwd, "timeout_s": self.start_timeout_s}
        produce_at, bind_at = [], []
        if self.transport == "ipc":
            self.ipc_folder = tempfile.mkdtemp(prefix="stcsnn-")
            produce_at = ["--endpoint", f"ipc://{self.ipc_folder}/producer"]
            bind_at = ["--bind", f"ipc://{self.ipc_folder}/worker"]
        try:
            self.producer = self.supervisor.start(
                start_producer(
                    [*self.source_args, *produce_at, "--wait-subscribers", "1"]
                    + self.producer_args,
                    **started,
                )
            )
            subscribers = 1 + (self.dashboard_args is not None)
            self.worker = self.supervisor.start(
                start_worker(
                    self.producer.endpoint,
                    [*bind_at, "--wait-subscribers", str(subscribers), *self.worker_args],
                    **started,
                )
            )
            self.subscriber = Subscriber(self.worker.endpoint, PIPELINE_TOPICS)
            # This process times the predictions' arrival: its own collector's pauses
            # would count as transport.
            freeze_startup_objects()
            if self.dashboard_args is not None:
                # Not waited for: the worker holds the stream until it has subscribed.
                argv = ["dashboard", "--connect", self.worker.endpoint, *self.dashboard_args]
                self.dashboard = self.supervisor.start(
                    Child("dashboard", argv, echo=self.echo, cwd=self.cwd)
                )
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoints(self) -> dict[str, str]:
        return {
            "producer": self.producer.endpoint if self.producer else "",
            "worker": self.worker.endpoint if self.worker else "",
        }

    def failed(self) -> Child | None:
        """A process that exited although it should not have (the producer and the
        dashboard may finish with code 0; the worker may not)."""
        return self.supervisor.failed(expected_to_finish=(self.producer, self.dashboard))

    def receive(self, timeout_ms: int = 100) -> tuple[wire.Message, int] | None:
        """The worker's next message and its arrival time (ns), or None on timeout;
        ``ChildFailed`` once a process has failed."""
        failed = self.failed()
        if failed is not None:
            raise ChildFailed(failed.failure(f"exited with code {failed.returncode}"))
        received = self.subscriber.receive(timeout_ms)
        if received is not None and is_activity(received[0]):
            self.last_activity_s = time.monotonic()
        return received

    def quiet_after_producer_s(self) -> float:
        """How long the worker has been quiet (``is_activity``) since the producer
        finished; 0 while it runs. A receiver waiting for an ``end`` that a lossless
        producer gave up on stops waiting after a while of this."""
        if self.producer is None or self.producer.returncode != 0:
            return 0.0
        return time.monotonic() - self.last_activity_s

    def messages(self, timeout_s: float | None = None) -> Iterator[tuple[wire.Message, int]]:
        """The worker's messages with their arrival times (ns) until every stream seen
        has ended (or ``timeout_s`` passes: ``TimeoutError``)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        streams: dict[str, bool] = {}
        while deadline is None or time.monotonic() < deadline:
            received = self.receive()
            if received is None:
                continue
            yield received
            message = received[0]
            if not isinstance(message, wire.Stats):
                streams[message.stream] = isinstance(message, wire.End)
                if all(streams.values()):
                    return
        raise TimeoutError(f"the streams had not all ended after {timeout_s:g} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every process cleanly (SIGINT, then harder) and keep their final stats."""
        if self.subscriber is not None:
            self.subscriber.close()
            self.subscriber = None
        self.supervisor.stop_all(timeout_s)
        if self.producer is not None:
            self.producer_stats = self.producer.result()
        if self.worker is not None:
            self.worker_stats = self.worker.result()
        if self.ipc_folder is not None:
            shutil.rmtree(self.ipc_folder, ignore_errors=True)
            self.ipc_folder = None
