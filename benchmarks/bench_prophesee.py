"""Prophesee RAW/DAT and Event Stream readers: the candidate libraries checked and timed.

    .venv/bin/python benchmarks/bench_prophesee.py [--events N] [--reps R] [--out PATH]
        [--readers stcsnn faery ...] [--no-baseline]

Writes benchmarks/results/prophesee.json (unless --out says otherwise) with three parts:

1. ``handcrafted``: every reader on the small files of replay/formats/prophesee_samples.py,
   built word by word from Prophesee's EVT 2.0 / EVT 3.0 / DAT documentation and
   the Event Stream specification: ``ok``, ``differs`` (with the first differing
   event) or the error it raised.
2. ``synthetic``: one file of ``--events`` events (10 M) per format (EVT 2.0,
   EVT 3.0, DAT, Event Stream) for a 1280x720 sensor, written by faery's
   encoders; uniform pixels and polarities at 0.5 M events/s (20 s: past the
   16.8 s wrap of EVT 3.0's 24-bit time). Each reader reads each file ``--reps``
   times: events/s (median, min, max of the wall time) and whether what it read
   equals what was written.
3. ``baseline``: the project's own AEDAT 3.1, AEDAT 2.0 and N-MNIST readers on
   as many events, on this machine (``stcsnn.commands.bench_readers``).

Readers: ``stcsnn`` (replay.formats.prophesee / event_stream: faery, the copy
into EVENT_DTYPE and its checks; ``read_*``) and ``stcsnn_iter`` (``iter_*``,
1 M-event chunks); ``faery`` (its decoders alone, packets concatenated);
``expelliarmus``, ``evlib`` and ``event_stream`` where installed (``not
installed`` otherwise: the project depends on faery only; ``pip install
expelliarmus evlib event_stream`` into a scratch environment to compare again;
``libraries`` in the JSON records the versions that ran). Every reader's
output is brought to (t µs, x, y from the top, polarity 0/1) before comparing;
the Event Stream readers count y from the bottom, so their y is flipped as
part of that.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.events import SensorSize
from stcsnn.commands.bench_compress import synthetic_events
from stcsnn.commands.bench_readers import event_rates

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "benchmarks" / "results" / "prophesee.json"
SENSOR = SensorSize(1280, 720)
RATE_PER_S = 0.5e6
CHUNK_EVENTS = 1_000_000
FORMATS = {"evt2": ".raw", "evt3": ".raw", "dat": ".dat", "es": ".es"}
READERS = ("stcsnn", "stcsnn_iter", "faery", "expelliarmus", "evlib", "event_stream")
LIBRARY_OF = {"stcsnn": "faery", "stcsnn_iter": "faery"}
BASELINE_FORMATS = ("aedat3", "aedat2", "nmnist")


def _columns(t, x, y, p) -> tuple[np.ndarray, ...]:
    return (
        np.asarray(t, dtype=np.int64),
        np.asarray(x, dtype=np.int64),
        np.asarray(y, dtype=np.int64),
        np.asarray(p, dtype=np.int64),
    )


# --- the readers: path, format, sensor -> (t, x, y from the top, polarity) ---


def read_stcsnn(path: Path, kind: str, sensor: SensorSize):
    if kind == "es":
        from replay.formats.event_stream import read_event_stream

        events = read_event_stream(path).events
    else:
        from replay.formats.prophesee import read_prophesee

        events = read_prophesee(path).events
    return events


def read_stcsnn_iter(path: Path, kind: str, sensor: SensorSize):
    if kind == "es":
        from replay.formats.event_stream import iter_event_stream

        chunks = list(iter_event_stream(path, chunk_events=CHUNK_EVENTS))
    else:
        from replay.formats.prophesee import iter_prophesee

        chunks = list(iter_prophesee(path, chunk_events=CHUNK_EVENTS))
    return chunks


def read_faery(path: Path, kind: str, sensor: SensorSize):
    from faery import dat, es, evt

    if kind == "es":
        with es.Decoder(str(path), 0) as decoder:
            return [packet for packet in decoder]
    if kind == "dat":
        with dat.Decoder(str(path), None, None) as decoder:
            return [packet for packet in decoder]
    with evt.Decoder(str(path), None, None) as decoder:
        return [packet["events"] for packet in decoder if "events" in packet]


def read_expelliarmus(path: Path, kind: str, sensor: SensorSize):
    from expelliarmus import Wizard

    if kind == "es":
        raise NotImplementedError("expelliarmus reads DAT, EVT 2.0 and EVT 3.0")
    events = Wizard(encoding=kind).read(path)
    if events is None:
        raise RuntimeError("Wizard.read returned None (it prints its error on stderr)")
    return events


def read_evlib(path: Path, kind: str, sensor: SensorSize):
    import evlib

    frame = evlib.load_events(str(path), sort=False).collect()
    return (
        frame["t"].dt.total_microseconds().to_numpy(),
        frame["x"].to_numpy(),
        frame["y"].to_numpy(),
        frame["polarity"].to_numpy(),
    )


def read_event_stream(path: Path, kind: str, sensor: SensorSize):
    import event_stream

    if kind != "es":
        raise NotImplementedError("event_stream reads Event Stream files only")
    return [packet for packet in event_stream.Decoder(str(path))]


READ = {
    "stcsnn": read_stcsnn,
    "stcsnn_iter": read_stcsnn_iter,
    "faery": read_faery,
    "expelliarmus": read_expelliarmus,
    "evlib": read_evlib,
    "event_stream": read_event_stream,
}


def normalised(reader: str, kind: str, raw, sensor: SensorSize) -> tuple[np.ndarray, ...]:
    """What ``READ[reader]`` returned, as (t, x, y from the top, polarity 0/1)."""
    if reader == "stcsnn_iter":
        raw = np.concatenate(raw) if raw else np.zeros(0, dtype=[("timestamp", "i8")])
    if reader in ("stcsnn", "stcsnn_iter"):
        if not len(raw):
            return _columns([], [], [], [])
        return _columns(raw["timestamp"], raw["x"], raw["y"], raw["polarity"])
    if reader == "faery":
        return _faery_columns(kind, raw, sensor.height)
    if reader == "expelliarmus":
        return _columns(raw["t"], raw["x"], raw["y"], raw["p"])
    if reader == "evlib":
        t, x, y, p = raw
        return _columns(t, x, y, p > 0)
    events = np.concatenate(raw)
    if "exposure" in events.dtype.fields:  # ATIS: the change detection events (a title)
        events = events[~events["exposure"]]
    return _from_bottom(events, sensor.height)


def _from_bottom(events: np.ndarray, height: int) -> tuple[np.ndarray, ...]:
    """Columns of Event Stream events, whose y counts from the bottom row."""
    y = height - 1 - events["y"].astype(np.int64)
    return _columns(events["t"], events["x"], y, events["p"])


def _faery_columns(kind: str, packets, height: int) -> tuple[np.ndarray, ...]:
    if not packets:
        return _columns([], [], [], [])
    events = np.concatenate(packets)
    if kind == "dat":
        return _columns(events["t"], events["x"], events["y"], events["payload"] != 0)
    if kind == "es":
        if "exposure" in events.dtype.fields:
            events = events[~events["exposure"]]
        return _from_bottom(events, height)
    return _columns(events["t"], events["x"], events["y"], events["on"])


def installed(reader: str) -> bool:
    name = LIBRARY_OF.get(reader, reader)
    return importlib.util.find_spec(name) is not None


def compare(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> dict:
    """``ok`` or ``differs`` with the first differing event (or the counts)."""
    if len(got[0]) != len(want[0]):
        n = min(len(got[0]), len(want[0]))
        first = _first_difference(tuple(c[:n] for c in got), tuple(c[:n] for c in want))
        return {
            "outcome": "differs",
            "events_read": len(got[0]),
            "events_expected": len(want[0]),
            "first_difference": first,
        }
    first = _first_difference(got, want)
    if first is None:
        return {"outcome": "ok", "events": len(got[0])}
    return {"outcome": "differs", "events": len(got[0]), "first_difference": first}


def _first_difference(got, want) -> dict | None:
    bad = np.zeros(len(got[0]), dtype=bool)
    for a, b in zip(got, want, strict=True):
        bad |= a != b
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return {
        "index": i,
        "read": [int(c[i]) for c in got],
        "expected": [int(c[i]) for c in want],
        "differing_events": int(bad.sum()),
    }


def run_reader(reader: str, path: Path, kind: str, sensor: SensorSize) -> tuple[dict, object]:
    """(outcome dict, raw result or None) of one read, errors included."""
    try:
        raw = READ[reader](path, kind, sensor)
    except NotImplementedError as error:
        return {"outcome": "not supported", "error": str(error)}, None
    except Exception as error:  # a candidate's failure is a result here
        return {"outcome": "error", "error": f"{type(error).__name__}: {error}"[:300]}, None
    return {}, raw


# --- part 1: the handcrafted files ---


def bench_handcrafted(readers: list[str], folder: Path) -> dict:
    from replay.formats.prophesee_samples import all_samples

    results = {}
    for sample in all_samples():
        path = folder / f"{sample.name}{sample.suffix}"
        path.write_bytes(sample.data)
        want = _columns(*zip(*sample.events, strict=True))
        results[sample.name] = {}
        for reader in readers:
            if not installed(reader):
                results[sample.name][reader] = {"outcome": "not installed"}
                continue
            outcome, raw = run_reader(reader, path, sample.kind, sample.sensor)
            if raw is not None:
                try:
                    outcome = compare(normalised(reader, sample.kind, raw, sample.sensor), want)
                except Exception as error:
                    outcome = {"outcome": "error", "error": f"{type(error).__name__}: {error}"}
            results[sample.name][reader] = outcome
    return results


# --- part 2: 10 M events per format ---


def write_synthetic(kind: str, events: np.ndarray, path: Path) -> float:
    """Write with faery's encoder (timestamps as they are: no t0 shift); seconds taken."""
    from faery import EVENTS_DTYPE, dat, es, evt

    packed = np.zeros(len(events), dtype=EVENTS_DTYPE)
    packed["t"] = events["timestamp"]
    packed["x"] = events["x"]
    packed["y"] = events["y"]
    packed["on"] = events["polarity"].astype(bool)
    start = time.perf_counter()
    if kind == "es":
        packed["y"] = SENSOR.height - 1 - packed["y"]  # Event Stream: y from the bottom
        with es.Encoder(str(path), "dvs", False, tuple(SENSOR)) as encoder:
            for i in range(0, len(packed), CHUNK_EVENTS):
                encoder.write(packed[i : i + CHUNK_EVENTS])
    elif kind == "dat":
        records = packed.astype(
            [("t", "=u8"), ("x", "=u2"), ("y", "=u2"), ("payload", "u1")], casting="unsafe"
        )
        with dat.Encoder(str(path), "dat2", "cd", False, tuple(SENSOR)) as encoder:
            for i in range(0, len(records), CHUNK_EVENTS):
                encoder.write(records[i : i + CHUNK_EVENTS])
    else:
        with evt.Encoder(str(path), kind, False, tuple(SENSOR), True) as encoder:
            for i in range(0, len(packed), CHUNK_EVENTS):
                encoder.write({"events": packed[i : i + CHUNK_EVENTS]})
    return time.perf_counter() - start


def time_reader(reader: str, path: Path, kind: str, reps: int, want) -> dict:
    """events/s over ``reps`` reads, and whether the first read equals ``want``."""
    times: list[float] = []
    verdict: dict = {}
    for rep in range(reps):
        start = time.perf_counter()
        failure, raw = run_reader(reader, path, kind, SENSOR)
        elapsed = time.perf_counter() - start
        if raw is None:
            return failure
        times.append(elapsed)
        if rep == 0:
            verdict = compare(normalised(reader, kind, raw, SENSOR), want)
        del raw
    return {**verdict, **event_rates(times, len(want[0]))}


def bench_synthetic(readers: list[str], count: int, reps: int, seed: int, folder: Path) -> dict:
    events = synthetic_events(count, seed=seed, rate_per_s=RATE_PER_S, sensor=SENSOR)
    want = _columns(events["timestamp"], events["x"], events["y"], events["polarity"])
    results = {}
    for kind, suffix in FORMATS.items():
        path = folder / f"bench_{kind}{suffix}"
        print(f"{kind}: writing {count:,} events ...", file=sys.stderr)
        write_s = write_synthetic(kind, events, path)
        entry = {"file_bytes": path.stat().st_size, "write_s": write_s, "readers": {}}
        entry["bytes_per_event"] = entry["file_bytes"] / count
        for reader in readers:
            if not installed(reader):
                entry["readers"][reader] = {"outcome": "not installed"}
                continue
            print(f"{kind}: {reader} ...", file=sys.stderr)
            entry["readers"][reader] = time_reader(reader, path, kind, reps, want)
        path.unlink()
        results[kind] = entry
    return results


# --- part 3: the project's own readers, for comparison ---


def bench_baseline(count: int, reps: int, seed: int, folder: Path) -> dict:
    from stcsnn.commands import bench_readers

    results = {}
    for name in BASELINE_FORMATS:
        print(f"baseline {name} ...", file=sys.stderr)
        figures = bench_readers.bench_format(name, count, reps, seed, folder)
        results[name] = {"sensor": figures["sensor"], "read": figures["read"]}
    return results


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("faery", "expelliarmus", "evlib", "event_stream", "polars"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS))
    parser.add_argument("--no-baseline", action="store_true", help="skip the project's readers")
    parser.add_argument("--dir", type=Path, help="folder for the files (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.reps < 1:
        raise SystemExit("--events and --reps must be positive")
    result = {
        "benchmark": "prophesee",
        "events": args.events,
        "reps": args.reps,
        "sensor": str(SENSOR),
        "rate_per_s": RATE_PER_S,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "libraries": library_versions(),
    }
    with tempfile.TemporaryDirectory(prefix="stcsnn-bench-", dir=args.dir) as name:
        folder = Path(name)
        result["handcrafted"] = bench_handcrafted(args.readers, folder)
        result["synthetic"] = bench_synthetic(
            args.readers, args.events, args.reps, args.seed, folder
        )
        if not args.no_baseline:
            result["baseline"] = bench_baseline(args.events, args.reps, args.seed, folder)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result)
    return 0


def print_summary(result: dict) -> None:
    for name, readers in result["handcrafted"].items():
        cells = ", ".join(f"{r}: {o['outcome']}" for r, o in readers.items())
        print(f"handcrafted {name:<18} {cells}")
    for kind, entry in result["synthetic"].items():
        for reader, o in entry["readers"].items():
            rate = o.get("median_events_per_s")
            figure = f"{rate / 1e6:7.1f} M events/s" if rate else " " * 18
            print(f"synthetic {kind:<5} {reader:<13} {figure}  {o['outcome']}")
    for name, entry in result.get("baseline", {}).items():
        print(f"baseline  {name:<7} {entry['read']['median_events_per_s'] / 1e6:7.1f} M events/s")


if __name__ == "__main__":
    sys.exit(main())
