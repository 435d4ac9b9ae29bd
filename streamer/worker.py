"""ZeroMQ events -> sensor adapter -> streaming compressor -> network step -> predictions.

One process, two threads:

* the **receiving thread** owns the SUB socket (connected to one or more
  producers), decodes every message (``wire.receive``: malformed ones are
  counted and dropped), tracks sequence gaps and restarts, and puts the
  messages of the streams this worker serves into a bounded ``PendingQueue``;
* the **processing thread** takes *everything* pending at once, merges the
  pending chunks of each stream into one push through the stream's
  ``SensorAdapter`` and ``StreamingCompressor`` (hop = the checkpoint's step,
  overridable), runs ``model.step`` once per emitted step with the stream's
  own network state (batch 1), smooths the readout with an exponential moving
  average and publishes one ``prediction`` per step on its own XPUB socket,
  together with the forwarded ``labels`` and ``end`` messages, a
  ``preview`` image per stream (<= ``preview_hz``) and a ``stats`` message
  (every ``stats_interval_s`` and after every ``end``).

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

import dataclasses
import hashlib
import logging
import math
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from core.adapt import SensorAdapter
from core.compress import CompressedSteps, CompressionConfig, StreamingCompressor
from core.events import EventError, SensorSize, concat_events
from streamer import wire
from streamer.transport import Subscriptions, bind_xpub, check_endpoint

if TYPE_CHECKING:
    from models.networks import ModelConfig
    from models.runner import StepRunner

log = logging.getLogger("stcsnn.worker")

DEFAULT_BIND = "tcp://127.0.0.1:5556"
DEFAULT_MAX_PENDING_EVENTS = 1 << 21  # 32 MiB of events
DEFAULT_MAX_PENDING_MESSAGES = 20_000
DEFAULT_MAX_STEPS_PER_PUSH = 4
DEFAULT_RESET_AFTER_US = 1_000_000
PREDICTION_SEND_HWM = 100_000
PREVIEW_MAX_SIDE = 128
PREVIEW_MAX_EVENTS = 50_000  # per push: more are sampled (events_per_count says by how much)


@dataclass
class WorkerOptions:
    """Everything ``run_worker`` needs besides the model; the CLI fills it."""

    connect: list[str]
    bind: str = DEFAULT_BIND
    bind_any: bool = False
    streams: tuple[str, ...] | None = None  # None: every stream
    shard: tuple[int, int] | None = None  # (i, n): the streams with shard_of(id, n) == i
    hop_us: int | None = None  # None: the checkpoint's step
    ema_tau_us: float | None = None  # None: the checkpoint's stream_ema_tau_us
    reset_after_us: int = DEFAULT_RESET_AFTER_US
    overload: str = "drop"  # or "block"
    max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS
    max_pending_messages: int = DEFAULT_MAX_PENDING_MESSAGES
    max_steps_per_push: int = DEFAULT_MAX_STEPS_PER_PUSH
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
        for name in ("max_pending_events", "max_pending_messages", "max_steps_per_push"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hop_us is not None and self.hop_us < 1:
            raise ValueError(f"hop_us must be >= 1, got {self.hop_us}")
        if self.ema_tau_us is not None and not self.ema_tau_us > 0:
            raise ValueError(f"ema_tau_us must be > 0, got {self.ema_tau_us}")
        if self.streams is not None:
            for stream in self.streams:
                if not stream or "/" in stream:
                    raise ValueError(f"stream id {stream!r} must be non-empty without '/'")


def shard_of(stream: str, count: int) -> int:
    """Which of ``count`` workers serves ``stream`` under ``--shard i/n``.

    A 64-bit BLAKE2b of the id, the same on every machine and run. (crc32 is
    linear: ``cam0``..``cam3`` all land in the same one of 2 shards.)"""
    digest = hashlib.blake2b(stream.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def stream_compression(config: CompressionConfig, hop_us: int | None) -> CompressionConfig:
    """The checkpoint's compression with the hop (step length) set to ``hop_us``."""
    if hop_us is None:
        return config
    return dataclasses.replace(config, window_us=int(hop_us) * config.steps)


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


# --- the bounded queue between the two threads ---------------------------------------


@dataclass
class Pending:
    """One received message and when it was taken off the socket (``time.time_ns``)."""

    message: wire.Message
    received_ns: int

    @property
    def events(self) -> int:
        return len(self.message.events) if self.message.events is not None else 0


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
        if message.type not in ("events", "labels", "end"):
            return False
        if self.options.streams is not None and message.stream not in self.options.streams:
            return False
        shard = self.options.shard
        return shard is None or shard_of(message.stream, shard[1]) == shard[0]

    def run(self) -> None:
        socket = self.context.socket(zmq.SUB)
        try:
            socket.setsockopt(zmq.RCVHWM, self.options.receive_hwm)
            socket.setsockopt(zmq.LINGER, 0)
            for topic in self._topics():
                socket.setsockopt(zmq.SUBSCRIBE, topic)
            for endpoint in self.options.connect:
                socket.connect(endpoint)
            self.connected.set()
            while not self.stop_event.is_set():
                if not socket.poll(50):
                    continue
                with self.lock:
                    message = wire.receive(socket, self.wire_stats, log, timeout_ms=0)
                    if message is None:
                        continue
                    received_ns = time.time_ns()
                    if not self._wanted(message):
                        self.ignored_messages += 1
                        continue
                    self.tracker.observe(message)
                    if message.events is not None:
                        self.events_received[message.stream] += len(message.events)
                self.queue.put(Pending(message, received_ns), self.stop_event)
        except BaseException as error:  # reported by the processing thread
            self.error = error
            raise
        finally:
            socket.close(0)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            s = self.wire_stats
            return {
                "received": dict(s.received),
                "malformed": dict(s.malformed),
                "gaps": dict(s.gaps),
                "missing_messages": dict(s.missing_messages),
                "restarts": dict(s.restarts),
                "events_received": dict(self.events_received),
                "ignored_messages": self.ignored_messages,
            }


# --- per-stream state -------------------------------------------------------------------


@dataclass
class StreamCounters:
    events: int = 0  # events pushed into the compressor (after merging, before adapting)
    events_outside_input: int = 0  # dropped by the sensor adapter (cropped edges)
    events_rejected: int = 0  # messages with invalid events (polarity not 0/1), dropped whole
    events_late: int = 0  # below an earlier timestamp of the stream: dropped by the compressor
    steps: int = 0  # steps the compressor emitted
    predictions: int = 0
    steps_skipped: int = 0  # overload: emitted but not run through the network
    resets: int = 0
    sessions: int = 0
    ended: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class StreamState:
    """Everything the worker keeps for one stream of one producer session."""

    def __init__(self, stream: str, session: str, sensor: SensorSize, worker: Worker):
        self.stream = stream
        self.session = session
        self.worker = worker
        self.adapter = SensorAdapter(sensor, worker.compression.input_sensor)
        self.compressor: StreamingCompressor | None = None  # made at the first event
        self.slot = worker.runner.new_slot()
        self.ema_sum = np.zeros(worker.config.num_classes, dtype=np.float64)
        self.ema_weight = 0.0
        self.last_event_us: int | None = None
        self.last_sent_ns = 0  # sent_ns of the last events message pushed
        self.last_received_ns = 0
        self.preview = np.zeros(worker.preview_shape, dtype=np.int64) if worker.preview_on else None
        self.preview_start_us: int | None = None
        self.preview_events = 0
        self.preview_stride = 1
        self.preview_sent_s = 0.0
        self.compress_s_total = 0.0

    def reset(self) -> None:
        """Forget the stream's past: new compressor grid, zero network state and EMA."""
        self.compressor = None
        self.worker.runner.reset(self.slot)
        self.ema_sum[:] = 0.0
        self.ema_weight = 0.0
        self.last_event_us = None

    def release(self) -> None:
        self.worker.runner.release(self.slot)


# --- the worker -------------------------------------------------------------------------


class Worker:
    """The processing side; ``run_worker`` wires it to sockets and threads."""

    def __init__(
        self,
        config: ModelConfig,
        runner: StepRunner,
        options: WorkerOptions,
        publish_socket: zmq.Socket,
        *,
        model_name: str,
    ):
        self.config = config
        self.runner = runner
        self.options = options
        self.socket = publish_socket
        self.model_name = model_name
        self.compression = stream_compression(config.compression, options.hop_us)
        self.hop_us = self.compression.step_us
        ema_tau_us = options.ema_tau_us or config.stream_ema_tau_us
        self.ema_tau_us = float(ema_tau_us)
        self.ema_decay = math.exp(-self.hop_us / self.ema_tau_us)
        self.class_names = list(config.class_names)
        self.session = uuid.uuid4().hex[:12]
        self.streams: dict[str, StreamState] = {}
        self.counters: dict[str, StreamCounters] = {}
        self.seen: set[str] = set()
        self.ended: set[str] = set()
        self.seq: Counter = Counter()  # per stream id on our socket ("" for stats)
        self.errors = 0
        self.predictions_dropped = 0
        self.last_publish_ms = 0.0
        self.started_s = time.monotonic()
        self.preview_on = options.preview_hz > 0
        height, width = self.compression.input_height, self.compression.input_width
        self.preview_factor = max(1, math.ceil(max(height, width) / PREVIEW_MAX_SIDE))
        self.preview_shape = (
            2,
            -(-height // self.preview_factor),
            -(-width // self.preview_factor),
        )

    # -- publishing -------------------------------------------------------------------

    def _send(self, frames: list, stream: str) -> None:
        """Send without blocking; a full queue drops (and counts) the message."""
        self.seq[stream] += 1
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.predictions_dropped += 1

    def _next_seq(self, stream: str) -> int:
        return self.seq[stream]

    def publish_stats(self, receiver: Receiver, queue: PendingQueue, final: bool = False) -> dict:
        stats = self.stats(receiver, queue)
        stats["final"] = final
        self._send(wire.encode_stats("", self.session, self._next_seq(""), stats), "")
        return stats

    def stats(self, receiver: Receiver, queue: PendingQueue) -> dict[str, Any]:
        pending_events, pending_messages = queue.counts()
        steps_skipped = sum(c.steps_skipped for c in self.counters.values())
        return {
            "worker_session": self.session,
            "model": self.model_name,
            "device": self.runner.description,
            "hop_us": self.hop_us,
            "ema_tau_us": self.ema_tau_us,
            "class_names": self.class_names,
            "overload": self.options.overload,
            "uptime_s": round(time.monotonic() - self.started_s, 3),
            **receiver.snapshot(),
            "dropped_events": sum(queue.dropped_events.values()),
            "dropped_messages": sum(queue.dropped_messages.values()),
            "dropped_events_by_stream": dict(queue.dropped_events),
            "steps_skipped": steps_skipped,
            "predictions_dropped": self.predictions_dropped,
            "pending_events": pending_events,
            "pending_messages": pending_messages,
            "peak_pending_events": queue.peak_events,
            "peak_pending_messages": queue.peak_messages,
            "max_pending_events": queue.max_events,
            "blocked_s": round(queue.blocked_s, 3),
            "errors": self.errors,
            "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "streams": {name: c.as_dict() for name, c in self.counters.items()},
            "active_streams": sorted(self.streams),
            "ended_streams": sorted(self.ended),
        }

    def _forward(self, message: wire.Message) -> None:
        """Re-publish a producer's ``labels``/``end`` on our socket (our session and seq;
        ``source_session`` names the producer's)."""
        stream, seq = message.stream, self._next_seq(message.stream)
        extra = {"source_session": message.session}
        if message.type == "labels":
            segments = message.header.get("segments")
            if not isinstance(segments, list):
                log.warning("labels message of %r without a segment list: dropped", stream)
                return
            frames = wire.encode_labels(stream, self.session, seq, segments, extra=extra)
        else:
            reason = str(message.header.get("reason", ""))
            frames = wire.encode_end(stream, self.session, seq, reason, extra=extra)
        self._send(frames, stream)

    # -- processing -------------------------------------------------------------------

    def process(self, items: list[Pending]) -> None:
        """One cycle: everything that was pending, stream by stream, in arrival order."""
        cycle_start_ns = time.time_ns()
        by_stream: dict[str, list[Pending]] = {}
        for item in items:
            by_stream.setdefault(item.message.stream, []).append(item)
        for stream, stream_items in by_stream.items():
            try:
                self._process_stream(stream, stream_items, cycle_start_ns)
            except Exception as error:  # never die on input: count, log, forget the stream
                self.errors += 1
                log.exception("stream %r: %s: state reset", stream, error)
                state = self.streams.pop(stream, None)
                if state is not None:
                    state.release()

    def _process_stream(self, stream: str, items: list[Pending], cycle_start_ns: int) -> None:
        run: list[Pending] = []
        for item in items:
            message = item.message
            state = self.streams.get(stream)
            if message.type == "events":
                if not len(message.events):
                    continue
                if _bad_polarity(message.events):  # one bad message must not spoil a merge
                    counters = self.counters.setdefault(stream, StreamCounters())
                    counters.events_rejected += len(message.events)
                    log.warning(
                        "stream %r: message %d rejected: polarity other than 0/1",
                        stream,
                        message.seq,
                    )
                    continue
                if state is not None and (
                    state.session != message.session or state.adapter.source != message.sensor
                ):
                    self._push(state, run, cycle_start_ns)
                    run = []
                    self._restart(state, message)
                elif state is None:
                    self._start(stream, message)
                run.append(item)
                continue
            # A control message: everything before it first.
            if state is not None:
                self._push(state, run, cycle_start_ns)
            run = []
            self.seen.add(stream)
            if message.type == "labels":
                self._forward(message)
            elif message.type == "end":
                self._end(stream, message)
        state = self.streams.get(stream)
        if state is not None:
            self._push(state, run, cycle_start_ns)

    def _start(self, stream: str, message: wire.Message) -> StreamState:
        state = StreamState(stream, message.session, message.sensor, self)
        self.streams[stream] = state
        self.seen.add(stream)
        self.ended.discard(stream)
        counters = self.counters.setdefault(stream, StreamCounters())
        counters.sessions += 1
        log.info(
            "stream %r (session %s, %s sensor -> %s input%s)",
            stream,
            message.session,
            message.sensor,
            self.compression.input_sensor,
            "" if state.adapter.is_identity else f", scale 1/{state.adapter.factor}",
        )
        return state

    def _flush(self, state: StreamState) -> None:
        """Emit the open step before a reset: no event that arrives later belongs to it."""
        if state.compressor is not None:
            self._run_steps(state, state.compressor.flush(), None, time.time_ns())
        self._send_preview(state, force=True)

    def _restart(self, state: StreamState, message: wire.Message) -> None:
        """A new producer session (or sensor) on a stream we know: start it afresh."""
        log.info("stream %r: new session %s: state reset", state.stream, message.session)
        self._flush(state)
        state.release()
        del self.streams[state.stream]
        self.counters[state.stream].resets += 1
        self._start(state.stream, message)

    def _end(self, stream: str, message: wire.Message) -> None:
        state = self.streams.get(stream)
        if state is not None and state.session != message.session:
            log.info("stream %r: end of an older session %s ignored", stream, message.session)
            return
        if state is not None:
            self._flush(state)
            del self.streams[stream]
            state.release()
        self.counters.setdefault(stream, StreamCounters()).ended += 1
        self.ended.add(stream)
        self._forward(message)

    def _pieces(self, state: StreamState, run: list[Pending]) -> list[tuple[bool, list[Pending]]]:
        """Cut a run where event time jumps by more than ``reset_after_us`` (forwards or
        backwards, checked per message on its payload); ``(reset_first, messages)``."""
        limit = self.options.reset_after_us
        pieces: list[tuple[bool, list[Pending]]] = []
        last_us = state.last_event_us
        for item in run:
            t = item.message.events["timestamp"]
            first_us, end_us = int(t[0]), int(t[-1])
            jumped = last_us is not None and abs(first_us - last_us) > limit
            if jumped or not pieces:
                pieces.append((jumped, []))
            pieces[-1][1].append(item)
            last_us = end_us if jumped or last_us is None else max(last_us, end_us)
        return pieces

    def _push(self, state: StreamState, run: list[Pending], cycle_start_ns: int) -> None:
        for reset_first, piece in self._pieces(state, run):
            if reset_first:
                log.info("stream %r: event time jumped: state reset", state.stream)
                self._flush(state)
                state.reset()
                self.counters[state.stream].resets += 1
            self._push_piece(state, piece, cycle_start_ns)

    def _push_piece(self, state: StreamState, piece: list[Pending], cycle_start_ns: int) -> None:
        counters = self.counters[state.stream]
        started = time.perf_counter()
        events = concat_events([item.message.events for item in piece])
        counters.events += len(events)
        adapted = state.adapter(events)
        counters.events_outside_input += len(events) - len(adapted)
        last_raw_us = int(events["timestamp"][-1])
        if state.compressor is None:
            first_us = int(events["timestamp"][0])
            state.compressor = StreamingCompressor(
                self.compression, start_us=first_us - first_us % self.hop_us
            )
        late_before = state.compressor.stats.events_dropped_late
        try:
            steps = state.compressor.push(adapted)
        except EventError as error:  # checked per message before; a last line of defence
            counters.events_rejected += len(events)
            log.warning("stream %r: %d events rejected: %s", state.stream, len(events), error)
            return
        counters.events_late += state.compressor.stats.events_dropped_late - late_before
        more = state.compressor.advance_to(last_raw_us)  # time passed even if all was cropped
        if len(more):
            steps = _concat_steps(steps, more)
        state.last_event_us = (
            last_raw_us if state.last_event_us is None else max(state.last_event_us, last_raw_us)
        )
        self._accumulate_preview(state, adapted)
        compress_ms = (time.perf_counter() - started) * 1e3
        # Per message: its first event (it holds events before a step's end if
        # this is below it), its last event, when it was sent and received.
        first_us = np.array([int(i.message.events["timestamp"][0]) for i in piece], np.int64)
        last_us = np.array([int(i.message.events["timestamp"][-1]) for i in piece], np.int64)
        sent_ns = np.array([_sent_ns(i.message) for i in piece], np.int64)
        received_ns = np.array([i.received_ns for i in piece], np.int64)
        provenance = _Provenance(
            first_us, last_us, sent_ns, received_ns, state.last_sent_ns, state.last_received_ns
        )
        state.last_sent_ns = int(sent_ns[-1])
        state.last_received_ns = int(received_ns[-1])
        self._run_steps(state, steps, provenance, cycle_start_ns, compress_ms)
        self._send_preview(state)

    def _run_steps(
        self,
        state: StreamState,
        steps: CompressedSteps,
        provenance: _Provenance | None,
        cycle_start_ns: int,
        compress_ms: float = 0.0,
    ) -> None:
        count = len(steps)
        if not count:
            return
        counters = self.counters[state.stream]
        counters.steps += count
        first = 0
        if self.options.overload == "drop" and count > self.options.max_steps_per_push:
            first = count - self.options.max_steps_per_push
            counters.steps_skipped += first
        for i in range(first, count):
            end_us = int(steps.end_us[i])
            started = time.perf_counter()
            logits = self.runner.step(steps.values[i], state.slot)
            state.ema_sum = self.ema_decay * state.ema_sum + logits
            state.ema_weight = self.ema_decay * state.ema_weight + 1.0
            smoothed = state.ema_sum / state.ema_weight
            probs = _softmax(smoothed)
            infer_ms = (time.perf_counter() - started) * 1e3
            top1 = int(np.argmax(probs))
            if provenance is not None:
                sent_ns, closed_sent_ns, closed_received_ns = provenance.for_step(end_us)
            else:  # flushed at end: the stream's last message closed it
                sent_ns = closed_sent_ns = state.last_sent_ns
                closed_received_ns = state.last_received_ns
            start_us = state.compressor.start_us if state.compressor else end_us - self.hop_us
            fields = {
                "t_end_us": end_us,
                "hop_us": self.hop_us,
                "step": (end_us - start_us) // self.hop_us - 1,
                "skipped": first if i == first else 0,
                "probs": probs.tolist(),
                "logits": logits.astype(np.float64).tolist(),
                "top1": top1,
                "top1_name": self.class_names[top1],
                "top1_prob": float(probs[top1]),
                "sent_ns": sent_ns,
                "closed_by_sent_ns": closed_sent_ns,
                "source_session": state.session,
                "model": self.model_name,
            }
            now_ns = time.time_ns()
            fields["timings_ms"] = {
                "receive": round(max(cycle_start_ns - closed_received_ns, 0) / 1e6, 4),
                "compress": round(compress_ms, 4),
                "infer": round(infer_ms, 4),
                "publish": round(self.last_publish_ms, 4),
                "worker": round((now_ns - closed_received_ns) / 1e6, 4),
            }
            send_started = time.perf_counter()
            frames = wire.encode_prediction(
                state.stream, self.session, self._next_seq(state.stream), fields
            )
            self._send(frames, state.stream)
            self.last_publish_ms = (time.perf_counter() - send_started) * 1e3
            counters.predictions += 1

    # -- preview ------------------------------------------------------------------------

    def _accumulate_preview(self, state: StreamState, adapted: np.ndarray) -> None:
        if state.preview is None or not len(adapted):
            return
        stride = max(1, len(adapted) // PREVIEW_MAX_EVENTS)
        sample = adapted[::stride]
        f = self.preview_factor
        _, height, width = self.preview_shape
        cells = (
            sample["polarity"].astype(np.int64) * (height * width)
            + (sample["y"] // f).astype(np.int64) * width
            + (sample["x"] // f).astype(np.int64)
        )
        state.preview += np.bincount(cells, minlength=state.preview.size).reshape(
            state.preview.shape
        )
        state.preview_events += len(adapted)
        state.preview_stride = max(state.preview_stride, stride)
        if state.preview_start_us is None:
            state.preview_start_us = int(adapted["timestamp"][0])

    def _send_preview(self, state: StreamState, force: bool = False) -> None:
        if state.preview is None or not state.preview_events:
            return
        now = time.monotonic()
        if not force and now - state.preview_sent_s < 1.0 / self.options.preview_hz:
            return
        image = np.minimum(state.preview, 255).astype(np.uint8)
        frames = wire.encode_preview(
            state.stream,
            self.session,
            self._next_seq(state.stream),
            image,
            t_start_us=state.preview_start_us,
            t_end_us=state.last_event_us + 1,
            events_per_count=state.preview_stride,
            events=state.preview_events,
        )
        self._send(frames, state.stream)
        state.preview[:] = 0
        state.preview_events = 0
        state.preview_stride = 1
        state.preview_start_us = None
        state.preview_sent_s = now

    def all_ended(self) -> bool:
        return bool(self.seen) and self.seen <= self.ended and not self.streams


@dataclass
class _Provenance:
    """Where the events of one merged push came from, per message (in order)."""

    first_us: np.ndarray
    last_us: np.ndarray
    sent_ns: np.ndarray
    received_ns: np.ndarray
    before_sent_ns: int  # the stream's last message before this push
    before_received_ns: int

    def for_step(self, end_us: int) -> tuple[int, int, int]:
        """(sent_ns of the last message holding an event before ``end_us``,
        sent_ns and received_ns of the message whose events closed the step)."""
        contributed = int(np.searchsorted(self.first_us, end_us, side="left")) - 1
        sent = int(self.sent_ns[contributed]) if contributed >= 0 else self.before_sent_ns
        closing = int(np.searchsorted(self.last_us, end_us, side="left"))
        closing = min(closing, len(self.last_us) - 1)
        return sent, int(self.sent_ns[closing]), int(self.received_ns[closing])


def _bad_polarity(events: np.ndarray) -> bool:
    return bool(np.any(events["polarity"].view(np.uint8) > 1))


def _sent_ns(message: wire.Message) -> int:
    return int(message.header.get("sent_ns", 0))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def _concat_steps(a: CompressedSteps, b: CompressedSteps) -> CompressedSteps:
    if not len(a):
        return b
    return CompressedSteps(
        np.concatenate([a.end_us, b.end_us]), np.concatenate([a.values, b.values])
    )


# --- wiring ------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    """What ``run_worker`` returns: the final stats and the bound endpoint."""

    endpoint: str
    stats: dict[str, Any] = field(default_factory=dict)


def open_publisher(context: zmq.Context, endpoint: str, bind_any: bool) -> zmq.Socket:
    """An XPUB for predictions: loopback unless ``bind_any``; sees its subscribers."""
    check_endpoint(endpoint, bind_any)
    return bind_xpub(context, endpoint, PREDICTION_SEND_HWM, linger_ms=1000)


def run_worker(
    config: ModelConfig,
    runner: StepRunner,
    options: WorkerOptions,
    *,
    model_name: str = "",
    stop_event: threading.Event | None = None,
    context: zmq.Context | None = None,
    on_bound=None,
) -> WorkerResult:
    """Serve predictions until ``stop_event`` is set (or, with ``exit_on_end``, every
    stream seen has ended). ``on_bound(endpoint, session)`` is called once the
    prediction socket is bound; the input is connected only after
    ``options.wait_subscribers`` subscribers of predictions have arrived."""
    stop_event = stop_event or threading.Event()
    context = context or zmq.Context.instance()
    socket = open_publisher(context, options.bind, options.bind_any)
    endpoint = socket.getsockopt(zmq.LAST_ENDPOINT).decode()
    worker = Worker(config, runner, options, socket, model_name=model_name or config.name)
    queue = PendingQueue(options.max_pending_events, options.max_pending_messages, options.overload)
    receiver = Receiver(options, queue, context)
    result = WorkerResult(endpoint)
    subscribers = Subscriptions(socket, wire.topic("prediction"))
    try:
        if on_bound is not None:
            on_bound(endpoint, worker.session)
        subscribers.wait_for(options.wait_subscribers, stop_event, options.wait_timeout_s)
        receiver.start()
        receiver.connected.wait(5)
        log.info("connected to %s", ", ".join(options.connect))
        next_stats_s = time.monotonic() + options.stats_interval_s
        while not stop_event.is_set():
            items = queue.take_all(0.05)
            if items:
                worker.process(items)
                if any(item.message.type == "end" for item in items):
                    worker.publish_stats(receiver, queue)
            subscribers.drain()
            if time.monotonic() >= next_stats_s:
                worker.publish_stats(receiver, queue)
                next_stats_s = time.monotonic() + options.stats_interval_s
            if receiver.error is not None:
                raise RuntimeError(f"receiving thread failed: {receiver.error}")
            if options.exit_on_end and worker.all_ended() and not queue.counts()[1]:
                break
    finally:
        receiver.stop_event.set()
        if receiver.is_alive():
            receiver.join(2)
        try:
            result.stats = worker.publish_stats(receiver, queue, final=True)
        finally:
            socket.close(1000)
    return result
