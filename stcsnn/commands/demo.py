"""`stcsnn demo`: producer, worker and a view of the predictions, as separate processes.

    stcsnn demo                          # real N-MNIST samples if found, else synthetic events
    stcsnn demo --replay ../shared/data/nmnist/Train --limit 50 --speed 4
    stcsnn demo --camera [SERIAL] | --dv-stream HOST:PORT | --synthetic 1M
    stcsnn demo --replay DIR --no-dashboard --speed max --json   # one JSON object at the end

Ctrl-C stops every process cleanly (and prints the summary so far); so does
the failure of any one of them. See docs/streaming.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import sys
import time

from stcsnn.commands.worker import add_step_options

DASHBOARD_MODULE = "stcsnn.commands.dashboard"
ENDPOINT_PATTERN = r"(tcp://[^\s,()]+)"
CONSOLE_LINES_PER_S = 10
# A finished producer whose end message never arrives (it gives up on a full queue after
# its linger time): stop waiting once the worker has been silent this long.
QUIET_AFTER_PRODUCER_S = 3.0


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group(
        "source (default: real N-MNIST samples if found, else synthetic events)"
    ).add_mutually_exclusive_group()
    source.add_argument(
        "--replay", metavar="PATH", help="a recording, a folder of recordings, or a playlist"
    )
    source.add_argument(
        "--camera", nargs="?", const="", metavar="SERIAL", help="a live iniVation camera"
    )
    source.add_argument("--dv-stream", metavar="HOST:PORT", help="the DV software's network output")
    source.add_argument("--synthetic", metavar="RATE", help="synthetic events, e.g. 1M (ev/s)")
    parser.add_argument(
        "--model",
        metavar="CKPT",
        help="checkpoint (default: the project's one for the source's sensor: N-MNIST's"
        " up to 64x64, the DVS_Sign 128x128 one above)",
    )
    parser.add_argument("--device", default="auto", help="worker device: auto, cpu, cuda:N")
    add_step_options(parser)  # --hop-us, --ema-tau-us, --window: passed to the worker
    parser.add_argument(
        "--speed", default="1", help="replay/synthetic speed: 1 = real time, 'max' = unpaced"
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="replay: at most N recordings; other sources: stop after N predictions",
    )
    parser.add_argument("--shuffle", action="store_true", help="replay: shuffle the recordings")
    parser.add_argument("--loop", action="store_true", help="replay: play again and again")
    parser.add_argument(
        "--allow-drops",
        action="store_true",
        help="replay with the live overload policy (default for replays: lossless)",
    )
    parser.add_argument("--no-dashboard", action="store_true", help="console view only")
    parser.add_argument(
        "--screenshot", metavar="PNG", help="save the dashboard as PNG when it closes"
    )
    parser.add_argument(
        "--exit-after", type=float, metavar="S", help="stop everything after S seconds"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON summary at the end, nothing else"
    )
    parser.add_argument(
        "--start-timeout-s",
        type=float,
        default=120.0,
        help="how long a process may take to start (torch import, compile)",
    )
    parser.add_argument("--verbose", action="store_true", help="the processes' info logs too")


def default_source(args: argparse.Namespace) -> tuple[list[str], str, bool]:
    """(producer source arguments, description, is_replay) for the options given."""
    from replay.paths import data_root

    if args.replay:
        return ["--replay", args.replay], f"replay of {args.replay}", True
    if args.camera is not None:
        return ["--camera", *([args.camera] if args.camera else [])], "live camera", False
    if args.dv_stream:
        return ["--dv-stream", args.dv_stream], f"DV network stream {args.dv_stream}", False
    if args.synthetic:
        return ["--synthetic", args.synthetic], f"synthetic events at {args.synthetic} ev/s", False
    nmnist = data_root() / "nmnist" / "Train"
    if nmnist.is_dir():
        args.shuffle = True
        return (
            ["--replay", str(nmnist)],
            f"DEFAULT SOURCE: replay of the real N-MNIST samples in {nmnist} (shuffled)",
            True,
        )
    return (
        ["--synthetic", "1M"],
        f"DEFAULT SOURCE: synthetic events, 1 M ev/s, 128x128 (no N-MNIST data at {nmnist})",
        False,
    )


def dashboard_module(args: argparse.Namespace) -> str | None:
    """The dashboard's module, run as ``python -m MODULE --connect WORKER_ENDPOINT``, or
    None (``--no-dashboard``, or no dashboard in this version of stcsnn)."""
    if args.no_dashboard or importlib.util.find_spec(DASHBOARD_MODULE) is None:
        return None
    return DASHBOARD_MODULE


def default_model(args: argparse.Namespace, source_args: list[str]) -> str | None:
    """Without ``--model``: the default checkpoint that fits the source's sensor (a
    replay's first file; live and synthetic sources are 128x128 or larger)."""
    from core.events import SensorSize
    from models.runner import default_checkpoint_path

    if "--replay" in source_args:
        from replay.formats import iter_recording
        from replay.player import list_recordings

        first = list_recordings(source_args[source_args.index("--replay") + 1])[0]
        sensor, chunks = iter_recording(first, chunk_events=1)
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    else:
        sensor = SensorSize(128, 128)
    path = default_checkpoint_path(sensor)
    return str(path) if path is not None else None


def window_visible() -> bool:
    """Whether the dashboard shows a window a person can close (not Qt's offscreen
    platform, which the dashboard picks where Linux has no display)."""
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _console_line(message, labels: dict) -> str:
    header = message.header
    label = labels.get(message.stream)
    truth = ""
    if label:
        t = int(header["t_end_us"]) - 1
        for start_us, end_us, value in label[-4:]:
            if start_us <= t < end_us:
                truth = f"  label {value}"
    latency_ms = (time.time_ns() - int(header["sent_ns"])) / 1e6
    return (
        f"{message.stream}  t={int(header['t_end_us']) / 1e6:9.3f} s  "
        f"top-1 {header['top1_name']:>12} ({float(header['top1_prob']):.2f}){truth}  "
        f"latency {latency_ms:6.1f} ms"
    )


def run(args: argparse.Namespace) -> int:
    import threading

    import zmq

    from streamer import wire
    from streamer.demo import Child, ChildFailed, PredictionLog, Supervisor, summarise
    from streamer.pacing import parse_speed
    from streamer.transport import stop_on_signals

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    log = logging.getLogger("stcsnn.demo")

    def say(text: str) -> None:
        print(f"stcsnn demo: {text}", file=sys.stderr, flush=True)

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        speed = parse_speed(args.speed)
    except ValueError as error:
        say(str(error))
        return 2
    if args.limit is not None and args.limit <= 0:
        say(f"--limit must be positive, got {args.limit}")
        return 2
    source_args, description, is_replay = default_source(args)
    lossless = is_replay and not args.allow_drops
    say(f"source: {description}")
    producer_args = [
        *source_args,
        "--endpoint",
        "tcp://127.0.0.1:0",
        "--wait-subscribers",
        "1",
        "--speed",
        "max" if math.isinf(speed) else str(speed),
        "--json",
    ]
    if is_replay and args.limit:
        producer_args += ["--limit", str(args.limit)]
    if is_replay and args.shuffle:
        producer_args += ["--shuffle"]
    if is_replay and args.loop:
        producer_args += ["--loop"]
    if lossless:
        producer_args += ["--lossless"]
    quiet = [] if args.verbose else ["--quiet"]
    dashboard = dashboard_module(args)
    if dashboard is None and not args.no_dashboard:
        say("no dashboard in this version: console view of the predictions")
    if args.screenshot and dashboard is None:
        say("--screenshot needs the dashboard (drop --no-dashboard)")
        return 2
    if dashboard is not None and args.json:
        say("--json: the dashboard stays open after the end until it is closed")
    worker_args = [
        "--bind",
        "tcp://127.0.0.1:0",
        "--wait-subscribers",
        str(1 + (dashboard is not None)),
        "--device",
        args.device,
        "--json",
    ]
    model = args.model
    if model is None:
        try:
            model = default_model(args, source_args)
        except (OSError, ValueError) as error:  # the producer will report it properly
            log.debug("no default model from the source: %s", error)
    if model:
        worker_args += ["--model", model]
    if args.hop_us:
        worker_args += ["--hop-us", str(args.hop_us)]
    if args.ema_tau_us:
        worker_args += ["--ema-tau-us", str(args.ema_tau_us)]
    if args.window is not None:
        worker_args += ["--window", str(args.window)]
    if lossless:
        worker_args += ["--lossless"]

    stop_event = threading.Event()
    prediction_log = PredictionLog()
    labels: dict[str, list] = {}
    context = zmq.Context.instance()
    sub = None
    viewer = None
    outcome = "done"
    end_received = True
    started_s = time.monotonic()
    with stop_on_signals(stop_event), Supervisor() as supervisor:
        try:
            producer = supervisor.start(
                Child("producer", "stcsnn.commands.produce", producer_args + quiet, echo=echo)
            )
            producer_endpoint = producer.wait_for(
                r"publishing .* on " + ENDPOINT_PATTERN, args.start_timeout_s
            ).group(1)
            worker = supervisor.start(
                Child(
                    "worker",
                    "stcsnn.commands.worker",
                    ["--connect", producer_endpoint, *worker_args, *quiet],
                    echo=echo,
                )
            )
            for line in ("model: (.*)", "device: (.*)"):
                found = worker.wait_for(line, args.start_timeout_s).group(1)
                say(f"worker {line.split(':')[0]}: {found}")
            worker_endpoint = worker.wait_for(
                r"predictions on " + ENDPOINT_PATTERN, args.start_timeout_s
            ).group(1)
            sub = context.socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.setsockopt(zmq.RCVHWM, 100_000)
            sub.setsockopt(zmq.LINGER, 0)
            sub.connect(worker_endpoint)
            if dashboard is not None:
                # The dashboard keeps its own clock for --exit-after, so that it
                # closes itself (saving the screenshot) rather than being killed.
                viewer_args = ["--connect", worker_endpoint, "--source", description]
                if args.screenshot:
                    viewer_args += ["--screenshot", args.screenshot]
                if args.exit_after is not None:
                    viewer_args += ["--exit-after", str(args.exit_after)]
                viewer = supervisor.start(
                    Child("dashboard", dashboard, viewer_args + quiet, echo=echo)
                )
            say(f"producer on {producer_endpoint}, worker predictions on {worker_endpoint}")
            wire_stats = wire.WireStats()
            last_line_s: dict[str, float] = {}
            last_stream_message_s = time.monotonic()
            while not stop_event.is_set():
                if viewer is not None and viewer.returncode == 0:
                    outcome = "stopped"  # the window was closed: the user is done
                    break
                if (
                    viewer is None
                    and args.exit_after is not None
                    and time.monotonic() - started_s > args.exit_after
                ):
                    outcome = "stopped"
                    break
                failed = supervisor.failed(expected_to_finish=(producer, viewer))
                if failed is not None:
                    outcome = failed.failure(f"exited with code {failed.returncode}")
                    break
                message = wire.receive(sub, wire_stats, log, timeout_ms=100)
                if message is None:
                    quiet_s = time.monotonic() - last_stream_message_s
                    if producer.returncode == 0 and quiet_s > QUIET_AFTER_PRODUCER_S:
                        say(
                            f"the producer has finished and nothing came for {quiet_s:.0f} s, "
                            "but its end message never arrived: the stream's tail may be lost"
                        )
                        end_received = False
                        break
                    continue
                if message.type != "stats":
                    last_stream_message_s = time.monotonic()
                prediction_log.add(message, time.time_ns())
                if message.type == "labels":
                    labels.setdefault(message.stream, []).extend(
                        (s["start_us"], s["end_us"], s["label"])
                        for s in message.header.get("segments", [])
                    )
                elif message.type == "prediction" and not args.json:
                    now = time.monotonic()
                    if now - last_line_s.get(message.stream, 0.0) >= 1 / CONSOLE_LINES_PER_S:
                        last_line_s[message.stream] = now
                        print(_console_line(message, labels), flush=True)
                if args.limit and not is_replay and prediction_log.predictions >= args.limit:
                    break
                streams = prediction_log.streams
                if message.type == "end" and streams and all(s.ended for s in streams.values()):
                    break
            else:
                outcome = "stopped"
            if outcome == "done" and viewer is not None and viewer.returncode is None:
                if window_visible():
                    say("end of stream: close the dashboard window (or press Ctrl-C) to finish")
                    while viewer.returncode is None and not stop_event.wait(0.2):
                        pass
                else:  # offscreen: nobody can close it; its clean quit saves a screenshot
                    viewer.stop(timeout_s=10)
        except ChildFailed as error:
            outcome = str(error)
        finally:
            if sub is not None:
                sub.close(0)
            supervisor.stop_all()
        worker_stats = (
            supervisor.children[1].json_output() if len(supervisor.children) > 1 else None
        )
        producer_stats = supervisor.children[0].json_output() if supervisor.children else None
    failed = outcome not in ("done", "stopped")
    if failed:
        say(outcome)
    summary = summarise(
        prediction_log,
        worker_stats,
        producer_stats,
        source=description,
        outcome="failed" if failed else outcome,
        end_received=end_received and outcome == "done",
        speed=args.speed,
        lossless=lossless,
        wall_s=round(time.monotonic() - started_s, 3),
    )
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        _print_summary(summary)
    return 1 if failed else 0


def _print_summary(summary: dict) -> None:
    def fmt(value, spec=".1f") -> str:
        return "n/a" if value is None else format(value, spec)

    print(
        f"\n{summary['predictions']} predictions over {summary['hops']} hops of "
        f"{fmt(summary['hop_us'], 'd')} µs; {summary['dropped']} events dropped, "
        f"{summary['steps_skipped']} steps skipped"
    )
    print(
        f"latency (last event of a hop published -> prediction here): "
        f"p50 {fmt(summary['latency_ms_p50'], '.2f')} ms, "
        f"p99 {fmt(summary['latency_ms_p99'], '.2f')} ms"
    )
    if summary.get("streaming_accuracy") is not None:
        print(
            f"streaming accuracy {summary['streaming_accuracy']:.3f} over "
            f"{summary['segments']} labelled samples; per hop {fmt(summary['hop_accuracy'], '.3f')}"
        )


if __name__ == "__main__":  # `python -m stcsnn.commands.demo` until `stcsnn demo` exists
    _parser = argparse.ArgumentParser(prog="stcsnn demo", description=__doc__.splitlines()[0])
    configure(_parser)
    sys.exit(run(_parser.parse_args()))
