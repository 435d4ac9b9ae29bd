"""The clip cache: the deterministic clips (``whole``, ``windows``) of some samples,
compressed once and kept on disk.

An entry is keyed by the samples (their sources, labels and the stamps of
their files), the compression config and the clip mode, hashed into its
folder's name: a changed T, tau_s, mode or file gives a different entry. It is
written and reused with the mechanism of ``replay.cache_files`` (atomic
folder, rebuilt when corrupt).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.adapt import SensorAdapter
from core.compress import CompressionConfig
from models.clips import CLIP_MODES, compress_span, epoch_and_index, plan_clips
from replay.cache_files import (
    CorruptCache,
    default_cache_dir,
    read_or_build,
    source_stamps,
    written_atomically,
)
from replay.datasets.base import EventDataset

CACHE_VERSION = 1


def clip_cache_key(
    samples: EventDataset, compression: CompressionConfig, mode: str, name: str = ""
) -> dict[str, Any]:
    """Everything that decides the cached clips' values (hashed into the entry's name)."""
    return {
        "version": CACHE_VERSION,
        "name": name,
        "mode": mode,
        "compression": dataclasses.asdict(compression),
        "sensor": list(samples.sensor),
        "sources": [str(s) for s in samples.sources],
        "labels": np.asarray(samples.labels).tolist(),
        "files": [
            [stamp.path, stamp.size, stamp.mtime_ns]
            for stamp in source_stamps(source.path for source in samples.sources)
        ],
    }


class _SampleClips(Dataset):
    """Sample ``i`` -> its deterministic clips (for building the cache in workers)."""

    def __init__(self, samples: EventDataset, compression: CompressionConfig, mode: str):
        self.samples = samples
        self.compression = compression
        self.mode = mode
        self.adapter = SensorAdapter(samples.sensor, compression.input_sensor)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[int, list[tuple[int, int]], np.ndarray]:
        sample = self.samples[i]
        events = self.adapter(sample.events)
        plan = plan_clips(sample.start_us, sample.end_us, self.compression, self.mode)
        clips = [compress_span(events, self.compression, t0, n) for t0, n in plan]
        return sample.label, plan, np.concatenate(clips)


class ClipCache:
    """The deterministic clips of some samples, on disk.

    An entry is a folder ``<cache_dir>/clips/<name>-<mode>-T<T>-<hash>/`` with
    ``clips.f32`` (all clips' steps, float32 ``[total_steps, 2, H', W']``, read
    as a memory map), ``index.npy`` (per clip: sample, t0_us, steps, first
    step, label) and ``key.json`` (what the hash covers). It is written to a
    temporary folder and renamed into place, so a reader never sees half an entry.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], index: np.ndarray):
        self.path = path
        self.index = index
        total = int(index[:, 2].sum()) if len(index) else 0
        self.clips = (
            np.memmap(path / "clips.f32", dtype=np.float32, mode="r", shape=(total, *shape))
            if total
            else np.zeros((0, *shape), np.float32)
        )

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray:
        return self.index[:, 4]

    def clip(self, i: int) -> tuple[np.ndarray, int, int]:
        _, _, steps, first, label = (int(v) for v in self.index[i])
        return self.clips[first : first + steps], label, steps

    @classmethod
    def open(
        cls,
        samples: EventDataset,
        compression: CompressionConfig,
        mode: str,
        *,
        name: str = "clips",
        cache_dir: str | os.PathLike | None = None,
        workers: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[ClipCache, bool]:
        """The cache entry for these samples and settings, built when missing;
        returns ``(cache, hit)``."""
        if mode not in CLIP_MODES:
            raise ValueError(f"clip mode must be one of {CLIP_MODES}, found {mode!r}")
        key = clip_cache_key(samples, compression, mode, name)
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "clips"
        safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        path = root / f"{safe_name}-{mode}-T{compression.steps}-{digest}"
        shape = compression.output_shape

        def build(path: Path) -> ClipCache:
            _write_entry(path, key, samples, compression, mode, workers, progress)
            return cls.read(path, shape)

        cache, rebuilt = read_or_build(path, partial(cls.read, shape=shape), build)
        return cache, rebuilt is None

    @classmethod
    def read(cls, path: Path, shape: tuple[int, ...]) -> ClipCache:
        """The entry at ``path``; FileNotFoundError when there is none, CorruptCache
        (after removing it, so that it can be built again) when it is damaged."""
        try:
            index = np.load(path / "index.npy")
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as error:  # truncated by a crash: rebuild
            shutil.rmtree(path, ignore_errors=True)
            raise CorruptCache(f"corrupt: {path}: {error}") from error
        return cls(path, shape, index)


def _identity(item):
    return item


def _write_entry(
    path: Path,
    key: dict[str, Any],
    samples: EventDataset,
    compression: CompressionConfig,
    mode: str,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    loader = DataLoader(
        _SampleClips(samples, compression, mode),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
    )
    with written_atomically(path, folder=True) as tmp:
        rows, first = [], 0
        with open(tmp / "clips.f32", "wb") as out:
            for i, (label, plan, clips) in enumerate(loader):
                out.write(np.ascontiguousarray(clips, dtype=np.float32).tobytes())
                for t0, steps in plan:
                    rows.append((i, t0, steps, first, label))
                    first += steps
                if progress is not None:
                    progress(i + 1, len(samples))
        np.save(tmp / "index.npy", np.array(rows, dtype=np.int64).reshape(-1, 5))
        (tmp / "key.json").write_text(json.dumps(key))


class CachedClips(Dataset):
    """The clips of a ``ClipCache`` as torch items ``(clip [n, 2, H', W'], label, n)``."""

    def __init__(self, cache: ClipCache):
        self.cache = cache
        self.labels = cache.labels

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        _, i = epoch_and_index(key)
        clip, label, steps = self.cache.clip(i)
        return torch.from_numpy(np.array(clip)), label, steps


def cached_clips(
    samples: EventDataset,
    compression: CompressionConfig,
    mode: str = "whole",
    *,
    name: str = "clips",
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    log: Callable[[str], None] | None = None,
) -> CachedClips:
    """``CachedClips`` for ``samples``, building the cache entry (with a progress
    line through ``log``) when it is missing."""
    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if log is not None and (done == total or now - last[0] > 5):
            last[0] = now
            log(f"compressing {name} ({mode}, T={compression.steps}): {done}/{total} samples")

    cache, hit = ClipCache.open(
        samples,
        compression,
        mode,
        name=name,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
    )
    if log is not None:
        took = time.perf_counter() - started
        what = "reused" if hit else "built"
        log(f"clip cache {what}: {cache.path} ({len(cache)} clips, {took:.1f} s)")
    return CachedClips(cache)
