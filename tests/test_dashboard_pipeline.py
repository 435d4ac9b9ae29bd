"""The dashboard on the real pipeline: `stcsnn produce` (real N-MNIST samples) -> `stcsnn
worker` (the default checkpoint) as processes -> the window in this process, offscreen.

Checks that what the worker really sends (field names, class names, previews,
forwarded labels and end) lands in the panels. Skips without the data."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from streamer.processes import Supervisor, start_producer, start_worker
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent


def test_real_pipeline_fills_every_panel(tmp_path):
    from streamer.dashboard import DashboardWindow, application, dispose
    from streamer.dashboard_feed import DashboardFeed
    from streamer.dashboard_state import DashboardState

    root = shared_path("nmnist/Train")
    samples = [sorted((root / str(d)).glob("*.bin"))[0] for d in (1, 7, 3)]
    playlist = tmp_path / "samples.txt"
    playlist.write_text("\n".join(str(p) for p in samples) + "\n")
    supervisor = Supervisor()
    window = feed = None
    try:
        producer = supervisor.start(
            start_producer(
                ["--replay", str(playlist), "--speed", "2", "--stream-id", "nmnist"]
                + ["--wait-subscribers", "1", "--lossless"],
                cwd=ROOT,
                timeout_s=60,
            )
        )
        worker = supervisor.start(
            start_worker(
                producer.endpoint,
                ["--wait-subscribers", "1", "--lossless"],
                cwd=ROOT,
                timeout_s=60,
            )
        )
        assert worker.ready["hop_us"] > 0 and worker.ready["device"]
        app = application()
        state = DashboardState()
        feed = DashboardFeed([worker.endpoint], state)
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
        assert [segment.label for segment in state.segments] == [1, 7, 3]
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
        supervisor.stop_all()
