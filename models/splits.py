"""Which samples train and which validate: the split of a dataset's ``train`` split.

``SplitSpec`` is plain data recorded in every checkpoint, so ``stcsnn eval
--split val`` rebuilds exactly the samples a run validated on; ``open_part``
opens one part (``train``, ``val``, or the dataset's own ``test`` split).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from replay.datasets.base import EventDataset, Subset
from replay.datasets.split import grouped_stratified_kfold, stratified_kfold, stratified_split

DATASET_NAMES = ("nmnist", "dvsgesture", "cifar10dvs", "dvs_sign")


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
    grouped: bool = False  # folds that keep each recording session together

    def __post_init__(self) -> None:
        if self.grouped and self.folds is None:
            raise ValueError("grouped splits need folds")
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
        out = dataclasses.asdict(self)
        if not self.grouped:  # as recorded before grouped splits existed (resume compares)
            del out["grouped"]
        return out

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


def split_indices(dataset: EventDataset, spec: SplitSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """``(train indices, validation indices or None)`` into a dataset's train split."""
    kept = stratified_subset(dataset.labels, spec.limit, spec.seed)
    labels = dataset.labels[kept]
    if not spec.has_validation:
        return kept, None
    if spec.grouped:
        groups = getattr(dataset, "groups", None)
        if groups is None:
            raise ValueError(
                f"{type(dataset).__name__} has no recording groups for a grouped split"
            )
        train_idx, val_idx = grouped_stratified_kfold(
            labels, np.asarray(groups)[kept], spec.folds, seed=spec.seed
        )[spec.fold]
    elif spec.folds is not None:
        train_idx, val_idx = stratified_kfold(labels, spec.folds, seed=spec.seed)[spec.fold]
    elif spec.validation_count is not None:
        train_idx, val_idx = stratified_split(
            labels, validation_count=spec.validation_count, seed=spec.seed
        )
    else:
        train_idx, val_idx = stratified_split(
            labels, validation_fraction=spec.validation_fraction, seed=spec.seed
        )
    return kept[train_idx], kept[val_idx]


def split_parts(dataset: EventDataset, spec: SplitSpec) -> tuple[EventDataset, EventDataset | None]:
    """``(train part, validation part or None)`` of a dataset's train split."""
    train_idx, val_idx = split_indices(dataset, spec)
    return Subset(dataset, train_idx), None if val_idx is None else Subset(dataset, val_idx)


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


def checkpoint_part_files(extra: dict[str, Any], part: str) -> set[Path] | None:
    """The files (resolved) of ``part`` (``train`` or ``val``) of the split a checkpoint
    records (its ``dataset``, ``root`` and ``split``), found again on this machine;
    None where it cannot be: no record, or the data is not here.

    The recorded root is tried as it is, from the project folder, and under the data
    folder by the dataset's name (``replay.paths``)."""
    from replay.paths import PROJECT_ROOT, data_root

    dataset, root, split = extra.get("dataset"), extra.get("root"), extra.get("split")
    if dataset not in DATASET_NAMES or not root or not isinstance(split, dict):
        return None
    candidates = [Path(root), PROJECT_ROOT / root, data_root() / dataset]
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        return None
    try:
        samples = open_part(dataset, found, part, SplitSpec.from_dict(split))
    except (OSError, ValueError, KeyError):
        return None
    return {Path(source.path).resolve() for source in samples.sources}
