"""`stcsnn train`: train a network on a dataset (seeded, checkpoints, resume).

A thin layer over ``models.train``: flags -> ``TrainConfig``. Run it under
``torchrun --nproc_per_node N -m stcsnn.cli train ...`` for several GPUs or nodes.
See docs/training.md for the commands that trained the default checkpoints.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import sys

DATASETS = ("nmnist", "dvsgesture", "cifar10dvs", "dvs_sign")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", required=True, help="dataset folder in its published layout")
    model = parser.add_argument_group(
        "model (defaults: the dataset's config in models/networks.py)"
    )
    model.add_argument("--config", help="model config name (default: the dataset's)")
    model.add_argument("--steps", type=int, metavar="T", help="time steps per window")
    model.add_argument("--mode", choices=("stc", "count"), help="synaptic current or counts")
    model.add_argument(
        "--baseline", action="store_true", help="count frames + plain LIF, fixed tau, no filter"
    )
    model.add_argument("--levels", type=int, metavar="K", help="MT-LIF thresholds (1: plain LIF)")
    model.add_argument("--no-learnable-tau", action="store_true", help="fix the membrane constant")
    model.add_argument(
        "--no-synaptic-filter", action="store_true", help="SCB without its filter (lambda = 0)"
    )
    model.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any ModelConfig/CompressionConfig field, e.g. --set channels=[8,16] "
        "--set tau_s_us=50000 (repeatable)",
    )
    run = parser.add_argument_group("training")
    run.add_argument("--epochs", type=int, default=20)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine decay)")
    run.add_argument("--seed", type=int, default=0, help="initialisation, order and crops")
    run.add_argument(
        "--weight-decay",
        type=float,
        default=1e-4,
        help="AdamW weight decay on conv and linear weights (default 1e-4)",
    )
    held = run.add_mutually_exclusive_group()
    held.add_argument("--val-count", type=int, help="validation samples held out (N-MNIST: 100)")
    held.add_argument("--val-fraction", type=float, help="validation share (others: 0.1)")
    run.add_argument("--fold", type=int, help="validate on fold i (0-based) of --folds")
    run.add_argument("--folds", type=int, help="stratified k-fold cross-validation")
    run.add_argument(
        "--grouped",
        action="store_true",
        help="folds keep each recording session together (DVS_Sign: near-duplicate recordings)",
    )
    run.add_argument("--split-seed", type=int, default=0, help="seed of the split (default 0)")
    run.add_argument("--limit", type=int, help="use a stratified subset of N training samples")
    run.add_argument(
        "--crop-us",
        default=None,
        metavar="MIN:MAX",
        help="random crop length range in µs (default: one window); 'off' = whole samples",
    )
    run.add_argument(
        "--augment",
        nargs="?",
        const="{}",
        metavar="JSON",
        help="event-level augmentation of the crops (models.augment: shift, scale, roll, "
        "stretch, drop-out, background noise); a JSON object changes its defaults, "
        """e.g. '{"noise_hz": 0}'""",
    )
    stream = parser.add_argument_group(
        "stream-aware training (off by default; docs/training.md, Streaming accuracy)"
    )
    stream.add_argument(
        "--stream-context",
        type=float,
        default=0.0,
        metavar="P",
        help="share of crops preceded by other samples, played back to back, on a grid at "
        "a random phase to the crop's onset, scored from the onset on (0 = off)",
    )
    stream.add_argument(
        "--stream-context-us",
        metavar="MIN:MAX",
        help="length range of that preceding stream in µs (default 0:one window)",
    )
    stream.add_argument(
        "--stream-gap-us", type=int, default=0, help="event-free µs between samples (replay gap)"
    )
    stream.add_argument(
        "--no-stream-phase", action="store_true", help="grid from the crop's onset (no phase)"
    )
    stream.add_argument(
        "--stream-loss",
        choices=("mean", "each"),
        default="mean",
        help="over the scored steps: CE of the mean readout, or the mean CE of each step",
    )
    run.add_argument("--out", help="run folder (default runs/<config>-T<T>-seed<S>)")
    run.add_argument("--resume", action="store_true", help="continue from the run folder's last.pt")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    run.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    run.add_argument("--workers", type=int, help="loader processes (default: by CPU count)")
    run.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads per process (default: half the CPUs available, at most 4;"
        " torch's own default, every CPU, collapses when other work shares the machine)",
    )
    run.add_argument(
        "--init",
        metavar="CKPT",
        help="start from this checkpoint's weights (fine-tuning: same network, new optimiser)",
    )
    run.add_argument(
        "--val-every",
        type=int,
        default=1,
        metavar="N",
        help="validate every N epochs and after the last (default 1)",
    )
    run.add_argument("--cache-dir", help="compressed-clip cache (default $STCSNN_CACHE/clips)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def parse_set(items: list[str]) -> dict:
    """``FIELD=VALUE`` -> {field: value}; VALUE as a Python literal, else a string."""
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects FIELD=VALUE, found {item!r}")
        try:
            changes[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            changes[key.strip()] = value
    return changes


def train_config(args: argparse.Namespace):
    from models.clips import parse_crop_us, parse_us_range
    from models.splits import SplitSpec, default_split
    from models.train import TrainConfig

    changes = parse_set(args.set)
    for flag, key in (("steps", "steps"), ("mode", "mode"), ("levels", "levels")):
        if getattr(args, flag) is not None:
            changes[key] = getattr(args, flag)
    if args.no_learnable_tau:
        changes["learnable_tau"] = False
    if args.no_synaptic_filter:
        changes["synaptic_filter"] = False
    if (args.fold is None) != (args.folds is None):
        raise ValueError("--fold and --folds go together")
    if args.grouped and args.folds is None:
        raise ValueError("--grouped needs --folds and --fold")
    if args.folds is not None:
        split = SplitSpec(
            folds=args.folds,
            fold=args.fold,
            seed=args.split_seed,
            limit=args.limit,
            grouped=args.grouped,
        )
    elif args.val_count is not None or args.val_fraction is not None:
        split = SplitSpec(args.val_count, args.val_fraction, seed=args.split_seed, limit=args.limit)
    else:
        default = default_split(args.dataset)
        split = SplitSpec(
            default.validation_count,
            default.validation_fraction,
            seed=args.split_seed,
            limit=args.limit,
        )
    crop_text = args.crop_us
    stream_context_us = None
    if args.stream_context_us is not None:
        stream_context_us = parse_us_range(args.stream_context_us, "--stream-context-us")
    return TrainConfig(
        dataset=args.dataset,
        root=args.root,
        config=args.config,
        baseline=args.baseline,
        changes=changes,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        split=split,
        random_crop=crop_text is None or parse_crop_us(crop_text) is not None,
        crop_us=parse_crop_us(crop_text),
        out=args.out,
        resume=args.resume,
        device=args.device,
        amp=args.amp,
        workers=args.workers,
        val_every=args.val_every,
        init=args.init,
        cache_dir=args.cache_dir,
        stream_context=args.stream_context,
        stream_context_us=stream_context_us,
        stream_gap_us=args.stream_gap_us,
        stream_phase=not args.no_stream_phase,
        stream_loss=args.stream_loss,
        augment=None if args.augment is None else parse_augment(args.augment),
    )


def parse_augment(text: str) -> dict:
    """``--augment``'s JSON object -> ``TrainConfig.augment``; one line for anything else."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--augment must be a JSON object, found {text!r} ({error.msg})") from None
    if not isinstance(settings, dict):
        raise ValueError(f"--augment must be a JSON object, found {text!r}")
    return settings


def run(args: argparse.Namespace) -> int:
    from core.events import EventError
    from models.checkpoint import CheckpointError
    from models.train import train

    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 reports
    tc = None
    try:
        tc = train_config(args)
        set_threads(args.threads, rank0)
        summary = train(tc)
    except (ValueError, KeyError, TypeError, CheckpointError, EventError, OSError) as error:
        print(f"stcsnn train: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if rank0 and tc is not None:
            print(interrupted(args, tc), file=sys.stderr, flush=True)
        return 130
    if not rank0:
        return 0
    if args.json:
        print(json.dumps(summary))
    else:
        best = summary["best_val_accuracy"]
        shown = f"{best:.4f} (epoch {summary['best_epoch']})" if best is not None else "n/a"
        curves = f"; curves in {summary['curves']}" if summary.get("curves") else ""
        print(f"best val accuracy {shown}; checkpoints in {summary['run_dir']}{curves}")
    return 0


def set_threads(threads: int | None, report: bool) -> int:
    """torch's CPU threads: ``--threads``, else ``models.train.default_threads``."""
    from models.runner import configure_threads
    from models.train import MAX_DEFAULT_THREADS, default_threads

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # ranks on this machine
    given = threads is not None
    chosen = configure_threads(threads if given else default_threads(local_world))
    if report:
        why = "--threads" if given else f"half the CPUs here, at most {MAX_DEFAULT_THREADS}"
        print(f"torch CPU threads: {chosen} per process ({why})", file=sys.stderr, flush=True)
    return chosen


def interrupted(args: argparse.Namespace, tc) -> str:
    """The one line Ctrl-C leaves: the last checkpoint saved and the command that
    goes on from it (these arguments with ``--resume``)."""
    from models.checkpoint import CheckpointError, load_checkpoint

    last = tc.run_dir(tc.model_config()) / "last.pt"
    lead = "\n" if sys.stderr.isatty() else ""  # after a progress line rewritten in place
    try:
        _, _, extra = load_checkpoint(last)
    except CheckpointError:
        return f"{lead}stcsnn train: interrupted before the first epoch ended; nothing saved"
    argv = list(getattr(args, "argv", None) or ["train"])
    again = shlex.join(["stcsnn", *argv, *([] if args.resume else ["--resume"])])
    return (
        f"{lead}stcsnn train: interrupted; last checkpoint {last} "
        f"(epoch {extra.get('epoch')} of {tc.epochs}); continue with: {again}"
    )
