"""MT-LIF: graded spikes, surrogate gradient, soft reset, learnable tau, two drivers agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.neurons import (
    MTLIF,
    MTLIFParameters,
    MTLIFState,
    beta_from_tau,
    graded_spikes,
    mtlif_step,
)


@pytest.mark.parametrize("threshold", [1.0, 0.5, 1.3])
@pytest.mark.parametrize("levels", [1, 4])
def test_spikes_equal_floor_clipped_on_a_grid(threshold, levels):
    u = np.round(np.arange(-3.0, 8.0, 0.01), 2)  # includes every multiple of 0.5 exactly
    expected = np.clip(np.floor(u / threshold), 0, levels)
    got = graded_spikes(torch.tensor(u), MTLIFParameters(levels, threshold)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_step_integrates_then_soft_resets():
    u_prev = torch.tensor([0.0, 0.4, 2.0, -1.0, 3.0])
    current = torch.tensor([0.5, 0.9, 3.3, 0.2, 9.0])
    spikes, state = mtlif_step(current, MTLIFState(u_prev), 0.5, MTLIFParameters(levels=4))
    u = 0.5 * u_prev + current  # [0.5, 1.1, 4.3, -0.3, 10.5]
    np.testing.assert_array_equal(spikes.numpy(), [0, 1, 4, 0, 4])
    torch.testing.assert_close(state.u, u - spikes)  # above K*theta the excess stays


def test_surrogate_gradient_is_finite_and_peaks_at_each_threshold():
    threshold, levels, alpha = 1.0, 4, 4.0
    u = torch.tensor(
        [k * threshold + d for k in range(1, levels + 1) for d in (-0.1, 0.0, 0.1)] + [-10.0, 20.0],
        requires_grad=True,
    )
    graded_spikes(u, MTLIFParameters(levels, threshold, alpha)).sum().backward()
    grad = u.grad
    assert torch.isfinite(grad).all()
    near = grad[:-2]
    assert (near > 0.5).all(), near  # alpha * sigma'(0) = 1 at each threshold
    assert grad[-2] < 1e-6 and grad[-1] < 1e-6  # far from every threshold
    # The same as differentiating the smooth staircase sum_k sigma(alpha (u - k theta)).
    u2 = u.detach().clone().requires_grad_(True)
    smooth = sum(torch.sigmoid(alpha * (u2 - k * threshold)) for k in range(1, levels + 1))
    smooth.sum().backward()
    torch.testing.assert_close(grad, u2.grad)


def test_reset_path_is_detached():
    current = torch.tensor([2.5, 0.3], requires_grad=True)
    _, state = mtlif_step(current, MTLIFState(torch.zeros(2)), 0.5, MTLIFParameters())
    state.u.sum().backward()
    torch.testing.assert_close(current.grad, torch.ones(2))  # no gradient through -theta*s


def test_plain_lif_is_k1_with_fixed_tau():
    torch.manual_seed(0)
    lif = MTLIF(MTLIFParameters(levels=1, learnable_tau=False))
    assert list(lif.parameters()) == []
    x = torch.randn(6, 3, 5) * 2
    out, _ = lif(x)
    u = torch.zeros(3, 5)
    for t in range(6):
        u = 0.5 * u + x[t]
        s = (u >= 1.0).float()
        torch.testing.assert_close(out[t], s)
        u = u - s


@pytest.mark.parametrize("channels", [None, 4])
@pytest.mark.parametrize("target_rate", [0.0, 3.0])
def test_learnable_tau_stays_in_range_after_training(channels, target_rate):
    torch.manual_seed(1)
    lif = MTLIF(channels=channels)
    w0 = lif.tau_weight.detach().clone()
    optimiser = torch.optim.Adam(lif.parameters(), lr=0.1)
    x = torch.rand(4, 8, 4, 3, 3) * 0.8
    for _ in range(100):
        optimiser.zero_grad()
        loss = (lif(x)[0].mean() - target_rate) ** 2
        loss.backward()
        optimiser.step()
    beta = lif.beta.detach()
    assert not torch.equal(lif.tau_weight.detach(), w0)  # it did learn
    assert ((beta > 0) & (beta < 1)).all(), beta
    assert (lif.tau_m > 1).all()


def test_initial_tau_and_beta():
    lif = MTLIF()
    assert lif.beta.item() == pytest.approx(0.5)
    assert lif.tau_m.item() == pytest.approx(2.0)
    assert MTLIF(MTLIFParameters(tau_m_init=4.0)).beta.item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="tau_m must be > 1"):
        beta_from_tau(1.0)
    with pytest.raises(ValueError, match="tau_m must be > 1"):
        MTLIFParameters(tau_m_init=1.0)
    with pytest.raises(ValueError, match="levels"):
        MTLIFParameters(levels=0)
    with pytest.raises(ValueError, match="threshold"):
        MTLIFParameters(threshold=0.0)


@pytest.mark.parametrize("shape,channels", [((5, 2, 4, 6, 6), None), ((5, 2, 4, 6, 6), 4)])
def test_multi_step_equals_single_step(shape, channels):
    torch.manual_seed(2)
    lif = MTLIF(channels=channels)
    if channels:
        with torch.no_grad():
            lif.tau_weight.copy_(torch.linspace(-2, 2, channels))
    x = torch.randn(shape, dtype=torch.float64) * 2
    lif.double()
    multi, last = lif(x)
    state = lif.initial_state(x[0])
    for t in range(shape[0]):
        s, state = lif.step(x[t], state)
        torch.testing.assert_close(s, multi[t], rtol=0, atol=0)
    torch.testing.assert_close(last.u, state.u, rtol=0, atol=0)
    assert multi.abs().sum() > 0  # the comparison saw spikes


def test_a_clip_fed_in_chunks_equals_the_whole_clip():
    torch.manual_seed(3)
    lif = MTLIF()
    x = torch.randn(7, 2, 5) * 3
    whole, whole_state = lif(x)
    first, state = lif(x[:3])
    second, state = lif(x[3:], state)
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=0, atol=0)
    torch.testing.assert_close(state.u, whole_state.u, rtol=0, atol=0)


def test_hidden_layer_shape_runs_both_ways():
    lif = MTLIF()
    x = torch.randn(3, 2, 7) * 3
    multi, _ = lif(x)
    state = lif.initial_state(x[0])
    for t in range(3):
        s, state = lif.step(x[t], state)
        torch.testing.assert_close(s, multi[t])


def test_membrane_stays_float32_for_bf16_input():
    x = torch.tensor([[0.5, 1.5, 2.25, 4.0]], dtype=torch.bfloat16).expand(3, 1, 4)
    lif = MTLIF()
    out, _ = lif(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, lif(x.float())[0])
    _, state = lif.step(x[0], lif.initial_state(x[0].float()))
    assert state.u.dtype == torch.float32


def test_spikes_without_gradients_equal_the_autograd_path():
    """Inference computes the staircase directly (no autograd Function): same values."""
    p = MTLIFParameters(levels=4, threshold=0.7)
    u = torch.linspace(-2.0, 5.0, 1001)
    with torch.no_grad():
        direct = graded_spikes(u, p)
    via_function = graded_spikes(u.clone().requires_grad_(), p)
    assert via_function.requires_grad
    assert torch.equal(direct, via_function.detach())
