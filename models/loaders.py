"""DataLoaders of clip batches: samplers that hand the epoch to the workers, and shards for DDP."""

from __future__ import annotations

import os
from collections.abc import Callable

from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from models.clips import collate_clips


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
