"""`stcsnn bench latency`: the real producer and worker processes on loopback, per-stage
latency of every prediction, the step and the bare compressor in-process on the same events.

    stcsnn bench latency --synthetic 1M --seconds 5 [--sensor 34x34] [--model CKPT] --json
    stcsnn bench latency --synthetic 1M --rates 100k,1M,10M --out results/   # versus the rate
    stcsnn bench latency --replay ../shared/data/nmnist/Train --limit 50 --speed 4 --json

Synthetic sources run in real time with the live overload policy (as a camera);
replays at ``--speed`` lossless (as an evaluation), and add ``streaming_accuracy``
and ``decision_latency_ms_p50``. Writes ``latency.json`` and ``latency_stages.png``
(and, with ``--rates``, ``latency_rates.png``) to ``--out``. docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stcsnn.commands.produce import parse_rate, parse_sensor


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """``--synthetic RATE`` or ``--replay PATH``, and what shapes them (shared with throughput)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", type=parse_rate, metavar="RATE", help="e.g. 1M (ev/s)")
    source.add_argument("--replay", metavar="PATH", help="a recording, folder or playlist")
    parser.add_argument(
        "--sensor", type=parse_sensor, default=(128, 128), help="synthetic sensor (128x128)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="synthetic: event time (default 5 s)"
    )
    parser.add_argument("--limit", type=int, help="replay: at most N recordings")
    parser.add_argument(
        "--chunk-us",
        type=int,
        help="event time per producer message (default as `stcsnn produce`: 1 ms of wall"
        " time, 1000 µs x the replay's --speed)",
    )
    parser.add_argument(
        "--max-chunk-events",
        type=int,
        help="events per producer message at most (default as `stcsnn produce`)",
    )
    parser.add_argument(
        "--model", metavar="CKPT", help="checkpoint (default: the project's for the sensor)"
    )
    parser.add_argument("--hop-us", type=int, help="step length (default: the checkpoint's)")
    parser.add_argument(
        "--window",
        type=int,
        metavar="N",
        help="windowed inference over N steps, 0 = stateful (default: the checkpoint's)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:N")
    parser.add_argument(
        "--cuda-graph", action="store_true", help="CUDA: the worker replays its step as a graph"
    )
    parser.add_argument("--out", type=Path, help="folder for the JSON report and PNG plots")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def model_choice(args: argparse.Namespace):
    from streamer.harness import ModelChoice

    return ModelChoice(args.model, args.hop_us, args.device, args.cuda_graph, args.window)


def workload(
    args: argparse.Namespace, rate: float | None = None, speed: str = "1", lossless: bool = False
):
    """The source of a run at ``speed``; its messages are sized as ``stcsnn produce``
    sizes them unless ``--chunk-us`` or ``--max-chunk-events`` says otherwise."""
    from core.events import SensorSize
    from streamer.harness import Workload
    from streamer.pacing import message_size_for_speed, parse_speed

    size = message_size_for_speed(
        parse_speed(speed), lossless, chunk_us=args.chunk_us, max_events=args.max_chunk_events
    )
    if args.replay:
        return Workload.replay(args.replay, args.limit, size)
    return Workload.synthetic(rate or args.synthetic, SensorSize(*args.sensor), args.seconds, size)


def configure(parser: argparse.ArgumentParser) -> None:
    add_source_options(parser)
    parser.add_argument(
        "--speed", default=None, help="replay speed (default 1); synthetic runs in real time"
    )
    parser.add_argument(
        "--rates",
        help="synthetic: several input rates, comma-separated (e.g. 100k,1M,10M): "
        "one run each, plotted versus the rate",
    )


def write(out: Path | None, name: str, report) -> None:
    if out is not None:
        (out / name).write_text(json.dumps(report, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    from streamer import harness

    if args.rates and not args.synthetic:
        print("stcsnn bench latency: --rates needs --synthetic", file=sys.stderr)
        return 2
    rates = [parse_rate(r) for r in args.rates.split(",")] if args.rates else [None]
    replay = bool(args.replay)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    reports = []
    for rate in rates:
        speed = args.speed or "1"
        report, samples = harness.latency_report(
            workload(args, rate, speed, replay), model_choice(args), speed=speed, lossless=replay
        )
        report["rate"] = rate or args.synthetic
        reports.append(report)
        if args.out is not None:
            stem = "latency_stages" if len(rates) == 1 else f"latency_stages_{rate:g}"
            harness.plot_stages(samples, args.out / f"{stem}.png", report["source"])
        if not args.json:
            print(_line(report), flush=True)
    result = reports[0] if len(reports) == 1 else {"runs": reports}
    write(args.out, "latency.json", result)
    if len(reports) > 1 and args.out is not None:
        title = reports[0]["source"].split(",", 1)[1] + ", real time, live policy"
        harness.plot_rates(reports, args.out / "latency_rates.png", "synthetic" + title)
    if args.json:
        print(json.dumps(result), flush=True)
    return 0


def _count(value: int | None) -> str:
    """A count from the processes' final stats; None when they never came."""
    return "unknown (no final stats)" if value is None else str(value)


def _line(report: dict) -> str:
    text = (
        f"{report['source']}: end to end p50 {report['latency_ms_p50']} ms, "
        f"p99 {report['latency_ms_p99']} ms; step {report['step_ms_p50']} ms in-process, "
        f"overhead p50 {report['overhead_ms_p50']} ms; {_count(report['dropped'])} events "
        f"dropped, {_count(report['steps_skipped'])} steps skipped"
    )
    if "streaming_accuracy" in report:
        text += (
            f"; streaming accuracy {report['streaming_accuracy']:.3f}, decision latency "
            f"p50 {report['decision_latency_ms_p50']} ms"
        )
    return text
