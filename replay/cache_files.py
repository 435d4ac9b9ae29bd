"""Cache entries on disk: the one mechanism both caches use, the segment cache of
recordings (``replay.datasets.cache``) and the clip cache of compressed clips
(``models.clip_cache``).

- **Staleness key**: an entry depends on source files, identified by their
  resolved path, size and ``mtime_ns`` (``SourceStamp``), not by a content
  hash: every rewrite of a file changes its mtime, and hashing part of a file
  would cost I/O on every open yet still miss a change in the untouched
  middle. (Copying a dataset with ``cp -p`` or ``rsync -t`` keeps both and
  reuses the cache, as it should.) An entry records the stamps it was built
  from, in its header or in its name.
- **Atomic write** (``written_atomically``): an entry, a file or a folder, is
  written under a temporary name in its own folder and renamed into place, so
  a killed writer leaves the old entry or the new one, never half of one, and
  two processes building the same entry both succeed. Temporaries that killed
  writers left behind are removed by a later write once they are old.
- **Load if fresh** (``read_or_build``): an entry is read when it is there and
  usable, and built again when it is missing, stale, of another version or
  corrupt (the reader raises ``CorruptCache`` saying which), never trusted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

Entry = TypeVar("Entry")

# A temporary file or folder untouched this long belongs to a killed writer.
ABANDONED_TEMPORARY_S = 600


def default_cache_dir() -> Path:
    """``$STCSNN_CACHE``, else ``~/.cache/stcsnn``."""
    configured = os.environ.get("STCSNN_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "stcsnn"


@dataclass(frozen=True)
class SourceStamp:
    """What identifies a version of a source file: its path, size and mtime."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> SourceStamp:
        info = Path(path).stat()
        return cls(str(Path(path).resolve()), info.st_size, info.st_mtime_ns)


def source_stamps(paths: Iterable[str | os.PathLike]) -> list[SourceStamp]:
    """The staleness key of an entry built from ``paths``: each file's stamp, once
    per file (many samples may share one recording), in first-seen order."""
    stamps, seen = [], set()
    for path in map(Path, paths):
        if path not in seen:
            seen.add(path)
            stamps.append(SourceStamp.of(path))
    return stamps


class CorruptCache(Exception):
    """A cache entry cannot be used; the message starts with why (``stale``,
    ``version``, ``corrupt``). Callers rebuild it."""


def _last_touched_ns(path: Path) -> int:
    """The newest mtime of ``path`` and, for a folder, of the files in it (a file
    being filled in a temporary folder leaves the folder's own mtime behind)."""
    times = [path.stat().st_mtime_ns]
    if path.is_dir():
        times += [child.stat().st_mtime_ns for child in path.iterdir()]
    return max(times)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_abandoned_temporaries(path: Path) -> None:
    """Delete temporaries that killed writers of ``path`` left behind (old enough
    that no live writer can still be filling them)."""
    now_ns = time.time_ns()
    for temporary in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):  # another writer removed it
            if now_ns - _last_touched_ns(temporary) > ABANDONED_TEMPORARY_S * 1_000_000_000:
                _remove(temporary)


@contextlib.contextmanager
def written_atomically(
    path: str | os.PathLike, *, folder: bool = False, durable: bool = False
) -> Iterator[Path]:
    """A temporary file name (``folder``: an empty temporary folder) beside ``path``
    to write the entry to; renamed to ``path`` when the block ends, removed when
    it raises. A file replaces the one there; a folder that another process
    renamed into place first is kept (built for the same name, so as good).
    Each writer has its own temporary name, so two writers never mix their bytes.
    ``durable``: the file is fsynced before the rename and the folder after it,
    so that a crash leaves the old entry or the whole new one, never an empty file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    if folder:
        temporary.mkdir()
    try:
        yield temporary
        if durable and not folder:
            _fsync(temporary)
        try:
            os.replace(temporary, path)
        except OSError:
            if not (folder and path.is_dir()):
                raise
        if durable:
            _fsync(path.parent)
    finally:
        _remove(temporary)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_or_build(
    path: Path,
    read: Callable[[Path], Entry],
    build: Callable[[Path], Entry],
    *,
    rebuild_reason: str | None = None,
) -> tuple[Entry, str | None]:
    """``(read(path), None)`` when the entry is there and fresh; else ``(build(path),
    why)``, ``why`` starting with ``missing``, ``unreadable`` or the reader's
    ``CorruptCache`` message. ``rebuild_reason``: the caller found the entry
    unusable itself; build without reading."""
    reason = rebuild_reason
    if reason is None:
        try:
            return read(path), None
        except FileNotFoundError:
            reason = f"missing: {path}"
        except OSError as error:
            reason = f"unreadable: {path}: {error}"
        except CorruptCache as error:
            reason = str(error)
    return build(path), reason
