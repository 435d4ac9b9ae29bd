"""The DVS emulator (core/emulator.py) on hand-made frames."""

from __future__ import annotations

import numpy as np
import pytest

from core.emulator import DvsEmulator, DvsParams, lin_log
from core.events import EVENT_DTYPE, concat_events, validate_events

# No mismatch, leak, noise or refractory period: event counts and times are exact.
IDEAL = DvsParams(threshold_sigma=0.0, leak_rate_hz=0.0, refractory_us=0)
WIDTH, HEIGHT = 8, 6


def emulator(params: DvsParams = IDEAL, seed: int = 0) -> DvsEmulator:
    return DvsEmulator(WIDTH, HEIGHT, params, seed)


def flat(value: float) -> np.ndarray:
    return np.full((HEIGHT, WIDTH), value)


def run(em: DvsEmulator, frames, dt_us: int = 10_000) -> np.ndarray:
    """Push frames at 0, dt, 2 dt, ...; all events, validated."""
    chunks = [em.push(frame, i * dt_us) for i, frame in enumerate(frames)]
    events = concat_events(chunks)
    validate_events(events, em.sensor)
    return events


def step_frames(base: float, log_step: float, pixels):
    """A flat frame, then the same with ``pixels`` (y, x) brightened by ``log_step``."""
    after = flat(base)
    for y, x in pixels:
        after[y, x] = base * np.exp(log_step)
    return [flat(base), after]


def test_first_frame_gives_no_events_and_a_constant_scene_none_after():
    em = emulator()
    assert len(em.push(flat(0.5), 0)) == 0
    assert len(em.push(flat(0.5), 10_000)) == 0


def test_step_above_threshold_gives_on_events_at_the_stepped_pixels_and_interpolated_time():
    pixels = [(1, 2), (4, 7)]
    events = run(emulator(), step_frames(0.5, 0.3, pixels), dt_us=30_000)
    assert sorted(zip(events["y"].tolist(), events["x"].tolist(), strict=True)) == pixels
    assert set(events["polarity"].tolist()) == {1}
    # log I rises 0.3 linearly over 30 ms; it crosses 0.2 two thirds of the way.
    assert events["timestamp"].tolist() == [20_000, 20_000]


def test_step_below_threshold_gives_no_events():
    assert len(run(emulator(), step_frames(0.5, 0.19, [(1, 2)]))) == 0


def test_darkening_gives_off_events():
    events = run(emulator(), step_frames(0.5, -0.45, [(3, 3)]), dt_us=45_000)
    assert events["polarity"].tolist() == [0, 0]
    assert events["timestamp"].tolist() == [20_000, 40_000]
    assert (events["x"] == 3).all() and (events["y"] == 3).all()


def test_several_crossings_in_one_interval_are_spread_over_it():
    events = run(emulator(), step_frames(0.1, 0.65, [(0, 0)]), dt_us=10_000)
    expected = [round(10_000 * k * 0.2 / 0.65) for k in (1, 2, 3)]
    assert events["timestamp"].tolist() == expected


def test_reference_carries_over_to_the_next_frame():
    """0.15 then 0.15 more: the second step completes the first threshold."""
    frames = [flat(0.5), flat(0.5 * np.exp(0.15)), flat(0.5 * np.exp(0.3))]
    events = run(emulator(), frames, dt_us=10_000)
    assert len(events) == WIDTH * HEIGHT
    # 0.2 is reached a third of the way from 0.15 to 0.3 in the second interval.
    assert set(events["timestamp"].tolist()) == {10_000 + round(10_000 / 3)}


def test_refractory_period_drops_crossings_too_close_to_the_last_event():
    params = DvsParams(threshold_sigma=0.0, leak_rate_hz=0.0, refractory_us=5_000)
    events = run(emulator(params), step_frames(0.1, 0.65, [(0, 0)]), dt_us=10_000)
    # Crossings at 3077, 6154 and 9231 µs: the second is 3077 µs after the first.
    assert events["timestamp"].tolist() == [3077, 9231]
    assert np.diff(events["timestamp"]).min() >= 5_000


def test_refractory_period_spans_frames():
    params = DvsParams(threshold_sigma=0.0, leak_rate_hz=0.0, refractory_us=15_000)
    frames = [flat(0.5), flat(0.5 * np.exp(0.25)), flat(0.5 * np.exp(0.5))]
    events = run(DvsEmulator(1, 1, params), [f[:1, :1] for f in frames], dt_us=10_000)
    # First event at 8 ms; the next crossing (16 ms) falls inside its refractory period.
    assert events["timestamp"].tolist() == [8_000]


def test_refractory_period_holds_for_signal_and_noise_together():
    params = DvsParams(shot_noise_rate_hz=200.0, refractory_us=3_000, leak_rate_hz=1.0)
    events = run(DvsEmulator(WIDTH, HEIGHT, params, seed=5), moving_bar(100), dt_us=2_000)
    pixel = events["y"].astype(np.int64) * WIDTH + events["x"]
    t = events["timestamp"]
    assert len(events) > 200
    by_pixel = np.lexsort((t, pixel))
    same_pixel = pixel[by_pixel][1:] == pixel[by_pixel][:-1]
    assert (np.diff(t[by_pixel])[same_pixel] >= 3_000).all()
    # Sorted by timestamp, then pixel.
    assert np.array_equal(np.lexsort((pixel, t)), np.arange(len(events)))


def test_event_count_grows_with_contrast():
    counts = []
    for log_step in (0.1, 0.3, 0.5, 0.9, 1.5):
        counts.append(len(run(emulator(), step_frames(0.2, log_step, [(2, 2), (3, 5)]))))
    assert counts[0] == 0
    assert all(a < b for a, b in zip(counts, counts[1:], strict=False))
    assert counts[-1] == 2 * int(1.5 / 0.2)


def moving_bar(n_frames: int, seed_offset: float = 0.0):
    x = np.arange(WIDTH)
    for i in range(n_frames):
        centre = (i * 0.7 + seed_offset) % WIDTH
        row = 0.1 + 0.8 * np.clip(1.5 - np.abs(x - centre), 0.0, 1.0)
        yield np.tile(row, (HEIGHT, 1))


def test_deterministic_under_a_seed_and_the_seed_matters():
    params = DvsParams(shot_noise_rate_hz=50.0, leak_rate_hz=5.0)
    first = run(DvsEmulator(WIDTH, HEIGHT, params, seed=7), moving_bar(30))
    again = run(DvsEmulator(WIDTH, HEIGHT, params, seed=7), moving_bar(30))
    other = run(DvsEmulator(WIDTH, HEIGHT, params, seed=8), moving_bar(30))
    assert len(first) > 50
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_mismatch_gives_each_pixel_its_own_fixed_thresholds():
    em = DvsEmulator(64, 64, DvsParams(threshold_sigma=0.03), seed=3)
    on, off = em.on_thresholds, em.off_thresholds
    assert on.shape == (64, 64)
    assert abs(on.mean() - 0.2) < 0.005 and abs(on.std() - 0.03) < 0.005
    assert abs(off.std() - 0.03) < 0.005 and not np.array_equal(on, off)
    assert np.array_equal(DvsEmulator(64, 64, DvsParams(), seed=3).on_thresholds, on)
    # Noise settings draw from another stream: the fixed pattern stays the same.
    noisy = DvsEmulator(64, 64, DvsParams(shot_noise_rate_hz=1.0), seed=3)
    assert np.array_equal(noisy.on_thresholds, on)


def test_mismatch_makes_pixels_fire_different_counts_on_the_same_ramp():
    params = DvsParams(threshold_sigma=0.05, leak_rate_hz=0.0, refractory_us=0)
    em = DvsEmulator(32, 32, params, seed=1)
    frames = [np.full((32, 32), 0.1 * np.exp(0.035 * i)) for i in range(60)]
    events = run(em, frames)
    per_pixel = np.bincount(events["y"].astype(int) * 32 + events["x"], minlength=32 * 32)
    assert per_pixel.min() < per_pixel.max()
    # A pixel with a lower threshold fires more.
    on = em.on_thresholds.ravel()
    assert per_pixel[np.argmin(on)] > per_pixel[np.argmax(on)]


def test_shot_noise_rate_is_roughly_the_configured_rate():
    params = DvsParams(leak_rate_hz=0.0, shot_noise_rate_hz=20.0, refractory_us=0)
    em = DvsEmulator(32, 32, params, seed=2)
    events = run(em, [np.full((32, 32), 0.5)] * 101)  # 1 s
    expected = 20.0 * 32 * 32
    assert abs(len(events) - expected) < 0.05 * expected
    assert abs(events["polarity"].mean() - 0.5) < 0.03


def test_leak_rate_is_roughly_the_configured_rate_and_all_on():
    params = DvsParams(leak_rate_hz=2.0, refractory_us=0)
    em = DvsEmulator(32, 32, params, seed=4)
    events = run(em, [np.full((32, 32), 0.5)] * 501)  # 5 s
    expected = 2.0 * 5.0 * 32 * 32
    assert abs(len(events) - expected) < 0.1 * expected
    assert set(events["polarity"].tolist()) == {1}
    # Random phases: leak events do not arrive all at once.
    assert len(np.unique(events["timestamp"])) > 100


def test_uint8_and_float_frames_agree():
    frames8 = [np.full((HEIGHT, WIDTH), 60, np.uint8), np.full((HEIGHT, WIDTH), 200, np.uint8)]
    from_uint8 = run(emulator(), frames8)
    from_float = run(emulator(), [f / 255.0 for f in frames8])
    assert len(from_uint8) > 0 and from_uint8.tobytes() == from_float.tobytes()


def test_dark_pixels_stay_finite_through_the_linear_part():
    values = lin_log(np.array([0.0, 1e-9, 10 / 255, 20 / 255, 1.0]), 20 / 255)
    assert np.isfinite(values).all() and (np.diff(values) > 0).all()
    assert values[3] == pytest.approx(np.log(20 / 255)) and values[4] == 0.0
    events = run(emulator(), [flat(0.0), flat(1.0)])
    assert len(events) == WIDTH * HEIGHT * int(-lin_log(np.array(0.0), 20 / 255) / 0.2)


def test_frame_of_another_size_is_refused_with_a_clear_error():
    em = emulator()
    with pytest.raises(ValueError, match=r"shape \(6, 9\).*8x6 sensor.*\(6, 8\)"):
        em.push(np.zeros((6, 9)), 0)
    with pytest.raises(ValueError, match="shape"):
        em.push(np.zeros((HEIGHT, WIDTH, 3), np.uint8), 0)


def test_bad_values_and_times_are_refused():
    em = emulator()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        em.push(flat(1.5), 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        em.push(flat(np.nan), 0)
    em.push(flat(0.5), 1_000)
    with pytest.raises(ValueError, match="increase"):
        em.push(flat(0.5), 1_000)
    with pytest.raises(ValueError, match="on_threshold"):
        DvsParams(on_threshold=0.0)
    with pytest.raises(ValueError, match="refractory_us"):
        DvsParams(refractory_us=-1)


def test_default_parameters_on_a_moving_bar_give_valid_sorted_events():
    em = DvsEmulator(WIDTH, HEIGHT, DvsParams(shot_noise_rate_hz=5.0), seed=0)
    events = run(em, moving_bar(50), dt_us=1_000)
    assert len(events) > 100
    assert {0, 1} == set(events["polarity"].tolist())
    assert events.dtype == EVENT_DTYPE
