"""Where the real data lives (``$STCSNN_DATA`` or ``../shared/data`` beside the
project), and the order in which recordings are listed."""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The shared data folder (it may not exist; callers say what is missing)."""
    configured = os.environ.get("STCSNN_DATA")
    if configured:
        return Path(configured)
    return PROJECT_ROOT.parent / "shared" / "data"


def natural_key(path: Path) -> tuple:
    """Sort ``2/10.bin`` after ``2/9.bin`` and folder ``10`` after ``9``: runs of
    digits compare as numbers (before text at the same place), the rest as text."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", path.as_posix())
        if part
    )
