"""Held-out DVS_Sign accuracy of readouts that spend more per hop: several
independently trained models averaged (an ensemble), and test-time shifts.

    .venv/bin/python experiments/dvs_sign_ensemble.py run augment_e60 augment_e60_seed10 \\
        [--shift-px 2 4] [--name NAME]

For each of the four grouped folds (recording sessions kept on one side,
``kfold_grid.py --dataset dvs_sign_grouped``), the last-epoch checkpoint of
every recipe named is run over the fold's held-out whole clips, as ``stcsnn
eval`` runs them; a clip's class probabilities are the softmax of its mean
readout. Readouts compared, each against the first recipe alone on the same
600 samples (paired; exact McNemar):

- each recipe alone;
- the ensemble: the recipes' probabilities averaged (needs two or more);
- the first recipe's readout averaged over a clip's steps in proportion to
  their input current instead of equally (free at inference: the near-still
  second before most signs weighs little);
- test-time shifts of the first recipe: its probabilities averaged over the
  clip as recorded and moved by ``p`` input pixels left, right, up and down
  (zeros shifted in), once per ``p`` in ``--shift-px``. This asks whether the
  4x4 readout's tie to where a sign is made (docs/results_dvs_sign.md) can be
  loosened at inference instead of in training.

One JSON (per-sample correctness of every readout) goes to
``experiments/results/dvs_sign_ensemble/NAME.json``; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from kfold_grid import SPECS, held_out_clips, paired_cells, run_name

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results" / "dvs_sign_ensemble"
STEPS = 4


def shifted(clips, dx: int, dy: int):
    """``[T, B, C, H, W]`` clips moved by ``dx`` columns and ``dy`` rows, zeros shifted in."""
    import torch

    out = torch.zeros_like(clips)
    h, w = clips.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = clips[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def activity_weighted_readout(logits, clips, steps):
    """``[T, B, C]`` readout -> ``[B, C]``: each clip's real steps weighted by their share
    of its input current (the signer's stillness before a sign weighs little)."""
    import torch

    t = torch.arange(logits.shape[0])
    activity = clips.flatten(2).sum(2) * (t[:, None] < steps[None, :])  # [T, B]
    weights = activity / activity.sum(0).clamp(min=1e-9)
    return (logits.float() * weights[..., None]).sum(0)


def held_out_probabilities(checkpoint: Path, fold: int, shift_px: list[int]):
    """``(indices, labels, readouts)`` of ``checkpoint`` on its grouped fold's held-out
    clips; ``readouts`` maps a name to class probabilities ``[N, classes]``: "plain"
    (the mean readout), "activity-weighted" and, per ``p`` in ``shift_px``,
    "shifts p px" (the plain one averaged with the clip moved by ``p`` pixels
    left, right, up and down)."""
    import torch

    from models.checkpoint import load_checkpoint
    from models.evaluate import mean_readout
    from models.loaders import clip_loader

    spec = SPECS["dvs_sign_grouped"]
    model, config, _ = load_checkpoint(checkpoint, map_location="cpu")
    model.eval()
    indices, clips = held_out_clips(
        spec.dataset, str(spec.root), fold, spec.folds, spec.grouped, config.compression
    )
    parts: dict[str, list] = {}
    labels = []
    with torch.no_grad():
        for batch in clip_loader(clips, batch_size=64, train=False, workers=0):
            logits = model(batch.clips)
            plain = mean_readout(logits, batch.steps).softmax(1)
            weighted = activity_weighted_readout(logits, batch.clips, batch.steps).softmax(1)
            found = {"plain": plain, "activity-weighted": weighted}
            for p in shift_px:
                moved = [
                    mean_readout(model(shifted(batch.clips, dx, dy)), batch.steps).softmax(1)
                    for dx, dy in ((p, 0), (-p, 0), (0, p), (0, -p))
                ]
                found[f"shifts {p} px"] = torch.stack([plain, *moved]).mean(0)
            for name, value in found.items():
                parts.setdefault(name, []).append(value)
            labels += batch.labels.tolist()
    readouts = {name: torch.cat(values).numpy() for name, values in parts.items()}
    return indices, np.asarray(labels), readouts


def compare(recipes: list[str], shift_px: list[int]) -> dict:
    """Per-sample correctness of every readout, pooled over the four folds."""
    spec = SPECS["dvs_sign_grouped"]
    right: dict[str, list[np.ndarray]] = {}
    index: list[np.ndarray] = []
    for fold in range(spec.folds):
        plain = []
        for i, recipe in enumerate(recipes):
            checkpoint = spec.runs / run_name(recipe, STEPS, fold, spec.folds) / "last.pt"
            indices, labels, readouts = held_out_probabilities(
                checkpoint, fold, shift_px if i == 0 else []
            )
            plain.append(readouts["plain"])
            right.setdefault(recipe, []).append(readouts["plain"].argmax(1) == labels)
            if i == 0:  # the first recipe's other readouts
                index.append(indices)
                for name, probs in readouts.items():
                    if name != "plain":
                        joined = (
                            f"{recipe}, {name}"
                            if name == "activity-weighted"
                            else f"{recipe} + {name}"
                        )
                        right.setdefault(joined, []).append(probs.argmax(1) == labels)
        if len(recipes) > 1:
            mean = np.mean(plain, axis=0)
            right.setdefault("ensemble of " + " + ".join(recipes), []).append(
                mean.argmax(1) == labels
            )
        print(f"fold {fold}: " + ", ".join(f"{k} {v[-1].mean():.3f}" for k, v in right.items()))
    return {
        "recipes": recipes,
        "shift_px": shift_px,
        "checkpoints": "runs/grid_dvs_sign_grouped/<recipe>-T4-fold<k>of4/last.pt",
        "index": np.concatenate(index).tolist(),
        "correct": {k: np.concatenate(v).tolist() for k, v in right.items()},
    }


def table(result: dict) -> str:
    """Markdown: every readout's pooled accuracy and its paired difference to the
    first recipe alone."""
    reference = result["recipes"][0]
    base = np.asarray(result["correct"][reference])
    lines = [
        f"| readout | accuracy | minus {reference} alone ± SE | only it right"
        f" | only {reference} right | p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, values in result["correct"].items():
        lines.append(f"| {name} | {np.mean(values):.3f} | {paired_cells(values, base)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate the readouts and write their JSON")
    run.add_argument("recipes", nargs="+", help="grouped-grid variants (first: the reference)")
    run.add_argument("--shift-px", nargs="*", type=int, default=[], help="test-time shifts")
    run.add_argument("--name", help="result file name (default: the recipes joined)")
    args = parser.parse_args(argv)
    result = compare(args.recipes, args.shift_px)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = args.name or "+".join(args.recipes)
    (RESULTS / f"{name}.json").write_text(json.dumps(result) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
