"""DVS128 Gesture label files (``userNN_lighting_labels.csv``).

Each recording of the dataset comes with a CSV file naming the gestures it
holds: a header ``class,startTime_usec,endTime_usec`` and one line per gesture
with its class id (1-11) and its start and end in µs on the recording's clock
(the timestamps of the AEDAT 3.1 file beside it). The datasets code cuts the
recordings into labelled segments with these, so a bad line must stop it with
the file and line number rather than produce a wrong segment.

The 1-based class id lives in the file only: the reader returns
``core.labels.LabelSegment``s whose ``label`` is the 0-based class index
(class id - 1), as every other labelled source gives (``gesture_labels_writer``
adds the 1 back).
"""

from __future__ import annotations

import os
import re

from core.class_names import DVS_GESTURE
from core.events import FormatError
from core.labels import LabelSegment

GESTURE_CLASS_NAMES = DVS_GESTURE  # label k (class id k + 1) is GESTURE_CLASS_NAMES[k]
FIRST_CLASS_ID = 1  # the class id of label 0
LAST_CLASS_ID = len(GESTURE_CLASS_NAMES)
HEADER = ("class", "startTime_usec", "endTime_usec")
# Real label files are a few hundred bytes; refuse to slurp anything huge.
MAX_LABEL_FILE_BYTES = 1 << 20

_INTEGER = re.compile(r"[+-]?\d{1,19}")  # int64 at most: no 4,300-digit int() error


def read_gesture_labels(path: str | os.PathLike) -> list[LabelSegment]:
    """The segments of a labels CSV, in file order, labelled 0-10 (class id - 1).
    FormatError names the file and line for a bad header, a line without three
    integers, a class outside 1-11, a negative start or an end not after its
    start. Blank lines are ignored."""
    source = str(path)
    size = os.path.getsize(path)
    if size > MAX_LABEL_FILE_BYTES:
        raise FormatError(
            source, "", f"{size} bytes is far too large for a labels file (at most 1 MiB)"
        )
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise FormatError(source, f"line {line}", "not UTF-8 text") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise FormatError(
            source, "line 1", f"expected the header {','.join(HEADER)!r}, found nothing"
        )
    header = tuple(field.strip() for field in lines[0].split(","))
    if header != HEADER:
        raise FormatError(
            source, "line 1", f"expected the header {','.join(HEADER)!r}, found {lines[0][:80]!r}"
        )
    segments = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        segments.append(_parse_line(source, number, line))
    return segments


def _parse_line(source: str, number: int, line: str) -> LabelSegment:
    where = f"line {number}"
    fields = [field.strip() for field in line.split(",")]
    if len(fields) != 3:
        raise FormatError(source, where, f"expected 3 comma-separated fields, found {len(fields)}")
    for name, field in zip(HEADER, fields, strict=True):
        if not _INTEGER.fullmatch(field):
            raise FormatError(source, where, f"{name} {field[:40]!r} is not an integer")
    class_id, start_us, end_us = (int(field) for field in fields)
    if not FIRST_CLASS_ID <= class_id <= LAST_CLASS_ID:
        raise FormatError(
            source, where, f"class {class_id} is outside {FIRST_CLASS_ID}-{LAST_CLASS_ID}"
        )
    if start_us < 0:
        raise FormatError(source, where, f"start {start_us} µs is negative")
    if end_us <= start_us:
        raise FormatError(source, where, f"end {end_us} µs is not after start {start_us} µs")
    return LabelSegment(class_id - FIRST_CLASS_ID, start_us, end_us)
