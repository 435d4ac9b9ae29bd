"""Compression benchmark: offline throughput against Tonic, streaming cost per hop,
and the cost of the optional dv-processing noise filter.

Writes benchmarks/results/compress.json.

Tonic is the reference a user would otherwise pick, but it pulls librosa, numba
and scikit-learn, so it lives only in this benchmark's own venv, never in the
project's dependencies::

    python3 -m venv benchmarks/env
    benchmarks/env/bin/pip install torch==2.13.0 tonic -e .
    benchmarks/env/bin/python benchmarks/bench_compress.py

(benchmarks/env/ is git-ignored.) Run from the project's own venv instead, the
Tonic entry says it was skipped and everything else is measured.

Method: one thread (torch.set_num_threads(1); numpy's ufuncs and bincount are
single-threaded). Offline: ``--events`` synthetic events (128x128, uniform
pixels, sorted timestamps at 1 M events/s: 10 M events span 10 s) compressed
as one clip of T = 4 steps; the methods run interleaved, one call each per
round, so that load from other processes on this shared machine hits them
alike; medians over ``--reps`` rounds of wall time (and of this thread's CPU
time, which excludes time the scheduler gave to others). Streaming: a 10 ms hop
(window 40 ms, T = 4, 128x128 -> 64x64), events fed in 1 ms and 10 ms chunks;
cost per hop = push time / hops emitted (wall, and this thread's CPU time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from core.compress import CompressionConfig, StreamingCompressor, compress_clip
from core.events import SensorSize
from stcsnn.commands.bench_compress import SENSOR, machine, single_thread, synthetic_events

RESULTS = Path(__file__).resolve().parent / "results" / "compress.json"


def timed(fn) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def naive_numpy_count(events: np.ndarray, steps: int) -> np.ndarray:
    """A plain numpy count-frame: one combined index, one bincount (no blocks)."""
    t = events["timestamp"]
    span = int(t[-1] - t[0]) + 1
    step = (t - t[0]) * steps // span
    index = ((step * 2 + events["polarity"]) * SENSOR.height + events["y"]) * SENSOR.width
    index += events["x"]
    return np.bincount(index, minlength=steps * 2 * SENSOR.height * SENSOR.width)


def tonic_method(events: np.ndarray, steps: int):
    """Tonic's ToFrame(n_time_bins=T) on the same memory (fields renamed t, x, y, p),
    or (None, reason) when Tonic is not installed in this interpreter."""
    try:
        import tonic
        from tonic.transforms import ToFrame
    except ImportError as error:
        return None, f"tonic not importable in {sys.executable}: {error}"
    tonic_dtype = np.dtype(
        {
            "names": ["t", "x", "y", "p"],
            "formats": ["<i8", "<i2", "<i2", "i1"],
            "offsets": [0, 8, 10, 12],
            "itemsize": 16,
        }
    )
    view = events.view(tonic_dtype)
    transform = ToFrame(sensor_size=(SENSOR.width, SENSOR.height, 2), n_time_bins=steps)
    return (lambda: transform(view)), tonic.__version__


def offline(events: np.ndarray, steps: int, reps: int) -> dict:
    methods = {
        "stc": lambda: compress_clip(events, CompressionConfig(128, 128, steps=steps)),
        "count": lambda: compress_clip(
            events, CompressionConfig(128, 128, steps=steps, mode="count")
        ),
        "naive_numpy_count": lambda: naive_numpy_count(events, steps),
    }
    tonic_fn, tonic_note = tonic_method(events, steps)
    if tonic_fn is not None:
        methods["tonic_to_frame"] = tonic_fn
    # Sanity: the same events are counted by every count method.
    totals = {"count": float(methods["count"]().sum())}
    totals["naive_numpy_count"] = int(methods["naive_numpy_count"]().sum())
    if tonic_fn is not None:
        totals["tonic_to_frame"] = int(tonic_fn().sum())
    walls = {name: [] for name in methods}
    cpus = {name: [] for name in methods}
    for _ in range(reps):
        for name, fn in methods.items():
            wall, cpu = timed(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)
    result = {
        "events": len(events),
        "steps": steps,
        "sensor": str(SENSOR),
        "reps": reps,
        "count_totals": totals,
        "tonic": tonic_note,
    }
    for name in methods:
        result[f"{name}_events_per_s"] = len(events) / statistics.median(walls[name])
        result[f"{name}_events_per_s_cpu"] = len(events) / statistics.median(cpus[name])
        result[f"{name}_wall_s"] = [round(s, 4) for s in walls[name]]
    if tonic_fn is not None:
        for name in ("stc", "count"):
            result[f"{name}_over_tonic"] = (
                result[f"{name}_events_per_s"] / result["tonic_to_frame_events_per_s"]
            )
            # Per-round ratios: both timed within the same second, so load cancels best here.
            per_round = [t / s for s, t in zip(walls[name], walls["tonic_to_frame"], strict=True)]
            result[f"{name}_over_tonic_per_round_median"] = statistics.median(per_round)
    return result


def streaming(rate_per_s: float, duration_s: float, chunk_us: int) -> dict:
    config = CompressionConfig(128, 128, spatial_factor=2, steps=4, window_us=40_000)
    events = synthetic_events(int(rate_per_s * duration_s), seed=1, rate_per_s=rate_per_s)
    t = events["timestamp"]
    edges = np.arange(0, int(t[-1]) + chunk_us, chunk_us)
    cuts = np.searchsorted(t, edges[1:])
    chunks = np.split(events, cuts)
    compressor = StreamingCompressor(config, start_us=0)
    push_s = []
    hops = 0
    cpu_start = time.thread_time()
    for chunk in chunks:
        start = time.perf_counter()
        steps = compressor.push(chunk)
        push_s.append(time.perf_counter() - start)
        hops += len(steps)
    cpu_s = time.thread_time() - cpu_start
    push_us = np.array(push_s) * 1e6
    return {
        "rate_events_per_s": rate_per_s,
        "hop_us": config.step_us,
        "chunk_us": chunk_us,
        "output_shape": list(config.output_shape),
        "events": len(events),
        "hops": hops,
        "per_hop_us": float(push_us.sum() / max(hops, 1)),
        # This thread's CPU time: what the hop costs without other processes' load.
        "per_hop_us_cpu": cpu_s * 1e6 / max(hops, 1),
        "push_median_us": float(np.median(push_us)),
        "push_p99_us": float(np.percentile(push_us, 99)),
        "events_per_s_cpu_bound": len(events) / max(push_us.sum() / 1e6, 1e-12),
    }


def noise_filter_cost(count: int = 1_000_000) -> dict:
    from streamer.noise_filter import NoiseFilter, to_event_store

    sensor = SensorSize(320, 240)
    events = synthetic_events(count, seed=2, sensor=sensor)
    wall_convert, _ = timed(lambda: to_event_store(events))
    store = to_event_store(events)
    noise_filter = NoiseFilter(sensor)
    wall_filter, _ = timed(lambda: noise_filter.filter_store(store))
    wall_total, _ = timed(lambda: NoiseFilter(sensor).filter(events))
    return {
        "events": count,
        "sensor": str(sensor),
        "numpy_to_event_store_events_per_s": count / wall_convert,
        "filter_store_events_per_s": count / wall_filter,
        "filter_numpy_events_per_s": count / wall_total,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--T", dest="steps", type=int, default=4)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    single_thread()
    load_before = machine()["load_average_1min"]
    events = synthetic_events(args.events)
    result = {
        "benchmark": "compress",
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "offline": offline(events, args.steps, args.reps),
    }
    del events
    result["streaming"] = [
        streaming(rate, duration, chunk)
        for rate, duration in ((1e5, 2.0), (1e6, 2.0), (1e7, 1.0))
        for chunk in (1_000, 10_000)
    ]
    result["noise_filter"] = noise_filter_cost()
    result["machine"] = {**machine(), "load_average_1min_before": load_before}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    o = result["offline"]
    print(f"offline, {o['events']:,} events, T={o['steps']}, one thread (median wall):")
    for name in ("stc", "count", "naive_numpy_count", "tonic_to_frame"):
        if f"{name}_events_per_s" in o:
            print(f"  {name:18s} {o[name + '_events_per_s'] / 1e6:7.1f} M events/s")
    if "stc_over_tonic" in o:
        stc_ratio, count_ratio = o["stc_over_tonic"], o["count_over_tonic"]
        print(f"  STC / Tonic {stc_ratio:.1f}x, count / Tonic {count_ratio:.1f}x")
    else:
        print(f"  Tonic skipped: {o['tonic']}")
    for s in result["streaming"]:
        print(
            f"streaming {s['rate_events_per_s'] / 1e6:g} M events/s, {s['chunk_us'] // 1000} ms "
            f"chunks: {s['per_hop_us']:.0f} µs per 10 ms hop, CPU {s['per_hop_us_cpu']:.0f} µs "
            f"(push p99 {s['push_p99_us']:.0f} µs)"
        )
    n = result["noise_filter"]
    print(
        f"noise filter: numpy->EventStore {n['numpy_to_event_store_events_per_s'] / 1e6:.1f} M/s, "
        f"filter {n['filter_store_events_per_s'] / 1e6:.0f} M/s"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
