"""DVS128 Gesture (IBM, Amir et al. 2017) from its published folder layout.

    ROOT/user01_fluorescent.aedat          AEDAT 3.1 recording, DVS128 128x128
    ROOT/user01_fluorescent_labels.csv     class,startTime_usec,endTime_usec (class 1-11)
    ...
    ROOT/trials_to_train.txt               recording file names, one per line (users 1-23)
    ROOT/trials_to_test.txt                (users 24-29)

Each recording holds about a dozen gestures; each row of its labels file is
one sample: the events with ``start <= t < end``, label ``class - 1``.

Decoding a recording takes seconds, so each recording's segments are decoded
once and kept in the on-disk segment cache (``replay.datasets.cache``; keyed
on the recording's and its labels file's size and mtime). Labels and sources
come from the labels files alone, so building the dataset, splitting it and
reading ``labels`` decode nothing; a recording is decoded (or its cache
opened) on first access to one of its samples, or for all by ``prepare()``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.events import SensorSize, concat_events, validate_events
from replay.cache_files import default_cache_dir
from replay.datasets.base import (
    DatasetLayoutError,
    EventSample,
    SampleSource,
    _check_index,
    sample_from_events,
)
from replay.datasets.cache import (
    CacheStats,
    CorruptCache,
    DecodedSegments,
    SegmentedRecording,
    cache_file_for,
    load_or_build,
)
from replay.formats.aedat3 import iter_aedat3
from replay.formats.gesture_labels import GESTURE_CLASS_NAMES, read_gesture_labels

SPLITS = ("train", "test")
CACHE_NAMESPACE = "dvsgesture"
# Bounds memory while decoding: 1 M events (16 MB) per chunk.
DECODE_CHUNK_EVENTS = 1_000_000


def read_trial_list(path: Path) -> list[str]:
    """The recording file names in ``trials_to_train.txt`` / ``trials_to_test.txt``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(
            path, "", "DVS128 Gesture: trial list not found (expected the official folder layout)"
        )
    names = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if not name.endswith(".aedat") or "/" in name or "\\" in name:
            raise DatasetLayoutError(
                path,
                f"line {number}",
                f"expected a file name like user01_led.aedat, found {name!r}",
            )
        names.append(name)
    return names


def decode_segments(
    recording: Path, starts_us: np.ndarray, ends_us: np.ndarray, labels: np.ndarray
) -> DecodedSegments:
    """Decode ``recording`` chunk by chunk and keep, for each segment, the
    events with ``start <= t < end`` (segments may overlap; gaps are dropped)."""
    parts: list[list[np.ndarray]] = [[] for _ in starts_us]
    for chunk in iter_aedat3(recording, chunk_events=DECODE_CHUNK_EVENTS, sensor=DVSGesture.sensor):
        t = chunk["timestamp"]
        if len(t) == 0:
            continue
        t_min, t_max = int(t.min()), int(t.max())
        for i, (start, end) in enumerate(zip(starts_us, ends_us, strict=True)):
            if end <= t_min or start > t_max:
                continue
            inside = (t >= start) & (t < end)
            if inside.any():
                parts[i].append(chunk[inside])
    events = [concat_events(p) for p in parts]
    for i, segment_events in enumerate(events):
        validate_events(
            segment_events,
            DVSGesture.sensor,
            f"{recording} segment {i} [{starts_us[i]}, {ends_us[i]}) µs",
        )
    return DecodedSegments(DVSGesture.sensor, starts_us, ends_us, labels, events)


class DVSGesture:
    """DVS128 Gesture, split ``"train"`` or ``"test"``: one sample per labelled
    gesture, 11 classes (label = class id - 1), 128x128.

    ``cache_dir`` defaults to ``$STCSNN_CACHE`` or ``~/.cache/stcsnn``;
    ``cache_stats`` counts cache hits and decodes (with reasons).
    """

    sensor = SensorSize(128, 128)

    def __init__(
        self,
        root: Path | str,
        split: str = "train",
        *,
        cache_dir: Path | str | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"DVS128 Gesture split must be one of {list(SPLITS)}, found {split!r}")
        self.root = Path(root)
        self.split = split
        self.class_names = list(GESTURE_CLASS_NAMES)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_stats = CacheStats()

        self.recordings: list[Path] = []
        self.label_files: list[Path] = []
        rows: list[tuple[int, int, int, int, int]] = []  # recording, row, start, end, label
        for name in read_trial_list(self.root / f"trials_to_{split}.txt"):
            recording = self.root / name
            label_file = self.root / f"{Path(name).stem}_labels.csv"
            for needed in (recording, label_file):
                if not needed.is_file():
                    raise DatasetLayoutError(
                        needed, "", f"DVS128 Gesture: listed in trials_to_{split}.txt but missing"
                    )
            r = len(self.recordings)
            self.recordings.append(recording)
            self.label_files.append(label_file)
            for row, segment in enumerate(read_gesture_labels(label_file)):
                rows.append((r, row, segment.start_us, segment.end_us, segment.label))
        table = np.array(rows, dtype=np.int64).reshape(-1, 5)
        self._recording_of = table[:, 0]
        self._row_of = table[:, 1]
        self._start_us = table[:, 2]
        self._end_us = table[:, 3]
        self._labels = table[:, 4].copy()
        self._labels.setflags(write=False)
        self._opened: dict[int, SegmentedRecording] = {}

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def sources(self) -> list[SampleSource]:
        return [self._source(i) for i in range(len(self))]

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int) -> EventSample:
        i = _check_index(i, len(self))
        r, row = int(self._recording_of[i]), int(self._row_of[i])
        try:
            events = self._open(r).events(row)
        except CorruptCache as error:
            events = self._open(r, rebuild_reason=str(error)).events(row)
        return sample_from_events(
            events,
            self.sensor,
            int(self._labels[i]),
            self._source(i),
            int(self._start_us[i]),
            int(self._end_us[i]),
        )

    def _source(self, i: int) -> SampleSource:
        return SampleSource(
            self.recordings[int(self._recording_of[i])],
            int(self._row_of[i]),
            int(self._start_us[i]),
            int(self._end_us[i]),
        )

    def _segments_of(self, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mine = np.flatnonzero(self._recording_of == r)
        return self._start_us[mine], self._end_us[mine], self._labels[mine]

    def _open(self, r: int, rebuild_reason: str | None = None) -> SegmentedRecording:
        if rebuild_reason is None and r in self._opened:
            return self._opened[r]
        starts, ends, labels = self._segments_of(r)
        recording = self.recordings[r]

        def build() -> DecodedSegments:
            return decode_segments(recording, starts, ends, labels)

        cache_path = cache_file_for(self.cache_dir, CACHE_NAMESPACE, recording)
        sources = [recording, self.label_files[r]]
        opened = load_or_build(
            cache_path, sources, build, self.cache_stats, rebuild_reason=rebuild_reason
        )
        table = opened.segments
        if not (
            np.array_equal(table["start_us"], starts)
            and np.array_equal(table["end_us"], ends)
            and np.array_equal(table["label"], labels)
        ):
            opened = load_or_build(
                cache_path,
                sources,
                build,
                self.cache_stats,
                rebuild_reason=f"stale: {cache_path}: segments differ from {self.label_files[r]}",
            )
        self._opened[r] = opened
        return opened

    def prepare(self) -> CacheStats:
        """Open (decoding where needed) every recording's cache now, e.g. before
        timing an epoch; returns the cache statistics."""
        for r in range(len(self.recordings)):
            self._open(r)
        return self.cache_stats

    def __getstate__(self) -> dict:
        # Memory maps do not travel to worker processes; they reopen the cache.
        state = dict(self.__dict__)
        state["_opened"] = {}
        return state

    def __repr__(self) -> str:
        return f"DVSGesture({self.split}: {len(self.recordings)} recordings, {len(self)} gestures)"
