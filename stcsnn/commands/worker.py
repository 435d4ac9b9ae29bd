"""`stcsnn worker`: subscribe to event streams, classify them step by step, publish predictions.

    stcsnn worker --connect tcp://127.0.0.1:5555 [--connect ...] --bind tcp://127.0.0.1:5556
                  [--model CKPT] [--streams cam0,cam1 | --shard 0/2] [--device auto]

Ctrl-C (SIGINT) or SIGTERM stops it cleanly (a final ``stats`` message goes
out). See docs/streaming.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys

from streamer.curve import add_curve_options
from streamer.processes import add_status_option, freeze_startup_objects

DEFAULT_BIND = "tcp://127.0.0.1:5556"  # as streamer.worker; not imported: keep --help light


def parse_shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected i/n with 0 <= i < n (e.g. 0/2), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def parse_streams(text: str) -> tuple[str, ...]:
    streams = tuple(s.strip() for s in text.split(",") if s.strip())
    if not streams or any("/" in s for s in streams):
        raise argparse.ArgumentTypeError(f"expected stream ids like cam0,cam1, got {text!r}")
    return streams


def configure(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument(
        "--connect",
        action="append",
        required=True,
        metavar="ENDPOINT",
        help="a producer's endpoint (repeat, or comma-separate, for several)",
    )
    io.add_argument(
        "--bind", default=DEFAULT_BIND, help=f"prediction endpoint (default {DEFAULT_BIND})"
    )
    io.add_argument(
        "--bind-any",
        action="store_true",
        help="allow binding beyond loopback (publishes predictions to the network)",
    )
    add_curve_options(parser, serves=True, connects=True)
    choose = io.add_mutually_exclusive_group()
    choose.add_argument(
        "--streams", type=parse_streams, help="serve only these stream ids (default: all)"
    )
    choose.add_argument(
        "--shard",
        type=parse_shard,
        metavar="I/N",
        help="serve the streams whose id hashes to I of N (one of N workers)",
    )
    io.add_argument(
        "--wait-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="connect to the producers only once N subscribers of predictions are connected",
    )
    model = parser.add_argument_group("model and device")
    model.add_argument(
        "--model",
        metavar="CKPT",
        help="checkpoint (default: the project's N-MNIST checkpoint; untrained if none yet)",
    )
    model.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:N")
    model.add_argument("--threads", type=int, help="CPU threads for torch (default 1, measured)")
    model.add_argument(
        "--compile", action="store_true", help="torch.compile the step (first compile 15-30 s)"
    )
    model.add_argument(
        "--cuda-graph", action="store_true", help="CUDA: replay the step as a CUDA graph"
    )
    stream = parser.add_argument_group("streaming")
    add_step_options(stream)
    stream.add_argument(
        "--reset-after-us",
        type=int,
        default=1_000_000,
        help="reset a stream when event time jumps by more (default 1 s)",
    )
    stream.add_argument(
        "--lossless",
        action="store_true",
        help="never drop or skip: stop reading when full (replays, evaluation)",
    )
    stream.add_argument(
        "--max-pending-events",
        type=int,
        default=1 << 21,
        help="queue bound in events (default 2 M = 32 MiB)",
    )
    stream.add_argument(
        "--max-steps-per-push",
        type=int,
        default=4,
        help="overload: at most this many steps of one merged push run the network (default 4)",
    )
    stream.add_argument(
        "--allow-model-mismatch",
        action="store_true",
        help="serve streams whose sensor fills under half of the model's input "
        "(refused by default: a model trained on another sensor)",
    )
    stream.add_argument(
        "--max-streams",
        type=int,
        default=64,
        help="streams open at once; a new one beyond is refused and counted (default 64)",
    )
    stream.add_argument(
        "--idle-evict-s",
        type=float,
        default=60.0,
        help="close a stream silent for this long, freeing its state (default 60 s)",
    )
    stream.add_argument(
        "--preview-hz", type=float, default=30.0, help="preview images per stream, 0: none"
    )
    stream.add_argument("--stats-interval-s", type=float, default=1.0)
    parser.add_argument(
        "--exit-on-end", action="store_true", help="exit once every stream seen has ended"
    )
    parser.add_argument("--json", action="store_true", help="print the final stats as JSON")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    add_status_option(parser)


def add_step_options(group) -> None:
    """``--hop-us``, ``--ema-tau-us`` and ``--window``: how the network steps and
    answers; ``stcsnn demo`` offers the same and passes them on."""
    group.add_argument("--hop-us", type=int, help="step length (default: the checkpoint's)")
    group.add_argument(
        "--ema-tau-us", type=float, help="prediction smoothing (default: the checkpoint's)"
    )
    group.add_argument(
        "--window",
        type=int,
        metavar="N",
        help="windowed inference: each hop, the network from zero state over the last N"
        " steps (N x the compute; nothing carried from older hops); 0 = stateful."
        " Default: the checkpoint's stream_window_steps",
    )


def stream_window(window: int | None, config) -> int | None:
    """``--window``, else the checkpoint's ``stream_window_steps``; None = stateful."""
    steps = config.stream_window_steps if window is None else window
    if steps < 0:
        raise ValueError(f"--window must be >= 0 steps, got {steps}")
    return steps or None


def stream_model(loaded, runner, args: argparse.Namespace):
    """The model as the worker runs it: the checkpoint's names and compression, the hop
    and readout smoothing of the options (else the checkpoint's), and the runner."""
    from streamer.stream_pipeline import StreamModel, stream_compression

    config = loaded.config
    return StreamModel(
        name=config.name + ("" if loaded.trained else " (untrained)"),
        class_names=tuple(config.class_names),
        compression=stream_compression(config.compression, args.hop_us),
        ema_tau_us=float(config.stream_ema_tau_us if args.ema_tau_us is None else args.ema_tau_us),
        runner=runner,
    )


def run(args: argparse.Namespace) -> int:
    import threading

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
    )
    from models.checkpoint import CheckpointError
    from models.runner import choose_device, configure_threads, load_model, make_runner
    from streamer.curve import check_exposure, curve_from_args
    from streamer.processes import StatusChannel
    from streamer.transport import EndpointError, check_endpoint, stop_on_signals
    from streamer.worker import WorkerOptions, run_worker

    connect = [e.strip() for value in args.connect for e in value.split(",") if e.strip()]
    try:
        check_endpoint(args.bind, args.bind_any)
        curve = curve_from_args(args)
        check_exposure(args.bind_any, curve, args.insecure)
        options = WorkerOptions(
            connect=connect,
            bind=args.bind,
            bind_any=args.bind_any,
            insecure=args.insecure,
            curve=curve,
            streams=args.streams,
            shard=args.shard,
            reset_after_us=args.reset_after_us,
            overload="block" if args.lossless else "drop",
            max_pending_events=args.max_pending_events,
            max_steps_per_push=args.max_steps_per_push,
            max_streams=args.max_streams,
            allow_model_mismatch=args.allow_model_mismatch,
            idle_evict_s=args.idle_evict_s,
            preview_hz=args.preview_hz,
            stats_interval_s=args.stats_interval_s,
            wait_subscribers=args.wait_subscribers,
            exit_on_end=args.exit_on_end,
        )
        device = choose_device(args.device)
        configure_threads(args.threads)
        loaded = load_model(args.model)
        runner = make_runner(
            loaded.model,
            device,
            compile=args.compile,
            cuda_graph=args.cuda_graph,
            window_steps=stream_window(args.window, loaded.config),
        )
        model = stream_model(loaded, runner, args)
        runner.warmup()
        freeze_startup_objects()
    except (CheckpointError, EndpointError, ValueError) as error:
        print(f"stcsnn worker: {error}", file=sys.stderr)
        return 1
    print(f"stcsnn worker: model: {loaded.description}", file=sys.stderr)
    print(f"stcsnn worker: device: {runner.description}", file=sys.stderr)
    status = StatusChannel(args.status_fd)

    def announce(endpoint: str, session: str) -> None:
        print(
            f"stcsnn worker: predictions on {endpoint} (session {session}), hop {model.hop_us} µs",
            file=sys.stderr,
            flush=True,
        )
        status.send(
            "ready",
            endpoint=endpoint,
            session=session,
            model=loaded.description,
            device=runner.description,
            hop_us=model.hop_us,
        )

    stop_event = threading.Event()
    with stop_on_signals(stop_event):
        try:
            result = run_worker(model, options, stop_event=stop_event, on_bound=announce)
        except (EndpointError, TimeoutError) as error:
            print(f"stcsnn worker: {error}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(result.stats), flush=True)
    status.send("done", stats=result.stats)
    status.close()
    return 0
