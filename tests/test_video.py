"""Video files and webcams before the emulated DVS (streamer/video.py) and
`stcsnn convert`, on videos the tests render with OpenCV, through the real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core.events import SensorSize, validate_events
from core.source import SourceEnd, SourceError
from streamer.video import VideoSource, emulate_video, sensor_frame
from tests.pipeline_helpers import ROOT

cv2 = pytest.importorskip("cv2")  # the `test` extra installs it


def render_video(path: Path, *, frames: int = 45, size=(160, 120), direction: int = 1) -> Path:
    """An MJPG .avi at 30 fps: a bright square moving across a dark background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    assert writer.isOpened()
    width, height = size
    for i in range(frames):
        frame = np.full((height, width, 3), 30, np.uint8)
        x = 10 + 2 * i if direction > 0 else width - 40 - 2 * i
        frame[height // 2 - 15 : height // 2 + 15, x : x + 30] = 230
        writer.write(frame)
    writer.release()
    return path


def stcsnn(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stcsnn", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_rendered_video_gives_events_on_the_chosen_sensor_at_its_frame_times(tmp_path):
    video = render_video(tmp_path / "square.avi")
    source = VideoSource(video, sensor=(64, 48))
    items = list(source.items(threading.Event()))
    assert isinstance(items[-1], SourceEnd) and source.frames_played == 45
    events = emulate_video(video, sensor=(64, 48))
    validate_events(events, source.sensor, "test")
    assert len(events) > 0
    # 45 frames at 30 fps: the last frame is at 44/30 s; events are interpolated before it.
    assert 0 < events["timestamp"][-1] <= round(44 / 30 * 1e6)
    chunks = [item for item in items if isinstance(item, np.ndarray)]
    spans = [int(c["timestamp"][-1] // 1000 - c["timestamp"][0] // 1000) for c in chunks]
    assert max(spans) == 0  # 1 ms chunks
    again = emulate_video(video, sensor=(64, 48))
    assert np.array_equal(events, again)  # deterministic under the seed


def test_frames_are_centre_cropped_to_the_sensor_aspect_not_stretched():
    frame = np.zeros((100, 200), np.uint8)
    frame[:, 50:150] = 255  # the central square of a 2:1 frame
    square = sensor_frame(cv2, frame, sensor=SensorSize(10, 10))
    assert square.shape == (10, 10) and square.min() == 255


def test_demo_plays_a_rendered_video_and_predicts(tmp_path):
    video = render_video(tmp_path / "square.avi", frames=60)
    demo = stcsnn("demo", "--video", str(video), "--no-dashboard", "--speed", "max", "--json")
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.strip().splitlines()
    assert len(lines) == 1, demo.stdout
    summary = json.loads(lines[0])
    assert summary["outcome"] == "done" and summary["predictions"] > 0
    assert summary["events"] > 0 and summary["worker"]["model"] == "dvs_sign"


@pytest.mark.parametrize("content", [None, b"not a video " * 100])
def test_a_missing_or_garbage_video_is_one_clear_line(tmp_path, content):
    video = tmp_path / "clip.avi"
    if content is not None:
        video.write_bytes(content)
    for command in (
        ("produce", "--video", str(video)),
        ("demo", "--video", str(video), "--no-dashboard"),
        ("convert", str(video), "--label", "0", "--out", str(tmp_path / "out")),
    ):
        run = stcsnn(*command, timeout=60)
        assert run.returncode != 0
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and str(video) in lines[0], run.stderr
    with pytest.raises(SourceError, match="clip.avi"):
        VideoSource(video)


def test_produce_without_a_webcam_says_so_in_one_line():
    run = stcsnn("produce", "--webcam", "57", timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "stcsnn produce: no webcam 57: OpenCV cannot open camera 57 "
        "(none attached, or another program holds it)"
    ]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    """Two gestures ("left", "right") of three rendered videos each, converted."""
    root = tmp_path_factory.mktemp("gestures")
    videos = []
    for name, direction in (("left", -1), ("right", 1)):
        (root / "videos" / name).mkdir(parents=True)
        for n in range(3):
            path = root / "videos" / name / f"take{n}.avi"
            videos.append(str(render_video(path, frames=40 + 5 * n, direction=direction)))
    out = root / "out"
    run = stcsnn(
        "convert", *videos, "--labels-from-folders", "--out", str(out), "--sensor", "160x120"
    )
    return {"run": run, "out": out}


def test_convert_writes_recordings_that_inspect_reads_back(converted):
    run, out = converted["run"], converted["out"]
    assert run.returncode == 0, run.stderr
    assert "classes by folder name: left -> 0, right -> 1" in run.stdout
    assert "6 video(s) converted" in run.stdout
    for label in ("0", "1"):
        assert sorted(p.name for p in (out / "aedat4" / label).iterdir()) == [
            f"take{n}.aedat4" for n in range(3)
        ]
    recording = json.loads(stcsnn("inspect", "--json", str(out / "aedat4/1/take0.aedat4")).stdout)
    assert recording["events"] > 0 and (recording["width"], recording["height"]) == (160, 120)
    sample = json.loads(stcsnn("inspect", "--json", str(out / "train/0/take2.npz")).stdout)
    assert sample["events"] > 0 and (sample["width"], sample["height"]) == (128, 128)


@pytest.mark.slow
def test_convert_output_trains_for_one_epoch(converted, tmp_path):
    out = converted["out"]
    run = stcsnn(
        "train", "--dataset", "dvs_sign", "--root", str(out), "--epochs", "1",
        "--set", "steps=2", "--set", "channels=[8,8,16,16]", "--set", "hidden=32",
        "--val-count", "2", "--device", "cpu", "--workers", "0",
        "--out", str(tmp_path / "run"),
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "best.pt").is_file() or (tmp_path / "run" / "last.pt").is_file()
