"""The live dashboard: a pyqtgraph window over the worker's predictions and event previews.

Panels: the newest event image (ON red, OFF blue, fixed levels), class
probability bars with class names, a scrolling timeline of the top-1 class
with the ground truth beside it, and the rolling p50/p99 latency; a status
line (source, model, device, hop, T, live/stalled/ended) and a counters line
(events/s, latency, drops, malformed messages, display rate).

Everything shown comes from ``DashboardState`` (streamer/dashboard_state.py),
fed by ``DashboardFeed`` (streamer/dashboard_feed.py); this module only draws
it, ``fps`` times a second, and handles keys: space pauses the drawing (the
feed keeps draining, so nothing backs up upstream), r clears the view, q or
Esc quits. Qt and pyqtgraph are imported here and nowhere else.

PySide6 crashes at interpreter exit while a pyqtgraph window is alive (seen with
PySide6-Essentials on Python 3.11): ``run_dashboard`` and the tests close, delete
and process events before returning.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtWidgets

from streamer.dashboard_feed import DEFAULT_RECEIVE_HWM, DashboardFeed
from streamer.dashboard_state import STALL_AFTER_S, DashboardState, preview_rgb
from streamer.processes import freeze_startup_objects

log = logging.getLogger("stcsnn.dashboard")


def refuse_leaking_pyside() -> None:
    """Refuse a PySide6 that drops references to None it never took.

    PySide6 6.12.0 on Python 3.11 does (1000 ``QLabel.setText`` calls lowered
    ``sys.getrefcount(None)`` by 1000; 6.11.3 and 6.10.3 by 0): once None's
    count (~16,000) runs out the process aborts with "Fatal Python error:
    none_dealloc", a live dashboard within seconds. pyproject.toml excludes
    6.12.0; this probe of 64 void calls catches any other release that leaks."""
    if sys.version_info >= (3, 12):  # None is immortal there
        return
    probe = QtCore.QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        probe.setObjectName("probe")
    if before - sys.getrefcount(None) >= 32:
        import PySide6

        raise RuntimeError(
            f"PySide6 {PySide6.__version__} leaks references to None and would crash the "
            "dashboard within seconds; install another release, e.g. "
            "pip install 'PySide6-Essentials==6.11.3'"
        )


refuse_leaking_pyside()
DEFAULT_FPS = 30
WINDOW_SIZE = (1200, 680)  # fits a 1366x768 screen with its title bar and a panel
FRAME_TIMES_KEPT = 100_000
LATENCY_SPAN_S = 60.0  # wall time shown in the latency plot
NAME_CHARS = 16  # class names on the timeline's axis are cut to this
CONNECTION_COLOURS = {
    "live": "#2e7d32",
    "waiting": "#6d6d6d",
    "stalled": "#c62828",
    "ended": "#455a64",
}
TOP1_BRUSH = (255, 170, 0)
BAR_BRUSH = (90, 140, 200)


def ensure_display() -> str | None:
    """Use Qt's offscreen platform where there is no display (a server, CI, ssh).

    Returns the platform chosen here, or None if the environment already says."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return None
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return "offscreen"
    return None


def _qt_message(mode, context, message: str) -> None:
    """Qt's own warnings through our log, minus the offscreen platform's noise."""
    if "propagateSizeHints" in message:  # every window on the offscreen platform says it
        return
    level = logging.DEBUG if mode == QtCore.QtMsgType.QtDebugMsg else logging.WARNING
    log.log(level, "Qt: %s", message)


def application() -> QtWidgets.QApplication:
    """The process's QApplication (made once)."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        QtCore.qInstallMessageHandler(_qt_message)
        app = QtWidgets.QApplication(["stcsnn dashboard"])
    return app


def _format_rate(events_per_s: float | None) -> str:
    if events_per_s is None or not math.isfinite(events_per_s):
        return "-"
    if events_per_s >= 1e6:
        return f"{events_per_s / 1e6:.2f} M"
    if events_per_s >= 1e3:
        return f"{events_per_s / 1e3:.1f} k"
    return f"{events_per_s:.0f}"


def _finite_or_none(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def _format_ms(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.1f}"


class DashboardWindow(QtWidgets.QMainWindow):
    """The window; ``feed`` may be None when a test drives ``state`` directly."""

    closed = QtCore.Signal()

    def __init__(
        self,
        state: DashboardState,
        feed: DashboardFeed | None = None,
        *,
        fps: float = DEFAULT_FPS,
        source: str = "",
        endpoints: Sequence[str] = (),
    ):
        super().__init__()
        self.state = state
        self.feed = feed
        self.source = source
        self.endpoints = list(endpoints)
        self.paused = False
        self.screenshot_on_close: Path | None = None  # saved just before the window closes
        self.screenshot_saved: Path | None = None
        self.frames_drawn = 0
        self.images_drawn = 0
        self.ticks = 0
        self.frame_times: deque[float] = deque(maxlen=FRAME_TIMES_KEPT)  # frames drawn
        self._drawn = {"prediction": -1, "latency": -1}
        self._names: list[str] = []
        self.resize(*WINDOW_SIZE)

        pg.setConfigOptions(antialias=False, background="w", foreground="k")
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)

        self.image_plot = self.graphics.addPlot(row=0, col=0, title="events (ON red, OFF blue)")
        self.image_plot.hideAxis("left")
        self.image_plot.hideAxis("bottom")
        self.image_plot.setAspectLocked(True)
        self.image_plot.invertY(True)
        self.image_plot.setMouseEnabled(False, False)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_plot.addItem(self.image_item)
        self.image_rgb = np.zeros((1, 1, 3), np.uint8)

        self.bars_plot = self.graphics.addPlot(row=0, col=1, title="class probabilities")
        self.bars_plot.setXRange(0.0, 1.0, padding=0.02)
        self.bars_plot.invertY(True)
        self.bars_plot.setMouseEnabled(False, False)
        self.bars = pg.BarGraphItem(x0=[0], y=[0], height=[0.8], width=[0.0], brush=BAR_BRUSH)
        self.bars_plot.addItem(self.bars)

        self.timeline_plot = self.graphics.addPlot(
            row=1, col=0, title="top-1 (dots) and ground truth (green line)"
        )
        self.timeline_plot.setLabel("bottom", "stream time (s)")  # no SI units: no relabelling
        self.timeline_plot.setMouseEnabled(False, False)
        self.timeline_plot.invertY(True)
        self.truth_curve = pg.PlotDataItem(pen=pg.mkPen((60, 170, 60, 170), width=7))
        self.top1_curve = pg.PlotDataItem(
            pen=None, symbol="o", symbolSize=5, symbolBrush=(200, 60, 20), symbolPen=None
        )
        self.timeline_plot.addItem(self.truth_curve)
        self.timeline_plot.addItem(self.top1_curve)

        self.latency_plot = self.graphics.addPlot(row=1, col=1, title="latency (ms), rolling")
        self.latency_plot.setLabel("bottom", "wall time (s, 0 = now)")
        self.latency_plot.setMouseEnabled(False, False)
        self.latency_plot.addLegend(offset=(5, 5))
        self.p50_curve = self.latency_plot.plot(pen=pg.mkPen((30, 90, 200), width=2), name="p50")
        self.p99_curve = self.latency_plot.plot(pen=pg.mkPen((200, 50, 50), width=2), name="p99")
        self.graphics.ci.layout.setColumnStretchFactor(0, 5)
        self.graphics.ci.layout.setColumnStretchFactor(1, 6)

        self.connection_label = QtWidgets.QLabel()
        self.connection_label.setMinimumWidth(110)
        self.connection_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.status_label = QtWidgets.QLabel()
        self.counters_label = QtWidgets.QLabel()
        for label in (self.status_label, self.counters_label):
            label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
            # Wrapped, and never setting the window's width: the counters line alone
            # is 1,400-1,700 px on one line (a 1366x768 screen cut it off).
            label.setWordWrap(True)
            label.setSizePolicy(
                QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
            )
        status_row = QtWidgets.QHBoxLayout()
        status_row.addWidget(self.connection_label)
        status_row.addWidget(self.status_label, 1)
        central = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.graphics, 1)
        layout.addLayout(status_row)
        layout.addWidget(self.counters_label)
        self.setCentralWidget(central)

        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(max(1, round(1000 / fps)))
        self.timer.timeout.connect(self.tick)
        self.notifier = None
        if feed is not None:
            # Messages are taken (and time-stamped for the latency) as they arrive,
            # not only once per frame.
            self.notifier = QtCore.QSocketNotifier(feed.fd, QtCore.QSocketNotifier.Type.Read, self)
            self.notifier.activated.connect(self._on_readable)
        self.render()
        self.timer.start()

    # -- input ---------------------------------------------------------------------------

    def _on_readable(self, *_args) -> None:
        if self.feed is not None:
            self.feed.drain()

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if not self.handle_key(event.key()):
            super().keyPressEvent(event)

    def handle_key(self, key: int) -> bool:
        """Space: pause/resume drawing; r: reset the view; q/Esc: quit."""
        keys = QtCore.Qt.Key
        if key == keys.Key_Space:
            self.paused = not self.paused
        elif key == keys.Key_R:
            self.state.reset()
            self._drawn = {"prediction": -1, "latency": -1}
            self.image_rgb = np.zeros((1, 1, 3), np.uint8)
            self.image_item.setImage(self.image_rgb, autoLevels=False, levels=(0, 255))
        elif key in (keys.Key_Q, keys.Key_Escape):
            self.close()
        else:
            return False
        self.render()
        return True

    # -- drawing -------------------------------------------------------------------------

    def tick(self) -> None:
        """One frame: take what is pending, draw what changed (unless paused)."""
        self.ticks += 1
        if self.feed is not None:
            self.feed.drain()
        self.render()

    def render(self) -> None:
        if not self.paused:
            drew = self._draw_image()
            drew |= self._draw_prediction()
            drew |= self._draw_latency()
            if drew:
                self.frames_drawn += 1
                self.frame_times.append(time.monotonic())
        self._draw_status()

    def display_fps(self) -> float:
        """Frames that changed something over the last second."""
        since = time.monotonic() - 1.0
        count = 0
        for t in reversed(self.frame_times):
            if t <= since:
                break
            count += 1
        return float(count)

    def frame_timing(self) -> dict:
        """Rate and intervals of the frames drawn, from the first to the last."""
        times = np.fromiter(self.frame_times, np.float64)
        if len(times) < 3:
            return {"frames_per_s": None, "frame_interval_ms_p50": None}
        intervals_ms = np.diff(times) * 1e3
        return {
            "frames_per_s": round((len(times) - 1) / (times[-1] - times[0]), 2),
            "frame_interval_ms_p50": round(float(np.percentile(intervals_ms, 50)), 2),
            "frame_interval_ms_p99": round(float(np.percentile(intervals_ms, 99)), 2),
        }

    def _draw_image(self) -> bool:
        image = self.state.take_image()
        if image is None:
            return False
        self.image_rgb = preview_rgb(image)
        self.images_drawn += 1
        self.image_item.setImage(self.image_rgb, autoLevels=False, levels=(0, 255))
        return True

    def _class_ticks(self, count: int) -> None:
        names = list(self.state.class_names) or [str(i) for i in range(count)]
        if names == self._names:
            return
        self._names = names
        self.bars_plot.getAxis("left").setTicks([[(i, n) for i, n in enumerate(names)]])
        short = [
            (i, n if len(n) <= NAME_CHARS else n[: NAME_CHARS - 1] + "…")
            for i, n in enumerate(names)
        ]
        self.timeline_plot.getAxis("left").setTicks([short])
        self.bars_plot.setYRange(-0.6, len(names) - 0.4, padding=0)
        self.timeline_plot.setYRange(-0.6, len(names) - 0.4, padding=0)

    def _draw_prediction(self) -> bool:
        state = self.state
        if state.prediction_version == self._drawn["prediction"]:
            return False
        self._drawn["prediction"] = state.prediction_version
        probs = state.probabilities
        if probs is None:
            count = len(state.class_names)
            self.bars.setOpts(
                x0=[0] * count, y=list(range(count)), height=[0.8] * count, width=[0.0] * count
            )
            self.top1_curve.setData([], [])
            self.truth_curve.setData([], [])
            if count:
                self._class_ticks(count)
            return True
        self._class_ticks(len(probs))
        brushes = [TOP1_BRUSH if i == state.top1 else BAR_BRUSH for i in range(len(probs))]
        self.bars.setOpts(
            x0=np.zeros(len(probs)),
            y=np.arange(len(probs)),
            height=np.full(len(probs), 0.8),
            width=probs,
            brushes=brushes,
        )
        t_s, top1, _ = state.timeline_arrays()
        self.top1_curve.setData(t_s, top1)
        if len(t_s):
            right_us = state.timeline[-1].t_end_us
            left_us = right_us - state.timeline_span_us
            self.truth_curve.setData(*state.truth_steps(left_us, right_us), connect="finite")
            self.timeline_plot.setXRange(left_us / 1e6, right_us / 1e6, padding=0)
        else:
            self.truth_curve.setData([], [])
        return True

    def _draw_latency(self) -> bool:
        history = self.state.latency_history
        version = len(history) and history[-1][0]
        if version == self._drawn["latency"]:
            return False
        self._drawn["latency"] = version
        if not history:
            self.p50_curve.setData([], [])
            self.p99_curve.setData([], [])
            return True
        points = np.asarray(history, dtype=np.float64)
        now = points[-1, 0]
        keep = points[:, 0] >= now - LATENCY_SPAN_S
        wall_s = points[keep, 0] - now
        self.p50_curve.setData(wall_s, points[keep, 1])
        self.p99_curve.setData(wall_s, points[keep, 2])
        return True

    def title_text(self) -> str:
        stream = self.state.stream
        what = self.source or (f"stream {stream!r}" if stream else "waiting for a stream")
        if self.source and stream:
            what = f"{self.source} (stream {stream!r})"
        title = f"stcsnn dashboard: {what}"
        return title + " [paused]" if self.paused else title

    def status_text(self) -> str:
        info = self.state.info
        hop_us = info.get("hop_us")
        hop = f"{hop_us / 1000:g} ms" if isinstance(hop_us, (int, float)) else "-"
        parts = [
            f"source: {info.get('source') or self.source or self.state.stream or '-'}",
            f"model: {info.get('model', '-')}",
            f"device: {info.get('device', '-')}",
            f"hop {hop}",
            f"T {info.get('T', '-')}",
        ]
        connection = self.state.connection()
        if connection.detail:
            parts.append(connection.detail)
        if self.endpoints:
            parts.append("from " + ", ".join(self.endpoints))
        return " | ".join(parts)

    def counters_text(self) -> str:
        state = self.state
        p50, p99 = state.latency_percentiles_ms()
        worker = state.worker_counters
        malformed = state.malformed
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(malformed.items()))
        accuracy = state.accuracy
        parts = [
            f"events/s {_format_rate(state.rate_per_s())}",
            f"latency p50 {_format_ms(p50)} ms, p99 {_format_ms(p99)} ms",
            f"predictions {state.predictions}"
            + (
                f" (hop accuracy {accuracy:.0%} of {state.scored} labelled hops)"
                if accuracy is not None
                else ""
            ),
            f"dropped: worker {worker.get('dropped_events', 0)} ev, "
            f"{worker.get('steps_skipped', 0)} steps skipped; "
            f"lost on the way here {state.missing_messages} msg; "
            f"previews not drawn {state.previews_superseded}",
            f"malformed {sum(malformed.values())}" + (f" ({reasons})" if reasons else ""),
            f"display {self.display_fps():.0f} fps",
        ]
        if self.paused:
            parts.append("PAUSED (space resumes)")
        return " | ".join(parts)

    def _draw_status(self) -> None:
        connection = self.state.connection()
        if self.connection_label.text() != connection.state.upper():
            self.connection_label.setText(connection.state.upper())
            colour = CONNECTION_COLOURS.get(connection.state, "#6d6d6d")
            self.connection_label.setStyleSheet(  # restyling is costly: only on a change
                f"QLabel {{ background: {colour}; color: white; font-weight: bold; padding: 2px; }}"
            )
        self.status_label.setText(self.status_text())
        self.counters_label.setText(self.counters_text())
        self.setWindowTitle(self.title_text())

    def save_screenshot(self, path: str | Path) -> Path:
        """A PNG of the window as it is drawn now."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path)):
            raise OSError(f"could not write the screenshot {path}")
        return path

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self.screenshot_on_close is not None and self.screenshot_saved is None:
            self.render()
            try:
                self.screenshot_saved = self.save_screenshot(self.screenshot_on_close)
            except OSError as error:  # the window must close anyway
                log.error("%s", error)
                self.screenshot_on_close = None
        self.timer.stop()
        if self.notifier is not None:
            self.notifier.setEnabled(False)
        super().closeEvent(event)
        self.closed.emit()


def dispose(window: QtWidgets.QWidget) -> None:
    """Close and delete a window now (PySide6 crashes at exit on live pyqtgraph windows)."""
    window.close()
    window.deleteLater()
    QtWidgets.QApplication.processEvents()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    QtWidgets.QApplication.processEvents()


def run_dashboard(
    endpoints: Sequence[str],
    *,
    stream: str | None = None,
    source: str = "",
    fps: float = DEFAULT_FPS,
    stall_after_s: float = STALL_AFTER_S,
    receive_hwm: int = DEFAULT_RECEIVE_HWM,
    screenshot: str | Path | None = None,
    exit_after_s: float | None = None,
    on_ready: Callable[[], None] | None = None,
    curve=None,
) -> dict:
    """Show the dashboard until the window is closed (q, Esc, Ctrl-C, SIGTERM) or
    ``exit_after_s`` has passed; save ``screenshot`` (PNG) just before closing.

    Returns a summary: frames drawn, display rate, messages by type, drops,
    the process's CPU time."""
    ensure_display()
    _app = application()  # held for the lifetime of the window
    state = DashboardState(stream, stall_after_s=stall_after_s)
    feed = DashboardFeed(endpoints, state, stream=stream, receive_hwm=receive_hwm, curve=curve)
    window = DashboardWindow(state, feed, fps=fps, source=source, endpoints=endpoints)
    freeze_startup_objects()  # Qt, pyqtgraph and the window: no full collection walks them
    started_s = time.monotonic()
    cpu_started = time.process_time()
    window.screenshot_on_close = Path(screenshot) if screenshot is not None else None

    def finish(*_args) -> None:
        window.close()

    previous = {s: signal.signal(s, finish) for s in (signal.SIGINT, signal.SIGTERM)}
    if exit_after_s is not None:
        QtCore.QTimer.singleShot(max(0, round(exit_after_s * 1000)), finish)
    loop = QtCore.QEventLoop()
    window.closed.connect(loop.quit)
    window.show()
    if on_ready is not None:
        on_ready()
    try:
        loop.exec()  # Python signal handlers run between the frame timer's ticks
        wall_s = time.monotonic() - started_s
        summary = {
            "wall_s": round(wall_s, 3),
            "cpu_s": round(time.process_time() - cpu_started, 3),
            "frames_drawn": window.frames_drawn,
            "ticks": window.ticks,
            **window.frame_timing(),
            "messages": feed.messages,
            "received": dict(state.wire_stats.received),
            "malformed": dict(state.malformed),
            "missing_messages": state.missing_messages,
            "previews_superseded": state.previews_superseded,
            "predictions": state.predictions,
            "latency_ms_p50": _finite_or_none(state.latency_percentiles_ms()[0]),
            "latency_ms_p99": _finite_or_none(state.latency_percentiles_ms()[1]),
            "screenshot": str(window.screenshot_saved) if window.screenshot_saved else None,
        }
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        dispose(window)
        feed.close()
    return summary
