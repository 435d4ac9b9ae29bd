"""One network step per hop on the device at hand: the worker's only contact with torch.

The worker keeps one network state per stream and calls ``runner.step(x, slot)``
once per compressed step ``x`` (numpy float32 ``[2, H', W']``), getting the
readout logits ``[num_classes]`` back as numpy. How that step runs depends on
the device:

* **CPU, eager** (default): ``model.step`` under ``torch.inference_mode()``;
  the conv layers already run channels_last (models/blocks.py). Threads are
  set once per process (``configure_threads``; measured in
  the default is 1, see docs/streaming.md, "Measured latency and throughput").
* **CPU, ``compile=True``**: ``torch.compile(model.step)``. The first compile
  takes 14-29 s per input shape here, so it is opt-in and done in
  ``warmup()``, before the worker subscribes to anything.
* **CUDA, eager**: as the CPU path on the GPU (one host->device copy of the
  step, one device->host copy of the logits).
* **CUDA, ``cuda_graph=True``**: the step is captured once as a CUDA graph
  over *static* buffers (the input, every state tensor, the logits) and
  replayed per hop: the launch overhead of ~40 small kernels drops to one
  replay (a plain-PyTorch prototype step of the gesture network took 1.8 ms
  eager and 0.16 ms as a graph on an H100, measured before this code). The
  graph writes the new state back into the static state buffers, so state
  stays on the device. With several streams, each has
  its own device copy of the state and the runner swaps it into the static
  buffers only when the stream being stepped changes.

* **window** (``window_steps=N``, ``--window N``): no state carried from hop
  to hop. Each hop runs the network from zero state over the stream's last N
  compressed steps and answers their mean readout: exactly a clip of N steps
  as training and ``stcsnn eval`` see it, so the previous gesture cannot linger
  in the network state (docs/streaming.md, "Windowed inference"). It costs N
  steps per hop.

The CUDA paths could not be run on the machines where this was written (no
GPU); they are guarded by ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from core.events import SensorSize
from models.checkpoint import load_checkpoint
from models.networks import ModelConfig, SpikingNet, build_network, get_config

log = logging.getLogger("stcsnn.inference")

DEFAULT_CPU_THREADS = 1  # measured: see docs/streaming.md ("CPU threads")


# Sensors up to this size get the N-MNIST (34x34) default; larger ones the
# 128x128 gesture-shape default (DVS_Sign), which the adapter fits them to.
SMALL_SENSOR_PIXELS = 64


def default_checkpoint_path(sensor: SensorSize | None = None) -> Path | None:
    """The project's default checkpoint for ``sensor``, or None while it has not been
    committed: N-MNIST's for no sensor or one up to 64x64, else the 128x128 one.

    The one place that says which checkpoint ``stcsnn worker`` / ``stcsnn demo``
    use without ``--model``."""
    try:
        from models.default_checkpoints import default_checkpoint
    except ImportError:
        return None
    small = sensor is None or max(sensor) <= SMALL_SENSOR_PIXELS
    try:
        return default_checkpoint("nmnist" if small else "dvs_sign")
    except FileNotFoundError:
        return None


@dataclass
class LoadedModel:
    model: SpikingNet  # eval mode, on the CPU
    config: ModelConfig
    description: str  # says where the weights came from
    trained: bool


def load_model(checkpoint: str | os.PathLike | None = None, *, seed: int = 0) -> LoadedModel:
    """The network of ``checkpoint``, else the default checkpoint, else an untrained one.

    The untrained fallback (N-MNIST shape, weights from ``seed``) keeps the
    pipeline runnable before any checkpoint exists; its description says that
    its predictions mean nothing. Raises ``models.checkpoint.CheckpointError``
    for a checkpoint that cannot be used."""
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
    if path is not None:
        model, config, extra = load_checkpoint(path, map_location="cpu")
        accuracy = extra.get("best_accuracy") or extra.get("val_accuracy")
        note = f", validation accuracy {accuracy:.3f}" if isinstance(accuracy, float) else ""
        return LoadedModel(model, config, f"{config.name} checkpoint {path}{note}", True)
    torch.manual_seed(seed)
    config = get_config("nmnist")
    model = build_network(config).eval()
    description = (
        f"UNTRAINED {config.name} network (seed {seed}; no checkpoint given and no default "
        "checkpoint committed yet): predictions are meaningless"
    )
    return LoadedModel(model, config, description, False)


def choose_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch {torch.__version__} sees no GPU")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: only cpu and cuda are supported")
    return device


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads for this process (None: ``DEFAULT_CPU_THREADS``)."""
    threads = DEFAULT_CPU_THREADS if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only allowed before any parallel work
        torch.set_num_interop_threads(1)
    return threads


def _leaves(state) -> list[torch.Tensor]:
    """The tensors of a (nested NamedTuple) network state, in a fixed order."""
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in _leaves(part)]


def _rebuild(template, leaves: list[torch.Tensor]):
    """A state shaped like ``template`` holding ``leaves`` (inverse of ``_leaves``)."""
    it = iter(leaves)

    def build(node):
        if isinstance(node, torch.Tensor):
            return next(it)
        children = [build(part) for part in node]
        return type(node)(*children) if hasattr(node, "_fields") else type(node)(children)

    return build(template)


class StreamSlot:
    """One stream's network state, owned by the runner that made it."""

    def __init__(self, state):
        self.state = state


def for_inference(model: SpikingNet) -> SpikingNet:
    """An eval-mode copy with every block's BatchNorm folded into its convolution.

    Measured (benchmarks/bench_step.py, interleaved rounds, one thread): the
    gesture step 1.95 -> 1.81 ms, N-MNIST 0.62 -> 0.57 ms. The folded weights
    differ from conv-then-BN in the last bits only (tests/test_worker.py checks
    the logits against the unfolded forward on a real recording)."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for block in model.blocks:
            if isinstance(block.bn, nn.BatchNorm2d):
                fused = fuse_conv_bn_eval(block.conv, block.bn)
                block.conv = fused.to(memory_format=torch.channels_last)
                block.bn = nn.Identity()
    return model


class StepRunner:
    """Eager (optionally compiled) step on CPU or CUDA; state lives in each slot. It runs
    an inference copy of the model (``for_inference``); the caller's is left as it is."""

    def __init__(self, model: SpikingNet, device: torch.device, *, compile: bool = False):
        self.model = for_inference(model).to(device)
        self.device = device
        self.config = model.config
        step = self.model.step
        self._step = torch.compile(step, dynamic=False) if compile else step
        kind = "compiled" if compile else "eager"
        self.description = f"{device.type} {kind}"
        if device.type == "cpu":
            self.description += f", {torch.get_num_threads()} thread(s)"

    def new_slot(self) -> StreamSlot:
        with torch.inference_mode():
            state = self.model.initial_state(1, self.device)
            # initial_state shares one zero tensor between fields; give each its own.
            return StreamSlot(_rebuild(state, [t.clone() for t in _leaves(state)]))

    def reset(self, slot: StreamSlot) -> None:
        with torch.inference_mode():
            for leaf in _leaves(slot.state):
                leaf.zero_()

    def release(self, slot: StreamSlot) -> None:
        """The stream is gone (nothing to do for the eager runner)."""

    def _input(self, x: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
        if self.device.type != "cpu":
            tensor = tensor.to(self.device, non_blocking=False)
        return tensor.contiguous(memory_format=torch.channels_last)

    def step(self, x: np.ndarray, slot: StreamSlot) -> np.ndarray:
        """One compressed step ``[2, H', W']`` -> logits ``[num_classes]`` (float32);
        advances the slot's state."""
        with torch.inference_mode():
            logits, slot.state = self._step(self._input(x), slot.state)
            return logits[0].float().cpu().numpy()

    def warmup(self, steps: int = 3) -> None:
        """Run a few steps on a scratch state (triggers torch.compile, cuDNN autotune)."""
        slot = self.new_slot()
        zeros = np.zeros(self.config.input_shape, dtype=np.float32)
        for _ in range(steps):
            self.step(zeros, slot)


class CudaGraphRunner(StepRunner):
    """The step captured once as a CUDA graph over static input/state/logit buffers.

    Per stream, the state lives in the slot (device tensors); the static
    buffers hold the state of the *resident* stream, the one stepped last.
    Stepping another stream first copies the resident state out and the new
    one in (device-to-device copies of a few hundred KB)."""

    def __init__(self, model: SpikingNet, device: torch.device):
        if device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError("CUDA graphs need a CUDA device")
        super().__init__(model, device)
        self.description = f"cuda graph ({device})"
        with torch.inference_mode():
            self._static_x = torch.zeros(1, *self.config.input_shape, device=device).contiguous(
                memory_format=torch.channels_last
            )
            template = self.model.initial_state(1, device)
            self._template = template
            self._static_state = [t.clone() for t in _leaves(template)]
        self._resident: StreamSlot | None = None
        self._capture()

    def _capture(self) -> None:
        state = _rebuild(self._template, self._static_state)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):  # warm up outside the graph (allocator, cuDNN choice)
                self.model.step(self._static_x, state)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self._graph):
            logits, new_state = self.model.step(self._static_x, state)
            for static, new in zip(self._static_state, _leaves(new_state), strict=True):
                if new is not static:  # a state the step leaves as it is (filter off)
                    static.copy_(new)
            self._static_logits = logits
        with torch.inference_mode():
            for leaf in self._static_state:
                leaf.zero_()

    def new_slot(self) -> StreamSlot:
        with torch.inference_mode():
            return StreamSlot([torch.zeros_like(t) for t in self._static_state])

    def reset(self, slot: StreamSlot) -> None:
        with torch.inference_mode():
            targets = self._static_state if self._resident is slot else slot.state
            for leaf in targets:
                leaf.zero_()

    def release(self, slot: StreamSlot) -> None:
        if self._resident is slot:
            self._resident = None

    def _make_resident(self, slot: StreamSlot) -> None:
        if self._resident is slot:
            return
        if self._resident is not None:
            for kept, static in zip(self._resident.state, self._static_state, strict=True):
                kept.copy_(static)
        for static, incoming in zip(self._static_state, slot.state, strict=True):
            static.copy_(incoming)
        self._resident = slot

    def step(self, x: np.ndarray, slot: StreamSlot) -> np.ndarray:
        with torch.inference_mode():
            self._make_resident(slot)
            self._static_x.copy_(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])
            self._graph.replay()
            return self._static_logits[0].float().cpu().numpy()


class WindowSlot:
    """One stream's last compressed steps (the window), oldest first."""

    def __init__(self, steps: int):
        self.steps: collections.deque[np.ndarray] = collections.deque(maxlen=steps)


class WindowRunner(StepRunner):
    """Windowed inference: per hop, the network from zero state over the stream's
    last ``steps`` compressed steps; the answer is their mean readout, as for a
    clip in training and evaluation (``models.evaluate.mean_readout``). At a
    stream's start the window holds the steps seen so far. Eager only."""

    def __init__(self, model: SpikingNet, device: torch.device, steps: int):
        if steps < 1:
            raise ValueError(f"window must be >= 1 steps, got {steps}")
        super().__init__(model, device)
        self.window = steps
        self.description = self.description.replace(
            "eager", f"eager, window of {steps} steps from zero state per hop"
        )

    def new_slot(self) -> WindowSlot:
        return WindowSlot(self.window)

    def reset(self, slot: WindowSlot) -> None:
        slot.steps.clear()

    def step(self, x: np.ndarray, slot: WindowSlot) -> np.ndarray:
        """Add one compressed step ``[2, H', W']`` to the window -> the window's mean
        readout ``[num_classes]`` (float32)."""
        slot.steps.append(np.array(x, dtype=np.float32))  # a copy: callers reuse buffers
        clip = torch.from_numpy(np.stack(slot.steps))[:, None]  # [N, 1, 2, H', W']
        with torch.inference_mode():
            logits = self.model(clip.to(self.device))  # [N, 1, C]
            return logits.float().mean(0)[0].cpu().numpy()


def make_runner(
    model: SpikingNet,
    device: torch.device,
    *,
    compile: bool = False,
    cuda_graph: bool = False,
    window_steps: int | None = None,
) -> StepRunner:
    """The runner for this device and these options (``cuda_graph`` needs CUDA;
    ``window_steps``: windowed inference instead of the stateful step)."""
    if window_steps is not None:
        if compile or cuda_graph:
            raise ValueError("--window runs eager: leave out --compile and --cuda-graph")
        return WindowRunner(model, device, window_steps)
    if cuda_graph:
        if device.type != "cuda":
            raise ValueError("--cuda-graph needs a CUDA device")
        if compile:
            raise ValueError("choose either --compile or --cuda-graph")
        return CudaGraphRunner(model, device)
    return StepRunner(model, device, compile=compile)
