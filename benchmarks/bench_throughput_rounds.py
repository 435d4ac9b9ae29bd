"""Lossless producer -> worker throughput against the bare compressor, for several
message sizes and both transports, in interleaved rounds (the machine is shared:
only figures of the same round compare).

    .venv/bin/python benchmarks/bench_throughput_rounds.py [--rounds 3] [--seconds 15]
        [--variants NAME ...] [--out FILE]

Each run is ``stcsnn bench throughput --synthetic 10M --seconds S --json`` (128x128,
the gesture checkpoint, the real processes); the variants are the producer's default
for unpaced lossless sources (16 ms of event time, at most 262,144 events a message),
the same with the 65,536-event cap of before, and the 1 ms and 4 ms messages measured
before that, over loopback TCP and Unix sockets.
Medians per variant. Writes benchmarks/results/harness/throughput_rounds.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "tcp, default (16 ms)": ["--transport", "tcp"],
    "tcp, 16 ms, 65,536-event cap": ["--transport", "tcp", "--max-chunk-events", "65536"],
    "tcp, 4 ms": ["--transport", "tcp", "--chunk-us", "4000"],
    "tcp, 1 ms": ["--transport", "tcp", "--chunk-us", "1000"],
    "ipc, default (16 ms)": ["--transport", "ipc"],
}
KEPT = (
    "events_per_s",
    "compressor_events_per_s",
    "ratio",
    "dropped",
    "malformed_messages",
    "events_rejected",
    "wall_s",
)


def throughput_command(seconds: float, options: Sequence[str] = ()) -> list[str]:
    """The run both throughput scripts time: the synthetic 10 M ev/s workload."""
    command = ["stcsnn", "bench", "throughput", "--synthetic", "10M"]
    return [*command, "--seconds", f"{seconds:g}", "--json", *options]


def write_report(out: Path, result: dict, shown: dict) -> None:
    """Both throughput scripts' ending: ``result`` as JSON to ``out``, ``shown`` printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(shown, indent=2))


def one_run(options: list[str], seconds: float) -> dict:
    command = [sys.executable, "-m", *throughput_command(seconds, options)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    return {key: report[key] for key in KEPT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="only these (default: all)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/harness/throughput_rounds.json"
    )
    args = parser.parse_args()
    chosen = {name: VARIANTS[name] for name in args.variants or VARIANTS}
    runs: dict[str, list[dict]] = {name: [] for name in chosen}
    for _ in range(args.rounds):
        for name, options in chosen.items():
            runs[name].append(one_run(options, args.seconds))
            print(name, json.dumps(runs[name][-1]), flush=True)
    medians = {
        name: {
            "events_per_s": statistics.median(r["events_per_s"] for r in rs),
            "compressor_events_per_s": statistics.median(r["compressor_events_per_s"] for r in rs),
            "ratio": statistics.median(r["ratio"] for r in rs),
            "ratios": [r["ratio"] for r in rs],
        }
        for name, rs in runs.items()
    }
    result = {
        "command": " ".join(throughput_command(args.seconds))
        + " [--transport T] [--chunk-us C] [--max-chunk-events N]",
        "rounds": args.rounds,
        "medians": medians,
        "runs": runs,
    }
    write_report(args.out, result, medians)


if __name__ == "__main__":
    main()
