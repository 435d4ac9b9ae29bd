"""Small dataset folders in the exact published formats, from generated events.

No DVS128 Gesture or CIFAR10-DVS events can be had on these machines, so the
dataset and training code is tested on folders written here:
the real file formats and folder layouts, holding events generated so that
each class looks different (a blob moving in a class-specific direction or
sitting at a class-specific place), so a model can in principle learn them.

Each writer returns a description of what it wrote (file names, labels, the
number of events inside each labelled segment) computed while generating, so
tests compare a reader's output with what was made, not with a second reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.class_names import CIFAR10
from core.events import SensorSize, concat_events, make_events
from core.labels import LabelSegment
from replay.formats.aedat2_writer import write_aedat2
from replay.formats.aedat3_writer import write_aedat3
from replay.formats.dvs_sign_writer import write_dvs_sign
from replay.formats.gesture_labels_writer import write_gesture_labels
from replay.formats.nmnist_writer import write_nmnist

DVS128 = SensorSize(128, 128)
NMNIST_SENSOR = SensorSize(34, 34)
GESTURE_CLASSES = 11


def moving_blob_events(
    rng: np.random.Generator,
    count: int,
    start_us: int,
    end_us: int,
    sensor: SensorSize,
    centre_from: tuple[float, float],
    centre_to: tuple[float, float],
    spread_px: float = 3.0,
) -> np.ndarray:
    """``count`` events of a blob moving from ``centre_from`` to ``centre_to``
    over ``[start_us, end_us)``; the first event is at ``start_us`` exactly.
    Polarity is 1 on the blob's leading edge and 0 on its trailing edge, as a
    DVS sees a bright object move."""
    t = np.sort(rng.integers(start_us, end_us, size=count))
    if count:
        t[0] = start_us
    progress = (t - start_us) / max(end_us - start_us, 1)
    start, stop = np.asarray(centre_from, float), np.asarray(centre_to, float)
    centre = start + progress[:, None] * (stop - start)
    offset = rng.normal(0.0, spread_px, size=(count, 2))
    xy = np.rint(centre + offset)
    x = np.clip(xy[:, 0], 0, sensor.width - 1).astype(np.int16)
    y = np.clip(xy[:, 1], 0, sensor.height - 1).astype(np.int16)
    direction = stop - start
    leading = offset @ direction > 0 if np.any(direction) else rng.random(count) < 0.5
    return make_events(t, x, y, leading.astype(np.int8))


def noise_events(
    rng: np.random.Generator, count: int, start_us: int, end_us: int, sensor: SensorSize
) -> np.ndarray:
    """Uniform background activity over ``[start_us, end_us)``; the first event
    is at ``start_us`` exactly (so a segment ending there must exclude it)."""
    t = np.sort(rng.integers(start_us, end_us, size=count))
    if count:
        t[0] = start_us
    return make_events(
        t,
        rng.integers(0, sensor.width, size=count),
        rng.integers(0, sensor.height, size=count),
        rng.integers(0, 2, size=count),
    )


# ---------------------------------------------------------------- DVS128 Gesture


@dataclass(frozen=True)
class GestureSegmentDescription:
    label: int  # 0-10, the dataset's label (the labels file holds label + 1)
    start_us: int
    end_us: int
    event_count: int  # events generated with start_us <= t < end_us


@dataclass(frozen=True)
class GestureRecordingDescription:
    name: str  # e.g. "user01_fluorescent"
    user: int
    lighting: str
    split: str  # "train" or "test"
    segments: list[GestureSegmentDescription]
    event_count: int  # all events in the file, gaps included

    @property
    def aedat_name(self) -> str:
        return f"{self.name}.aedat"


@dataclass(frozen=True)
class GestureFolder:
    root: Path
    recordings: list[GestureRecordingDescription] = field(default_factory=list)

    def segments(self, split: str) -> list[GestureSegmentDescription]:
        """The labelled segments of ``split`` in the order the dataset lists them
        (trial list order, then label file rows)."""
        return [s for r in self.recordings if r.split == split for s in r.segments]

    def recording(self, name: str) -> GestureRecordingDescription:
        return next(r for r in self.recordings if r.name == name)


def gesture_direction(label: int) -> tuple[float, float]:
    """Unit vector of the class's motion: the 11 classes spread around a circle."""
    angle = 2 * np.pi * label / GESTURE_CLASSES
    return float(np.cos(angle)), float(np.sin(angle))


def write_dvsgesture_folder(
    root: Path | str,
    *,
    users: tuple[int, ...] = (1, 2),
    lightings: tuple[str, ...] = ("fluorescent", "led"),
    gestures_per_recording: int = 3,
    events_per_gesture: int = 2_000,
    gesture_us: tuple[int, int] = (200_000, 400_000),
    gap_us: tuple[int, int] = (50_000, 150_000),
    noise_per_gap: int = 100,
    test_users: tuple[int, ...] | None = None,
    seed: int = 0,
) -> GestureFolder:
    """Write a DVS128 Gesture folder in the official layout to ``root``:
    ``userXX_<lighting>.aedat`` (AEDAT 3.1), ``userXX_<lighting>_labels.csv``,
    ``trials_to_train.txt`` and ``trials_to_test.txt``.

    Each recording holds ``gestures_per_recording`` gestures (a blob moving
    across the sensor in its class's direction) separated by background noise;
    a noise event sits exactly on each gesture's end time, which the segment
    must exclude. Classes cycle through shuffled rounds of 0-10, so all classes
    appear once the folder holds 11 gestures. ``test_users`` go to the test
    list (default: the last user, so both lists are non-empty; the official
    dataset uses users 24-29).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if test_users is None:
        test_users = (users[-1],) if len(users) > 1 else ()
    total = len(users) * len(lightings) * gestures_per_recording
    rounds = -(-total // GESTURE_CLASSES)
    classes = iter(np.concatenate([rng.permutation(GESTURE_CLASSES) for _ in range(rounds)]))
    centre = np.array([DVS128.width / 2, DVS128.height / 2])

    recordings = []
    for user in users:
        for lighting in lightings:
            name = f"user{user:02d}_{lighting}"
            t_us = int(rng.integers(1_000_000, 5_000_000))
            parts = [noise_events(rng, noise_per_gap, t_us - 500_000, t_us, DVS128)]
            segments = []
            for _ in range(gestures_per_recording):
                label = int(next(classes))
                duration = int(rng.integers(*gesture_us))
                direction = np.array(gesture_direction(label))
                parts.append(
                    moving_blob_events(
                        rng,
                        events_per_gesture,
                        t_us,
                        t_us + duration,
                        DVS128,
                        tuple(centre - 40 * direction),
                        tuple(centre + 40 * direction),
                    )
                )
                segments.append(
                    GestureSegmentDescription(label, t_us, t_us + duration, events_per_gesture)
                )
                t_us += duration
                gap = int(rng.integers(*gap_us))
                parts.append(noise_events(rng, noise_per_gap, t_us, t_us + gap, DVS128))
                t_us += gap
            events = concat_events(parts)
            write_aedat3(root / f"{name}.aedat", events, DVS128)
            write_gesture_labels(
                root / f"{name}_labels.csv",
                [LabelSegment(s.label, s.start_us, s.end_us) for s in segments],
            )
            split = "test" if user in test_users else "train"
            recordings.append(
                GestureRecordingDescription(name, user, lighting, split, segments, len(events))
            )
    for split in ("train", "test"):
        listed = [r.aedat_name for r in recordings if r.split == split]
        (root / f"trials_to_{split}.txt").write_text("".join(f"{n}\n" for n in listed))
    return GestureFolder(root, recordings)


# ---------------------------------------------------------------- file-per-sample datasets


@dataclass(frozen=True)
class SampleFile:
    path: Path
    label: int  # 0-based
    events: np.ndarray  # exactly what was written


def _class_centre(label: int, classes: int, sensor: SensorSize) -> np.ndarray:
    angle = 2 * np.pi * label / classes
    radius = 0.3 * min(sensor.width, sensor.height)
    middle = np.array([sensor.width / 2, sensor.height / 2])
    return middle + radius * np.array([np.cos(angle), np.sin(angle)])


def _saccade_events(
    rng: np.random.Generator,
    label: int,
    classes: int,
    sensor: SensorSize,
    count: int,
    start_us: int,
    duration_us: int,
) -> np.ndarray:
    """A blob at a class-specific place, moved a few pixels as by a saccade
    (how N-MNIST and CIFAR10-DVS were recorded)."""
    centre = _class_centre(label, classes, sensor)
    shift = rng.normal(0.0, 1.0, size=2)
    shift *= 0.05 * min(sensor.width, sensor.height) / max(np.linalg.norm(shift), 1e-9)
    return moving_blob_events(
        rng,
        count,
        start_us,
        start_us + duration_us,
        sensor,
        tuple(centre - shift),
        tuple(centre + shift),
        spread_px=max(1.0, min(sensor.width, sensor.height) / 30),
    )


def write_cifar10dvs_folder(
    root: Path | str,
    *,
    per_class: int = 2,
    events_per_sample: int = 1_500,
    duration_us: int = 200_000,
    seed: int = 0,
) -> list[SampleFile]:
    """Write ``root/<class name>/cifar10_<class name>_<i>.aedat`` (AEDAT 2.0,
    DVS128 addresses, jAER-style absolute timestamps) for the 10 classes."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    written = []
    for label, name in enumerate(CIFAR10):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            start = int(rng.integers(1_000_000, 100_000_000))
            events = _saccade_events(
                rng, label, len(CIFAR10), DVS128, events_per_sample, start, duration_us
            )
            path = root / name / f"cifar10_{name}_{i}.aedat"
            write_aedat2(path, events, DVS128)
            written.append(SampleFile(path, label, events))
    return written


def write_nmnist_folder(
    root: Path | str,
    *,
    splits: tuple[str, ...] = ("Train", "Test"),
    per_class: int = 2,
    events_per_sample: int = 600,
    duration_us: int = 300_000,
    seed: int = 0,
) -> list[SampleFile]:
    """Write ``root/<Train|Test>/<digit>/<id>.bin`` (N-MNIST ``.bin``, 34x34)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    written = []
    for split in splits:
        for digit in range(10):
            (root / split / str(digit)).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                events = _saccade_events(
                    rng, digit, 10, NMNIST_SENSOR, events_per_sample, 0, duration_us
                )
                path = root / split / str(digit) / f"{digit * 1000 + i:05d}.bin"
                write_nmnist(path, events)
                written.append(SampleFile(path, digit, events))
    return written


def write_dvs_sign_folder(
    root: Path | str,
    *,
    splits: tuple[str, ...] = ("train", "test"),
    classes: int = 15,
    per_class: int = 2,
    events_per_sample: int = 2_000,
    duration_us: int = 1_000_000,
    seed: int = 0,
) -> list[SampleFile]:
    """Write ``root/<train|test>/<class>/<i>.npz`` in the DVS_Sign layout
    (``t_us`` uint32 sorted, ``x``, ``y``, ``p`` uint8), timestamps on a 1/30 s
    frame grid like the converted originals."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    frame_us = 1_000_000 / 30
    written = []
    for split in splits:
        for label in range(classes):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                direction = np.array(gesture_direction(label % GESTURE_CLASSES))
                centre = np.array([64.0, 64.0])
                events = moving_blob_events(
                    rng,
                    events_per_sample,
                    0,
                    duration_us,
                    DVS128,
                    tuple(centre - 40 * direction),
                    tuple(centre + 40 * direction),
                )
                frames = np.ceil(events["timestamp"] / frame_us).clip(min=1)
                events["timestamp"] = np.rint(frames * frame_us).astype(np.int64)
                path = root / split / str(label) / f"{i}.npz"
                write_dvs_sign(path, events)
                written.append(SampleFile(path, label, events))
    return written
