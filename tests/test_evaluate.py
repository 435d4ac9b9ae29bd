"""Evaluation (models/evaluate.py, stcsnn eval): clip accuracy per T, confusion,
JSON result and plots, the held-out split recorded in the checkpoint, and the
committed default checkpoint on real N-MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path

from models.checkpoint import load_checkpoint
from models.default_checkpoints import DEFAULT_CHECKPOINTS, default_checkpoint
from models.evaluate import evaluate_checkpoint, mean_readout
from models.splits import SplitSpec
from models.train import TrainConfig, train
from stcsnn.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint trained for one epoch on 30 real samples, 10 held out, T = 2."""
    tmp_path = tmp_path_factory.mktemp("eval")
    summary = train(
        TrainConfig(
            dataset="nmnist",
            root=str(shared_path("nmnist")),
            changes={"steps": 2},
            epochs=1,
            batch_size=8,
            split=SplitSpec(validation_count=10, limit=30, seed=1),
            out=str(tmp_path / "run"),
            device="cpu",
            workers=0,
            cache_dir=str(tmp_path / "cache"),
        ),
        log=lambda message: None,
    )
    return Path(summary["best_checkpoint"])


def test_mean_readout_averages_real_steps_only():
    logits = torch.arange(24, dtype=torch.float32).view(4, 2, 3)
    out = mean_readout(logits, torch.tensor([4, 2]))
    torch.testing.assert_close(out[0], logits[:, 0].mean(0))
    torch.testing.assert_close(out[1], logits[:2, 1].mean(0))
    logits[2:, 1] = 1e6  # padding steps do not count
    torch.testing.assert_close(mean_readout(logits, torch.tensor([4, 2]))[1], out[1])


def test_eval_json_has_the_keys_and_rebuilds_the_val_split(checkpoint, tmp_path, capsys):
    args = ["eval", "--dataset", "nmnist", "--root", str(shared_path("nmnist"))]
    args += ["--split", "val", "--checkpoint", str(checkpoint), "--json"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # one JSON object, nothing else on stdout
    result = json.loads(out[0])
    for key in ("accuracy", "samples", "T", "confusion", "class_names", "by_T", "files"):
        assert key in result
    assert result["samples"] == 10 and result["T"] == 2 and result["split"] == "val"
    confusion = np.array(result["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10
    assert result["accuracy"] == np.trace(confusion) / 10
    _, _, extra = load_checkpoint(checkpoint)
    assert result["accuracy"] == extra["val_accuracy"]  # the same samples training validated on
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["accuracy"] == result["accuracy"]


def test_accuracy_versus_t_with_plots(checkpoint, tmp_path):
    result = evaluate_checkpoint(
        checkpoint,
        "nmnist",
        shared_path("nmnist"),
        "train",
        steps=[1, 2, 4],
        limit=10,
        cache_dir=tmp_path / "cache",
    )
    assert [e["T"] for e in result["by_T"]] == [1, 2, 4]
    assert [e["samples"] for e in result["by_T"]] == [10, 10, 10]
    assert result["T"] == 1 and result["checkpoint_T"] == 2
    assert [e["hop_us"] for e in result["by_T"]] == [300_000, 150_000, 75_000]
    assert result["by_T"][2]["mean_steps"] == pytest.approx(4.0, abs=0.2)
    from models.evaluate import write_result

    files = write_result(result, tmp_path / "out")
    for kind in ("accuracy_vs_T", "confusion"):
        data = Path(files[kind]).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000


def test_eval_windows_and_refusals(checkpoint, tmp_path, capsys):
    result = evaluate_checkpoint(
        checkpoint, "nmnist", shared_path("nmnist"), "val", clip="windows", cache_dir=tmp_path
    )
    assert result["samples"] == 10 and result["clip"] == "windows"

    from tests.synthetic_datasets import write_nmnist_folder

    write_nmnist_folder(tmp_path / "train_only", splits=("Train",), per_class=1)
    args = ["eval", "--dataset", "nmnist", "--root", str(tmp_path / "train_only")]
    assert main([*args, "--split", "test", "--checkpoint", str(checkpoint)]) == 1
    assert "Test" in capsys.readouterr().err  # a folder without Test/: named in the error
    assert main([*args, "--checkpoint", str(tmp_path / "missing.pt")]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        default_checkpoint("cifar10dvs")


def test_default_nmnist_checkpoint_on_real_validation_samples(tmp_path, capsys):
    """The committed default: its recorded validation accuracy, and eval on a
    stratified 20 of its held-out samples."""
    path = default_checkpoint("nmnist")
    assert path.name == DEFAULT_CHECKPOINTS["nmnist"] and path.stat().st_size < 5 * 2**20
    _, config, extra = load_checkpoint(path)
    assert config.compression.steps == 8 and config.levels == 4 and config.learnable_tau
    assert extra["dataset"] == "nmnist" and extra["val_samples"] == 100
    assert extra["val_accuracy"] >= 0.9
    args = ["eval", "--dataset", "nmnist", "--root", str(shared_path("nmnist")), "--split", "val"]
    args += ["--limit", "20", "--json", "--cache-dir", str(tmp_path), "--out", str(tmp_path)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 20 and result["T"] == 8
    assert result["accuracy"] >= 0.85
