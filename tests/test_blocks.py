"""SCB: shapes, shared BN statistics, the lambda = 0 switch, multi-step == single-step."""

from __future__ import annotations

import pytest
import torch

from models.blocks import SynapticConvBlock
from models.neurons import MTLIFParameters, MTLIFState, mtlif_step


def _trained_bn_block(**kw) -> SynapticConvBlock:
    """A block whose BN running statistics are not the identity, in eval mode, float64."""
    torch.manual_seed(0)
    block = SynapticConvBlock(2, 8, **kw).double()
    block.train()
    with torch.no_grad():
        for _ in range(3):
            block(torch.rand(3, 4, 2, 10, 10, dtype=torch.float64) * 4)
    return block.eval()


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"synaptic_filter": False},
        {"per_channel_tau": True},
        {"pool": "avg", "neuron_parameters": MTLIFParameters(levels=1, learnable_tau=False)},
        {"pool": None},
    ],
)
def test_multi_step_equals_single_step_in_eval(kw):
    block = _trained_bn_block(**kw)
    if block.synaptic_filter:
        with torch.no_grad():
            block.lambda_weight.copy_(torch.linspace(-2, 2, 8))
    x = torch.rand(5, 3, 2, 11, 11, dtype=torch.float64) * 4
    with torch.no_grad():
        multi, last = block(x)
        state = block.initial_state(3, 11, 11, dtype=torch.float64)
        for t in range(5):
            out, state = block.step(x[t], state)
            torch.testing.assert_close(out, multi[t], rtol=0, atol=1e-12)
        # The multi-step driver with state: the clip in two chunks is the clip.
        first, chunked = block(x[:2])
        second, chunked = block(x[2:], chunked)
    torch.testing.assert_close(torch.cat([first, second]), multi, rtol=0, atol=1e-12)
    for final in (last, chunked):
        torch.testing.assert_close(final.synaptic, state.synaptic, rtol=0, atol=1e-12)
        torch.testing.assert_close(final.neuron.u, state.neuron.u, rtol=0, atol=1e-12)
    assert multi.abs().sum() > 0  # the comparison saw spikes


def test_output_shape_floors_odd_sizes():
    block = SynapticConvBlock(2, 4)
    assert block(torch.rand(2, 3, 2, 17, 17))[0].shape == (2, 3, 4, 8, 8)


def test_bn_statistics_are_shared_over_steps():
    torch.manual_seed(1)
    block = SynapticConvBlock(2, 4)
    block.bn.momentum = 1.0  # running stats become exactly the last batch's
    x = torch.rand(4, 3, 2, 6, 6)
    x[0] *= 10  # steps with very different statistics
    block.train()
    block(x)
    with torch.no_grad():
        z = block.conv(x.flatten(0, 1))
    torch.testing.assert_close(block.bn.running_mean, z.mean(dim=(0, 2, 3)))


def test_synaptic_filter_follows_its_recursion():
    torch.manual_seed(2)
    block = SynapticConvBlock(2, 4, pool=None).eval()
    lam = torch.sigmoid(block.lambda_weight).view(-1, 1, 1)
    x = torch.rand(4, 1, 2, 5, 5) * 3
    with torch.no_grad():
        out, _ = block(x)
        z = block.bn(block.conv(x.flatten(0, 1))).unflatten(0, (4, 1))
        c = torch.zeros_like(z[0])
        state = MTLIFState(torch.zeros_like(z[0]))
        for t in range(4):
            c = lam * c + (1 - lam) * z[t]
            s, state = mtlif_step(c, state, 0.5, MTLIFParameters())
            torch.testing.assert_close(out[t], s)


def test_lambda_zero_switch_equals_filter_at_lambda_zero():
    torch.manual_seed(3)
    plain = SynapticConvBlock(2, 4, synaptic_filter=False).eval()
    filtered = SynapticConvBlock(2, 4, synaptic_filter=True).eval()
    assert not hasattr(plain, "lambda_weight")
    filtered.load_state_dict({**plain.state_dict(), "lambda_weight": torch.full((4,), -1e4)})
    x = torch.rand(3, 2, 2, 8, 8) * 4
    with torch.no_grad():
        torch.testing.assert_close(plain(x)[0], filtered(x)[0])


def test_gradients_reach_conv_lambda_and_tau():
    torch.manual_seed(4)
    block = SynapticConvBlock(2, 4, per_channel_tau=True)
    x = torch.rand(3, 2, 2, 8, 8) * 4
    block(x)[0].sum().backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_bad_arguments():
    with pytest.raises(ValueError, match="lambda_init"):
        SynapticConvBlock(2, 4, lambda_init=1.0)
    with pytest.raises(ValueError, match="pool"):
        SynapticConvBlock(2, 4, pool="median")


def test_streaming_state_stays_channels_last():
    """The step's tensors keep the conv's layout: a state in another layout made the max
    pool much slower and added a copy before every conv (benchmarks/bench_step.py)."""
    block = _trained_bn_block()
    state = block.initial_state(1, 10, 10, dtype=torch.float64)
    assert state.synaptic.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        x = torch.rand(1, 2, 10, 10, dtype=torch.float64) * 4
        for _ in range(3):
            out, state = block.step(x, state)
    assert state.synaptic.is_contiguous(memory_format=torch.channels_last)
    assert state.neuron.u.is_contiguous(memory_format=torch.channels_last)
