"""The worker's per-event path in one process, beside the bare compressor on the same
events in the same run: what the worker costs per event around the compressor,
without the producer and the transport competing for the cores.

    .venv/bin/python benchmarks/bench_worker_path.py [--rate 10e6] [--seconds 2] [--rounds 5]

Events: the synthetic source (128x128, 1 ms chunks), encoded as the producer encodes
them. Worker path: ``wire.decode`` of the frames, then ``Classifier.process`` on
batches of ``--batch`` messages (what one cycle of the worker takes off its queue at
full speed) with the shipped gesture checkpoint as the worker runs it (the
checkpoint's hop and window, previews on). Bare compressor: ``StreamingCompressor.push``
on the same events, one push per batch. Rounds alternate; medians are reported.

Writes benchmarks/results/worker_path.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from core.compress import StreamingCompressor
from core.events import SensorSize, concat_events
from models.checkpoint import load_checkpoint
from models.default_checkpoints import default_checkpoint
from models.runner import choose_device, make_runner
from streamer import wire
from streamer.classifier import Classifier, ClassifierOptions
from streamer.sources import SyntheticSource
from streamer.stream_pipeline import Outbox, StreamModel
from streamer.worker_queue import Pending

ROOT = Path(__file__).resolve().parent.parent


def encoded_messages(rate: float, seconds: float) -> tuple[list[list[bytes]], int]:
    """The synthetic stream as the producer's frames (bytes, as a receiver holds them)."""
    source = SyntheticSource(
        rate, sensor=SensorSize(128, 128), duration_us=round(seconds * 1e6), seed=1
    )
    frames, events = [], 0
    for seq, item in enumerate(source.items(threading.Event())):
        if isinstance(item, np.ndarray) and len(item):
            message = wire.Events(
                stream="s", session="p", seq=seq, events=item, sensor=source.sensor
            )
            frames.append([bytes(f) for f in wire.encode(message)])
            events += len(item)
    return frames, events


def worker_path_s(frames: list[list[bytes]], model: StreamModel, batch: int) -> float:
    published: list[wire.Message] = []
    classifier = Classifier(model, ClassifierOptions(), Outbox(published.append, "w"))
    started = time.perf_counter()
    for i in range(0, len(frames), batch):
        now_ns = time.time_ns()
        classifier.process([Pending(wire.decode(f), now_ns) for f in frames[i : i + batch]])
    return time.perf_counter() - started


def compressor_s(frames: list[list[bytes]], model: StreamModel, batch: int) -> float:
    chunks = [wire.decode(f).events for f in frames]
    compressor = StreamingCompressor(model.compression, start_us=0)
    started = time.perf_counter()
    for i in range(0, len(chunks), batch):
        compressor.push(concat_events(chunks[i : i + batch]))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10e6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/worker_path.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import torch

    torch.set_num_threads(1)
    loaded_model, config, _ = load_checkpoint(default_checkpoint("dvs_sign"))
    runner = make_runner(
        loaded_model, choose_device("cpu"), window_steps=config.stream_window_steps or None
    )
    model = StreamModel(config.name, tuple(config.class_names), config.compression, 1e5, runner)
    frames, events = encoded_messages(args.rate, args.seconds)
    path_s, bare_s = [], []
    for _ in range(args.rounds):
        path_s.append(worker_path_s(frames, model, args.batch))
        bare_s.append(compressor_s(frames, model, args.batch))
    path_rate = events / statistics.median(path_s)
    bare_rate = events / statistics.median(bare_s)
    result = {
        "events": events,
        "messages": len(frames),
        "batch_messages": args.batch,
        "hop_us": model.hop_us,
        "worker_path_events_per_s": round(path_rate),
        "compressor_events_per_s": round(bare_rate),
        "ratio": round(path_rate / bare_rate, 3),
        "rounds": args.rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
