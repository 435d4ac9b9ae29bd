"""Video files and webcams before an emulated DVS (``core/emulator.py``), via OpenCV.

``VideoSource`` reads a video file's frames, ``WebcamSource`` a webcam's (OpenCV's
``VideoCapture``; ``pip install 'stcsnn[video]'`` installs ``opencv-python-headless``).
Each frame is converted to grey, centre-cropped to the sensor's aspect ratio (no
stretching), resized to the chosen sensor (default 128x128, ``INTER_AREA``) and pushed
into a ``DvsEmulator``; the events go out in 1 ms chunks (``TimeChunker``), like every
other source. The emulator interpolates events in time between frames, so a 30 fps
video still gives events spread over each 33 ms.

Times: a file's frames are stamped with the video's own timestamps
(``CAP_PROP_POS_MSEC``: phone videos often have a variable frame rate), falling back
to the previous frame plus one frame period (``1 / CAP_PROP_FPS``) where a container
gives none or a non-increasing one. A webcam's frames are stamped with the wall clock
when they are read. Videos carry no labels: the sources publish none.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.emulator import DvsEmulator, DvsParams
from core.events import SensorSize, concat_events, empty_events
from core.source import (
    DEFAULT_CHUNK_US,
    DEFAULT_MAX_CHUNK_EVENTS,
    SourceEnd,
    SourceError,
    SourceItem,
    TimeChunker,
)

DEFAULT_VIDEO_SENSOR = SensorSize(128, 128)
FALLBACK_FPS = 30.0  # when a container does not say its frame rate
INSTALL_HINT = "pip install 'stcsnn[video]'"


def import_cv2():
    """OpenCV, or a SourceError that says how to install it."""
    # OpenCV logs its backends' failed attempts as warnings on stderr; our own error
    # says what went wrong in one line.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    try:
        import cv2
    except ImportError as error:
        raise SourceError(
            f"video and webcam sources need OpenCV, which is not installed ({error}): "
            f"{INSTALL_HINT}"
        ) from None
    return cv2


def sensor_frame(cv2, frame: np.ndarray, sensor: SensorSize) -> np.ndarray:
    """A BGR (or grey) frame as a uint8 grey ``sensor``-sized frame: centre-cropped to
    the sensor's aspect ratio first, so that nothing is stretched."""
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    height, width = grey.shape
    # The largest centred window with the sensor's aspect ratio.
    crop_w = min(width, round(height * sensor.width / sensor.height))
    crop_h = min(height, round(width * sensor.height / sensor.width))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    cropped = grey[top : top + crop_h, left : left + crop_w]
    return cv2.resize(cropped, (sensor.width, sensor.height), interpolation=cv2.INTER_AREA)


class _EmulatedFrames:
    """Frames -> emulator -> 1 ms chunks; what the file and webcam sources share."""

    def __init__(self, sensor, params, seed, chunk_us, max_chunk_events):
        self.emulator = DvsEmulator(*sensor, params=params, seed=seed)
        self.chunker = TimeChunker(chunk_us, 0, max_chunk_events)

    def push(self, frame: np.ndarray, t_us: int) -> list[np.ndarray]:
        return self.chunker.push(self.emulator.push(frame, t_us))

    def flush(self) -> list[np.ndarray]:
        return self.chunker.flush()


class VideoSource:
    """A video file before an emulated DVS (module docstring). ``loop`` plays it again
    and again, the time running on (the jump from the last frame to the first makes
    events like any scene cut)."""

    live = False

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        sensor: SensorSize = DEFAULT_VIDEO_SENSOR,
        params: DvsParams | None = None,
        seed: int = 0,
        loop: bool = False,
        chunk_us: int = DEFAULT_CHUNK_US,
        max_chunk_events: int = DEFAULT_MAX_CHUNK_EVENTS,
    ):
        self.cv2 = import_cv2()
        self.path = Path(path)
        self.sensor = SensorSize(*sensor)
        self.params = params
        self.seed = seed
        self.loop = loop
        self.chunk_us = int(chunk_us)
        self.max_chunk_events = max_chunk_events
        capture = self._open(check_frame=True)  # fails here, before anything plays
        width = int(capture.get(self.cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(self.cv2.CAP_PROP_FRAME_HEIGHT))
        fps = capture.get(self.cv2.CAP_PROP_FPS)
        capture.release()
        self.fps = fps if fps and fps > 0 else FALLBACK_FPS
        self.description = (
            f"video {self.path.name} ({width}x{height}, {self.fps:g} fps) before an "
            f"emulated {self.sensor} DVS" + (", looped" if loop else "")
        )
        self.frames_played = 0

    def _open(self, check_frame: bool = False):
        """An opened capture (whose first frame decodes, with ``check_frame``), or a
        SourceError naming the file."""
        if not self.path.is_file():
            raise SourceError(f"no video file {self.path}")
        capture = self.cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise SourceError(f"OpenCV cannot open {self.path} as a video")
        if check_frame and not capture.read()[0]:
            capture.release()
            raise SourceError(f"OpenCV opened {self.path} but decodes no frame from it")
        return capture

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """(t_us from the video's start, sensor frame) of every frame, in order."""
        capture = self._open()
        period_us = 1e6 / self.fps
        previous_us = None
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                t_us = round(capture.get(self.cv2.CAP_PROP_POS_MSEC) * 1000)
                if previous_us is not None and t_us <= previous_us:
                    t_us = round(previous_us + period_us)  # no usable timestamp
                previous_us = t_us
                yield t_us, sensor_frame(self.cv2, frame, self.sensor)
        finally:
            capture.release()

    def items(self, stop_event: threading.Event) -> Iterator[SourceItem]:
        emulated = _EmulatedFrames(
            self.sensor, self.params, self.seed, self.chunk_us, self.max_chunk_events
        )
        offset_us = 0
        while not stop_event.is_set():
            last_us = None
            for t_us, frame in self.frames():
                if stop_event.is_set():
                    return
                last_us = offset_us + t_us
                yield from emulated.push(frame, last_us)
                self.frames_played += 1
            if not self.loop or last_us is None:
                break
            offset_us = round(last_us + 1e6 / self.fps)
        yield from emulated.flush()
        yield SourceEnd(f"video {self.path.name} done: {self.frames_played} frame(s) played")

    def close(self) -> None:
        pass


def emulate_video(path: str | os.PathLike, **options) -> np.ndarray:
    """All the events of one pass over a video file (``VideoSource``'s options)."""
    source = VideoSource(path, **options)
    chunks = [item for item in source.items(threading.Event()) if isinstance(item, np.ndarray)]
    return concat_events(chunks) if chunks else empty_events()


class WebcamSource:
    """Webcam ``index`` (OpenCV's numbering: 0 is the first) before an emulated DVS, live."""

    live = True

    def __init__(
        self,
        index: int = 0,
        *,
        sensor: SensorSize = DEFAULT_VIDEO_SENSOR,
        params: DvsParams | None = None,
        seed: int = 0,
        chunk_us: int = DEFAULT_CHUNK_US,
        max_chunk_events: int = DEFAULT_MAX_CHUNK_EVENTS,
    ):
        self.cv2 = import_cv2()
        self.index = int(index)
        self.sensor = SensorSize(*sensor)
        self.serial = f"webcam{self.index}"  # the producer's stream id names it
        self.capture = self.cv2.VideoCapture(self.index)
        if not self.capture.isOpened():
            self.capture.release()
            raise SourceError(
                f"no webcam {self.index}: OpenCV cannot open camera {self.index} "
                "(none attached, or another program holds it)"
            )
        self.emulated = _EmulatedFrames(self.sensor, params, seed, chunk_us, max_chunk_events)
        self.description = f"webcam {self.index} before an emulated {self.sensor} DVS"

    def items(self, stop_event: threading.Event) -> Iterator[SourceItem]:
        start_ns = time.monotonic_ns()
        previous_us = -1
        while not stop_event.is_set():
            ok, frame = self.capture.read()  # blocks for at most one frame period
            if not ok:
                yield SourceEnd(f"webcam {self.index} stopped delivering frames")
                return
            t_us = max((time.monotonic_ns() - start_ns) // 1000, previous_us + 1)
            previous_us = t_us
            yield from self.emulated.push(sensor_frame(self.cv2, frame, self.sensor), t_us)

    def close(self) -> None:
        self.capture.release()
