"""Writing DVS128 Gesture label files, the inverse of ``gesture_labels.py``."""

from __future__ import annotations

import os
from collections.abc import Iterable

from core.labels import LabelSegment
from replay.formats.gesture_labels import FIRST_CLASS_ID, GESTURE_CLASS_NAMES, HEADER


def write_gesture_labels(path: str | os.PathLike, segments: Iterable[LabelSegment]) -> None:
    """Write segments (labels 0-10) in the dataset's layout, as class ids 1-11,
    refusing the ones the reader would refuse."""
    rows = [",".join(HEADER)]
    for index, segment in enumerate(segments):
        label, start_us, end_us = (int(value) for value in segment)
        if not 0 <= label < len(GESTURE_CLASS_NAMES) or start_us < 0 or end_us <= start_us:
            raise ValueError(f"segment {index} {tuple(segment)} is not a valid label")
        rows.append(f"{label + FIRST_CLASS_ID},{start_us},{end_us}")
    with open(path, "w", encoding="ascii", newline="") as f:
        f.write("\n".join(rows) + "\n")
