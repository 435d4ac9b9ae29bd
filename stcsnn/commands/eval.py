"""`stcsnn eval`: evaluate a checkpoint: clip accuracy, confusion matrix, accuracy versus T.

A thin layer over ``models.evaluate``. Without ``--checkpoint`` it evaluates the
dataset's default checkpoint (``models/default_checkpoints.py``). ``--split val``
rebuilds the held-out split recorded in the checkpoint. Writes ``result.json``
(and PNG plots where matplotlib is installed) to ``--out``; ``--json`` prints
the result as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATASETS = ("nmnist", "dvsgesture", "cifar10dvs", "dvs_sign")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", required=True, help="dataset folder in its published layout")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--checkpoint", help="checkpoint file (default: the dataset's default)")
    parser.add_argument(
        "--steps", type=int, nargs="+", metavar="T", help="T values (default: the checkpoint's)"
    )
    parser.add_argument(
        "--clip",
        choices=("whole", "windows"),
        default="whole",
        help="whole samples on the streaming hop grid, or consecutive windows of T steps",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--limit", type=int, help="evaluate a stratified subset of N samples")
    parser.add_argument("--workers", type=int, default=0, help="processes compressing clips")
    parser.add_argument("--cache-dir", help="compressed-clip cache (default $STCSNN_CACHE/clips)")
    parser.add_argument("--out", help="folder for result.json and plots (default runs/eval/...)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args: argparse.Namespace) -> int:
    import torch

    from core.events import EventError
    from models.checkpoint import CheckpointError
    from models.default_checkpoints import default_checkpoint
    from models.evaluate import evaluate_checkpoint, write_result

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(args.dataset)
        result = evaluate_checkpoint(
            checkpoint,
            args.dataset,
            args.root,
            args.split,
            steps=args.steps,
            clip=args.clip,
            batch_size=args.batch_size,
            device=device,
            amp=args.amp,
            limit=args.limit,
            workers=args.workers,
            cache_dir=args.cache_dir,
            log=log,
        )
        name = f"{args.dataset}-{args.split}-{checkpoint.stem}"
        name += "-windows" if args.clip == "windows" else ""
        out = Path(args.out or Path("runs") / "eval" / name)
        result["files"] = write_result(result, out)
    except (ValueError, KeyError, CheckpointError, EventError, OSError) as error:
        print(f"stcsnn eval: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        for entry in result["by_T"]:
            print(
                f"T={entry['T']:>3}  accuracy {100 * entry['accuracy']:6.2f}%"
                f"  ({entry['correct']}/{entry['samples']} clips, loss {entry['loss']:.4f})"
            )
        print(f"results in {result['files']['json']}")
    return 0
