"""One stream through the worker, without sockets: events -> ``wire.Prediction`` per hop.

    events      EVENT_DTYPE [n]           the source's sensor (one or more messages merged)
      -> SensorAdapter                    core/adapt.py: crop/scale to the model's input sensor
    adapted     EVENT_DTYPE [m]
      -> StreamingCompressor              core/compress.py: one step per hop (``hop_us``)
    steps       float32 [k, 2, H', W']    synaptic current sampled at each hop's end
      -> runner.step(x, slot)             the model runner the worker was given (models/runner.py)
    logits      float32 [C]               per step, the stream's own network state in ``slot``
      -> EMA over hops, softmax           readout smoothing (time constant ``ema_tau_us``)
    probs       float64 [C]  -> wire.Prediction, handed to ``Outbox.publish``

``StreamPipeline`` holds one stream of one producer session; ``streamer/classifier.py``
routes many streams to theirs and ``streamer/worker.py`` puts sockets around it.
A test drives it with event arrays and a list as the outbox.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from core.adapt import SensorAdapter
from core.compress import CompressedSteps, CompressionConfig, StreamingCompressor
from core.events import EVENT_DTYPE, EventError, SensorSize
from streamer import wire
from streamer.preview import PreviewImage
from streamer.worker_queue import Pending

log = logging.getLogger("stcsnn.worker")

# Messages are merged into pushes of up to this many events (1 MiB: also the bound
# of the per-stream merge buffer); a message that large goes alone, without the
# copy (a push costs little beside 65,536 events of work).
MERGE_UP_TO_EVENTS = 1 << 16


class StepRunner(Protocol):
    """What the worker needs of a model runner. ``models/runner.py`` makes them; whoever
    starts the worker hands one over, so the worker imports no model code."""

    description: str

    def new_slot(self) -> Any:
        """A fresh network state for one stream."""

    def reset(self, slot: Any) -> None: ...

    def release(self, slot: Any) -> None: ...

    def step(self, x: np.ndarray, slot: Any) -> np.ndarray:
        """One compressed step ``[2, H', W']`` -> logits ``[C]``; advances ``slot``."""


@dataclass(frozen=True)
class StreamModel:
    """The model as the worker sees it: names, the compression it was trained with (the
    hop set to the one the worker runs at), the readout smoothing, and its runner."""

    name: str
    class_names: tuple[str, ...]
    compression: CompressionConfig
    ema_tau_us: float
    runner: StepRunner

    def __post_init__(self) -> None:
        if not self.ema_tau_us > 0:
            raise ValueError(f"ema_tau_us must be > 0, got {self.ema_tau_us}")

    @property
    def hop_us(self) -> int:
        return self.compression.step_us

    @property
    def ema_decay(self) -> float:
        """Weight of the past per hop: exp(-hop / tau)."""
        return math.exp(-self.hop_us / self.ema_tau_us)


def stream_compression(config: CompressionConfig, hop_us: int | None) -> CompressionConfig:
    """The checkpoint's compression with the hop (step length) set to ``hop_us``."""
    if hop_us is None:
        return config
    if hop_us < 1:
        raise ValueError(f"hop_us must be >= 1, got {hop_us}")
    return dataclasses.replace(config, window_us=int(hop_us) * config.steps)


class Outbox:
    """Where a worker's messages go: its session, a ``seq`` per stream id, and ``send``
    (a socket's non-blocking send in the worker, ``list.append`` in a test), which
    returns False when the message was dropped. A dropped message still used its
    ``seq``, so receivers see the gap."""

    MAX_STREAMS = 4096  # seq counters kept; a stream forgotten starts again at 1

    def __init__(self, send: Callable[[wire.Message], bool | None], session: str):
        self.send = send
        self.session = session
        self.seq: OrderedDict[str, int] = OrderedDict()
        self.dropped = 0
        self.last_publish_ms = 0.0  # how long the previous send took
        # Whether anyone subscribes to previews (the worker updates it from its XPUB's
        # subscriptions): without one, the streams neither count nor send them.
        self.previews_wanted = True

    def next_seq(self, stream: str) -> int:
        seq = self.seq.pop(stream, 0) + 1
        self.seq[stream] = seq
        if len(self.seq) > self.MAX_STREAMS:
            self.seq.popitem(last=False)
        return seq

    def publish(self, message: wire.Message) -> None:
        started = time.perf_counter()
        if self.send(message) is False:
            self.dropped += 1
        self.last_publish_ms = (time.perf_counter() - started) * 1e3


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


@dataclass
class _Provenance:
    """Where the events of one merged push came from, per message (in order)."""

    first_us: np.ndarray
    last_us: np.ndarray
    sent_ns: np.ndarray
    received_ns: np.ndarray
    before_sent_ns: int  # the stream's last message before this push

    @classmethod
    def of(cls, piece: list[Pending], before_sent_ns: int) -> _Provenance:
        t = [item.message.events["timestamp"] for item in piece]
        return cls(
            np.array([int(ts[0]) for ts in t], np.int64),
            np.array([int(ts[-1]) for ts in t], np.int64),
            np.array([item.message.sent_ns for item in piece], np.int64),
            np.array([item.received_ns for item in piece], np.int64),
            before_sent_ns,
        )

    def for_step(self, end_us: int) -> tuple[int, int, int]:
        """(sent_ns of the last message holding an event before ``end_us``,
        sent_ns and received_ns of the message whose events closed the step)."""
        contributed = int(np.searchsorted(self.first_us, end_us, side="left")) - 1
        sent = int(self.sent_ns[contributed]) if contributed >= 0 else self.before_sent_ns
        closing = int(np.searchsorted(self.last_us, end_us, side="left"))
        closing = min(closing, len(self.last_us) - 1)
        return sent, int(self.sent_ns[closing]), int(self.received_ns[closing])


class StreamPipeline:
    """Adapter, streaming compressor, network state and smoothed readout of one stream
    of one producer session.

    ``max_steps_per_push`` (None: all) bounds the steps of one push that run the
    network (the newest; the others are counted in ``steps_skipped``: the
    compressor has advanced over them, so the current still decays exactly).
    Event time jumping by more than ``reset_after_us`` (forwards or backwards)
    resets the stream (``resets``)."""

    def __init__(
        self,
        stream: str,
        session: str,
        sensor: SensorSize,
        model: StreamModel,
        outbox: Outbox,
        *,
        counters: StreamCounters,
        reset_after_us: int,
        max_steps_per_push: int | None,
        preview_hz: float = 0.0,
    ):
        self.stream = stream
        self.session = session
        self.model = model
        self.outbox = outbox
        self.counters = counters
        self.reset_after_us = reset_after_us
        self.max_steps_per_push = max_steps_per_push
        self.preview_hz = preview_hz
        compression = model.compression
        self.adapter = SensorAdapter(sensor, compression.input_sensor)
        self.compressor: StreamingCompressor | None = None  # made at the first event
        self.slot = model.runner.new_slot()
        self.ema_sum = np.zeros(len(model.class_names), dtype=np.float64)
        self.ema_weight = 0.0
        self.last_event_us: int | None = None
        self.last_sent_ns = 0  # sent_ns of the last events message pushed
        self.last_received_ns = 0
        self._merge_buffer = np.empty(0, EVENT_DTYPE)  # _merged
        self.preview = (
            PreviewImage(compression.input_height, compression.input_width)
            if preview_hz > 0
            else None
        )

    @property
    def sensor(self) -> SensorSize:
        return self.adapter.source

    # -- state --------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the stream's past: new compressor grid, zero network state and EMA."""
        self.compressor = None
        self.model.runner.reset(self.slot)
        self.ema_sum[:] = 0.0
        self.ema_weight = 0.0
        self.last_event_us = None

    def release(self) -> None:
        self.model.runner.release(self.slot)

    def flush(self, cycle_start_ns: int) -> None:
        """Emit the open step (before a reset or the end: no later event belongs to it)."""
        if self.compressor is not None:
            self._run_steps(self.compressor.flush(), None, cycle_start_ns)
        self.send_preview(force=True)

    # -- events -------------------------------------------------------------------------

    def push(self, run: list[Pending], cycle_start_ns: int) -> None:
        """Events messages of this stream, in order, merged into as few pushes as the
        time jumps allow; a prediction per completed step goes to the outbox."""
        for reset_first, piece in self._pieces(run):
            if reset_first:
                log.info("stream %r: event time jumped: state reset", self.stream)
                self.flush(cycle_start_ns)
                self.reset()
                self.counters.resets += 1
            self._push_piece(piece, cycle_start_ns)

    def _pieces(self, run: list[Pending]) -> list[tuple[bool, list[Pending]]]:
        """Cut a run where event time jumps by more than ``reset_after_us`` (forwards or
        backwards, checked per message on its payload), and where a piece would pass
        MERGE_UP_TO_EVENTS; ``(reset_first, messages)``."""
        pieces: list[tuple[bool, list[Pending]]] = []
        last_us = self.last_event_us
        piece_events = 0
        for item in run:
            t = item.message.events["timestamp"]
            first_us, end_us = int(t[0]), int(t[-1])
            jumped = last_us is not None and abs(first_us - last_us) > self.reset_after_us
            full = piece_events > 0 and piece_events + len(t) > MERGE_UP_TO_EVENTS
            if jumped or full or not pieces:
                pieces.append((jumped, []))
                piece_events = 0
            pieces[-1][1].append(item)
            piece_events += len(t)
            last_us = end_us if jumped or last_us is None else max(last_us, end_us)
        return pieces

    def _merged(self, piece: list[Pending]) -> np.ndarray:
        """The piece's events as one array: in a buffer reused from push to push (a
        fresh array per push costs its page faults, about a third of the copy). Valid
        until the next push: nothing downstream keeps the events themselves (the
        compressor keeps its own state, the preview its counts). ``_pieces`` keeps a
        piece of several messages within MERGE_UP_TO_EVENTS."""
        parts = [item.message.events for item in piece]
        if len(parts) == 1:
            return parts[0]
        count = sum(len(p) for p in parts)
        if len(self._merge_buffer) < count:
            self._merge_buffer = np.empty(min(2 * count, MERGE_UP_TO_EVENTS), EVENT_DTYPE)
        words = self._merge_buffer.view(np.uint64)
        at = 0
        for part in parts:
            words[at : at + 2 * len(part)] = np.ascontiguousarray(part).view(np.uint64)
            at += 2 * len(part)
        return self._merge_buffer[:count]

    def _push_piece(self, piece: list[Pending], cycle_start_ns: int) -> None:
        started = time.perf_counter()
        events = self._merged(piece)
        self.counters.events += len(events)
        adapted = self.adapter(events)
        self.counters.events_outside_input += len(events) - len(adapted)
        last_raw_us = int(events["timestamp"][-1])
        if self.compressor is None:
            first_us = int(events["timestamp"][0])
            hop_us = self.model.hop_us
            self.compressor = StreamingCompressor(
                self.model.compression, start_us=first_us - first_us % hop_us
            )
        late_before = self.compressor.stats.events_dropped_late
        try:
            steps = self.compressor.push(adapted)
        except EventError as error:  # checked per message before; a last line of defence
            self.counters.events_rejected += len(events)
            log.warning("stream %r: %d events rejected: %s", self.stream, len(events), error)
            return
        self.counters.events_late += self.compressor.stats.events_dropped_late - late_before
        # Time passed even if all was cropped; up to the producer's watermark if it sent one.
        watermarks = [i.message.until_us for i in piece if i.message.until_us is not None]
        more = self.compressor.advance_to(max([last_raw_us, *watermarks]))
        if len(more):
            steps = _concat_steps(steps, more)
        self.last_event_us = (
            last_raw_us if self.last_event_us is None else max(self.last_event_us, last_raw_us)
        )
        if self.preview is not None and self.outbox.previews_wanted:
            self.preview.add(adapted)
        compress_ms = (time.perf_counter() - started) * 1e3
        provenance = _Provenance.of(piece, self.last_sent_ns)
        self.last_sent_ns = int(provenance.sent_ns[-1])
        self.last_received_ns = int(provenance.received_ns[-1])
        self._run_steps(steps, provenance, cycle_start_ns, compress_ms)
        self.send_preview()

    # -- steps -> predictions -----------------------------------------------------------

    def _run_steps(
        self,
        steps: CompressedSteps,
        provenance: _Provenance | None,
        cycle_start_ns: int,
        compress_ms: float = 0.0,
    ) -> None:
        count = len(steps)
        if not count:
            return
        self.counters.steps += count
        first = 0
        if self.max_steps_per_push is not None and count > self.max_steps_per_push:
            first = count - self.max_steps_per_push
            self.counters.steps_skipped += first
        for i in range(first, count):
            end_us = int(steps.end_us[i])
            started = time.perf_counter()
            logits = self.model.runner.step(steps.values[i], self.slot)
            stepped = time.perf_counter()
            probs = self._smoothed(logits)
            top1 = int(np.argmax(probs))
            done = time.perf_counter()
            if provenance is not None:
                sent_ns, closed_sent_ns, closed_received_ns = provenance.for_step(end_us)
            else:  # flushed at end: the stream's last message closed it
                sent_ns = closed_sent_ns = self.last_sent_ns
                closed_received_ns = self.last_received_ns
            published_ns = time.time_ns()
            timings_ms = {
                "receive": round(max(cycle_start_ns - closed_received_ns, 0) / 1e6, 4),
                "compress": round(compress_ms, 4),
                "step": round((stepped - started) * 1e3, 4),
                "readout": round((done - stepped) * 1e3, 4),
                "infer": round((done - started) * 1e3, 4),
                "publish": round(self.outbox.last_publish_ms, 4),
                "worker": round((published_ns - closed_received_ns) / 1e6, 4),
            }
            prediction = wire.Prediction(
                stream=self.stream,
                session=self.outbox.session,
                seq=self.outbox.next_seq(self.stream),
                sent_ns=sent_ns,
                t_end_us=end_us,
                hop_us=self.model.hop_us,
                step=(end_us - self.compressor.start_us) // self.model.hop_us - 1,
                skipped=first if i == first else 0,
                probs=probs,
                logits=logits,
                top1=top1,
                top1_name=self.model.class_names[top1],
                top1_prob=float(probs[top1]),
                closed_by_sent_ns=closed_sent_ns,
                closed_by_received_ns=closed_received_ns,
                published_ns=published_ns,
                source_session=self.session,
                model=self.model.name,
                timings_ms=timings_ms,
            )
            self.outbox.publish(prediction)
            self.counters.predictions += 1

    def _smoothed(self, logits: np.ndarray) -> np.ndarray:
        """Softmax of the exponential moving average of the logits over hops."""
        decay = self.model.ema_decay
        self.ema_sum = decay * self.ema_sum + logits
        self.ema_weight = decay * self.ema_weight + 1.0
        smoothed = self.ema_sum / self.ema_weight
        shifted = np.exp(smoothed - np.max(smoothed))
        return shifted / shifted.sum()

    # -- preview ------------------------------------------------------------------------

    def send_preview(self, force: bool = False) -> None:
        """The stream's preview image, if one is due (at most ``preview_hz`` a second)."""
        now_s = time.monotonic()
        if (
            self.preview is None
            or not self.outbox.previews_wanted
            or not (self.preview.events and (force or self.preview.due(now_s, self.preview_hz)))
        ):
            return
        image, start_us, events, per_count = self.preview.take(now_s)
        self.outbox.publish(
            wire.Preview(
                stream=self.stream,
                session=self.outbox.session,
                seq=self.outbox.next_seq(self.stream),
                image=image,
                t_start_us=start_us,
                t_end_us=self.last_event_us + 1,
                events=events,
                events_per_count=per_count,
            )
        )


def _concat_steps(a: CompressedSteps, b: CompressedSteps) -> CompressedSteps:
    if not len(a):
        return b
    return CompressedSteps(
        np.concatenate([a.end_us, b.end_us]), np.concatenate([a.values, b.values])
    )
