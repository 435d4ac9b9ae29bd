"""Everything CUDA in one go, for a session that has a GPU: step eager vs CUDA graph,
the graph's outputs against eager on interleaved streams, end-to-end latency through
the real processes, bf16 training throughput.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu.json] [--quick]

Prepared on a machine without a GPU (it refuses to start without one); one run
takes about 3 minutes on an H100/H200. On the lent device machine, from the
repository root:

    python3 -m venv .venv && .venv/bin/pip install -q torch -e '.[test]' \\
      && .venv/bin/python benchmarks/gpu_check.py --out "$OUT/gpu.json"

Parts (each one JSON section; a failing part is recorded and the others still run):

1. ``step``: the shipped checkpoints (N-MNIST, the 128x128 gesture shape), batch 1,
   eager and CUDA graph (``models.runner``), p50/p90 of 1,000 steps each;
2. ``graph_equals_eager``: three streams stepped interleaved with a reset in the
   middle, eager against graph, the largest difference of the logits;
3. ``latency``: ``stcsnn bench latency`` at 1 M ev/s, 34x34 and 128x128, 10 ms hops,
   the worker on the GPU, eager and ``--cuda-graph``;
4. ``training``: the gesture network at batch 32, T = 4, bf16 autocast, AdamW:
   samples per second over 30 iterations after 5 of warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def step_times(quick: bool) -> dict:
    from models.checkpoint import load_checkpoint
    from models.default_checkpoints import default_checkpoint
    from models.runner import make_runner

    steps = 200 if quick else 1000
    result = {}
    for name in ("nmnist", "dvs_sign"):
        model, config, _ = load_checkpoint(default_checkpoint(name))
        x = (torch.rand(*config.input_shape) * 2).numpy()
        for kind in ("eager", "cuda_graph"):
            runner = make_runner(model, torch.device("cuda"), cuda_graph=kind == "cuda_graph")
            slot = runner.new_slot()
            for _ in range(20):
                runner.step(x, slot)
            times = []
            for _ in range(steps):
                started = time.perf_counter()
                runner.step(x, slot)  # returns numpy: includes the device sync
                times.append((time.perf_counter() - started) * 1e3)
            times.sort()
            result[f"{name}_{kind}"] = {
                "p50_ms": round(statistics.median(times), 4),
                "p90_ms": round(times[int(0.9 * len(times))], 4),
            }
    return result


def graph_equals_eager() -> dict:
    from models.checkpoint import load_checkpoint
    from models.default_checkpoints import default_checkpoint
    from models.runner import make_runner

    result = {}
    for name in ("nmnist", "dvs_sign"):
        model, config, _ = load_checkpoint(default_checkpoint(name))
        eager = make_runner(model, torch.device("cuda"))
        graph = make_runner(model, torch.device("cuda"), cuda_graph=True)
        slots = [(eager.new_slot(), graph.new_slot()) for _ in range(3)]
        largest, outputs = 0.0, []
        for t in range(12):
            for k, (e, g) in enumerate(slots):
                x = (torch.rand(*config.input_shape) * 3).numpy()
                a, b = eager.step(x, e), graph.step(x, g)
                outputs.append(a)
                largest = max(largest, float(abs(a - b).max()))
                if t == 5 and k == 1:
                    eager.reset(e)
                    graph.reset(g)
        spread = float(torch.tensor(outputs).std(0).max())
        result[name] = {"max_abs_difference": largest, "readout_spread": spread}
    return result


def latency(quick: bool) -> dict:
    result = {}
    for sensor in ("34x34", "128x128"):
        for extra in ([], ["--cuda-graph"]):
            command = [
                sys.executable, "-m", "stcsnn", "bench", "latency", "--synthetic", "1M",
                "--seconds", "3" if quick else "6", "--sensor", sensor, "--hop-us", "10000",
                "--device", "cuda", "--json", *extra,
            ]  # fmt: skip
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
            key = f"{sensor}{'_cuda_graph' if extra else '_eager'}"
            if done.returncode != 0:
                result[key] = {"error": done.stderr[-2000:]}
                continue
            report = json.loads(done.stdout.strip().splitlines()[-1])
            result[key] = {
                k: report[k]
                for k in (
                    "latency_ms_p50", "latency_ms_p99", "step_ms_p50", "overhead_ms_p50",
                    "dropped", "device", "stages_ms",
                )
            }  # fmt: skip
    return result


def training(quick: bool) -> dict:
    from models.networks import build_network, get_config

    config = get_config("dvs_sign")
    model = build_network(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch, steps = 32, 4
    x = torch.rand(steps, batch, *config.input_shape, device="cuda") * 2
    y = torch.randint(0, config.num_classes, (batch,), device="cuda")

    def iteration() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).mean(0), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        iteration()
    torch.cuda.synchronize()
    iterations = 10 if quick else 30
    started = time.perf_counter()
    for _ in range(iterations):
        iteration()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"batch": batch, "T": steps, "samples_per_s": round(iterations * batch / seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu.json")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; nothing to measure", file=sys.stderr)
        return 1
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    parts = {
        "step": lambda: step_times(args.quick),
        "graph_equals_eager": graph_equals_eager,
        "latency": lambda: latency(args.quick),
        "training": lambda: training(args.quick),
    }
    for name, part in parts.items():
        started = time.perf_counter()
        try:
            report[name] = part()
        except Exception:  # record it, run the other parts
            report[name] = {"error": traceback.format_exc()[-3000:]}
        report[name + "_wall_s"] = round(time.perf_counter() - started, 1)
        print(name, json.dumps(report[name])[:500], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
