"""`stcsnn demo`: producer, worker and a view of the predictions, as separate processes.

    stcsnn demo                          # real N-MNIST samples if found, else synthetic events
    stcsnn demo --replay ../shared/data/nmnist/Train --limit 50 --speed 4
    stcsnn demo --camera [SERIAL] | --dv-stream HOST:PORT | --synthetic 1M
    stcsnn demo --emulate digits [--font DejaVuSerif] [--limit 100]   # no camera, no data
    stcsnn demo --video FILE [--sensor 128x128] | --webcam [N]        # an emulated DVS
    stcsnn demo --replay DIR --no-dashboard --speed max --json   # one JSON object at the end

Ctrl-C stops every process cleanly (and prints the summary so far); so does
the failure of any one of them. See docs/streaming.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from stcsnn.commands.produce import add_emulated_sources, parse_sensor
from stcsnn.commands.worker import add_step_options
from streamer import wire
from streamer.pacing import parse_speed
from streamer.prediction_log import PredictionLog, summarise

CONSOLE_LINES_PER_S = 10
# A finished producer whose end message never arrives (it gives up on a full queue after
# its linger time): stop waiting once the worker has been silent this long.
QUIET_AFTER_PRODUCER_S = 10.0


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
    add_emulated_sources(source, parser)
    parser.add_argument(
        "--sensor",
        type=parse_sensor,
        help="--video, --webcam: the emulated sensor WIDTHxHEIGHT (default 128x128)",
    )
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
        help="replay: at most N recordings; --emulate: N samples;"
        " other sources: stop after N predictions",
    )
    parser.add_argument("--shuffle", action="store_true", help="replay: shuffle the recordings")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="--emulate: the digits' order and pixel mismatch; --video, --webcam: pixel mismatch",
    )
    parser.add_argument("--loop", action="store_true", help="replay: play again and again")
    parser.add_argument(
        "--allow-model-mismatch",
        action="store_true",
        help="run a checkpoint that does not fit the source (another sensor, fewer classes "
        "than its labels, another dataset) with a warning instead of refusing",
    )
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


# File formats that hold one known dataset (replay.formats names -> models.splits names).
FORMAT_DATASETS = {"nmnist": "nmnist", "dvs_sign": "dvs_sign"}
EMBEDDED_NMNIST = Path(__file__).resolve().parent.parent / "demo_data" / "nmnist"


def default_source(args: argparse.Namespace, workdir: Path) -> tuple[list[str], str, bool]:
    """(producer source arguments, description, is_replay) for the options given.

    With no source option: the N-MNIST samples the default checkpoint never trained
    on, from the data folder if it has N-MNIST (a playlist in ``workdir``), else the
    30 embedded in stcsnn (``stcsnn/demo_data``)."""
    from replay.paths import data_root

    if args.replay:
        return ["--replay", args.replay], f"replay of {args.replay}", True
    if args.camera is not None:
        return ["--camera", *([args.camera] if args.camera else [])], "live camera", False
    if args.dv_stream:
        return ["--dv-stream", args.dv_stream], f"DV network stream {args.dv_stream}", False
    if args.synthetic:
        return ["--synthetic", args.synthetic], f"synthetic events at {args.synthetic} ev/s", False
    if args.emulate:
        return emulated_source(args)
    if args.video or args.webcam is not None:
        return video_source(args)
    args.shuffle = True
    nmnist = data_root() / "nmnist" / "Train"
    held_out = held_out_nmnist() if nmnist.is_dir() else None
    if held_out:
        playlist = workdir / "held_out_nmnist.txt"
        playlist.write_text("\n".join(str(p) for p in sorted(held_out)) + "\n")
        return (
            ["--replay", str(playlist)],
            f"DEFAULT SOURCE: the {len(held_out)} real N-MNIST samples in {nmnist} that the "
            "default checkpoint never trained on (shuffled)",
            True,
        )
    return (
        ["--replay", str(EMBEDDED_NMNIST)],
        f"DEFAULT SOURCE: 30 real N-MNIST samples embedded in stcsnn, never trained on by "
        f"the default checkpoint (no N-MNIST at {nmnist}; set STCSNN_DATA for more; "
        "CC BY-SA 4.0: stcsnn/demo_data/README.md) (shuffled)",
        True,
    )


def emulated_source(args: argparse.Namespace) -> tuple[list[str], str, bool]:
    """The built-in digit scene: labelled and finite with ``--limit``, so it runs like a
    replay (lossless, ``--limit`` counts samples, accuracy in the summary)."""
    fonts = args.font or ["DejaVuSans"]
    source_args = ["--emulate", args.emulate] + [f"--font={font}" for font in fonts]
    count = f"{args.limit} " if args.limit else "endless "
    description = (
        f"emulated {args.emulate}: {count}printed digits ({', '.join(fonts)}) on N-MNIST's "
        "saccades before an emulated 34x34 DVS"
    )
    return source_args, description, True


def video_source(args: argparse.Namespace) -> tuple[list[str], str, bool]:
    """A video file (finite: played like a replay, lossless) or a webcam (live), before
    an emulated DVS of ``--sensor``."""
    width, height = args.sensor or (128, 128)
    sensor_args = ["--sensor", f"{width}x{height}"]
    if args.video:
        description = f"video {args.video} before an emulated {width}x{height} DVS"
        return ["--video", args.video, *sensor_args], description, True
    description = f"webcam {args.webcam} before an emulated {width}x{height} DVS"
    return ["--webcam", str(args.webcam), *sensor_args], description, False


@functools.lru_cache(maxsize=4)
def checkpoint_header(path: str):
    """``(config, extra)`` of a checkpoint, loaded once however many checks read it."""
    from models.checkpoint import load_checkpoint

    _, config, extra = load_checkpoint(path)
    return config, extra


def held_out_nmnist() -> set[Path] | None:
    """The validation split the default N-MNIST checkpoint records, found in the data
    folder, or None."""
    from models.checkpoint import CheckpointError
    from models.default_checkpoints import default_checkpoint
    from models.splits import checkpoint_part_files

    try:
        _, extra = checkpoint_header(str(default_checkpoint("nmnist")))
    except (CheckpointError, FileNotFoundError):
        return None
    return checkpoint_part_files(extra, "val")


def trained_on_note(model: str | None, source_args: list[str]) -> str | None:
    """A note when a replay holds recordings the checkpoint was trained on: its answers
    on them say little about recordings it has not seen."""
    if model is None or "--replay" not in source_args:
        return None
    from models.checkpoint import CheckpointError
    from models.splits import checkpoint_part_files
    from replay.player import list_recordings

    try:
        _, extra = checkpoint_header(model)
        replay = replay_path(source_args)
        replayed = {path.resolve() for path in list_recordings(replay)}
    except (CheckpointError, OSError, ValueError):
        return None
    trained = checkpoint_part_files(extra, "train") or set()
    overlap = len(replayed & trained)
    if not overlap:
        return None
    return (
        f"note: {overlap} of the {len(replayed)} recordings in {replay} were in this "
        "checkpoint's training data; its accuracy on them overstates what it does on "
        "recordings it has not seen"
    )


def model_mismatch(model: str | None, source_args: list[str]) -> str | None:
    """Why the checkpoint does not fit the replay (None if it does, or if this cannot
    be told): its input sensor against the recordings' (as the worker judges it),
    the labels against its classes, the dataset it was trained on against the
    recordings' format."""
    if model is None or "--replay" not in source_args:
        return None
    from core.adapt import SensorAdapter
    from models.checkpoint import CheckpointError
    from replay.formats import detect_format, labels_for
    from streamer.classifier import MIN_SENSOR_COVERAGE

    try:
        config, extra = checkpoint_header(model)
        first, sensor = first_recording(replay_path(source_args))
        labels = labels_for(first)
        file_format = detect_format(first)
    except (CheckpointError, OSError, ValueError, IndexError):
        return None
    coverage = SensorAdapter(sensor, config.compression.input_sensor).coverage
    if coverage < MIN_SENSOR_COVERAGE:
        return (
            f"{config.name} expects {config.compression.input_sensor} input and the "
            f"recordings are {sensor[0]}x{sensor[1]} (they would fill {coverage:.0%} of it)"
        )
    found = [labels] if isinstance(labels, int) else [s.label for s in labels or ()]
    if any(label >= config.num_classes for label in found):
        return (
            f"{first.name} is labelled {max(found)}; {config.name} has {config.num_classes} classes"
        )
    trained_on = extra.get("dataset")
    if (
        trained_on in FORMAT_DATASETS.values()
        and FORMAT_DATASETS.get(file_format, trained_on) != trained_on
    ):
        return f"{config.name} was trained on {trained_on}; the recordings are {file_format} files"
    return None


def replay_path(source_args: list[str]) -> str | None:
    """The producer's ``--replay`` argument, if the source is a replay."""
    return source_args[source_args.index("--replay") + 1] if "--replay" in source_args else None


def first_recording(replay: str):
    """(path, sensor) of a replay's first recording (its header only)."""
    from replay.formats import iter_recording
    from replay.player import list_recordings

    first = list_recordings(replay)[0]
    sensor, chunks = iter_recording(first, chunk_events=1)
    getattr(chunks, "close", lambda: None)()
    return first, sensor


def default_model(args: argparse.Namespace, source_args: list[str]) -> str | None:
    """Without ``--model``: the default checkpoint that fits the source's sensor (a
    replay's first file; live and synthetic sources are 128x128 or larger)."""
    from core.events import SensorSize
    from models.runner import default_checkpoint_path

    replay = replay_path(source_args)
    if "--emulate" in source_args:
        from streamer.emulated import EMULATED_DIGITS_SENSOR

        sensor = EMULATED_DIGITS_SENSOR
    elif "--sensor" in source_args:  # --video, --webcam
        sensor = SensorSize(*parse_sensor(source_args[source_args.index("--sensor") + 1]))
    else:
        sensor = first_recording(replay)[1] if replay else SensorSize(128, 128)
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


def _console_line(prediction, segments) -> str:
    from core.labels import label_at

    label = label_at(segments, prediction.t_end_us - 1) if segments else None
    truth = "" if label is None else f"  label {label}"
    latency_ms = (time.time_ns() - prediction.sent_ns) / 1e6
    return (
        f"{prediction.stream}  t={prediction.t_end_us / 1e6:9.3f} s  "
        f"top-1 {prediction.top1_name:>12} ({prediction.top1_prob:.2f}){truth}  "
        f"latency {latency_ms:6.1f} ms"
    )


def child_args(
    args: argparse.Namespace, model: str | None, *, is_replay: bool, lossless: bool
) -> tuple[list[str], list[str]]:
    """(producer, worker) arguments for the options given (the source's come first)."""
    speed = "max" if math.isinf(parse_speed(args.speed)) else args.speed
    quiet = [] if args.verbose else ["--quiet"]
    producer = ["--speed", speed, *quiet]
    if is_replay:
        producer += ["--limit", str(args.limit)] if args.limit else []
        producer += ["--shuffle"] * args.shuffle + ["--loop"] * args.loop
    emulated = args.emulate or args.video or args.webcam is not None
    producer += ["--seed", str(args.seed)] if emulated else []
    worker = ["--device", args.device, *quiet]
    worker += ["--model", model] if model else []
    worker += ["--hop-us", str(args.hop_us)] if args.hop_us else []
    worker += ["--ema-tau-us", str(args.ema_tau_us)] if args.ema_tau_us else []
    worker += ["--window", str(args.window)] if args.window is not None else []
    worker += ["--allow-model-mismatch"] if args.allow_model_mismatch else []
    if lossless:
        producer.append("--lossless")
        worker.append("--lossless")
    return producer, worker


def dashboard_args(args: argparse.Namespace, description: str) -> list[str] | None:
    """The dashboard's arguments, or None with ``--no-dashboard``. It keeps its own clock
    for ``--exit-after``, so that it closes itself (saving the screenshot)."""
    if args.no_dashboard:
        return None
    from streamer.display_check import explain, missing_libraries

    missing = missing_libraries()
    if missing:
        say(f"warning: no dashboard: {explain(missing)}. The console view instead")
        return None
    argv = ["--source", description] + ([] if args.verbose else ["--quiet"])
    argv += ["--screenshot", args.screenshot] if args.screenshot else []
    argv += ["--exit-after", str(args.exit_after)] if args.exit_after is not None else []
    return argv


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, or None."""
    from stcsnn.commands.produce import parse_rate
    from streamer.sources import parse_host_port

    try:
        parse_speed(args.speed)
    except ValueError as error:
        return str(error)
    # The producer's own checks, here before any process starts (there a bad value
    # ends the producer with its whole usage text).
    for option, value, parse in (
        ("--synthetic", args.synthetic, parse_rate),
        ("--dv-stream", args.dv_stream, parse_host_port),
    ):
        try:
            if value is not None:
                parse(value)
        except (ValueError, argparse.ArgumentTypeError) as error:
            return f"{option}: {error}"
    if args.limit is not None and args.limit <= 0:
        return f"--limit must be positive, got {args.limit}"
    if args.font and not args.emulate:
        return "--font goes with --emulate digits"
    if args.emulate and (args.shuffle or args.loop):
        return "--shuffle and --loop are for replays (--emulate plays a seeded shuffle; --seed)"
    if args.sensor and not (args.video or args.webcam is not None):
        return "--sensor goes with --video or --webcam"
    if args.video and (args.shuffle or args.limit):
        return "--shuffle and --limit are for replays (--video plays the file once; --loop)"
    if args.video:
        problem = video_problem(args.video)
        if problem:
            return problem
    if args.screenshot and args.no_dashboard:
        return "--screenshot needs the dashboard (drop --no-dashboard)"
    return None


def video_problem(path: str) -> str | None:
    """Why ``--video`` cannot play (no OpenCV, no file, no frame), found before any
    process starts: one line instead of a failing producer's."""
    from core.source import SourceError
    from streamer.video import VideoSource

    try:
        VideoSource(path)
    except SourceError as error:
        return str(error)
    return None


class Watch:
    """The demo's loop over the worker's messages: log, console lines, when to stop."""

    def __init__(self, args: argparse.Namespace, pipeline, stop_event, *, is_replay: bool):
        self.args = args
        self.pipeline = pipeline
        self.stop_event = stop_event
        self.is_replay = is_replay
        self.log = PredictionLog()
        self.started_s = time.monotonic()
        self.end_received = True
        self._last_line_s: dict[str, float] = {}

    def run(self) -> str:
        """Until every stream ended ("done"), a stop ("stopped") or a failure (why)."""
        viewer = self.pipeline.dashboard
        while not self.stop_event.is_set():
            if viewer is not None and viewer.returncode == 0:
                return "stopped"  # the window was closed: the user is done
            exit_after = self.args.exit_after
            if viewer is None and exit_after is not None:
                if time.monotonic() - self.started_s > exit_after:
                    return "stopped"
            received = self.pipeline.receive(timeout_ms=100)
            if received is None:
                quiet_s = self.pipeline.quiet_after_producer_s()
                if quiet_s > QUIET_AFTER_PRODUCER_S:
                    say(
                        f"the producer has finished and nothing came for {quiet_s:.0f} s, "
                        "but its end message never arrived: the stream's tail may be lost"
                    )
                    self.end_received = False
                    return "done"
                continue
            if self._take(*received):
                return "done"
        return "stopped"

    def _take(self, message, received_ns: int) -> bool:
        """Record one message; True when the demo is complete."""
        self.log.add(message, received_ns)
        if isinstance(message, wire.Prediction) and not self.args.json:
            now = time.monotonic()
            if now - self._last_line_s.get(message.stream, 0.0) >= 1 / CONSOLE_LINES_PER_S:
                self._last_line_s[message.stream] = now
                segments = self.log.stream(message.stream).segments
                print(_console_line(message, segments), flush=True)
        limit = self.args.limit
        if limit and not self.is_replay and self.log.predictions >= limit:
            return True
        streams = self.log.streams
        return isinstance(message, wire.End) and all(s.ended for s in streams.values())

    def finish_dashboard(self) -> None:
        """At the end of the stream: a window a person sees stays until closed; an
        offscreen one is closed (its clean quit saves the screenshot)."""
        viewer = self.pipeline.dashboard
        if viewer is None or viewer.returncode is not None:
            return
        if window_visible():
            say("end of stream: close the dashboard window (or press Ctrl-C) to finish")
            while viewer.returncode is None and not self.stop_event.wait(0.2):
                pass
        else:
            viewer.stop(timeout_s=10)


def say(text: str) -> None:
    print(f"stcsnn demo: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)
    problem = check_args(args)
    if problem is not None:
        say(problem)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="stcsnn-demo-"))
    try:
        return _run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def chosen_model(args: argparse.Namespace, source_args: list[str]) -> str | None:
    """``--model``, else the default checkpoint for the source's sensor."""
    if args.model is not None:
        return args.model
    try:
        return default_model(args, source_args)
    except (OSError, ValueError) as error:  # the producer will report it properly
        logging.getLogger("stcsnn.demo").debug("no default model from the source: %s", error)
        return None


def _run(args: argparse.Namespace, workdir: Path) -> int:
    from streamer.pipeline import Pipeline
    from streamer.processes import ChildFailed
    from streamer.transport import stop_on_signals

    source_args, description, is_replay = default_source(args, workdir)
    lossless = is_replay and not args.allow_drops
    say(f"source: {description}")
    model = chosen_model(args, source_args)
    mismatch = model_mismatch(model, source_args)
    if mismatch and not args.allow_model_mismatch:
        say(f"{mismatch}: its answers would mean nothing; --allow-model-mismatch runs it anyway")
        return 2
    if mismatch:
        say(f"warning: {mismatch}")
    note = trained_on_note(model, source_args)
    if note:
        say(note)
    producer_args, worker_args = child_args(args, model, is_replay=is_replay, lossless=lossless)
    dashboard = dashboard_args(args, description)
    if dashboard is not None and args.json:
        say("--json: the dashboard stays open after the end until it is closed")
    pipeline = Pipeline(
        source_args,
        producer_args=producer_args,
        worker_args=worker_args,
        dashboard_args=dashboard,
        echo=lambda line: print(line, file=sys.stderr, flush=True),
        start_timeout_s=args.start_timeout_s,
    )
    stop_event = threading.Event()
    watch = Watch(args, pipeline, stop_event, is_replay=is_replay)
    with stop_on_signals(stop_event):
        try:
            with pipeline:
                say(f"worker model: {pipeline.worker.ready.get('model')}")
                say(f"worker device: {pipeline.worker.ready.get('device')}")
                endpoints = pipeline.endpoints
                say(
                    f"producer on {endpoints['producer']}, "
                    f"worker predictions on {endpoints['worker']}"
                )
                outcome = watch.run()
                if outcome == "done":
                    watch.finish_dashboard()
        except ChildFailed as error:
            outcome = str(error)
    failed = outcome not in ("done", "stopped")
    if failed:
        say(outcome)
    summary = summarise(
        watch.log,
        pipeline.worker_stats,
        pipeline.producer_stats,
        source=description,
        outcome="failed" if failed else outcome,
        end_received=watch.end_received and outcome == "done",
        speed=args.speed,
        lossless=lossless,
        wall_s=round(time.monotonic() - watch.started_s, 3),
    )
    if args.json:
        print(json.dumps(summary), flush=True)
    elif not (failed and summary["predictions"] == 0):  # nothing to sum up
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
