"""The latency harness: the real processes on loopback, and the same events measured
in-process beside them (the step alone, the bare compressor), in one run.

``stcsnn bench latency`` and ``stcsnn bench throughput`` (stcsnn/commands/) run it;
docs/benchmarks.md says what each figure means. It is the one module of the
processes layer that imports model and replay code: it measures them in-process.

Stages of one prediction, from clock readings on one machine (``time.time_ns``):

    wait_close     the hop's last events sent -> the events message that closes the hop sent
                   (a hop is complete only when an event at or after its end arrives)
    transport_in   that message sent by the producer -> received by the worker
    queue          received -> the worker's processing cycle started
    compress       sensor adapter + streaming compressor over the merged push
    step           the network step (runner.step)
    readout        EMA and softmax
    worker         received -> the prediction handed to the worker's socket
    transport_out  handed to the socket -> received here
    end_to_end     the hop's last events sent -> the prediction received here
    overhead       end_to_end - step
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.compress import CompressionConfig, StreamingCompressor
from core.events import SensorSize, concat_events
from core.source import DEFAULT_CHUNK_US, DEFAULT_MAX_CHUNK_EVENTS, Source
from streamer import wire
from streamer.pacing import DEFAULT_MESSAGE_SIZE, MessageSize
from streamer.pipeline import Pipeline
from streamer.prediction_log import PredictionLog, percentile
from streamer.processes import ChildFailed

STAGES = (
    "wait_close",
    "transport_in",
    "queue",
    "compress",
    "step",
    "readout",
    "worker",
    "transport_out",
    "end_to_end",
    "overhead",
)
WARMUP_US = 1_000_000  # predictions of the first second of event time are not scored
MAX_STEPS_TIMED = 300
QUIET_AFTER_PRODUCER_S = 3.0  # then the producer's end message is taken as lost
PRODUCER_DONE_S = 10.0  # after the end message: the producer's final stats, at most this late
REFERENCE_EVENTS = 5_000_000  # kept whole in-process for the step and compressor figures
COMPRESSOR_PUSH_EVENTS = 100_000  # the bare compressor's pushes (compressor_events_per_s)


# --- the workload, in-process ----------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What the producer publishes, as its command-line options, and how to make the
    same source in this process (the seeded synthetic generator, or the replay player)."""

    source_args: tuple[str, ...]
    description: str
    make_source: Callable[[], Source]

    @classmethod
    def synthetic(
        cls,
        rate: float,
        sensor: SensorSize,
        seconds: float,
        size: MessageSize = DEFAULT_MESSAGE_SIZE,
        seed: int = 0,
    ):
        from streamer.sources import SyntheticSource

        args = ("--synthetic", str(rate), "--sensor", f"{sensor.width}x{sensor.height}")
        args += ("--duration-s", str(seconds), "--seed", str(seed), *_size_args(size))
        duration_us = round(seconds * 1e6)
        return cls(
            args,
            f"synthetic {rate / 1e6:g} M ev/s, {sensor}, {seconds:g} s" + _size_note(size),
            lambda: SyntheticSource(
                rate,
                sensor=sensor,
                duration_us=duration_us,
                seed=seed,
                chunk_us=size.chunk_us,
                max_chunk_events=size.max_events,
            ),
        )

    @classmethod
    def replay(cls, path: str, limit: int | None = None, size: MessageSize = DEFAULT_MESSAGE_SIZE):
        from replay.player import open_replay

        args = ("--replay", str(path), *_size_args(size))
        args += ("--limit", str(limit)) if limit else ()
        return cls(
            args,
            f"replay of {path}" + (f" ({limit} recordings)" if limit else "") + _size_note(size),
            lambda: open_replay(
                path, limit=limit, chunk_us=size.chunk_us, max_chunk_events=size.max_events
            ),
        )

    def reference(self, max_events: int = REFERENCE_EVENTS) -> Reference:
        """The same events in this process: the first ``max_events`` of them kept whole,
        all of them counted per millisecond of event time."""
        source = self.make_source()
        reference = Reference(source.sensor)
        try:
            for item in source.items(threading.Event()):
                reference.add(item, max_events)
        finally:
            source.close()
        return reference


def _size_args(size: MessageSize) -> tuple[str, ...]:
    return ("--chunk-us", str(size.chunk_us), "--max-chunk-events", str(size.max_events))


def _size_note(size: MessageSize) -> str:
    """The message size in a description, where it is not the default's."""
    note = "" if size.chunk_us == DEFAULT_CHUNK_US else f", {size.chunk_us} µs per message"
    if size.max_events != DEFAULT_MAX_CHUNK_EVENTS:
        note += f" (at most {size.max_events:,} events)"
    return note


@dataclass
class Reference:
    """The workload's events as the harness keeps them (``Workload.reference``)."""

    sensor: SensorSize
    chunks: list[np.ndarray] = field(default_factory=list)  # the first events, whole
    kept_events: int = 0
    events: int = 0
    first_us: int | None = None
    last_us: int | None = None

    def add(self, item, max_events: int) -> None:
        if not isinstance(item, np.ndarray) or not len(item):
            return
        self.events += len(item)
        if self.first_us is None:
            self.first_us = int(item["timestamp"][0])
        self.last_us = int(item["timestamp"][-1])
        if self.kept_events < max_events:
            self.chunks.append(item)
            self.kept_events += len(item)

    def events_per_us(self) -> float:
        """The workload's mean rate in event time."""
        if self.first_us is None:
            return 0.0
        return self.events / (self.last_us - self.first_us + 1)


@dataclass(frozen=True)
class ModelChoice:
    """Which model the harness runs, and how: as ``stcsnn worker`` options."""

    checkpoint: str | None = None  # None: the project's default for the sensor
    hop_us: int | None = None  # None: the checkpoint's
    device: str = "auto"
    cuda_graph: bool = False
    window: int | None = None  # None: the checkpoint's streaming mode; 0: stateful

    def worker_args(self, checkpoint: str) -> list[str]:
        args = ["--model", checkpoint, "--device", self.device]
        args += ["--hop-us", str(self.hop_us)] if self.hop_us else []
        args += ["--window", str(self.window)] if self.window is not None else []
        return args + (["--cuda-graph"] if self.cuda_graph else [])


# --- in-process references --------------------------------------------------------------


def compressor_events_per_s(chunks: list[np.ndarray], compression: CompressionConfig) -> float:
    """The bare streaming compressor over ``chunks`` (input already in the model's
    sensor), merged into pushes of at least COMPRESSOR_PUSH_EVENTS (as a worker at full
    speed merges what is pending; fewer, larger pushes are the compressor's best
    case): median events/s of three passes, after one warm-up pass."""
    pushes, piece, piece_events = [], [], 0
    for chunk in chunks:
        piece.append(chunk)
        piece_events += len(chunk)
        if piece_events >= COMPRESSOR_PUSH_EVENTS:
            pushes.append(concat_events(piece))
            piece, piece_events = [], 0
    pushes += [concat_events(piece)] if piece else []
    events = sum(len(p) for p in pushes)
    seconds = []
    for _ in range(4):
        compressor = StreamingCompressor(compression, start_us=0)
        started = time.perf_counter()
        for push in pushes:
            compressor.push(push)
        seconds.append(time.perf_counter() - started)
    return events / statistics.median(seconds[1:])


def adapted_chunks(chunks, sensor: SensorSize, compression: CompressionConfig):
    from core.adapt import SensorAdapter

    adapter = SensorAdapter(sensor, compression.input_sensor)
    return [adapter(chunk) for chunk in chunks]


def step_times_ms(runner, chunks, compression: CompressionConfig) -> list[float]:
    """``runner.step`` on the real compressed steps of ``chunks``, one stream."""
    compressor = StreamingCompressor(compression, start_us=0)
    values = []
    for chunk in chunks:
        values += list(compressor.push(chunk).values)
        if len(values) >= MAX_STEPS_TIMED:
            break
    slot = runner.new_slot()
    for x in values[:3]:
        runner.step(x, slot)
    times = []
    for x in values:
        started = time.perf_counter()
        runner.step(x, slot)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def in_process_runner(choice: ModelChoice, sensor: SensorSize):
    """(runner, compression with the hop, checkpoint path) as ``stcsnn worker`` builds them."""
    from models.runner import (
        choose_device,
        configure_threads,
        default_checkpoint_path,
        load_model,
        make_runner,
    )
    from streamer.stream_pipeline import stream_compression

    path = choice.checkpoint or default_checkpoint_path(sensor)
    configure_threads(None)
    loaded = load_model(path)
    window = (loaded.config.stream_window_steps if choice.window is None else choice.window) or None
    runner = make_runner(
        loaded.model, choose_device(choice.device), cuda_graph=choice.cuda_graph,
        window_steps=window,
    )  # fmt: skip
    compression = stream_compression(loaded.config.compression, choice.hop_us)
    return runner, compression, str(path)


# --- the processes ----------------------------------------------------------------------


@dataclass
class Observed:
    """What the harness's subscriber saw of one run."""

    predictions: list[tuple[wire.Prediction, int]] = field(default_factory=list)
    log: PredictionLog = field(default_factory=PredictionLog)
    producer: dict[str, Any] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)
    end_received: bool = False
    wall_s: float = 0.0


def run_processes(
    workload: Workload,
    choice: ModelChoice,
    checkpoint: str,
    *,
    speed: str,
    lossless: bool,
    timeout_s: float,
    preload: bool = False,
    transport: str = "tcp",
) -> Observed:
    """producer -> worker -> here; until every stream ended (or the producer finished
    and the worker was quiet for 3 s with nothing pending: a lossless producer that
    gave up on its end message)."""
    mode = ["--lossless"] if lossless else []
    worker_args = ["--quiet", "--threads", "1", *mode, *choice.worker_args(checkpoint)]
    pipeline = Pipeline(
        workload.source_args,
        producer_args=["--speed", speed, "--quiet", *mode, *(["--preload"] if preload else [])],
        worker_args=worker_args,
        transport=transport,
    )
    observed = Observed()
    started = time.monotonic()
    with pipeline:
        while time.monotonic() - started < timeout_s:
            received = pipeline.receive(timeout_ms=100)
            if received is None:
                if pipeline.quiet_after_producer_s() > QUIET_AFTER_PRODUCER_S:
                    break
                continue
            message, received_ns = received
            observed.log.add(message, received_ns)
            if isinstance(message, wire.Prediction):
                observed.predictions.append(received)
            if isinstance(message, wire.End):
                observed.end_received = True
                break
        if observed.end_received:
            # Its stats (the first events' send time) come when it exits after end;
            # stopping it first sometimes lost them.
            try:
                pipeline.producer.wait_status("done", PRODUCER_DONE_S)
            except ChildFailed:
                pass  # without them the report gives no events_per_s
    observed.wall_s = time.monotonic() - started
    observed.producer = pipeline.producer_stats or {}
    observed.worker = pipeline.worker_stats or {}
    return observed


def stage_samples_ms(predictions: Sequence[tuple[wire.Prediction, int]]) -> dict[str, list]:
    """Per stage, one value per prediction after the warm-up (module docstring)."""
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    first_us = predictions[0][0].t_end_us if predictions else 0
    for p, arrived_ns in predictions:
        if p.t_end_us - first_us < WARMUP_US or not p.published_ns:
            continue
        t = p.timings_ms
        end_to_end = (arrived_ns - p.sent_ns) / 1e6
        values = {
            "wait_close": (p.closed_by_sent_ns - p.sent_ns) / 1e6,
            "transport_in": (p.closed_by_received_ns - p.closed_by_sent_ns) / 1e6,
            "queue": t.get("receive", math.nan),
            "compress": t.get("compress", math.nan),
            "step": t.get("step", math.nan),
            "readout": t.get("readout", math.nan),
            "worker": (p.published_ns - p.closed_by_received_ns) / 1e6,
            "transport_out": (arrived_ns - p.published_ns) / 1e6,
            "end_to_end": end_to_end,
            "overhead": end_to_end - t.get("step", math.nan),
        }
        for stage, value in values.items():
            samples[stage].append(value)
    return samples


def summary_ms(samples: dict[str, list[float]]) -> dict[str, dict[str, float | None]]:
    return {
        stage: {"p50": _round(percentile(v, 50)), "p99": _round(percentile(v, 99))}
        for stage, v in samples.items()
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def dropped(observed: Observed) -> int | None:
    """Events the producer and the worker dropped; None (unknown, not zero) when the
    final stats of either never came."""
    if not observed.producer or not observed.worker:
        return None
    return int(observed.producer.get("dropped_events") or 0) + int(
        observed.worker.get("dropped_events") or 0
    )


def steps_skipped(observed: Observed) -> int | None:
    """Steps the worker did not run under overload; None when its stats never came."""
    return int(observed.worker.get("steps_skipped") or 0) if observed.worker else None


def _stream_counters(observed: Observed) -> list[dict[str, int]]:
    """The worker's counters of every stream (those no longer listed summed in one)."""
    streams = list((observed.worker.get("streams") or {}).values())
    return [*streams, observed.worker.get("streams_not_listed") or {}]


def refused(observed: Observed) -> dict[str, int | None]:
    """What reached the worker and was not classified: messages refused as malformed
    or missing from the sequence, events rejected or arriving late. All zero in a
    sound run: a rate over refused events would count work never done. None each
    (unknown) when the worker's final stats never came."""
    names = ("malformed_messages", "missing_messages", "events_rejected", "events_late")
    if not observed.worker:
        return dict.fromkeys(names)
    streams = _stream_counters(observed)
    return {
        "malformed_messages": sum((observed.worker.get("malformed") or {}).values()),
        "missing_messages": sum((observed.worker.get("missing_messages") or {}).values()),
        "events_rejected": sum(int(c.get("events_rejected", 0)) for c in streams),
        "events_late": sum(int(c.get("events_late", 0)) for c in streams),
    }


def events_processed_per_s(observed: Observed) -> float | None:
    """The rate the pipeline got through: the events the worker pushed into its
    compressor, per second from the producer's first events message to the last
    prediction's arrival (the final one follows the stream's end, after the last
    events). Two earlier ways overstated it: timing from the first prediction (the
    worker predicts several hops of a push at once, so the first arrives after events
    beyond its hop were processed), and counting the events sent rather than those
    processed (a producer bug got half the messages of dense streams refused)."""
    first_ns = observed.producer.get("first_events_ns")
    if not observed.predictions or first_ns is None:
        return None
    events = sum(int(c.get("events", 0)) for c in _stream_counters(observed))
    last_ns = observed.predictions[-1][1]
    if last_ns <= first_ns or not events:
        return None
    return events / ((last_ns - first_ns) / 1e9)


# --- reports ------------------------------------------------------------------------------


def latency_report(
    workload: Workload,
    choice: ModelChoice,
    *,
    speed: str = "1",
    lossless: bool = False,
    timeout_s: float = 600.0,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """One run at ``speed`` (live policy unless ``lossless``), with the step and the
    bare compressor measured in-process on the same events; (report, stage samples)."""
    reference = workload.reference()
    runner, compression, path = in_process_runner(choice, reference.sensor)
    adapted = adapted_chunks(reference.chunks, reference.sensor, compression)
    step_ms = step_times_ms(runner, adapted, compression)
    compressor_rate = compressor_events_per_s(adapted, compression)
    observed = run_processes(
        workload, choice, path, speed=speed, lossless=lossless, timeout_s=timeout_s
    )
    samples = stage_samples_ms(observed.predictions)
    stages = summary_ms(samples)
    report = {
        "source": workload.description,
        "model": path,
        "device": runner.description,
        "hop_us": compression.step_us,
        "speed": speed,
        "policy": "lossless" if lossless else "live",
        "latency_ms_p50": stages["end_to_end"]["p50"],
        "latency_ms_p99": stages["end_to_end"]["p99"],
        "step_ms_p50": _round(percentile(step_ms, 50)),
        "overhead_ms_p50": stages["overhead"]["p50"],
        "events_per_s": _round(events_processed_per_s(observed), 0),
        "events": reference.events,
        "dropped": dropped(observed),
        **refused(observed),
        "steps_skipped": steps_skipped(observed),
        "compressor_events_per_s": round(compressor_rate),
        "predictions": len(observed.predictions),
        "scored_predictions": len(samples["end_to_end"]),
        "end_received": observed.end_received,
        "producer_max_lateness_ms": round(1e3 * observed.producer.get("max_lateness_s", 0.0), 1),
        "stages_ms": stages,
        "stage_definitions": __doc__.split("one machine (``time.time_ns``):")[1].strip(),
    }
    accuracy = observed.log.accuracy()
    if accuracy:
        report["streaming_accuracy"] = accuracy["streaming_accuracy"]
        report["segments"] = accuracy["segments"]
        report["decision_latency_ms_p50"] = _round(accuracy["decision_latency_ms_p50"])
        report["undecided_segments"] = accuracy["undecided_segments"]
    return report, samples


def throughput_report(
    workload: Workload, choice: ModelChoice, *, timeout_s: float = 600.0, transport: str = "tcp"
) -> dict[str, Any]:
    """Producer -> worker lossless and unpaced: the events per second the pipeline gets
    through, beside the bare compressor on the same events in the same run. The
    producer preloads its source (``--preload``): generating or reading the events is
    not what is measured, and would take one of the cores from the pipeline."""
    reference = workload.reference()
    runner, compression, path = in_process_runner(choice, reference.sensor)
    adapted = adapted_chunks(reference.chunks, reference.sensor, compression)
    compressor_rate = compressor_events_per_s(adapted, compression)
    step_ms = step_times_ms(runner, adapted, compression)
    observed = run_processes(
        workload,
        choice,
        path,
        speed="max",
        lossless=True,
        timeout_s=timeout_s,
        preload=True,
        transport=transport,
    )
    rate = events_processed_per_s(observed)
    return {
        "source": workload.description,
        "model": path,
        "device": runner.description,
        "hop_us": compression.step_us,
        "transport": transport,
        "events": reference.events,
        "events_per_hop": round(reference.events_per_us() * compression.step_us, 1),  # fmt: skip
        "events_per_s": _round(rate, 0),
        "compressor_events_per_s": round(compressor_rate),
        "ratio": _round(rate / compressor_rate if rate else None),
        "step_ms_p50": _round(percentile(step_ms, 50)),
        "dropped": dropped(observed),
        **refused(observed),
        "steps_skipped": steps_skipped(observed),
        "end_received": observed.end_received,
        "wall_s": round(observed.wall_s, 3),
    }


def plot_stages(samples: dict[str, list[float]], path: Path, title: str) -> Path:
    """The latency CDF of every stage (log time axis) as a PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    for stage in STAGES:
        values = np.sort(np.asarray([v for v in samples[stage] if v > 0], dtype=float))
        if len(values):
            axes.plot(values, np.arange(1, len(values) + 1) / len(values), label=stage)
    axes.set_xscale("log")
    axes.set_xlabel("ms")
    axes.set_ylabel("fraction of predictions")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_rates(reports: list[dict[str, Any]], path: Path, title: str) -> Path:
    """End-to-end p50/p99 and events dropped versus the input rate, as a PNG."""
    plt = _pyplot()
    rates = [r["rate"] for r in reports]
    figure, (latency, drops) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("latency_ms_p50", "latency_ms_p99"):
        latency.plot(rates, [r[key] for r in reports], marker="o", label=key[11:])
    latency.set(xscale="log", yscale="log", xlabel="input events/s", ylabel="end to end, ms")
    latency.legend()
    for key, label in (("dropped", "events dropped"), ("steps_skipped", "steps skipped")):
        counts = [math.nan if r[key] is None else r[key] for r in reports]  # None: unknown
        drops.plot(rates, counts, marker="o", label=label)
    drops.set(xscale="log", xlabel="input events/s")
    drops.legend()
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _pyplot():
    """matplotlib's pyplot on the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
