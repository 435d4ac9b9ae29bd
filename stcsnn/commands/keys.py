"""`stcsnn keys NAME`: a CURVE key pair for sockets beyond loopback (docs/security.md).

    stcsnn keys producer --out keys/       # keys/producer.key, keys/producer.key_secret
    stcsnn keys worker --out keys/

Give the ``.key`` (public) to the other side; keep the ``.key_secret``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the key pair's name: NAME.key and NAME.key_secret")
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="folder for the two files (default: here)"
    )


def run(args: argparse.Namespace) -> int:
    from streamer.curve import CurveError, generate_keys

    try:
        public, secret = generate_keys(args.out, args.name)
    except (CurveError, OSError) as error:
        print(f"stcsnn keys: {error}", file=sys.stderr)
        return 1
    print(f"public key (give it to the other side): {public}")
    print(f"secret key (keep it; readable by you only): {secret}")
    return 0
