"""Replay recordings as one live-looking stream: files, folders and playlists, with labels.

``open_replay(path)`` takes a recording file, a folder of recordings (e.g. an
N-MNIST split ``<label>/<id>.bin`` or DVS_Sign ``<class>/<id>.npz``, sorted
deterministically, optionally shuffled with a seed and limited) or a playlist
(a text file of paths), and returns a ``ReplaySource`` (the ``Source``
protocol of ``core/source.py``) for the producer.

Samples play back to back on ONE continuous timeline starting at 0 µs: each
sample's timestamps are shifted so that it starts ``gap_us`` after the
previous one ended (its last event + 1 µs), and a loop's next pass continues
the timeline. Before a sample's first event the source yields its
ground-truth ``Labels`` on that timeline: the whole sample ``[first, last + 1)``
with the class of its ``<label>/`` folder, or the segments of a DVS128
Gesture labels CSV beside the file. Events leave in chunks of
``chunk_us`` of event time on a grid from 0, never spanning two samples.

A file that fails to parse is logged with its name and the error, counted in
``stats`` and skipped; the replay goes on. Missing paths fail before anything
plays.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.events import EventError, SensorSize, concat_events, copy_events
from core.labels import LabelSegment
from core.source import (
    DEFAULT_CHUNK_US,
    DEFAULT_MAX_CHUNK_EVENTS,
    Labels,
    SourceEnd,
    SourceError,
    SourceItem,
    TimeChunker,
)
from replay.paths import natural_key

log = logging.getLogger("stcsnn.replay")

RECORDING_SUFFIXES = (".aedat", ".aedat4", ".aedat3", ".bin", ".bs2", ".npz", ".raw", ".dat", ".es")
PLAYLIST_SUFFIXES = (".txt", ".m3u", ".lst", ".playlist")
READ_CHUNK_EVENTS = 1 << 20  # events per read from a file; bounds memory on long recordings
# A whole-sample label needs the sample's end before its first event is sent,
# so such a sample is read whole first; this bounds that read (256 MiB).
MAX_SAMPLE_EVENTS = 1 << 24


def is_playlist(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in PLAYLIST_SUFFIXES


def recordings_in(folder: Path) -> list[Path]:
    """Recording files under ``folder`` (recursively), in natural order: those
    ending in RECORDING_SUFFIXES, and those without an extension whose content
    is a format we read (an N-MNIST sample saved without its name's end)."""
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and (p.suffix.lower() in RECORDING_SUFFIXES or (not p.suffix and _is_recording(p)))
    ]
    return sorted(files, key=lambda p: natural_key(p.relative_to(folder)))


def _is_recording(path: Path) -> bool:
    from replay.formats import FORMAT_NAMES
    from replay.formats.sniff import sniff_format

    try:
        return sniff_format(path) in FORMAT_NAMES
    except (EventError, OSError):
        return False


def read_playlist(path: Path) -> list[Path]:
    """Paths listed one per line (``#`` comments, blank lines ignored; relative to the
    playlist's folder). A folder entry expands to its recordings. Every entry must exist;
    a text file none of whose lines names an existing path is no playlist (ValueError)."""
    entries: list[Path] = []
    missing: list[str] = []
    named = 0  # non-empty, non-comment lines
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: neither a recording nor a playlist (not text)") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        named += 1
        entry = Path(line).expanduser()
        entry = entry if entry.is_absolute() else path.parent / entry
        if not entry.exists():
            missing.append(f"line {number}: {entry}")
        elif entry.is_dir():
            entries += recordings_in(entry)
        else:
            entries.append(entry)
    if missing and len(missing) == named:
        raise ValueError(
            f"{path}: neither a recording nor a playlist (no line names an existing file, "
            f"e.g. {missing[0]}; recordings end in {', '.join(RECORDING_SUFFIXES)})"
        )
    if missing:
        raise FileNotFoundError(f"{path}: missing recording(s): " + "; ".join(missing))
    return entries


def list_recordings(
    path: str | Path, *, shuffle: bool = False, seed: int = 0, limit: int | None = None
) -> list[Path]:
    """The files a replay of ``path`` plays, in order. Raises before anything plays
    when ``path`` or a playlist entry is missing, or nothing is left to play."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"nothing to replay: {path} does not exist")
    if path.is_dir():
        paths = recordings_in(path)
    elif is_playlist(path):
        paths = read_playlist(path)
    else:
        paths = [path]
    if shuffle:
        random.Random(seed).shuffle(paths)
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        paths = paths[:limit]
    if not paths:
        raise FileNotFoundError(
            f"nothing to replay in {path}: no files ending in {', '.join(RECORDING_SUFFIXES)}"
        )
    return paths


def _sample_labels(path: Path) -> tuple[int | None, list[LabelSegment]]:
    """(whole-sample class or None, segments on the recording's clock) of one file."""
    from replay.formats import labels_for

    found = labels_for(path)
    if found is None:
        return None, []
    if isinstance(found, int):
        return found, []
    return None, found


@dataclass
class ReplayStats:
    samples_played: int = 0
    samples_failed: int = 0
    events: int = 0
    passes: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, error), first 100

    def as_dict(self) -> dict:
        return {
            "samples_played": self.samples_played,
            "samples_failed": self.samples_failed,
            "events": self.events,
            "passes": self.passes,
            "failures": [list(f) for f in self.failures],
        }


class ReplaySource:
    """Recordings played back to back on one timeline (see the module docstring)."""

    live = False

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        chunk_us: int = DEFAULT_CHUNK_US,
        gap_us: int = 0,
        loop: bool = False,
        max_chunk_events: int = DEFAULT_MAX_CHUNK_EVENTS,
        read_chunk_events: int = READ_CHUNK_EVENTS,
        max_sample_events: int = MAX_SAMPLE_EVENTS,
        description: str | None = None,
    ):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("no recordings to replay")
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"nothing to replay: missing {', '.join(missing[:5])}")
        if gap_us < 0:
            raise ValueError(f"gap_us must not be negative, got {gap_us}")
        self.chunk_us = int(chunk_us)
        self.gap_us = int(gap_us)
        self.loop = loop
        self.max_chunk_events = max_chunk_events
        self.read_chunk_events = read_chunk_events
        self.max_sample_events = max_sample_events
        self.stats = ReplayStats()
        self.sensor = self._first_sensor()
        count = len(self.paths)
        self.description = description or (
            f"replay of {self.paths[0].name}"
            if count == 1
            else f"replay of {count} recordings from {self.paths[0].parent}"
        )
        self._cursor_us = 0  # where the next sample starts on the stream timeline

    def _first_sensor(self) -> SensorSize:
        """The stream's sensor: that of the first file that opens."""
        from replay.formats import iter_recording

        for path in self.paths:
            try:
                sensor, chunks = iter_recording(path, chunk_events=self.read_chunk_events)
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
                return SensorSize(int(sensor[0]), int(sensor[1]))
            except Exception as error:  # any unreadable file is skipped and counted
                self._fail(path, error)
        raise SourceError(f"none of the {len(self.paths)} recording(s) could be opened")

    def _fail(self, path: Path, error: Exception) -> None:
        self.stats.samples_failed += 1
        problem = (
            str(error) if isinstance(error, EventError) else f"{type(error).__name__}: {error}"
        )
        if len(self.stats.failures) < 100:
            self.stats.failures.append((str(path), problem))
        log.warning("skipped %s: %s", path, problem)

    def items(self, stop_event: threading.Event) -> Iterator[SourceItem]:
        while not stop_event.is_set():
            played_before = self.stats.samples_played
            self.stats.passes += 1
            for path in self.paths:
                if stop_event.is_set():
                    return
                try:
                    yield from self._sample_items(path)
                except Exception as error:  # readers raise FormatError; anything else is
                    self._fail(path, error)  # a reader's bug, and still only this file
            if self.stats.samples_played == played_before:
                yield SourceEnd(f"replay: none of {len(self.paths)} recording(s) could be played")
                return
            if not self.loop:
                break
        yield SourceEnd(
            f"replay done: {self.stats.samples_played} sample(s) played, "
            f"{self.stats.samples_failed} skipped"
        )

    def _sample_items(self, path: Path) -> Iterator[SourceItem]:
        """Labels, then the shifted chunks of one file; advances the timeline."""
        from replay.formats import iter_recording

        sensor, reads = iter_recording(path, chunk_events=self.read_chunk_events)
        try:
            if tuple(sensor) != tuple(self.sensor):
                raise EventError(
                    str(path),
                    "",
                    f"sensor {SensorSize(*sensor)} differs from the stream's {self.sensor}",
                )
            yield from self._shifted_items(path, reads)
        finally:
            close = getattr(reads, "close", None)  # an AEDAT4 reader holds a child process
            if close is not None:
                close()

    def _shifted_items(self, path: Path, reads) -> Iterator[SourceItem]:
        whole_label, segments = _sample_labels(path)
        if whole_label is not None:
            reads = iter([self._read_whole(path, reads)])
        offset_us = None
        last_us = None
        chunker = TimeChunker(self.chunk_us, 0, self.max_chunk_events)
        for events in reads:
            if len(events) == 0:
                continue
            if offset_us is None:
                offset_us = self._cursor_us - int(events["timestamp"][0])
                first_us = self._cursor_us
                if whole_label is not None:
                    end_us = int(events["timestamp"][-1]) + offset_us + 1
                    segments = [LabelSegment(whole_label, first_us, end_us)]
                else:
                    segments = [
                        LabelSegment(s.label, s.start_us + offset_us, s.end_us + offset_us)
                        for s in segments
                    ]
                if segments:
                    yield Labels(tuple(segments), sample=str(path))
            shifted = copy_events(events)
            shifted["timestamp"] += offset_us
            last_us = int(shifted["timestamp"][-1])
            for chunk in chunker.push(shifted):
                yield chunk
                self.stats.events += len(chunk)
            # A file that fails later still moves the timeline past what was sent.
            self._cursor_us = last_us + 1 + self.gap_us
        for chunk in chunker.flush():
            yield chunk
            self.stats.events += len(chunk)
        if last_us is None:
            raise EventError(str(path), "", "no events")
        self.stats.samples_played += 1

    def _read_whole(self, path: Path, reads) -> np.ndarray:
        parts, total = [], 0
        for events in reads:
            total += len(events)
            if total > self.max_sample_events:
                raise EventError(
                    str(path),
                    f"event {self.max_sample_events}",
                    f"a labelled sample is read whole before it plays; this one has over "
                    f"{self.max_sample_events} events",
                )
            parts.append(events)
        return concat_events(parts)

    def close(self) -> None:
        pass


def open_replay(
    path: str | Path,
    *,
    shuffle: bool = False,
    seed: int = 0,
    limit: int | None = None,
    **options,
) -> ReplaySource:
    """A ``ReplaySource`` over a file, a folder or a playlist (options as ``ReplaySource``)."""
    paths = list_recordings(path, shuffle=shuffle, seed=seed, limit=limit)
    source = ReplaySource(paths, **options)
    if Path(path).is_dir() or is_playlist(Path(path)):
        source.description = f"replay of {len(paths)} recording(s) from {path}"
    return source
