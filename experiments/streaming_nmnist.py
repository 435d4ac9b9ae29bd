"""Streaming accuracy of N-MNIST checkpoints on the 100-sample validation split (issue 5).

    .venv/bin/python experiments/streaming_nmnist.py CKPT [CKPT ...] [--name NAME ...]
        [--no-demo] [--ema-tau-us 75000 150000 300000] [--gap-us 0]

For each checkpoint, on the fixed validation split (100 samples, stratified,
split seed 0; the one ``stcsnn eval --split val`` uses):

* **clip accuracy**: ``models.evaluate.evaluate_checkpoint`` (each sample a
  clip of its own, state from zero, grid from its first event);
* **streaming accuracy through the real pipeline**: ``stcsnn demo --replay
  DIR --shuffle --speed max --no-dashboard --json --model CKPT``, where DIR is
  a temporary folder of symlinks ``<label>/<id>.bin`` to the real files (no
  data is copied). ``--shuffle`` (seed 0, the producer's default) mixes the
  digits; without it the folder plays 0s, then 1s, ..., so the previous
  sample would nearly always be the same digit;
* **the same stream offline** (``simulate_stream``): the replay's events on
  one timeline exactly as the producer makes them (``replay.player``), one
  clip on the worker's grid (aligned to multiples of the hop), one forward
  pass, the worker's EMA. ``tests/test_pipeline.py`` shows the worker's
  outputs equal this forward; here the figures are checked against the
  demo's. Offline, the EMA constant can be swept cheaply, and the per-hop
  accuracy is split by time since the sample's onset, with the decision
  latency.

Definitions (those of ``streamer/prediction_log.py``): a sample's stream answer is the
smoothed top-1 of the last hop ending inside it; ``hop_accuracy`` scores every
hop against the label at its last µs. Here also: hop ``k`` of a sample is the
``k``-th hop ending after its onset (k = 0: the hop in which it starts, which
also holds the end of the previous sample); the **decision latency** of a
sample is the time from its onset to the end of the first hop from which the
smoothed top-1 is correct and stays correct to the sample's last hop (none if
its last hop is wrong); ``top1_changes_per_sample`` counts how often the
smoothed top-1 changes between the hops of a sample (the flicker that the
smoothing is there to calm).

One JSON per checkpoint goes to ``experiments/results/streaming_nmnist/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.labels import LabelSegment

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "streaming_nmnist"
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "nmnist"
REPLAY_SEED = 0  # the producer's default --seed for --shuffle
MAX_HOPS_REPORTED = 6


# ---------------------------------------------------------------- the replay folder


def validation_files(root: str | os.PathLike) -> list[tuple[Path, int]]:
    """``(file, label)`` of the default validation split of N-MNIST's train folder."""
    from models.splits import default_split, open_part

    samples = open_part("nmnist", root, "val", default_split("nmnist"))
    pairs = zip(samples.sources, samples.labels, strict=True)
    return [(Path(source.path), int(label)) for source, label in pairs]


def link_replay_folder(files: list[tuple[Path, int]], folder: Path) -> Path:
    """``folder/<label>/<id>.bin`` symlinks to ``files`` (the real data stays where it is)."""
    for path, label in files:
        target = folder / str(label) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())
    return folder


# ---------------------------------------------------------------- the stream offline


def replay_stream(
    folder: Path, *, shuffle: bool = True, seed: int = REPLAY_SEED, gap_us: int = 0
) -> tuple[np.ndarray, list[LabelSegment]]:
    """The events and the labelled segments a replay of
    ``folder`` publishes (``replay.player``: one timeline, the same order)."""
    from core.events import concat_events
    from core.source import Labels
    from replay.player import open_replay

    chunks, segments = [], []
    source = open_replay(folder, shuffle=shuffle, seed=seed, gap_us=gap_us)
    for item in source.items(threading.Event()):
        if isinstance(item, np.ndarray):
            chunks.append(item)
        elif isinstance(item, Labels):
            segments += item.segments
    return concat_events(chunks), segments


def stream_logits(model, config, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(t_end_us [N], logits [N, C])`` of the worker on one uninterrupted stream:
    grid aligned to multiples of the hop, the last step flushed at the end."""
    import dataclasses

    import torch

    from core.compress import compress_clip

    hop = config.compression.step_us
    t = events["timestamp"]
    t0 = int(t[0]) - int(t[0]) % hop
    steps = (int(t[-1]) - t0) // hop + 1
    compression = dataclasses.replace(config.compression, steps=steps, window_us=steps * hop)
    clip = torch.from_numpy(compress_clip(events, compression, t0_us=t0, window_us=steps * hop))
    with torch.no_grad():
        logits = model(clip[:, None])[:, 0].double().numpy()
    return t0 + hop * np.arange(1, steps + 1, dtype=np.int64), logits


def ema_readout(logits: np.ndarray, decay: float) -> np.ndarray:
    """The worker's smoothed readout: EMA of the logits normalised by its weights."""
    smoothed = np.empty_like(logits)
    total, weight = np.zeros(logits.shape[1]), 0.0
    for i, row in enumerate(logits):
        total = decay * total + row
        weight = decay * weight + 1.0
        smoothed[i] = total / weight
    return smoothed


def score_stream(
    t_end_us: np.ndarray,
    top1: np.ndarray,
    top1_raw: np.ndarray,
    segments: list[LabelSegment],
    hop_us: int,
) -> dict[str, Any]:
    """Streaming and per-hop accuracy as ``streamer.prediction_log.PredictionLog`` computes them,
    plus per-hop accuracy by hop since onset and the decision latency."""
    from streamer.prediction_log import PredictionLog

    log = PredictionLog()
    stream = log.stream("replay")
    stream.t_end_us, stream.top1, stream.top1_raw = list(t_end_us), list(top1), list(top1_raw)
    stream.segments = list(segments)
    result = log.accuracy()
    by_hop = [[0, 0, 0] for _ in range(MAX_HOPS_REPORTED)]  # hops, correct, correct raw
    changes = 0
    for label, start, end in segments:
        # Hops scored for this segment: those whose last µs lies in [start, end).
        first = int(np.searchsorted(t_end_us, start, side="right"))
        last = int(np.searchsorted(t_end_us, end, side="right"))
        right = top1[first:last] == label
        changes += int(np.count_nonzero(np.diff(top1[first:last])))
        for k in range(min(last - first, MAX_HOPS_REPORTED)):
            by_hop[k][0] += 1
            by_hop[k][1] += int(right[k])
            by_hop[k][2] += int(top1_raw[first + k] == label)
    latencies, undecided = log.decision_latencies_ms()
    result["hop_accuracy_by_hop_since_onset"] = [
        {
            "hop": k,
            "hops": n,
            "accuracy": c / n if n else None,
            "accuracy_unsmoothed": r / n if n else None,
        }
        for k, (n, c, r) in enumerate(by_hop)
    ]
    # Flicker, what smoothing is for: changes of the top-1 between a sample's hops.
    result["top1_changes_per_sample"] = changes / len(segments) if segments else None
    result["decision_latency_ms"] = {
        "median": float(np.median(latencies)) if latencies else None,
        "mean": float(np.mean(latencies)) if latencies else None,
        "p90": float(np.percentile(latencies, 90)) if latencies else None,
        "decided": len(latencies),
        "undecided": undecided,
        "hop_ms": hop_us / 1e3,
    }
    return result


def simulate_stream(
    checkpoint: str | os.PathLike,
    folder: Path,
    *,
    ema_taus_us: list[float] | None = None,
    shuffle: bool = True,
    gap_us: int = 0,
) -> dict[str, Any]:
    """The replay of ``folder`` through the checkpoint offline, scored per EMA constant
    (the checkpoint's own first)."""
    from models.checkpoint import load_checkpoint

    model, config, _ = load_checkpoint(checkpoint)
    events, segments = replay_stream(folder, shuffle=shuffle, gap_us=gap_us)
    t_end, logits = stream_logits(model, config, events)
    hop = config.compression.step_us
    raw = logits.argmax(1)
    taus = [float(config.stream_ema_tau_us)] + [
        float(t) for t in ema_taus_us or [] if float(t) != config.stream_ema_tau_us
    ]
    by_tau = []
    for tau in taus:
        top1 = ema_readout(logits, math.exp(-hop / tau)).argmax(1)
        by_tau.append({"ema_tau_us": tau, **score_stream(t_end, top1, raw, segments, hop)})
    return {"hop_us": hop, "gap_us": gap_us, "shuffle": shuffle, "by_ema_tau": by_tau}


# ---------------------------------------------------------------- the real pipeline


def demo_stream(checkpoint: str | os.PathLike, folder: Path, timeout_s: float = 600) -> dict:
    """``stcsnn demo`` on the replay folder: its JSON summary."""
    command = [
        str(Path(sys.executable).with_name("stcsnn")),
        "demo",
        "--replay",
        str(folder),
        "--shuffle",
        "--speed",
        "max",
        "--no-dashboard",
        "--json",
        "--model",
        str(checkpoint),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    keys = (
        "streaming_accuracy",
        "segments",
        "segments_without_prediction",
        "labelled_hops",
        "hop_accuracy",
        "hop_accuracy_unsmoothed",
        "predictions",
        "dropped",
        "steps_skipped",
        "worker",
        "outcome",
    )
    return {
        "command": " ".join(["stcsnn", *command[1:]]),
        "wall_s": time.perf_counter() - started,
        **{k: summary.get(k) for k in keys},
    }


# ---------------------------------------------------------------- one checkpoint


def measure(
    checkpoint: str | os.PathLike,
    root: str | os.PathLike,
    *,
    ema_taus_us: list[float],
    demo: bool = True,
    gap_us: int = 0,
) -> dict[str, Any]:
    from models.checkpoint import load_checkpoint
    from models.evaluate import evaluate_checkpoint

    _, config, extra = load_checkpoint(checkpoint)
    clip = evaluate_checkpoint(checkpoint, "nmnist", root, "val")
    files = validation_files(root)
    with tempfile.TemporaryDirectory(prefix="stcsnn-val-replay-") as tmp:
        folder = link_replay_folder(files, Path(tmp) / "val")
        result: dict[str, Any] = {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest(),
            "trained": {
                k: extra.get(k)
                for k in ("epoch", "best_epoch", "seed", "val_accuracy", "stream_training")
            },
            "train_config": extra.get("train_config"),
            "hop_us": config.compression.step_us,
            "stream_ema_tau_us": config.stream_ema_tau_us,
            "clip_accuracy": clip["accuracy"],
            "clip_samples": clip["samples"],
            "offline_stream": simulate_stream(
                checkpoint, folder, ema_taus_us=ema_taus_us, gap_us=gap_us
            ),
            "offline_stream_unshuffled": simulate_stream(
                checkpoint, folder, ema_taus_us=[], shuffle=False, gap_us=gap_us
            ),
        }
        if demo and gap_us == 0:
            result["demo"] = demo_stream(checkpoint, folder)
    return result


def headline(result: dict[str, Any]) -> str:
    own = result["offline_stream"]["by_ema_tau"][0]
    by_hop = " ".join(
        f"{e['accuracy']:.2f}" for e in own["hop_accuracy_by_hop_since_onset"] if e["hops"]
    )
    line = (
        f"clip {result['clip_accuracy']:.2f} | offline stream {own['streaming_accuracy']:.2f}"
        f" hop {own['hop_accuracy']:.3f} (raw {own['hop_accuracy_unsmoothed']:.3f})"
        f" latency median {own['decision_latency_ms']['median']} ms"
        f" undecided {own['decision_latency_ms']['undecided']} | by hop {by_hop}"
    )
    if "demo" in result:
        d = result["demo"]
        line += f" | demo stream {d['streaming_accuracy']:.2f} hop {d['hop_accuracy']:.3f}"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--name", nargs="*", help="result file name per checkpoint")
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--no-demo", action="store_true", help="offline figures only")
    parser.add_argument(
        "--ema-tau-us",
        type=float,
        nargs="*",
        default=[1, 37_500, 75_000, 112_500, 150_000, 300_000],
        help="EMA time constants to score offline besides the checkpoint's (1 µs: no smoothing)",
    )
    parser.add_argument("--gap-us", type=int, default=0, help="replay gap (offline only if > 0)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--note", help="a line kept in every result (e.g. which checkpoint)")
    args = parser.parse_args(argv)
    names = args.name or [Path(c).stem for c in args.checkpoints]
    if len(names) != len(args.checkpoints):
        parser.error("give one --name per checkpoint")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for checkpoint, name in zip(args.checkpoints, names, strict=True):
        result = measure(
            checkpoint,
            args.root,
            ema_taus_us=args.ema_tau_us,
            demo=not args.no_demo,
            gap_us=args.gap_us,
        )
        if args.note:
            result["note"] = args.note
        result["machine"] = platform.node()
        result["when"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        print(f"{name}: {headline(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
