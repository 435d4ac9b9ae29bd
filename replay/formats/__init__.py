"""Event files in, ``Recording`` or chunks of EVENT_DTYPE out, whatever the format.

One module per format (``aedat3``, ``aedat4``, ``aedat2``, ``nmnist``,
``dvs_sign``; ``gesture_labels`` for the DVS128 Gesture label files), its
writer beside it (``aedat3_writer`` ...: for tests, benchmarks and conversions),
and ``aedat_header`` for the text header AEDAT 2.0 and 3.1 share; this module
picks the right reader. ``detect_format`` trusts the file's content before its
name (``sniff.py``): AEDAT files say their version in their first line, a
DVS_Sign ``.npz`` is a zip of its four arrays, an N-MNIST file (no header) is
known by its ``.bin`` / ``.bs2`` extension or, without one, by its records;
formats recognised but read by no module here (Prophesee RAW/DAT, Event
Stream, HDF5, ROS bags) are refused by name. The format modules are imported
when first used, so ``stcsnn inspect`` of an N-MNIST file does not load
dv-processing.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.class_names import CIFAR10
from core.events import FormatError, Recording, SensorSize
from core.labels import LabelSegment
from replay.formats.sniff import OTHER_FORMATS, read_head, sniff_format

# format -> what it is, for messages and `stcsnn inspect`
FORMAT_NAMES = {
    "aedat3": "AEDAT 3.1 (DVS128 Gesture, .aedat)",
    "aedat4": "AEDAT4 (iniVation DV, .aedat4)",
    "aedat2": "AEDAT 2.0 (jAER: DVS128, CIFAR10-DVS, DAVIS240/346, .aedat)",
    "nmnist": "N-MNIST (.bin, .bs2)",
    "dvs_sign": "DVS_Sign sample (.npz)",
    "prophesee_raw": "Prophesee RAW (EVT 2.0, EVT 3.0; Metavision, .raw)",
    "prophesee_dat": "Prophesee DAT (Metavision, Gen1 ATIS dataset, .dat)",
    "event_stream": "Event Stream (DVS, ATIS; .es)",
}
# format -> the module that reads it, where their names differ
FORMAT_MODULES = {"prophesee_raw": "prophesee", "prophesee_dat": "prophesee"}
DEFAULT_CHUNK_EVENTS = 1_000_000
# Classes named by the folder a sample sits in: format -> number of classes.
FOLDER_CLASS_COUNTS = {"nmnist": 10, "dvs_sign": 15}
GESTURE_LABELS_SUFFIX = "_labels.csv"


def supported_formats() -> str:
    return "; ".join(FORMAT_NAMES.values())


def detect_format(path: str | os.PathLike) -> str:
    """ "aedat3", "aedat4", "aedat2", "nmnist" or "dvs_sign", from the content
    first (``sniff.py``), else the extension. FormatError naming the file and
    listing the supported formats when neither tells, and naming the format of
    a file recognised but not supported (a Prophesee RAW file, ...)."""
    source = str(path)
    try:
        name = sniff_format(path)
    except FormatError as error:
        problem = f"{error.problem}; supported: {supported_formats()}"
        raise FormatError(source, error.where, problem) from None
    if name in FORMAT_NAMES:
        return name
    if name in OTHER_FORMATS:
        raise FormatError(
            source,
            "byte 0",
            f"{OTHER_FORMATS[name]}: not a format stcsnn reads; supported: {supported_formats()}",
        )
    head, _ = read_head(path)
    what = "empty file" if not head else f"unknown event file format (starts with {head[:12]!r})"
    if Path(path).suffix.lower() == ".aedat":
        what = "empty .aedat file" if not head else "'.aedat' file without an '#!AER-DAT' header"
    raise FormatError(source, "byte 0", f"{what}; supported: {supported_formats()}")


def _module(name: str):
    return importlib.import_module(f"replay.formats.{name}")


def read_recording(path: str | os.PathLike, **options) -> Recording:
    """The whole file as a Recording; ``options`` go to the format's reader
    (e.g. ``sensor=`` for AEDAT 3.1, AEDAT 2.0, N-MNIST and DVS_Sign)."""
    name = detect_format(path)
    module = FORMAT_MODULES.get(name, name)
    return getattr(_module(module), f"read_{module}")(path, **options)


def iter_recording(
    path: str | os.PathLike, *, chunk_events: int = DEFAULT_CHUNK_EVENTS
) -> tuple[SensorSize, Iterator[np.ndarray]]:
    """(sensor, chunks of at most ``chunk_events`` events). Header problems
    raise here; problems further in raise while iterating. Close the iterator
    (``.close()``) when stopping early: an AEDAT4 reader holds a child process."""
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    name = detect_format(path)
    if name == "aedat3":
        aedat3 = _module("aedat3")
        sensor = aedat3.read_aedat3_header(path).sensor
        return sensor, aedat3.iter_aedat3(path, chunk_events=chunk_events)
    if name == "aedat2":
        aedat2 = _module("aedat2")
        sensor = aedat2.read_aedat2_header(path).sensor  # the chip its header names
        return sensor, aedat2.iter_aedat2(path, chunk_events=chunk_events)
    if name == "aedat4":
        reader = _module("aedat4").Aedat4Reader(path, chunk_events=chunk_events)
        return reader.sensor, reader
    if name == "nmnist":
        nmnist = _module("nmnist")
        nmnist.check_nmnist_size(path)
        return nmnist.NMNIST_SENSOR, nmnist.iter_nmnist(path, chunk_events=chunk_events)
    if name in ("prophesee_raw", "prophesee_dat"):
        prophesee = _module("prophesee")
        sensor = prophesee.prophesee_sensor(path)  # the header's, or its camera generation's
        return sensor, prophesee.iter_prophesee(path, chunk_events=chunk_events)
    if name == "event_stream":
        event_stream = _module("event_stream")
        sensor = event_stream.read_event_stream_header(path).sensor
        return sensor, event_stream.iter_event_stream(path, chunk_events=chunk_events)
    recording = _module("dvs_sign").read_dvs_sign(path)
    return recording.sensor, _slices(recording.events, chunk_events)


def _slices(events: np.ndarray, chunk_events: int) -> Iterator[np.ndarray]:
    for start in range(0, len(events), chunk_events):
        yield events[start : start + chunk_events]


def labels_for(path: str | os.PathLike) -> list[LabelSegment] | int | None:
    """Labels found beside an event file, or None.

    - DVS128 Gesture: ``<name>_labels.csv`` next to ``<name>.aedat`` (any event
      file) gives its segments, a list of ``core.labels.LabelSegment`` (labels
      0-10, i.e. the CSV's class id - 1, and µs spans on the recording's clock);
    - N-MNIST ``.bin`` or DVS_Sign ``.npz`` inside a folder named by its class
      (``Train/3/00012.bin``, ``train/14/7.npz``): that class index, an int;
    - AEDAT 2.0 inside a CIFAR10-DVS class folder (``airplane/...``): the class
      index 0-9, an int.
    """
    path = Path(path)
    csv = path.with_name(path.stem + GESTURE_LABELS_SUFFIX)
    if csv.is_file():
        return _module("gesture_labels").read_gesture_labels(csv)
    name = detect_format(path)
    folder = path.parent.name
    if name in FOLDER_CLASS_COUNTS:
        if folder.isascii() and folder.isdigit() and int(folder) < FOLDER_CLASS_COUNTS[name]:
            return int(folder)
        return None
    if name == "aedat2" and folder.lower() in CIFAR10:
        return CIFAR10.index(folder.lower())
    return None


__all__ = [
    "FORMAT_NAMES",
    "detect_format",
    "iter_recording",
    "labels_for",
    "read_recording",
    "supported_formats",
]
