"""Stream-aware training clips (opt-in): a sample as the streaming worker sees it in a replay.

A crop as ``models.clips`` cuts it, preceded by the tails of other random
samples played back to back (as a replay plays them) on a grid at a random
phase to the crop's onset, and scored only from the step holding the onset on
(docs/training.md, "Streaming accuracy").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from core.compress import CompressionConfig
from models.clips import RandomCropClips, compress_span, epoch_and_index, random_crop
from replay.datasets.base import EventDataset, EventSample


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
        epoch, i = epoch_and_index(key)
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
