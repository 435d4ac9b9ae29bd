"""Randomised corruption of real N-MNIST, DVS_Sign and AEDAT4 files.

Every damaged copy must either parse into events that keep the readers'
promises (EVENT_DTYPE, inside the sensor, timestamps non-decreasing) or raise
FormatError / EventValidationError naming the file. Anything else, a hang or an
allocation far beyond the file's size is a bug. Cases are seeded: a failure
names a reproducible case.

AEDAT4 is the expensive one: dv-processing 2.0.4 loops forever on many corrupt
packets (about a third of these copies), and the reader can only notice that
by a stall timeout, so it gets few cases with a short timeout.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import shared_path

from core.events import EVENT_DTYPE
from replay.formats import read_recording
from replay.formats.aedat4 import read_aedat4
from replay.formats.dvs_sign import read_dvs_sign
from replay.formats.nmnist import iter_nmnist, read_nmnist
from tests.corruption import check_outcome

# A reader that hangs on hostile input fails the test instead of stalling the run.
pytestmark = pytest.mark.usefixtures("no_hang")


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random kind of damage; the damaged bytes and what was done."""
    kind = int(rng.integers(0, 6))
    size = len(data)
    buffer = bytearray(data)
    if kind == 0:
        positions = rng.integers(0, size, int(rng.integers(1, 20)))
        for p in positions:
            buffer[p] ^= 1 << int(rng.integers(0, 8))
        return bytes(buffer), f"flip bits at {sorted(positions.tolist())}"
    if kind == 1:
        cut = int(rng.integers(0, size))
        return data[:cut], f"truncate at {cut}"
    if kind == 2:
        at = int(rng.integers(0, size))
        garbage = rng.bytes(int(rng.integers(1, 65)))
        return data[:at] + garbage + data[at:], f"insert {len(garbage)} bytes at {at}"
    if kind == 3:
        at = int(rng.integers(0, size))
        length = int(rng.integers(1, 200))
        buffer[at : at + length] = rng.bytes(length)[: size - at]
        return bytes(buffer), f"overwrite {length} bytes at {at}"
    if kind == 4:
        at = int(rng.integers(0, size))
        length = int(rng.integers(1, 200))
        buffer[at : at + length] = bytes(min(length, size - at))
        return bytes(buffer), f"zero {length} bytes at {at}"
    keep = int(rng.integers(0, 40))
    return data[:keep] + rng.bytes(int(rng.integers(0, size))), f"garbage after {keep} bytes"


def run_cases(original: bytes, path, read, cases: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    outcomes: dict[str, int] = {}
    tracemalloc.start()
    try:
        for i in range(cases):
            damaged, what = mutate(original, rng)
            path.write_bytes(damaged)
            tracemalloc.reset_peak()
            outcome = check_outcome(read, path, f"case {i} (seed {seed}): {what}")
            _, peak = tracemalloc.get_traced_memory()
            # 16 bytes per event decoded from 5 (N-MNIST), plus working copies
            assert peak < 20 * max(len(damaged), 1) + (8 << 20), f"case {i}: {what}: {peak} B"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        tracemalloc.stop()
    return outcomes


def test_corrupt_nmnist_samples(tmp_path):
    original = shared_path("recordings/nmnist_single.bin").read_bytes()
    outcomes = run_cases(original, tmp_path / "sample.bin", read_nmnist, 300, seed=1)
    assert outcomes.get("FormatError") and outcomes.get("EventValidationError"), outcomes
    # through format detection and the chunked reader too
    outcomes = run_cases(original, tmp_path / "sample.bin", read_recording, 100, seed=2)
    assert sum(outcomes.values()) == 100

    def read_chunked(path):
        from core.events import Recording
        from replay.formats.nmnist import NMNIST_SENSOR

        chunks = [c.view("V16") for c in iter_nmnist(path, chunk_events=500)]
        events = np.concatenate(chunks).view(EVENT_DTYPE)
        return Recording(events, NMNIST_SENSOR, str(path))

    run_cases(original, tmp_path / "sample.bin", read_chunked, 100, seed=3)


def test_corrupt_dvs_sign_samples(tmp_path):
    original = shared_path("dvs_sign/train/3/0.npz").read_bytes()
    outcomes = run_cases(original, tmp_path / "sample.npz", read_dvs_sign, 150, seed=4)
    assert outcomes.get("FormatError"), outcomes


def test_corrupt_aedat4_recordings(tmp_path):
    original = shared_path("recordings/dvxplorer_320x240.aedat4").read_bytes()

    def read(path):
        return read_aedat4(path, stall_timeout_s=0.5)

    outcomes = run_cases(original, tmp_path / "rec.aedat4", read, 8, seed=5)
    assert outcomes.get("FormatError"), outcomes
