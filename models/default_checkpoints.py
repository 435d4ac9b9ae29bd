"""Where the project's default checkpoints live, so commands can run without ``--checkpoint``.

They are committed beside this file (``models/checkpoints/<dataset>.pt``, a few
MB each) with their measured validation accuracy in their ``extra`` and in
``docs/training.md``. A dataset whose default has not been trained yet gets a
clear error saying how to make one.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"

# dataset -> file in CHECKPOINT_DIR. N-MNIST: 34x34 input; DVS_Sign: the
# 128x128 gesture shape (issue 7), once trained.
DEFAULT_CHECKPOINTS = {
    "nmnist": "nmnist.pt",
    "dvs_sign": "dvs_sign.pt",
}


def default_checkpoint(dataset: str) -> Path:
    """The default checkpoint for ``dataset``; FileNotFoundError when there is none."""
    name = DEFAULT_CHECKPOINTS.get(dataset)
    if name is None:
        raise FileNotFoundError(
            f"no default checkpoint for {dataset!r} (defaults exist for "
            f"{', '.join(sorted(DEFAULT_CHECKPOINTS))}); pass --checkpoint PATH"
        )
    path = CHECKPOINT_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"the default {dataset} checkpoint {path} is not there yet; train one "
            f"(stcsnn train --dataset {dataset} ...) and pass --checkpoint RUN/best.pt"
        )
    return path
