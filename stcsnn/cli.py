"""`stcsnn` command: a thin layer of subcommands over streamer/, models/ and replay/.

Each subcommand lives in ``stcsnn/commands/<name>.py`` with ``configure(parser)``
and ``run(args) -> int``. Modules are imported only when their subcommand runs,
so ``stcsnn --help`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> one-line help. The module stcsnn.commands.<name> implements it.
COMMANDS = {
    "info": "versions, devices and the data this machine can find",
    "inspect": "describe an event file (format, sensor, events, duration, rate, labels)",
    "bench": "micro-benchmarks (readers, compression)",
    "produce": "publish events from a camera, a DV network stream, a replay or a synthetic "
    "source on ZeroMQ",
    "train": "train a network on a dataset (seeded, checkpoints, resume)",
    "eval": "evaluate a checkpoint: clip accuracy, confusion matrix, accuracy versus T",
    "dashboard": "live window over a worker's predictions and event previews (pyqtgraph)",
    "worker": "classify producers' event streams step by step, publish predictions on ZeroMQ",
    "demo": "producer, worker and a live view of the predictions as processes in one command",
    "convert": "videos -> emulated DVS recordings (AEDAT4) and training samples in class folders",
    "keys": "a CURVE key pair for sockets that bind beyond loopback (docs/security.md)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stcsnn",
        description="Real-time event-camera classification with a spiking neural network.",
    )
    from stcsnn import __version__

    parser.add_argument("--version", action="version", version=f"stcsnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"stcsnn.commands.{name}").configure(command_parser)
        command_parser.set_defaults(command_name=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command_name", None):
        parser.print_help()
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for messages
    module = importlib.import_module(f"stcsnn.commands.{args.command_name}")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
