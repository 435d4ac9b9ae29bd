"""Sensor adaptation rule and the optional dv-processing noise filter."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from core.adapt import SensorAdapter, scale_factor
from core.events import SensorSize, make_events
from streamer.noise_filter import NoiseFilter, to_event_store

TARGET = SensorSize(128, 128)


@pytest.mark.parametrize(
    "source, factor, scaled, offset",
    [
        ((346, 260), 2, (173, 130), (22, 1)),
        ((320, 240), 2, (160, 120), (16, -4)),
        ((640, 480), 4, (160, 120), (16, -4)),
        ((128, 128), 1, (128, 128), (0, 0)),
    ],
)
def test_documented_examples(source, factor, scaled, offset):
    adapter = SensorAdapter(SensorSize(*source), TARGET)
    assert adapter.factor == factor == scale_factor(SensorSize(*source), TARGET)
    assert adapter.scaled == scaled
    assert adapter.offset == offset


def test_nmnist_size_is_the_identity_and_returns_its_input():
    adapter = SensorAdapter(SensorSize(34, 34), SensorSize(34, 34))
    assert adapter.is_identity
    ev = make_events([0, 1], [0, 33], [33, 0], [0, 1])
    assert adapter.adapt(ev) is ev


def every_pixel(sensor: SensorSize) -> np.ndarray:
    ys, xs = np.mgrid[0 : sensor.height, 0 : sensor.width]
    n = xs.size
    return make_events(np.arange(n), xs.ravel(), ys.ravel(), np.arange(n) % 2)


@pytest.mark.parametrize("source", [(346, 260), (320, 240), (640, 480), (128, 128), (200, 90)])
def test_every_source_pixel_maps_by_the_rule(source):
    source = SensorSize(*source)
    adapter = SensorAdapter(source, TARGET)
    ev = every_pixel(source)
    out = adapter.adapt(ev)
    f = adapter.factor
    dx, dy = adapter.offset
    # Brute force per event: scale, shift, keep what lands in the target and in a whole block.
    x = ev["x"] // f - dx
    y = ev["y"] // f - dy
    whole = (ev["x"] // f < source.width // f) & (ev["y"] // f < source.height // f)
    keep = whole & (x >= 0) & (x < 128) & (y >= 0) & (y < 128)
    assert np.array_equal(out["timestamp"], ev["timestamp"][keep])
    assert np.array_equal(out["x"], x[keep]) and np.array_equal(out["y"], y[keep])
    assert np.array_equal(out["polarity"], ev["polarity"][keep])
    # Every target pixel that the scaled sensor covers gets exactly f*f source pixels.
    counts = np.zeros((128, 128), dtype=int)
    np.add.at(counts, (out["y"], out["x"]), 1)
    assert set(np.unique(counts)) <= {0, f * f}


def test_padding_leaves_an_empty_border():
    out = SensorAdapter(SensorSize(320, 240), TARGET).adapt(every_pixel(SensorSize(320, 240)))
    assert out["y"].min() == 4 and out["y"].max() == 123
    assert out["x"].min() == 0 and out["x"].max() == 127


def test_events_outside_the_source_are_dropped():
    adapter = SensorAdapter(SensorSize(346, 260), TARGET)
    ev = make_events([0, 1, 2], [-1, 400, 100], [0, 0, 100], [0, 0, 1])
    out = adapter.adapt(ev)
    assert len(out) == 1 and out["x"][0] == 100 // 2 - 22 and out["y"][0] == 100 // 2 - 1


def test_explicit_factor_and_bad_sizes():
    adapter = SensorAdapter(SensorSize(320, 240), TARGET, factor=1)
    assert adapter.scaled == (320, 240) and adapter.offset == (96, 56)
    with pytest.raises(ValueError, match="no pixels"):
        SensorAdapter(SensorSize(0, 10), TARGET)
    with pytest.raises(ValueError, match="factor 500"):
        SensorAdapter(SensorSize(320, 240), TARGET, factor=500)


def test_noise_filter_keeps_supported_events_and_drops_isolated_ones():
    pytest.importorskip("dv_processing")
    sensor = SensorSize(64, 48)
    # A burst at neighbouring pixels (supported) and lone events far apart in space and time.
    # (Timestamps start late: dv's filter counts a pixel that never fired as firing at t = 0.)
    t = [100_000, 100_010, 100_020, 100_030, 150_000, 190_000]
    x = [10, 11, 10, 11, 40, 5]
    y = [10, 10, 11, 11, 30, 40]
    ev = make_events(t, x, y, [1, 1, 0, 0, 1, 0])
    noise_filter = NoiseFilter(sensor, background_activity_us=2000)
    out = noise_filter.filter(ev)
    assert out["timestamp"].tolist() == [100_010, 100_020, 100_030]


def test_event_store_round_trip():
    pytest.importorskip("dv_processing")
    ev = make_events([5, 6, 9], [1, 2, 3], [4, 5, 6], [0, 1, 1])
    back = to_event_store(ev).numpy()
    assert np.array_equal(back, ev)


def test_noise_filter_on_the_real_dvxplorer_recording():
    dv = pytest.importorskip("dv_processing")
    recording = dv.io.MonoCameraRecording(str(shared_path("recordings/dvxplorer_320x240.aedat4")))
    sensor = SensorSize(*recording.getEventResolution())
    noise_filter = NoiseFilter(sensor)
    store_path_kept = numpy_path_kept = 0
    numpy_filter = NoiseFilter(sensor)
    while (batch := recording.getNextEventBatch()) is not None:
        store_path_kept += len(noise_filter.filter_store(batch))
        numpy_path_kept += len(numpy_filter.filter(batch.numpy()))
    # Both paths run the same filter on the same events.
    assert 0 < store_path_kept == numpy_path_kept < 111_954
