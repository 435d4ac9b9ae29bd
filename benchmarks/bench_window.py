"""Per-hop inference time of the worker's runners: stateful step against windowed.

    .venv/bin/python benchmarks/bench_window.py [--checkpoint CKPT] [--windows 2 4 8]

Times ``runner.step`` (what the worker calls once per hop: the network call and
the copy of its logits; compression is not included) at batch 1 on one CPU
thread, on real compressed steps of DVS_Sign samples (converted data) when
``../shared/data/dvs_sign`` is there, else on random steps of the right shape.
Rounds are interleaved (stateful, window 2, window 4, ... then again), so
machine load hits every runner alike; the figures are medians over all hops
and their ratio to the stateful step measured in the same rounds. Writes
benchmarks/results/window.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.default_checkpoints import default_checkpoint
from models.runner import configure_threads, make_runner

ROOT = Path(__file__).resolve().parents[1]


def real_steps(config, count: int) -> tuple[list[np.ndarray], str]:
    """``count`` compressed steps of real DVS_Sign samples, or random ones."""
    from models.clip_cache import cached_clips
    from models.splits import SplitSpec, open_events, split_parts
    from replay.paths import data_root

    root = data_root() / "dvs_sign"
    if not root.is_dir():
        rng = np.random.default_rng(0)
        steps = [rng.random(config.input_shape, dtype=np.float32) for _ in range(count)]
        return steps, "random steps (no ../shared/data/dvs_sign)"
    dataset = open_events("dvs_sign", str(root), "train")
    _, part = split_parts(dataset, SplitSpec(validation_count=30, seed=0))
    clips = cached_clips(part, config.compression, "whole", name="dvs_sign-val")
    steps = [clips[i][0][k].numpy() for i in range(len(clips)) for k in range(clips[i][0].shape[0])]
    return steps[:count], f"{min(count, len(steps))} real compressed DVS_Sign steps"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="default: the committed DVS_Sign checkpoint")
    parser.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--hops", type=int, default=200, help="hops per runner and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "window.json"))
    args = parser.parse_args(argv)

    configure_threads(1)
    path = args.checkpoint or str(default_checkpoint("dvs_sign"))
    model, config, _ = load_checkpoint(path)
    steps, input_note = real_steps(config, args.hops)
    device = torch.device("cpu")
    runners = {"stateful": make_runner(model, device)}
    runners |= {f"window {n}": make_runner(model, device, window_steps=n) for n in args.windows}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for runner in runners.values():
        runner.warmup()
    for _ in range(args.rounds):
        for name, runner in runners.items():
            slot = runner.new_slot()
            for i in range(args.hops):
                started = time.perf_counter()
                runner.step(steps[i % len(steps)], slot)
                times[name].append((time.perf_counter() - started) * 1e3)
    base = statistics.median(times["stateful"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(
            {
                "runner": name,
                "ms_median": median,
                "ms_p90": float(np.percentile(values, 90)),
                "ratio_to_stateful": median / base,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "checkpoint": path,
        "config": config.name,
        "input": input_note,
        "input_shape": list(config.input_shape),
        "hop_ms": config.compression.step_us / 1e3,
        "threads": 1,
        "hops_per_round": args.hops,
        "rounds": args.rounds,
        "torch": str(torch.__version__),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "loadavg": list(os.getloadavg()),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
