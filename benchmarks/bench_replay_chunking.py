"""The tail of a fast replay's latency against the producer's message size: the
default (1 ms of wall time per message, 4 ms of event time at 4x) beside 1 ms of
event time (4,000 messages a second at 4x, the default before), interleaved.

    .venv/bin/python benchmarks/bench_replay_chunking.py [--rounds 3] [--limit 200] [--speed 4]

Each run is ``stcsnn bench latency --replay ../shared/data/nmnist/Train --json`` (the
real processes on loopback, the N-MNIST checkpoint); beside it, the share of the
run's wall time in which some task waited for a CPU (Linux pressure stall
information, ``/proc/pressure/cpu``; null where the kernel has none). Medians per
message size. Writes benchmarks/results/replay_chunking.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NMNIST = ROOT.parent / "shared/data/nmnist/Train"
PRESSURE = Path("/proc/pressure/cpu")


def cpu_stall_us() -> int | None:
    """Microseconds in which at least one task waited for a CPU, since boot."""
    try:
        line = PRESSURE.read_text().splitlines()[0]  # "some avg10=... total=N"
    except OSError:
        return None
    return int(line.rsplit("total=", 1)[1])


def one_run(chunk_us: int | None, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "stcsnn", "bench", "latency", "--replay", str(args.replay)]
    command += ["--limit", str(args.limit), "--speed", str(args.speed), "--json"]
    command += [] if chunk_us is None else ["--chunk-us", str(chunk_us)]
    stall_before, started = cpu_stall_us(), time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    wall_s, stall_after = time.monotonic() - started, cpu_stall_us()
    report = json.loads(done.stdout)
    stages = report["stages_ms"]
    return {
        "latency_ms_p50": report["latency_ms_p50"],
        "latency_ms_p99": report["latency_ms_p99"],
        "step_in_worker_ms_p50": stages["step"]["p50"],
        "step_in_worker_ms_p99": stages["step"]["p99"],
        "step_in_process_ms_p50": report["step_ms_p50"],
        "transport_in_ms_p99": stages["transport_in"]["p99"],
        "overhead_ms_p50": report["overhead_ms_p50"],
        "predictions": report["predictions"],
        "cpu_stall_share": None
        if stall_before is None
        else round((stall_after - stall_before) / 1e6 / wall_s, 3),
        "source": report["source"],
    }


def medians(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {
        k: round(statistics.median(r[k] for r in runs), 3)
        for k in keys
        if all(r[k] is not None for r in runs)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", type=Path, default=NMNIST)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/replay_chunking.json"
    )
    args = parser.parse_args()
    if not args.replay.is_dir():
        sys.exit(f"{args.replay}: no N-MNIST folder (see ../shared/data/README.md)")
    sizes = {"wall_1ms (default)": None, "event_1ms (before)": 1000}
    runs: dict[str, list[dict]] = {name: [] for name in sizes}
    for _ in range(args.rounds):
        for name, chunk_us in sizes.items():
            runs[name].append(one_run(chunk_us, args))
            print(name, json.dumps(runs[name][-1]), flush=True)
    result = {
        "command": f"stcsnn bench latency --replay {args.replay} --limit {args.limit} "
        f"--speed {args.speed:g} --json [--chunk-us 1000]",
        "rounds": args.rounds,
        "medians": {name: medians(r) for name, r in runs.items()},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["medians"], indent=2))


if __name__ == "__main__":
    main()
