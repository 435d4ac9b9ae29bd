"""Streaming latency and sustained throughput: producer process -> worker process -> here.

    .venv/bin/python benchmarks/bench_latency.py [--seconds 5] [--skip-compile]

Writes benchmarks/results/latency.json. Three parts:

1. **step**: one network step in-process (the worker's ``StepRunner``), CPU,
   eager with 1 and 2 torch threads and (unless ``--skip-compile``)
   ``torch.compile`` with 1 thread, for the N-MNIST (2x34x34) and DVS128
   Gesture (2x64x64) shapes: median and p90 of 300/100 steps, plus the compile
   time.
2. **latency**: ``stcsnn produce --synthetic RATE --speed 1`` (a 128x128 sensor,
   1 ms chunks, real time, dropping at full queues like a live camera) ->
   ``stcsnn worker --hop-us 10000`` (live overload policy, 1 CPU thread) -> a
   SUB socket here, for both network shapes (untrained weights: the cost does
   not depend on them) at 0.1, 1 and 10 M events/s. Latency of a prediction =
   received here - ``sent_ns`` of the last events message holding an event of
   its hop (what the issue asks: last event of the hop published -> prediction
   received); ``closing`` is from the message that closed the hop instead
   (the worker cannot know a hop is complete before an event of the next one
   arrives, so the difference is about one 1 ms chunk). The first second is a
   warm-up and not counted. Drops (producer + worker queue) and skipped steps
   are reported, with the producer's lateness (how far behind real time it
   fell: the synthetic generator shares the 2 cores).
3. **throughput**: ``--speed max --lossless`` on both sides, nothing dropped
   or skipped by construction, at event densities of 1 and 10 M events per
   second of event time (10,000 and 100,000 events per 10 ms hop):
   ``real_time_factor`` is the event time the worker got through per second
   of wall time (from the pace of its predictions after the first second),
   ``events_per_s_processed`` = density x that factor: the events/s the
   pipeline sustains without drops at that density (>= the density: it keeps
   up with a live sensor of that rate). A lossless producer gives up on its
   ``end`` message after 0.5 s at a full queue and closes, losing what was
   still queued (reported to the producer's owner); the run then ends after
   3 s without predictions (``end_received`` false).

The machine is shared with other engineers (2 cores), so every case runs
``--repeats`` times (3), interleaved with the others; the summary rows are the
medians over the repeats (of p50, p99, drops...), every run is kept in
``runs`` with the load average before and after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from streamer import wire
from streamer.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent

SHAPES = {"nmnist": "N-MNIST 2x34x34", "dvsgesture": "DVS128 Gesture 2x64x64"}
HOP_US = 10_000
log = logging.getLogger("bench_latency")


def _checkpoint(folder: Path, name: str) -> Path:
    import torch

    from models.checkpoint import save_checkpoint
    from models.networks import build_network, get_config

    torch.manual_seed(0)
    config = get_config(name).with_changes(window_us=HOP_US * get_config(name).compression.steps)
    return save_checkpoint(folder / f"{name}.pt", build_network(config).eval(), config)


def bench_steps(skip_compile: bool) -> list[dict]:
    import torch

    from models.networks import build_network, get_config
    from models.runner import configure_threads, make_runner

    results = []
    variants = [("eager", 1), ("eager", 2)] + ([] if skip_compile else [("compile", 1)])
    for name in SHAPES:
        torch.manual_seed(0)
        config = get_config(name)
        x = (np.random.default_rng(0).random(config.input_shape) * 3).astype(np.float32)
        for kind, threads in variants:
            configure_threads(threads)
            model = build_network(config).eval()
            started = time.perf_counter()
            runner = make_runner(model, torch.device("cpu"), compile=kind == "compile")
            runner.warmup()
            warmup_s = time.perf_counter() - started
            slot = runner.new_slot()
            times = []
            for _ in range(300 if name == "nmnist" else 100):
                t = time.perf_counter()
                runner.step(x, slot)
                times.append((time.perf_counter() - t) * 1e3)
            results.append(
                {
                    "shape": name,
                    "variant": kind,
                    "threads": threads,
                    "step_ms_p50": statistics.median(times),
                    "step_ms_p90": float(np.percentile(times, 90)),
                    "warmup_s": round(warmup_s, 2),
                    "load_average": os.getloadavg()[0],
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


def run_case(
    checkpoint: Path, shape: str, rate: str, seconds: float, lossless: bool = False
) -> dict:
    """One producer -> worker -> here run; ``lossless``: unpaced and nothing dropped
    (throughput), else real time with the live policy (latency)."""
    load_before = os.getloadavg()[0]
    mode = ["--speed", "max", "--lossless"] if lossless else ["--speed", "1"]
    pipeline = Pipeline(
        ["--synthetic", rate],
        producer_args=[*mode, "--duration-s", str(seconds + 1), "--stream-id", "cam0", "--quiet"],
        worker_args=[
            "--model", str(checkpoint), "--hop-us", str(HOP_US), "--threads", "1",
            "--exit-on-end", "--quiet", *(["--lossless"] if lossless else []),
        ],
        cwd=ROOT,
    )  # fmt: skip
    received: list[tuple[wire.Message, int]] = []
    end_received = False
    with pipeline:
        quiet_since = deadline = time.monotonic()
        deadline += seconds + 120
        # Until the end, or (a lossless producer gives up on `end` after 0.5 s at a full
        # queue and closes, losing the tail: see docs/streaming.md) a finished producer
        # and 3 s without predictions.
        while not end_received:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no end within {seconds + 120} s ({len(received)} messages)")
            arrived = pipeline.receive(timeout_ms=100)
            if arrived is not None:
                received.append(arrived)
                end_received = isinstance(arrived[0], wire.End)
                if isinstance(arrived[0], wire.Prediction):
                    quiet_since = time.monotonic()
            finished = pipeline.producer.returncode == 0
            if finished and time.monotonic() - quiet_since > 3.0:
                break
    produced = pipeline.producer_stats or {}
    stats = pipeline.worker_stats or {}
    stream = (stats.get("streams") or {}).get("cam0", {})
    latency, closing, in_worker, infer, paced = [], [], [], [], []
    for message, arrived_ns in received:
        if not isinstance(message, wire.Prediction) or message.t_end_us < 1_000_000:
            continue
        paced.append((message.t_end_us, arrived_ns))
        latency.append((arrived_ns - message.sent_ns) / 1e6)
        closing.append((arrived_ns - message.closed_by_sent_ns) / 1e6)
        in_worker.append(message.timings_ms["worker"])
        infer.append(message.timings_ms["infer"])

    def pct(values, q):
        return round(float(np.percentile(values, q)), 3) if values else None

    # Event time the worker got through per wall second (after the first second).
    factor = None
    if len(paced) > 1 and paced[-1][1] > paced[0][1]:
        factor = (paced[-1][0] - paced[0][0]) / 1e6 / ((paced[-1][1] - paced[0][1]) / 1e9)
    density = produced["events"] / (seconds + 1) if produced.get("events") else None
    result = {
        "shape": shape,
        "rate": rate,
        "mode": "lossless, unpaced" if lossless else "real time, live policy",
        "seconds": seconds,
        "events_sent": produced.get("events"),
        "events_per_s_sent": round(produced["events"] / produced["wall_s"])
        if produced.get("wall_s")
        else None,
        "real_time_factor": round(factor, 3) if factor else None,
        "events_per_s_processed": round(density * factor) if factor and density else None,
        "end_received": end_received,
        "producer_dropped_events": produced.get("dropped_events"),
        "producer_max_lateness_ms": round(1e3 * produced.get("max_lateness_s", 0.0), 1),
        "worker_dropped_events": stats.get("dropped_events"),
        "steps": stream.get("steps"),
        "predictions": stream.get("predictions"),
        "steps_skipped": stream.get("steps_skipped"),
        "latency_ms_p50": pct(latency, 50),
        "latency_ms_p99": pct(latency, 99),
        "latency_ms_max": pct(latency, 100),
        "closing_latency_ms_p50": pct(closing, 50),
        "closing_latency_ms_p99": pct(closing, 99),
        "worker_ms_p50": pct(in_worker, 50),
        "worker_ms_p99": pct(in_worker, 99),
        "infer_ms_p50": pct(infer, 50),
        "scored_predictions": len(latency),
        "worker_peak_rss_mb": stats.get("peak_rss_mb"),
        "load_average": [load_before, os.getloadavg()[0]],
    }
    result["without_drops"] = (
        not result["producer_dropped_events"]
        and not result["worker_dropped_events"]
        and not result["steps_skipped"]
        and result["producer_max_lateness_ms"] < 100
    )
    print(json.dumps(result), flush=True)
    return result


def median_of(runs: list[dict]) -> dict:
    """Per field, the median over repeated runs of one case (numbers only)."""
    out = {k: v for k, v in runs[0].items() if not isinstance(v, (int, float)) or k == "seconds"}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seconds":
            values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
            out[key] = statistics.median(values) if values else None
    out["without_drops"] = [r["without_drops"] for r in runs]
    out["end_received"] = [r["end_received"] for r in runs]
    out["load_average"] = [r["load_average"] for r in runs]
    out["repeats"] = len(runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="event time per case")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (medians)")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/latency.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work)",
        "hop_us": HOP_US,
        "sensor": "128x128 synthetic (streamer.sources.SyntheticSource), 1 ms chunks",
        "repeats": args.repeats,
        "steps": bench_steps(args.skip_compile),
    }
    latency_cases = [(name, rate, False) for name in SHAPES for rate in ("100k", "1M", "10M")]
    throughput_cases = [(name, rate, True) for name in SHAPES for rate in ("1M", "10M")]
    runs: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        checkpoints = {name: _checkpoint(Path(folder), name) for name in SHAPES}
        for _ in range(args.repeats):  # interleaved, so that load spikes spread over cases
            for name, rate, lossless in latency_cases + throughput_cases:
                case = run_case(checkpoints[name], name, rate, args.seconds, lossless)
                runs.setdefault((name, rate, lossless), []).append(case)
    results["latency"] = [median_of(runs[c]) for c in latency_cases]
    results["throughput_lossless"] = [median_of(runs[c]) for c in throughput_cases]
    results["runs"] = [run for case_runs in runs.values() for run in case_runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for row in results["latency"] + results["throughput_lossless"]:
        print(
            f"{row['shape']:>10} {row['rate']:>5} {row['mode']:<24} "
            f"p50 {row['latency_ms_p50']} ms p99 {row['latency_ms_p99']} ms "
            f"processed {row['events_per_s_processed']} ev/s x{row['real_time_factor']} "
            f"dropped {row['producer_dropped_events']}+{row['worker_dropped_events']} "
            f"skipped {row['steps_skipped']}/{row['steps']} ok {row['without_drops']}"
        )


if __name__ == "__main__":
    main()
