"""The pause of a full garbage collection in a worker-like process, before and after
``streamer.processes.freeze_startup_objects``.

    .venv/bin/python benchmarks/bench_gc_pause.py [--rounds 5]

The process imports what a worker imports and loads the N-MNIST checkpoint as the
worker runs it; then it times ``gc.collect(2)`` (median of ``--rounds``), freezes,
and times it again. Writes benchmarks/results/gc_pause.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import zmq  # noqa: F401  (imported by every worker)

from core.events import SensorSize
from models.runner import choose_device, default_checkpoint_path, load_model, make_runner
from streamer.processes import freeze_startup_objects

ROOT = Path(__file__).resolve().parent.parent


def full_collection_ms(rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        gc.collect(2)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gc_pause.json")
    args = parser.parse_args()
    loaded = load_model(default_checkpoint_path(SensorSize(34, 34)))
    runner = make_runner(loaded.model, choose_device("cpu"))
    runner.warmup()
    tracked = len(gc.get_objects())
    before = full_collection_ms(args.rounds)
    freeze_startup_objects()
    after = full_collection_ms(args.rounds)
    result = {
        "tracked_objects": tracked,
        "full_collection_ms_p50": round(before, 2),
        "after_freeze_ms_p50": round(after, 3),
        "rounds": args.rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
