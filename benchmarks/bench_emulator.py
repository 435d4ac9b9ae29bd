"""DVS emulator throughput: frames/s and events/s at 34x34, 128x128 and 640x480.

Writes benchmarks/results/emulator.json::

    .venv/bin/python benchmarks/bench_emulator.py

Method: a bright vertical bar (intensity 0.8, anti-aliased edges) on a dark
background (0.2) crosses the frame left to right in ``--frames`` frames 10 ms
apart (a 100 fps video), rendered beforehand as uint8 frames, the way a video or
webcam source delivers them; rendering is not timed. Each round builds a fresh
``DvsEmulator`` with the default ``DvsParams`` (thresholds 0.2 +- 0.03,
refractory 1 ms, leak 0.1 Hz, no shot noise) and pushes every frame; the time is
the wall time of all pushes (one thread: the emulator is plain numpy). Reported:
medians over ``--rounds`` rounds after one warm-up round, with every round's time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from core.emulator import DvsEmulator, DvsParams
from stcsnn.commands.bench_compress import machine

RESULTS = Path(__file__).resolve().parent / "results" / "emulator.json"
SIZES = ((34, 34), (128, 128), (640, 480))
FRAME_INTERVAL_US = 10_000


def moving_bar_frames(width: int, height: int, n_frames: int) -> list[np.ndarray]:
    """uint8 frames of a bar, a quarter of the width wide, crossing the frame once."""
    x = np.arange(width, dtype=np.float64)
    half = width / 8
    frames = []
    for i in range(n_frames):
        centre = -half + (width + 2 * half) * i / max(n_frames - 1, 1)
        # Coverage of each pixel by the bar, linear over one pixel at each edge.
        cover = np.clip(half + 0.5 - np.abs(x - centre), 0.0, 1.0)
        row = np.rint((0.2 + 0.6 * cover) * 255).astype(np.uint8)
        frames.append(np.ascontiguousarray(np.broadcast_to(row, (height, width))))
    return frames


def one_round(width: int, height: int, frames: list[np.ndarray], seed: int) -> tuple[float, int]:
    """(wall seconds, events) of pushing all frames through a fresh emulator."""
    emulator = DvsEmulator(width, height, DvsParams(), seed=seed)
    events = 0
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        events += len(emulator.push(frame, i * FRAME_INTERVAL_US))
    return time.perf_counter() - start, events


def measure(width: int, height: int, n_frames: int, rounds: int) -> dict:
    frames = moving_bar_frames(width, height, n_frames)
    one_round(width, height, frames, seed=0)  # warm-up
    walls, counts = [], []
    for r in range(rounds):
        wall, events = one_round(width, height, frames, seed=r)
        walls.append(wall)
        counts.append(events)
    wall = statistics.median(walls)
    events = int(statistics.median(counts))
    return {
        "sensor": f"{width}x{height}",
        "frames": n_frames,
        "events": events,
        "events_per_frame": round(events / n_frames, 1),
        "frames_per_s": round(n_frames / wall, 1),
        "events_per_s": round(events / wall),
        "wall_s": [round(w, 4) for w in walls],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200, help="frames per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.frames < 2 or args.rounds < 1:
        print("bench emulator: --frames must be >= 2 and --rounds >= 1", file=sys.stderr)
        return 2
    result = {
        "benchmark": "emulator",
        "command": "python benchmarks/bench_emulator.py "
        f"--frames {args.frames} --rounds {args.rounds}",
        "scene": "bright bar (0.8) on dark (0.2) crossing the frame once, uint8 frames",
        "frame_interval_us": FRAME_INTERVAL_US,
        "params": DvsParams().__dict__,
        "machine": machine(),
        "results": [measure(w, h, args.frames, args.rounds) for w, h in SIZES],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["results"]:
        print(
            f"{row['sensor']:>8}: {row['frames_per_s']:9.1f} frames/s "
            f"{row['events_per_s']:12,d} events/s ({row['events_per_frame']} events/frame)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
