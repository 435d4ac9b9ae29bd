"""Wall time of the spiking networks on this machine: clip forward, streaming step, training step.

    .venv/bin/python benchmarks/bench_network.py [--threads N] [--configs nmnist dvsgesture]

Writes benchmarks/results/network.json. Median of repeats; on a shared machine
the spread (min..max) says how much other load disturbed the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from models.networks import build_network, get_config


def _time_ms(fn, repeats: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "repeats": repeats,
    }


def bench_config(name: str, steps: int, train_batch: int) -> dict:
    torch.manual_seed(0)
    config = get_config(name).with_changes(steps=steps)
    net = build_network(config).eval()
    clip = torch.rand(steps, 1, *config.input_shape) * 3
    with torch.no_grad():
        state = net.initial_state(1)
        clip_b1 = _time_ms(lambda: net(clip), repeats=20)
        step_b1 = _time_ms(lambda: net.step(clip[0], state), repeats=50)
    net.train()
    batch = torch.rand(steps, train_batch, *config.input_shape) * 3
    labels = torch.randint(0, config.num_classes, (train_batch,))

    def train_step():
        net.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(batch).mean(0), labels)
        loss.backward()

    train = _time_ms(train_step, repeats=5, warmup=1)
    return {
        "config": name,
        "input_shape": list(config.input_shape),
        "T": steps,
        "parameters": sum(p.numel() for p in net.parameters()),
        "eval_clip_forward_batch1": clip_b1,
        "eval_stream_step_batch1": step_b1,
        f"train_forward_backward_batch{train_batch}": train,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--configs", nargs="+", default=["nmnist", "dvsgesture"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/network.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "results": [bench_config(n, args.steps, args.train_batch) for n in args.configs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
