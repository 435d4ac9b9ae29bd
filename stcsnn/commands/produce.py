"""`stcsnn produce`: publish one event source on ZeroMQ (wire protocol v1).

Sources: ``--replay PATH`` (a recording, a folder of them, or a playlist),
``--camera [SERIAL]``, ``--dv-stream HOST:PORT``, ``--synthetic RATE``, ``--emulate digits``
(printed digits on N-MNIST's saccades before an emulated DVS, ``streamer/emulated.py``),
``--video FILE`` and ``--webcam [N]`` (frames before an emulated DVS, ``streamer/video.py``).
Ctrl-C (SIGINT) or SIGTERM stops it cleanly: an ``end`` message goes out and
the socket closes. See docs/sources.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys

from streamer.curve import add_curve_options
from streamer.processes import add_status_option, freeze_startup_objects

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"  # as streamer.producer; not imported: keep --help light


def parse_rate(text: str) -> float:
    """``"1e6"``, ``"1M"``, ``"500k"`` -> events per second."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([kKmMgG]?)\s*", text)
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}
    try:
        rate = float(match.group(1)) * scale[match.group(2).lower()] if match else math.nan
    except ValueError:
        rate = math.nan
    if not rate > 0 or not math.isfinite(rate):
        raise argparse.ArgumentTypeError(
            f"expected an event rate like 1e6, 1M or 500k, got {text!r}"
        )
    return rate


def parse_sensor(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match or not int(match.group(1)) or not int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 128x128, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("source (choose one)").add_mutually_exclusive_group(
        required=True
    )
    source.add_argument(
        "--replay", metavar="PATH", help="a recording, a folder of recordings, or a playlist"
    )
    source.add_argument(
        "--camera",
        nargs="?",
        const="",
        metavar="SERIAL",
        help="a live iniVation camera (by serial; default: the first found)",
    )
    source.add_argument(
        "--dv-stream", metavar="HOST:PORT", help="the DV software's network output (TCP)"
    )
    source.add_argument(
        "--synthetic", type=parse_rate, metavar="RATE", help="synthetic events, e.g. 1M (ev/s)"
    )
    add_emulated_sources(source, parser)
    pacing = parser.add_argument_group("pacing and chunking")
    pacing.add_argument(
        "--speed",
        default="1",
        help="replay/synthetic speed: 1 = real time, 2 = twice, 'max' = unpaced (default 1)",
    )
    pacing.add_argument("--loop", action="store_true", help="replay (or --video) again and again")
    pacing.add_argument(
        "--chunk-us",
        type=int,
        help="event time per message (default: 1 ms of wall time, 1000 µs x --speed;"
        " 1000 µs live or unpaced; 16 ms unpaced --lossless)",
    )
    pacing.add_argument(
        "--max-chunk-events",
        type=int,
        help="events per message at most, a denser window is cut (default 65,536;"
        " 262,144 unpaced --lossless)",
    )
    pacing.add_argument(
        "--gap-us", type=int, default=0, help="replay: event time between samples (default 0)"
    )
    pacing.add_argument(
        "--limit", type=int, help="replay: at most N recordings; --emulate: N samples"
    )
    pacing.add_argument("--shuffle", action="store_true", help="replay: shuffle the recordings")
    pacing.add_argument("--seed", type=int, default=0, help="shuffle / synthetic seed (default 0)")
    pacing.add_argument(
        "--duration-s", type=float, help="synthetic: stop after this much event time"
    )
    pacing.add_argument(
        "--sensor",
        type=parse_sensor,
        default=(128, 128),
        help="synthetic, --video, --webcam: sensor WIDTHxHEIGHT (default 128x128)",
    )
    pacing.add_argument(
        "--preload",
        action="store_true",
        help="read (or generate) the whole finite source into memory before publishing:"
        " benchmarks, where the source's own cost must not compete with the pipeline",
    )
    publish = parser.add_argument_group("publishing")
    publish.add_argument(
        "--endpoint", default=DEFAULT_ENDPOINT, help=f"bind address (default {DEFAULT_ENDPOINT})"
    )
    publish.add_argument(
        "--bind-any",
        action="store_true",
        help="allow binding beyond loopback (publishes the stream to the network)",
    )
    publish.add_argument(
        "--stream-id", help="stream id (default: replay, camera serial, dv or synthetic)"
    )
    publish.add_argument(
        "--wait-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="hold the stream until N subscribers of its events are connected",
    )
    publish.add_argument(
        "--settle-s",
        type=float,
        default=0.3,
        help="without --wait-subscribers: pause before the first message (default 0.3 s)",
    )
    publish.add_argument(
        "--send-hwm", type=int, default=1000, help="send queue per subscriber, messages"
    )
    publish.add_argument(
        "--lossless",
        action="store_true",
        help="wait for slow subscribers instead of dropping (replays, evaluation)",
    )
    add_curve_options(parser, serves=True, connects=False)
    parser.add_argument("--json", action="store_true", help="print the run's stats as JSON")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    add_status_option(parser)


def add_emulated_sources(source, parser: argparse.ArgumentParser) -> None:
    """``--emulate``, ``--video`` and ``--webcam`` in a source group, and ``--font``
    (produce and demo share them)."""
    source.add_argument(
        "--emulate",
        choices=["digits"],
        help="a built-in scene before an emulated DVS: printed digits on N-MNIST's"
        " saccades (34x34), labelled",
    )
    source.add_argument(
        "--video",
        metavar="FILE",
        help="a video file before an emulated DVS (needs pip install 'stcsnn[video]')",
    )
    source.add_argument(
        "--webcam",
        nargs="?",
        type=int,
        const=0,
        metavar="N",
        help="webcam N (default 0) before an emulated DVS, live (needs OpenCV, as --video)",
    )
    parser.add_argument(
        "--font",
        action="append",
        metavar="NAME",
        help="--emulate digits: a DejaVu font of matplotlib's (DejaVuSans, DejaVuSerif,"
        " DejaVuSansMono, DejaVuSans-Bold...); repeat for several (default DejaVuSans)",
    )


def _default_stream_id(args: argparse.Namespace, source) -> str:
    if args.stream_id:
        return args.stream_id
    if args.camera is not None:
        return f"cam-{source.serial}".replace("/", "_")
    if args.dv_stream:
        return "dv"
    if args.synthetic:
        return "synthetic"
    if args.emulate:
        return "emulated"
    if args.video:
        return "video"
    if args.webcam is not None:
        return f"webcam{args.webcam}"
    return "replay"


def open_source(args: argparse.Namespace):
    """The source named on the command line (raises SourceError / FileNotFoundError)."""
    from core.events import SensorSize
    from streamer.sources import CameraSource, DvNetworkSource, SyntheticSource, parse_host_port

    if args.replay:
        from replay.player import open_replay

        return open_replay(
            args.replay,
            shuffle=args.shuffle,
            seed=args.seed,
            limit=args.limit,
            chunk_us=args.chunk_us,
            gap_us=args.gap_us,
            loop=args.loop,
            max_chunk_events=args.max_chunk_events,
        )
    if args.camera is not None:
        return CameraSource(
            args.camera or None,
            packet_interval_us=args.chunk_us,
            max_chunk_events=args.max_chunk_events,
        )
    if args.dv_stream:
        host, port = parse_host_port(args.dv_stream)
        return DvNetworkSource(host, port, max_chunk_events=args.max_chunk_events)
    if args.emulate:
        from streamer.emulated import EmulatedDigitsSource

        return EmulatedDigitsSource(
            samples=args.limit,
            fonts=tuple(args.font or ("DejaVuSans",)),
            seed=args.seed,
            chunk_us=args.chunk_us,
            max_chunk_events=args.max_chunk_events,
        )
    if args.video or args.webcam is not None:
        return open_video_source(args)
    duration_us = None if args.duration_s is None else round(args.duration_s * 1e6)
    return SyntheticSource(
        args.synthetic,
        sensor=SensorSize(*args.sensor),
        chunk_us=args.chunk_us,
        duration_us=duration_us,
        seed=args.seed,
        max_chunk_events=args.max_chunk_events,
    )


def open_video_source(args: argparse.Namespace):
    """``--video FILE`` or ``--webcam [N]`` at ``--sensor`` (raises SourceError)."""
    from core.events import SensorSize
    from streamer.video import VideoSource, WebcamSource

    emulation = {
        "sensor": SensorSize(*args.sensor),
        "seed": args.seed,
        "chunk_us": args.chunk_us,
        "max_chunk_events": args.max_chunk_events,
    }
    if args.video:
        return VideoSource(args.video, loop=args.loop, **emulation)
    return WebcamSource(args.webcam, **emulation)


def run(args: argparse.Namespace) -> int:
    import threading

    from core.source import SourceError
    from streamer.curve import check_exposure, curve_from_args
    from streamer.pacing import message_size_for_speed, parse_speed
    from streamer.processes import StatusChannel
    from streamer.producer import run_producer
    from streamer.transport import EndpointError, check_endpoint, stop_on_signals

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        speed = parse_speed(args.speed)
        check_endpoint(args.endpoint, args.bind_any)
        curve = curve_from_args(args)
        check_exposure(args.bind_any, curve, args.insecure)
        live = args.camera is not None or args.dv_stream or args.webcam is not None
        args.chunk_us, args.max_chunk_events = message_size_for_speed(
            1.0 if live else speed,
            args.lossless,
            chunk_us=args.chunk_us,
            max_events=args.max_chunk_events,
        )
        if args.font and not args.emulate:
            raise ValueError("--font goes with --emulate digits")
        if args.limit is not None and (args.video or args.webcam is not None):
            raise ValueError("--limit is for --replay and --emulate")
        finite = not (args.loop or live) and not (
            (args.synthetic and args.duration_s is None) or (args.emulate and not args.limit)
        )
        if args.preload and not finite:
            raise ValueError("--preload needs a finite source (--duration-s, no --loop)")
        source = open_source(args)
        if args.preload:
            from core.source import PreloadedSource

            source = PreloadedSource(source, threading.Event())
    except (SourceError, EndpointError, FileNotFoundError, ValueError) as error:
        print(f"stcsnn produce: {error}", file=sys.stderr)
        return 1
    freeze_startup_objects()
    status = StatusChannel(args.status_fd)

    def announce(stats) -> None:
        print(
            f"stcsnn produce: publishing {stats.description} as stream {stats.stream_id!r} "
            f"on {stats.endpoint} (session {stats.session})",
            file=sys.stderr,
            flush=True,
        )
        status.send(
            "ready",
            endpoint=stats.endpoint,
            session=stats.session,
            stream=stats.stream_id,
            description=stats.description,
        )

    stop_event = threading.Event()
    with stop_on_signals(stop_event):
        try:
            stats = run_producer(
                source,
                args.endpoint,
                stream_id=_default_stream_id(args, source),
                bind_any=args.bind_any,
                speed=speed,
                wait_subscribers=args.wait_subscribers,
                settle_s=args.settle_s,
                send_hwm=args.send_hwm,
                on_full="block" if args.lossless else "drop",
                stop_event=stop_event,
                on_bound=announce,
                curve=curve,
                insecure=args.insecure,
            )
        except (EndpointError, TimeoutError, ValueError) as error:
            print(f"stcsnn produce: {error}", file=sys.stderr)
            return 1
    summary = stats.as_dict()
    replay_stats = getattr(source, "stats", None)
    if replay_stats is not None:
        summary["replay"] = replay_stats.as_dict()
    if args.json:
        print(json.dumps(summary), flush=True)
    status.send("done", stats=summary)
    status.close()
    return 0
