"""`stcsnn dashboard`: the live window over a worker's predictions and event previews.

    stcsnn dashboard --connect tcp://127.0.0.1:5556
    stcsnn dashboard --connect tcp://gpu-box:5556 --stream cam0 --source "DVXplorer in the lab"
    stcsnn dashboard --connect tcp://127.0.0.1:5556 --screenshot shot.png --exit-after 10

Keys: space pauses the drawing, r clears the view, q or Esc quits (so do
Ctrl-C and SIGTERM). Without a display (no DISPLAY/WAYLAND_DISPLAY) it runs
offscreen, which is what ``--screenshot`` needs on a server. See docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from streamer.curve import add_curve_options
from streamer.processes import add_status_option

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"  # the worker's default; not imported: keep --help light


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connect",
        action="append",
        metavar="ENDPOINT",
        help=f"a worker's prediction endpoint (repeat for several; default {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--stream", help="show this stream id (default: the first stream that arrives)"
    )
    parser.add_argument(
        "--source",
        default="",
        help="what the stream is, for the title and status line (e.g. the replayed folder)",
    )
    parser.add_argument(
        "--fps", type=positive_float, default=30.0, help="frames per second (default 30)"
    )
    parser.add_argument(
        "--stall-after-s",
        type=positive_float,
        default=1.0,
        help="show the stream as stalled after this long without a prediction (default 1)",
    )
    parser.add_argument(
        "--receive-hwm",
        type=positive_int,
        default=64,
        help="receive queue in messages (default 64; the dashboard drains it every frame)",
    )
    parser.add_argument("--screenshot", metavar="PNG", help="save the window to PNG at exit")
    parser.add_argument(
        "--exit-after", type=positive_float, metavar="S", help="close after S seconds"
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary at exit (frames, drops...)"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=10,
        help="lower this process's CPU priority by N (default 10): where cores are "
        "scarce the worker and producer go first; 0 keeps it",
    )
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    add_curve_options(parser, serves=False, connects=True)
    add_status_option(parser)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(name)s: %(message)s",
    )
    log = logging.getLogger("stcsnn.dashboard")
    endpoints = []
    for entry in args.connect or [DEFAULT_ENDPOINT]:
        endpoints += [e.strip() for e in entry.split(",") if e.strip()]
    if args.stream is not None and (not args.stream or "/" in args.stream):
        print(
            f"stcsnn dashboard: stream id {args.stream!r} must be non-empty without '/'",
            file=sys.stderr,
        )
        return 2
    from streamer.curve import curve_from_args
    from streamer.dashboard_feed import check_connect_endpoint

    try:
        for endpoint in endpoints:
            check_connect_endpoint(endpoint)
        curve = curve_from_args(args)
    except ValueError as error:
        print(f"stcsnn dashboard: {error}", file=sys.stderr)
        return 2
    if args.nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(args.nice)
        except OSError as error:
            log.warning("could not lower the CPU priority: %s", error)
    from streamer.display_check import explain, missing_libraries

    missing = missing_libraries()
    if missing:
        print(
            f"stcsnn dashboard: {explain(missing)}; or draw offscreen with "
            "QT_QPA_PLATFORM=offscreen (--screenshot)",
            file=sys.stderr,
        )
        return 1
    from streamer.dashboard import ensure_display, run_dashboard
    from streamer.processes import StatusChannel

    status = StatusChannel(args.status_fd)

    if ensure_display():
        log.info("no display found: drawing offscreen")
    log.info("dashboard subscribed to %s", ", ".join(endpoints))
    summary = run_dashboard(
        endpoints,
        stream=args.stream,
        source=args.source,
        fps=args.fps,
        stall_after_s=args.stall_after_s,
        receive_hwm=args.receive_hwm,
        screenshot=args.screenshot,
        exit_after_s=args.exit_after,
        on_ready=lambda: status.send("ready", endpoints=endpoints),
        curve=curve,
    )
    if args.screenshot and not summary["screenshot"]:
        print(f"stcsnn dashboard: could not save {args.screenshot}", file=sys.stderr)
        return 1
    if args.screenshot:
        log.info("screenshot saved to %s", summary["screenshot"])
    if args.json:
        print(json.dumps(summary), flush=True)
    status.send("done", stats=summary)
    status.close()
    return 0
