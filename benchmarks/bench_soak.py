"""A soak: the real producer and worker at a high live rate for minutes, watching memory
and latency drift.

    .venv/bin/python benchmarks/bench_soak.py [--rate 5M] [--minutes 10] [--sensor 128x128]

Producer: synthetic events in real time, live policy (drops counted, never waits);
worker: the project's checkpoint for the sensor. Every ``--window-s`` seconds it
records the end-to-end latency percentiles of the predictions received, the
predictions per second, the producer's and the worker's resident memory and the
drops so far. Writes benchmarks/results/soak.json; the figures are in
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stcsnn.commands.produce import parse_rate
from streamer import wire
from streamer.pipeline import Pipeline
from streamer.prediction_log import percentile

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def soak(rate: float, sensor: str, seconds: float, window_s: float) -> dict:
    pipeline = Pipeline(
        ["--synthetic", str(rate), "--sensor", sensor],
        producer_args=["--speed", "1", "--quiet"],
        worker_args=["--quiet", "--threads", "1", "--stats-interval-s", "1"],
    )
    windows, latencies, predictions, stats = [], [], 0, {}
    with pipeline:
        started = window_start = time.monotonic()
        while time.monotonic() - started < seconds:
            received = pipeline.receive(timeout_ms=100)
            if received is not None:
                message, arrived_ns = received
                if isinstance(message, wire.Prediction):
                    latencies.append((arrived_ns - message.sent_ns) / 1e6)
                    predictions += 1
                elif isinstance(message, wire.Stats):
                    stats = message.values
            if time.monotonic() - window_start >= window_s:
                windows.append(
                    {
                        "t_s": round(time.monotonic() - started, 1),
                        "latency_ms_p50": round(percentile(latencies, 50) or 0, 3),
                        "latency_ms_p99": round(percentile(latencies, 99) or 0, 3),
                        "predictions_per_s": round(
                            predictions / (time.monotonic() - window_start), 1
                        ),
                        "producer_rss_mb": rss_mb(pipeline.producer.process.pid),
                        "worker_rss_mb": rss_mb(pipeline.worker.process.pid),
                        "worker_dropped_events": stats.get("dropped_events"),
                        "steps_skipped": stats.get("steps_skipped"),
                        "events_received": sum((stats.get("events_received") or {}).values()),
                    }
                )
                print(json.dumps(windows[-1]), flush=True)
                latencies, predictions, window_start = [], 0, time.monotonic()
    producer = pipeline.producer_stats or {}
    return {
        "rate": rate,
        "sensor": sensor,
        "seconds": seconds,
        "windows": windows,
        "producer_dropped_events": producer.get("dropped_events"),
        "producer_events": producer.get("events"),
        "producer_max_lateness_s": producer.get("max_lateness_s"),
        "worker_final": {
            k: (pipeline.worker_stats or {}).get(k)
            for k in ("dropped_events", "steps_skipped", "errors", "peak_rss_mb", "rss_mb")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=parse_rate, default=5e6)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sensor", default="128x128")
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/soak.json")
    args = parser.parse_args()
    result = soak(args.rate, args.sensor, args.minutes * 60, args.window_s)
    first, last = result["windows"][0], result["windows"][-1]
    result["drift"] = {
        "worker_rss_mb": [first["worker_rss_mb"], last["worker_rss_mb"]],
        "producer_rss_mb": [first["producer_rss_mb"], last["producer_rss_mb"]],
        "latency_ms_p50": [first["latency_ms_p50"], last["latency_ms_p50"]],
        "latency_ms_p99": [first["latency_ms_p99"], last["latency_ms_p99"]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("drift", "producer_dropped_events", "worker_final")}))


if __name__ == "__main__":
    main()
