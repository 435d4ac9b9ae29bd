"""The statistics behind docs/results.md (experiments/kfold_grid.py): standard
errors, the exact McNemar test, pooling folds, pairing runs and the launch order."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "kfold_grid.py"
_spec = importlib.util.spec_from_file_location("kfold_grid", _PATH)
grid = importlib.util.module_from_spec(_spec)
sys.modules["kfold_grid"] = grid  # dataclasses look their module up
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
    )  # docs/method.md's "about ±2 points"
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


def test_claims_let_lanes_share_a_grid(tmp_path) -> None:
    path = tmp_path / "runs" / "full-T2-fold0of3.claim"
    assert grid.claim(path)  # made here
    assert grid.claim(path)  # ours already
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    path.write_text(dead)  # a lane that died: taken over
    assert grid.claim(path) and path.read_text() == str(os.getpid())
    path.write_text(str(os.getppid()))  # a live lane: left alone
    assert not grid.claim(path)


def test_dvs_sign_grid_plan_and_configs() -> None:
    spec = grid.SPECS["dvs_sign"]
    order = grid.plan(list(spec.groups), spec.folds, spec.groups)
    assert len(order) == spec.folds * 12
    assert order[0] == ("full", 4, 0) and order[1] == ("baseline", 4, 0)
    assert {t for v, t, _ in order if v == "full"} == {1, 2, 4, 8}
    from models.networks import get_config

    config = get_config("dvs_sign").with_changes(steps=8, **spec.changes)
    assert tuple(config.channels) == (32, 64, 64, 128) and config.hidden == 256


def test_aggregate_compares_against_the_largest_baseline_t(tmp_path) -> None:
    import dataclasses
    import json

    spec = dataclasses.replace(grid.SPECS["dvs_sign"], results=tmp_path / "res")
    spec.results.mkdir()
    labels = [0, 1, 0, 1]
    for variant, steps, predicted in [
        ("full", 2, [0, 1, 0, 1]),
        ("baseline", 2, [0, 1, 1, 0]),
        ("baseline", 8, [0, 1, 0, 0]),
    ]:
        for fold in range(2):
            r = _run(
                fold,
                [2 * fold, 2 * fold + 1],
                labels[2 * fold : 2 * fold + 2],
                predicted[2 * fold : 2 * fold + 2],
            )
            r.update(variant=variant, T=steps, metrics=[{"train_time_s": 1.0}])
            name = grid.run_name(variant, steps, fold, 2)
            (spec.results / f"{name}.json").write_text(json.dumps(r))
    summary = grid.aggregate(spec, plot_dir=tmp_path / "plots")
    pairs = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    assert ("full-T2", "baseline-T8") in pairs and ("full-T2", "baseline-T2") in pairs
    assert ("baseline-T2", "baseline-T8") in pairs
    assert pairs[("full-T2", "baseline-T2")]["only_a_right"] == 2
    assert summary["configs"]["full-T2"]["accuracy"] == 1.0
    assert (tmp_path / "plots" / "dvs_sign_accuracy_vs_T.png").stat().st_size > 0
