"""What a subscriber of a worker saw: predictions and labels per stream, latencies,
and the summary ``stcsnn demo --json`` prints.

Streaming accuracy (docs/streaming.md): for each labelled segment ``[start,
end)`` of a replay (one N-MNIST sample, one gesture), the smoothed top-1 of
the *last* prediction whose hop ends within the segment (``start < t_end <=
end``) is the stream's answer for that sample; ``streaming_accuracy`` is the
fraction of segments answered correctly (a segment without any prediction
counts as wrong, and is counted in ``segments_without_prediction``).
``hop_accuracy`` scores every prediction against the label at the hop's last
microsecond (hops outside every segment are not scored);
``hop_accuracy_unsmoothed`` does the same with the raw per-step readout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.labels import LabelSegment, label_at
from streamer import wire


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass
class StreamLog:
    t_end_us: list[int] = field(default_factory=list)
    top1: list[int] = field(default_factory=list)
    top1_raw: list[int] = field(default_factory=list)
    segments: list[LabelSegment] = field(default_factory=list)
    ended: bool = False


class PredictionLog:
    """Predictions and labels per stream, with latencies (same clock: one machine)."""

    def __init__(self):
        self.streams: dict[str, StreamLog] = {}
        self.latency_ms: list[float] = []  # last event of the hop published -> received here
        self.closing_latency_ms: list[float] = []  # the message that closed the hop -> here
        self.worker_ms: list[float] = []  # inside the worker: closing message received -> sent
        self.predictions = 0
        self.hop_us: int | None = None
        self.last_stats: dict | None = None

    def stream(self, name: str) -> StreamLog:
        return self.streams.setdefault(name, StreamLog())

    def add(self, message: wire.Message, received_ns: int) -> None:
        """Record one decoded message from the worker's socket."""
        if isinstance(message, wire.Stats):
            self.last_stats = dict(message.values)
            return
        log = self.stream(message.stream)
        if isinstance(message, wire.Prediction):
            log.t_end_us.append(message.t_end_us)
            log.top1.append(message.top1)
            log.top1_raw.append(-1 if message.top1_raw is None else message.top1_raw)
            self.hop_us = message.hop_us or self.hop_us
            self.latency_ms.append((received_ns - message.sent_ns) / 1e6)
            closed_ns = message.closed_by_sent_ns or message.sent_ns
            self.closing_latency_ms.append((received_ns - closed_ns) / 1e6)
            self.worker_ms.append(float(message.timings_ms.get("worker", 0.0)))
            self.predictions += 1
        elif isinstance(message, wire.Labels):
            log.segments.extend(message.segments)
        elif isinstance(message, wire.End):
            log.ended = True

    def accuracy(self) -> dict[str, Any]:
        """Streaming and per-hop accuracy over every labelled stream (module docstring)."""
        segments = correct = without = 0
        hops = hops_correct = hops_correct_raw = 0
        for log in self.streams.values():
            if not log.segments:
                continue
            order = np.argsort(log.t_end_us, kind="stable")
            t_end = np.asarray(log.t_end_us, dtype=np.int64)[order]
            top1 = np.asarray(log.top1, dtype=np.int64)[order]
            top1_raw = np.asarray(log.top1_raw, dtype=np.int64)[order]
            spans = sorted(log.segments, key=lambda s: (s.start_us, s.end_us))
            for label, start_us, end_us in spans:
                segments += 1
                last = int(np.searchsorted(t_end, end_us, side="right")) - 1
                if last < 0 or t_end[last] <= start_us:
                    without += 1
                    continue
                correct += int(top1[last] == label)
            for i, t in enumerate(t_end.tolist()):
                label = label_at(spans, t - 1)  # at the hop's last microsecond
                if label is None:
                    continue
                hops += 1
                hops_correct += int(top1[i] == label)
                hops_correct_raw += int(top1_raw[i] == label)
        if not segments:
            return {}
        latencies, undecided = self.decision_latencies_ms()
        return {
            "segments": segments,
            "streaming_accuracy": correct / segments,
            "segments_without_prediction": without,
            "labelled_hops": hops,
            "hop_accuracy": hops_correct / hops if hops else None,
            "hop_accuracy_unsmoothed": hops_correct_raw / hops if hops else None,
            "decision_latency_ms_p50": percentile(latencies, 50),
            "decision_latency_ms_p90": percentile(latencies, 90),
            "undecided_segments": undecided,
        }

    def decision_latencies_ms(self) -> tuple[list[float], int]:
        """Per labelled segment, onset -> the end of the first hop from which the smoothed
        top-1 is right and stays right to the segment's last hop (hops whose last µs
        lies in the segment); and how many segments never settled on the right answer."""
        latencies: list[float] = []
        undecided = 0
        for log in self.streams.values():
            order = np.argsort(log.t_end_us, kind="stable")
            t_end = np.asarray(log.t_end_us, dtype=np.int64)[order]
            top1 = np.asarray(log.top1, dtype=np.int64)[order]
            for label, start_us, end_us in log.segments:
                first = int(np.searchsorted(t_end, start_us, side="right"))
                last = int(np.searchsorted(t_end, end_us, side="right"))
                right = top1[first:last] == label
                if not len(right) or not right[-1]:
                    undecided += 1
                    continue
                wrong = np.flatnonzero(~right)
                settled = int(wrong[-1]) + 1 if len(wrong) else 0
                latencies.append((int(t_end[first + settled]) - start_us) / 1e3)
        return latencies, undecided

    def latency(self) -> dict[str, Any]:
        return {
            "latency_ms_p50": percentile(self.latency_ms, 50),
            "latency_ms_p99": percentile(self.latency_ms, 99),
            "closing_latency_ms_p50": percentile(self.closing_latency_ms, 50),
            "closing_latency_ms_p99": percentile(self.closing_latency_ms, 99),
            "worker_ms_p50": percentile(self.worker_ms, 50),
            "worker_ms_p99": percentile(self.worker_ms, 99),
        }


def summarise(
    log: PredictionLog,
    worker_stats: dict | None,
    producer_stats: dict | None,
    **extra: Any,
) -> dict[str, Any]:
    """The demo's one JSON object (docs/streaming.md lists the fields)."""
    worker_stats = worker_stats or log.last_stats or {}
    producer_stats = producer_stats or {}
    streams = worker_stats.get("streams") or {}
    producer_dropped = int(producer_stats.get("dropped_events") or 0)
    worker_dropped = int(worker_stats.get("dropped_events") or 0)
    steps_skipped = int(worker_stats.get("steps_skipped") or 0)
    summary: dict[str, Any] = {
        **extra,
        "streams": sorted(log.streams),
        "predictions": log.predictions,
        "hops": sum(int(s.get("steps", 0)) for s in streams.values()),
        "hop_us": log.hop_us or worker_stats.get("hop_us"),
        "dropped": producer_dropped + worker_dropped,
        "steps_skipped": steps_skipped,
        "drops": {
            "producer_events": producer_dropped,
            "producer_messages": int(producer_stats.get("dropped_messages") or 0),
            "worker_events": worker_dropped,
            "worker_messages": int(worker_stats.get("dropped_messages") or 0),
            "worker_steps_skipped": steps_skipped,
            "missing_messages": sum((worker_stats.get("missing_messages") or {}).values()),
            "malformed": worker_stats.get("malformed") or {},
            "predictions_dropped": int(worker_stats.get("predictions_dropped") or 0),
        },
        "events": producer_stats.get("events"),
        **log.latency(),
        **log.accuracy(),
    }
    if "streaming_accuracy" not in summary:
        summary["streaming_accuracy"] = None
    summary["worker"] = {
        key: worker_stats.get(key)
        for key in ("model", "device", "hop_us", "ema_tau_us", "overload", "peak_rss_mb")
    }
    return summary
