"""Training speed against torch's CPU thread count, alone and beside busy processes.

    .venv/bin/python benchmarks/bench_train_threads.py [--config nmnist] [--threads 1 2]
        [--busy 0 1] [--seconds 8]

Times training iterations (forward, backward and an AdamW step of the config's
network at batch 32 on random input of its shape; no data loading) in a fresh
process per thread count, first on an idle machine and then with ``--busy``
processes spinning beside it (other work sharing the machine; each row also
records the load average before it). torch's default
uses every CPU; with other load its threads wait for each other and training
slows down far more than the load alone explains. This is what
``models.train.default_threads`` (half the CPUs, at most 4) is chosen by.
Writes benchmarks/results/train_threads.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE = """
import sys, time, torch
from models.networks import build_network, get_config
from models.runner import configure_threads
configure_threads(int(sys.argv[1]))
config = get_config(sys.argv[2])
model = build_network(config)
optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.rand(config.compression.steps, 32, *config.input_shape)
y = torch.randint(0, config.num_classes, (32,))
def step():
    loss = torch.nn.functional.cross_entropy(model(x).mean(0), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
step()
started, n = time.perf_counter(), 0
while time.perf_counter() - started < float(sys.argv[3]):
    step()
    n += 1
print(n / (time.perf_counter() - started))
"""


def spin() -> None:
    while True:
        pass


def iterations_per_s(threads: int, config: str, seconds: float) -> float:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(threads), config, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    cpus = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="nmnist")
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, cpus // 2, cpus}))
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "train_threads.json")
    )
    args = parser.parse_args()
    rows = []
    for busy in args.busy:
        spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
        for spinner in spinners:
            spinner.start()
        time.sleep(0.5)
        try:
            for threads in [t for t in args.threads if t >= 1]:
                load = os.getloadavg()[0]  # other work on the machine too
                rate = iterations_per_s(threads, args.config, args.seconds)
                rows.append(
                    {
                        "busy_processes": busy,
                        "load_average_before": load,
                        "threads": threads,
                        "iterations_per_s": round(rate, 3),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            for spinner in spinners:
                spinner.terminate()
                spinner.join()
    report = {
        "config": args.config,
        "batch": 32,
        "machine": f"{platform.machine()}, {cpus} CPUs available (shared)",
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
