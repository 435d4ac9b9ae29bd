"""Multi-threshold LIF neuron (docs/method.md section 3): one pure step function, two drivers.

``mtlif_step`` advances the membrane by one time step over an explicit
``MTLIFState`` with the neuron's settings as one value, ``MTLIFParameters``
(Norse's ``LIFParameters``); it holds no state itself. ``multi_step`` runs any
such step over the leading time axis, so training (``MTLIF.forward`` over
``[T, B, ...]``) and streaming (``MTLIF.step`` with the state kept by the
caller between hops) run the same arithmetic and agree exactly.

    u[t] = beta * u[t-1] + I[t]
    s[t] = clamp(floor(u[t] / theta), 0, K)       graded spike 0..K
    u[t] <- u[t] - theta * s[t]                   soft reset (detached)

``K = 1`` with a fixed membrane constant is the plain LIF neuron of the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor, nn

State = TypeVar("State")


def beta_from_tau(tau_m: float) -> float:
    """Membrane decay per step for time constant ``tau_m`` in steps: beta = 1 - 1/tau_m."""
    if not tau_m > 1.0:
        raise ValueError(f"tau_m must be > 1 step (beta = 1 - 1/tau_m in (0, 1)), got {tau_m}")
    return 1.0 - 1.0 / tau_m


@dataclass(frozen=True)
class MTLIFParameters:
    """The settings of an MT-LIF layer, passed as one value from ``ModelConfig``
    through the blocks to the step. The step reads ``levels``, ``threshold`` and
    ``surrogate_alpha``; ``tau_m_init`` and ``learnable_tau`` decide how the
    layer's decay ``beta = sigmoid(w)`` starts and whether ``w`` learns."""

    levels: int = 4  # K thresholds; 1 = plain LIF
    threshold: float = 1.0  # theta
    surrogate_alpha: float = 4.0  # sharpness of the sigmoid surrogate
    tau_m_init: float = 2.0  # membrane time constant in steps; beta = 1 - 1/tau_m
    learnable_tau: bool = True  # False: beta stays at its initial value

    def __post_init__(self) -> None:
        # Stored as int/float whatever a caller passed (``--set threshold=1`` gives an int).
        object.__setattr__(self, "levels", int(self.levels))
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "surrogate_alpha", float(self.surrogate_alpha))
        if self.levels < 1:
            raise ValueError(f"levels (K) must be >= 1, got {self.levels}")
        if self.threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        beta_from_tau(self.tau_m_init)  # raises for tau_m <= 1


METHOD_DEFAULTS = MTLIFParameters()  # docs/method.md 3: K = 4, theta = 1, alpha = 4, tau_m = 2


class MTLIFState(NamedTuple):
    """Membrane potential ``u``, same shape as the input current of one step."""

    u: Tensor


class MultiThresholdSpike(torch.autograd.Function):
    """Graded spike clamp(floor(u / theta), 0, K) with a sum-of-sigmoids surrogate gradient.

    The forward staircase has a unit step at every threshold k*theta (k = 1..K);
    the backward pass replaces each step H(u - k*theta) by the logistic
    sigma(alpha (u - k*theta)), whose derivative integrates to the same unit
    height, so ds/du ~= sum_k alpha * sigma'(alpha (u - k*theta)).
    """

    @staticmethod
    def forward(ctx, u: Tensor, threshold: float, levels: int, alpha: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.threshold, ctx.levels, ctx.alpha = threshold, levels, alpha
        return torch.clamp(torch.floor(u / threshold), 0, levels)

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):
        (u,) = ctx.saved_tensors
        threshold, levels, alpha = ctx.threshold, ctx.levels, ctx.alpha
        surrogate = torch.zeros_like(u)
        for k in range(1, levels + 1):
            sig = torch.sigmoid(alpha * (u - k * threshold))
            surrogate += sig * (1.0 - sig)
        return grad_spikes * (alpha * surrogate), None, None, None


def graded_spikes(u: Tensor, p: MTLIFParameters) -> Tensor:
    """clamp(floor(u / threshold), 0, levels), differentiable through the surrogate.

    Without gradients (inference, streaming) the same staircase is computed
    directly, without the autograd Function's overhead per call."""
    if not torch.is_grad_enabled():
        # clamp-then-floor equals floor-then-clamp for integer bounds; with the usual
        # threshold of 1 the division is skipped: two passes over u instead of three.
        scaled = u if p.threshold == 1.0 else u / p.threshold
        return scaled.clamp(0, p.levels).floor_()
    return MultiThresholdSpike.apply(u, p.threshold, p.levels, p.surrogate_alpha)


def mtlif_step(
    input_current: Tensor, state: MTLIFState, beta: Tensor | float, p: MTLIFParameters
) -> tuple[Tensor, MTLIFState]:
    """One time step of the multi-threshold LIF neuron.

    ``beta`` (the membrane decay per step) broadcasts against ``input_current``:
    a scalar, or per channel shaped ``[C, 1, 1]`` for ``[B, C, H, W]``. The
    reset subtracts ``threshold * spikes`` with the spikes detached, so the
    gradient flows through the integration path only (docs/method.md section 3).
    """
    # One fused kernel per line (addcmul, sub with alpha) instead of two: at the
    # first block's 32x64x64 a pass over the membrane costs as much as its arithmetic.
    if isinstance(beta, Tensor):
        u = torch.addcmul(input_current, state.u, beta)
    else:
        u = torch.add(input_current, state.u, alpha=beta)
    spikes = graded_spikes(u, p)
    return spikes, MTLIFState(torch.sub(u, spikes.detach(), alpha=p.threshold))


def multi_step(
    step: Callable[[Tensor, State], tuple[Tensor, State]], inputs: Tensor, state: State
) -> tuple[Tensor, State]:
    """The multi-step driver of any step function: ``inputs [T, ...]`` -> the
    outputs stacked ``[T, ...]`` and the state after the last step."""
    outputs = []
    for x_t in inputs:
        out, state = step(x_t, state)
        outputs.append(out)
    return torch.stack(outputs), state


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """The dtype membrane and filter states use: float32 even under bf16/fp16 autocast.

    A bf16 membrane resolves only ~0.03 at u ~ 4, which moves spikes across
    thresholds; the spikes themselves (integers 0..K) are exact in bf16.
    """
    return torch.promote_types(dtype, torch.float32)


class MTLIF(nn.Module):
    """MT-LIF layer: multi-step ``forward([T, B, C, ...])`` and single-step ``step``.

    beta = sigmoid(w) keeps the decay in (0, 1) whatever the optimiser does to
    ``w``. ``channels=None`` learns one ``w`` for the layer (the default);
    ``channels=C`` learns one per channel of dim 1 of ``[B, C, ...]`` (an option
    to measure). ``p.learnable_tau=False`` stores ``w`` as a buffer instead, so
    it stays fixed but travels with the state dict.
    """

    def __init__(self, p: MTLIFParameters = METHOD_DEFAULTS, *, channels: int | None = None):
        super().__init__()
        self.p = p
        self.channels = channels
        beta0 = beta_from_tau(p.tau_m_init)
        w = torch.full((channels,) if channels else (), math.log(beta0 / (1.0 - beta0)))
        if p.learnable_tau:
            self.tau_weight = nn.Parameter(w)
        else:
            self.register_buffer("tau_weight", w)

    @property
    def beta(self) -> Tensor:
        """Decay per step: a scalar, or ``[C]`` per channel (see ``beta_for`` for broadcasting)."""
        return torch.sigmoid(self.tau_weight)

    @property
    def tau_m(self) -> Tensor:
        """Membrane time constant in steps, 1 / (1 - beta)."""
        return 1.0 / (1.0 - torch.sigmoid(self.tau_weight.detach()))

    def beta_for(self, x: Tensor, channel_dim: int) -> Tensor:
        """beta shaped to broadcast over one step ``x`` whose channels are at ``channel_dim``."""
        beta = self.beta
        if self.channels:
            trailing = x.dim() - channel_dim - 1
            beta = beta.view(self.channels, *([1] * trailing))
        return beta

    def initial_state(self, x: Tensor) -> MTLIFState:
        """Zero membrane for one step of input shaped like ``x`` (``[B, ...]``)."""
        return MTLIFState(torch.zeros_like(x))

    def step(self, x: Tensor, state: MTLIFState) -> tuple[Tensor, MTLIFState]:
        """One step: ``x [B, C, ...]`` -> graded spikes of the same shape, new state."""
        x = x.to(at_least_float32(x.dtype))
        return mtlif_step(x, state, self.beta_for(x, channel_dim=1), self.p)

    def forward(self, x: Tensor, state: MTLIFState | None = None) -> tuple[Tensor, MTLIFState]:
        """A clip ``x [T, B, C, ...]`` -> spikes ``[T, B, C, ...]`` and the state after
        it; ``state`` None starts from zero (a stream fed in chunks passes it on)."""
        x = x.to(at_least_float32(x.dtype))
        beta = self.beta_for(x[0], channel_dim=1)
        state = self.initial_state(x[0]) if state is None else state
        return multi_step(partial(mtlif_step, beta=beta, p=self.p), x, state)

    def extra_repr(self) -> str:
        kind = "learnable" if isinstance(self.tau_weight, nn.Parameter) else "fixed"
        per = f", per-channel({self.channels})" if self.channels else ""
        return (
            f"levels={self.p.levels}, threshold={self.p.threshold}, "
            f"surrogate_alpha={self.p.surrogate_alpha}, tau_m={kind}{per}"
        )
