"""CIFAR10-DVS (Li et al. 2017): CIFAR-10 images moved on a monitor in front of
a DVS128, recorded as AEDAT 2.0 (jAER) files in class folders
``ROOT/<class name>/*.aedat`` (1,000 per class in the published dataset).

The dataset has no official train/test split. ``split="all"`` gives every
file; ``"train"`` and ``"test"`` are a stratified, seeded split of them
(``test_fraction``, default 0.1: the 9:1 split most papers use), so the same
root, fraction and seed always give the same parts.
"""

from __future__ import annotations

from pathlib import Path

from core.class_names import CIFAR10
from core.events import Recording, SensorSize
from replay.datasets.base import FileDataset, scan_class_folders
from replay.datasets.split import stratified_split
from replay.formats.aedat2 import read_aedat2

CLASS_NAMES = list(CIFAR10)
SPLITS = ("all", "train", "test")


class CIFAR10DVS(FileDataset):
    """CIFAR10-DVS, 10 classes, DVS128 128x128; see the module docstring on splits."""

    sensor = SensorSize(128, 128)
    class_names = list(CLASS_NAMES)

    def __init__(
        self,
        root: Path | str,
        split: str = "all",
        *,
        test_fraction: float = 0.1,
        split_seed: int = 0,
    ):
        if split not in SPLITS:
            raise ValueError(f"CIFAR10-DVS split must be one of {list(SPLITS)}, found {split!r}")
        self.root = Path(root)
        self.split = split
        files, labels = scan_class_folders(
            self.root,
            lambda name: CLASS_NAMES.index(name) if name in CLASS_NAMES else None,
            ".aedat",
            "CIFAR10-DVS",
            f"{self.root}/<{'|'.join(CLASS_NAMES)}>/*.aedat",
        )
        if split != "all":
            train, test = stratified_split(
                labels, validation_fraction=test_fraction, seed=split_seed
            )
            chosen = train if split == "train" else test
            files, labels = [files[i] for i in chosen], labels[chosen]
        super().__init__(files, labels)

    def read(self, path: Path) -> Recording:
        return read_aedat2(path, sensor=self.sensor)
