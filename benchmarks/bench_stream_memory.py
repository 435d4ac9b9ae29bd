"""Worker memory against many stream ids: N one-message streams into the worker's
socket-free core (the 128x128 gesture network, stateful), RSS before and after.

    .venv/bin/python benchmarks/bench_stream_memory.py [--streams 2000]

Writes benchmarks/results/stream_memory.json: RSS before and after, how many
streams are open, how many were refused, and the size of one stats message.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from core.events import SensorSize, make_events
from models.checkpoint import load_checkpoint
from models.default_checkpoints import default_checkpoint
from models.runner import choose_device, make_runner
from streamer import wire
from streamer.classifier import Classifier, ClassifierOptions
from streamer.stream_pipeline import Outbox, StreamModel, stream_compression
from streamer.worker import rss_mb
from streamer.worker_queue import Pending

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/stream_memory.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    model, config, _ = load_checkpoint(default_checkpoint("dvs_sign"))
    runner = make_runner(model, choose_device("cpu"))  # stateful: the state per stream
    compression = stream_compression(config.compression, 10_000)
    stream_model = StreamModel(config.name, tuple(config.class_names), compression, 1e5, runner)
    classifier = Classifier(stream_model, ClassifierOptions(), Outbox(lambda m: True, "w"))
    n = np.arange(100)
    events = make_events(n, n % 128, n % 128, n % 2)
    before = rss_mb()
    for k in range(args.streams):
        message = wire.Events(
            stream=f"s{k}", session="p", seq=0, events=events, sensor=SensorSize(128, 128)
        )
        classifier.process([Pending(message, time.time_ns())])
    stats = classifier.stats()
    result = {
        "streams_sent": args.streams,
        "rss_mb_before": round(before, 1),
        "rss_mb_after": round(rss_mb(), 1),
        "open_streams": stats["open_streams"],
        "streams_refused": stats["streams_refused"],
        "stats_json_bytes": len(json.dumps(stats)),
        "max_streams": ClassifierOptions().max_streams,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
