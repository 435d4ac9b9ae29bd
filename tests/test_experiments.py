"""The statistics behind docs/results.md (experiments/nmnist_grid.py): standard
errors, the exact McNemar test, pooling folds, pairing runs and the launch order."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "nmnist_grid.py"
_spec = importlib.util.spec_from_file_location("nmnist_grid", _PATH)
grid = importlib.util.module_from_spec(_spec)
sys.modules["nmnist_grid"] = grid  # dataclasses look their module up
_spec.loader.exec_module(grid)


def _run(fold: int, index: list[int], label: list[int], predicted: list[int]) -> dict:
    right = sum(p == y for p, y in zip(predicted, label, strict=True))
    return {
        "fold": fold,
        "folds": 2,
        "held_out_accuracy_last_epoch": right / len(label),
        "best_val_accuracy_any_epoch": 1.0,
        "predictions": {"index": index, "label": label, "predicted": predicted},
    }


def test_standard_error_is_the_binomial_one() -> None:
    assert grid.standard_error(0.96, 1000) == pytest.approx(math.sqrt(0.96 * 0.04 / 1000))
    assert grid.standard_error(0.96, 100) == pytest.approx(
        0.0196, abs=1e-4
    )  # METHOD.md's "about 2 points"
    assert grid.standard_error(1.0, 50) == 0.0


def test_mcnemar_exact_p_values() -> None:
    assert grid.mcnemar_exact_p(0, 0) == 1.0
    assert grid.mcnemar_exact_p(3, 3) == 1.0
    assert grid.mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)
    assert grid.mcnemar_exact_p(6, 0) == pytest.approx(2 / 64)
    # 1 vs 9 discordant: 2 * (1 + 10) / 1024
    assert grid.mcnemar_exact_p(1, 9) == pytest.approx(22 / 1024)
    # Symmetric, and larger imbalances are more significant.
    assert grid.mcnemar_exact_p(2, 12) == grid.mcnemar_exact_p(12, 2)
    assert grid.mcnemar_exact_p(2, 12) < grid.mcnemar_exact_p(4, 10) < 1.0


def test_pooled_counts_every_prediction_once() -> None:
    runs = [
        _run(0, [0, 2], [1, 0], [1, 0]),  # 2/2
        _run(1, [1, 3], [1, 1], [1, 0]),  # 1/2
    ]
    out = grid.pooled(runs)
    assert out["samples"] == 4
    assert out["accuracy"] == 0.75
    assert out["se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert out["fold_mean"] == 0.75
    assert out["fold_std"] == pytest.approx(math.sqrt(0.125))
    assert out["folds_done"] == [0, 1]


def test_paired_uses_only_common_samples_and_counts_discordant_pairs() -> None:
    a = [_run(0, [0, 1, 2, 3], [0, 0, 0, 0], [0, 0, 1, 1])]  # right on 0, 1
    b = [_run(0, [0, 1, 2, 3], [0, 0, 0, 0], [1, 0, 0, 0]), _run(1, [9], [0], [0])]
    out = grid.paired(a, b)
    assert out["samples"] == 4
    assert (out["only_a_right"], out["only_b_right"]) == (1, 2)
    assert out["accuracy_a"] == 0.5 and out["accuracy_b"] == 0.75
    assert out["p_value"] == 1.0
    assert out["difference"] == -0.25
    # Per-sample differences d = (0, +1, -1, -1): SE of their mean.
    d = [0, 1, -1, -1]
    mean = sum(d) / 4
    assert out["difference_se"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in d) / 4) / 2)


def test_plan_is_fold_major_inside_each_group() -> None:
    order = grid.plan(["ablation", "claim"], folds=2)
    ablation = len(grid.GROUPS["ablation"])
    assert len(order) == 2 * (ablation + len(grid.GROUPS["claim"]))
    assert [fold for _, _, fold in order[: 2 * ablation]] == [0] * ablation + [1] * ablation
    assert order[2 * ablation][2] == 0 and order[2 * ablation][0] == "full"
