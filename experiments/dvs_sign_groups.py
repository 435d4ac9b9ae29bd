"""Why DVS_Sign needs grouped folds: its samples come in sessions of near-duplicates.

    .venv/bin/python experiments/dvs_sign_groups.py [--root ../shared/data/dvs_sign]

Every sample is reduced to its event image (events counted on a 16x16 grid,
normalised), and two samples' similarity is the cosine of their images.

1. **The session structure.** For every way of cutting a class's ids into runs
   of ``size`` consecutive ids (offset ``o``: ids ``o..o+size-1`` ... ), the
   mean similarity of two samples inside a run against two samples of the same
   class in different runs. One cut stands out: size 5, offset 0
   (``replay.datasets.dvs_sign.SESSION_SIZE``).
2. **What the sessions do to a score.** A 1-nearest-neighbour classifier on
   those images (no training at all): leave-one-out over all 600 samples, then
   with the sample's whole session left out, then with as many random samples
   of its class left out (the control: the drop is the session, not the
   smaller pool). If a test sample's own session mates are in the training
   set, the event image alone nearly names the class.
3. **Mirrored samples** (a left-handed signer): the same classifier with each
   sample's image mirrored left to right and its session left out, and for
   every class the class whose samples in other sessions its mirrored images
   resemble most (cosine, averaged). A mirror image that resembled another
   class would make mirroring in training merge the two.

The JSON goes to ``experiments/results/dvs_sign_groups.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "dvs_sign"
RESULT = REPO / "experiments" / "results" / "dvs_sign_groups.json"


def event_images(dataset, bins: int = 16) -> np.ndarray:
    """``[N, bins * bins]`` unit-norm event counts of every sample."""
    height, width = dataset.sensor.height, dataset.sensor.width
    images = []
    for sample in dataset:
        events = sample.events
        image = np.histogram2d(
            events["y"], events["x"], bins=bins, range=[[0, height], [0, width]]
        )[0].ravel()
        images.append(image / max(np.linalg.norm(image), 1e-12))
    return np.array(images)


def session_cuts(
    similarity: np.ndarray, labels: np.ndarray, ids: np.ndarray
) -> list[dict[str, float]]:
    """Mean similarity inside runs of consecutive ids against between runs, per cut."""
    same_class = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    rows = []
    for size in range(3, 11):
        for offset in range(size):
            run = (ids + offset) // size
            same_run = same_class & (run[:, None] == run[None, :])
            inside = float(similarity[same_run & off_diagonal].mean())
            between = float(similarity[same_class & ~same_run].mean())
            rows.append({"size": size, "offset": offset, "inside": inside, "between": between})
    return sorted(rows, key=lambda r: r["inside"] - r["between"], reverse=True)


def nearest_neighbour_accuracy(
    similarity: np.ndarray, labels: np.ndarray, excluded: np.ndarray
) -> float:
    """1-NN accuracy where sample i may not use the samples ``excluded[i]`` (nor itself)."""
    masked = np.where(excluded | np.eye(len(labels), dtype=bool), -np.inf, similarity)
    return float(np.mean(labels[masked.argmax(1)] == labels))


def mirrored(images: np.ndarray, bins: int = 16) -> np.ndarray:
    """The ``[N, bins * bins]`` event images mirrored left to right."""
    return images.reshape(len(images), bins, bins)[:, :, ::-1].reshape(len(images), -1)


def most_like_mirrored(
    similarity_to_mirrored: np.ndarray, labels: np.ndarray, excluded: np.ndarray
) -> list[int]:
    """For each class c, the class whose samples are on average most similar to
    c's mirrored images (``similarity_to_mirrored[i, j]``: sample i against j
    mirrored), pairs in ``excluded`` left out."""
    classes = np.unique(labels)
    mean = np.array(
        [
            [
                similarity_to_mirrored[
                    (labels[:, None] == a) & (labels[None, :] == c) & ~excluded
                ].mean()
                for a in classes
            ]
            for c in classes
        ]
    )
    return [int(classes[k]) for k in mean.argmax(axis=1)]


def main(argv: list[str] | None = None) -> int:
    from replay.datasets.dvs_sign import SESSION_SIZE, DVSSign

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args(argv)
    dataset = DVSSign(args.root)
    labels = dataset.labels
    ids = np.array([int(Path(source.path).stem) for source in dataset.sources])
    images = event_images(dataset)
    similarity = images @ images.T
    cuts = session_cuts(similarity, labels, ids)
    groups = dataset.groups
    session = groups[:, None] == groups[None, :]
    # The control: as many random samples of the same class as a session holds.
    rng = np.random.default_rng(0)
    shuffled = np.empty_like(ids)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        shuffled[members] = rng.permutation(ids[members])
    random_set = (labels[:, None] == labels[None, :]) & (
        shuffled[:, None] // SESSION_SIZE == shuffled[None, :] // SESSION_SIZE
    )
    nothing = np.zeros_like(session)
    to_mirrored = images @ mirrored(images).T  # [i, j]: sample i against j mirrored
    result = {
        "samples": len(labels),
        "image": "events counted on 16x16, unit norm; similarity = cosine",
        "session_size": SESSION_SIZE,
        "best_cuts": cuts[:5],
        "cut_in_use": next(r for r in cuts if r["size"] == SESSION_SIZE and r["offset"] == 0),
        "nearest_neighbour_accuracy": {
            "leave_one_out": nearest_neighbour_accuracy(similarity, labels, nothing),
            "leave_session_out": nearest_neighbour_accuracy(similarity, labels, session),
            "leave_random_same_size_out": nearest_neighbour_accuracy(
                similarity, labels, random_set
            ),
            # Queries mirrored (columns), the pool as recorded (rows).
            "mirrored_leave_session_out": nearest_neighbour_accuracy(
                to_mirrored.T, labels, session
            ),
        },
        "class_most_like_each_mirrored_class": most_like_mirrored(to_mirrored, labels, session),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
