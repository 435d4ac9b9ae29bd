"""DVS128 Gesture segment cache: first load (decode AEDAT 3.1 + write cache)
versus later loads (open cache + read segments).

    .venv/bin/python benchmarks/bench_dataset_cache.py [--events-per-gesture 900000]

Writes a one-recording folder in the official layout (11 gestures of uniform
events between spans of background events) to a temporary folder with the
library's writers and records the timings in
benchmarks/results/dataset_cache.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from core.events import concat_events
from core.labels import LabelSegment
from replay.datasets import DVSGesture
from replay.formats.aedat3_writer import write_aedat3
from replay.formats.gesture_labels import GESTURE_CLASS_NAMES
from replay.formats.gesture_labels_writer import write_gesture_labels
from stcsnn.commands.bench_compress import synthetic_events

RESULTS = Path(__file__).resolve().parent / "results" / "dataset_cache.json"
RECORDING = "user01_fluorescent"
GESTURE_US = 300_000
GAP_US = 100_000


def events_over(count: int, start_us: int, span_us: int, seed: int) -> np.ndarray:
    """``count`` (> 0) uniform events over ``[start_us, start_us + span_us)``."""
    rate_per_s = count / span_us * 1e6
    events = synthetic_events(count, seed=seed, rate_per_s=rate_per_s, sensor=DVSGesture.sensor)
    events["timestamp"] += start_us
    return events


def write_gesture_folder(root: Path, events_per_gesture: int, events_per_gap: int) -> int:
    """A DVS128 Gesture folder whose training list holds one recording: a gap,
    then each of the 11 classes once followed by a gap. Returns its event count."""
    root.mkdir(parents=True)
    parts = [events_over(events_per_gap, 0, GAP_US, seed=0)]
    segments = []
    t_us = GAP_US
    for label in range(len(GESTURE_CLASS_NAMES)):
        parts.append(events_over(events_per_gesture, t_us, GESTURE_US, seed=2 * label + 1))
        segments.append(LabelSegment(label, t_us, t_us + GESTURE_US))
        t_us += GESTURE_US
        parts.append(events_over(events_per_gap, t_us, GAP_US, seed=2 * label + 2))
        t_us += GAP_US
    events = concat_events(parts)
    write_aedat3(root / f"{RECORDING}.aedat", events, DVSGesture.sensor)
    write_gesture_labels(root / f"{RECORDING}_labels.csv", segments)
    (root / "trials_to_train.txt").write_text(f"{RECORDING}.aedat\n")
    (root / "trials_to_test.txt").write_text("")
    return len(events)


def read_all(dataset: DVSGesture) -> int:
    return sum(len(dataset[i]) for i in range(len(dataset)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-per-gesture", type=int, default=900_000)
    parser.add_argument("--events-per-gap", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "DvsGesture"
        recording_events = write_gesture_folder(root, args.events_per_gesture, args.events_per_gap)
        recording = root / f"{RECORDING}.aedat"
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
            "recording_events": recording_events,
            "segment_events": events,
            "aedat_bytes": recording.stat().st_size,
            "cache_bytes": cache_file.stat().st_size,
            "first_load_s": round(first_load_s, 3),
            "first_load_events_per_s": round(recording_events / first_load_s),
            "cached_load_s_best": round(min(cached_load_s), 3),
            "cached_load_events_per_s": round(events / min(cached_load_s)),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
