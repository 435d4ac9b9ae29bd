"""Held-out DVS_Sign accuracy when the camera sees the scene differently.

    .venv/bin/python experiments/dvs_sign_perturbed.py CKPT [CKPT ...] [--name NAME ...]
    .venv/bin/python experiments/dvs_sign_perturbed.py report augment-T4 full-T4
    .venv/bin/python experiments/dvs_sign_perturbed.py report A-T4 B-T4+B_seed10-T4  # draws

Each checkpoint's own held-out samples (its recorded split: a grouped fold
keeps whole recording sessions out) are evaluated as whole clips, as ``stcsnn
eval`` does, once as recorded and once under each fixed perturbation of what
a user's camera may do differently: the signer off centre (shifted by 8 input
pixels, 1/8 of the width), nearer or farther (zoom 1.15 and 0.85), a rolled
camera (8 degrees), faster or slower signing (1.25x and 0.8x), a noisier
sensor (background events at 0.5 Hz per input pixel), lower contrast
(20 % of the events dropped) and a left-handed signer (the clip mirrored left
to right: the same sign made with the other hand). The same seed draws the
same noise and drop-out for every checkpoint, so the columns compare paired
samples.

One JSON per checkpoint goes to ``experiments/results/dvs_sign_perturbed/``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "dvs_sign"
RESULTS = REPO / "experiments" / "results" / "dvs_sign_perturbed"
NONE = {"shift": 0.0, "scale": (1.0, 1.0), "rotate_deg": 0.0, "stretch": (1.0, 1.0)}
NONE |= {"drop": 0.0, "noise_hz": 0.0}
# name -> EventAugment settings with every range collapsed to one value
# (shift is the exception: its sign is drawn, its size is fixed below).
PERTURBATIONS: dict[str, dict] = {
    "as recorded": {},
    "shifted 1/8": {"shift": 0.125},
    "zoom 1.15": {"scale": (1.15, 1.15)},
    "zoom 0.85": {"scale": (0.85, 0.85)},
    "rolled 8 deg": {"rotate_deg": 8.0},
    "1.25x faster": {"stretch": (1.25, 1.25)},
    "0.8x slower": {"stretch": (0.8, 0.8)},
    "noise 0.5 Hz/px": {"noise_hz": 1.0},  # rate drawn in [0, 1): 0.5 Hz on average
    "20 % dropped": {"drop": 0.4},  # share drawn in [0, 0.4): 20 % on average
    "mirrored": {"mirror": 1.0},
}


class FixedShift:
    """``EventAugment`` whose shift is exactly ``shift`` of the sensor in a drawn direction."""

    def __init__(self, augment, shift: float):
        self.augment, self.shift = augment, shift

    def apply(self, events, sensor, t0, speed, duration, rng):
        out = self.augment.apply(events, sensor, t0, speed, duration, rng)
        angle = rng.uniform(0, 2 * math.pi)
        dx = int(round(self.shift * sensor.width * math.cos(angle)))
        dy = int(round(self.shift * sensor.height * math.sin(angle)))
        x, y = out["x"].astype(np.int64) + dx, out["y"].astype(np.int64) + dy
        on = (x >= 0) & (x < sensor.width) & (y >= 0) & (y < sensor.height)
        out = out[on]
        out["x"], out["y"] = x[on], y[on]
        return out


def perturbed_accuracy(checkpoint: Path, root: str) -> dict:
    import torch

    from core.adapt import SensorAdapter
    from models.augment import EventAugment
    from models.checkpoint import load_checkpoint
    from models.clips import compress_span, plan_clips
    from models.splits import SplitSpec, open_part

    model, config, extra = load_checkpoint(checkpoint, map_location="cpu")
    model.eval()
    spec = SplitSpec.from_dict(extra["split"])
    part = open_part("dvs_sign", root, "val", spec)
    compression = config.compression
    adapter = SensorAdapter(part.sensor, compression.input_sensor)
    right: dict[str, list[bool]] = {name: [] for name in PERTURBATIONS}
    for i in range(len(part)):
        sample = part[i]
        events = adapter(sample.events)
        ((t0, steps),) = plan_clips(sample.start_us, sample.end_us, compression, "whole")
        duration = steps * compression.step_us
        for name, change in PERTURBATIONS.items():
            settings = {**NONE, **change, "shift": 0.0}
            transform = EventAugment(**settings)
            if change.get("shift"):
                transform = FixedShift(transform, change["shift"])
            rng = np.random.default_rng([7, i])
            speed = settings["stretch"][0]
            cut = events[events["timestamp"] < t0 + math.ceil(duration / speed)]
            moved = transform.apply(cut, compression.input_sensor, t0, speed, duration, rng)
            clip = torch.from_numpy(compress_span(moved, compression, t0, steps))
            with torch.no_grad():
                logits = model(clip[:, None])[:, 0]
            right[name].append(int(logits.mean(0).argmax()) == sample.label)
    n = len(part)
    return {
        "checkpoint": str(checkpoint),
        "split": extra["split"],
        "samples": n,
        "accuracy": {name: sum(r) / n for name, r in right.items()},
        "correct": {name: [bool(v) for v in r] for name, r in right.items()},
    }


def report(a: str, b: str) -> str:
    """Markdown: pooled accuracy of the result files ``<a>-*.json`` and ``<b>-*.json``
    (the same held-out samples, e.g. the four grouped folds of two recipes) under
    each perturbation both were measured under, and their paired difference.
    ``a`` or ``b`` may name several draws of a recipe joined by ``+``
    (``augment_e60-T4+augment_e60_seed10-T4``): then each sample counts by its
    share of draws right (kfold_grid's ``compare_shares``)."""
    from kfold_grid import compare_shares, draw_cells, paired_cells

    def pooled(prefix: str) -> dict[str, np.ndarray]:
        files = sorted(RESULTS.glob(f"{prefix}-*.json"))
        runs = [json.loads(path.read_text()) for path in files]
        measured = [k for k in PERTURBATIONS if all(k in r["correct"] for r in runs)]
        return {k: np.concatenate([r["correct"][k] for r in runs]) for k in measured}

    draws_a = [pooled(prefix) for prefix in a.split("+")]
    draws_b = [pooled(prefix) for prefix in b.split("+")]
    names = [k for k in PERTURBATIONS if all(k in d for d in draws_a + draws_b)]
    lines = [
        f"| perturbation | {a} | {b} | {a} - {b} ± SE | only {a} right | only {b} right | p |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        x, y = [d[name] for d in draws_a], [d[name] for d in draws_b]
        if len(x) == 1 and len(y) == 1:  # one draw each: exact McNemar
            cells = paired_cells(x[0], y[0])
        else:  # "only right": samples whose share of draws right is higher
            cells = draw_cells(compare_shares(x, y))
        mean_x, mean_y = np.mean(x), np.mean(y)
        lines.append(f"| {name} | {mean_x:.3f} | {mean_y:.3f} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["report"]:  # report A B: pooled and paired tables of two result prefixes
        print(report(argv[1], argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--name", nargs="*", help="result file name per checkpoint")
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    args = parser.parse_args(argv)
    names = args.name or [Path(c).parent.name for c in args.checkpoints]
    RESULTS.mkdir(parents=True, exist_ok=True)
    for checkpoint, name in zip(args.checkpoints, names, strict=True):
        result = perturbed_accuracy(Path(checkpoint), args.root)
        (RESULTS / f"{name}.json").write_text(json.dumps(result) + "\n")
        row = " | ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items())
        print(f"{name}: {row}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
