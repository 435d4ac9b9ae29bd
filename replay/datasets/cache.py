"""On-disk cache of a recording cut into labelled segments.

Decoding a DVS128 Gesture recording (AEDAT 3.1, tens to hundreds of MB) takes
seconds; training reads every segment many times. So the segments of each
recording are decoded once and stored in one cache file that later runs map
into memory and slice.

File layout (``*.segments``): three ``.npy`` records one after another.

1. ``meta``: JSON (UTF-8 bytes as ``uint8``): format name, ``version``
   (``CACHE_FORMAT_VERSION``), the stamps of the source files, sensor size.
2. ``segments``: one row per segment: ``start_us``, ``end_us``, ``label``,
   ``first_event``, ``event_count``, ``t_base_us`` (the segment's first
   timestamp), ``crc32`` of the segment's event bytes.
3. ``events``: the events of all segments, one after another, packed to
   ``t`` uint32 µs after the segment's ``t_base_us`` (int64 absolute in the
   rare file where a segment spans 2^32 µs = 71 minutes or more), ``x``, ``y``
   uint8 (uint16 for sensors larger than 256), ``p`` uint8: 7 bytes per event,
   less than AEDAT 3.1's 8 and EVENT_DTYPE's 16.

Staleness, atomic writes and rebuilding are the shared mechanism of
``replay.cache_files``: the meta record holds the stamps (path, size,
``mtime_ns``) of the source files; a cache that is missing, stale, of another
version or corrupt is rebuilt from the source, never trusted: the header, table
and file size are checked on open, and each segment's CRC when it is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.events import EVENT_DTYPE, SensorSize
from replay.cache_files import (
    CorruptCache,
    SourceStamp,
    read_or_build,
    source_stamps,
    written_atomically,
)

CACHE_FORMAT_VERSION = 1
CACHE_FORMAT_NAME = "stcsnn-segment-cache"
CACHE_SUFFIX = ".segments"

SEGMENT_DTYPE = np.dtype(
    [
        ("start_us", "<i8"),
        ("end_us", "<i8"),
        ("label", "<i8"),
        ("first_event", "<i8"),
        ("event_count", "<i8"),
        ("t_base_us", "<i8"),
        ("crc32", "<u8"),
    ]
)

# No sane recording has a header this large; bounds what a corrupt file can make us read.
_MAX_META_BYTES = 1 << 20


def packed_event_dtype(sensor: SensorSize, time: str = "<u4") -> np.dtype:
    """``time``: ``"<u4"`` (µs after the segment's ``t_base_us``) or ``"<i8"``
    (µs, with ``t_base_us`` 0) for segments too long for 32 bits."""
    coordinate = "u1" if max(sensor.width, sensor.height) <= 256 else "<u2"
    return np.dtype([("t", time), ("x", coordinate), ("y", coordinate), ("p", "u1")])


@dataclass
class CacheStats:
    """What the cache did: ``hits`` opened a valid file, ``builds`` decoded a
    source (``reasons`` says why: missing, stale, version, corrupt)."""

    hits: int = 0
    builds: int = 0
    reasons: list[str] = field(default_factory=list)


def cache_file_for(cache_dir: Path, namespace: str, source: Path) -> Path:
    """One cache file per source recording, named after it and its full path
    (so two datasets with equal file names do not share a cache)."""
    resolved = str(Path(source).resolve())
    digest = hashlib.sha1(resolved.encode()).hexdigest()[:12]
    return Path(cache_dir) / namespace / f"{Path(source).stem}-{digest}{CACHE_SUFFIX}"


class SegmentedRecording:
    """The segments of one recording, read from a cache file.

    ``segments`` is the table (``SEGMENT_DTYPE``); ``events(i)`` returns segment
    ``i`` as ``EVENT_DTYPE`` (timestamps as in the source recording).
    """

    def __init__(self, path: Path, sensor: SensorSize, segments: np.ndarray, packed: np.ndarray):
        self.path = path
        self.sensor = sensor
        self.segments = segments
        self._packed = packed

    def __len__(self) -> int:
        return len(self.segments)

    def events(self, i: int) -> np.ndarray:
        row = self.segments[i]
        first, count = int(row["first_event"]), int(row["event_count"])
        packed = np.asarray(self._packed[first : first + count])
        if zlib.crc32(packed.tobytes()) != int(row["crc32"]):
            raise CorruptCache(f"corrupt: {self.path}: segment {i}: CRC mismatch")
        events = np.empty(count, dtype=EVENT_DTYPE)
        events["timestamp"] = packed["t"]
        events["timestamp"] += int(row["t_base_us"])
        events["x"] = packed["x"]
        events["y"] = packed["y"]
        events["polarity"] = packed["p"]
        return events


def _read_npy_header(f) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of the ``.npy`` record at ``f``'s position."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy version {version}")
    except Exception as error:  # numpy raises ValueError, EOFError, SyntaxError...
        raise CorruptCache(
            f"corrupt: {f.name}: bad record header at byte {f.tell()}: {error}"
        ) from error
    if fortran or len(shape) != 1:
        raise CorruptCache(f"corrupt: {f.name}: unexpected record shape {shape}")
    return shape, dtype, f.tell()


def read_segment_cache(path: Path, stamps: Sequence[SourceStamp]) -> SegmentedRecording:
    """Open a cache file written for exactly these source stamps.

    Raises ``FileNotFoundError`` when absent and ``CorruptCache`` (its message
    starting with ``stale``, ``version`` or ``corrupt``) when it cannot be used.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        shape, dtype, offset = _read_npy_header(f)
        if dtype != np.uint8 or shape[0] > _MAX_META_BYTES or offset + shape[0] > size:
            raise CorruptCache(f"corrupt: {path}: bad meta record")
        try:
            meta = json.loads(f.read(shape[0]).decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CorruptCache(f"corrupt: {path}: meta is not JSON: {error}") from error
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT_NAME:
            raise CorruptCache(f"corrupt: {path}: not a {CACHE_FORMAT_NAME} file")
        if meta.get("version") != CACHE_FORMAT_VERSION:
            raise CorruptCache(
                f"version: {path}: cache version {meta.get('version')}, "
                f"this code writes {CACHE_FORMAT_VERSION}"
            )
        if meta.get("sources") != [vars(s) for s in stamps]:
            raise CorruptCache(f"stale: {path}: the source files changed")
        try:
            sensor = SensorSize(int(meta["width"]), int(meta["height"]))
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptCache(f"corrupt: {path}: no sensor size") from error

        shape, dtype, offset = _read_npy_header(f)
        if dtype != SEGMENT_DTYPE or offset + shape[0] * dtype.itemsize > size:
            raise CorruptCache(f"corrupt: {path}: bad segment table")
        segments = np.frombuffer(f.read(shape[0] * dtype.itemsize), dtype=SEGMENT_DTYPE)

        f.seek(offset + segments.nbytes)
        shape, dtype, offset = _read_npy_header(f)
        allowed = (packed_event_dtype(sensor, "<u4"), packed_event_dtype(sensor, "<i8"))
        if dtype not in allowed or offset + shape[0] * dtype.itemsize != size:
            raise CorruptCache(f"corrupt: {path}: event record does not fill the file")
    ends = segments["first_event"] + segments["event_count"]
    if len(segments) and (
        (segments["first_event"] < 0).any()
        or (segments["event_count"] < 0).any()
        or (ends > shape[0]).any()
    ):
        raise CorruptCache(f"corrupt: {path}: segment table points past the events")
    packed = (
        np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        if shape[0]
        else np.empty(0, dtype)
    )
    return SegmentedRecording(path, sensor, segments.copy(), packed)


def pack_segments(
    sensor: SensorSize,
    starts_us: Sequence[int],
    ends_us: Sequence[int],
    labels: Sequence[int],
    segment_events: Sequence[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The segment table (with CRCs) and the packed events of all segments."""
    counts = np.array([len(e) for e in segment_events], dtype=np.int64)
    table = np.zeros(len(counts), dtype=SEGMENT_DTYPE)
    table["start_us"] = starts_us
    table["end_us"] = ends_us
    table["label"] = labels
    table["first_event"] = np.cumsum(counts) - counts
    table["event_count"] = counts
    # Times relative to each segment's earliest event fit 32 bits unless a
    # segment spans 71 minutes or more; then keep absolute int64 times.
    lows = [int(e["timestamp"].min()) if len(e) else 0 for e in segment_events]
    highs = [int(e["timestamp"].max()) if len(e) else 0 for e in segment_events]
    short = all(high - low < 1 << 32 for low, high in zip(lows, highs, strict=True))
    table["t_base_us"] = lows if short else 0
    time_dtype = "<u4" if short else "<i8"
    packed = np.empty(int(counts.sum()), dtype=packed_event_dtype(sensor, time_dtype))
    for i, events in enumerate(segment_events):
        first = int(table["first_event"][i])
        part = packed[first : first + len(events)]
        part["t"] = events["timestamp"] - table["t_base_us"][i]
        part["x"] = events["x"]
        part["y"] = events["y"]
        part["p"] = events["polarity"]
        table["crc32"][i] = zlib.crc32(part.tobytes())
    return table, packed


def write_segment_cache(
    path: Path,
    stamps: Sequence[SourceStamp],
    sensor: SensorSize,
    starts_us: Sequence[int],
    ends_us: Sequence[int],
    labels: Sequence[int],
    segment_events: Sequence[np.ndarray],
    *,
    version: int = CACHE_FORMAT_VERSION,
) -> None:
    """Write a cache file atomically (``replay.cache_files.written_atomically``).
    ``segment_events[i]`` holds segment ``i``'s events (EVENT_DTYPE).
    ``version`` exists so tests can write an old-version file."""
    table, packed = pack_segments(sensor, starts_us, ends_us, labels, segment_events)
    meta = {
        "format": CACHE_FORMAT_NAME,
        "version": version,
        "sources": [vars(s) for s in stamps],
        "width": sensor.width,
        "height": sensor.height,
    }
    meta_bytes = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with written_atomically(path) as temporary, open(temporary, "wb") as f:
        for record in (meta_bytes, table, packed):
            np.lib.format.write_array(f, record, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class DecodedSegments:
    """What a builder returns: the recording's segments, decoded from source."""

    sensor: SensorSize
    starts_us: np.ndarray
    ends_us: np.ndarray
    labels: np.ndarray
    events: list[np.ndarray]


def load_or_build(
    cache_path: Path,
    sources: Sequence[Path],
    build: Callable[[], DecodedSegments],
    stats: CacheStats | None = None,
    *,
    rebuild_reason: str | None = None,
) -> SegmentedRecording:
    """The cached segments of ``sources`` (the recording and anything else its
    segments depend on, e.g. its labels file), decoding them with ``build``
    and writing the cache when the file is missing, stale, of another version
    or corrupt, or when the caller found it unusable (``rebuild_reason``)."""
    stats = stats if stats is not None else CacheStats()
    stamps = source_stamps(sources)

    def read(path: Path) -> SegmentedRecording:
        return read_segment_cache(path, stamps)

    def decode_and_write(path: Path) -> SegmentedRecording:
        decoded = build()
        try:
            write_segment_cache(
                path,
                stamps,
                decoded.sensor,
                decoded.starts_us,
                decoded.ends_us,
                decoded.labels,
                decoded.events,
            )
        except OSError as error:
            # A read-only or full disk costs speed, not the run: keep them in memory.
            warnings.warn(
                f"cannot write the segment cache {path} ({error}); decoded segments kept "
                "in memory only (set STCSNN_CACHE to a writable folder)",
                stacklevel=4,  # the caller of load_or_build
            )
            table, packed = pack_segments(
                decoded.sensor, decoded.starts_us, decoded.ends_us, decoded.labels, decoded.events
            )
            return SegmentedRecording(Path(path), decoded.sensor, table, packed)
        return read_segment_cache(path, stamps)

    recording, reason = read_or_build(
        Path(cache_path), read, decode_and_write, rebuild_reason=rebuild_reason
    )
    if reason is None:
        stats.hits += 1
    else:
        stats.builds += 1
        stats.reasons.append(reason)
    return recording
