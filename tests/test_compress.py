"""Offline spatio-temporal compression: hand-computed cases, the count baseline,
the step grid, errors and real recordings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import shared_path

from core.adapt import SensorAdapter
from core.compress import (
    CompressionConfig,
    StepGrid,
    clip_grid,
    compress_clip,
    compress_steps,
)
from core.events import EventValidationError, SensorSize, make_events
from replay.formats.nmnist import read_nmnist


def events_of(rows):
    """rows of (t_us, x, y, p) -> EVENT_DTYPE."""
    t, x, y, p = zip(*rows, strict=True) if rows else ((), (), (), ())
    return make_events(np.array(t, dtype=np.int64), x, y, p)


def random_events(rng, n: int, t_max_us: int) -> np.ndarray:
    """n sorted events on the 4x3 sensor of ``config()``."""
    t = np.sort(rng.integers(0, t_max_us, n))
    return make_events(t, rng.integers(0, 4, n), rng.integers(0, 3, n), rng.integers(0, 2, n))


def config(**changes) -> CompressionConfig:
    fields = dict(input_width=4, input_height=3, steps=2, window_us=200)
    fields.update(changes)
    return CompressionConfig(**fields)


# -- hand-computed cases (D = 100 µs, τ_s = D unless said) ---------------------


def test_one_event_decays_to_the_step_end_and_carries_over():
    out = compress_clip(events_of([(30, 1, 2, 1)]), config(), t0_us=0)
    assert out.shape == (2, 2, 3, 4) and out.dtype == np.float32
    w = math.exp(-(100 - 30) / 100)
    assert out[0, 1, 2, 1] == pytest.approx(w, rel=1e-6)
    assert out[1, 1, 2, 1] == pytest.approx(w * math.exp(-1), rel=1e-6)
    out[:, 1, 2, 1] = 0
    assert not out.any()


def test_two_events_in_one_step_add():
    out = compress_clip(events_of([(10, 0, 0, 0), (60, 0, 0, 0)]), config(), t0_us=0)
    assert out[0, 0, 0, 0] == pytest.approx(math.exp(-0.9) + math.exp(-0.4), rel=1e-6)


def test_decay_across_an_empty_step():
    cfg = config(steps=3, window_us=300, tau_s_us=50.0)
    out = compress_clip(events_of([(100, 3, 1, 1)]), cfg, t0_us=0)
    assert out[0].sum() == 0
    assert out[1, 1, 1, 3] == pytest.approx(math.exp(-2), rel=1e-6)  # 100 µs before the end
    assert out[2, 1, 1, 3] == pytest.approx(math.exp(-2) * math.exp(-2), rel=1e-6)  # γ = e^-2


def test_steps_are_half_open_start_inclusive():
    # t0 is in step 0 (weight e^-1); an event on a step's end is in the next step.
    ev = events_of([(0, 0, 0, 0), (100, 1, 0, 0), (200, 2, 0, 0)])
    out = compress_clip(ev, config(), t0_us=0)
    assert out[0, 0, 0, 0] == pytest.approx(math.exp(-1), rel=1e-6)
    assert out[0, 0, 0, 1] == 0
    assert out[1, 0, 0, 1] == pytest.approx(math.exp(-1), rel=1e-6)
    assert out[:, 0, 0, 2].sum() == 0  # t = t0 + W is outside the window


def test_window_ignores_events_outside_it():
    ev = events_of([(5, 0, 0, 0), (10, 1, 0, 0), (110, 1, 0, 0), (210, 2, 0, 0)])
    out = compress_clip(ev, config(mode="count"), t0_us=10)
    assert out[0, 0, 0].tolist() == [0, 1, 0, 0]
    assert out[1, 0, 0].tolist() == [0, 1, 0, 0]


def test_spatial_factor_sum_pools_and_drops_the_remainder_strip():
    cfg = CompressionConfig(5, 3, spatial_factor=2, steps=1, window_us=100, mode="count")
    assert cfg.output_shape == (2, 1, 2)
    ev = events_of([(0, 0, 0, 1), (1, 1, 1, 1), (2, 3, 0, 0), (3, 4, 0, 0), (4, 0, 2, 0)])
    out = compress_clip(ev, cfg, t0_us=0)
    # x = 4 and y = 2 lie beyond W'·s = 4 and H'·s = 2: dropped.
    assert out[0, 1].tolist() == [[2, 0]]
    assert out[0, 0].tolist() == [[0, 1]]


def test_spatial_factor_three_uses_floor_division():
    cfg = CompressionConfig(9, 9, spatial_factor=3, steps=1, window_us=10, mode="count")
    ev = events_of([(0, 8, 2, 0), (1, 3, 5, 0), (2, 5, 3, 0)])
    out = compress_clip(ev, cfg, t0_us=0)
    assert out[0, 0, 0, 2] == 1 and out[0, 0, 1, 1] == 2 and out.sum() == 3


def test_explicit_tau():
    cfg = config(tau_s_us=25.0)
    out = compress_clip(events_of([(50, 0, 0, 0)]), cfg, t0_us=0)
    assert out[0, 0, 0, 0] == pytest.approx(math.exp(-2), rel=1e-6)
    assert out[1, 0, 0, 0] == pytest.approx(math.exp(-2) * math.exp(-4), rel=1e-6)


# -- count baseline --------------------------------------------------------------


def test_count_total_equals_events_in_the_window():
    rng = np.random.default_rng(1)
    n = 5000
    ev = random_events(rng, n, 1000)
    cfg = config(steps=4, window_us=400, mode="count")
    out = compress_clip(ev, cfg, t0_us=300)
    t = ev["timestamp"]
    assert out.sum() == np.count_nonzero((t >= 300) & (t < 700))
    per_step = [np.count_nonzero((t >= 300 + 100 * k) & (t < 400 + 100 * k)) for k in range(4)]
    assert out.sum(axis=(1, 2, 3)).tolist() == per_step
    assert out[:, 1].sum() == np.count_nonzero((t >= 300) & (t < 700) & (ev["polarity"] == 1))


def test_stc_matches_direct_formula_on_random_events():
    rng = np.random.default_rng(2)
    n = 3000
    ev = random_events(rng, n, 1000)
    cfg = config(steps=5, window_us=1000, tau_s_us=130.0)
    out = compress_clip(ev, cfg, t0_us=0)
    # I(t_k) = Σ_{t_e < t_k} exp(-(t_k - t_e)/τ): the closed form of the recursion.
    for k in range(5):
        end = 200 * (k + 1)
        sel = ev[ev["timestamp"] < end]
        direct = np.zeros((2, 3, 4))
        np.add.at(
            direct,
            (sel["polarity"], sel["y"], sel["x"]),
            np.exp(-(end - sel["timestamp"]) / 130.0),
        )
        np.testing.assert_allclose(out[k], direct, rtol=1e-5, atol=1e-5)


def test_large_clip_crosses_block_boundaries():
    # More events than one numpy block, so per-block sums must add up.
    rng = np.random.default_rng(3)
    n = 200_000
    ev = random_events(rng, n, 10_000)
    out = compress_clip(ev, config(steps=1, window_us=10_000, mode="count"), t0_us=0)
    assert out.sum() == n
    expected = np.zeros((2, 3, 4))
    np.add.at(expected, (ev["polarity"], ev["y"], ev["x"]), 1)
    assert (out[0] == expected).all()


# -- the step grid ---------------------------------------------------------------


def test_clip_grid_spans_first_to_last_event():
    ev = events_of([(1000, 0, 0, 0), (1001, 0, 0, 0), (1398, 0, 0, 0)])
    grid = clip_grid(ev, config(steps=4))
    assert grid == StepGrid(1000, 100, 4)  # ceil(399 / 4) = 100: the last event is inside
    out = compress_clip(ev, config(steps=4, mode="count"))
    assert out.sum() == 3 and out[3].sum() == 1


def test_clip_grid_window_defaults():
    ev = events_of([(50, 0, 0, 0)])
    assert clip_grid(ev, config(), t0_us=0) == StepGrid(0, 100, 2)
    assert clip_grid(ev, config(), window_us=400) == StepGrid(50, 200, 2)
    with pytest.raises(ValueError, match="multiple of steps"):
        clip_grid(ev, config(steps=3), window_us=200)


def test_empty_clip_gives_zeros():
    out = compress_clip(events_of([]), config())
    assert out.shape == (2, 2, 3, 4) and not out.any()


def test_compress_steps_continues_from_a_carried_current():
    ev = events_of([(10, 0, 0, 0), (150, 0, 0, 0), (260, 0, 0, 0)])
    cfg = config()
    whole = compress_steps(ev, cfg, StepGrid(0, 100, 3))
    current = np.zeros(cfg.output_shape, dtype=np.float32)
    first = compress_steps(ev, cfg, StepGrid(0, 100, 2), initial_current=current)
    rest = compress_steps(ev, cfg, StepGrid(200, 100, 1), initial_current=current)
    np.testing.assert_allclose(np.concatenate([first, rest]), whole, rtol=1e-6)


# -- errors and config -------------------------------------------------------------


def test_event_outside_the_input_sensor_names_its_index():
    ev = events_of([(0, 0, 0, 0), (1, 4, 0, 0)])
    with pytest.raises(EventValidationError, match=r"event 1: x=4, y=0 is outside the 4x3"):
        compress_clip(ev, config(), t0_us=0)
    with pytest.raises(EventValidationError, match="event 0"):
        compress_clip(events_of([(0, -1, 0, 0)]), config(), t0_us=0)


def test_bad_polarity_names_its_index():
    with pytest.raises(EventValidationError, match="event 2: polarity 3"):
        ev = events_of([(0, 0, 0, 0), (1, 0, 0, 1), (2, 0, 0, 3)])
        compress_clip(ev, config(), t0_us=0)


@pytest.mark.parametrize("t0_us", [0, 200, 1000])
def test_unsorted_events_inside_or_outside_the_window_are_refused(t0_us):
    ev = events_of([(0, 0, 0, 0), (50, 0, 0, 0), (20, 0, 0, 0), (300, 0, 0, 0), (310, 0, 0, 0)])
    with pytest.raises(EventValidationError, match="event 2: timestamp 20 µs goes backwards"):
        compress_clip(ev, config(), t0_us=t0_us)


def test_unsorted_event_deep_in_a_large_clip_is_named():
    rng = np.random.default_rng(4)
    ev = random_events(rng, 300_000, 100_000)
    ev["timestamp"][200_001] = ev["timestamp"][200_000] - 1
    with pytest.raises(EventValidationError, match="event 200001: "):
        compress_clip(ev, config(mode="count"))


def test_unsorted_clip_is_refused():
    with pytest.raises(EventValidationError, match="event 2: timestamp 5 µs goes backwards"):
        compress_clip(events_of([(0, 0, 0, 0), (10, 0, 0, 0), (5, 0, 0, 0)]), config())


@pytest.mark.parametrize(
    "changes",
    [
        dict(steps=0),
        dict(spatial_factor=0),
        dict(spatial_factor=5),
        dict(window_us=1),
        dict(tau_s_us=0.0),
        dict(mode="frames"),
    ],
)
def test_config_refuses_nonsense(changes):
    with pytest.raises(ValueError, match="CompressionConfig"):
        config(**changes)


def test_config_keeps_its_fields_and_properties():
    cfg = CompressionConfig(128, 128, spatial_factor=2, steps=4, window_us=1_000_000)
    assert cfg.output_shape == (2, 64, 64)
    assert cfg.step_us == 250_000 and cfg.tau_us() == 250_000.0
    assert cfg.input_sensor == SensorSize(128, 128)


# -- real recordings ---------------------------------------------------------------


def test_real_nmnist_sample_compresses_to_declared_shape():
    recording = read_nmnist(shared_path("recordings/nmnist_single.bin"))
    ev = recording.events
    assert len(ev) == 4325
    assert recording.sensor == SensorSize(34, 34)
    for mode in ("stc", "count"):
        cfg = CompressionConfig(34, 34, steps=4, window_us=300_000, mode=mode)
        out = compress_clip(ev, cfg)
        assert tuple(out.shape) == (4, 2, 34, 34)
        assert np.isfinite(out).all() and out.sum() > 0
        if mode == "count":
            assert out.sum() == len(ev)
    pooled = compress_clip(ev, CompressionConfig(34, 34, spatial_factor=2, steps=8))
    assert tuple(pooled.shape) == (8, 2, 17, 17)


def test_real_dvxplorer_recording_adapted_and_compressed():
    dv = pytest.importorskip("dv_processing")
    recording = dv.io.MonoCameraRecording(str(shared_path("recordings/dvxplorer_320x240.aedat4")))
    batches = []
    while (batch := recording.getNextEventBatch()) is not None:
        batches.append(batch.numpy())
    ev = np.concatenate(batches)
    assert len(ev) == 111_954
    resolution = recording.getEventResolution()
    adapter = SensorAdapter(SensorSize(*resolution), SensorSize(128, 128))
    adapted = adapter.adapt(ev)
    assert 0 < len(adapted) <= len(ev)
    cfg = CompressionConfig(128, 128, spatial_factor=2, steps=4, window_us=400_000, mode="count")
    out = compress_clip(adapted, cfg)
    assert tuple(out.shape) == (4, 2, 64, 64)
    assert out.sum() == len(adapted)
    stc = compress_clip(adapted, CompressionConfig(128, 128, spatial_factor=2, steps=4))
    assert tuple(stc.shape) == (4, 2, 64, 64) and np.isfinite(stc).all()


def test_strided_and_foreign_layout_inputs_give_the_same_result():
    rng = np.random.default_rng(6)
    ev = random_events(rng, 2000, 1000)
    cfg = config(steps=4, window_us=1000)
    every_other = ev[::2]
    expected = compress_clip(every_other.copy(), cfg, t0_us=0)
    np.testing.assert_array_equal(compress_clip(every_other, cfg, t0_us=0), expected)
    layout = [("x", "<u2"), ("y", "<u2"), ("polarity", "u1"), ("timestamp", "<u8")]
    foreign = np.zeros(len(every_other), dtype=layout)
    for name in ("timestamp", "x", "y", "polarity"):
        foreign[name] = every_other[name]
    np.testing.assert_array_equal(compress_clip(foreign, cfg, t0_us=0), expected)
