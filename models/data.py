"""Clips for torch: labelled event samples -> the compressed tensors the network trains on.

    EventSample (replay.datasets)          events of the dataset's sensor, [start_us, end_us)
      -> SensorAdapter (core.adapt)    events of the model's input sensor
      -> clip plan                         t0_us and a number of steps on the hop grid
      -> compress_clip (core.compress) float32 [steps, 2, H', W'], current from zero
      -> collate_clips                     ClipBatch: clips [T, B, 2, H', W'], labels [B], steps [B]

Every clip is cut on the streaming worker's grid: one step lasts the hop
``D = compression.step_us = window_us // T``, and ``tau_s`` (default one step)
is the same as the worker's, so training sees exactly the numbers the worker
computes for the same events. Clips differ only in where they start and how
many steps they hold:

- ``whole``: the whole sample from its start, ``max(1, round(duration / D))``
  steps (a sample that does not fill its last step by half loses that tail;
  N-MNIST's ~306 ms samples at W = 300 ms give exactly T steps);
- ``windows``: consecutive windows of T steps from the sample's start,
  ``max(1, round(duration / W))`` of them (the last may run past the end);
- random crops (training): a crop of ``L`` steps, ``L*D`` drawn uniformly in
  ``[crop_min_us, crop_max_us]`` (default: one window, T steps), starting at a
  uniformly drawn µs so that the crop lies inside the sample (or, for a sample
  shorter than the crop, the sample lies inside the crop);
- stream-aware crops (training, opt-in: ``StreamCropClips``): a crop as above,
  preceded by the tails of other random samples played back to back (as a
  replay plays them) on a grid at a random phase to the crop's onset, scored
  only from the step holding the onset on: what the streaming worker sees of
  a sample in the middle of a replay (docs/training.md, "Streaming accuracy").

Clips of different lengths in one batch are padded with zero steps at the end
and ``steps`` says how many are real; the network is causal, so padding after
a clip cannot change its readout on the real steps (``evaluate.mean_readout``).

Deterministic clips (``whole``, ``windows``) are compressed once and kept in an
on-disk ``ClipCache`` keyed by the samples (their sources, labels and file
sizes/mtimes), the compression config and the clip mode: a changed T, tau_s,
mode or file gives a different entry. Random crops are made per epoch in the
DataLoader workers, seeded by (seed, epoch, sample), so a resumed run draws the
same crops as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from core.adapt import SensorAdapter
from core.compress import CompressionConfig, compress_clip
from replay.datasets.base import EventDataset, EventSample, Subset
from replay.datasets.cache import default_cache_dir
from replay.datasets.split import stratified_kfold, stratified_split

ClipMode = Literal["whole", "windows"]
CLIP_MODES: tuple[str, ...] = ("whole", "windows")
CACHE_VERSION = 1
DATASET_NAMES = ("nmnist", "dvsgesture", "cifar10dvs", "dvs_sign")


# ---------------------------------------------------------------- splits


@dataclass(frozen=True)
class SplitSpec:
    """Which samples of a dataset's ``train`` split train and which validate.

    ``limit`` first keeps a stratified, seeded subset of that many samples (for
    CI-sized runs); then either a held-out part (``validation_count`` or
    ``validation_fraction``) or fold ``fold`` of ``folds`` validates. Recorded
    in every checkpoint, so ``stcsnn eval --split val`` rebuilds the same part.
    """

    validation_count: int | None = None
    validation_fraction: float | None = None
    folds: int | None = None
    fold: int | None = None
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        held_out = (self.validation_count is not None) + (self.validation_fraction is not None)
        if self.folds is not None:
            if held_out:
                raise ValueError("give either a validation count/fraction or folds, not both")
            if self.fold is None or not 0 <= self.fold < self.folds:
                raise ValueError(f"fold must be in 0..{self.folds - 1}, found {self.fold}")
        elif self.fold is not None:
            raise ValueError("fold needs folds")
        elif held_out > 1:
            raise ValueError("give validation_count or validation_fraction, not both")

    @property
    def has_validation(self) -> bool:
        if self.folds is not None:
            return True
        if self.validation_count is not None:
            return self.validation_count > 0
        return bool(self.validation_fraction)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitSpec:
        return cls(**data)


def default_split(dataset: str) -> SplitSpec:
    """N-MNIST here has 1,000 samples: hold out 100 (data README); others 10%."""
    if dataset == "nmnist":
        return SplitSpec(validation_count=100)
    return SplitSpec(validation_fraction=0.1)


def stratified_subset(labels: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded subset of ``count`` samples (all if None or more)."""
    n = len(labels)
    if count is None or count >= n:
        return np.arange(n, dtype=np.int64)
    if count < 1:
        raise ValueError(f"limit must be >= 1, found {count}")
    return stratified_split(labels, validation_count=count, seed=seed)[1]


def open_events(name: str, root: str | os.PathLike, split: str, **kw: Any) -> EventDataset:
    """The registry's dataset, with a clear error for an unknown name."""
    from replay.datasets import open_dataset

    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    return open_dataset(name, root, split, **kw)


def split_parts(dataset: EventDataset, spec: SplitSpec) -> tuple[EventDataset, EventDataset | None]:
    """``(train part, validation part or None)`` of a dataset's train split."""
    kept = stratified_subset(dataset.labels, spec.limit, spec.seed)
    labels = dataset.labels[kept]
    if not spec.has_validation:
        return Subset(dataset, kept), None
    if spec.folds is not None:
        train_idx, val_idx = stratified_kfold(labels, spec.folds, seed=spec.seed)[spec.fold]
    elif spec.validation_count is not None:
        train_idx, val_idx = stratified_split(
            labels, validation_count=spec.validation_count, seed=spec.seed
        )
    else:
        train_idx, val_idx = stratified_split(
            labels, validation_fraction=spec.validation_fraction, seed=spec.seed
        )
    return Subset(dataset, kept[train_idx]), Subset(dataset, kept[val_idx])


def open_part(
    name: str, root: str | os.PathLike, part: str, spec: SplitSpec, **kw: Any
) -> EventDataset:
    """Samples of ``part``: ``train`` / ``val`` (the parts of the dataset's train
    split that ``spec`` makes) or ``test`` (the dataset's own test split)."""
    if part == "test":
        return open_events(name, root, "test", **kw)
    if part not in ("train", "val"):
        raise ValueError(f"part must be train, val or test, found {part!r}")
    train, val = split_parts(open_events(name, root, "train", **kw), spec)
    if part == "val":
        if val is None:
            raise ValueError("this split holds out no validation samples")
        return val
    return train


# ---------------------------------------------------------------- clips


@lru_cache(maxsize=256)
def _steps_config(compression: CompressionConfig, steps: int) -> CompressionConfig:
    """The compression for a clip of ``steps`` hops: same hop and tau_s, other T."""
    hop = compression.step_us
    tau = compression.tau_us() if compression.tau_s_us is None else compression.tau_s_us
    return dataclasses.replace(compression, steps=steps, window_us=steps * hop, tau_s_us=tau)


def compress_span(
    events: np.ndarray, compression: CompressionConfig, t0_us: int, steps: int
) -> np.ndarray:
    """``steps`` hops from ``t0_us`` -> float32 ``[steps, 2, H', W']``, current from
    zero; ``events`` already in the model's input sensor."""
    config = _steps_config(compression, steps)
    return compress_clip(events, config, t0_us=t0_us, window_us=config.window_us)


def plan_clips(
    start_us: int, end_us: int, compression: CompressionConfig, mode: str
) -> list[tuple[int, int]]:
    """``(t0_us, steps)`` of each deterministic clip of a sample covering ``[start, end)``."""
    hop = compression.step_us
    duration = max(end_us - start_us, 0)
    if mode == "whole":
        return [(start_us, max(1, round(duration / hop)))]
    if mode == "windows":
        window = compression.steps * hop
        count = max(1, round(duration / window))
        return [(start_us + i * window, compression.steps) for i in range(count)]
    raise ValueError(f"clip mode must be one of {CLIP_MODES}, found {mode!r}")


def random_crop(
    start_us: int,
    end_us: int,
    hop_us: int,
    crop_us: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[int, int]:
    """``(t0_us, steps)`` of a random crop: ``steps`` hops with ``steps * hop``
    uniform in ``crop_us`` (whole hops, at least one), placed uniformly so that
    crop and sample overlap as fully as their lengths allow."""
    low = max(1, math.ceil(crop_us[0] / hop_us))
    high = max(low, math.floor(crop_us[1] / hop_us))
    steps = int(rng.integers(low, high + 1))
    slack = (end_us - start_us) - steps * hop_us  # < 0: the crop is longer than the sample
    first, last = (start_us, start_us + slack) if slack >= 0 else (start_us + slack, start_us)
    return int(rng.integers(first, last + 1)), steps


def parse_us_range(text: str, what: str) -> tuple[int, int]:
    """``"MIN:MAX"`` or ``"LEN"`` (µs) -> ``(min, max)``; a ValueError naming ``what``
    for anything else (the caller checks the values)."""
    try:
        values = [int(float(part)) for part in str(text).split(":")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise ValueError(f"{what} must be MIN:MAX or LEN in µs, found {text!r}")
    return values[0], values[1]


def parse_crop_us(text: str | None) -> tuple[int, int] | None:
    """``"MIN:MAX"`` or ``"LEN"`` (µs) -> ``(min, max)``; ``"off"``/``None`` -> None."""
    if text is None or str(text).lower() in ("off", "none", "whole"):
        return None
    low, high = parse_us_range(text, "crop (or off)")
    if not 0 < low <= high:
        raise ValueError(f"crop must be MIN:MAX with 0 < MIN <= MAX µs, found {text!r}")
    return low, high


class ClipBatch(NamedTuple):
    """A batch, time-major as the network takes it."""

    clips: torch.Tensor  # [T, B, 2, H', W'] float32; clip b is real for its first steps[b] steps
    labels: torch.Tensor  # [B] int64
    steps: torch.Tensor  # [B] int64

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipBatch:
        return ClipBatch(*(t.to(device, non_blocking=non_blocking) for t in self))


def collate_clips(items: Sequence[tuple[torch.Tensor, int, int]]) -> ClipBatch:
    """``(clip [n, 2, H', W'], label, n)`` items -> a ``ClipBatch`` padded with zero
    steps at the end to the longest clip."""
    longest = max(int(n) for _, _, n in items)
    first = items[0][0]
    clips = torch.zeros((longest, len(items), *first.shape[1:]), dtype=first.dtype)
    for b, (clip, _, n) in enumerate(items):
        clips[: int(n), b] = clip
    labels = torch.tensor([int(label) for _, label, _ in items], dtype=torch.int64)
    steps = torch.tensor([int(n) for _, _, n in items], dtype=torch.int64)
    return ClipBatch(clips, labels, steps)


def _index(key: int | tuple[int, int]) -> tuple[int, int]:
    """Samplers here yield ``(epoch, index)`` so that worker processes know the epoch."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return 0, int(key)


class RandomCropClips(Dataset):
    """Random temporal crops of ``samples``, drawn afresh each epoch (training)."""

    def __init__(
        self,
        samples: EventDataset,
        compression: CompressionConfig,
        crop_us: tuple[int, int] | None = None,
        *,
        seed: int = 0,
    ):
        self.samples = samples
        self.compression = compression
        window = compression.steps * compression.step_us
        self.crop_us = crop_us or (window, window)
        self.seed = int(seed)
        self.adapter = SensorAdapter(samples.sensor, compression.input_sensor)
        self.labels = np.asarray(samples.labels)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        epoch, i = _index(key)
        sample: EventSample = self.samples[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        t0, steps = random_crop(
            sample.start_us, sample.end_us, self.compression.step_us, self.crop_us, rng
        )
        # Cut before adapting: a crop of a long recording touches few of its events.
        first, last = np.searchsorted(
            sample.events["timestamp"], [t0, t0 + steps * self.compression.step_us]
        )
        events = self.adapter(sample.events[first:last])
        clip = compress_span(events, self.compression, t0, steps)
        return torch.from_numpy(clip), sample.label, steps


# ---------------------------------------------------------------- stream-aware crops


@dataclass(frozen=True)
class StreamCrop:
    """Where a stream-aware training clip lies (``stream_crop_plan``): steps of the
    hop from ``t0_us``; the target's onset falls in step ``first``, and steps
    ``first .. scored - 1`` are the ones the worker scores against its label."""

    t0_us: int
    first: int
    scored: int
    onset_us: int


def stream_crop_plan(
    onset_us: int, end_us: int, context_us: int, hop_us: int, phase_us: int
) -> StreamCrop:
    """The grid of a stream-aware clip: ``context_us`` of stream before the onset,
    step boundaries at ``onset - phase + k * hop`` (the worker aligns its grid to
    multiples of the hop, so a sample in a replay starts at any phase of a step),
    scored up to the last step that ends by ``end_us``, as the last prediction
    the worker scores for a sample is (at least one step from the onset)."""
    if not 0 <= phase_us < hop_us:
        raise ValueError(f"phase_us must be in [0, {hop_us}), found {phase_us}")
    first = math.ceil(max(context_us - phase_us, 0) / hop_us)
    t0 = onset_us - phase_us - first * hop_us
    scored = max(first + 1, (end_us - t0) // hop_us)
    return StreamCrop(int(t0), int(first), int(scored), int(onset_us))


def replay_pieces(
    samples: EventDataset,
    at_us: int,
    length_us: int,
    gap_us: int,
    rng: np.random.Generator,
    *,
    before: bool,
    exclude: int | None = None,
) -> list[np.ndarray]:
    """``length_us`` of random samples (not ``exclude``) played back to back as
    ``replay.player`` plays them (a sample's last event + 1 µs + gap = the next
    one's first event), ending ``gap_us`` before ``at_us`` (``before``: the
    samples' tails) or starting ``gap_us`` after it (their heads), on the
    caller's clock. The pieces in time order, in the dataset's sensor."""
    pieces: list[np.ndarray] = []
    cursor = at_us - gap_us if before else at_us + gap_us
    needed = length_us
    candidates = len(samples) - (exclude is not None and 0 <= exclude < len(samples))
    while needed > 0 and candidates > 0:
        j = int(rng.integers(len(samples)))
        if j == exclude:
            continue
        other: EventSample = samples[j]
        span = max(1, min(needed, other.duration_us))
        if before:
            piece = other.window(other.end_us - span, other.end_us).events.copy()
            piece["timestamp"] += cursor - other.end_us
            cursor -= span + gap_us
        else:
            piece = other.window(other.start_us, other.start_us + span).events.copy()
            piece["timestamp"] += cursor - other.start_us
            cursor += span + gap_us
        pieces.append(piece)
        needed -= span + gap_us
    return pieces[::-1] if before else pieces


class StreamCropClips(RandomCropClips):
    """Random crops as the streaming worker sees samples in a replay (opt-in training).

    With probability ``probability`` an item is a *stream clip*: the target crop
    (drawn as ``RandomCropClips`` draws it, limited to the sample) is preceded by
    ``context_us`` (uniform in the range) of other random samples played back to
    back with ``gap_us`` between them, on a grid at a uniform phase to the
    target's onset (``random_phase``; else the grid starts at the onset), and
    scored from the step holding the onset to the last step ending in the
    sample. Otherwise it is the plain random crop, scored on all its steps.
    Current and network state start from zero at the clip's first step.

    Every item has the same ``total_steps``: after the scored steps the clip
    goes on with the rest of the sample and the next random samples of the
    replay (never scored; the network is causal), so a batch needs no zero
    padding, which would enter the BatchNorm statistics in training. Items are
    ``(clip [total_steps, 2, H', W'], label, scored, first)``: the label holds
    for steps ``first .. scored - 1`` (``collate_stream_clips``). Seeded by
    ``(seed, epoch, sample)`` like the plain crops, whose ``(t0, steps)`` a
    plain item keeps.
    """

    def __init__(
        self,
        samples: EventDataset,
        compression: CompressionConfig,
        crop_us: tuple[int, int] | None = None,
        *,
        probability: float = 1.0,
        context_us: tuple[int, int] | None = None,
        gap_us: int = 0,
        random_phase: bool = True,
        seed: int = 0,
    ):
        super().__init__(samples, compression, crop_us, seed=seed)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"stream context probability must be in [0, 1], found {probability}")
        hop = compression.step_us
        self.context_us = context_us if context_us is not None else (0, compression.steps * hop)
        if not 0 <= self.context_us[0] <= self.context_us[1]:
            raise ValueError(f"stream context must be 0 <= MIN <= MAX µs, found {context_us}")
        if gap_us < 0:
            raise ValueError(f"stream gap must be >= 0 µs, found {gap_us}")
        self.probability = float(probability)
        self.gap_us = int(gap_us)
        self.random_phase = bool(random_phase)
        crop_steps = max(1, math.floor(self.crop_us[1] / hop), math.ceil(self.crop_us[0] / hop))
        self.total_steps = math.ceil(self.context_us[1] / hop) + crop_steps + 1

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int, int]:
        epoch, i = _index(key)
        sample: EventSample = self.samples[i]
        hop = self.compression.step_us
        rng = np.random.default_rng([self.seed, epoch, i])
        stream = rng.random() < self.probability
        # The plain crop's draw is RandomCropClips': same (seed, epoch, sample), same crop.
        plain_rng = np.random.default_rng([self.seed, epoch, i])
        t0, steps = random_crop(
            sample.start_us, sample.end_us, hop, self.crop_us, rng if stream else plain_rng
        )
        context = 0
        if stream:
            onset, end = max(t0, sample.start_us), min(t0 + steps * hop, sample.end_us)
            context = int(rng.integers(self.context_us[0], self.context_us[1] + 1))
            phase = int(rng.integers(hop)) if self.random_phase else 0
            plan = stream_crop_plan(onset, end, context, hop, phase)
        else:
            plan = StreamCrop(t0, 0, steps, t0)
        clip_end = plan.t0_us + self.total_steps * hop
        before = (
            replay_pieces(
                self.samples, plan.onset_us, context, self.gap_us, rng, before=True, exclude=i
            )
            if context
            else []
        )
        t = sample.events["timestamp"]
        first, last = np.searchsorted(t, [plan.onset_us, clip_end])
        after_us = clip_end - sample.end_us
        after = (
            replay_pieces(
                self.samples, sample.end_us, after_us, self.gap_us, rng, before=False, exclude=i
            )
            if after_us > 0
            else []
        )
        events = np.concatenate([*before, sample.events[first:last], *after])
        t = events["timestamp"]
        events = events[(t >= plan.t0_us) & (t < clip_end)]
        clip = compress_span(self.adapter(events), self.compression, plan.t0_us, self.total_steps)
        return torch.from_numpy(clip), sample.label, plan.scored, plan.first


class StreamClipBatch(NamedTuple):
    """A batch of stream-aware clips, each scored on steps ``first[b] .. steps[b] - 1``."""

    clips: torch.Tensor  # [T, B, 2, H', W'] float32: real events on every step
    labels: torch.Tensor  # [B] int64
    steps: torch.Tensor  # [B] int64: the step after the last scored one
    first: torch.Tensor  # [B] int64: the first scored step (it holds the target's onset)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> StreamClipBatch:
        return StreamClipBatch(*(t.to(device, non_blocking=non_blocking) for t in self))


def collate_stream_clips(items: Sequence[tuple[torch.Tensor, int, int, int]]) -> StreamClipBatch:
    """``(clip, label, scored, first)`` items of one length -> a ``StreamClipBatch``."""
    clips = torch.stack([item[0] for item in items], dim=1)
    labels = torch.tensor([int(item[1]) for item in items], dtype=torch.int64)
    steps = torch.tensor([int(item[2]) for item in items], dtype=torch.int64)
    first = torch.tensor([int(item[3]) for item in items], dtype=torch.int64)
    return StreamClipBatch(clips, labels, steps, first)


# ---------------------------------------------------------------- clip cache


def _source_stamps(samples: EventDataset) -> list[list]:
    """Path, size and mtime of every file behind ``samples`` (once per file)."""
    stamps, seen = [], set()
    for source in samples.sources:
        path = Path(source.path)
        if path in seen:
            continue
        seen.add(path)
        info = path.stat()
        stamps.append([str(path.resolve()), info.st_size, info.st_mtime_ns])
    return stamps


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
        "files": _source_stamps(samples),
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

    @property
    def sample_of_clip(self) -> np.ndarray:
        return self.index[:, 0]

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
        if (path / "index.npy").is_file():
            try:
                index = np.load(path / "index.npy")
                return cls(path, shape, index), True
            except (OSError, ValueError):  # truncated by a crash: rebuild
                shutil.rmtree(path, ignore_errors=True)
        _build_entry(path, key, samples, compression, mode, workers, progress)
        return cls(path, shape, np.load(path / "index.npy")), False


def _identity(item):
    return item


def _build_entry(
    path: Path,
    key: dict[str, Any],
    samples: EventDataset,
    compression: CompressionConfig,
    mode: str,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        loader = DataLoader(
            _SampleClips(samples, compression, mode),
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
        )
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
        try:
            os.rename(tmp, path)
        except OSError:  # another process built it first: theirs is as good
            if not (path / "index.npy").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class CachedClips(Dataset):
    """The clips of a ``ClipCache`` as torch items ``(clip [n, 2, H', W'], label, n)``."""

    def __init__(self, cache: ClipCache):
        self.cache = cache
        self.labels = cache.labels

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        _, i = _index(key)
        clip, label, steps = self.cache.clip(i)
        return torch.from_numpy(np.array(clip)), label, steps


# ---------------------------------------------------------------- loading


class ShardSampler(Sampler):
    """Every index once, in order, shard ``rank`` of ``world`` (``rank::world``):
    evaluation under DDP counts each sample exactly once (DistributedSampler
    would pad with repeats)."""

    def __init__(self, length: int, rank: int = 0, world: int = 1):
        self.indices = list(range(rank, length, world))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


class EpochSampler(Sampler):
    """``DistributedSampler`` order (seeded shuffle per epoch, shard of this rank)
    yielding ``(epoch, index)``, so random crops in worker processes know the epoch."""

    def __init__(self, length: int, *, seed: int, rank: int = 0, world: int = 1):
        self.inner = DistributedSampler(
            range(length), num_replicas=world, rank=rank, shuffle=True, seed=seed
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        return ((self.epoch, int(i)) for i in self.inner)


def default_workers(local_world: int = 1) -> int:
    """Loader processes: none on a small machine (they would compete with the
    model for the cores), else up to 8 per process."""
    cpus = os.cpu_count() or 1
    if cpus <= 4:
        return 0
    return max(0, min(8, cpus // max(local_world, 1) - 2))


def clip_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world: int = 1,
    collate_fn: Callable = collate_clips,
) -> DataLoader:
    """Batches of ``ClipBatch``: training shuffles per epoch (``loader.sampler.set_epoch``)
    and drops a last partial batch; evaluation keeps order and every sample.
    (``collate_stream_clips`` for ``StreamCropClips``.)"""
    sampler = (
        EpochSampler(len(dataset), seed=seed, rank=rank, world=world)
        if train
        else ShardSampler(len(dataset), rank, world)
    )
    extra = {"persistent_workers": True, "prefetch_factor": 4} if workers > 0 else {}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        drop_last=train and len(sampler) > batch_size,
        **extra,
    )


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
