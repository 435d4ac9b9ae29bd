"""The statistics behind docs/results.md (experiments/kfold_grid.py): standard
errors, the exact McNemar test, pooling folds, pairing runs and the launch order."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_variants_that_differ_only_in_seed_offset_are_draws_of_one_recipe() -> None:
    draws = grid.recipe_draws()
    assert draws[grid.REFERENCE_RECIPE] == [
        "augment_e60",
        "augment_e60_seed10",
        "augment_e60_seed20",
    ]
    assert draws["augment_wd_e60"] == ["augment_wd_e60", "augment_wd_e60_seed10"]
    assert draws["augment"] == ["augment"] and draws["augment_wd"] == ["augment_wd"]
    assert sum(len(names) for names in draws.values()) == len(grid.VARIANTS)


def test_aggregate_compares_two_recipes_over_their_draws(tmp_path, capsys) -> None:
    import dataclasses
    import json

    spec = dataclasses.replace(grid.SPECS["dvs_sign_grouped"], results=tmp_path / "res")
    spec.results.mkdir()
    labels = [0, 1, 0, 1]
    for variant, predicted in [
        ("augment_wd_e60", [0, 1, 0, 1]),
        ("augment_wd_e60_seed10", [0, 1, 0, 0]),
        ("augment_e60", [0, 1, 1, 0]),
        ("augment_e60_seed10", [0, 0, 0, 0]),
        ("augment", [0, 0, 0, 0]),
    ]:
        r = _run(0, [0, 1, 2, 3], labels, predicted)
        r.update(variant=variant, T=4, metrics=[{"train_time_s": 1.0}])
        (spec.results / f"{grid.run_name(variant, 4, 0, 4)}.json").write_text(json.dumps(r))
    summary = grid.aggregate(spec)
    (draws,) = summary["draw_comparisons"]  # one draw of a recipe gets no row here
    assert draws["a"] == "augment_wd_e60 + augment_wd_e60_seed10"
    assert (draws["draws_a"], draws["draws_b"], draws["samples"]) == (2, 2, 4)
    # Shares right: A (1, 1, 1, .5), B (1, .5, .5, 0).
    assert draws["accuracy_a"] == pytest.approx(0.875) and draws["accuracy_b"] == 0.5
    assert (draws["a_better"], draws["b_better"]) == (3, 0)
    assert "| augment_wd_e60 + augment_wd_e60_seed10 | augment_e60 + augment_e60_seed10 | 4 |" in (
        capsys.readouterr().out
    )


def test_grouped_dvs_sign_grid_keeps_sessions_apart_and_its_variants_build() -> None:
    spec = grid.SPECS["dvs_sign_grouped"]
    assert spec.grouped and spec.folds == 4 and spec.keep_checkpoints and not spec.plots
    order = grid.plan(["protocol", "levers", "baseline"], spec.folds, spec.groups)
    assert order[:2] == [("full", 4, 0), ("full", 4, 1)] and len(order) == 12
    from models.train import TrainConfig

    for name in ("augment", "augment_e60"):
        v = grid.VARIANTS[name]
        tc = TrainConfig(dataset="dvs_sign", root="data", **v.train)
        assert tc.augment == {}
    assert (
        TrainConfig(dataset="dvs_sign", root="data", **grid.VARIANTS["augment_e60"].train).epochs
        == 60
    )


def _experiment(name: str):
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_session_cuts_find_the_run_length_that_groups_near_duplicates() -> None:
    groups = _experiment("dvs_sign_groups")
    ids = np.tile(np.arange(20), 2)
    labels = np.repeat([0, 1], 20)
    rng = np.random.default_rng(0)
    # 4 sessions of 5 per class: images are a session's pattern plus a little noise
    patterns = rng.random((8, 16))
    images = patterns[labels * 4 + ids // 5] + 0.05 * rng.random((40, 16))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    similarity = images @ images.T
    best = groups.session_cuts(similarity, labels, ids)[0]
    assert (best["size"], best["offset"]) == (5, 0) and best["inside"] > best["between"]
    session = (labels[:, None] == labels[None, :]) & (ids[:, None] // 5 == ids[None, :] // 5)
    nothing = np.zeros_like(session)
    assert groups.nearest_neighbour_accuracy(similarity, labels, nothing) == 1.0
    assert groups.nearest_neighbour_accuracy(similarity, labels, session) < 1.0


def test_a_fixed_shift_moves_every_event_by_the_same_amount() -> None:
    from core.events import SensorSize, make_events
    from models.augment import EventAugment

    perturbed = _experiment("dvs_sign_perturbed")
    events = make_events([0, 5, 9], [30, 31, 32], [30, 33, 36], [1, 0, 1])
    still = EventAugment(**perturbed.NONE)
    shift = perturbed.FixedShift(still, 0.125)
    out = shift.apply(events, SensorSize(64, 64), 0, 1.0, 10, np.random.default_rng(1))
    dx, dy = out["x"] - events["x"], out["y"] - events["y"]
    assert len(set(dx)) == 1 and len(set(dy)) == 1
    assert 7.5 <= float(np.hypot(dx[0], dy[0])) <= 8.5  # 1/8 of 64 pixels


def test_perturbed_report_pairs_only_what_both_recipes_were_measured_under(
    tmp_path, monkeypatch
) -> None:
    perturbed = _experiment("dvs_sign_perturbed")
    monkeypatch.setattr(perturbed, "RESULTS", tmp_path)
    old = {"as recorded": [True, False], "shifted 1/8": [False, False]}  # before "mirrored"
    new = {**old, "mirrored": [True, True]}
    (tmp_path / "a-fold0.json").write_text(json.dumps({"correct": new}))
    (tmp_path / "b-fold0.json").write_text(json.dumps({"correct": old}))
    rows = perturbed.report("a", "b").splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| as recorded", "| shifted 1/8"]
    assert rows[0].startswith("| as recorded | 0.500 | 0.500 | +0.0")
    # Two draws of b: per sample the share right, (1, 0.5) against a's (1, 0):
    # differences (0, -0.5), SE = pstdev 0.25 / sqrt(2).
    second = {"as recorded": [True, True], "shifted 1/8": [False, True]}
    (tmp_path / "b2-fold0.json").write_text(json.dumps({"correct": second}))
    rows = perturbed.report("a", "b+b2").splitlines()[2:]
    assert rows[0].startswith("| as recorded | 0.500 | 0.750 | -25.0 ± 17.7 pt | 0 | 1 |")


_ENSEMBLE_PATH = _PATH.parent / "dvs_sign_ensemble.py"
_ensemble_spec = importlib.util.spec_from_file_location("dvs_sign_ensemble", _ENSEMBLE_PATH)
ensemble = importlib.util.module_from_spec(_ensemble_spec)
_ensemble_spec.loader.exec_module(ensemble)


def test_test_time_shift_moves_events_and_drops_what_leaves_the_sensor() -> None:
    import torch

    clips = torch.zeros(1, 1, 2, 8, 8)  # [T, B, C, H, W]
    clips[0, 0, 1, 2, 7] = 5.0  # row 2, last column
    assert torch.equal(ensemble.shifted(clips, 0, 0), clips)
    moved = ensemble.shifted(clips, -3, 4)  # 3 columns left, 4 rows down
    assert moved[0, 0, 1, 6, 4] == 5.0 and moved.sum() == 5.0
    assert ensemble.shifted(clips, 1, 0).sum() == 0.0  # pushed off the right edge


def test_activity_weighted_readout_weighs_steps_by_input_and_ignores_padding() -> None:
    import torch

    logits = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[9.0, 0.0]]])  # [T=3, B=1, 2]
    clips = torch.ones(3, 1, 2, 4, 4)
    clips[1] *= 3.0  # the second step holds three times the first's current
    readout = ensemble.activity_weighted_readout(logits, clips, torch.tensor([2]))
    assert torch.allclose(readout, torch.tensor([[0.25, 0.75]]))  # the padded step is left out
    still = ensemble.activity_weighted_readout(logits, torch.zeros_like(clips), torch.tensor([2]))
    assert torch.equal(still, torch.zeros(1, 2))  # no input at all: no evidence either way


def test_paired_cells_count_the_discordant_samples_of_two_readouts() -> None:
    a = [True] * 8 + [False, False]
    b = [True] * 6 + [False, False, True, False]
    # A alone right on samples 6 and 7, B alone on 8: +1 of 10 samples.
    only_a, only_b = 2, 1
    se = grid.paired_difference_se(only_a, only_b, 10)
    p = grid.mcnemar_exact_p(only_a, only_b)
    assert grid.paired_cells(a, b) == f"+10.0 ± {100 * se:.1f} pt | 2 | 1 | {p:.3f}"
    assert grid.paired_cells(a, a).startswith("+0.0 ± 0.0 pt | 0 | 0 | 1.000")


def test_paired_over_draws_averages_each_sample_over_its_draws() -> None:
    labels = [0] * 6
    a = [  # two draws of recipe A: right on 0-3, then on 0-2 and 4
        [_run(0, [0, 1, 2, 3, 4, 5], labels, [0, 0, 0, 0, 1, 1])],
        [_run(0, [0, 1, 2, 3, 4, 5], labels, [0, 0, 0, 1, 0, 1])],
    ]
    b = [[_run(0, [0, 1, 2, 3, 4, 5], labels, [0, 1, 1, 1, 1, 0])]]  # right on 0 and 5
    out = grid.paired_over_draws(a, b, permutations=2_000)
    # Per-sample shares A (1, 1, 1, .5, .5, 0), B (1, 0, 0, 0, 0, 1).
    d = [0, 1, 1, 0.5, 0.5, -1]
    assert (out["draws_a"], out["draws_b"], out["samples"]) == (2, 1, 6)
    assert out["accuracy_a"] == pytest.approx(4 / 6) and out["accuracy_b"] == pytest.approx(2 / 6)
    assert (out["a_better"], out["b_better"]) == (4, 1)
    assert out["difference"] == pytest.approx(sum(d) / 6)
    assert out["difference_se"] == pytest.approx(statistics.pstdev(d) / math.sqrt(6))
    # 14 of the 2^5 sign patterns of the five non-zero differences give
    # |sum| >= 2 (the observed sum): the exact p is 14/32; the sampled one lands near it.
    assert out["p_value"] == pytest.approx(14 / 32, abs=0.04)


def test_paired_over_draws_with_one_draw_each_is_mcnemar() -> None:
    rng = np.random.default_rng(3)
    index, labels = list(range(200)), [0] * 200
    a = [[_run(0, index, labels, (rng.random(200) > 0.8).astype(int).tolist())]]
    b = [[_run(0, index, labels, (rng.random(200) > 0.7).astype(int).tolist())]]
    out, exact = grid.paired_over_draws(a, b, permutations=20_000), grid.paired(a[0], b[0])
    assert out["difference"] == pytest.approx(exact["difference"])
    assert out["difference_se"] == pytest.approx(exact["difference_se"])
    assert (out["a_better"], out["b_better"]) == (exact["only_a_right"], exact["only_b_right"])
    assert 0 < exact["p_value"] < 0.2
    assert out["p_value"] == pytest.approx(exact["p_value"], rel=0.15)


def test_mirrored_folder_writes_each_sample_mirrored_left_to_right(tmp_path) -> None:
    from core.events import make_events
    from replay.formats.dvs_sign import read_dvs_sign
    from replay.formats.dvs_sign_writer import write_dvs_sign

    runs = _experiment("dvs_sign_runs")
    events = make_events([0, 10, 20], [0, 5, 127], [3, 4, 5], [1, 0, 1])
    write_dvs_sign(tmp_path / "7.npz", events)
    folder = runs.mirrored_folder([(tmp_path / "7.npz", 4)], tmp_path / "mirrored")
    out = read_dvs_sign(folder / "4" / "7.npz").events
    assert out["x"].tolist() == [127, 122, 0]
    for name in ("timestamp", "y", "polarity"):
        assert out[name].tolist() == events[name].tolist()


def test_mirrored_event_images_and_the_class_each_mirror_resembles() -> None:
    groups = _experiment("dvs_sign_groups")
    left = np.zeros((2, 2))
    left[:, 0] = 1.0  # events on the left column only
    images = np.array([left.ravel(), left[:, ::-1].ravel()])  # class 0 left, class 1 right
    np.testing.assert_array_equal(groups.mirrored(images, bins=2), images[::-1])
    labels = np.array([0, 1])
    to_mirrored = images @ groups.mirrored(images, bins=2).T
    nothing = np.zeros((2, 2), dtype=bool)
    # Each class's mirror image is the other class: mirroring would merge them.
    assert groups.most_like_mirrored(to_mirrored, labels, nothing) == [1, 0]
