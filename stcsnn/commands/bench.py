"""`stcsnn bench WHAT`: micro-benchmarks that print JSON and can write it to a file.

Each benchmark lives in ``stcsnn/commands/bench_<what>.py`` with the same
``configure(parser)`` / ``run(args)`` pair as a top-level command.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "compress": "spatio-temporal compression and count-frame throughput",
    "readers": "file reader throughput (AEDAT 3.1, AEDAT4, N-MNIST, AEDAT 2.0, Prophesee EVT 3.0)",
    "latency": "per-stage latency of the real producer and worker processes",
    "throughput": "events/s through producer -> worker lossless, beside the bare compressor",
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="WHAT", required=True)
    for name, help_text in BENCHMARKS.items():
        bench_parser = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"stcsnn.commands.bench_{name}").configure(bench_parser)


def run(args: argparse.Namespace) -> int:
    return importlib.import_module(f"stcsnn.commands.bench_{args.benchmark}").run(args)
