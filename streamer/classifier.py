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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer import wire
from streamer.stream_pipeline import Outbox, StreamCounters, StreamModel, StreamPipeline
from streamer.worker_queue import Pending

log = logging.getLogger("stcsnn.worker")

DEFAULT_MAX_STEPS_PER_PUSH = 4
DEFAULT_RESET_AFTER_US = 1_000_000


@dataclass(frozen=True)
class ClassifierOptions:
    max_steps_per_push: int | None = DEFAULT_MAX_STEPS_PER_PUSH  # None: never skip
    reset_after_us: int = DEFAULT_RESET_AFTER_US
    preview_hz: float = 30.0  # 0: no previews


class Classifier:
    """Every stream this worker serves; ``process`` takes one cycle's pending messages."""

    def __init__(self, model: StreamModel, options: ClassifierOptions, outbox: Outbox):
        self.model = model
        self.options = options
        self.outbox = outbox
        self.streams: dict[str, StreamPipeline] = {}
        self.counters: dict[str, StreamCounters] = {}
        self.seen: set[str] = set()
        self.ended: set[str] = set()
        self.errors = 0

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
                pipeline = self.streams.pop(stream, None)
                if pipeline is not None:
                    pipeline.release()

    def _process_stream(self, stream: str, items: list[Pending], cycle_start_ns: int) -> None:
        run: list[Pending] = []  # events messages to push together
        for item in items:
            message = item.message
            pipeline = self.streams.get(stream)
            if isinstance(message, wire.Events):
                if not self._acceptable(message):
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
            self.seen.add(stream)
            if isinstance(message, wire.Labels):
                self._forward(message)
            elif isinstance(message, wire.End):
                self._end(message, cycle_start_ns)
        pipeline = self.streams.get(stream)
        if pipeline is not None:
            pipeline.push(run, cycle_start_ns)

    def _acceptable(self, message: wire.Events) -> bool:
        if not len(message.events):
            return False
        if np.any(message.events["polarity"].view(np.uint8) > 1):
            counters = self.counters.setdefault(message.stream, StreamCounters())
            counters.events_rejected += len(message.events)
            log.warning(
                "stream %r: message %d rejected: polarity other than 0/1",
                message.stream,
                message.seq,
            )
            return False
        return True

    def _start(self, message: wire.Events) -> StreamPipeline:
        stream = message.stream
        counters = self.counters.setdefault(stream, StreamCounters())
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
        self.seen.add(stream)
        self.ended.discard(stream)
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
            del self.streams[stream]
            pipeline.release()
        self.counters.setdefault(stream, StreamCounters()).ended += 1
        self.ended.add(stream)
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
        return bool(self.seen) and self.seen <= self.ended and not self.streams

    def close(self) -> None:
        for pipeline in self.streams.values():
            pipeline.release()
        self.streams.clear()

    def stats(self) -> dict[str, Any]:
        """Per-stream counters and the streams' states (the worker adds its transport's)."""
        return {
            "steps_skipped": sum(c.steps_skipped for c in self.counters.values()),
            "errors": self.errors,
            "streams": {name: c.as_dict() for name, c in self.counters.items()},
            "active_streams": sorted(self.streams),
            "ended_streams": sorted(self.ended),
        }
