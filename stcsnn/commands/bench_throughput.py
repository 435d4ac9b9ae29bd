"""`stcsnn bench throughput`: producer -> worker lossless and unpaced on loopback, the events
per second the pipeline gets through beside the bare compressor on the same events.

    stcsnn bench throughput --synthetic 10M --seconds 5 --json
    stcsnn bench throughput --replay ../shared/data/dvs_sign/train --limit 40 --json
    stcsnn bench throughput --synthetic 1M --sweep --json     # highest real-time rate, no drops

``ratio`` = ``events_per_s`` / ``compressor_events_per_s`` (same run). ``--sweep``
runs the live pipeline in real time at rising synthetic rates and reports the
highest at which nothing was dropped or skipped. docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json

from stcsnn.commands.bench_latency import (
    _count,
    _line,
    add_source_options,
    model_choice,
    workload,
    write,
)

SWEEP_RATES = (1e6, 2e6, 5e6, 1e7, 2e7, 5e7)


def configure(parser: argparse.ArgumentParser) -> None:
    add_source_options(parser)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="synthetic, real time, live policy: find the highest rate without drops",
    )
    parser.add_argument(
        "--transport",
        choices=("tcp", "ipc"),
        default="tcp",
        help="producer -> worker over loopback TCP (default) or Unix sockets (same host)",
    )


def sweep(args: argparse.Namespace) -> dict:
    from streamer import harness

    runs = []
    for rate in SWEEP_RATES:
        report, _ = harness.latency_report(workload(args, rate), model_choice(args), speed="1")
        report["rate"] = rate
        report["kept_up"] = (
            report["dropped"] == 0
            and report["steps_skipped"] == 0
            and report["producer_max_lateness_ms"] < 100
        )
        runs.append(report)
        if not args.json:
            print(f"{rate / 1e6:g} M ev/s: kept up {report['kept_up']}; {_line(report)}")
        if not report["kept_up"]:
            break
    kept = [r["rate"] for r in runs if r["kept_up"]]
    return {"highest_real_time_rate_without_drops": max(kept) if kept else None, "runs": runs}


def run(args: argparse.Namespace) -> int:
    from streamer import harness

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        result = sweep(args)
        if args.out is not None:
            harness.plot_rates(result["runs"], args.out / "sweep.png", "real time, live policy")
    else:
        result = harness.throughput_report(
            workload(args, speed="max", lossless=True), model_choice(args), transport=args.transport
        )
        if not args.json:
            print(
                f"{result['source']}: {result['events_per_s']} ev/s through producer -> "
                f"worker; bare compressor {result['compressor_events_per_s']} ev/s; "
                f"ratio {result['ratio']}; {_count(result['dropped'])} dropped"
            )
    write(args.out, "throughput.json", result)
    if args.json:
        print(json.dumps(result), flush=True)
    return 0
