"""Training (models/train.py, stcsnn train) on real N-MNIST samples and on
real-format DVS128 Gesture / CIFAR10-DVS folders; CI-sized runs of seconds."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import shared_path

from models.checkpoint import CheckpointError, load_checkpoint
from models.clip_cache import cached_clips
from models.evaluate import evaluate
from models.loaders import clip_loader
from models.splits import SplitSpec, open_part
from models.train import TrainConfig, default_threads, initial_weights, train
from stcsnn.cli import main

# 50 real samples (5 per digit): 40 train, 10 validate.
TINY_SPLIT = SplitSpec(validation_count=10, limit=50, seed=0)


def tiny(tmp_path, **changes) -> TrainConfig:
    settings = dict(
        dataset="nmnist",
        root=str(shared_path("nmnist")),
        changes={"steps": 2},
        epochs=3,
        batch_size=8,
        lr=3e-3,
        split=TINY_SPLIT,
        out=str(tmp_path / "run"),
        device="cpu",
        workers=0,
        cache_dir=str(tmp_path / "cache"),
    )
    settings.update(changes)
    return TrainConfig(**settings)


def quiet(message: str) -> None:
    pass


def metrics(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tiny")
    tc = tiny(tmp_path)
    return tc, train(tc, log=quiet)


def test_tiny_run_lowers_the_loss(tiny_run):
    tc, summary = tiny_run
    logged = metrics(summary["run_dir"])
    assert [m["epoch"] for m in logged] == [1, 2, 3]
    assert logged[-1]["train_loss"] < 0.8 * logged[0]["train_loss"]
    for m in logged:
        assert m["epoch_time_s"] > 0 and 0 <= m["val_accuracy"] <= 1
    assert summary["best_val_accuracy"] == max(m["val_accuracy"] for m in logged)


def test_loss_and_accuracy_curves_are_drawn_beside_the_checkpoints(tiny_run):
    import matplotlib.image

    _, summary = tiny_run
    curves = summary["curves"]
    assert curves == os.path.join(summary["run_dir"], "curves.png")
    with open(curves, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(curves).shape
    assert width > height > 200


def test_threads_default_to_half_the_cpus_at_most_four():
    cpus = len(os.sched_getaffinity(0))
    assert default_threads() == max(1, min(4, cpus // 2))
    assert default_threads(local_world=1000) == 1


def test_checkpoints_hold_what_the_worker_and_eval_need(tiny_run):
    tc, summary = tiny_run
    model, config, extra = load_checkpoint(summary["last_checkpoint"])
    assert config.compression.steps == 2 and config.class_names == tuple(str(d) for d in range(10))
    assert extra["dataset"] == "nmnist" and extra["epoch"] == 3 and extra["seed"] == 0
    assert extra["split"] == TINY_SPLIT.to_dict()
    assert extra["train_samples"] == 40 and extra["val_samples"] == 10
    assert "optimizer" in extra
    _, _, best_extra = load_checkpoint(summary["best_checkpoint"])
    assert best_extra["val_accuracy"] == summary["best_val_accuracy"]
    assert "optimizer" not in best_extra

    # The loaded weights give exactly the validation numbers training logged.
    val = open_part("nmnist", tc.root, "val", SplitSpec.from_dict(extra["split"]))
    clips = cached_clips(val, config.compression, cache_dir=tc.cache_dir)
    result = evaluate(model, clip_loader(clips, batch_size=4, train=False), 10)
    last = metrics(summary["run_dir"])[-1]
    assert result.samples == 10
    assert result.accuracy == last["val_accuracy"]
    assert result.loss == pytest.approx(last["val_loss"], rel=1e-5)


def test_resume_continues_exactly(tmp_path):
    straight = train(tiny(tmp_path / "a", epochs=2), log=quiet)
    first = train(tiny(tmp_path / "b", epochs=2, stop_after=1), log=quiet)
    assert first["epochs_done"] == 1
    resumed = train(tiny(tmp_path / "b", epochs=2, resume=True), log=quiet)
    assert resumed["epochs_this_run"] == 1 and resumed["epochs_done"] == 2
    assert [m["epoch"] for m in metrics(resumed["run_dir"])] == [1, 2]
    a, _, extra_a = load_checkpoint(straight["last_checkpoint"])
    b, _, extra_b = load_checkpoint(resumed["last_checkpoint"])
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(wa, wb, rtol=1e-6, atol=1e-7, msg=name)
    assert extra_a["val_accuracy"] == extra_b["val_accuracy"]

    with pytest.raises(CheckpointError, match="lr"):
        train(tiny(tmp_path / "b", epochs=3, resume=True, lr=1e-2), log=quiet)


def test_val_every_validates_every_nth_and_the_last_epoch(tmp_path):
    summary = train(tiny(tmp_path, epochs=3, val_every=2, changes={"steps": 1}), log=quiet)
    logged = metrics(summary["run_dir"])
    assert [m["val_accuracy"] is not None for m in logged] == [False, True, True]
    # Only validated epochs can be the best one.
    assert [m["best"] for m in logged][0] is False
    assert summary["best_epoch"] in (2, 3)
    _, _, extra = load_checkpoint(summary["best_checkpoint"])
    assert extra["val_accuracy"] == summary["best_val_accuracy"] is not None
    with pytest.raises(ValueError, match="val_every"):
        tiny(tmp_path, val_every=0)


def test_init_starts_from_a_checkpoints_weights(tiny_run, tmp_path):
    tc, summary = tiny_run
    start = summary["last_checkpoint"]
    trained, _, _ = load_checkpoint(start)
    config = tc.model_config().with_changes(stream_ema_tau_us=1.0)  # EMA may differ
    for name, weight in initial_weights(start, config).items():
        torch.testing.assert_close(weight, trained.state_dict()[name], msg=name)
    tuned = train(tiny(tmp_path, epochs=1, init=start), log=quiet)
    fresh = metrics(summary["run_dir"])[0]
    assert metrics(tuned["run_dir"])[0]["train_loss"] < 0.8 * fresh["train_loss"]
    _, _, extra = load_checkpoint(tuned["last_checkpoint"])
    assert extra["train_config"]["init"] == start and len(extra["init_sha256"]) == 64
    with pytest.raises(CheckpointError, match="hidden"):
        train(tiny(tmp_path / "other", init=start, changes={"steps": 2, "hidden": 32}), log=quiet)


def test_cli_train_json_and_options(tmp_path, capsys):
    code = main(
        [
            "train",
            "--dataset",
            "nmnist",
            "--root",
            str(shared_path("nmnist")),
            "--limit",
            "30",
            "--val-count",
            "10",
            "--epochs",
            "1",
            "--steps",
            "2",
            "--baseline",
            "--batch-size",
            "8",
            "--crop-us",
            "150000:300000",
            "--weight-decay",
            "1e-3",
            "--set",
            "hidden=64",
            "--device",
            "cpu",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "run"),
            "--threads",
            "1",
            "--json",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "torch CPU threads: 1 per process (--threads)" in captured.err
    assert torch.get_num_threads() == 1
    _, config, extra = load_checkpoint(summary["best_checkpoint"])
    assert config.compression.mode == "count" and config.levels == 1 and config.hidden == 64
    assert not config.synaptic_filter and not config.learnable_tau
    assert extra["crop_us"] == [150_000, 300_000]
    assert extra["train_config"]["weight_decay"] == 1e-3

    assert main(["train", "--dataset", "nmnist", "--root", str(tmp_path / "none")]) == 1
    assert "N-MNIST" in capsys.readouterr().err


def test_ctrl_c_names_the_last_checkpoint_and_the_command_that_resumes(tmp_path):
    """SIGINT once the first epoch is saved (and its curves drawn): no traceback, one
    line with the checkpoint and the exact command to go on, exit code 130."""
    run_dir = tmp_path / "run"
    options = [
        "--dataset", "nmnist", "--root", str(shared_path("nmnist")), "--limit", "200",
        "--val-count", "20", "--epochs", "50", "--steps", "2", "--batch-size", "8",
        "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--out", str(run_dir),
    ]  # fmt: skip
    command = [sys.executable, "-m", "stcsnn", "train", *options]
    training = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell that starts pytest in the background (`pytest &`) ignores SIGINT,
        # and children inherit that; the training process must see Ctrl-C as a user's would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "curves.png").exists() and training.poll() is None:
            assert time.monotonic() < deadline, "no epoch finished within 120 s"
            time.sleep(0.05)
        training.send_signal(signal.SIGINT)
        out, err = training.communicate(timeout=60)
    finally:
        if training.poll() is None:
            training.kill()
    assert training.returncode == 130, err
    assert "Traceback" not in err and not out
    last = err.strip().splitlines()[-1]
    _, _, extra = load_checkpoint(run_dir / "last.pt")
    resume = shlex.join(["stcsnn", "train", *options, "--resume"])
    assert last == (
        f"stcsnn train: interrupted; last checkpoint {run_dir / 'last.pt'} "
        f"(epoch {extra['epoch']} of 50); continue with: {resume}"
    )
    assert (run_dir / "curves.png").is_file()


@pytest.mark.parametrize("dataset", ["dvsgesture", "cifar10dvs"])
def test_one_short_epoch_on_real_format_folders(dataset, tmp_path, monkeypatch):
    """The 128x128 path end to end: real file formats (AEDAT 3.1 + labels CSV,
    AEDAT 2.0), the full gesture-shape network (4 SCBs on 64x64) at T = 2."""
    from tests.synthetic_datasets import write_cifar10dvs_folder, write_dvsgesture_folder

    monkeypatch.setenv("STCSNN_CACHE", str(tmp_path / "cache"))
    root = tmp_path / dataset
    if dataset == "dvsgesture":
        write_dvsgesture_folder(root, users=(1, 2, 3), gestures_per_recording=4)
    else:
        write_cifar10dvs_folder(root, per_class=2, events_per_sample=800)
    summary = train(
        TrainConfig(
            dataset=dataset,
            root=str(root),
            changes={"steps": 2},
            epochs=1,
            batch_size=4,
            split=SplitSpec(validation_count=4),
            out=str(tmp_path / "run"),
            device="cpu",
            workers=0,
        ),
        log=quiet,
    )
    _, config, extra = load_checkpoint(summary["best_checkpoint"])
    assert config.input_shape == (2, 64, 64) and len(config.channels) == 4
    assert extra["dataset"] == dataset and extra["val_samples"] == 4
    assert metrics(summary["run_dir"])[0]["train_loss"] > 0


def test_torchrun_two_gloo_processes(tmp_path):
    """DistributedDataParallel over 2 CPU processes: both ranks train their
    shard, validation counts every sample once, rank 0 writes the files."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "stcsnn.cli",
        "train",
        "--dataset",
        "nmnist",
        "--root",
        str(shared_path("nmnist")),
        "--limit",
        "40",
        "--val-count",
        "11",
        "--epochs",
        "1",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "run"),
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 0 only
    model, config, extra = load_checkpoint(json.loads(lines[0])["last_checkpoint"])
    assert extra["val_samples"] == 11 and extra["train_samples"] == 29
    # The summed shard counts equal one process evaluating all 11 samples.
    val = open_part("nmnist", shared_path("nmnist"), "val", SplitSpec.from_dict(extra["split"]))
    clips = cached_clips(val, config.compression, cache_dir=tmp_path / "cache")
    result = evaluate(model, clip_loader(clips, batch_size=16, train=False), 10)
    logged = metrics(tmp_path / "run")[0]
    assert result.samples == 11
    assert result.accuracy == logged["val_accuracy"]
    assert result.loss == pytest.approx(logged["val_loss"], rel=1e-5)


def test_augmented_crops_differ_from_plain_ones_and_are_recorded(tmp_path):
    """--augment changes the training crops (not validation) and the checkpoint
    records the settings; plain runs keep the config they had before it existed."""
    from models.augment import EventAugment
    from models.clips import RandomCropClips
    from models.networks import get_config

    settings = {"noise_hz": 0.0}
    summary = train(tiny(tmp_path, epochs=1, changes={"steps": 1}, augment=settings), log=quiet)
    _, _, extra = load_checkpoint(summary["best_checkpoint"])
    assert extra["train_config"]["augment"] == settings
    assert "augment" not in tiny(tmp_path).to_dict()
    part = open_part("nmnist", shared_path("nmnist"), "train", TINY_SPLIT)
    compression = get_config("nmnist").compression
    plain = RandomCropClips(part, compression, seed=0)
    moved = RandomCropClips(part, compression, seed=0, augment=EventAugment(**settings))
    different = [not torch.equal(plain[(0, i)][0], moved[(0, i)][0]) for i in range(5)]
    assert all(different)
    with pytest.raises(ValueError, match="unknown augmentation settings"):
        tiny(tmp_path, augment={"flip_polarity": True})
    with pytest.raises(ValueError, match="mirror must be the share of crops mirrored"):
        tiny(tmp_path, augment={"mirror": True})
    with pytest.raises(ValueError, match="augment needs plain random crops"):
        tiny(tmp_path, augment={}, random_crop=False)


def test_the_train_command_builds_grouped_folds_and_augmentation():
    from stcsnn.cli import build_parser
    from stcsnn.commands.train import train_config

    parser = build_parser()
    base = ["train", "--dataset", "dvs_sign", "--root", "data"]
    tc = train_config(
        parser.parse_args([*base, "--folds", "4", "--fold", "1", "--grouped", "--augment"])
    )
    assert tc.split == SplitSpec(folds=4, fold=1, grouped=True) and tc.augment == {}
    tc = train_config(parser.parse_args([*base, "--augment", '{"drop": 0.1}']))
    assert tc.augment == {"drop": 0.1} and not tc.split_spec.grouped
    with pytest.raises(ValueError, match="--grouped needs --folds"):
        train_config(parser.parse_args([*base, "--grouped"]))
