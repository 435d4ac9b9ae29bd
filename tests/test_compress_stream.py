"""Streaming compression: equals offline on any chunking, gaps, late events, reset."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.compress import (
    CompressionConfig,
    StepGrid,
    StreamingCompressor,
    compress_steps,
)
from core.events import EventValidationError, make_events

STEP_US = 100


def config(**changes) -> CompressionConfig:
    fields = dict(input_width=5, input_height=4, steps=4, window_us=4 * STEP_US)
    fields.update(changes)
    return CompressionConfig(**fields)


def run_stream(compressor: StreamingCompressor, chunks, flush=True):
    ends, values = [], []
    for chunk in chunks:
        steps = compressor.push(chunk)
        assert steps.values.dtype == np.float32
        ends += steps.end_us.tolist()
        values += list(steps.values)
    if flush:
        steps = compressor.flush()
        ends += steps.end_us.tolist()
        values += list(steps.values)
    shape = (0, *compressor.config.output_shape)
    return np.array(ends, dtype=np.int64), (np.stack(values) if values else np.empty(shape))


def offline(events, cfg, start_us, n_steps):
    return compress_steps(events, cfg, StepGrid(start_us, cfg.step_us, n_steps))


@st.composite
def stream_case(draw):
    n = draw(st.integers(0, 80))
    # Gaps: mostly within a step, sometimes several empty steps, sometimes exactly on a boundary.
    gaps = draw(
        st.lists(
            st.one_of(st.integers(0, 30), st.integers(90, 700), st.sampled_from([0, 100, 200])),
            min_size=n,
            max_size=n,
        )
    )
    t0 = draw(st.integers(-1000, 1000))
    t = t0 + np.cumsum(np.array(gaps, dtype=np.int64))
    x = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    p = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    events = make_events(t, x, y, p)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=12)))  # repeats make empty chunks
    bounds = [0, *cuts, n]
    chunks = [events[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    mode = draw(st.sampled_from(["stc", "count"]))
    tau = draw(st.sampled_from([None, 37.0, 450.0]))
    factor = draw(st.sampled_from([1, 2]))
    start_before = draw(st.sampled_from([None, 0, 250]))
    return events, chunks, mode, tau, factor, start_before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_case())
def test_streaming_equals_offline_for_any_chunking(case):
    events, chunks, mode, tau, factor, start_before = case
    cfg = config(mode=mode, tau_s_us=tau, spatial_factor=factor)
    start = None
    if start_before is not None and len(events):
        start = int(events["timestamp"][0]) - start_before
    compressor = StreamingCompressor(cfg, start_us=start)
    ends, values = run_stream(compressor, chunks)
    if len(events) == 0:
        assert len(ends) == (0 if start is None else 1)
        return
    start = int(events["timestamp"][0]) if start is None else start
    assert compressor.start_us == start
    # Every step from the start to the one holding the last event, each exactly once.
    n_steps = (int(events["timestamp"][-1]) - start) // STEP_US + 1
    assert ends.tolist() == [start + STEP_US * (k + 1) for k in range(n_steps)]
    expected = offline(events, cfg, start, n_steps)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    assert compressor.stats.events_in == len(events)
    assert compressor.stats.events_dropped_late == 0
    assert compressor.stats.steps_emitted == n_steps


def test_one_chunk_spanning_several_hops_and_a_gap():
    cfg = config()
    ev = make_events([0, 50, 450], [0, 1, 2], [0, 0, 0], [0, 0, 1])
    compressor = StreamingCompressor(cfg)
    steps = compressor.push(ev)
    assert steps.end_us.tolist() == [100, 200, 300, 400]
    w = math.exp(-1) + math.exp(-0.5)
    cur = [v[0, 0, 0] + v[0, 0, 1] for _, v in steps]
    np.testing.assert_allclose(cur, [w * math.exp(-k) for k in range(4)], rtol=1e-6)
    # The event at 450 is in the open step; nothing of it is emitted yet.
    assert all(v[1].sum() == 0 for _, v in steps)
    last = compressor.flush()
    assert last.end_us.tolist() == [500]
    assert last.values[0, 1, 0, 2] == pytest.approx(math.exp(-0.5), rel=1e-6)


def test_step_is_emitted_only_once_its_end_is_reached():
    compressor = StreamingCompressor(config(), start_us=0)
    assert len(compressor.push(make_events([10, 99], [0, 0], [0, 0], [0, 0]))) == 0
    steps = compressor.push(make_events([100], [0], [0], [0]))  # exactly the step's end
    assert steps.end_us.tolist() == [100]
    assert steps.values[0, 0, 0, 0] == pytest.approx(math.exp(-0.9) + math.exp(-0.01), rel=1e-6)


def test_advance_to_emits_decaying_steps_without_events():
    compressor = StreamingCompressor(config(), start_us=0)
    compressor.push(make_events([50], [0], [0], [0]))
    steps = compressor.advance_to(350)
    assert steps.end_us.tolist() == [100, 200, 300]
    np.testing.assert_allclose(
        steps.values[:, 0, 0, 0], [math.exp(-0.5 - k) for k in range(3)], rtol=1e-6
    )
    # Time has passed 350: an event before it is late.
    assert len(compressor.push(make_events([340], [0], [0], [0]))) == 0
    assert compressor.stats.events_dropped_late == 1


def test_late_and_backwards_events_are_counted_and_dropped():
    cfg = config(mode="count")
    compressor = StreamingCompressor(cfg)
    chunks = [
        make_events([100, 120, 110, 130], [0, 1, 2, 3], [0] * 4, [0] * 4),
        make_events([125, 250, 240, 260], [4, 0, 1, 2], [1] * 4, [0] * 4),
    ]
    ends, values = run_stream(compressor, chunks)
    assert compressor.stats.events_dropped_late == 3  # 110 (< 120), 125 (< 130), 240 (< 250)
    assert compressor.stats.events_in == 8
    kept = make_events([100, 120, 130, 250, 260], [0, 1, 3, 0, 2], [0, 0, 0, 1, 1], [0] * 5)
    assert ends.tolist() == [200, 300]
    np.testing.assert_array_equal(values, offline(kept, cfg, 100, 2))
    assert values.sum() == 5


def test_late_events_never_crash_and_match_offline_on_the_kept_events():
    rng = np.random.default_rng(5)
    n = 3000
    t = np.sort(rng.integers(0, 20_000, n))
    jitter = rng.random(n) < 0.1
    t[jitter] -= rng.integers(1, 500, jitter.sum())  # some go backwards
    ev = make_events(t, rng.integers(0, 5, n), rng.integers(0, 4, n), rng.integers(0, 2, n))
    cfg = config()
    compressor = StreamingCompressor(cfg)
    cuts = np.sort(rng.integers(0, n, 40))
    chunks = np.split(ev, cuts)
    ends, values = run_stream(compressor, chunks)
    running_max = np.maximum.accumulate(t)
    keep = np.ones(n, dtype=bool)
    keep[1:] = t[1:] >= running_max[:-1]
    assert compressor.stats.events_dropped_late == n - keep.sum() > 0
    expected = offline(ev[keep], cfg, int(t[0]), len(ends))
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)


def test_events_before_an_explicit_start_are_late():
    compressor = StreamingCompressor(config(), start_us=1000)
    assert len(compressor.push(make_events([900, 1000], [0, 0], [0, 0], [0, 0]))) == 0
    assert compressor.stats.events_dropped_late == 1
    assert compressor.open_step_start_us == 1000


def test_long_gap_skips_empty_steps_and_decays_exactly():
    cfg = config(tau_s_us=1000.0)
    compressor = StreamingCompressor(cfg, max_gap_steps=5)
    ev = make_events([0, 2050], [0, 0], [0, 0], [0, 0])
    steps = compressor.push(ev)
    # Step 0 is emitted, the 19 empty steps 1..19 are skipped, step 20 stays open.
    assert steps.end_us.tolist() == [100]
    assert compressor.stats.steps_skipped == 19
    last = compressor.flush()
    assert last.end_us.tolist() == [2100]
    expected = offline(ev, cfg, 0, 21)[-1]
    np.testing.assert_allclose(last.values[0], expected, rtol=1e-5)


def test_short_gap_emits_every_step():
    compressor = StreamingCompressor(config(), max_gap_steps=5)
    steps = compressor.push(make_events([0, 650], [0, 0], [0, 0], [0, 0]))
    assert steps.end_us.tolist() == [100, 200, 300, 400, 500, 600]
    assert compressor.stats.steps_skipped == 0


def test_huge_timestamp_jump_stays_bounded():
    compressor = StreamingCompressor(config())
    steps = compressor.push(make_events([0, 10**15, 10**15 + 10], [0, 1, 2], [0, 0, 0], [1, 1, 1]))
    assert len(steps) == 1  # step 0 only; the jump is skipped
    assert compressor.stats.steps_skipped == 10**13 - 1
    assert compressor.flush().values[0, 1, 0, 1] > 0


def test_reset_starts_a_new_grid_and_keeps_stats():
    compressor = StreamingCompressor(config())
    compressor.push(make_events([0, 150], [0, 0], [0, 0], [0, 0]))
    compressor.reset()
    assert compressor.start_us is None and not compressor.current.any()
    steps = compressor.push(make_events([10, 130], [1, 1], [0, 0], [0, 0]))
    assert compressor.start_us == 10
    assert steps.end_us.tolist() == [110]
    assert steps.values[0, 0, 0, 0] == 0  # nothing carried over from before the reset
    assert compressor.stats.resets == 1 and compressor.stats.events_in == 4


def test_out_of_sensor_chunk_raises_before_changing_state():
    compressor = StreamingCompressor(config())
    compressor.push(make_events([0], [0], [0], [0]))
    with pytest.raises(EventValidationError, match="event 1: x=5"):
        compressor.push(make_events([150, 160], [0, 5], [0, 0], [0, 0]))
    assert compressor.open_step_start_us == 0
    assert compressor.push(make_events([150], [0], [0], [0])).end_us.tolist() == [100]


def test_steps_as_array_and_pairs():
    compressor = StreamingCompressor(config())
    steps = compressor.push(make_events([0, 250], [0, 0], [0, 0], [1, 1]))
    assert steps.values.shape == (2, 2, 4, 5) and steps.values.dtype == np.float32
    pairs = list(steps)
    assert [end for end, _ in pairs] == [100, 200] and pairs[1][1].shape == (2, 4, 5)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_case(), st.sampled_from([0, 1, 3]))
def test_skipped_gaps_leave_the_emitted_steps_equal_to_offline(case, max_gap_steps):
    events, chunks, mode, tau, factor, _ = case
    cfg = config(mode=mode, tau_s_us=tau, spatial_factor=factor)
    compressor = StreamingCompressor(cfg, max_gap_steps=max_gap_steps)
    ends, values = run_stream(compressor, chunks)
    if len(events) == 0:
        assert len(ends) == 0
        return
    start = int(events["timestamp"][0])
    n_steps = (int(events["timestamp"][-1]) - start) // STEP_US + 1
    assert len(ends) + compressor.stats.steps_skipped == n_steps
    assert np.all(np.diff(ends) > 0)
    expected = offline(events, cfg, start, n_steps)
    index = (ends - start) // STEP_US - 1
    np.testing.assert_allclose(values, expected[index], rtol=1e-5, atol=1e-6)
    # Every step that holds an event is emitted.
    holding = np.unique((events["timestamp"] - start) // STEP_US)
    assert set(holding.tolist()) <= set(index.tolist())


def test_advance_to_across_a_long_gap_skips():
    compressor = StreamingCompressor(config(tau_s_us=500.0), start_us=0, max_gap_steps=2)
    compressor.push(make_events([10], [0], [0], [0]))
    steps = compressor.advance_to(10_000)
    assert steps.end_us.tolist() == [100]
    assert compressor.stats.steps_skipped == 99
    later = compressor.push(make_events([10_050, 10_120], [0, 0], [0, 0], [0, 0]))
    assert later.end_us.tolist() == [10_100]
    decayed = math.exp(-(10_100 - 10) / 500.0)
    assert later.values[0, 0, 0, 0] == pytest.approx(decayed + math.exp(-50 / 500.0), rel=1e-5)
