"""The inference worker: ZeroMQ around ``streamer/classifier.py``.

One process, two threads:

* the **receiving thread** owns the SUB socket (connected to one or more
  producers), decodes every message (``wire.receive``: malformed ones are
  counted and dropped), tracks sequence gaps and restarts, and puts the
  messages of the streams this worker serves into a bounded ``PendingQueue``;
* the **processing thread** takes *everything* pending at once and hands it
  to the socket-free ``Classifier``, which merges the pending chunks of each
  stream into one push through that stream's ``StreamPipeline`` (sensor
  adapter, streaming compressor, one step of the model runner per hop with the
  stream's own network state, readout smoothing; streamer/stream_pipeline.py)
  and publishes one ``prediction`` per step on the worker's XPUB socket,
  together with the forwarded ``labels`` and ``end`` messages, a ``preview``
  image per stream (<= ``preview_hz``); the worker adds a ``stats`` message
  (every ``stats_interval_s`` and after every ``end``).

The model runner comes from whoever starts the worker (``run_worker``'s
``model``; stcsnn/commands/worker.py loads a checkpoint into one), so this
module imports no model code.

Overload (docs/streaming.md states it for users):

* ``overload="drop"`` (live streams, the default): the pending queue holds at
  most ``max_pending_events`` events and ``max_pending_messages`` messages;
  beyond that the *oldest* pending event messages are dropped (counted per
  stream: ``dropped_events``, ``dropped_messages``) so that what is processed
  stays fresh. Of the steps one merged push emits, at most
  ``max_steps_per_push`` run through the network (the latest ones); the
  others are skipped (``steps_skipped``): the compressor has advanced over
  them, so the synaptic current still decays exactly, but the network state
  and the smoothed prediction do not see them.
* ``overload="block"`` (evaluation replays): nothing is dropped or skipped;
  when the queue is full the receiving thread stops reading, ZeroMQ's queues
  fill and a producer in ``--lossless`` mode waits (otherwise it drops and
  counts, and the worker sees the sequence gap).

Either way memory stays bounded: the queue by its limits, the processing
thread by one queue's worth.

Per-stream state is reset (``resets`` in the stream's stats) on a new producer
session (a producer restart), when event time jumps by more than
``reset_after_us`` forwards or backwards (a long silence, a camera whose clock
restarted), and dropped at ``end``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zmq

from core.events import polarities_are_binary
from streamer import wire
from streamer.classifier import (
    DEFAULT_IDLE_EVICT_S,
    DEFAULT_MAX_STEPS_PER_PUSH,
    DEFAULT_MAX_STREAMS,
    DEFAULT_RESET_AFTER_US,
    Classifier,
    ClassifierOptions,
)
from streamer.curve import Curve, ServingContext, check_exposure
from streamer.stream_pipeline import Outbox, StreamModel
from streamer.transport import PeerMonitor, Subscriptions, bind_xpub, check_endpoint
from streamer.worker_queue import Pending, PendingQueue

log = logging.getLogger("stcsnn.worker")

DEFAULT_BIND = "tcp://127.0.0.1:5556"
DEFAULT_MAX_PENDING_EVENTS = 1 << 21  # 32 MiB of events
DEFAULT_MAX_PENDING_MESSAGES = 20_000
PREDICTION_SEND_HWM = 100_000
MAX_STREAMS_COUNTED = 1024  # per-stream input counters; later streams count together
OTHER_STREAMS = "(other streams)"


@dataclass
class WorkerOptions:
    """Everything ``run_worker`` needs besides the model; the CLI fills it."""

    connect: list[str]
    bind: str = DEFAULT_BIND
    bind_any: bool = False
    insecure: bool = False  # bind_any without CURVE
    curve: Curve | None = None  # serving and/or connecting with CURVE (streamer/curve.py)
    streams: tuple[str, ...] | None = None  # None: every stream
    shard: tuple[int, int] | None = None  # (i, n): the streams with shard_of(id, n) == i
    reset_after_us: int = DEFAULT_RESET_AFTER_US
    overload: str = "drop"  # or "block"
    max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS
    max_pending_messages: int = DEFAULT_MAX_PENDING_MESSAGES
    max_steps_per_push: int = DEFAULT_MAX_STEPS_PER_PUSH
    max_streams: int = DEFAULT_MAX_STREAMS  # open at once; more are refused
    idle_evict_s: float = DEFAULT_IDLE_EVICT_S  # a stream silent this long is closed
    allow_model_mismatch: bool = False  # serve streams whose sensor the model does not fit
    preview_hz: float = 30.0  # 0: no previews
    stats_interval_s: float = 1.0
    wait_subscribers: int = 0  # hold the input until N subscribers of predictions are connected
    wait_timeout_s: float | None = None
    exit_on_end: bool = False  # stop once every stream seen has ended
    receive_hwm: int = 1000

    def __post_init__(self) -> None:
        if self.overload not in ("drop", "block"):
            raise ValueError(f"overload must be 'drop' or 'block', got {self.overload!r}")
        if not self.connect:
            raise ValueError("no producer endpoint to connect to")
        if self.shard is not None:
            index, count = self.shard
            if not 0 <= index < count:
                raise ValueError(f"shard {index}/{count}: need 0 <= i < n")
        if not self.idle_evict_s > 0:
            raise ValueError(f"idle_evict_s must be > 0, got {self.idle_evict_s}")
        for name in (
            "max_pending_events",
            "max_pending_messages",
            "max_steps_per_push",
            "max_streams",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.streams is not None:
            for stream in self.streams:
                if not stream or "/" in stream:
                    raise ValueError(f"stream id {stream!r} must be non-empty without '/'")

    def classifier_options(self) -> ClassifierOptions:
        """Drop policy: at most ``max_steps_per_push`` steps per push run; block: all."""
        return ClassifierOptions(
            max_steps_per_push=self.max_steps_per_push if self.overload == "drop" else None,
            reset_after_us=self.reset_after_us,
            preview_hz=self.preview_hz,
            max_streams=self.max_streams,
            idle_evict_s=self.idle_evict_s,
            allow_model_mismatch=self.allow_model_mismatch,
        )


def shard_of(stream: str, count: int) -> int:
    """Which of ``count`` workers serves ``stream`` under ``--shard i/n``.

    A 64-bit BLAKE2b of the id, the same on every machine and run. (crc32 is
    linear: ``cam0``..``cam3`` all land in the same one of 2 shards.)"""
    digest = hashlib.blake2b(stream.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def _proc_status_mb(field_name: str) -> float:
    """A memory field of /proc/self/status (Linux) in MiB, NaN elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB. (``getrusage``'s ``ru_maxrss``
    would carry over the parent's peak across fork and exec: wrong for a child.)"""
    return _proc_status_mb("VmHWM")


# --- the receiving thread --------------------------------------------------------------


class Receiver(threading.Thread):
    """Owns the SUB socket: receive, decode, count, filter by stream, enqueue."""

    def __init__(self, options: WorkerOptions, queue: PendingQueue, context: zmq.Context):
        super().__init__(name="stcsnn-worker-receive", daemon=True)
        self.options = options
        self.queue = queue
        self.context = context
        self.stop_event = threading.Event()
        self.connected = threading.Event()
        self.lock = threading.Lock()  # guards the counters below against snapshot reads
        self.wire_stats = wire.WireStats()
        self.tracker = wire.SequenceTracker(self.wire_stats)
        self.events_received: Counter = Counter()  # by stream, all decoded events messages
        self.ignored_messages = 0  # other shards' streams, and our own message types
        self.error: BaseException | None = None

    def _topics(self) -> list[bytes]:
        types = ("events", "labels", "end")
        if self.options.streams is None:
            return [wire.topic(t) for t in types]
        return [wire.topic(t, s) for s in self.options.streams for t in types]

    def _wanted(self, message: wire.Message) -> bool:
        if not isinstance(message, (wire.Events, wire.Labels, wire.End)):
            return False
        if self.options.streams is not None and message.stream not in self.options.streams:
            return False
        shard = self.options.shard
        return shard is None or shard_of(message.stream, shard[1]) == shard[0]

    def run(self) -> None:
        socket = self.context.socket(zmq.SUB)
        peers = None
        try:
            if self.options.curve is not None:
                self.options.curve.connect(socket)
            socket.setsockopt(zmq.RCVHWM, self.options.receive_hwm)
            socket.setsockopt(zmq.LINGER, 0)
            for topic in self._topics():
                socket.setsockopt(zmq.SUBSCRIBE, topic)
            peers = PeerMonitor(socket)
            for endpoint in self.options.connect:
                socket.connect(endpoint)
            self.connected.set()
            taken = 0
            while not self.stop_event.is_set():
                if taken % 256 == 0:  # and whenever idle, below
                    _log_peer_changes(peers.drain())
                if not socket.poll(50):
                    _log_peer_changes(peers.drain())
                    continue
                taken += 1
                with self.lock:
                    message = wire.receive(socket, self.wire_stats, log, timeout_ms=0)
                    if message is None:
                        continue
                    received_ns = time.time_ns()
                    if not self._wanted(message):
                        self.ignored_messages += 1
                        continue
                    self.tracker.observe(message)
                    if isinstance(message, wire.Events):
                        stream = message.stream
                        if stream not in self.events_received and (
                            len(self.events_received) >= MAX_STREAMS_COUNTED
                        ):
                            stream = OTHER_STREAMS
                        self.events_received[stream] += len(message.events)
                polarity_ok = None
                if isinstance(message, wire.Events):
                    polarity_ok = polarities_are_binary(message.events)
                self.queue.put(Pending(message, received_ns, polarity_ok), self.stop_event)
        except BaseException as error:  # reported by the processing thread
            self.error = error
            raise
        finally:
            if peers is not None:
                peers.close()
            socket.close(0)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            s = self.wire_stats
            return {
                "received": dict(s.received),
                "malformed": dict(s.malformed),
                "gaps": _largest(s.gaps),
                "missing_messages": _largest(s.missing_messages),
                "restarts": _largest(s.restarts),
                "events_received": _largest(self.events_received),
                "ignored_messages": self.ignored_messages,
            }


def _log_peer_changes(changes: list[tuple[str, str]]) -> None:
    for change, endpoint in changes:
        if change == "connected":
            log.info("producer at %s connected", endpoint)
        else:
            log.info("producer at %s disconnected (it is reconnected if it comes back)", endpoint)


def _largest(counter: Counter, count: int = 64) -> dict[str, int]:
    """The ``count`` largest entries of a per-stream counter, the rest summed under
    OTHER_STREAMS: a stats message stays small however many streams came and went."""
    if len(counter) <= count:
        return dict(counter)
    kept = dict(counter.most_common(count))
    kept[OTHER_STREAMS] = kept.get(OTHER_STREAMS, 0) + sum(counter.values()) - sum(kept.values())
    return kept


# --- wiring ------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    """What ``run_worker`` returns: the final stats and the bound endpoint."""

    endpoint: str
    stats: dict[str, Any] = field(default_factory=dict)


class Publisher:
    """The XPUB for predictions: loopback unless ``bind_any``; sees its subscribers.
    ``send`` never blocks: a full queue drops the message (the outbox counts it)."""

    def __init__(self, context: zmq.Context, options: WorkerOptions):
        check_endpoint(options.bind, options.bind_any)
        check_exposure(options.bind_any, options.curve, options.insecure)
        self.socket = bind_xpub(
            context, options.bind, PREDICTION_SEND_HWM, linger_ms=1000, curve=options.curve
        )
        self.endpoint = self.socket.getsockopt(zmq.LAST_ENDPOINT).decode()

    def send(self, message: wire.Message) -> bool:
        try:
            self.socket.send_multipart(wire.encode(message), flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False

    def close(self) -> None:
        self.socket.close(1000)


def worker_stats(
    model: StreamModel,
    options: WorkerOptions,
    classifier: Classifier,
    outbox: Outbox,
    receiver: Receiver,
    queue: PendingQueue,
    started_s: float,
) -> dict[str, Any]:
    """The ``stats`` message's fields (docs/streaming.md, "Stats messages")."""
    pending_events, pending_messages = queue.counts()
    return {
        "worker_session": outbox.session,
        "model": model.name,
        "device": model.runner.description,
        "hop_us": model.hop_us,
        "ema_tau_us": model.ema_tau_us,
        "class_names": list(model.class_names),
        "overload": options.overload,
        "uptime_s": round(time.monotonic() - started_s, 3),
        **receiver.snapshot(),
        "dropped_events": sum(queue.dropped_events.values()),
        "dropped_messages": sum(queue.dropped_messages.values()),
        "dropped_events_by_stream": dict(queue.dropped_events),
        "predictions_dropped": outbox.dropped,
        "pending_events": pending_events,
        "pending_messages": pending_messages,
        "peak_pending_events": queue.peak_events,
        "peak_pending_messages": queue.peak_messages,
        "max_pending_events": queue.max_events,
        "blocked_s": round(queue.blocked_s, 3),
        "rss_mb": round(rss_mb(), 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **classifier.stats(),
    }


def run_worker(
    model: StreamModel,
    options: WorkerOptions,
    *,
    stop_event: threading.Event | None = None,
    context: zmq.Context | None = None,
    on_bound=None,
) -> WorkerResult:
    """Serve predictions until ``stop_event`` is set (or, with ``exit_on_end``, every
    stream seen has ended). ``on_bound(endpoint, session)`` is called once the
    prediction socket is bound; the input is connected only after
    ``options.wait_subscribers`` subscribers of predictions have arrived."""
    stop_event = stop_event or threading.Event()
    # Closing it waits for the last messages (the final stats, a forwarded end).
    serving = ServingContext(context, options.curve)
    context = serving.context
    started_s = time.monotonic()
    try:
        publisher = Publisher(context, options)
    except BaseException:
        serving.close()
        raise
    outbox = Outbox(publisher.send, session=uuid.uuid4().hex[:12])
    classifier = Classifier(model, options.classifier_options(), outbox)
    queue = PendingQueue(options.max_pending_events, options.max_pending_messages, options.overload)
    receiver = Receiver(options, queue, context)
    result = WorkerResult(publisher.endpoint)
    subscribers = Subscriptions(
        publisher.socket, wire.topic("prediction"), watched={"preview": wire.topic("preview")}
    )

    def publish_stats(final: bool = False) -> dict[str, Any]:
        stats = worker_stats(model, options, classifier, outbox, receiver, queue, started_s)
        stats["final"] = final
        outbox.publish(
            wire.Stats(stream="", session=outbox.session, seq=outbox.next_seq(""), values=stats)
        )
        return stats

    try:
        if on_bound is not None:
            on_bound(publisher.endpoint, outbox.session)
        subscribers.wait_for(options.wait_subscribers, stop_event, options.wait_timeout_s)
        outbox.previews_wanted = subscribers.counts["preview"] > 0
        receiver.start()
        receiver.connected.wait(5)
        log.info("waiting for a producer at %s", ", ".join(options.connect))
        next_stats_s = time.monotonic() + options.stats_interval_s
        while not stop_event.is_set():
            items = queue.take_all(0.05)
            if items:
                classifier.process(items)
                if any(isinstance(item.message, wire.End) for item in items):
                    publish_stats()
            subscribers.drain()
            outbox.previews_wanted = subscribers.counts["preview"] > 0
            if time.monotonic() >= next_stats_s:
                classifier.evict_idle()
                publish_stats()
                next_stats_s = time.monotonic() + options.stats_interval_s
            if receiver.error is not None:
                raise RuntimeError(f"receiving thread failed: {receiver.error}")
            if options.exit_on_end and classifier.all_ended() and not queue.counts()[1]:
                break
    finally:
        receiver.stop_event.set()
        if receiver.is_alive():
            receiver.join(2)
        try:
            result.stats = publish_stats(final=True)
        finally:
            classifier.close()
            publisher.close()
            serving.close(terminate=not receiver.is_alive())  # it closes its own socket
    return result
