"""Per-dataset network configs as plain data, and the one network they build (docs/method.md 5).

A ``ModelConfig`` says everything needed to rebuild a trained network and feed
it: the compressor settings (so a checkpoint carries them to the streaming
worker), the layer sizes, the neuron and filter switches of the ablations, the
class names and how the input is scaled. Variants are made with
``config.with_changes(steps=2, mode="count", levels=1, ...)``.

Shapes through ``SpikingNet`` (multi-step; single-step drops the leading T):

    x       [T, B, 2, H, W]        compressed synaptic current (or counts)
    blocks  [T, B, C_i, H/2^i, W/2^i]
    flat    [T, B, C_last * H_last * W_last]   (C_last * g * g with readout_grid g)
    hidden  [T, B, hidden]          graded spikes of the MT-LIF layer
    logits  [T, B, num_classes]     readout per step; a clip's prediction is the mean over T
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from core.class_names import CIFAR10, DVS_GESTURE
from core.compress import CompressionConfig
from models.blocks import SCBState, SynapticConvBlock
from models.neurons import MTLIF, MTLIFParameters, MTLIFState


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines one network; plain data, round-trips through ``to_dict``."""

    name: str
    compression: CompressionConfig
    channels: tuple[int, ...]  # out channels of each SCB; each SCB halves H and W
    hidden: int  # width of the hidden MT-LIF layer before the readout
    num_classes: int
    class_names: tuple[str, ...]
    levels: int = 4  # K thresholds; 1 = plain LIF
    learnable_tau: bool = True  # False: beta fixed at its initial value
    per_channel_tau: bool = False  # one membrane constant per conv channel instead of per layer
    tau_m_init: float = 2.0  # membrane time constant in steps; beta = 1 - 1/tau_m
    threshold: float = 1.0  # theta
    surrogate_alpha: float = 4.0  # sharpness of the sigmoid surrogate
    synaptic_filter: bool = True  # False: lambda = 0, the plain conv-BN-LIF block
    lambda_init: float = 0.5  # initial synaptic filter decay per step
    pool: Literal["max", "avg"] = "max"
    # Features the hidden layer sees: 0 = the last block's whole map, flattened
    # (a position-bound readout); g > 0 = that map averaged down to g x g cells
    # first (1 = global average pooling: nearly blind to where the motion is).
    readout_grid: int = 0
    dropout: float = 0.0  # before and after the hidden layer; one mask for all steps
    # Input normalisation, applied to the compressor output before the first conv:
    # x -> input_scale * x ("linear") or input_scale * log1p(x) ("log1p"). A single
    # global scale is nearly cancelled by the first layer's BatchNorm (conv has no
    # bias), so it matters mainly for the transform's shape and for reproducing
    # the prototype's "divide by the std"; it is recorded so streaming feeds the
    # network exactly what training did.
    input_transform: Literal["linear", "log1p"] = "linear"
    input_scale: float = 1.0
    # Streaming: the per-step readout is smoothed by an exponential moving average
    # with this time constant in µs (decay per step = exp(-step_us / tau)).
    stream_ema_tau_us: float = 300_000.0
    # Streaming mode: 0 = stateful (one step per hop, state carried); N > 0 =
    # windowed inference over the last N steps from zero state per hop
    # (models.runner.WindowRunner). A setting of the worker, not of the
    # weights; kept here so that a checkpoint streams as it was measured.
    stream_window_steps: int = 0

    def __post_init__(self) -> None:
        problems = []
        if len(self.class_names) != self.num_classes:
            problems.append(
                f"{len(self.class_names)} class_names for num_classes={self.num_classes}"
            )
        if not self.channels:
            problems.append("channels is empty (need at least one SCB)")
        if self.stream_window_steps < 0:
            problems.append(f"stream_window_steps={self.stream_window_steps} (need >= 0)")
        if self.levels < 1:
            problems.append(f"levels={self.levels} (need >= 1)")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} (need 0 <= p < 1)")
        if self.input_transform not in ("linear", "log1p"):
            problems.append(f"input_transform={self.input_transform!r} (linear or log1p)")
        if self.pool not in ("max", "avg"):
            problems.append(f"pool={self.pool!r} (max or avg)")
        height, width = self.compression.output_shape[1:]
        last_map = min(height, width) >> len(self.channels)
        if last_map < 1:
            problems.append(
                f"input {height}x{width} is too small for {len(self.channels)} pooling blocks"
            )
        elif not 0 <= self.readout_grid <= last_map:
            problems.append(
                f"readout_grid={self.readout_grid} (need 0 <= g <= {last_map}, "
                "the last block's map)"
            )
        if problems:
            raise ValueError(f"invalid ModelConfig {self.name!r}: " + "; ".join(problems))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(2, H', W')`` of one step, as the compressor produces it."""
        return self.compression.output_shape

    @property
    def neuron_parameters(self) -> MTLIFParameters:
        """The settings of every MT-LIF layer, as the layers take them."""
        return MTLIFParameters(
            levels=self.levels,
            threshold=self.threshold,
            surrogate_alpha=self.surrogate_alpha,
            tau_m_init=self.tau_m_init,
            learnable_tau=self.learnable_tau,
        )

    def with_changes(self, **changes: Any) -> ModelConfig:
        """A variant; fields of ``CompressionConfig`` (steps, mode, ...) may be given directly."""
        compression_fields = {f.name for f in dataclasses.fields(CompressionConfig)}
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        comp = {k: changes.pop(k) for k in list(changes) if k in compression_fields}
        unknown = set(changes) - model_fields
        if unknown:
            raise TypeError(f"unknown config fields: {sorted(unknown)}")
        if comp:
            changes["compression"] = dataclasses.replace(
                changes.get("compression", self.compression), **comp
            )
        for key in ("channels", "class_names"):
            if key in changes:
                changes[key] = tuple(changes[key])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str, int, float, bool, list, dict), for checkpoints and JSON."""
        out = dataclasses.asdict(self)
        out["channels"] = list(self.channels)
        out["class_names"] = list(self.class_names)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown or missing fields raise a ValueError naming them."""
        data = dict(data)
        model_fields = {f.name for f in dataclasses.fields(cls)}
        comp_fields = {f.name for f in dataclasses.fields(CompressionConfig)}
        unknown = set(data) - model_fields
        comp_data = data.get("compression")
        if not isinstance(comp_data, dict):
            raise ValueError(f"config has no 'compression' dict (found {type(comp_data).__name__})")
        unknown |= {f"compression.{k}" for k in set(comp_data) - comp_fields}
        if unknown:
            raise ValueError(f"config has unknown fields: {sorted(unknown)}")
        data["compression"] = CompressionConfig(**comp_data)
        data["channels"] = tuple(data.get("channels", ()))
        data["class_names"] = tuple(data.get("class_names", ()))
        try:
            return cls(**data)
        except TypeError as exc:  # missing required fields
            raise ValueError(f"config is incomplete: {exc}") from None


def plain_lif_baseline(config: ModelConfig) -> ModelConfig:
    """The baseline of the claims: count frames, K = 1, fixed tau_m, no synaptic filter."""
    return config.with_changes(
        name=f"{config.name}-baseline",
        mode="count",
        levels=1,
        learnable_tau=False,
        synaptic_filter=False,
    )


# Starting points (docs/method.md section 5), not a contract: change them where a
# measurement says so. Windows: N-MNIST samples last ~300 ms; the 128x128 sets
# use 1 s (T steps of 1 s / T), DVS_Sign 2 s of its ~4 s signs.
CONFIGS: dict[str, ModelConfig] = {
    "nmnist": ModelConfig(
        name="nmnist",
        compression=CompressionConfig(34, 34, spatial_factor=1, steps=4, window_us=300_000),
        channels=(32, 64),
        hidden=256,
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        stream_ema_tau_us=150_000.0,
    ),
    "dvsgesture": ModelConfig(
        name="dvsgesture",
        compression=CompressionConfig(128, 128, spatial_factor=2, steps=4, window_us=1_000_000),
        channels=(64, 128, 128, 256),
        hidden=512,
        num_classes=11,
        class_names=DVS_GESTURE,
        dropout=0.5,
        stream_ema_tau_us=500_000.0,
    ),
    "cifar10dvs": ModelConfig(
        name="cifar10dvs",
        compression=CompressionConfig(128, 128, spatial_factor=2, steps=4, window_us=1_000_000),
        channels=(64, 128, 128, 256),
        hidden=512,
        num_classes=10,
        class_names=CIFAR10,
        dropout=0.5,
        stream_ema_tau_us=500_000.0,
    ),
    # Converted-from-video sign language (the data README); its 15 classes are
    # published as folder numbers 0-14 only.
    "dvs_sign": ModelConfig(
        name="dvs_sign",
        compression=CompressionConfig(128, 128, spatial_factor=2, steps=4, window_us=2_000_000),
        channels=(64, 128, 128, 256),
        hidden=512,
        num_classes=15,
        class_names=tuple(str(c) for c in range(15)),
        dropout=0.5,
        stream_ema_tau_us=1_000_000.0,
    ),
}


def get_config(name: str) -> ModelConfig:
    """The named dataset config; a KeyError lists the known names."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"no model config named {name!r}; known: {sorted(CONFIGS)}") from None


class NetState(NamedTuple):
    """Streaming state of a whole ``SpikingNet``: one per SCB, then the hidden layer."""

    blocks: tuple[SCBState, ...]
    hidden: MTLIFState


class SpikingNet(nn.Module):
    """SCB stack -> flatten -> Dropout -> Linear -> MT-LIF -> Dropout -> Linear readout."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        in_channels, height, width = config.input_shape
        self._block_sizes = []  # (H, W) entering each block, for initial_state
        blocks = []
        for out_channels in config.channels:
            blocks.append(
                SynapticConvBlock(
                    in_channels,
                    out_channels,
                    config.neuron_parameters,
                    per_channel_tau=config.per_channel_tau,
                    synaptic_filter=config.synaptic_filter,
                    lambda_init=config.lambda_init,
                    pool=config.pool,
                )
            )
            self._block_sizes.append((height, width))
            in_channels, height, width = out_channels, height // 2, width // 2
        self.blocks = nn.ModuleList(blocks)
        grid = config.readout_grid
        self.flat_features = in_channels * (grid * grid if grid else height * width)
        self.hidden = nn.Linear(self.flat_features, config.hidden)
        self.hidden_neuron = MTLIF(
            config.neuron_parameters
        )  # per-channel tau applies to conv layers only
        self.readout = nn.Linear(config.hidden, config.num_classes)

    def _normalise(self, x: Tensor) -> Tensor:
        if self.config.input_transform == "log1p":
            x = torch.log1p(x)
        scale = self.config.input_scale
        return x * scale if scale != 1.0 else x

    def _features(self, x: Tensor) -> Tensor:
        """The last block's map ``[..., C, H, W]`` -> the hidden layer's input ``[..., F]``."""
        grid = self.config.readout_grid
        if grid:
            lead = x.shape[:-3]
            x = nn.functional.adaptive_avg_pool2d(x.flatten(0, -4), grid)
            x = x.unflatten(0, lead)
        return x.flatten(-3)

    def _dropout(self, x: Tensor) -> Tensor:
        """Dropout on ``[T, B, F]`` with one mask shared by all T steps."""
        p = self.config.dropout
        if not self.training or p == 0.0:
            return x
        mask = torch.empty_like(x[0]).bernoulli_(1.0 - p) / (1.0 - p)
        return x * mask

    def forward(self, x: Tensor) -> Tensor:
        """Clip ``[T, B, 2, H, W]`` -> readout per step ``[T, B, num_classes]``, state from zero."""
        expected = self.config.input_shape
        if x.dim() != 5 or tuple(x.shape[2:]) != expected:
            raise ValueError(f"expected input [T, B, {expected}], got {list(x.shape)}")
        x = self._normalise(x)
        for block in self.blocks:
            x, _ = block(x)
        x = self._dropout(self._features(x))
        x, _ = self.hidden_neuron(self.hidden(x))
        return self.readout(self._dropout(x))

    def initial_state(
        self, batch: int, device: torch.device | str | None = None, dtype=torch.float32
    ) -> NetState:
        """Zero state for streaming ``batch`` inputs (the same start as ``forward``)."""
        kw = dict(device=device, dtype=dtype)
        blocks = tuple(
            block.initial_state(batch, h, w, **kw)
            for block, (h, w) in zip(self.blocks, self._block_sizes, strict=True)
        )
        return NetState(blocks, MTLIFState(torch.zeros(batch, self.config.hidden, **kw)))

    def step(self, x: Tensor, state: NetState) -> tuple[Tensor, NetState]:
        """One compressed step ``[B, 2, H, W]`` -> logits ``[B, num_classes]`` and the next state.

        Call in eval mode (BN running statistics, no dropout); then a sequence of
        ``step`` calls from ``initial_state`` equals ``forward`` on the stacked steps.
        """
        x = self._normalise(x)
        block_states = []
        for block, block_state in zip(self.blocks, state.blocks, strict=True):
            x, block_state = block.step(x, block_state)
            block_states.append(block_state)
        spikes, hidden_state = self.hidden_neuron.step(self.hidden(self._features(x)), state.hidden)
        return self.readout(spikes), NetState(tuple(block_states), hidden_state)


def build_network(config: ModelConfig | str) -> SpikingNet:
    """The network for a config (or a config name from ``CONFIGS``)."""
    if isinstance(config, str):
        config = get_config(config)
    return SpikingNet(config)
