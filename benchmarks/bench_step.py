"""The network step at batch 1 on one CPU thread: the shipped checkpoints, today's step
against the step as it was before (b46c34d) in the same run, back to back and at a hop's pace.

    .venv/bin/python benchmarks/bench_step.py [--rounds 15] [--out benchmarks/results/step.json]

Variants, interleaved round by round so that load on the shared machine spreads over
all of them (medians of the rounds):

* ``runner``: what the worker runs (``models.runner.for_inference``: BatchNorm folded
  into the convolutions), the streaming state in the conv's channels_last layout,
  the graded spike computed directly without gradients;
* ``unfolded``: the same without the BatchNorm folding;
* ``before``: the same weights unfolded, the state in the default (NCHW) layout,
  the arithmetic unfused and the spike through the autograd Function: what the
  step did at b46c34d (the outputs are identical: tests/test_blocks.py,
  tests/test_neurons.py);
* ``unfused``: ``runner`` with the synaptic filter and the neuron written as they were
  before they became one fused kernel per line (``torch.lerp``, ``torch.addcmul``,
  ``torch.sub(..., alpha=)``; the spike as clamp-then-floor without the division by
  a threshold of 1): four passes over the current for the filter, two each for the
  membrane and the reset. The values are the same (tests/test_blocks.py,
  tests/test_neurons.py);
* ``runner_at_hop_pace``: ``runner`` with a 10 ms sleep before every step, as a
  worker waits for the next hop: the core goes idle and its caches cool, which
  costs more than any of the above (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import models.blocks
import models.neurons
from models.blocks import SCBState
from models.checkpoint import load_checkpoint
from models.default_checkpoints import default_checkpoint
from models.neurons import MTLIFState
from models.runner import for_inference

ROOT = Path(__file__).resolve().parent.parent
STEPS_PER_ROUND = 20
HOP_PACE_S = 0.010


def nchw_state(state):
    """The state with every tensor in the default layout (the step before the change)."""
    if isinstance(state, torch.Tensor):
        return state.contiguous()
    parts = [nchw_state(part) for part in state]
    return type(state)(*parts) if hasattr(state, "_fields") else type(state)(parts)


def _unfused_mtlif_step(input_current, state, beta, p):
    u = beta * state.u + input_current
    spikes = torch.floor(u / p.threshold).clamp_(0, p.levels)
    return spikes, MTLIFState(u - p.threshold * spikes.detach())


def _unfused_filter_and_fire(self, z, state, *, lam, beta):
    c = z if lam is None else lam * state.synaptic + (1.0 - lam) * z
    spikes, neuron_state = _unfused_mtlif_step(c, state.neuron, beta, self.neuron.p)
    return spikes, SCBState(state.synaptic if lam is None else c, neuron_state)


@contextlib.contextmanager
def unfused():
    """The filter and the neuron as written before the fused kernels (module docstring)."""
    saved = (models.neurons.mtlif_step, models.blocks.SynapticConvBlock._filter_and_fire)
    models.neurons.mtlif_step = _unfused_mtlif_step  # the hidden layer's MT-LIF
    models.blocks.SynapticConvBlock._filter_and_fire = _unfused_filter_and_fire
    try:
        yield
    finally:
        models.neurons.mtlif_step, models.blocks.SynapticConvBlock._filter_and_fire = saved


@contextlib.contextmanager
def before():
    with torch.enable_grad(), unfused():  # the autograd Function, the old arithmetic
        yield


def variants(model):
    """name -> (model, state, context): the context selects the spike's code path."""
    state = model.initial_state(1)
    runner = for_inference(model)
    return {
        "runner": (runner, state, contextlib.nullcontext),
        "unfolded": (model, state, contextlib.nullcontext),
        "unfused": (runner, state, unfused),
        "before": (model, nchw_state(state), before),
        "runner_at_hop_pace": (runner, state, contextlib.nullcontext),
    }


def measure(name: str, rounds: int) -> dict:
    model, config, _ = load_checkpoint(default_checkpoint(name))
    model.eval().requires_grad_(False)
    x = torch.rand(1, *config.input_shape) * 2
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for variant, (net, state, context) in variants(model).items():
            with torch.no_grad(), context():
                for _ in range(3):
                    net.step(x, state)
                samples = []
                for _ in range(STEPS_PER_ROUND):
                    if variant.endswith("hop_pace"):
                        time.sleep(HOP_PACE_S)
                    started = time.perf_counter()
                    net.step(x, state)
                    samples.append((time.perf_counter() - started) * 1e3)
            times.setdefault(variant, []).append(statistics.median(samples))
    medians = {v: round(statistics.median(t), 3) for v, t in times.items()}
    return {
        "checkpoint": name,
        "input_shape": list(config.input_shape),
        "step_ms_median": medians,
        "before_over_runner": round(medians["before"] / medians["runner"], 2),
        "unfused_over_runner": round(medians["unfused"] / medians["runner"], 2),
        "rounds_ms": {v: [round(t, 3) for t in ts] for v, ts in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/step.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "torch": torch.__version__,
        "threads": 1,
        "load_average_before": os.getloadavg()[0],
        "checkpoints": [measure(name, args.rounds) for name in ("nmnist", "dvs_sign")],
        "load_average_after": os.getloadavg()[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for row in results["checkpoints"]:
        ratio = row["unfused_over_runner"]
        print(row["checkpoint"], row["step_ms_median"], "unfused/runner", ratio)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
