"""`stcsnn bench compress`: offline STC and count-frame throughput on one thread.

Generates N events on a 128x128 sensor in memory (seeded: uniform pixels and
polarities, sorted timestamps at ``--rate`` events/s, 1 M/s by default, so
10 M events span 10 s), compresses them as one clip of T steps with
``core.compress.compress_clip`` (the numpy core the training pipeline uses)
and prints one JSON object. Medians over ``--reps`` runs; one thread, because
the throughput per core is what decides how many cores a worker needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from core.events import EVENT_DTYPE, SensorSize

SENSOR = SensorSize(128, 128)


def synthetic_events(
    count: int, *, seed: int = 0, rate_per_s: float = 1e6, sensor: SensorSize = SENSOR
) -> np.ndarray:
    """``count`` events: uniform pixels and polarities, sorted uniform timestamps
    over ``count / rate_per_s`` seconds (uniform pixels are the worst case for
    the cache: real scenes hit fewer cells)."""
    rng = np.random.default_rng(seed)
    events = np.empty(count, dtype=EVENT_DTYPE)
    duration_us = max(int(count / rate_per_s * 1e6), 1)
    events["timestamp"] = np.sort(rng.integers(0, duration_us, count))
    events["x"] = rng.integers(0, sensor.width, count)
    events["y"] = rng.integers(0, sensor.height, count)
    events["polarity"] = rng.integers(0, 2, count)
    return events


def single_thread() -> None:
    """Pin torch to one thread (numpy's ufuncs and bincount are single-threaded)."""
    import torch

    torch.set_num_threads(1)


def time_runs(fn, reps: int) -> list[float]:
    """Wall seconds of ``reps`` calls after one warm-up call."""
    fn()
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(events: np.ndarray, steps: int, reps: int, spatial_factor: int = 1) -> dict:
    """Throughput of STC and count-frame compression of ``events`` as one clip."""
    from core.compress import CompressionConfig, compress_clip

    result = {}
    for mode in ("stc", "count"):
        config = CompressionConfig(
            SENSOR.width, SENSOR.height, spatial_factor=spatial_factor, steps=steps, mode=mode
        )
        seconds = time_runs(lambda config=config: compress_clip(events, config), reps)
        median = statistics.median(seconds)
        result[f"{mode}_events_per_s"] = len(events) / median
        result[f"{mode}_seconds"] = [round(s, 5) for s in seconds]
    return result


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
    }


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000_000, help="events to generate")
    parser.add_argument("--T", dest="steps", type=int, default=4, help="time steps per clip")
    parser.add_argument("--spatial-factor", type=int, default=1, help="sum-pooling factor s")
    parser.add_argument("--rate", type=float, default=1e6, help="event rate, events/s")
    parser.add_argument("--reps", type=int, default=5, help="timed runs per mode (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file")


def run(args: argparse.Namespace) -> int:
    if args.events < 1 or args.reps < 1 or args.steps < 1:
        print("bench compress: --events, --reps and --T must be >= 1", file=sys.stderr)
        return 2
    single_thread()
    events = synthetic_events(args.events, seed=args.seed, rate_per_s=args.rate)
    result = {
        "benchmark": "compress",
        "events": args.events,
        "steps": args.steps,
        "sensor": str(SENSOR),
        "spatial_factor": args.spatial_factor,
        "duration_us": int(events["timestamp"][-1] - events["timestamp"][0]),
        "reps": args.reps,
        "threads": 1,
        **measure(events, args.steps, args.reps, args.spatial_factor),
        "machine": machine(),
    }
    text = json.dumps(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(text)
    else:
        print(
            f"{args.events:,} events, T={args.steps}, {SENSOR}, one thread: "
            f"STC {result['stc_events_per_s'] / 1e6:.0f} M events/s, "
            f"count {result['count_events_per_s'] / 1e6:.0f} M events/s"
        )
        print(text)
    return 0
