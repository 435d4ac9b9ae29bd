"""Fuzzing: the wire decoder and every file reader on damaged real inputs.

    nice -n 10 .venv/bin/python benchmarks/fuzz.py [--cases 100000] [--aedat4-cases 2000]
        [--hypothesis-cases 10000] [--targets wire aedat3 ...] [--seed 0] [--out FILE]
    .venv/bin/python benchmarks/fuzz.py --replay TARGET CASE [--seed 0] [--save FILE]

Targets (decoders): ``wire`` (``streamer.wire.decode``), ``wire_hypothesis`` (the
same decoder on hypothesis-generated headers), ``aedat2``, ``aedat2_davis``, ``aedat3``,
``nmnist``, ``dvs_sign``, ``gesture_labels``, ``aedat4``, ``prophesee_evt2``,
``prophesee_evt3``, ``prophesee_dat`` and ``event_stream`` (the readers of replay/formats).
Every case takes a real seed input (a recording from the shared data, or a
message ``wire.encode`` made of real events) and damages it with one to three
mutations: bit flips, byte insertions and deletions, truncation, splicing with
another seed, extreme integers written over format fields, header fields
replaced by extreme values; a ``.npz`` also has its ``.npy`` members damaged
and re-zipped (so the CRC does not hide them). The outcome of a case is

- ``ok``: decoded, and the result keeps the decoder's promises (events inside
  the sensor, timestamps non-decreasing, polarity 0 or 1; a decoded wire
  message encodes and decodes again);
- the project's error class: ``WireError``, ``FormatError``, ``EventValidationError``;
- unexpected: any other exception (``unexpected:OverflowError``), ``hang`` (over
  the per-case time limit), ``memory`` (MemoryError with 1 GiB of address space
  left to the run, or a process over 1 GiB of RSS) or ``broken_promise``.

Each target runs in a child process of its own, under that address-space
limit; a case is reproducible from (target, seed, case number): ``--replay``
rebuilds it, saves the input and runs it without catching anything. Writes
benchmarks/results/fuzz.json; docs/reliability.md ("Fuzzing") has the figures.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.events import (
    EVENT_DTYPE,
    EventError,
    Recording,
    SensorSize,
    concat_events,
    validate_events,
)
from replay.paths import data_root
from streamer import wire

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "fuzz.json"
MEMORY_LIMIT_BYTES = 1 << 30
EXAMPLES_PER_KIND = 3
REPORT_EVERY_CASES = 1000  # a child sends its counts this often, so a crash loses little
CASE_TIME_LIMIT_S = 5.0  # the real seeds decode in well under 10 ms
AEDAT4_CASE_TIME_LIMIT_S = 30.0  # a child start (0.1-0.3 s) plus the stall timeout
AEDAT4_STALL_TIMEOUT_S = 1.0  # a healthy packet decodes in milliseconds
ALLOWED_ERRORS = (wire.WireError, EventError)  # EventError: FormatError, EventValidationError

# Seed files under the shared data folder, per target (tests skip when one is missing).
NMNIST_SINGLE = "recordings/nmnist_single.bin"
NMNIST_SMALL = "nmnist/Train/8/00419.bin"
DVXPLORER = "recordings/dvxplorer_320x240.aedat4"
GESTURE_LABELS = "dvsgesture/user01_natural_labels.csv"
DVS_SIGN_SMALL = ("dvs_sign/train/14/38.npz", "dvs_sign/train/3/31.npz")
SEED_FILES = {
    "wire": (NMNIST_SINGLE, DVXPLORER, GESTURE_LABELS),
    "wire_hypothesis": (NMNIST_SINGLE, DVXPLORER, GESTURE_LABELS),
    "aedat2": (NMNIST_SINGLE, DVXPLORER),
    "aedat3": (NMNIST_SINGLE, DVXPLORER),
    "nmnist": (NMNIST_SINGLE, NMNIST_SMALL),
    "dvs_sign": DVS_SIGN_SMALL,
    "gesture_labels": (GESTURE_LABELS,),
    "aedat4": (DVXPLORER,),
    # The DVXplorer's events written as each camera's files (no real one in the shared data).
    "aedat2_davis": (DVXPLORER,),
    "prophesee_evt2": (DVXPLORER,),
    "prophesee_evt3": (DVXPLORER,),
    "prophesee_dat": (DVXPLORER,),
    "event_stream": (DVXPLORER,),
}
NEW_FORMAT_TARGETS = (
    "aedat2_davis", "prophesee_evt2", "prophesee_evt3", "prophesee_dat", "event_stream",
)  # fmt: skip
TARGET_NAMES = tuple(SEED_FILES)

# --- extreme values -----------------------------------------------------------------------

EXTREME_INTS = (
    0, 1, -1, 127, 128, 255, 256, 32767, 32768, 65535, 65536, 2**31 - 1, 2**31, -(2**31),
    2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30,
)  # fmt: skip
HUGE_INT = 10**400  # a JSON number no float can hold


def _nested(depth: int, make: Callable[[Any], Any]) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = make(value)
    return value


EXTREME_JSON_VALUES = (
    *EXTREME_INTS, HUGE_INT, -HUGE_INT, 0.5, -0.0, 1e308, math.nan, math.inf, -math.inf,
    "", "x" * 10_000, "a/b", "\x00", "\ud800", "é\u202e", None, True, False, [], {},
    [1] * 2000, _nested(200, lambda v: [v]), _nested(200, lambda v: {"a": v}),
)  # fmt: skip
# Written into a header's JSON text as is (json.dumps cannot make most of them).
RAW_JSON_TOKENS = (
    b"9" * 5000, b"-" + b"9" * 5000, b"1" + b"0" * 400 + b".5", b"1e999", b"-1e999",
    b"NaN", b"Infinity", b"-0", b"[" * 100_000, b"[" * 20_000 + b"]" * 20_000,
    b"{" * 50_000, b'"\\ud800"', b'"\\u0000"', b"tru", b'"', b"0.1e-99999", b"01",
)  # fmt: skip
# Written over fields of the label CSV.
TEXT_TOKENS = (
    b"0", b"-1", b"+7", b"11", b"12", b"", b" ", b"9" * 25, b"9" * 5000, b"-" + b"9" * 5000,
    b"1e6", b"0x1f", b"\xff\xfe", "\u0661\u0662".encode(), b"\x00", b"1\r", b"1.5", b"NaN",
)  # fmt: skip
# Every header field of protocol v1 (docs/wire-protocol.md), for fields added where
# they do not belong.
WIRE_FIELDS = (
    "v", "type", "stream", "session", "seq", "sent_ns", "count", "t_first_us", "t_last_us",
    "width", "height", "dtype", "until_us", "segments", "source_session", "reason", "t_end_us",
    "hop_us", "step", "skipped", "probs", "logits", "top1", "top1_name", "top1_prob",
    "closed_by_sent_ns", "closed_by_received_ns", "published_ns", "model", "timings_ms",
    "t_start_us", "events", "events_per_count", "values",
)  # fmt: skip
CSV_LINES = (
    b"", b"1,2,3", b"12,0,1", b",,", b"1,2,3,4", b"class,startTime_usec,endTime_usec",
    b"\xef\xbb\xbfclass,startTime_usec,endTime_usec", b"5,10,5", b"1,-5,3", b"#",
)  # fmt: skip


# --- cases, outcomes, tallies -------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """A real input: file bytes, or the frames of a wire message (a tuple of bytes)."""

    name: str
    data: Any
    fields: tuple[int, ...] = ()  # byte offsets of format fields, hit more often
    members: tuple[tuple[str, bytes], ...] = ()  # a .npz's members, for inner damage
    fields_share: float = 1.0  # of the cases that aim at ``fields`` at all


@dataclass(frozen=True)
class Case:
    value: Any  # bytes of a file, or a list of frames
    variant: str  # which reader ran it
    what: str  # the seed and the damage done, for a report


@dataclass
class Target:
    name: str
    decoder: str  # what is fuzzed, for the report
    seeds: list[Seed]
    make_case: Callable[[np.random.Generator], Case]
    run: Callable[[Case], None]  # raises BrokenPromise where a result breaks a promise
    save: Callable[[Case, Path], Path]
    time_limit_s: float = CASE_TIME_LIMIT_S
    cleanup: Callable[[], None] = lambda: None


class BrokenPromise(Exception):
    """A decoder returned a result that breaks what it promises."""


class CaseTimeout(BaseException):
    """The per-case time limit passed (a BaseException: no reader may swallow it)."""


def classify(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, CaseTimeout):
        return "hang"
    if isinstance(error, MemoryError):
        return "memory"
    if isinstance(error, BrokenPromise):
        return "broken_promise"
    if isinstance(error, ALLOWED_ERRORS):
        return type(error).__name__
    return f"unexpected:{type(error).__name__}"


# How the AEDAT4 reader's child process ended a case, by the words of its FormatError.
AEDAT4_ENDINGS = {
    "made no progress": "dv-processing stalled: child killed",
    "stopped unexpectedly": "dv-processing died",
    "dv-processing failed": "dv-processing raised",
    "dv-processing cannot open": "dv-processing raised",
}


def error_detail(error: BaseException | None) -> str:
    """A finer label of an expected error: a WireError's reason, how dv-processing ended."""
    if isinstance(error, wire.WireError):
        return error.reason
    text = str(error) if isinstance(error, EventError) else ""
    return next((label for words, label in AEDAT4_ENDINGS.items() if words in text), "")


def is_unexpected(outcome: str) -> bool:
    return outcome in ("hang", "memory", "broken_promise") or outcome.startswith("unexpected")


def raised_at(error: BaseException) -> str:
    """The innermost frame of the project (not of this harness) the error passed."""
    error = error.__cause__ or error  # a BrokenPromise names what its cause raised
    frames = traceback.extract_tb(error.__traceback__)
    ours = [
        f for f in frames if f.filename.startswith(str(ROOT)) and "benchmarks" not in f.filename
    ]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return ""
    return f"{Path(frame.filename).relative_to(ROOT) if ours else frame.filename}:{frame.lineno}"


@dataclass
class Tally:
    """Outcomes of a run (or of part of one: tallies merge)."""

    cases: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of this process (the AEDAT4 reader's children not included)
    outcomes: Counter = field(default_factory=Counter)
    error_details: Counter = field(default_factory=Counter)  # see ``error_detail``
    sites: Counter = field(default_factory=Counter)  # unexpected outcomes by where raised
    examples: dict[str, list[dict]] = field(default_factory=dict)  # a few cases per site
    max_rss_bytes: int = 0
    max_child_rss_bytes: int = 0

    def add(self, index: int, case: Case, outcome: str, error: BaseException | None) -> None:
        self.cases += 1
        self.outcomes[outcome] += 1
        detail = error_detail(error)
        if detail:
            self.error_details[detail] += 1
        if not is_unexpected(outcome):
            return
        # One entry per place it was raised: distinct bugs, each with a few cases.
        site = f"{outcome} at {raised_at(error)}" if error is not None else outcome
        self.sites[site] += 1
        kept = self.examples.setdefault(site, [])
        if len(kept) < EXAMPLES_PER_KIND:
            detail = "" if error is None else f"{type(error).__name__}: {error}"[:300]
            kept.append({"case": index, "what": case.what[:300], "variant": case.variant,
                         "error": detail})  # fmt: skip

    def merge(self, other: Tally) -> None:
        self.cases += other.cases
        self.seconds += other.seconds
        self.cpu_seconds += other.cpu_seconds
        self.outcomes.update(other.outcomes)
        self.error_details.update(other.error_details)
        self.sites.update(other.sites)
        for kind, examples in other.examples.items():
            kept = self.examples.setdefault(kind, [])
            kept.extend(examples[: EXAMPLES_PER_KIND - len(kept)])
        self.max_rss_bytes = max(self.max_rss_bytes, other.max_rss_bytes)
        self.max_child_rss_bytes = max(self.max_child_rss_bytes, other.max_child_rss_bytes)

    def unexpected(self) -> int:
        return sum(n for kind, n in self.outcomes.items() if is_unexpected(kind))


# --- guards: time and memory --------------------------------------------------------------


@contextmanager
def case_time_limits():
    """SIGALRM raises CaseTimeout while a case runs (``run_case`` arms it);
    the previous handler and timer come back afterwards."""

    def on_alarm(signum, frame):
        raise CaseTimeout("per-case time limit passed")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if previous_timer[0]:
            signal.setitimer(signal.ITIMER_REAL, *previous_timer)


def run_case(target: Target, case: Case) -> tuple[str, BaseException | None]:
    """The outcome of one case (inside ``case_time_limits``)."""
    signal.setitimer(signal.ITIMER_REAL, target.time_limit_s)
    try:
        target.run(case)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 - sorting every outcome is the point
        return classify(error), error
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return "ok", None


def _max_rss_bytes(who: int) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # Linux reports KiB


class MemoryWatch:
    """Flags the case after which this process grew 1 GiB beyond its start, or a
    child process (the AEDAT4 reader's) first reached 1 GiB: peaks only rise, so
    each is flagged once."""

    def __init__(self, limit: int = MEMORY_LIMIT_BYTES):
        self.limit = limit
        self.own_start = _max_rss_bytes(resource.RUSAGE_SELF)
        self.children_start = _max_rss_bytes(resource.RUSAGE_CHILDREN)
        self.own_flagged = self.children_flagged = False

    def exceeded(self) -> bool:
        own = _max_rss_bytes(resource.RUSAGE_SELF)
        children = _max_rss_bytes(resource.RUSAGE_CHILDREN)
        hit = False
        if not self.own_flagged and own - self.own_start > self.limit:
            self.own_flagged = hit = True
        if not self.children_flagged and children > max(self.limit, self.children_start):
            self.children_flagged = hit = True
        return hit

    def peaks(self) -> tuple[int, int]:
        return _max_rss_bytes(resource.RUSAGE_SELF), _max_rss_bytes(resource.RUSAGE_CHILDREN)


def limit_address_space(headroom: int = MEMORY_LIMIT_BYTES) -> None:
    """Cap this process at its present address space plus ``headroom``: an
    allocation beyond raises MemoryError (counted as ``memory``) instead of
    taking the machine. Only the soft limit: child processes may raise theirs."""
    with open("/proc/self/status") as f:
        size_kib = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = size_kib * 1024 + headroom
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def case_rng(seed: int, target: str, case: int) -> np.random.Generator:
    """One generator per case, so that any case can be rebuilt on its own."""
    return np.random.default_rng([seed, zlib.crc32(target.encode()), case])


def run_target(
    target: Target,
    cases: int,
    seed: int,
    *,
    first_case: int = 0,
    skip: frozenset[int] = frozenset(),
    on_unexpected: Callable[[int, Case, str, BaseException | None], None] | None = None,
    on_progress: Callable[[int, Tally], None] | None = None,
    before_case: Callable[[int], None] | None = None,
) -> Tally:
    """Run cases ``first_case`` to ``cases - 1`` (less ``skip``). ``on_progress(next,
    tally)`` gets the tally of each ``REPORT_EVERY_CASES`` cases (then starts anew);
    ``before_case(index)`` lets a watcher see which case is running."""
    tally = Tally()
    memory = MemoryWatch()
    started = (time.perf_counter(), time.process_time())
    with case_time_limits():
        for index in range(first_case, cases):
            if index in skip:
                continue
            if before_case is not None:
                before_case(index)
            case = target.make_case(case_rng(seed, target.name, index))
            outcome, error = run_case(target, case)
            if memory.exceeded():
                outcome = "memory"
            tally.add(index, case, outcome, error)
            if on_unexpected is not None and is_unexpected(outcome):
                on_unexpected(index, case, outcome, error)
            if on_progress is not None and tally.cases >= REPORT_EVERY_CASES:
                _finish(tally, memory, started)
                on_progress(index + 1, tally)
                tally, started = Tally(), (time.perf_counter(), time.process_time())
    _finish(tally, memory, started)
    return tally


def _finish(tally: Tally, memory: MemoryWatch, started: tuple[float, float]) -> None:
    tally.seconds = time.perf_counter() - started[0]
    tally.cpu_seconds = time.process_time() - started[1]
    tally.max_rss_bytes, tally.max_child_rss_bytes = memory.peaks()


# --- byte mutations -----------------------------------------------------------------------


def _offset(rng: np.random.Generator, size: int, fields: Sequence[int] = ()) -> int:
    """A position in ``[0, size)`` (0 when empty), a format field's more often than not."""
    if fields and rng.random() < 0.7:
        return min(int(fields[int(rng.integers(len(fields)))]), max(size - 1, 0))
    return int(rng.integers(0, size)) if size else 0


def flip_bits(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    if not data:
        return data, "flip nothing (empty)"
    buffer = bytearray(data)
    positions = [_offset(rng, len(data), fields) for _ in range(int(rng.integers(1, 9)))]
    for p in positions:
        buffer[p] ^= 1 << int(rng.integers(0, 8))
    return bytes(buffer), f"flip bits at {sorted(positions)}"


def write_extreme_int(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    at = _offset(rng, len(data), fields)
    width = int(rng.choice([1, 2, 4, 8]))
    order = "little" if rng.random() < 0.7 else "big"
    value = EXTREME_INTS[int(rng.integers(len(EXTREME_INTS)))] % (1 << (8 * width))
    raw = value.to_bytes(width, order)[: max(len(data) - at, 0)]
    return data[:at] + raw + data[at + len(raw) :], f"write {value:#x} ({order}, {width} B) at {at}"


def insert_bytes(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    at = _offset(rng, len(data) + 1, fields)
    if rng.random() < 0.5:
        extra = rng.bytes(int(rng.integers(1, 65)))
    else:  # a run of one byte: long runs reach sizes and counts
        extra = bytes([int(rng.integers(256))]) * int(rng.integers(1, 4097))
    return data[:at] + extra + data[at:], f"insert {len(extra)} bytes at {at}"


def delete_bytes(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    at = _offset(rng, len(data), fields)
    length = int(rng.integers(1, 257))
    return data[:at] + data[at + length :], f"delete {length} bytes at {at}"


def truncate(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    cut = int(rng.integers(0, len(data) + 1))
    return data[:cut], f"truncate at {cut}"


def overwrite_random(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    at = _offset(rng, len(data), fields)
    length = min(int(rng.integers(1, 201)), len(data) - at)
    return data[:at] + rng.bytes(length) + data[at + length :], f"overwrite {length} at {at}"


def zero_range(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    at = _offset(rng, len(data), fields)
    length = min(int(rng.integers(1, 201)), len(data) - at)
    return data[:at] + bytes(length) + data[at + length :], f"zero {length} at {at}"


def duplicate_range(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    start = _offset(rng, len(data), fields)
    piece = data[start : start + int(rng.integers(1, 1025))]
    at = int(rng.integers(0, len(data) + 1))
    return data[:at] + piece + data[at:], f"copy {len(piece)} bytes from {start} to {at}"


def splice(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    """The head of this input on the tail of another (or of itself)."""
    other = pool[int(rng.integers(len(pool)))] if pool else data
    cut = int(rng.integers(0, len(data) + 1))
    other_cut = int(rng.integers(0, len(other) + 1))
    return data[:cut] + other[other_cut:], f"splice at {cut} with another's tail from {other_cut}"


BYTE_MUTATIONS = (
    flip_bits, write_extreme_int, insert_bytes, delete_bytes, truncate, overwrite_random,
    zero_range, duplicate_range, splice,
)  # fmt: skip


def mutation_count(rng: np.random.Generator) -> int:
    """1 mostly, up to 3: single faults find most, stacked ones reach further."""
    return 1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)


def mutate_bytes(data: bytes, rng, fields=(), pool=(), mutations=BYTE_MUTATIONS):
    done = []
    for _ in range(mutation_count(rng)):
        mutation = mutations[int(rng.integers(len(mutations)))]
        data, what = mutation(data, rng, fields, pool)
        done.append(what)
    return data, "; ".join(done)


def mutate_seed_bytes(seed: Seed, rng, seeds: Sequence[Seed]) -> tuple[bytes, str]:
    fields = seed.fields if rng.random() < seed.fields_share else ()
    return mutate_bytes(seed.data, rng, fields, [s.data for s in seeds])


# --- the label CSV: text-level damage ------------------------------------------------------


def _csv_lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def replace_csv_field(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    lines = _csv_lines(data)
    row = int(rng.integers(len(lines)))
    cells = lines[row].split(b",")
    column = int(rng.integers(len(cells)))
    token = TEXT_TOKENS[int(rng.integers(len(TEXT_TOKENS)))]
    cells[column] = token
    lines[row] = b",".join(cells)
    return b"\n".join(lines), f"line {row + 1} field {column + 1} := {token[:12]!r}"


def insert_csv_line(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    lines = _csv_lines(data)
    at = int(rng.integers(len(lines) + 1))
    line = CSV_LINES[int(rng.integers(len(CSV_LINES)))]
    copies = int(rng.choice([1, 1, 1, 1000]))
    lines[at:at] = [line] * copies
    return b"\n".join(lines), f"insert {copies} x {line[:20]!r} at line {at + 1}"


def drop_csv_line(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    lines = _csv_lines(data)
    row = int(rng.integers(len(lines)))
    del lines[row]
    return b"\n".join(lines), f"delete line {row + 1}"


def change_line_ends(data: bytes, rng, fields, pool) -> tuple[bytes, str]:
    end = [b"\r\n", b"\r", b"", b"\n\n", b"\x85", "\u2028".encode()][int(rng.integers(6))]
    return data.replace(b"\n", end), f"line ends -> {end!r}"


CSV_MUTATIONS = (replace_csv_field, insert_csv_line, drop_csv_line, change_line_ends)


def mutate_csv(seed: Seed, rng, seeds: Sequence[Seed]) -> tuple[bytes, str]:
    if rng.random() < 0.6:
        return mutate_bytes(seed.data, rng, (), [s.data for s in seeds], CSV_MUTATIONS)
    return mutate_seed_bytes(seed, rng, seeds)


# --- .npz: damage inside the members, re-zipped with valid CRCs ----------------------------

NPY_DESCRS = (
    "'<u4'", "'<u8'", "'|u1'", "'<i8'", "'>u4'", "'<f8'", "'|b1'", "'|O'", "'<U4'", "'|V16'",
    "'<c16'", "[('a', '<u4')]", "'<u0'", "'x'", "7",
)  # fmt: skip
NPY_SHAPES = (
    "(0,)", "(1,)", "(-1,)", "(2**62,)", f"({2**63},)", f"({2**63 - 1},)", f"({2**40},)",
    "(3, 2)", "()", "(1e3,)", "None", "'x'", "(" + "1, " * 40 + ")", "(5430,)",
)  # fmt: skip


def zip_members(data: bytes) -> tuple[tuple[str, bytes], ...]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return tuple((info.filename, archive.read(info)) for info in archive.infolist())


def make_zip(members: Sequence[tuple[str, bytes]], compression: int) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", compression) as archive:
        warnings.simplefilter("ignore")  # a duplicate member name is the point
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def mutate_npy_header(npy: bytes, rng) -> tuple[bytes, str]:
    """Rewrite a .npy (v1) header with an extreme descr, fortran_order or shape."""
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(io.BytesIO(npy[8:]))
    header_len = 10 + struct.unpack_from("<H", npy, 8)[0]
    descr, order, dims = repr(dtype.str), str(fortran), repr(shape)
    which = int(rng.integers(4))
    if which == 0:
        descr = NPY_DESCRS[int(rng.integers(len(NPY_DESCRS)))]
    elif which == 1:
        order = str(rng.choice(["True", "1", "'no'", "None"]))
    elif which == 2:
        dims = NPY_SHAPES[int(rng.integers(len(NPY_SHAPES)))]
    text = f"{{'descr': {descr}, 'fortran_order': {order}, 'shape': {dims}, }}"
    if which == 3:
        text = text.replace("'shape'", "'shap'") if rng.random() < 0.5 else text + "junk"
    text = (text + " " * (63 - (10 + len(text)) % 64) + "\n").encode("latin-1")
    version = npy[6:8] if rng.random() < 0.9 else bytes(rng.choice([[2, 0], [3, 0], [1, 1]]))
    size = len(text) if rng.random() < 0.9 else int(rng.choice([0, 1, 0xFFFF]))
    head = npy[:6] + version + struct.pack("<H", size)
    return head + text + npy[header_len:], f"npy header {text[:70]!r} v{tuple(version)}"


def change_members(members: list[tuple[str, bytes]], rng) -> str:
    """Drop, rename, duplicate or add a member (in place)."""
    which = int(rng.integers(4))
    k = int(rng.integers(len(members)))
    name = members[k][0]
    if which == 0:
        del members[k]
        return f"drop member {name}"
    if which == 1:
        members[k] = (str(rng.choice(["t.npy", "x", "X.npy", "t_us.npz", "é.npy"])), members[k][1])
        return f"rename member {name} -> {members[k][0]}"
    if which == 2:
        members.append(members[k])
        return f"duplicate member {name}"
    members.append(("extra.npy", rng.bytes(int(rng.integers(0, 300)))))
    return "add a junk member"


def mutate_npz(seed: Seed, rng, seeds: Sequence[Seed]) -> tuple[bytes, str]:
    """Half the time damage the zip bytes; else damage a member and re-zip."""
    if rng.random() < 0.5 or not seed.members:
        return mutate_seed_bytes(seed, rng, seeds)
    members = list(seed.members)
    which = int(rng.integers(3))
    k = int(rng.integers(len(members)))
    name, npy = members[k]
    if which == 0:
        npy, what = mutate_npy_header(npy, rng)
        members[k] = (name, npy)
    elif which == 1:
        npy, what = mutate_bytes(npy, rng, tuple(range(0, 128)), [m[1] for m in members])
        members[k] = (name, npy)
        what = f"{name}: {what}"
    else:
        what = change_members(members, rng)
    compression = zipfile.ZIP_DEFLATED if rng.random() < 0.8 else zipfile.ZIP_STORED
    return make_zip(members, compression), f"re-zipped after {what}"


def zip_field_offsets(data: bytes) -> tuple[int, ...]:
    """Sizes, offsets and counts of the zip's local, central and end records."""
    layouts = {
        b"PK\x03\x04": (6, 8, 14, 18, 22, 26, 28),
        b"PK\x01\x02": (10, 16, 20, 24, 28, 30, 32, 42),
        b"PK\x05\x06": (8, 10, 12, 16, 20),
    }
    offsets = []
    for signature, fields in layouts.items():
        for match in re.finditer(re.escape(signature), data):
            offsets.extend(match.start() + f for f in fields)
    return tuple(sorted(offsets))


# --- wire frames -----------------------------------------------------------------------------


def _header(frames: list) -> dict | None:
    try:
        header = json.loads(frames[1])
    except (IndexError, ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


def _paths(header: dict, rng) -> list[tuple]:
    """Paths to the header's values: top-level keys and one level into lists and objects."""
    paths: list[tuple] = []
    for key, value in header.items():
        paths.append((key,))
        if isinstance(value, list) and value:
            i = int(rng.integers(len(value)))
            paths.append((key, i))
            if isinstance(value[i], dict):
                paths.extend((key, i, sub) for sub in value[i])
        elif isinstance(value, dict):
            paths.extend((key, sub) for sub in value)
    return paths


def _set_path(header: dict, path: tuple, value: Any) -> None:
    container: Any = header
    for step in path[:-1]:
        container = container[step]
    container[path[-1]] = value


def replace_header_value(frames: list, rng, pool) -> str:
    header = _header(frames)
    if header is None or not header:
        return mutate_frame_bytes(frames, rng, pool)
    paths = _paths(header, rng)
    path = paths[int(rng.integers(len(paths)))]
    value = EXTREME_JSON_VALUES[int(rng.integers(len(EXTREME_JSON_VALUES)))]
    _set_path(header, path, value)
    frames[1] = json.dumps(header).encode()
    return f"header {'.'.join(map(str, path))} := {repr(value)[:40]}"


def add_or_drop_header_field(frames: list, rng, pool) -> str:
    header = _header(frames)
    if header is None:
        return mutate_frame_bytes(frames, rng, pool)
    if header and rng.random() < 0.5:
        key = sorted(header)[int(rng.integers(len(header)))]
        del header[key]
        what = f"drop header {key}"
    else:
        key = WIRE_FIELDS[int(rng.integers(len(WIRE_FIELDS)))]
        value = EXTREME_JSON_VALUES[int(rng.integers(len(EXTREME_JSON_VALUES)))]
        header[key] = value
        what = f"add header {key} = {repr(value)[:40]}"
    frames[1] = json.dumps(header).encode()
    return what


def raw_header_value(frames: list, rng, pool) -> str:
    """A header value replaced by JSON text json.dumps would not write."""
    header = _header(frames)
    if header is None or not header:
        return mutate_frame_bytes(frames, rng, pool)
    key = sorted(header)[int(rng.integers(len(header)))]
    header[key] = "@@RAW@@"
    token = RAW_JSON_TOKENS[int(rng.integers(len(RAW_JSON_TOKENS)))]
    frames[1] = json.dumps(header).encode().replace(b'"@@RAW@@"', token, 1)
    return f"header {key} := raw {token[:16]!r}{'...' if len(token) > 16 else ''}"


def reencode_header(frames: list, rng, pool) -> str:
    if len(frames) < 2:
        return mutate_frame_bytes(frames, rng, pool)
    text = bytes(frames[1]).decode("utf-8", "replace")
    encoding = str(rng.choice(["utf-16", "utf-32-be", "utf-8-sig", "latin-1", "cp500"]))
    frames[1] = text.encode(encoding, "replace")
    return f"header in {encoding}"


def reshape_frames(frames: list, rng, pool) -> str:
    """Frames dropped, repeated, added, swapped, emptied, or taken from another message."""
    which = int(rng.integers(7))
    k = int(rng.integers(len(frames))) if frames else 0
    other = list(pool[int(rng.integers(len(pool)))]) if pool else list(frames)
    if which == 0 and frames:
        del frames[k]
        return f"drop frame {k}"
    if which == 1 and frames:
        frames.insert(k, frames[k])
        return f"repeat frame {k}"
    if which == 2:
        frames.append(rng.bytes(int(rng.integers(0, 64))))
        return "add a random frame"
    if which == 3 and len(frames) > 1:
        j = int(rng.integers(len(frames)))
        frames[k], frames[j] = frames[j], frames[k]
        return f"swap frames {k} and {j}"
    if which == 4 and frames:
        frames[k] = b""
        return f"empty frame {k}"
    if which == 5 and len(frames) >= 2:
        frames[1] = other[1]
        return "header of another message"
    frames[2:] = other[2:]
    return "payload of another message"


def mutate_frame_bytes(frames: list, rng, pool) -> str:
    if not frames:
        frames.append(b"")
    k = int(rng.choice([0, 1, 1, 1, 2, 2])) % len(frames)
    same_frames = [bytes(f[k]) for f in pool if len(f) > k]
    frames[k], what = mutate_bytes(bytes(frames[k]), rng, (), same_frames)
    return f"frame {k}: {what}"


WIRE_MUTATIONS = (
    (mutate_frame_bytes, 4), (replace_header_value, 4), (add_or_drop_header_field, 2),
    (raw_header_value, 2), (reshape_frames, 2), (reencode_header, 1),
)  # fmt: skip
_WIRE_WEIGHTS = np.array([w for _, w in WIRE_MUTATIONS], dtype=float) / sum(
    w for _, w in WIRE_MUTATIONS
)


def mutate_frames(seed: Seed, rng, seeds: Sequence[Seed]) -> tuple[list, str]:
    frames = list(seed.data)
    pool = [s.data for s in seeds]
    done = []
    for _ in range(mutation_count(rng)):
        mutation = WIRE_MUTATIONS[int(rng.choice(len(WIRE_MUTATIONS), p=_WIRE_WEIGHTS))][0]
        done.append(mutation(frames, rng, pool))
    return frames, "; ".join(done)


# --- promises of a decoded result ---------------------------------------------------------


def check_events(events: np.ndarray, sensor: SensorSize | None) -> None:
    """Every reader's promise: EVENT_DTYPE, inside the sensor, timestamps
    non-decreasing, polarity 0 or 1 (``core.events.validate_events``)."""
    if sensor is None or sensor.width <= 0 or sensor.height <= 0:
        raise BrokenPromise(f"events of a sensor {sensor}")
    try:
        validate_events(events, sensor, "<decoded>")
    except EventError as error:
        raise BrokenPromise(f"decoded events break a promise: {error}") from None


def check_chunks(chunks: list[np.ndarray], sensor: SensorSize, chunk_events: int) -> None:
    if any(len(chunk) == 0 or len(chunk) > chunk_events for chunk in chunks):
        raise BrokenPromise(f"chunk sizes {[len(c) for c in chunks][:10]} for {chunk_events}")
    check_events(concat_events(chunks), sensor)


def check_recording(recording: Recording) -> None:
    check_events(recording.events, recording.sensor)


def check_wire_message(message: wire.Message) -> None:
    """A decoded message is well typed and can be sent on: a worker forwards
    labels and ends, so what ``decode`` accepts must encode and decode again."""
    if isinstance(message, wire.Events) and message.events.dtype != EVENT_DTYPE:
        raise BrokenPromise(f"events of dtype {message.events.dtype}")
    try:
        again = wire.decode([bytes(memoryview(f)) for f in wire.encode(message)])
    except Exception as error:  # noqa: BLE001 - any failure is the finding
        raise BrokenPromise(
            f"a decoded {message.type} message does not re-encode: {type(error).__name__}: {error}"
        ) from error
    if type(again) is not type(message):
        raise BrokenPromise(f"{message.type} re-decodes as {again.type}")


# --- seeds from the real data ---------------------------------------------------------------


def require(root: Path, relative: str) -> Path:
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(f"seed data not found: {path} (set STCSNN_DATA to the data folder)")
    return path


def written_bytes(write: Callable[[Path], None], suffix: str) -> bytes:
    """The bytes a project writer produces (writers take a path)."""
    with tempfile.TemporaryDirectory(prefix="stcsnn-fuzz-seed-") as folder:
        path = Path(folder) / f"seed{suffix}"
        write(path)
        return path.read_bytes()


@functools.lru_cache(maxsize=2)  # several targets' seeds start from the same recordings
def nmnist_recording(root: Path) -> Recording:
    from replay.formats.nmnist import read_nmnist

    return read_nmnist(require(root, NMNIST_SINGLE))


@functools.lru_cache(maxsize=2)
def dvxplorer_recording(root: Path) -> Recording:
    from replay.formats.aedat4 import read_aedat4

    return read_aedat4(require(root, DVXPLORER))


def dvs128_crop(recording: Recording) -> np.ndarray:
    """The real DVXplorer events of its top-left 128x128 pixels (2,042 events)."""
    events = recording.events
    return np.ascontiguousarray(events[(events["x"] < 128) & (events["y"] < 128)])


def text_header_end(data: bytes, end_line: bytes | None = None) -> tuple[list[int], int]:
    """Line starts of an AEDAT text header, and where the data starts."""
    starts, position = [], 0
    while data[position : position + 1] == b"#":
        starts.append(position)
        line_end = data.index(b"\n", position)
        position = line_end + 1
        if end_line is not None and data[starts[-1] : line_end].rstrip(b"\r") == end_line:
            break
    return starts, position


def aedat2_fields(data: bytes) -> tuple[int, ...]:
    lines, start = text_header_end(data)
    records = [start + 8 * i + k for i in range(16) for k in (0, 4)]
    return tuple(lines + records + [len(data) - 8, len(data) - 4])


def aedat3_fields(data: bytes) -> tuple[int, ...]:
    """Header lines and every field of every packet header."""
    from replay.formats.aedat3 import PACKET_HEADER, PACKET_HEADER_BYTES

    lines, offset = text_header_end(data, b"#!END-HEADER")
    fields = list(lines)
    while offset + PACKET_HEADER_BYTES <= len(data):
        fields.extend(offset + k for k in (0, 2, 4, 8, 12, 16, 20, 24))
        _, _, size, _, _, capacity, _, _ = PACKET_HEADER.unpack_from(data, offset)
        offset += PACKET_HEADER_BYTES + capacity * size
    return tuple(fields)


def aedat2_seeds(root: Path) -> list[Seed]:
    from replay.formats import aedat2, aedat2_writer

    nmnist = nmnist_recording(root).events
    crop = dvs128_crop(dvxplorer_recording(root))
    # The crop with its clock 5 ms before the 32-bit wrap, sync and special records mixed in.
    addresses = aedat2_writer.encode_dvs128_addresses(crop)
    addresses[::500] |= aedat2.SYNC_EVENT_BIT
    addresses[250::500] |= aedat2.SPECIAL_EVENT_BIT
    clock = crop["timestamp"] - crop["timestamp"][0] + (1 << 32) - 5_000
    files = {
        "nmnist_single as AEDAT 2.0": written_bytes(
            lambda p: aedat2_writer.write_aedat2(p, nmnist), ".aedat"
        ),
        "DVXplorer 128x128 crop as AEDAT 2.0 (wrap, sync)": written_bytes(
            lambda p: aedat2_writer.write_aedat2_records(p, addresses, clock), ".aedat"
        ),
    }
    return [Seed(name, data, aedat2_fields(data)) for name, data in files.items()]


def aedat3_seeds(root: Path) -> list[Seed]:
    from replay.formats import aedat3_writer as writer

    nmnist = nmnist_recording(root).events
    t = nmnist["timestamp"]
    extras = [writer.special_packet(1000, t[1000:1001]), writer.imu6_packet(2000, t[2000:2003])]
    valid = np.ones(len(nmnist), dtype=bool)
    valid[::97] = False  # invalid events, dropped by the reader
    dvxplorer = dvxplorer_recording(root)
    first = np.ascontiguousarray(dvxplorer.events[:3000])  # the camera's own clock
    files = {
        "nmnist_single as AEDAT 3.1 (special, IMU, invalid)": written_bytes(
            lambda p: writer.write_aedat3(
                p, nmnist, packet_events=512, extra_packets=extras, valid=valid
            ),
            ".aedat",
        ),
        "DVXplorer 320x240 as AEDAT 3.1": written_bytes(
            lambda p: writer.write_aedat3(
                p, first, dvxplorer.sensor, packet_events=700, source_name="DVXPLORER_LITE"
            ),
            ".aedat",
        ),
    }
    return [Seed(name, data, aedat3_fields(data)) for name, data in files.items()]


def plain_seeds(root: Path, relatives: Sequence[str]) -> list[Seed]:
    return [Seed(relative, require(root, relative).read_bytes()) for relative in relatives]


def dvs_sign_seeds(root: Path) -> list[Seed]:
    return [
        Seed(seed.name, seed.data, zip_field_offsets(seed.data), zip_members(seed.data))
        for seed in plain_seeds(root, DVS_SIGN_SMALL)
    ]


def aedat4_seeds(root: Path) -> list[Seed]:
    from replay.formats.aedat4_writer import write_aedat4

    recording = dvxplorer_recording(root)
    events = np.ascontiguousarray(recording.events[:20_000])
    rewritten = written_bytes(
        lambda p: write_aedat4(p, events, recording.sensor, compression="zstd", packet_events=2500),
        ".aedat4",
    )
    # The first bytes are checked in this process; most cases should reach dv-processing.
    header = {"fields": tuple(range(12, 40)), "fields_share": 0.2}  # IOHeader size, IOHE
    return [
        Seed(DVXPLORER, require(root, DVXPLORER).read_bytes(), **header),
        Seed("DVXplorer first 20,000 events, zstd", rewritten, **header),
    ]


# --- seeds of the new formats: the DVXplorer's events as each camera's files -----------

DAVIS240C_CHIP = "eu.seebetter.ini.chips.davis.DAVIS240C"
DAVIS346B_CHIP = "eu.seebetter.ini.chips.davis.Davis346B"
DAVIS_APS_EVERY, DAVIS_IMU_EVERY, DAVIS_EXTERNAL_EVERY = 200, 450, 700
NEW_FORMAT_SEED_EVENTS = 3000  # per seed: small files keep 100,000 cases in minutes


def davis_extra_records(events: np.ndarray, sensor: SensorSize) -> tuple[list, list]:
    """(positions, addresses) of APS samples, IMU samples (7 words) and external
    input events to put among the DVS records, in jAER's DAVIS layout."""
    positions, addresses = [], []
    for k in range(0, len(events), DAVIS_APS_EVERY):
        raw_x, raw_y = k % sensor.width, k % sensor.height
        readout, adc = (k // DAVIS_APS_EVERY) % 2, (k * 7) % 1024
        positions.append(k)
        addresses.append((1 << 31) | (raw_y << 22) | (raw_x << 12) | (readout << 10) | adc)
    for k in range(DAVIS_IMU_EVERY // 2, len(events), DAVIS_IMU_EVERY):
        for code in range(7):
            positions.append(k)
            addresses.append(0x80000C00 | (code << 28) | (((k * 31 + code) & 0xFFFF) << 12))
    for k in range(DAVIS_EXTERNAL_EVERY // 3, len(events), DAVIS_EXTERNAL_EVERY):
        positions.append(k)
        addresses.append(1 << 10)
    return positions, addresses


def davis_file(events: np.ndarray, sensor: SensorSize, chip: str, clock_start: int) -> bytes:
    """A jAER DAVIS AEDAT 2.0 file of ``events`` with APS, IMU and external
    input records among them, the clock starting at ``clock_start``."""
    from replay.formats import aedat2_writer

    dvs = aedat2_writer.encode_davis_addresses(events, sensor).astype(np.int64)
    clock = events["timestamp"].astype(np.int64) - int(events["timestamp"][0]) + clock_start
    positions, extras = davis_extra_records(events, sensor)
    addresses = np.insert(dvs, positions, np.array(extras, dtype=np.int64))
    times = np.insert(clock, positions, clock[np.minimum(positions, len(clock) - 1)])
    header = aedat2_writer.header_bytes(chip, end_line=True)
    return written_bytes(
        lambda p: aedat2_writer.write_aedat2_records(p, addresses, times, header=header),
        ".aedat",
    )


def aedat2_davis_seeds(root: Path) -> list[Seed]:
    events = dvxplorer_recording(root).events
    crop = events[(events["x"] < 240) & (events["y"] < 180)][:NEW_FORMAT_SEED_EVENTS]
    whole = events[:NEW_FORMAT_SEED_EVENTS]  # 320x240 fits in 346x260
    files = {
        "DVXplorer 240x180 crop as DAVIS240C AEDAT 2.0 (APS, IMU, ext, wrap)": davis_file(
            np.ascontiguousarray(crop), SensorSize(240, 180), DAVIS240C_CHIP, (1 << 32) - 5_000
        ),
        "DVXplorer events as Davis346B AEDAT 2.0 (APS, IMU, ext)": davis_file(
            np.ascontiguousarray(whole), SensorSize(346, 260), DAVIS346B_CHIP, 1_000
        ),
    }
    return [Seed(name, data, aedat2_fields(data)) for name, data in files.items()]


def faery_written(kind: str, events: np.ndarray, sensor: SensorSize, zero_t0: bool) -> bytes:
    """``events`` written by faery's own encoders (as its users' files are)."""
    import faery
    from faery import dat, es, evt

    packed = np.zeros(len(events), dtype=faery.EVENTS_DTYPE)
    packed["t"], packed["x"] = events["timestamp"], events["x"]
    packed["y"], packed["on"] = events["y"], events["polarity"].astype(bool)

    def write(path: Path) -> None:
        if kind == "es":
            packed["y"] = sensor.height - 1 - packed["y"]  # Event Stream counts y from the bottom
            with es.Encoder(str(path), "dvs", zero_t0, tuple(sensor)) as encoder:
                encoder.write(packed)
        elif kind == "dat":
            fields = [("t", "=u8"), ("x", "=u2"), ("y", "=u2"), ("payload", "u1")]
            with dat.Encoder(str(path), "dat2", "cd", zero_t0, tuple(sensor)) as encoder:
                encoder.write(packed.astype(fields, casting="unsafe"))
        else:
            with evt.Encoder(str(path), kind, zero_t0, tuple(sensor), True) as encoder:
                encoder.write({"events": packed})

    return written_bytes(write, {"es": ".es", "dat": ".dat"}.get(kind, ".raw"))


def percent_header_fields(data: bytes, word_bytes: int) -> tuple[int, ...]:
    """Starts and values of the ``%`` header lines, and the first 48 data words."""
    fields, position = [], 0
    while data[position : position + 1] == b"%" and b"\n" in data[position:]:
        line_end = data.index(b"\n", position)
        space = data.find(b" ", position + 2, line_end)
        fields.extend([position, position + 2] + ([space + 1] if space > 0 else []))
        position = line_end + 1
    if data.startswith(b"%") and b"% Version" in data[:position]:  # DAT: type and size bytes
        fields.extend([position, position + 1])
        position += 2
    words = range(position, min(len(data), position + 48 * word_bytes), word_bytes)
    return tuple(fields + [w + k for w in words for k in range(0, word_bytes, 2)])


def es_fields(data: bytes) -> tuple[int, ...]:
    """The 20 header bytes and the first 64 bytes of events."""
    return tuple(range(0, min(len(data), 20 + 64)))


def real_events_for(root: Path, stretch: int = 1) -> np.ndarray:
    """The DVXplorer's first events, their times ``stretch`` times as far apart."""
    events = np.array(dvxplorer_recording(root).events[:NEW_FORMAT_SEED_EVENTS])
    t0 = events["timestamp"][0]
    events["timestamp"] = t0 + (events["timestamp"] - t0) * stretch
    return events


def prophesee_seeds(root: Path, kind: str) -> list[Seed]:
    """faery-written files of real events (the camera's clock, with '% t0'; 0-based
    on a Gen4 sensor; for EVT 3.0 stretched past the 24-bit time's 16.8 s wrap)
    and the hand-built samples of replay.formats.prophesee_samples."""
    from replay.formats import prophesee_samples as samples

    events = real_events_for(root)
    zero_based = np.array(events)
    zero_based["timestamp"] -= zero_based["timestamp"][0]
    clock = "zero_t0" if kind == "es" else "t0"  # .es keeps no t0: faery starts at 0
    files = {
        f"DVXplorer events, faery {kind}, 640x480, {clock}": faery_written(
            kind, events, samples.VGA, zero_t0=True
        ),
        f"DVXplorer events, faery {kind}, 1280x720": faery_written(
            kind, zero_based, samples.HD, zero_t0=False
        ),
    }
    if kind == "evt3":
        stretched = real_events_for(root, stretch=40)  # 0.59 s -> 23.6 s
        files["DVXplorer events x40 in time, faery evt3, 640x480, t0"] = faery_written(
            kind, stretched, samples.VGA, zero_t0=True
        )
    files |= {f"hand-built {s.name}": s.data for s in samples.all_samples() if s.kind == kind}
    if kind == "es":
        return [Seed(name, data, es_fields(data)) for name, data in files.items()]
    word = {"evt2": 4, "evt3": 2, "dat": 8}[kind]
    return [Seed(name, data, percent_header_fields(data, word)) for name, data in files.items()]


def count_image(events: np.ndarray, sensor: SensorSize) -> np.ndarray:
    image = np.zeros((2, sensor.height, sensor.width), dtype=np.int64)
    np.add.at(image, (events["polarity"], events["y"], events["x"]), 1)
    return np.minimum(image, 255).astype(np.uint8)


def wire_messages(root: Path) -> dict[str, wire.Message]:
    """One real message of every type (fixed times, so seeds never change)."""
    from replay.formats.gesture_labels import read_gesture_labels

    nmnist = nmnist_recording(root)
    dvxplorer = dvxplorer_recording(root)
    events, chunk = nmnist.events, np.ascontiguousarray(dvxplorer.events[:2000])
    labels = read_gesture_labels(require(root, GESTURE_LABELS))
    envelope = {"session": "fuzz", "seq": 7, "sent_ns": 1_700_000_000_000_000_000}
    probs = np.bincount(events["x"] % 10, minlength=10) / len(events)  # any distribution
    t_end = int(events["timestamp"][-1]) + 1
    return {
        "events nmnist_single": wire.Events(
            stream="replay", **envelope, events=events, sensor=nmnist.sensor, until_us=t_end
        ),
        "events DVXplorer": wire.Events(
            stream="cam0", **envelope, events=chunk, sensor=dvxplorer.sensor
        ),
        "events none": wire.Events(
            stream="cam0", **envelope, events=events[:0], sensor=nmnist.sensor
        ),
        "labels user01_natural": wire.Labels(stream="replay", **envelope, segments=tuple(labels)),
        "end forwarded": wire.End(stream="replay", **envelope, source_session="p1"),
        "prediction": wire.Prediction(
            stream="replay",
            **envelope,
            t_end_us=t_end,
            hop_us=10_000,
            probs=probs,
            top1=int(np.argmax(probs)),
            top1_name="3",
            logits=np.log(probs + 1e-3),
            step=30,
            source_session="p1",
            model="nmnist",
            timings_ms={"step": 0.6, "compress": 0.1},
        ),  # fmt: skip
        "preview nmnist_single": wire.Preview(
            stream="replay",
            **envelope,
            image=count_image(events, nmnist.sensor),
            t_start_us=0,
            t_end_us=t_end,
            events=len(events),
        ),  # fmt: skip
        "stats": wire.Stats(
            stream="",
            **envelope,
            values={
                "received": {"events": 12},
                "malformed": {},
                "model": "nmnist",
                "class_names": [str(k) for k in range(10)],
                "device": "cpu",
            },
        ),  # fmt: skip
    }


def wire_seeds(root: Path) -> list[Seed]:
    return [
        Seed(name, tuple(bytes(memoryview(frame)) for frame in wire.encode(message)))
        for name, message in wire_messages(root).items()
    ]


# --- the decoders, each with the promises of its result checked --------------------------

DECODERS = {
    "wire": "streamer.wire.decode (+ encode/decode of what it accepts)",
    "wire_hypothesis": "streamer.wire.decode on hypothesis-generated headers",
    "aedat2": "replay.formats.aedat2: read_aedat2, iter_aedat2 (257-event chunks, "
    "on_out_of_sensor='skip'); replay.formats.read_recording",
    "aedat3": "replay.formats.aedat3: read_aedat3, iter_aedat3 (1 KiB blocks, 300-event "
    "chunks, skip options); replay.formats.read_recording",
    "nmnist": "replay.formats.nmnist: read_nmnist, iter_nmnist (333-event chunks); "
    "replay.formats.read_recording",
    "dvs_sign": "replay.formats.dvs_sign.read_dvs_sign; replay.formats.read_recording",
    "gesture_labels": "replay.formats.gesture_labels.read_gesture_labels",
    "aedat4": "replay.formats.aedat4: read_aedat4, aedat4_info(count_elements=True) "
    f"(dv-processing in a child process, stall timeout {AEDAT4_STALL_TIMEOUT_S:g} s)",
}
DECODERS |= {
    "aedat2_davis": "replay.formats.aedat2 on DAVIS240C/Davis346B files: read_aedat2, "
    "iter_aedat2 (257-event chunks, on_out_of_sensor='skip'); replay.formats.read_recording",
    "prophesee_evt2": "replay.formats.prophesee on EVT 2.0 .raw (faery): read_prophesee, "
    "iter_prophesee (257-event chunks); replay.formats.read_recording",
    "prophesee_evt3": "replay.formats.prophesee on EVT 3.0 .raw (faery): read_prophesee, "
    "iter_prophesee (257-event chunks); replay.formats.read_recording",
    "prophesee_dat": "replay.formats.prophesee on DAT (faery): read_prophesee, "
    "iter_prophesee (257-event chunks); replay.formats.read_recording",
    "event_stream": "replay.formats.event_stream on .es (faery): read_event_stream, "
    "iter_event_stream (257-event chunks); replay.formats.read_recording",
}
SMALL_CHUNK_EVENTS = {"aedat2": 257, "aedat3": 300, "nmnist": 333, "faery": 257}


def read_any(path: Path) -> None:
    """Through the format detection every command uses."""
    from replay.formats import read_recording

    check_recording(read_recording(path))


def read_aedat2_file(path: Path) -> None:
    from replay.formats.aedat2 import read_aedat2

    check_recording(read_aedat2(path))


def iter_aedat2_skipping(path: Path) -> None:
    from replay.formats.aedat2 import iter_aedat2, read_aedat2_header

    size = SMALL_CHUNK_EVENTS["aedat2"]
    sensor = read_aedat2_header(path).sensor
    chunks = list(iter_aedat2(path, chunk_events=size, on_out_of_sensor="skip"))
    check_chunks(chunks, sensor, size)


def read_aedat3_file(path: Path) -> None:
    from replay.formats.aedat3 import read_aedat3

    check_recording(read_aedat3(path))


def iter_aedat3_small_blocks(path: Path) -> None:
    from replay.formats.aedat3 import iter_aedat3, read_aedat3_header

    sensor = read_aedat3_header(path).sensor
    size = SMALL_CHUNK_EVENTS["aedat3"]
    options = {"on_unknown_packet": "skip", "on_out_of_sensor": "skip", "block_bytes": 1024}
    check_chunks(list(iter_aedat3(path, chunk_events=size, **options)), sensor, size)


def read_nmnist_file(path: Path) -> None:
    from replay.formats.nmnist import read_nmnist

    check_recording(read_nmnist(path))


def iter_nmnist_chunks(path: Path) -> None:
    from replay.formats.nmnist import NMNIST_SENSOR, iter_nmnist

    size = SMALL_CHUNK_EVENTS["nmnist"]
    check_chunks(list(iter_nmnist(path, chunk_events=size)), NMNIST_SENSOR, size)


def read_dvs_sign_file(path: Path) -> None:
    from replay.formats.dvs_sign import read_dvs_sign

    check_recording(read_dvs_sign(path))


def read_gesture_labels_file(path: Path) -> None:
    """Labels 0-10 over non-empty, non-negative spans."""
    from core.labels import LabelSegment
    from replay.formats.gesture_labels import read_gesture_labels

    for segment in read_gesture_labels(path):
        if not isinstance(segment, LabelSegment) or not (
            0 <= segment.label <= 10 and 0 <= segment.start_us < segment.end_us
        ):
            raise BrokenPromise(f"label segment {segment!r}")


def read_aedat4_file(path: Path) -> None:
    from replay.formats.aedat4 import read_aedat4

    check_recording(read_aedat4(path, stall_timeout_s=AEDAT4_STALL_TIMEOUT_S))


def aedat4_info_counting(path: Path) -> None:
    from replay.formats.aedat4 import aedat4_info

    aedat4_info(path, count_elements=True, stall_timeout_s=AEDAT4_STALL_TIMEOUT_S)


def read_prophesee_file(path: Path) -> None:
    from replay.formats.prophesee import read_prophesee

    check_recording(read_prophesee(path))


def iter_prophesee_chunks(path: Path) -> None:
    from replay.formats.prophesee import iter_prophesee, prophesee_sensor

    size = SMALL_CHUNK_EVENTS["faery"]
    sensor = prophesee_sensor(path)
    check_chunks(list(iter_prophesee(path, chunk_events=size)), sensor, size)


def read_event_stream_file(path: Path) -> None:
    from replay.formats.event_stream import read_event_stream

    check_recording(read_event_stream(path))


def iter_event_stream_chunks(path: Path) -> None:
    from replay.formats.event_stream import iter_event_stream, read_event_stream_header

    size = SMALL_CHUNK_EVENTS["faery"]
    sensor = read_event_stream_header(path).sensor
    check_chunks(list(iter_event_stream(path, chunk_events=size)), sensor, size)


# --- targets ------------------------------------------------------------------------------


def scratch_folder(name: str) -> Path:
    """Case files on tmpfs where there is one: 100,000 writes should not touch a disk."""
    shm = Path("/dev/shm")
    parent = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=f"stcsnn-fuzz-{name}-", dir=parent))


def file_target(
    name: str,
    seeds: list[Seed],
    suffix: str,
    readers: dict[str, Callable[[Path], None]],
    mutate: Callable[[Seed, np.random.Generator, Sequence[Seed]], tuple[bytes, str]],
    time_limit_s: float = CASE_TIME_LIMIT_S,
    weights: Sequence[int] = (),
) -> Target:
    """A reader target: each case is written to one file and read by one of ``readers``
    (as often as ``weights`` say; equally without)."""
    folder = scratch_folder(name)
    path = folder / f"case{suffix}"
    weights = weights or [1] * len(readers)
    variants = [
        reader for reader, weight in zip(readers, weights, strict=True) for _ in range(weight)
    ]

    def make_case(rng: np.random.Generator) -> Case:
        seed = seeds[int(rng.integers(len(seeds)))]
        data, what = mutate(seed, rng, seeds)
        return Case(data, variants[int(rng.integers(len(variants)))], f"{seed.name}: {what}")

    def run(case: Case) -> None:
        path.write_bytes(case.value)
        readers[case.variant](path)

    def save(case: Case, out: Path) -> Path:
        out = out.with_suffix(suffix) if out.suffix != suffix else out
        out.write_bytes(case.value)
        return out

    def cleanup() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    return Target(name, DECODERS[name], seeds, make_case, run, save, time_limit_s, cleanup)


def wire_target(seeds: list[Seed], name: str = "wire") -> Target:
    def make_case(rng: np.random.Generator) -> Case:
        seed = seeds[int(rng.integers(len(seeds)))]
        frames, what = mutate_frames(seed, rng, seeds)
        return Case(frames, "decode", f"{seed.name}: {what}")

    def run(case: Case) -> None:
        check_wire_message(wire.decode(case.value))

    def save(case: Case, out: Path) -> Path:
        """As a Python literal: ``wire.decode(ast.literal_eval(text))`` replays it."""
        out.write_text(repr([bytes(frame) for frame in case.value]) + "\n")
        return out

    return Target(name, DECODERS[name], seeds, make_case, run, save)


def new_format_target(name: str, root: Path) -> Target:
    """A target of the formats read since issue 15 (see ``NEW_FORMAT_TARGETS``)."""
    if name == "aedat2_davis":
        readers = {"read_aedat2": read_aedat2_file, "iter_aedat2": iter_aedat2_skipping}
        seeds = aedat2_davis_seeds(root)
        return file_target(
            name, seeds, ".aedat", readers | {"read_recording": read_any}, mutate_seed_bytes
        )
    if name == "event_stream":
        readers = {
            "read_event_stream": read_event_stream_file,
            "iter_event_stream": iter_event_stream_chunks,
        }
        seeds = prophesee_seeds(root, "es")
        return file_target(
            name, seeds, ".es", readers | {"read_recording": read_any}, mutate_seed_bytes
        )
    kind = name.removeprefix("prophesee_")
    readers = {"read_prophesee": read_prophesee_file, "iter_prophesee": iter_prophesee_chunks}
    suffix = ".dat" if kind == "dat" else ".raw"
    return file_target(
        name,
        prophesee_seeds(root, kind),
        suffix,
        readers | {"read_recording": read_any},
        mutate_seed_bytes,
    )


def build_target(name: str, root: Path) -> Target:
    """The target ``name`` with its seeds read from (or made of) the real data at ``root``."""
    if name in NEW_FORMAT_TARGETS:
        return new_format_target(name, root)
    if name in ("wire", "wire_hypothesis"):
        return wire_target(wire_seeds(root), name)
    if name == "aedat2":
        readers = {"read_aedat2": read_aedat2_file, "iter_aedat2": iter_aedat2_skipping}
        return file_target(
            name,
            aedat2_seeds(root),
            ".aedat",
            readers | {"read_recording": read_any},
            mutate_seed_bytes,
        )
    if name == "aedat3":
        readers = {"read_aedat3": read_aedat3_file, "iter_aedat3": iter_aedat3_small_blocks}
        return file_target(
            name,
            aedat3_seeds(root),
            ".aedat",
            readers | {"read_recording": read_any},
            mutate_seed_bytes,
        )
    if name == "nmnist":
        readers = {"read_nmnist": read_nmnist_file, "iter_nmnist": iter_nmnist_chunks}
        seeds = plain_seeds(root, SEED_FILES["nmnist"])
        return file_target(
            name, seeds, ".bin", readers | {"read_recording": read_any}, mutate_seed_bytes
        )
    if name == "dvs_sign":
        readers = {"read_dvs_sign": read_dvs_sign_file, "read_recording": read_any}
        return file_target(name, dvs_sign_seeds(root), ".npz", readers, mutate_npz)
    if name == "gesture_labels":
        readers = {"read_gesture_labels": read_gesture_labels_file}
        seeds = plain_seeds(root, SEED_FILES["gesture_labels"])
        return file_target(name, seeds, "_labels.csv", readers, mutate_csv)
    if name == "aedat4":
        # The events three times in four; the info path also decodes IMU and triggers.
        readers = {"read_aedat4": read_aedat4_file, "aedat4_info": aedat4_info_counting}
        seeds = aedat4_seeds(root)
        limit = AEDAT4_CASE_TIME_LIMIT_S
        return file_target(name, seeds, ".aedat4", readers, mutate_seed_bytes, limit, (3, 1))
    raise ValueError(f"unknown target {name!r}; known: {', '.join(TARGET_NAMES)}")


# --- hypothesis: structured headers -------------------------------------------------------


def wire_frames_strategy(seeds: Sequence[Seed]):
    """Frames of a real message whose header has fields dropped and fields set to
    generated JSON values (extreme integers, floats, text, nesting; typed values
    for the fields that have a shape: segments, probs, timings_ms ...)."""
    from hypothesis import strategies as st

    integers = st.integers() | st.sampled_from((*EXTREME_INTS, HUGE_INT, -HUGE_INT))
    numbers = integers | st.floats()
    scalars = st.none() | st.booleans() | numbers | st.text(max_size=20)
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=10,
    )
    segment = st.fixed_dictionaries({"label": integers, "start_us": integers, "end_us": integers})
    by_field = {
        "v": st.just(1) | values,
        "type": st.sampled_from(sorted(wire.MESSAGE_TYPES)) | values,
        "dtype": st.sampled_from(["dv-event16", "u8-2hw"]) | values,
        "segments": st.lists(segment | values, max_size=4),
        "probs": st.lists(numbers, max_size=12) | values,
        "logits": st.lists(numbers, max_size=12) | values,
        "timings_ms": st.dictionaries(st.text(max_size=8), numbers, max_size=4) | values,
    }
    keys = st.sampled_from(WIRE_FIELDS) | st.text(max_size=8)
    payloads = st.sampled_from(("kept", "none", "one short", "one long", "another's"))

    @st.composite
    def frames(draw) -> list:
        seed = draw(st.sampled_from(list(seeds)))
        header = json.loads(seed.data[1])
        for key in draw(st.lists(st.sampled_from(sorted(header)), max_size=2, unique=True)):
            del header[key]
        for key in draw(st.lists(keys, max_size=4, unique=True)):
            header[key] = draw(by_field.get(key, values))
        payload = list(seed.data[2:])
        kind = draw(payloads)
        if kind == "none":
            payload = []
        elif kind == "one short":
            payload = [payload[0][:-1] if payload else b"x"]
        elif kind == "one long":
            payload = [(payload[0] if payload else b"") + bytes(16)]
        elif kind == "another's":
            payload = list(draw(st.sampled_from(list(seeds))).data[2:])
        return [seed.data[0], json.dumps(header).encode(), *payload]

    return frames()


def run_hypothesis_wire(
    target: Target, cases: int, *, before_case: Callable[[int], None] | None = None
) -> Tally:
    """``cases`` generated headers through ``target.run``, every outcome counted
    (no shrinking: the examples keep the header text instead)."""
    from hypothesis import HealthCheck, Phase, given, settings

    tally, memory = Tally(), MemoryWatch()

    @settings(
        max_examples=cases,
        derandomize=True,  # the same cases on every run
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(frames=wire_frames_strategy(target.seeds))
    def one_case(frames: list) -> None:
        index = tally.cases
        if before_case is not None:
            before_case(index)
        case = Case(frames, "hypothesis", f"header {frames[1][:240]!r}, {len(frames)} frames")
        outcome, error = run_case(target, case)
        tally.add(index, case, "memory" if memory.exceeded() else outcome, error)

    started = (time.perf_counter(), time.process_time())
    with case_time_limits():
        one_case()
    _finish(tally, memory, started)
    return tally


# --- one child process per target ---------------------------------------------------------


@dataclass(frozen=True)
class Job:
    target: str
    cases: int
    seed: int
    first_case: int = 0
    skip: frozenset[int] = frozenset()


def seed_summary(target: Target) -> list[dict]:
    return [{"name": seed.name, "bytes": _size(seed.data)} for seed in target.seeds]


def _size(data: Any) -> int:
    return len(data) if isinstance(data, bytes) else sum(len(frame) for frame in data)


def child_main(sender, job: Job, current) -> None:
    """In the child: build the target, cap the address space, run, send tallies."""
    try:
        target = build_target(job.target, data_root())
    except Exception as error:  # noqa: BLE001 - reported to the parent, which stops
        sender.send(("error", 0, f"{type(error).__name__}: {error}"))
        return
    sender.send(("seeds", job.first_case, seed_summary(target)))
    limit_address_space()

    def before_case(index: int) -> None:
        current.value = index

    try:
        if job.target == "wire_hypothesis":
            tally = run_hypothesis_wire(target, job.cases, before_case=before_case)
            sender.send(("done", job.cases, tally))
            return
        tally = run_target(
            target,
            job.cases,
            job.seed,
            first_case=job.first_case,
            skip=job.skip,
            before_case=before_case,
            on_progress=lambda next_case, part: sender.send(("part", next_case, part)),
        )
        sender.send(("done", job.cases, tally))
    finally:
        target.cleanup()


def time_limit_of(name: str) -> float:
    return AEDAT4_CASE_TIME_LIMIT_S if name == "aedat4" else CASE_TIME_LIMIT_S


def run_child(job: Job, total: Tally, seeds: list) -> tuple[int, dict | None]:
    """Run ``job`` in a child, merging its tallies into ``total``. Returns the
    case to go on from and, if the child died or hung, what happened."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    current = context.Value("q", job.first_case - 1, lock=False)
    process = context.Process(target=child_main, args=(sender, job, current), daemon=True)
    process.start()
    sender.close()
    next_case, watched, since = job.first_case, current.value, time.monotonic()
    stuck_after_s = 2 * time_limit_of(job.target) + 10  # the alarm failed: a hang in C
    try:
        while True:
            if not receiver.poll(1.0):
                if current.value != watched:
                    watched, since = current.value, time.monotonic()
                elif time.monotonic() - since > stuck_after_s:
                    process.kill()
                    process.join()
                    return next_case, {"case": current.value, "kind": "hang", "exitcode": None}
                continue
            kind, value, payload = receiver.recv()
            if kind == "error":
                raise RuntimeError(f"{job.target}: {payload}")
            if kind == "seeds":
                seeds[:] = payload
                continue
            total.merge(payload)
            next_case = value
            if kind == "done":
                process.join()
                return next_case, None
    except EOFError:
        process.join()
        kind = f"unexpected:crash (exit code {process.exitcode})"
        return next_case, {"case": current.value, "kind": kind, "exitcode": process.exitcode}
    finally:
        receiver.close()


def run_isolated(name: str, cases: int, seed: int) -> tuple[Tally, list[dict], list]:
    """All cases of one target in child processes: a case that kills or hangs
    its child is recorded, and a new child goes on after it."""
    total, problems, seeds = Tally(), [], []
    first_case, skip = 0, frozenset()
    while True:
        next_case, problem = run_child(Job(name, cases, seed, first_case, skip), total, seeds)
        if problem is None:
            return total, problems, seeds
        problems.append(problem)
        total.cases += 1
        total.outcomes[problem["kind"]] += 1
        if name == "wire_hypothesis" or problem["case"] < first_case:
            return total, problems, seeds  # no way to go on after it
        first_case, skip = next_case, skip | {problem["case"]}


# --- report and command line --------------------------------------------------------------


def target_report(name: str, tally: Tally, problems: list, seeds: list, wall_s: float) -> dict:
    mib = 1 << 20
    return {
        "decoder": DECODERS[name],
        "cases": tally.cases,
        "seconds": round(tally.seconds, 2),
        "cpu_seconds": round(tally.cpu_seconds, 2),
        "wall_s": round(wall_s, 2),
        "cases_per_s": round(tally.cases / tally.seconds, 1) if tally.seconds else None,
        "outcomes": dict(sorted(tally.outcomes.items(), key=lambda kv: -kv[1])),
        "unexpected": tally.unexpected(),
        "error_details": dict(tally.error_details.most_common()),
        "max_rss_mb": round(tally.max_rss_bytes / mib, 1),
        "max_child_rss_mb": round(tally.max_child_rss_bytes / mib, 1),
        "time_limit_s": time_limit_of(name),
        "seeds": seeds,
        "unexpected_sites": dict(tally.sites.most_common()),
        "unexpected_examples": tally.examples,
        "dead_or_hung_children": problems,
    }


def environment() -> dict:
    import hypothesis

    try:
        from importlib.metadata import version

        dv_version = version("dv-processing")
    except Exception:  # noqa: BLE001 - only a label in the report
        dv_version = None
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "hypothesis": hypothesis.__version__,
        "dv_processing": dv_version,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "nice": os.nice(0),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_line(name: str, report: dict) -> None:
    outcomes = ", ".join(f"{kind} {count}" for kind, count in report["outcomes"].items())
    print(
        f"{name:15s} {report['cases']:7d} cases {report['cases_per_s'] or 0:9.1f}/s "
        f"max RSS {report['max_rss_mb']:.0f} MB (children {report['max_child_rss_mb']:.0f} MB) "
        f"| {outcomes}",
        flush=True,
    )
    for site, examples in report["unexpected_examples"].items():
        print(f"  {report['unexpected_sites'][site]:6d} x {site}")
        for example in examples[:1]:
            print(
                f"      e.g. case {example['case']} [{example['variant']}] {example['what'][:150]}"
            )
            print(f"      {example['error'][:200]}")


def cases_for(name: str, args: argparse.Namespace) -> int:
    if name == "aedat4":
        return args.aedat4_cases
    if name == "wire_hypothesis":
        return args.hypothesis_cases
    return args.cases


def run_all(args: argparse.Namespace) -> int:
    results = {
        "benchmark": "fuzz",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seed": args.seed,
        "memory_limit_mb": MEMORY_LIMIT_BYTES >> 20,
        **environment(),
        "targets": {},
    }
    started = time.perf_counter()
    for name in args.targets:
        cases = cases_for(name, args)
        if cases <= 0:
            continue
        target_started = time.perf_counter()
        tally, problems, seeds = run_isolated(name, cases, args.seed)
        report = target_report(name, tally, problems, seeds, time.perf_counter() - target_started)
        results["targets"][name] = report
        results["wall_s"] = round(time.perf_counter() - started, 1)
        print_line(name, report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")  # after each: partial results
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    unexpected = sum(report["unexpected"] for report in results["targets"].values())
    print(f"{unexpected} unexpected outcomes; {args.out}")
    return 1 if unexpected else 0


def replay(name: str, index: int, seed: int, save: Path | None) -> int:
    """Rebuild one case, save its input and run it without catching anything."""
    if name == "wire_hypothesis":
        raise SystemExit("hypothesis cases are reported with their header text; no replay")
    target = build_target(name, data_root())
    try:
        case = target.make_case(case_rng(seed, name, index))
        out = save or Path(tempfile.gettempdir()) / f"fuzz-{name}-{seed}-{index}.txt"
        out = target.save(case, out)
        print(
            f"{name} case {index} (seed {seed}): {case.what}\nvariant {case.variant}; input: {out}"
        )
        target.run(case)
        print("outcome: ok")
    finally:
        target.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000, help="per decoder")
    parser.add_argument("--aedat4-cases", type=int, default=2000, help="a child process each")
    parser.add_argument("--hypothesis-cases", type=int, default=10_000)
    parser.add_argument("--targets", nargs="+", choices=TARGET_NAMES, default=list(TARGET_NAMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--replay", nargs=2, metavar=("TARGET", "CASE"))
    parser.add_argument("--save", type=Path, help="with --replay: where the input goes")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay[0], int(args.replay[1]), args.seed, args.save)
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
