"""Clips for torch: labelled event samples -> the compressed tensors the network trains on.

    EventSample (replay.datasets)      events of the dataset's sensor, [start_us, end_us)
      -> SensorAdapter (core.adapt)    events of the model's input sensor
      -> clip plan                     t0_us and a number of steps on the hop grid
      -> compress_clip (core.compress) float32 [steps, 2, H', W'], current from zero
      -> collate_clips                 ClipBatch: clips [T, B, 2, H', W'], labels [B], steps [B]

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
- random crops (training, ``RandomCropClips``): a crop of ``L`` steps, ``L*D``
  drawn uniformly in ``[crop_min_us, crop_max_us]`` (default: one window, T
  steps), starting at a uniformly drawn µs so that the crop lies inside the
  sample (or, for a sample shorter than the crop, the sample lies inside the
  crop);
- stream-aware crops (training, opt-in): ``models.stream_clips``;
- random crops may be augmented (opt-in, ``models.augment``).

Clips of different lengths in one batch are padded with zero steps at the end
and ``steps`` says how many are real; the network is causal, so padding after
a clip cannot change its readout on the real steps (``evaluate.mean_readout``).

Deterministic clips (``whole``, ``windows``) are compressed once and kept on
disk (``models.clip_cache``). Random crops are made per epoch in the
DataLoader workers, seeded by (seed, epoch, sample), so a resumed run draws
the same crops as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from core.adapt import SensorAdapter
from core.compress import CompressionConfig, compress_clip
from models.augment import EventAugment
from replay.datasets.base import EventDataset, EventSample

CLIP_MODES: tuple[str, ...] = ("whole", "windows")


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


def epoch_and_index(key: int | tuple[int, int]) -> tuple[int, int]:
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
        augment: EventAugment | None = None,
    ):
        self.samples = samples
        self.compression = compression
        self.augment = augment
        window = compression.steps * compression.step_us
        self.crop_us = crop_us or (window, window)
        self.seed = int(seed)
        self.adapter = SensorAdapter(samples.sensor, compression.input_sensor)
        self.labels = np.asarray(samples.labels)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        epoch, i = epoch_and_index(key)
        sample: EventSample = self.samples[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        t0, steps = random_crop(
            sample.start_us, sample.end_us, self.compression.step_us, self.crop_us, rng
        )
        duration = steps * self.compression.step_us
        speed = self.augment.draw_stretch(rng) if self.augment else 1.0
        # Cut before adapting: a crop of a long recording touches few of its events.
        first, last = np.searchsorted(
            sample.events["timestamp"], [t0, t0 + math.ceil(duration / speed)]
        )
        events = self.adapter(sample.events[first:last])
        if self.augment:
            sensor = self.compression.input_sensor
            events = self.augment.apply(events, sensor, t0, speed, duration, rng)
        clip = compress_span(events, self.compression, t0, steps)
        return torch.from_numpy(clip), sample.label, steps
