"""Synaptic convolutional block (docs/method.md section 4).

    z[t] = BN(Conv3x3(x[t]))                    BN statistics shared over steps
    c[t] = lam * c[t-1] + (1 - lam) * z[t]      lam = sigmoid(v), one per channel
    x_next[t] = Pool(MT-LIF(c[t]))

The synaptic filter ``c`` smooths the jumps between adjacent compressed steps;
``synaptic_filter=False`` fixes lam = 0 (c = z), the plain conv-BN-LIF block of
the ablation.

Two drivers over one step function (``_filter_and_fire``: filter, then
``mtlif_step``): ``forward`` takes a clip ``[T, B, C, H, W]`` and runs conv+BN
once on the merged ``[T*B]`` batch (one BN statistic over all steps; measured
~3x faster on CPU than per step), then ``multi_step`` runs the filter and
neuron over time; ``step`` takes one ``[B, C, H, W]`` step. Both take and
return an explicit ``SCBState``; in eval mode (BN running statistics) the two
agree.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.neurons import (
    METHOD_DEFAULTS,
    MTLIF,
    MTLIFParameters,
    MTLIFState,
    at_least_float32,
    mtlif_step,
    multi_step,
)


class SCBState(NamedTuple):
    """Per-block streaming state, both shaped ``[B, C_out, H, W]`` (before pooling)."""

    synaptic: Tensor  # c[t-1]; unused (zeros) when the filter is off
    neuron: MTLIFState


class SynapticConvBlock(nn.Module):
    """Conv3x3 -> BN -> synaptic filter -> MT-LIF -> 2x2 pool (``pool=None``: no pool)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        neuron_parameters: MTLIFParameters = METHOD_DEFAULTS,
        *,
        per_channel_tau: bool = False,
        synaptic_filter: bool = True,
        lambda_init: float = 0.5,
        pool: Literal["max", "avg"] | None = "max",
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        # channels_last: conv measured 7x faster on these CPUs (64->128 ch, 32x32), and
        # what cuDNN prefers; .to(dtype/device) keeps the layout.
        self.conv.to(memory_format=torch.channels_last)
        self.bn = nn.BatchNorm2d(out_channels)
        self.synaptic_filter = synaptic_filter
        if synaptic_filter:
            if not 0.0 < lambda_init < 1.0:
                raise ValueError(f"lambda_init must be in (0, 1), got {lambda_init}")
            logit = math.log(lambda_init / (1.0 - lambda_init))
            self.lambda_weight = nn.Parameter(torch.full((out_channels,), logit))
        channels = out_channels if per_channel_tau else None
        self.neuron = MTLIF(neuron_parameters, channels=channels)
        if pool not in ("max", "avg", None):
            raise ValueError(f"pool must be 'max', 'avg' or None, got {pool!r}")
        self.pool = pool
        self.out_channels = out_channels

    @property
    def synaptic_decay(self) -> Tensor | None:
        """lam per channel, shaped ``[C, 1, 1]``; None when the filter is off (lam = 0)."""
        if not self.synaptic_filter:
            return None
        return torch.sigmoid(self.lambda_weight).view(-1, 1, 1)

    def _pool(self, spikes: Tensor) -> Tensor:
        if self.pool == "max":
            return F.max_pool2d(spikes, 2)
        if self.pool == "avg":
            return F.avg_pool2d(spikes, 2)
        return spikes

    def _conv_bn(self, x: Tensor) -> Tensor:
        """``[N, C_in, H, W]`` -> ``[N, C_out, H, W]`` at least float32 (the filter's dtype)."""
        z = self.bn(self.conv(x.contiguous(memory_format=torch.channels_last)))
        return z.to(at_least_float32(z.dtype))

    def _filter_and_fire(
        self, z: Tensor, state: SCBState, *, lam: Tensor | None, beta: Tensor
    ) -> tuple[Tensor, SCBState]:
        """The block's step after conv+BN: ``z [B, C_out, H, W]`` -> spikes (before the
        pool) and the new state; with the filter off the synaptic state is passed on
        as it is (the same tensor, which the CUDA graph runner relies on)."""
        # lerp(z, c_prev, lam) = lam * c_prev + (1 - lam) * z in one pass instead of four.
        c = z if lam is None else torch.lerp(z, state.synaptic, lam)
        spikes, neuron_state = mtlif_step(c, state.neuron, beta, self.neuron.p)
        return spikes, SCBState(state.synaptic if lam is None else c, neuron_state)

    def initial_state(self, batch: int, height: int, width: int, **tensor_kw) -> SCBState:
        """Zero state for inputs ``[batch, C_in, height, width]`` (conv keeps the size),
        channels_last like the conv's output: a state in another layout would turn
        every later tensor of the step into it (the max pool ~20x slower in a one-off
        micro-benchmark, and a copy before every conv; benchmarks/bench_step.py)."""
        zeros = torch.zeros(batch, self.out_channels, height, width, **tensor_kw)
        zeros = zeros.contiguous(memory_format=torch.channels_last)
        return SCBState(zeros, MTLIFState(zeros))

    def forward(self, x: Tensor, state: SCBState | None = None) -> tuple[Tensor, SCBState]:
        """Clip ``[T, B, C_in, H, W]`` -> ``[T, B, C_out, H/2, W/2]`` (floor) and the state
        after it; ``state`` None starts from zero."""
        steps, batch = x.shape[:2]
        z = self._conv_bn(x.flatten(0, 1))  # [T*B, C_out, H, W], one BN statistic over all steps
        z = z.unflatten(0, (steps, batch))
        if state is None:
            zeros = torch.zeros_like(z[0])
            state = SCBState(zeros, MTLIFState(zeros))
        step = partial(
            self._filter_and_fire,
            lam=self.synaptic_decay,
            beta=self.neuron.beta_for(z[0], channel_dim=1),
        )
        spikes, state = multi_step(step, z, state)
        return self._pool(spikes.flatten(0, 1)).unflatten(0, (steps, batch)), state

    def step(self, x: Tensor, state: SCBState) -> tuple[Tensor, SCBState]:
        """One step ``[B, C_in, H, W]`` -> ``[B, C_out, H/2, W/2]``; use in eval mode.

        In training mode BN would normalise with the statistics of this one
        step, which is not what the multi-step path learned with.
        """
        z = self._conv_bn(x)
        beta = self.neuron.beta_for(z, channel_dim=1)
        spikes, state = self._filter_and_fire(z, state, lam=self.synaptic_decay, beta=beta)
        return self._pool(spikes), state

    def extra_repr(self) -> str:
        return f"synaptic_filter={self.synaptic_filter}, pool={self.pool}"
