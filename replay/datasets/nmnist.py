"""N-MNIST (Orchard et al. 2015) from its published layout.

``ROOT/Train/<digit>/<id>.bin`` and ``ROOT/Test/<digit>/<id>.bin``: one
saccade recording (~300 ms, ATIS sensor cropped to 34x34) per MNIST digit.
Samples under the ``.bs2`` name of some copies are taken too (the same
5-byte records: ``replay.formats.sniff``).
"""

from __future__ import annotations

from pathlib import Path

from core.events import Recording, SensorSize
from replay.datasets.base import FileDataset, scan_class_folders
from replay.formats.nmnist import read_nmnist
from replay.formats.sniff import NMNIST_SUFFIXES

SPLIT_FOLDERS = {"train": "Train", "test": "Test"}


def _digit(folder_name: str) -> int | None:
    return int(folder_name) if folder_name in {str(d) for d in range(10)} else None


class NMNIST(FileDataset):
    """N-MNIST, split ``"train"`` or ``"test"``; labels are the digits 0-9."""

    sensor = SensorSize(34, 34)
    class_names = [str(d) for d in range(10)]

    def __init__(self, root: Path | str, split: str = "train"):
        if split not in SPLIT_FOLDERS:
            raise ValueError(
                f"N-MNIST split must be one of {sorted(SPLIT_FOLDERS)}, found {split!r}"
            )
        self.root = Path(root)
        self.split = split
        split_dir = self.root / SPLIT_FOLDERS[split]
        files, labels = scan_class_folders(
            split_dir, _digit, NMNIST_SUFFIXES, "N-MNIST", f"{split_dir}/<digit 0-9>/<id>.bin"
        )
        super().__init__(files, labels)

    def read(self, path: Path) -> Recording:
        return read_nmnist(path)
