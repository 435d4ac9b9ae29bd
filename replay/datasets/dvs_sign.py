"""DVS_Sign (Chen et al., Electronics 2023): sign-language clips as events.

Layout: ``ROOT/train/<class 0-14>/<id>.npz`` and, where present,
``ROOT/test/<class 0-14>/<id>.npz``; each ``.npz`` holds ``t_us``, ``x``, ``y``,
``p`` (see the shared data README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.events import Recording, SensorSize
from replay.datasets.base import FileDataset, scan_class_folders
from replay.formats.dvs_sign import read_dvs_sign

NUM_CLASSES = 15
SPLITS = ("train", "test")
# Samples <id> 5g..5g+4 of a class are one recording session: their event
# images are near-duplicates (experiments/dvs_sign_groups.py: mean spatial
# similarity 0.906 inside these groups, 0.717 between; no other size or offset
# comes close), so a split must keep them on one side.
SESSION_SIZE = 5


def _class_index(folder_name: str) -> int | None:
    return int(folder_name) if folder_name in {str(c) for c in range(NUM_CLASSES)} else None


class DVSSign(FileDataset):
    """DVS_Sign, split ``"train"`` or ``"test"``, 15 classes, 128x128.

    **Converted data, not a real DVS.** Its timestamps fall on a 1/30 s frame
    grid: the events were made from video of real signers (v2e-style). It is
    the closest labelled human motion at 128x128 available here, used as the
    stand-in for DVS128 Gesture; every result on it must say it is converted
    data. The labels are the class folder numbers (the published repository
    gives no class names).
    """

    sensor = SensorSize(128, 128)
    class_names = [str(c) for c in range(NUM_CLASSES)]

    def __init__(self, root: Path | str, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"DVS_Sign split must be one of {list(SPLITS)}, found {split!r}")
        self.root = Path(root)
        self.split = split
        split_dir = self.root / split
        files, labels = scan_class_folders(
            split_dir,
            _class_index,
            ".npz",
            "DVS_Sign",
            f"{split_dir}/<class 0-{NUM_CLASSES - 1}>/<id>.npz",
        )
        super().__init__(files, labels)

    @property
    def groups(self) -> np.ndarray:
        """Recording session of each sample, ``"<class>/<id // 5>"`` (a file whose
        name is no number is a session of its own): what a grouped split keeps
        together."""
        return np.array(
            [_session(path, label) for path, label in zip(self.files, self.labels, strict=True)]
        )

    def read(self, path: Path) -> Recording:
        return read_dvs_sign(path)


def _session(path: Path, label: int) -> str:
    stem = Path(path).stem
    return f"{label}/{int(stem) // SESSION_SIZE}" if stem.isdigit() else f"{label}/{stem}"
