"""Where the real data lives: ``$STCSNN_DATA`` or ``../shared/data`` beside the project."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The shared data folder (it may not exist; callers say what is missing)."""
    configured = os.environ.get("STCSNN_DATA")
    if configured:
        return Path(configured)
    return PROJECT_ROOT.parent / "shared" / "data"
