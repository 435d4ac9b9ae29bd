"""The dashboard on the real pipeline: `stcsnn produce` (real N-MNIST samples) -> `stcsnn
worker` (the default checkpoint) as processes -> the window in this process, offscreen.

Checks that what the worker really sends (field names, class names, previews,
forwarded labels and end) lands in the panels. Skips without the worker or the data."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = r"(tcp://127\.0\.0\.1:\d+)"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("streamer.worker") is None
    or importlib.util.find_spec("stcsnn.commands.worker") is None,
    reason="the worker (streamer/worker.py) is not in this checkout",
)


class Child:
    """A stcsnn command in its own process; stderr collected for endpoints and errors."""

    def __init__(self, module: str, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found.group(1)
            assert self.process.poll() is None, "\n".join(self.lines[-10:])
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in: " + "\n".join(self.lines[-10:]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_real_pipeline_fills_every_panel(tmp_path):
    from streamer.dashboard import DashboardWindow, application, dispose
    from streamer.dashboard_feed import DashboardFeed
    from streamer.dashboard_state import DashboardState

    root = shared_path("nmnist/Train")
    samples = [sorted((root / str(d)).glob("*.bin"))[0] for d in (1, 7, 3)]
    playlist = tmp_path / "samples.txt"
    playlist.write_text("\n".join(str(p) for p in samples) + "\n")
    children = []
    window = feed = None
    try:
        producer = Child(
            "stcsnn.commands.produce",
            *("--replay", str(playlist), "--speed", "2", "--stream-id", "nmnist"),
            *("--endpoint", "tcp://127.0.0.1:0", "--wait-subscribers", "1", "--lossless"),
        )
        children.append(producer)
        producer_endpoint = producer.wait_for(r"publishing .* on " + ENDPOINT)
        worker = Child(
            "stcsnn.commands.worker",
            *("--connect", producer_endpoint, "--bind", "tcp://127.0.0.1:0"),
            *("--wait-subscribers", "1", "--lossless"),
        )
        children.append(worker)
        worker_endpoint = worker.wait_for(r"predictions on " + ENDPOINT)
        app = application()
        state = DashboardState()
        feed = DashboardFeed([worker_endpoint], state)
        window = DashboardWindow(state, feed, source="3 N-MNIST samples")
        window.show()
        deadline = time.monotonic() + 60
        while state.connection().state != "ended":
            assert time.monotonic() < deadline, window.status_text()
            app.processEvents()
            window.tick()
            time.sleep(0.01)
        window.tick()

        assert state.stream == "nmnist" and not state.malformed
        assert state.predictions > 5
        assert window.images_drawn >= 1 and window.image_item.image.any()
        assert state.class_names == [str(d) for d in range(10)]
        assert len(window.bars.opts["width"]) == 10
        assert [label for _, _, label in state.segments] == [1, 7, 3]
        _, truth = window.truth_curve.getData()
        assert set(truth[np.isfinite(truth)]) == {1.0, 3.0, 7.0}
        assert state.scored > 0  # predictions with ground truth beside them
        assert state.info.get("hop_us") and state.info.get("device")
        assert state.missing_messages == 0
        p50, p99 = state.latency_percentiles_ms()
        assert 0 < p50 <= p99
        assert window.connection_label.text() == "ENDED"
    finally:
        if window is not None:
            dispose(window)
        if feed is not None:
            feed.close()
        for child in reversed(children):
            child.stop()
