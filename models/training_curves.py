"""A training run's loss and accuracy per epoch as one PNG, from its ``metrics.jsonl``.

Drawn on a bare ``matplotlib.figure.Figure`` (Agg rendering, no pyplot state, no
display) and written atomically, so a run interrupted at any point leaves the
curves of its last finished epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from replay.cache_files import written_atomically


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl``, one per epoch (a repeated epoch: its last line;
    a line cut short by an interrupted run: skipped)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
                by_epoch[int(entry["epoch"])] = entry
            except (ValueError, KeyError, TypeError):
                continue
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def plot_curves(metrics: list[dict[str, Any]], path: str | os.PathLike, title: str) -> Path:
    """Loss (left) and accuracy (right) per epoch, train and validation, as PNG ``path``."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    def series(key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
        shown = [m for m in metrics if m.get(key) is not None]
        return [m["epoch"] for m in shown], [scale * m[key] for m in shown]

    figure = Figure(figsize=(9, 3.5), dpi=110)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for axes, kind, scale in ((loss_axes, "loss", 1.0), (accuracy_axes, "accuracy", 100.0)):
        axes.plot(*series(f"train_{kind}", scale), "o-", markersize=3, label="train")
        axes.plot(*series(f"val_{kind}", scale), "s-", markersize=3, label="validation")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("accuracy (%)" if kind == "accuracy" else "cross-entropy loss")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    loss_axes.set_yscale("log")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    with written_atomically(path) as temporary:
        figure.savefig(temporary, format="png")
    return path
