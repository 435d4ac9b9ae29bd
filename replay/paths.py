"""Where the real data lives, and the order in which recordings are listed.

The data folder is the first of these that exists (``data_places``):

1. ``$STCSNN_DATA``, if set (used as given, even if empty: that is how to say
   "no data here");
2. ``shared/data`` beside a development checkout (``../shared/data`` from the
   project; the tests and CI use it);
3. ``data/`` in the current directory;
4. the per-user folder ``$XDG_DATA_HOME/stcsnn`` (``~/.local/share/stcsnn``),
   which is where a regular ``pip install`` finds data it cannot find beside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_places() -> list[Path]:
    """Where the data folder is looked for, in order (module docstring)."""
    configured = os.environ.get("STCSNN_DATA")
    if configured:
        return [Path(configured)]
    user_data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return [
        PROJECT_ROOT.parent / "shared" / "data",
        Path.cwd() / "data",
        Path(user_data) / "stcsnn",
    ]


def data_root() -> Path:
    """The first data folder of ``data_places`` that exists, else the first place
    (it may not exist; callers say what is missing and ``where_data_was_looked_for``)."""
    places = data_places()
    return next((place for place in places if place.is_dir()), places[0])


def where_data_was_looked_for() -> str:
    """The places searched, for messages: "STCSNN_DATA=..." or the list."""
    if os.environ.get("STCSNN_DATA"):
        return f"STCSNN_DATA={os.environ['STCSNN_DATA']}"
    return ", ".join(str(p) for p in data_places()) + " (or set STCSNN_DATA)"


def natural_key(path: Path) -> tuple:
    """Sort ``2/10.bin`` after ``2/9.bin`` and folder ``10`` after ``9``: runs of
    digits compare as numbers (before text at the same place), the rest as text."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", path.as_posix())
        if part
    )
