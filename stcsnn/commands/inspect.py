"""`stcsnn inspect FILE`: describe an event file."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="AEDAT 3.1, AEDAT4, AEDAT 2.0, N-MNIST .bin or DVS_Sign .npz")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("inspect: being built")
