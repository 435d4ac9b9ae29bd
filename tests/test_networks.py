"""Configs as data and the SpikingNet they build: shapes, variants, multi == single step."""

from __future__ import annotations

import json

import pytest
import torch

from models.networks import (
    CONFIGS,
    ModelConfig,
    SpikingNet,
    build_network,
    get_config,
    plain_lif_baseline,
)


def _settle_bn(net: SpikingNet, steps: int = 3, batch: int = 2) -> SpikingNet:
    """Give BN the running statistics of the inputs (cumulative average), then eval mode."""
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():  # at PyTorch's default init the hidden MT-LIF layer rarely fires
        net.hidden.weight.mul_(4.0)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.rand(steps, batch, *net.config.input_shape, dtype=torch.float64) * 3)
    return net.eval()


def test_configs_match_the_method():
    nmnist = get_config("nmnist")
    assert nmnist.input_shape == (2, 34, 34)
    assert nmnist.channels == (32, 64) and nmnist.hidden == 256 and nmnist.num_classes == 10
    for name, classes in (("dvsgesture", 11), ("cifar10dvs", 10), ("dvs_sign", 15)):
        config = get_config(name)
        assert config.input_shape == (2, 64, 64)
        assert config.channels == (64, 128, 128, 256) and config.hidden == 512
        assert config.num_classes == classes == len(config.class_names)
    with pytest.raises(KeyError, match="known"):
        get_config("mnist")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_shape_per_step(name):
    net = build_network(name)
    x = torch.rand(2, 1, *net.config.input_shape)
    assert net(x).shape == (2, 1, net.config.num_classes)


@pytest.mark.parametrize(
    "config",
    [
        get_config("nmnist"),
        plain_lif_baseline(get_config("nmnist")),
        get_config("nmnist").with_changes(
            channels=(8, 16),
            hidden=32,
            per_channel_tau=True,
            pool="avg",
            input_transform="log1p",
            input_scale=0.5,
        ),
        get_config("dvsgesture").with_changes(channels=(16, 16, 32, 32), hidden=64),
        get_config("dvsgesture").with_changes(channels=(8, 8, 8, 16), hidden=32, readout_grid=1),
    ],
    ids=["nmnist", "baseline", "variant", "gesture-shape", "pooled-readout"],
)
def test_multi_step_equals_single_step_in_eval(config):
    torch.manual_seed(0)
    net = _settle_bn(build_network(config).double())
    steps, batch = 5, 2
    x = torch.rand(steps, batch, *config.input_shape, dtype=torch.float64) * 3
    with torch.no_grad():
        multi = net(x)
        state = net.initial_state(batch, dtype=torch.float64)
        single = []
        for t in range(steps):
            logits, state = net.step(x[t], state)
            single.append(logits)
    torch.testing.assert_close(torch.stack(single), multi, rtol=0, atol=1e-10)
    assert (multi[:, 0] - multi[:, 1]).abs().max() > 0  # input-dependent spikes reached the readout


def test_with_changes_routes_compression_fields_and_rejects_unknown():
    base = get_config("nmnist")
    variant = base.with_changes(steps=2, mode="count", levels=1, channels=[8, 8])
    assert variant.compression.steps == 2 and variant.compression.mode == "count"
    assert variant.levels == 1 and variant.channels == (8, 8)
    assert base.compression.steps == 4  # the original is untouched
    with pytest.raises(TypeError, match="unknown config fields"):
        base.with_changes(lamda_init=0.2)


def test_baseline_switches():
    baseline = plain_lif_baseline(get_config("nmnist"))
    assert baseline.compression.mode == "count"
    assert (baseline.levels, baseline.learnable_tau, baseline.synaptic_filter) == (1, False, False)
    net = build_network(baseline)
    names = {n for n, _ in net.named_parameters()}
    assert not any("lambda" in n or "tau" in n for n in names), names


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_round_trips_through_plain_json(name):
    config = get_config(name).with_changes(tau_s_us=25_000.0)
    data = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(data) == config


def test_from_dict_names_bad_fields():
    data = get_config("nmnist").to_dict()
    with pytest.raises(ValueError, match="unknown fields.*'colour'"):
        ModelConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match="compression.hop"):
        ModelConfig.from_dict({**data, "compression": {**data["compression"], "hop": 1}})
    with pytest.raises(ValueError, match="class_names"):
        ModelConfig.from_dict({**data, "class_names": ["a"]})


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="too small"):
        get_config("nmnist").with_changes(channels=(4,) * 6)


def test_readout_grid_sets_the_hidden_layers_input_and_is_checked():
    config = get_config("dvsgesture").with_changes(channels=(8, 8, 8, 16), hidden=32)
    assert build_network(config).hidden.in_features == 16 * 4 * 4  # 64 / 2^4 = 4
    assert build_network(config.with_changes(readout_grid=2)).hidden.in_features == 16 * 2 * 2
    assert build_network(config.with_changes(readout_grid=1)).hidden.in_features == 16
    with pytest.raises(ValueError, match=r"readout_grid=5 \(need 0 <= g <= 4"):
        config.with_changes(readout_grid=5)


def test_global_readout_ignores_where_the_motion_is():
    """With readout_grid=1 a pattern moved across the sensor (by whole cells of the
    last map, clear of the borders' padding) gives the same logits; the flattened
    readout does not."""
    torch.manual_seed(1)
    config = get_config("dvsgesture").with_changes(channels=(8, 8), hidden=32)  # 16x16 map
    x = torch.zeros(3, 1, *config.input_shape, dtype=torch.float64)
    x[:, :, :, 12:28, 12:28] = torch.rand(3, 1, 2, 16, 16, dtype=torch.float64) * 3
    moved = torch.roll(x, shifts=(20, 16), dims=(-2, -1))
    for grid, invariant in ((1, True), (0, False)):
        torch.manual_seed(0)
        net = _settle_bn(build_network(config.with_changes(readout_grid=grid)).double())
        with torch.no_grad():
            net.hidden.weight.mul_(8.0)  # an average over the map is small: make it fire
            logits = net(x)
            assert (logits - net(torch.zeros_like(x))).abs().max() > 0.1  # the pattern counts
            same = torch.allclose(logits, net(moved), rtol=0, atol=1e-9)
        assert same is invariant, grid


def test_dropout_mask_is_shared_over_steps():
    net = build_network(get_config("nmnist").with_changes(dropout=0.5)).train()
    out = net._dropout(torch.ones(4, 2, 100))
    assert (out == out[0]).all()
    assert 0 < (out[0] == 0).float().mean() < 1


def test_wrong_input_shape_is_refused():
    net = build_network("nmnist")
    with pytest.raises(ValueError, match=r"expected input \[T, B, \(2, 34, 34\)\]"):
        net(torch.rand(2, 1, 2, 32, 32))


def test_training_step_gives_finite_gradients_everywhere():
    torch.manual_seed(1)
    net = build_network("nmnist").train()
    x = torch.rand(2, 4, *net.config.input_shape) * 3
    loss = torch.nn.functional.cross_entropy(net(x).mean(0), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_neuron_layer_gets_the_configs_neuron_settings(name):
    config = CONFIGS[name].with_changes(levels=2, threshold=0.5, surrogate_alpha=3.0)
    net = build_network(config)
    neurons = [block.neuron for block in net.blocks] + [net.hidden_neuron]
    assert [neuron.p for neuron in neurons] == [config.neuron_parameters] * len(neurons)
    assert config.neuron_parameters.levels == 2 and config.neuron_parameters.threshold == 0.5
