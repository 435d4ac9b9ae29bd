"""`stcsnn bench readers`: file reader throughput (events/s) per format.

Writes one file of ``--events`` events (10 M by default) per format with the
project's own writers into a temporary folder, then reads each back ``--reps``
times and reports the median, min and max wall time as events/s, for the
whole-file reader (``read_*``) and the chunked iterator (``iter_*``, 1 M events
per chunk). Every read is checked against the events written, so a fast but
wrong reader cannot report a figure.

The events are synthetic (uniform pixels and polarities, sorted timestamps at
1.25 M events/s, so 10 M events span 8 s: within the 23-bit µs timestamps of a
single N-MNIST file). AEDAT 3.1 and AEDAT 2.0 use the DVS128 sensor (128x128),
AEDAT4 a DAVIS346 (346x260), N-MNIST its 34x34; ``aedat2_davis`` is AEDAT 2.0 as
jAER writes a Davis346B (32-bit DAVIS addresses, 346x260) and ``prophesee_evt3``
a Prophesee RAW EVT 3.0 file of a Gen4 sensor (1280x720) written by faery's
encoder and read by ``replay.formats.prophesee`` (faery's decoder, the copy into
EVENT_DTYPE and its checks; benchmarks/bench_prophesee.py compares it with the
other libraries and the other Prophesee formats). AEDAT4 goes through
dv-processing in a child process (see ``replay.formats.aedat4``), which includes
starting that process in every read. The machine is shared: the spread between
min and max says how much other load disturbed the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.events import SensorSize
from stcsnn.commands.bench_compress import synthetic_events

RATE_PER_S = 1.25e6
CHUNK_EVENTS = 1_000_000
SENSORS = {
    "aedat3": SensorSize(128, 128),
    "aedat4": SensorSize(346, 260),
    "nmnist": SensorSize(34, 34),
    "aedat2": SensorSize(128, 128),
    "aedat2_davis": SensorSize(346, 260),
    "prophesee_evt3": SensorSize(1280, 720),
}
DEFAULT_FORMATS = ("aedat3", "aedat4", "nmnist", "aedat2", "aedat2_davis", "prophesee_evt3")
DAVIS346_CHIP = "eu.seebetter.ini.chips.davis.Davis346B"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000_000, help="events per file")
    parser.add_argument("--reps", type=int, default=3, help="timed reads per reader (median)")
    parser.add_argument(
        "--formats", nargs="+", choices=DEFAULT_FORMATS, default=list(DEFAULT_FORMATS)
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, help="folder for the files (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file")


def _readers(name: str):
    """(write, read whole, iterate) for one format."""
    from replay.formats import (
        aedat2,
        aedat2_writer,
        aedat3,
        aedat3_writer,
        aedat4,
        aedat4_writer,
        nmnist,
        nmnist_writer,
    )

    sensor = SENSORS[name]
    if name == "aedat2_davis":
        return _davis_readers(sensor)
    if name == "prophesee_evt3":
        return _evt3_readers(sensor)
    if name == "aedat3":
        return (
            lambda p, e: aedat3_writer.write_aedat3(p, e, sensor),
            lambda p: aedat3.read_aedat3(p).events,
            lambda p: aedat3.iter_aedat3(p, chunk_events=CHUNK_EVENTS),
        )
    if name == "aedat4":
        return (
            lambda p, e: aedat4_writer.write_aedat4(p, e, sensor),
            lambda p: aedat4.read_aedat4(p).events,
            lambda p: aedat4.iter_aedat4(p, chunk_events=CHUNK_EVENTS),
        )
    if name == "nmnist":
        return (
            lambda p, e: nmnist_writer.write_nmnist(p, e),
            lambda p: nmnist.read_nmnist(p).events,
            lambda p: nmnist.iter_nmnist(p, chunk_events=CHUNK_EVENTS),
        )
    return (
        lambda p, e: aedat2_writer.write_aedat2(p, e, sensor),
        lambda p: aedat2.read_aedat2(p).events,
        lambda p: aedat2.iter_aedat2(p, chunk_events=CHUNK_EVENTS),
    )


def _davis_readers(sensor: SensorSize):
    """AEDAT 2.0 as jAER writes a DAVIS346: DAVIS addresses after a header naming the chip."""
    from replay.formats import aedat2, aedat2_writer

    def write(path: Path, events: np.ndarray) -> None:
        addresses = aedat2_writer.encode_davis_addresses(events, sensor)
        header = aedat2_writer.header_bytes(DAVIS346_CHIP, end_line=True)
        aedat2_writer.write_aedat2_records(path, addresses, events["timestamp"], header=header)

    return (
        write,
        lambda p: aedat2.read_aedat2(p).events,
        lambda p: aedat2.iter_aedat2(p, chunk_events=CHUNK_EVENTS),
    )


def _evt3_readers(sensor: SensorSize):
    """Prophesee RAW EVT 3.0 written by faery's encoder, read by replay.formats.prophesee."""
    from replay.formats import prophesee

    def write(path: Path, events: np.ndarray) -> None:
        import faery
        from faery import evt

        packed = np.zeros(len(events), dtype=faery.EVENTS_DTYPE)
        packed["t"], packed["x"] = events["timestamp"], events["x"]
        packed["y"], packed["on"] = events["y"], events["polarity"].astype(bool)
        with evt.Encoder(str(path), "evt3", False, tuple(sensor), True) as encoder:
            encoder.write({"events": packed})

    return (
        write,
        lambda p: prophesee.read_prophesee(p).events,
        lambda p: prophesee.iter_prophesee(p, chunk_events=CHUNK_EVENTS),
    )


SUFFIXES = {
    "aedat3": ".aedat",
    "aedat4": ".aedat4",
    "nmnist": ".bin",
    "aedat2": ".aedat",
    "aedat2_davis": ".aedat",
    "prophesee_evt3": ".raw",
}


def event_rates(times_s: list[float], count: int) -> dict:
    return {
        "median_events_per_s": count / statistics.median(times_s),
        "min_events_per_s": count / max(times_s),
        "max_events_per_s": count / min(times_s),
        "median_s": statistics.median(times_s),
        "reps": len(times_s),
    }


def bench_format(name: str, count: int, reps: int, seed: int, folder: Path) -> dict:
    write, read, iterate = _readers(name)
    events = synthetic_events(count, seed=seed, rate_per_s=RATE_PER_S, sensor=SENSORS[name])
    path = folder / f"bench_{name}{SUFFIXES[name]}"
    start = time.perf_counter()
    write(path, events)
    write_s = time.perf_counter() - start

    read_times = []
    for _ in range(reps):
        start = time.perf_counter()
        got = read(path)
        read_times.append(time.perf_counter() - start)
        if not np.array_equal(got, events):  # field by field (padding bytes differ)
            raise AssertionError(f"{name}: events read back differ from those written")
        del got

    iter_times = []
    for _ in range(reps):
        start = time.perf_counter()
        seen = 0
        last = None
        for chunk in iterate(path):
            seen += len(chunk)
            last = chunk
        iter_times.append(time.perf_counter() - start)
        if seen != count or last is None or last[-1] != events[-1]:
            raise AssertionError(f"{name}: iterated {seen} events, wrote {count}")
    size = path.stat().st_size
    path.unlink()
    return {
        "sensor": str(SENSORS[name]),
        "file_bytes": size,
        "bytes_per_event": size / count,
        "write_s": write_s,
        "write_events_per_s": count / write_s,
        "read": event_rates(read_times, count),
        "iter": event_rates(iter_times, count),
    }


def run(args: argparse.Namespace) -> int:
    if args.events < 1 or args.reps < 1:
        raise SystemExit("--events and --reps must be positive")
    result = {
        "benchmark": "readers",
        "events": args.events,
        "reps": args.reps,
        "chunk_events": CHUNK_EVENTS,
        "rate_per_s": RATE_PER_S,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "formats": {},
    }
    with tempfile.TemporaryDirectory(prefix="stcsnn-bench-", dir=args.dir) as folder:
        for name in args.formats:
            if not args.json:
                print(f"{name}: writing and reading {args.events:,} events ...", file=sys.stderr)
            result["formats"][name] = bench_format(
                name, args.events, args.reps, args.seed, Path(folder)
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        for name, figures in result["formats"].items():
            print(
                f"{name:<14} read {figures['read']['median_events_per_s'] / 1e6:7.1f} M events/s"
                f"  iter {figures['iter']['median_events_per_s'] / 1e6:7.1f} M events/s"
                f"  write {figures['write_events_per_s'] / 1e6:6.1f} M events/s"
                f"  ({figures['bytes_per_event']:.1f} bytes/event)"
            )
    return 0
