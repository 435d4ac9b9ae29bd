"""Labelled event datasets: N-MNIST, DVS128 Gesture, CIFAR10-DVS, DVS_Sign.

Every dataset is a sequence of ``EventSample``s with ``labels``, ``class_names``,
``sensor`` and ``sources`` (see ``base.py``). ``open_dataset`` picks one by name,
as the CLI's ``--dataset`` does; ``split.py`` makes seeded stratified splits and
folds; ``cache.py`` keeps decoded DVS128 Gesture segments on disk.
"""

from __future__ import annotations

from pathlib import Path

from replay.datasets.base import (
    DatasetLayoutError,
    EventDataset,
    EventSample,
    SampleSource,
    Subset,
)
from replay.datasets.cifar10dvs import CIFAR10DVS
from replay.datasets.dvs_sign import DVSSign
from replay.datasets.dvsgesture import DVSGesture
from replay.datasets.nmnist import NMNIST
from replay.datasets.split import stratified_kfold, stratified_split

DATASETS: dict[str, type] = {
    "nmnist": NMNIST,
    "dvsgesture": DVSGesture,
    "cifar10dvs": CIFAR10DVS,
    "dvs_sign": DVSSign,
}


def open_dataset(name: str, root: Path | str, split: str = "train", **options) -> EventDataset:
    """The dataset ``name`` (a key of ``DATASETS``) at ``root``; ``options`` go to
    its class (e.g. ``cache_dir`` for DVS128 Gesture, ``test_fraction`` for
    CIFAR10-DVS)."""
    try:
        cls = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
    return cls(root, split, **options)


__all__ = [
    "CIFAR10DVS",
    "DATASETS",
    "DVSGesture",
    "DVSSign",
    "DatasetLayoutError",
    "EventDataset",
    "EventSample",
    "NMNIST",
    "SampleSource",
    "Subset",
    "open_dataset",
    "stratified_kfold",
    "stratified_split",
]
