"""Reader throughput (events/s) of every event-file format on 10 M-event files.

    .venv/bin/python benchmarks/bench_readers.py [--events N] [--reps R] [--formats ...]

The same as ``stcsnn bench readers`` (see ``stcsnn/commands/bench_readers.py``
for what is measured: AEDAT 3.1, AEDAT4, N-MNIST, AEDAT 2.0 DVS128 and DAVIS346,
Prophesee EVT 3.0), writing benchmarks/results/readers.json unless --out
says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stcsnn.commands import bench_readers

RESULTS = Path(__file__).resolve().parent / "results" / "readers.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench_readers.configure(parser)
    parser.set_defaults(out=RESULTS)
    return bench_readers.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
