"""Replay: listing files, folders and playlists; one continuous timeline with label
segments; bad files skipped; real N-MNIST samples through the producer to a subscriber."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.events import EVENT_DTYPE, SensorSize, make_events
from core.labels import LabelSegment
from core.source import Labels, SourceEnd
from replay.formats import labels_for, read_recording
from replay.formats.aedat3_writer import write_aedat3
from replay.formats.gesture_labels_writer import write_gesture_labels
from replay.player import ReplaySource, list_recordings, open_replay, read_playlist
from tests.conftest import shared_path
from tests.test_producer import Running, _events_of

NMNIST_SAMPLES = [
    "nmnist/Train/3/00087.bin",
    "nmnist/Train/0/00002.bin",
    "nmnist/Train/7/00016.bin",
]


def _nmnist(relative: str) -> Path:
    return shared_path(relative)


def _items(source, stop=None) -> list:
    return list(source.items(stop or threading.Event()))


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_folders_list_recordings_in_natural_order_and_shuffle_is_seeded(tmp_path):
    _touch(tmp_path, "10/a.bin", "9/b.bin", "2/10.bin", "2/9.bin", "2/notes.txt", ".hidden/x.bin")
    listed = [p.relative_to(tmp_path).as_posix() for p in list_recordings(tmp_path)]
    assert listed == ["2/9.bin", "2/10.bin", "9/b.bin", "10/a.bin"]
    shuffled = list_recordings(tmp_path, shuffle=True, seed=3)
    assert sorted(shuffled) == sorted(list_recordings(tmp_path))
    assert shuffled == list_recordings(tmp_path, shuffle=True, seed=3)
    assert len(list_recordings(tmp_path, shuffle=True, seed=3, limit=2)) == 2
    assert list_recordings(tmp_path, shuffle=True, seed=3, limit=2) == shuffled[:2]


def test_nmnist_samples_under_bs2_or_no_extension_are_listed_and_read(tmp_path):
    real = _nmnist(NMNIST_SAMPLES[0])
    folder = tmp_path / "3"
    folder.mkdir()
    shutil.copy(real, folder / "00087.bs2")
    shutil.copy(real, folder / "00088")  # no extension: known by its records
    (folder / "README").write_text("notes on these samples\n")  # no extension, no recording
    listed = list_recordings(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in listed] == ["3/00087.bs2", "3/00088"]
    expected = read_recording(real).events
    for path in listed:
        np.testing.assert_array_equal(read_recording(path).events, expected)
        assert labels_for(path) == 3


def test_playlists_resolve_relative_paths_and_name_missing_entries(tmp_path):
    _touch(tmp_path, "data/1/a.bin", "data/2/b.bin", "data/3/c.npz")
    playlist = tmp_path / "list.txt"
    playlist.write_text(
        f"# three samples\ndata/3/c.npz\n\n{tmp_path / 'data/1/a.bin'}  # abs\ndata/2\n"
    )
    assert [p.name for p in read_playlist(playlist)] == ["c.npz", "a.bin", "b.bin"]
    assert [p.name for p in list_recordings(playlist)] == ["c.npz", "a.bin", "b.bin"]
    playlist.write_text("data/1/a.bin\ndata/9/gone.bin\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt.*line 2.*gone.bin"):
        list_recordings(playlist)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_recordings(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no files ending in"):
        list_recordings(tmp_path / "empty")


def test_a_text_file_that_names_no_recording_is_neither_recording_nor_playlist(tmp_path):
    """Notes saved as .txt are not read as a playlist of missing files: one line says
    the file is neither, from the library and from `stcsnn produce` / `stcsnn inspect`."""
    notes = tmp_path / "notes.txt"
    notes.write_text("Meeting notes\n\nbuy milk # today\n")
    binary = tmp_path / "data.txt"
    binary.write_bytes(bytes(range(256)))
    for path in (notes, binary):
        with pytest.raises(ValueError, match=f"{path.name}: neither a recording nor a playlist"):
            list_recordings(path)
    expected = {
        "produce": "neither a recording nor a playlist",
        "inspect": "byte 0: unknown event file format",  # inspect reads event files only
    }
    for command, says in expected.items():
        argv = [command, *(["--replay"] if command == "produce" else []), str(notes)]
        done = subprocess.run(
            [sys.executable, "-m", "stcsnn", *argv], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1 and not done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"notes.txt: {says}" in lines[0], done.stderr


def test_samples_play_back_to_back_on_one_timeline_with_their_labels():
    paths = [_nmnist(p) for p in NMNIST_SAMPLES]
    source = ReplaySource(paths, chunk_us=5000, gap_us=1000)
    assert source.sensor == SensorSize(34, 34)
    items = _items(source)
    assert isinstance(items[-1], SourceEnd) and "3 sample(s) played" in items[-1].reason
    cursor = 0
    position = 0
    for path, label in zip(paths, (3, 0, 7), strict=True):
        original = read_recording(path).events
        labels = items[position]
        assert isinstance(labels, Labels) and labels.sample == str(path)
        position += 1
        chunks = []
        while position < len(items) and isinstance(items[position], np.ndarray):
            chunks.append(items[position])
            position += 1
        events = np.concatenate(chunks, dtype=EVENT_DTYPE)
        offset = cursor - int(original["timestamp"][0])
        expected = original.copy()
        expected["timestamp"] += offset
        assert np.array_equal(events, expected)
        end_us = int(expected["timestamp"][-1]) + 1
        assert labels.segments == (LabelSegment(label, cursor, end_us),)
        for chunk in chunks:  # 5 ms of event time per chunk, on the grid from 0
            assert len(set(chunk["timestamp"] // 5000)) == 1
        cursor = end_us + 1000
    assert source.stats.samples_played == 3 and source.stats.samples_failed == 0


def test_loop_continues_the_timeline():
    source = ReplaySource([_nmnist(NMNIST_SAMPLES[1])], loop=True, chunk_us=10_000)
    stop = threading.Event()
    labels = []
    timestamps = []
    for item in source.items(stop):
        if isinstance(item, Labels):
            labels.append(item.segments[0])
            if len(labels) == 3:
                stop.set()
        elif isinstance(item, np.ndarray):
            timestamps.append(item["timestamp"])
    t = np.concatenate(timestamps)
    assert np.all(np.diff(t) >= 0)
    assert labels[1].start_us == labels[0].end_us and labels[2].start_us == labels[1].end_us
    assert labels[1].end_us - labels[1].start_us == labels[0].end_us - labels[0].start_us
    assert source.stats.passes == 3


def test_a_bad_file_in_a_folder_is_logged_counted_and_skipped(tmp_path, caplog):
    good = [_nmnist(p) for p in NMNIST_SAMPLES[:2]]
    for path in good:
        (tmp_path / path.parent.name).mkdir(exist_ok=True)
        shutil.copy(path, tmp_path / path.parent.name / path.name)
    broken = tmp_path / "1" / "00001.bin"
    broken.parent.mkdir()
    broken.write_bytes(good[0].read_bytes()[:13])  # 2.6 N-MNIST events: truncated
    source = open_replay(tmp_path)
    assert [p.name for p in source.paths] == ["00002.bin", "00001.bin", "00087.bin"]
    with caplog.at_level("WARNING", logger="stcsnn.replay"):
        items = _items(source)
    assert source.stats.samples_played == 2 and source.stats.samples_failed == 1
    assert source.stats.failures[0][0] == str(broken)
    assert str(broken) in caplog.text
    assert [s.segments[0].label for s in items if isinstance(s, Labels)] == [0, 3]
    assert "2 sample(s) played, 1 skipped" in items[-1].reason


def test_gesture_recording_labels_come_from_the_csv_shifted_to_the_timeline(tmp_path):
    sensor = SensorSize(128, 128)
    t = np.arange(5_000_000, 5_600_000, 50, dtype=np.int64)
    events = make_events(t, t % 128, (t // 128) % 128, t % 2)
    recording = tmp_path / "user01_natural.aedat"
    write_aedat3(recording, events, sensor)
    write_gesture_labels(
        tmp_path / "user01_natural_labels.csv",
        [LabelSegment(0, 5_100_000, 5_200_000), LabelSegment(10, 5_300_000, 5_500_000)],
    )
    source = open_replay(recording)
    items = _items(source)
    labels = [i for i in items if isinstance(i, Labels)]
    assert len(labels) == 1  # published before the first event
    assert isinstance(items[0], Labels)
    offset = -5_000_000
    assert labels[0].segments == (
        LabelSegment(0, 5_100_000 + offset, 5_200_000 + offset),
        LabelSegment(10, 5_300_000 + offset, 5_500_000 + offset),
    )
    played = np.concatenate([i for i in items if isinstance(i, np.ndarray)], dtype=EVENT_DTYPE)
    assert played["timestamp"][0] == 0 and len(played) == len(events)


def test_nmnist_replay_reaches_a_subscriber_with_labels_and_end():
    paths = [_nmnist(p) for p in NMNIST_SAMPLES]
    running = Running(ReplaySource(paths), speed=math.inf, stream_id="replay")
    messages = running.receive_until_end()
    stats = running.join()
    assert [m.type for m in messages].count("labels") == 3
    assert messages[-1].type == "end" and "3 sample(s) played" in messages[-1].reason
    assert [m.seq for m in messages] == list(range(len(messages)))
    cursor, received = 0, _events_of(messages)
    position = 0
    label_messages = [m for m in messages if m.type == "labels"]
    for path, label, message in zip(paths, (3, 0, 7), label_messages, strict=True):
        original = read_recording(path).events
        part = received[position : position + len(original)]
        position += len(original)
        assert np.array_equal(part["x"], original["x"]) and np.array_equal(part["y"], original["y"])
        shift = original["timestamp"] - original["timestamp"][0] + cursor
        assert np.array_equal(part["timestamp"], shift)
        end_us = int(shift[-1]) + 1
        assert message.segments == (LabelSegment(label, cursor, end_us),)
        cursor = end_us
    assert position == len(received) == stats.events


def test_nmnist_replay_at_real_time_takes_its_duration_and_max_is_much_faster():
    path = _nmnist(NMNIST_SAMPLES[0])
    span_s = np.ptp(read_recording(path).events["timestamp"]) / 1e6
    assert 0.25 < span_s < 0.5
    elapsed = {}
    for speed in (1.0, math.inf):
        running = Running(ReplaySource([path], chunk_us=1000), speed=speed)
        arrivals: list[float] = []
        running.receive_until_end(per_message=lambda m, a=arrivals: a.append(time.monotonic()))
        running.join()
        elapsed[speed] = arrivals[-2] - arrivals[0]  # first to last events message
    # Real time never runs ahead of the recording; how far a loaded machine lets it
    # fall behind is not this test's business (the pacer's own tests check lateness).
    assert span_s * 0.7 < elapsed[1.0] < span_s * 3
    assert elapsed[math.inf] < elapsed[1.0] / 5


def test_other_formats_replay_too_aedat4_and_dvs_sign():
    recording = shared_path("recordings/dvxplorer_320x240.aedat4")
    source = open_replay(recording)
    assert source.sensor == SensorSize(320, 240)
    items = _items(source)
    assert not any(isinstance(i, Labels) for i in items)  # no labels beside it
    played = np.concatenate([i for i in items if isinstance(i, np.ndarray)], dtype=EVENT_DTYPE)
    original = read_recording(recording).events
    assert np.array_equal(played["x"], original["x"])
    assert np.array_equal(played["timestamp"], original["timestamp"] - original["timestamp"][0])

    folder = shared_path("dvs_sign/train")
    source = open_replay(folder, shuffle=True, seed=1, limit=2)
    assert source.sensor == SensorSize(128, 128)
    labels = [i.segments[0].label for i in _items(source) if isinstance(i, Labels)]
    assert labels == [int(p.parent.name) for p in source.paths]
