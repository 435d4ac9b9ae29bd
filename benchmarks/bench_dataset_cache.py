"""DVS128 Gesture segment cache: first load (decode AEDAT 3.1 + write cache)
versus later loads (open cache + read segments).

    .venv/bin/python benchmarks/bench_dataset_cache.py [--events-per-gesture 900000]

Writes a one-recording folder in the official layout (11 gestures) to a
temporary folder and records the timings in
benchmarks/results/dataset_cache.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from replay.datasets import DVSGesture
from replay.testdata import write_dvsgesture_folder

RESULTS = Path(__file__).resolve().parent / "results" / "dataset_cache.json"


def read_all(dataset: DVSGesture) -> int:
    return sum(len(dataset[i]) for i in range(len(dataset)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-gesture", type=int, default=900_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "DvsGesture"
        folder = write_dvsgesture_folder(
            root,
            users=(1,),
            lightings=("fluorescent",),
            gestures_per_recording=11,
            events_per_gesture=args.events_per_gesture,
            noise_per_gap=10_000,
            test_users=(),
        )
        recording = root / "user01_fluorescent.aedat"
        cache_dir = Path(scratch) / "cache"

        start = time.perf_counter()
        first = DVSGesture(root, "train", cache_dir=cache_dir)
        events = read_all(first)
        first_load_s = time.perf_counter() - start
        assert first.cache_stats.builds == 1

        cached_load_s = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            again = DVSGesture(root, "train", cache_dir=cache_dir)
            assert read_all(again) == events and again.cache_stats.hits == 1
            cached_load_s.append(time.perf_counter() - start)
        cache_file = next(cache_dir.rglob("*.segments"))
        result = {
            "machine": platform.platform(),
            "python": platform.python_version(),
            "recording_events": folder.recordings[0].event_count,
            "segment_events": events,
            "aedat_bytes": recording.stat().st_size,
            "cache_bytes": cache_file.stat().st_size,
            "first_load_s": round(first_load_s, 3),
            "first_load_events_per_s": round(folder.recordings[0].event_count / first_load_s),
            "cached_load_s_best": round(min(cached_load_s), 3),
            "cached_load_events_per_s": round(events / min(cached_load_s)),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
