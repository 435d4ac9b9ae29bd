"""The dashboard window, offscreen, fed real wire messages over loopback ZeroMQ: what it
draws (image pixels, bar lengths, timeline points, status and counters), its keys, a
screenshot that is not blank, stalled and malformed streams shown rather than crashed
on, and ``stcsnn dashboard`` as a process with --screenshot/--exit-after.

Windows are closed and deleted in teardown (PySide6 crashes at exit otherwise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from core.class_names import DVS_GESTURE
from core.labels import LabelSegment
from streamer import wire
from streamer.dashboard import DashboardWindow, application, dispose
from streamer.dashboard_feed import SUBSCRIBED_TYPES, DashboardFeed
from streamer.dashboard_state import DashboardState, preview_rgb

ROOT = Path(__file__).resolve().parent.parent
GESTURES = list(DVS_GESTURE)


def preview_message(image: np.ndarray, *, t_end_us: int = 33_000, seq: int = 1) -> wire.Preview:
    return wire.Preview(
        stream="s1",
        session="worker1",
        seq=seq,
        image=image,
        t_start_us=t_end_us - 33_000,
        t_end_us=t_end_us,
        events=int(image.sum(dtype=np.int64)),
    )


def header_frames(message_type: str, fields: dict, seq: int) -> list[bytes]:
    """[topic, header] of a message built by hand (what no encoder would write)."""
    header = {
        "v": wire.PROTOCOL_VERSION,
        "type": message_type,
        "stream": "s1",
        "session": "worker1",
        "seq": seq,
        "sent_ns": time.time_ns(),
        **fields,
    }
    return [wire.topic(message_type, "s1"), json.dumps(header).encode()]


class Publisher:
    """An XPUB on loopback standing in for the worker's prediction socket (real encoder)."""

    def __init__(self):
        self.socket = zmq.Context.instance().socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.seq = 0

    def wait_for_subscriptions(self, count: int, timeout_s: float = 5.0) -> None:
        """Exact join: messages sent before a subscription arrives are lost."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while seen < count:
            assert time.monotonic() < deadline, f"only {seen} of {count} subscriptions"
            if self.socket.poll(50):
                seen += self.socket.recv()[0] == 1

    def send(self, frames: list) -> None:
        self.socket.send_multipart(frames)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def publish(self, message: wire.Message) -> None:
        self.send(wire.encode(message))

    def envelope(self) -> dict:
        return {"stream": "s1", "session": "worker1", "seq": self.next_seq()}

    def stats(self, **fields) -> None:
        fields = {
            "model": "dvsgesture",
            "device": "cpu (1 thread)",
            "hop_us": 250_000,
            "steps": 4,
            "class_names": GESTURES,
            **fields,
        }
        self.publish(wire.Stats(stream="", session="worker1", seq=self.next_seq(), values=fields))

    def prediction(self, t_end_us: int, probs, **extra) -> None:
        probs = np.asarray(probs, np.float64)
        top1 = int(np.argmax(probs))
        fields = {
            "t_end_us": t_end_us,
            "hop_us": 250_000,
            "probs": probs,
            "top1": top1,
            "top1_name": GESTURES[top1],
            "sent_ns": time.time_ns() - 3_000_000,  # the producer sent its events 3 ms ago
            "source_session": "producer1",
            "timings_ms": {"receive": 0.2, "compress": 0.3, "infer": 2.0, "publish": 0.1},
            **extra,
        }
        self.publish(wire.Prediction(**self.envelope(), **fields))

    def preview(self, image: np.ndarray, t_end_us: int = 33_000) -> None:
        self.publish(preview_message(image, t_end_us=t_end_us, seq=self.next_seq()))

    def labels(self, segments) -> None:
        segments = tuple(LabelSegment(c, a, b) for c, a, b in segments)
        self.publish(wire.Labels(**self.envelope(), segments=segments, source_session="producer1"))

    def end(self, reason: str) -> None:
        self.publish(wire.End(**self.envelope(), reason=reason))

    def close(self) -> None:
        self.socket.close(0)


class Running:
    """Publisher + state + feed + window, and a way to let the window catch up."""

    def __init__(self, *, stall_after_s: float = 1.0, receive_hwm: int = 64):
        self.app = application()
        self.publisher = Publisher()
        self.state = DashboardState(stall_after_s=stall_after_s)
        self.feed = DashboardFeed([self.publisher.endpoint], self.state, receive_hwm=receive_hwm)
        self.window = DashboardWindow(
            self.state, self.feed, source="test gestures", endpoints=[self.publisher.endpoint]
        )
        self.window.show()
        self.publisher.wait_for_subscriptions(len(SUBSCRIBED_TYPES))

    def until(self, condition, timeout_s: float = 3.0) -> None:
        """Run frames until ``condition()`` holds (the window's own timer runs too)."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "the dashboard did not get there in time"
            self.app.processEvents()
            self.window.tick()
            time.sleep(0.005)

    def close(self) -> None:
        dispose(self.window)
        self.feed.close()
        self.publisher.close()


@pytest.fixture
def running():
    run = Running()
    yield run
    run.close()


def gesture_image() -> np.ndarray:
    image = np.zeros((2, 64, 64), np.uint8)
    image[1, 10:20, 30:40] = 5  # ON block, top middle
    image[0, 40:50, 5:25] = 1  # OFF block, bottom left, one event per pixel
    return image


def screenshot_pixels(path: Path) -> np.ndarray:
    from pyqtgraph.Qt import QtGui

    image = QtGui.QImage(str(path)).convertToFormat(QtGui.QImage.Format.Format_RGB888)
    assert not image.isNull(), f"cannot read {path}"
    raw = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
    rows = raw.reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()


def test_draws_image_bars_timeline_latency_and_status(running, tmp_path):
    pub, state, window = running.publisher, running.state, running.window
    pub.stats()
    pub.labels([(3, 0, 1_000_000), (8, 1_000_000, 2_000_000)])
    pub.preview(gesture_image())
    probs = np.full(11, 0.02)
    probs[3] = 0.8
    pub.prediction(250_000, probs)
    probs_2 = np.full(11, 0.05)
    probs_2[9] = 0.5
    pub.prediction(1_250_000, probs_2)
    running.until(lambda: state.predictions == 2 and window.images_drawn == 1)

    # Image: ON red, OFF blue, at the pixels sent, with fixed levels.
    drawn = window.image_item.image
    np.testing.assert_array_equal(drawn, preview_rgb(gesture_image()))
    assert drawn.shape == (64, 64, 3)
    red, blue = drawn[15, 35], drawn[45, 10]
    assert red[0] > 200 and red[2] < 80 and blue[2] > 100 and blue[0] < 40
    assert not drawn[30, 60].any()
    # Bars: one per class, lengths = the newest probabilities, top-1 highlighted.
    np.testing.assert_allclose(window.bars.opts["width"], probs_2)
    assert window.bars.opts["brushes"][9] != window.bars.opts["brushes"][0]
    ticks = window.bars_plot.getAxis("left")._tickLevels[0]
    assert [name for _, name in ticks] == GESTURES
    # Timeline: top-1 dots and the ground truth beside them.
    t_s, top1 = window.top1_curve.getData()
    np.testing.assert_allclose(t_s, [0.25, 1.25])
    np.testing.assert_allclose(top1, [3, 9])
    truth_s, truth = window.truth_curve.getData()
    np.testing.assert_allclose(truth_s, [0.0, 1.0, np.nan, 1.0, 2.0, np.nan])
    np.testing.assert_allclose(truth, [3, 3, np.nan, 8, 8, np.nan])
    # Latency (producer sent -> received here, ~3 ms) and the status lines.
    p50, _ = state.latency_percentiles_ms()
    assert 3.0 <= p50 < 100.0
    _, p50_curve = window.p50_curve.getData()
    assert p50_curve[0] == pytest.approx(state.latency_ms[0])  # a point after the first
    status = window.status_text()
    for text in ("model: dvsgesture", "device: cpu (1 thread)", "hop 250 ms", "T 4"):
        assert text in status
    assert window.connection_label.text() == "LIVE"
    counters = window.counters_label.text()
    assert "predictions 2 (hop accuracy 50% of 2 labelled hops)" in counters
    assert "malformed 0" in counters
    assert window.windowTitle() == "stcsnn dashboard: test gestures (stream 's1')"

    path = window.save_screenshot(tmp_path / "dashboard.png")
    pixels = screenshot_pixels(path).astype(np.float64)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    assert pixels.var() > 500, "the screenshot is (nearly) blank"
    reds = (pixels[..., 0] > 200) & (pixels[..., 1] < 120) & (pixels[..., 2] < 100)
    assert reds.sum() > 100, "the ON events are not in the screenshot"


def test_malformed_messages_are_counted_and_shown_and_drawing_goes_on(running):
    pub, state, window = running.publisher, running.state, running.window
    pub.send([b"prediction/s1/", b"{not json"])
    pub.send([b"prediction/s1/", json.dumps({"v": 99, "type": "prediction"}).encode()])
    header = wire.encode(preview_message(gesture_image()))[1]
    pub.send([b"preview/s1/", bytes(header), b"short payload"])
    pub.send([b"stats/"])
    bad = {"t_end_us": 10_000, "hop_us": 250_000, "probs": [0.5, "x"], "top1": 0}
    pub.send(header_frames("prediction", bad, pub.next_seq()))
    pub.prediction(20_000, np.full(11, 1 / 11))
    running.until(lambda: state.predictions == 1)
    assert dict(state.malformed) == {
        "bad_header": 1,
        "bad_version": 1,
        "size_mismatch": 1,
        "short_message": 1,
        "bad_prediction": 1,
    }
    counters = window.counters_label.text()
    assert "malformed 5 (bad_header 1, bad_prediction 1, bad_version 1, " in counters
    assert window.connection_label.text() == "LIVE"
    np.testing.assert_allclose(window.bars.opts["width"], np.full(11, 1 / 11))


def test_stalled_then_ended_stream_is_shown():
    run = Running(stall_after_s=0.3)
    try:
        pub, state, window = run.publisher, run.state, run.window
        pub.prediction(10_000, np.full(11, 1 / 11))
        run.until(lambda: window.connection_label.text() == "LIVE")
        run.until(lambda: window.connection_label.text() == "STALLED", timeout_s=2.0)
        assert "no message for" in window.status_label.text()
        pub.stats()  # the worker is alive, only the stream is quiet
        run.until(lambda: "worker alive" in window.status_label.text())
        assert window.connection_label.text() == "STALLED"
        pub.end("replay done: 3 sample(s)")
        run.until(lambda: window.connection_label.text() == "ENDED")
        assert "replay done: 3 sample(s)" in window.status_label.text()
        assert state.predictions == 1
    finally:
        run.close()


def test_keys_pause_reset_and_quit(running):
    from pyqtgraph.Qt import QtCore, QtTest

    QTest = QtTest.QTest

    pub, state, window = running.publisher, running.state, running.window
    pub.prediction(10_000, np.eye(11)[2] * 0.9 + 0.01)
    running.until(lambda: state.predictions == 1)
    QTest.keyClick(window, QtCore.Qt.Key.Key_Space)
    assert window.paused and window.windowTitle().endswith("[paused]")
    pub.prediction(20_000, np.eye(11)[5] * 0.9 + 0.01)
    running.until(lambda: state.predictions == 2)  # still taken off the socket...
    assert np.argmax(window.bars.opts["width"]) == 2  # ...but not drawn
    assert "PAUSED" in window.counters_label.text()
    QTest.keyClick(window, QtCore.Qt.Key.Key_Space)
    assert not window.paused and np.argmax(window.bars.opts["width"]) == 5
    QTest.keyClick(window, QtCore.Qt.Key.Key_R)
    assert state.predictions == 0 and not state.timeline
    assert not np.any(window.bars.opts["width"])
    timeline_x = window.top1_curve.getData()[0]
    assert timeline_x is None or len(timeline_x) == 0
    assert "predictions 0" in window.counters_label.text()
    QTest.keyClick(window, QtCore.Qt.Key.Key_Q)
    assert not window.isVisible()


def test_takes_only_the_newest_image_and_accounts_for_every_preview():
    run = Running(receive_hwm=4)
    try:
        pub, state, window = run.publisher, run.state, run.window
        sent = 300
        for k in range(sent - 1):
            image = np.zeros((2, 64, 64), np.uint8)
            image[1, k % 64, :] = 3
            pub.preview(image)
        last = gesture_image()
        time.sleep(0.2)
        pub.preview(last)
        run.until(lambda: state.image is not None and np.array_equal(state.image, last))
        window.tick()
        np.testing.assert_array_equal(window.image_item.image, preview_rgb(last))
        received = state.wire_stats.received["preview"]
        # Every preview sent was drawn, replaced before it could be drawn, or lost
        # on the way (a sequence gap); the window drew far fewer than were sent.
        assert received + state.missing_messages == sent
        assert window.images_drawn + state.previews_superseded == received
        assert window.images_drawn < sent / 2
        assert f"previews not drawn {state.previews_superseded}" in window.counters_label.text()
    finally:
        run.close()


def test_dashboard_command_saves_a_screenshot_and_exits_cleanly(tmp_path):
    publisher = Publisher()
    stop = threading.Event()

    def feed():
        publisher.wait_for_subscriptions(len(SUBSCRIBED_TYPES), timeout_s=20)
        publisher.stats()
        for k in range(1, 10_000):
            if stop.wait(0.03):
                return
            publisher.preview(gesture_image(), t_end_us=k * 33_000)
            publisher.prediction(k * 33_000, np.eye(11)[k % 11] * 0.8 + 0.02)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    png = tmp_path / "shot.png"
    code = (
        "import argparse, sys; from stcsnn.commands import dashboard as d; "
        "p = argparse.ArgumentParser(); d.configure(p); sys.exit(d.run(p.parse_args()))"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, "--connect", publisher.endpoint]
            + ["--screenshot", str(png), "--exit-after", "1.5", "--json", "--source", "cli"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=env,
        )
    finally:
        stop.set()
        thread.join(5)
        publisher.close()
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["predictions"] > 5 and summary["frames_drawn"] > 5
    assert summary["screenshot"] == str(png)
    pixels = screenshot_pixels(png)
    assert pixels.astype(float).var() > 500
    height, width, _ = pixels.shape  # the window as drawn: it fits a 1366x768 screen
    assert width <= 1366 and height <= 700, (width, height)
