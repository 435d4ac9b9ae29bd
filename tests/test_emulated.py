"""The built-in digit scene (streamer/emulated.py): labelled streams from the real
emulator, and `stcsnn demo --emulate digits` through the real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from core.events import validate_events
from core.source import Labels, SourceEnd
from streamer.emulated import (
    BOX_PX,
    EMULATED_DIGITS_SENSOR,
    SAMPLE_US,
    EmulatedDigitsSource,
    digit_image,
    place,
    saccade_offset,
)
from tests.pipeline_helpers import ROOT


def _items(**options) -> list:
    return list(EmulatedDigitsSource(**options).items(threading.Event()))


def _events(items) -> np.ndarray:
    return np.concatenate([item for item in items if isinstance(item, np.ndarray)])


def test_each_digit_is_labelled_before_its_events_and_its_events_lie_in_its_span():
    items = _items(samples=12, seed=3)
    assert isinstance(items[-1], SourceEnd)
    labels = [item for item in items if isinstance(item, Labels)]
    assert len(labels) == 12 and all(len(item.segments) == 1 for item in labels)
    segments = [item.segments[0] for item in labels]
    assert sorted(s.label for s in segments[:10]) == list(range(10))  # a balanced block
    for before, after in zip(segments, segments[1:], strict=False):
        assert before.end_us == after.start_us  # back to back
    current = None
    for item in items:
        if isinstance(item, Labels):
            current = item.segments[0]
        elif isinstance(item, np.ndarray):
            assert current is not None  # no events before their label
            validate_events(item, EMULATED_DIGITS_SENSOR)
            assert current.start_us <= item["timestamp"].min()
            assert item["timestamp"].max() < current.end_us
            assert len(set(item["timestamp"] // 1000)) == 1  # 1 ms chunks
    assert all(s.duration_us == SAMPLE_US + 1 for s in segments)
    events = _events(items)
    assert events["x"].max() < 34 and events["y"].max() < 34
    assert 1_000 < len(events) / 12 < 20_000  # of the order of a real N-MNIST sample


def test_the_scene_is_deterministic_under_its_seed_and_fonts_differ():
    first, again = _events(_items(samples=3, seed=1)), _events(_items(samples=3, seed=1))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, _events(_items(samples=3, seed=2)))
    serif = _events(_items(samples=3, seed=1, fonts=("DejaVuSerif",)))
    assert not np.array_equal(first, serif)
    sans, mono = digit_image(4, "DejaVuSans"), digit_image(4, "DejaVuSansMono")
    assert sans.shape == (BOX_PX, BOX_PX) and not np.allclose(sans, mono)


def test_digits_are_sized_like_mnist_and_move_smoothly_along_the_triangle():
    image = digit_image(0, "DejaVuSans")
    rows = np.flatnonzero(image.max(axis=1) > 0.1)
    assert 19 <= rows[-1] - rows[0] + 1 <= 21  # 20 px tall in a 28x28 box
    assert saccade_offset(0) == saccade_offset(SAMPLE_US) == (0.0, 0.0)  # back home
    # A tenth of a pixel moves intensity gradually, not by whole pixels.
    a = place(image, EMULATED_DIGITS_SENSOR, 3.0, 3.0)
    b = place(image, EMULATED_DIGITS_SENSOR, 3.1, 3.0)
    assert 0 < np.abs(b - a).max() < 0.5
    assert np.isclose(a.sum(), image.sum())  # nothing lost inside the sensor


def test_an_unknown_font_is_refused_before_anything_plays():
    with pytest.raises(ValueError, match="no font 'Comic'"):
        EmulatedDigitsSource(samples=1, fonts=("Comic",))


def test_demo_emulate_digits_prints_a_labelled_summary_with_streaming_accuracy():
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "stcsnn",
            "demo",
            "--emulate",
            "digits",
            "--limit",
            "10",
            "--font",
            "DejaVuSerif",
            "--no-dashboard",
            "--speed",
            "max",
            "--json",
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.strip().splitlines()
    assert len(lines) == 1, demo.stdout
    summary = json.loads(lines[0])
    assert summary["outcome"] == "done" and summary["lossless"]
    assert summary["segments"] == 10 and summary["segments_without_prediction"] == 0
    assert isinstance(summary["streaming_accuracy"], float)
    assert 0.0 <= summary["streaming_accuracy"] <= 1.0
    assert summary["worker"]["model"] == "nmnist"  # the 34x34 sensor's checkpoint
    assert "emulated digits" in summary["source"]
