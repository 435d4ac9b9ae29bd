"""The 128x128 gesture path on real DVS_Sign files (converted from video, not a real
DVS): a CI-sized training run lowers the loss, checkpoints round-trip, and the
interfaces of issue 7 (``stcsnn eval ... --split test --json``, ``stcsnn demo
--replay DIR/test --json``) work on a folder holding ``train/`` and ``test/``.

The real data has only ``train/``; the tests link a few real files into
``tmp/train`` and ``tmp/test`` (nothing is copied). The loader itself on the
real folder is covered by tests/test_datasets_dvs_sign.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from models.checkpoint import load_checkpoint, save_checkpoint
from models.clip_cache import cached_clips
from models.default_checkpoints import CHECKPOINT_DIR
from models.evaluate import mean_readout
from models.loaders import clip_loader
from models.networks import build_network
from models.splits import SplitSpec, open_events
from models.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TINY = {"steps": 2, "channels": [8, 8, 16, 16], "hidden": 32, "dropout": 0.0}
DEFAULT = CHECKPOINT_DIR / "dvs_sign.pt"


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def sign_root(tmp_path_factory) -> Path:
    """``root/train/<c>/`` (2 real samples per class) and ``root/test/<c>/`` (1 other
    sample per class), symlinks into the shared DVS_Sign folder."""
    real = shared_path("dvs_sign/train")
    root = tmp_path_factory.mktemp("dvs_sign")
    for label in range(15):
        files = sorted((real / str(label)).glob("*.npz"), key=lambda p: int(p.stem))[:3]
        for split, chosen in (("train", files[:2]), ("test", files[2:])):
            folder = root / split / str(label)
            folder.mkdir(parents=True)
            for path in chosen:
                (folder / path.name).symlink_to(path)
    return root


@pytest.fixture(scope="module")
def tiny_run(sign_root, tmp_path_factory) -> dict:
    """One epoch of a tiny network of the gesture shape (4 SCBs on 64x64) on the
    30 linked training samples, whole samples, no validation."""
    out = tmp_path_factory.mktemp("run")
    tc = TrainConfig(
        dataset="dvs_sign",
        root=str(sign_root),
        changes=dict(TINY),
        epochs=1,
        batch_size=3,
        lr=1e-2,
        split=SplitSpec(validation_count=0),
        random_crop=False,
        out=str(out / "run"),
        device="cpu",
        workers=0,
        cache_dir=str(out / "cache"),
    )
    return {"config": tc, "summary": train(tc, log=quiet)}


def _train_loss(model: torch.nn.Module, root: Path, cache_dir: str) -> float:
    """Cross-entropy over all training samples as one batch, BN on batch statistics
    (train mode, no dropout in TINY), so an untrained and a trained network are
    measured alike."""
    samples = open_events("dvs_sign", root, "train")
    clips = cached_clips(samples, model.config.compression, "whole", cache_dir=cache_dir)
    batch = next(iter(clip_loader(clips, batch_size=len(samples), train=False, workers=0)))
    model.train()
    with torch.no_grad():
        readout = mean_readout(model(batch.clips), batch.steps)
    return float(F.cross_entropy(readout, batch.labels))


def test_one_epoch_lowers_the_loss(tiny_run, sign_root):
    tc = tiny_run["config"]
    torch.manual_seed(tc.seed)  # train() builds its network from the same seed
    before = _train_loss(build_network(tc.model_config()), sign_root, tc.cache_dir)
    trained, config, extra = load_checkpoint(tiny_run["summary"]["last_checkpoint"])
    after = _train_loss(trained, sign_root, tc.cache_dir)
    assert extra["dataset"] == "dvs_sign" and extra["train_samples"] == 30
    assert config.input_shape == (2, 64, 64) and len(config.channels) == 4
    # Measured here: 2.715 -> 2.641 (deterministic); ln(15) = 2.708 is chance.
    assert after < before - 0.03, (before, after)


def test_checkpoint_round_trip(tiny_run, sign_root, tmp_path):
    model, config, extra = load_checkpoint(tiny_run["summary"]["best_checkpoint"])
    assert config.to_dict() == tiny_run["config"].model_config().to_dict()
    assert config.class_names == tuple(str(c) for c in range(15))
    copy = save_checkpoint(tmp_path / "copy.pt", model, config, extra=extra)
    again, config_again, extra_again = load_checkpoint(copy)
    assert config_again == config and extra_again == extra
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    samples = open_events("dvs_sign", sign_root, "test")
    cache_dir = tiny_run["config"].cache_dir
    clip = cached_clips(samples, config.compression, "whole", cache_dir=cache_dir)[0][0][:, None]
    with torch.no_grad():
        assert torch.equal(model(clip), again(clip))


def _stcsnn(*args: str, timeout_s: float = 120) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "stcsnn.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout[-3000:]
    return json.loads(lines[0])


def test_eval_test_split_prints_one_json_object(tiny_run, sign_root, tmp_path):
    result = _stcsnn(
        "eval", "--dataset", "dvs_sign", "--root", str(sign_root), "--split", "test",
        "--json", "--checkpoint", tiny_run["summary"]["best_checkpoint"],
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert result["samples"] == 15 and result["T"] == 2
    assert 0.0 <= result["accuracy"] <= 1.0 and result["clip"] == "whole"


@pytest.mark.skipif(not DEFAULT.is_file(), reason=f"{DEFAULT} not trained yet")
def test_default_checkpoint_is_the_small_gesture_network():
    assert DEFAULT.stat().st_size < 5_000_000
    _, config, extra = load_checkpoint(DEFAULT)
    assert config.input_shape == (2, 64, 64) and len(config.channels) == 4
    assert config.num_classes == 15 and config.compression.mode == "stc"
    assert config.levels == 4 and config.learnable_tau and config.synaptic_filter
    # All 600 samples with the augmented recipe, half the crops mirrored (left-handed
    # signers): no held-out part of its own; the recipe's figure on unseen sessions
    # comes from grouped folds (docs/results_dvs_sign.md).
    assert extra["dataset"] == "dvs_sign" and extra["train_samples"] == 600
    assert extra["val_samples"] == 0 and extra["train_config"]["augment"] == {"mirror": 0.5}
    assert extra["train_config"]["epochs"] == 60  # the grouped folds' best recipe
    assert config.stream_window_steps == 4 and config.stream_ema_tau_us == 500_000


@pytest.mark.skipif(not DEFAULT.is_file(), reason=f"{DEFAULT} not trained yet")
def test_eval_uses_the_default_checkpoint(sign_root, tmp_path):
    result = _stcsnn(
        "eval", "--dataset", "dvs_sign", "--root", str(sign_root), "--split", "test",
        "--json", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert result["samples"] == 15 and result["T"] == 4
    assert result["checkpoint"] == str(DEFAULT)


def test_demo_replays_the_test_folder(tiny_run, sign_root):
    summary = _stcsnn(
        "demo", "--replay", str(sign_root / "test"), "--no-dashboard", "--json",
        "--speed", "max", "--model", tiny_run["summary"]["best_checkpoint"],
    )  # fmt: skip
    assert summary["outcome"] == "done" and summary["dropped"] == 0, summary
    assert summary["segments"] == 15 and summary["segments_without_prediction"] == 0, summary
    assert summary["hop_us"] == 1_000_000  # 2 s window / T = 2
    assert summary["predictions"] >= 15 * 3  # ~4 s samples
    assert 0.0 <= summary["streaming_accuracy"] <= 1.0
