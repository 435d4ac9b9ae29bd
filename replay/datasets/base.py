"""What every dataset gives: labelled samples of events, and where each came from.

A dataset is a sequence of ``EventSample``s with its ``labels`` (0-based, known
without decoding any events, so splits are cheap), ``class_names``, ``sensor``
and ``sources`` (the file, and the segment of it, behind each sample: for error
messages and for replaying a sample in the streaming demo).

Datasets with one file per sample in class folders (N-MNIST, CIFAR10-DVS,
DVS_Sign) share ``FileDataset``; DVS128 Gesture, whose recordings hold many
labelled segments, has its own class over the segment cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from core.events import EventError, Recording, SensorSize, validate_events
from replay.paths import natural_key


class DatasetLayoutError(EventError):
    """A dataset folder does not follow its published layout (``source`` names
    the path, the message what was expected)."""


@dataclass(frozen=True)
class SampleSource:
    """Where a sample lives: a whole file, or segment ``segment`` (the row of
    its labels file) covering ``[start_us, end_us)`` of a recording."""

    path: Path
    segment: int | None = None
    start_us: int | None = None
    end_us: int | None = None

    def __str__(self) -> str:
        if self.segment is None:
            return str(self.path)
        return f"{self.path} segment {self.segment} [{self.start_us}, {self.end_us}) µs"


@dataclass(frozen=True)
class EventSample:
    """One labelled sample.

    Timestamps are as in the source file (a DVS128 Gesture segment keeps its
    recording's clock). ``[start_us, end_us)`` is the time the sample covers:
    the labelled segment for a segment, the span of its events (last + 1) for
    a whole file.
    """

    events: np.ndarray  # EVENT_DTYPE, timestamps non-decreasing
    sensor: SensorSize
    label: int  # 0-based class index
    source: str
    start_us: int
    end_us: int

    def __len__(self) -> int:
        return len(self.events)

    @property
    def duration_us(self) -> int:
        return self.end_us - self.start_us

    def window(self, start_us: int, end_us: int) -> EventSample:
        """The events with ``start_us <= t < end_us`` (e.g. a random temporal
        crop for training), as a sample covering that window."""
        t = self.events["timestamp"]
        first, last = np.searchsorted(t, [start_us, end_us], side="left")
        return EventSample(
            self.events[first:last], self.sensor, self.label, self.source, start_us, end_us
        )


def sample_from_events(
    events: np.ndarray,
    sensor: SensorSize,
    label: int,
    source: SampleSource,
    start_us: int | None = None,
    end_us: int | None = None,
) -> EventSample:
    """Validate events against the dataset's sensor and wrap them; a whole-file
    sample covers the span of its events."""
    validate_events(events, sensor, str(source))
    if start_us is None or end_us is None:
        t = events["timestamp"]
        start_us = int(t[0]) if len(t) else 0
        end_us = int(t[-1]) + 1 if len(t) else 0
    return EventSample(events, sensor, int(label), str(source), int(start_us), int(end_us))


@runtime_checkable
class EventDataset(Protocol):
    """What training, evaluation and replay rely on."""

    sensor: SensorSize
    class_names: list[str]

    @property
    def labels(self) -> np.ndarray: ...

    @property
    def sources(self) -> list[SampleSource]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> EventSample: ...


def _check_index(i: int, length: int) -> int:
    i = int(i)
    if not -length <= i < length:
        raise IndexError(f"sample {i} out of range for a dataset of {length}")
    return i % length


class Subset:
    """Samples ``indices`` of ``dataset`` (e.g. the training part of a split),
    with the same interface."""

    def __init__(self, dataset: EventDataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.sensor = dataset.sensor
        self.class_names = dataset.class_names

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels[self.indices]

    @property
    def sources(self) -> list[SampleSource]:
        sources = self.dataset.sources
        return [sources[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> EventSample:
        return self.dataset[int(self.indices[_check_index(i, len(self))])]

    def __iter__(self) -> Iterator[EventSample]:
        return (self[i] for i in range(len(self)))


def scan_class_folders(
    split_dir: Path,
    class_of_folder: Callable[[str], int | None],
    suffix: str | tuple[str, ...],
    dataset_name: str,
    expected: str,
) -> tuple[list[Path], np.ndarray]:
    """Files ``split_dir/<class folder>/*<suffix>`` (any of several suffixes,
    e.g. N-MNIST's ``.bin`` and ``.bs2``) and their labels, in class then
    natural file-name order. ``class_of_folder`` maps a folder name to its
    label, or None when the folder is not a class of this dataset (an error:
    a stray folder usually means a wrong root). ``expected`` describes the
    layout for error messages."""
    split_dir = Path(split_dir)
    suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
    if not split_dir.is_dir():
        raise DatasetLayoutError(
            split_dir, "", f"{dataset_name}: folder not found (expected {expected})"
        )
    labelled: list[tuple[int, Path]] = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        label = class_of_folder(folder.name)
        if label is None:
            raise DatasetLayoutError(
                folder, "", f"{dataset_name}: not a class folder (expected {expected})"
            )
        files = [f for f in folder.iterdir() if f.suffix.lower() in suffixes and f.is_file()]
        files.sort(key=lambda path: natural_key(Path(path.name)))
        labelled.extend((label, f) for f in files)
    if not labelled:
        patterns = " or ".join(f"*{s}" for s in suffixes)
        raise DatasetLayoutError(
            split_dir, "", f"{dataset_name}: no {patterns} files found (expected {expected})"
        )
    labelled.sort(key=lambda item: item[0])  # stable: keeps the file order within a class
    return [path for _, path in labelled], np.array([label for label, _ in labelled], np.int64)


class FileDataset:
    """One file per sample, label from its class folder.

    Subclasses set ``sensor``, ``class_names`` and ``read`` (path -> Recording).
    Events are decoded on each ``__getitem__`` (the files are small), checked
    against the dataset's sensor.
    """

    sensor: SensorSize
    class_names: list[str]

    def __init__(self, files: Sequence[Path], labels: np.ndarray):
        self.files = list(files)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._labels.setflags(write=False)

    def read(self, path: Path) -> Recording:
        raise NotImplementedError

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def sources(self) -> list[SampleSource]:
        return [SampleSource(path) for path in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> EventSample:
        i = _check_index(i, len(self))
        path = self.files[i]
        return sample_from_events(
            self.read(path).events, self.sensor, int(self._labels[i]), SampleSource(path)
        )

    def __iter__(self) -> Iterator[EventSample]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, {len(self.class_names)} classes)"
