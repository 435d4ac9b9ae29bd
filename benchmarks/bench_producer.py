"""Producer throughput and pacing: `stcsnn produce` in its own process -> a SUB socket here.

    .venv/bin/python benchmarks/bench_producer.py [--seconds 2]

Writes benchmarks/results/producer.json. Each case starts the producer command
(``--wait-subscribers 1 --lossless``, so nothing is dropped and the receiver
sets the pace if it is the slower side) on loopback TCP, receives with
``wire.receive`` (zero-copy decode) until ``end``, and reports events and
messages per second of wall time between the first and the last events
message, plus what the producer's own stats say (``--json``).

Cases: unpaced synthetic at 1 ms chunks of 10 M ev/s event-time rate (10,000
events/message; bounded by synthetic generation, ~14 M ev/s on one core);
unpaced replay of N-MNIST samples at 1 ms chunks (~14 events/message: the
per-message cost); real-time synthetic at 1 M and 10 M ev/s (does the wall-clock
rate match, how late does the producer fall).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import zmq

from replay.paths import data_root
from streamer import wire
from streamer.processes import start_producer

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("bench_producer")


def run_case(name: str, producer_args: list[str]) -> dict:
    child = start_producer(
        ["--quiet", "--wait-subscribers", "1", "--lossless", *producer_args], cwd=ROOT
    )
    endpoint = child.endpoint
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 1000)
    sub.connect(endpoint)
    stats = wire.WireStats()
    tracker = wire.SequenceTracker(stats)
    events = messages = 0
    first = last = None
    while True:
        message = wire.receive(sub, stats, log, timeout_ms=30_000)
        if message is None:
            raise RuntimeError(f"{name}: nothing received for 30 s")
        tracker.observe(message)
        if message.type == "events":
            last = time.perf_counter()
            first = first or last
            events += len(message.events)
            messages += 1
        elif message.type == "end":
            break
    sub.close(0)
    child.process.wait(30)
    child.stop()
    producer = child.result()
    wall_s = (last - first) if first and last and last > first else float("nan")
    event_span_s = (producer["last_event_us"] - producer["first_event_us"]) / 1e6
    return {
        "case": name,
        "producer_args": producer_args,
        "events": events,
        "event_messages": messages,
        "wall_s": round(wall_s, 4),
        "events_per_s": round(events / wall_s),
        "messages_per_s": round(messages / wall_s),
        "event_span_s": round(event_span_s, 4),
        "event_time_per_wall_time": round(event_span_s / wall_s, 4),
        "producer_max_lateness_ms": round(producer["max_lateness_s"] * 1e3, 2),
        "producer_blocked_s": round(producer["blocked_s"], 4),
        "receiver_gaps": sum(stats.gaps.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="event time per case")
    parser.add_argument("--samples", type=int, default=300, help="N-MNIST samples to replay")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/producer.json"))
    args = parser.parse_args()
    seconds = str(args.seconds)
    cases = [
        (
            "synthetic 10M ev/s, 1 ms chunks, unpaced",
            ["--synthetic", "10M", "--speed", "max", "--chunk-us", "1000"],
        ),
        ("synthetic 1M ev/s, 1 ms chunks, real time", ["--synthetic", "1M", "--speed", "1"]),
        ("synthetic 10M ev/s, 1 ms chunks, real time", ["--synthetic", "10M", "--speed", "1"]),
    ]
    cases = [(name, a + ["--duration-s", seconds]) for name, a in cases]
    nmnist = data_root() / "nmnist" / "Train"
    if nmnist.is_dir():
        cases.append(
            (
                f"N-MNIST replay of {args.samples} samples, 1 ms chunks, unpaced",
                ["--replay", str(nmnist), "--shuffle", "--limit", str(args.samples)]
                + ["--speed", "max", "--chunk-us", "1000"],
            )
        )
    results = []
    for name, producer_args in cases:
        result = run_case(name, producer_args)
        print(json.dumps(result), flush=True)
        results.append(result)
    report = {
        "benchmark": "producer",
        "command": "python benchmarks/bench_producer.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
