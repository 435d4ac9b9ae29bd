"""The worker's processing side without sockets: messages of many streams in, each stream
to its ``StreamPipeline``, predictions, previews and forwarded labels/ends out.

Per stream (docs/streaming.md):

* ``events``: merged with the other pending events of the stream into one push;
  a message with a polarity other than 0/1 is rejected whole (``events_rejected``)
  so that it cannot spoil the merge; a new producer session or sensor on a known
  stream restarts it (``resets``);
* ``labels``: forwarded (our session and seq, ``source_session`` = the producer's);
* ``end``: the open step is flushed, the stream's state dropped, ``end`` forwarded.
  An ``end`` of an older session than the stream's is ignored.

An exception while processing a stream is counted (``errors``), logged, and
forgets that stream; the others go on.

Memory is bounded whatever the input: at most ``max_streams`` streams are open
(begun and not ended) at once. A stream silent for ``idle_evict_s`` of wall time
is closed (its open step flushed; ``streams_evicted``); a new stream beyond the
bound, with none idle enough to make room, is refused and its messages dropped
(``streams_refused``). Counters are kept for the open streams and the last
RECENT_STREAMS finished ones, the rest summed in ``totals``, so stats messages
stay bounded too.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from core.adapt import SensorAdapter
from core.events import SensorSize, polarities_are_binary
from streamer import wire
from streamer.stream_pipeline import Outbox, StreamCounters, StreamModel, StreamPipeline
from streamer.worker_queue import Pending

log = logging.getLogger("stcsnn.worker")

DEFAULT_MAX_STEPS_PER_PUSH = 4
DEFAULT_RESET_AFTER_US = 1_000_000
DEFAULT_MAX_STREAMS = 64
DEFAULT_IDLE_EVICT_S = 60.0
MIN_SENSOR_COVERAGE = 0.5  # a stream filling less of the model's input is refused
RECENT_STREAMS = 64  # finished streams whose own counters stay in the stats
REFUSAL_LOG_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ClassifierOptions:
    max_steps_per_push: int | None = DEFAULT_MAX_STEPS_PER_PUSH  # None: never skip
    reset_after_us: int = DEFAULT_RESET_AFTER_US
    preview_hz: float = 30.0  # 0: no previews
    max_streams: int = DEFAULT_MAX_STREAMS  # open at once
    idle_evict_s: float = DEFAULT_IDLE_EVICT_S  # wall time without a message
    allow_model_mismatch: bool = False  # serve streams the model's input does not fit


@functools.lru_cache(maxsize=256)
def coverage(source: SensorSize, target: SensorSize) -> float:
    """``SensorAdapter.coverage``, remembered for the sensors seen last."""
    return SensorAdapter(source, target).coverage


class Classifier:
    """Every stream this worker serves; ``process`` takes one cycle's pending messages."""

    def __init__(self, model: StreamModel, options: ClassifierOptions, outbox: Outbox):
        self.model = model
        self.options = options
        self.outbox = outbox
        self.streams: dict[str, StreamPipeline] = {}  # open streams that have had events
        self.open: dict[str, float] = {}  # begun, not ended -> last message (monotonic s)
        self.counters: OrderedDict[str, StreamCounters] = OrderedDict()
        self.totals = StreamCounters()  # of the finished streams no longer in ``counters``
        self.ended_recent: deque[str] = deque(maxlen=RECENT_STREAMS)
        self.ended_total = 0
        self.any_seen = False
        self.streams_refused = 0
        self.streams_evicted = 0
        self.errors = 0
        self.streams_mismatched = 0
        self._refusal_logged_s = -math.inf
        self._mismatch_logged: set = set()

    def process(self, items: list[Pending]) -> None:
        """One cycle: everything that was pending, stream by stream, in arrival order."""
        cycle_start_ns = time.time_ns()
        by_stream: dict[str, list[Pending]] = {}
        for item in items:
            by_stream.setdefault(item.message.stream, []).append(item)
        self.evict_idle(cycle_start_ns)
        for stream, stream_items in by_stream.items():
            if not self._admit(stream):
                continue
            try:
                self._process_stream(stream, stream_items, cycle_start_ns)
            except Exception as error:  # never die on input: count, log, forget the stream
                self.errors += 1
                log.exception("stream %r: %s: state reset", stream, error)
                self._close(stream)

    # -- bounded bookkeeping -----------------------------------------------------------

    def _admit(self, stream: str) -> bool:
        """Whether this cycle's messages of ``stream`` are processed (module docstring)."""
        now_s = time.monotonic()
        if stream not in self.open and len(self.open) >= self.options.max_streams:
            self.streams_refused += 1
            if now_s - self._refusal_logged_s >= REFUSAL_LOG_INTERVAL_S:
                self._refusal_logged_s = now_s
                log.warning(
                    "stream %r refused: %d streams open (--max-streams); %d refused so far",
                    stream[:40],
                    len(self.open),
                    self.streams_refused,
                )
            return False
        self.open[stream] = now_s
        self.any_seen = True
        return True

    def evict_idle(self, cycle_start_ns: int | None = None) -> None:
        """Close the streams silent for longer than ``idle_evict_s``."""
        limit_s = time.monotonic() - self.options.idle_evict_s
        for stream in [s for s, last_s in self.open.items() if last_s < limit_s]:
            log.info("stream %r: silent for %.0f s: closed", stream, self.options.idle_evict_s)
            pipeline = self.streams.get(stream)
            if pipeline is not None:
                pipeline.flush(cycle_start_ns or time.time_ns())
            self._close(stream)
            self.streams_evicted += 1

    def _close(self, stream: str) -> None:
        """Forget an open stream: its network state, its place among the open ones."""
        pipeline = self.streams.pop(stream, None)
        if pipeline is not None:
            pipeline.release()
        self.open.pop(stream, None)
        if stream in self.counters:
            self.counters.move_to_end(stream)
        finished = [s for s in self.counters if s not in self.open]
        for old in finished[: max(0, len(finished) - RECENT_STREAMS)]:
            self._add_to_totals(self.counters.pop(old))

    def _add_to_totals(self, counters: StreamCounters) -> None:
        for name, value in counters.as_dict().items():
            setattr(self.totals, name, getattr(self.totals, name) + value)

    def _counters(self, stream: str) -> StreamCounters:
        counters = self.counters.get(stream)
        if counters is None:
            counters = self.counters[stream] = StreamCounters()
        return counters

    def _process_stream(self, stream: str, items: list[Pending], cycle_start_ns: int) -> None:
        run: list[Pending] = []  # events messages to push together
        for item in items:
            message = item.message
            pipeline = self.streams.get(stream)
            if isinstance(message, wire.Events):
                if not self._acceptable(item):
                    continue
                if pipeline is not None and (
                    pipeline.session != message.session or pipeline.sensor != message.sensor
                ):
                    pipeline.push(run, cycle_start_ns)
                    run = []
                    self._restart(pipeline, message, cycle_start_ns)
                elif pipeline is None:
                    self._start(message)
                run.append(item)
                continue
            # A control message: everything before it first.
            if pipeline is not None:
                pipeline.push(run, cycle_start_ns)
            run = []
            if isinstance(message, wire.Labels):
                self._forward(message)
            elif isinstance(message, wire.End):
                self._end(message, cycle_start_ns)
        pipeline = self.streams.get(stream)
        if pipeline is not None:
            pipeline.push(run, cycle_start_ns)

    def _acceptable(self, item: Pending) -> bool:
        message = item.message
        if not len(message.events):
            return False
        if not self._fits(message.sensor):
            self._counters(message.stream).events_rejected += len(message.events)
            if (message.stream, message.sensor) not in self._mismatch_logged:
                if len(self._mismatch_logged) > 4096:  # bounded, like everything per stream
                    self._mismatch_logged.clear()
                self._mismatch_logged.add((message.stream, message.sensor))
                self.streams_mismatched += 1
                log.warning(
                    "stream %r refused: its %s sensor fills %.0f%% of the model's %s input "
                    "(a model trained on another sensor; --allow-model-mismatch serves it)",
                    message.stream[:40],
                    message.sensor,
                    100 * coverage(message.sensor, self.model.compression.input_sensor),
                    self.model.compression.input_sensor,
                )
            return False
        polarity_ok = item.polarity_ok
        if polarity_ok is None:
            polarity_ok = polarities_are_binary(message.events)
        if not polarity_ok:
            self._counters(message.stream).events_rejected += len(message.events)
            log.warning(
                "stream %r: message %d rejected: polarity other than 0/1",
                message.stream,
                message.seq,
            )
            return False
        return True

    def _fits(self, sensor: SensorSize) -> bool:
        """The stream's sensor fills at least half of the model's input (after the
        adapter's integer downscale), or mismatches are allowed."""
        target = self.model.compression.input_sensor
        return self.options.allow_model_mismatch or coverage(sensor, target) >= MIN_SENSOR_COVERAGE

    def _start(self, message: wire.Events) -> StreamPipeline:
        stream = message.stream
        counters = self._counters(stream)
        counters.sessions += 1
        pipeline = StreamPipeline(
            stream,
            message.session,
            message.sensor,
            self.model,
            self.outbox,
            counters=counters,
            reset_after_us=self.options.reset_after_us,
            max_steps_per_push=self.options.max_steps_per_push,
            preview_hz=self.options.preview_hz,
        )
        self.streams[stream] = pipeline
        adapter = pipeline.adapter
        log.info(
            "stream %r (session %s, %s sensor -> %s input%s)",
            stream,
            message.session,
            message.sensor,
            adapter.target,
            "" if adapter.is_identity else f", scale 1/{adapter.factor}",
        )
        return pipeline

    def _restart(self, pipeline: StreamPipeline, message: wire.Events, cycle_start_ns: int):
        """A new producer session (or sensor) on a stream we know: start it afresh."""
        log.info("stream %r: new session %s: state reset", pipeline.stream, message.session)
        pipeline.flush(cycle_start_ns)
        pipeline.release()
        del self.streams[pipeline.stream]
        self.counters[pipeline.stream].resets += 1
        self._start(message)

    def _end(self, message: wire.End, cycle_start_ns: int) -> None:
        stream = message.stream
        pipeline = self.streams.get(stream)
        if pipeline is not None and pipeline.session != message.session:
            log.info("stream %r: end of an older session %s ignored", stream, message.session)
            return
        if pipeline is not None:
            pipeline.flush(cycle_start_ns)
        self._counters(stream).ended += 1
        self._close(stream)
        self.ended_recent.append(stream)
        self.ended_total += 1
        self._forward(message)

    def _forward(self, message: wire.Labels | wire.End) -> None:
        """Re-publish a producer's ``labels``/``end`` under our session and seq."""
        common = {
            "stream": message.stream,
            "session": self.outbox.session,
            "seq": self.outbox.next_seq(message.stream),
            "source_session": message.session,
        }
        if isinstance(message, wire.Labels):
            self.outbox.publish(wire.Labels(**common, segments=message.segments))
        else:
            self.outbox.publish(wire.End(**common, reason=message.reason))

    def all_ended(self) -> bool:
        """Every stream begun has ended (or was closed as idle)."""
        return self.any_seen and not self.open

    def close(self) -> None:
        for stream in list(self.open):
            self._close(stream)

    def stats(self) -> dict[str, Any]:
        """Per-stream counters and the streams' states (the worker adds its transport's)."""
        steps_skipped = self.totals.steps_skipped
        steps_skipped += sum(c.steps_skipped for c in self.counters.values())
        return {
            "steps_skipped": steps_skipped,
            "errors": self.errors,
            "streams": {name: c.as_dict() for name, c in self.counters.items()},
            "streams_not_listed": self.totals.as_dict(),
            "active_streams": sorted(self.streams),
            "open_streams": len(self.open),
            "ended_streams": sorted(self.ended_recent),
            "ended_streams_total": self.ended_total,
            "streams_refused": self.streams_refused,
            "streams_evicted": self.streams_evicted,
            "streams_mismatched": self.streams_mismatched,
        }
