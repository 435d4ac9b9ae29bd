"""Shared test fixtures: where the real data is, and a clean skip where it is not."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from replay.paths import data_root  # noqa: E402


def shared_path(relative: str) -> Path:
    """A path under the shared data folder, or a pytest skip naming what is missing."""
    path = data_root() / relative
    if not path.exists():
        pytest.skip(f"real data not found: {path} (set STCSNN_DATA to the shared data folder)")
    return path


@pytest.fixture
def data_dir() -> Path:
    return shared_path("")


@pytest.fixture
def no_hang():
    """Turn a hang (e.g. a reader looping on a corrupt file) into a failure."""

    def fail(signum, frame):
        raise AssertionError("did not finish within 60 s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
