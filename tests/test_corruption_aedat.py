"""Randomised corruption of real-format AEDAT 3.1 / 2.0 files and label files.

Every damaged file must either parse into events that keep the readers'
promises (inside the sensor, timestamps non-decreasing, EVENT_DTYPE) or raise
FormatError / EventValidationError. Any other exception, a hang or an unbounded
allocation is a bug. The cases are seeded, so a failure names a reproducible case.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from core.events import EVENT_DTYPE, FormatError
from core.labels import LabelSegment
from replay.formats import aedat2, aedat2_writer, aedat3, aedat3_writer
from replay.formats.gesture_labels import read_gesture_labels
from replay.formats.gesture_labels_writer import write_gesture_labels
from tests.corruption import EXPECTED_ERRORS, check_outcome

EXTREME_INT32 = [0, 1, -1, 7, 8, 28, 2**31 - 1, -(2**31), 2**24, 4096]
CASES = 200


# A reader that hangs on hostile input fails the test instead of stalling the run.
pytestmark = pytest.mark.usefixtures("no_hang")


def realistic_events(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = np.zeros(count, dtype=EVENT_DTYPE)
    events["timestamp"] = (1 << 31) - 2_000 + np.cumsum(rng.choice([0, 0, 1, 2, 30], count))
    events["x"] = np.clip(rng.normal(64, 20, count), 0, 127)
    events["y"] = np.clip(rng.normal(64, 20, count), 0, 127)
    events["polarity"] = rng.integers(0, 2, count)
    return events


def mutate(data: bytes, rng: np.random.Generator, field_offsets: list[int]) -> tuple[bytes, str]:
    """One random kind of damage; returns the damaged bytes and what was done."""
    kind = int(rng.integers(0, 6))
    size = len(data)
    buffer = bytearray(data)
    if kind == 0:  # flip bytes anywhere
        positions = rng.integers(0, size, int(rng.integers(1, 9)))
        for p in positions:
            buffer[p] ^= int(rng.integers(1, 256))
        return bytes(buffer), f"flip bytes at {sorted(positions.tolist())}"
    if kind == 1:  # truncate
        cut = int(rng.integers(0, size))
        return data[:cut], f"truncate at {cut}"
    if kind == 2:  # insert garbage
        at = int(rng.integers(0, size))
        garbage = rng.bytes(int(rng.integers(1, 65)))
        return data[:at] + garbage + data[at:], f"insert {len(garbage)} bytes at {at}"
    if kind == 3:  # overwrite a range with garbage
        at = int(rng.integers(0, size))
        garbage = rng.bytes(int(rng.integers(1, 200)))
        buffer[at : at + len(garbage)] = garbage[: size - at]
        return bytes(buffer), f"overwrite {len(garbage)} bytes at {at}"
    if kind == 4 and field_offsets:  # set a structural field to an extreme value
        at = field_offsets[int(rng.integers(0, len(field_offsets)))]
        value = EXTREME_INT32[int(rng.integers(0, len(EXTREME_INT32)))]
        buffer[at : at + 4] = int(value).to_bytes(4, "little", signed=True)
        return bytes(buffer), f"field at {at} := {value}"
    # a random garbage file of similar size, keeping the start of the header
    keep = int(rng.integers(0, 40))
    return data[:keep] + rng.bytes(int(rng.integers(0, size))), f"garbage after {keep} bytes"


def aedat3_packet_fields(data: bytes, data_offset: int) -> list[int]:
    """Offsets of every int32 field of every packet header in an intact file."""
    offsets = []
    position = data_offset
    while position + aedat3.PACKET_HEADER_BYTES <= len(data):
        fields = aedat3.PACKET_HEADER.unpack_from(data, position)
        offsets.extend([position, *range(position + 4, position + 28, 4)])
        position += aedat3.PACKET_HEADER_BYTES + fields[5] * fields[2]
    return offsets


def test_corrupted_aedat3_files(tmp_path):
    events = realistic_events(4_000, seed=0)
    valid = np.random.default_rng(1).random(len(events)) > 0.05
    t = events["timestamp"]
    extras = [
        aedat3_writer.special_packet(0, [int(t[0])]),
        aedat3_writer.imu6_packet(900, [int(t[900]), int(t[900]) + 5]),
        aedat3_writer.ExtraPacket(
            2_000, event_type=2, event_size=40, body=bytes(80), event_number=2
        ),
        aedat3_writer.special_packet(4_000, [int(t[-1])]),
    ]
    original = tmp_path / "original.aedat"
    aedat3_writer.write_aedat3(
        original, events, valid=valid, extra_packets=extras, packet_events=300
    )
    data = original.read_bytes()
    fields = aedat3_packet_fields(data, aedat3.read_aedat3_header(original).data_offset)
    assert len(fields) > 100

    def read_both_ways(path):
        whole = aedat3.read_aedat3(
            path, on_unknown_packet="skip" if rng.random() < 0.3 else "error"
        )
        chunks = list(aedat3.iter_aedat3(path, chunk_events=97, block_bytes=512))
        streamed = np.concatenate(chunks) if chunks else whole.events[:0]
        np.testing.assert_array_equal(streamed, whole.events[: len(streamed)])
        return whole

    rng = np.random.default_rng(2026)
    outcomes = {"parsed": 0, "refused": 0}
    tracemalloc.start()
    try:
        for case in range(CASES):
            damaged, description = mutate(data, rng, fields)
            path = tmp_path / f"case{case}.aedat"
            path.write_bytes(damaged)
            check_outcome(read_both_ways, path, f"aedat3 case {case}: {description}")
            try:
                aedat3.read_aedat3(path)
                outcomes["parsed"] += 1
            except EXPECTED_ERRORS:
                outcomes["refused"] += 1
            path.unlink()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A 40 kB file: nothing should ever need more than a few MB.
    assert peak < 32 << 20
    assert outcomes["parsed"] > 0 and outcomes["refused"] > 0, outcomes


def test_corrupted_aedat2_files(tmp_path):
    events = realistic_events(3_000, seed=3)
    addresses = aedat2_writer.encode_dvs128_addresses(events)
    addresses = np.insert(addresses, [10, 2_000], [0x8000, 0x8000])
    timestamps = np.insert(events["timestamp"], [10, 2_000], events["timestamp"][[10, 2_000]])
    original = tmp_path / "original.aedat"
    aedat2_writer.write_aedat2_records(original, addresses, timestamps)
    data = original.read_bytes()
    header_end = aedat2.read_aedat2_header(original).data_offset
    # Big-endian records: mutate timestamps and addresses through generic damage.
    record_fields = list(range(header_end, len(data), 4))[::37]

    rng = np.random.default_rng(7)
    outcomes = {"parsed": 0, "refused": 0}
    for case in range(CASES):
        damaged, description = mutate(data, rng, record_fields)
        path = tmp_path / f"case{case}.aedat"
        path.write_bytes(damaged)
        check_outcome(aedat2.read_aedat2, path, f"aedat2 case {case}: {description}")
        try:
            chunks = list(aedat2.iter_aedat2(path, chunk_events=211))
            whole = aedat2.read_aedat2(path).events
            np.testing.assert_array_equal(np.concatenate(chunks) if chunks else whole, whole)
            outcomes["parsed"] += 1
        except EXPECTED_ERRORS:
            outcomes["refused"] += 1
        path.unlink()
    assert outcomes["parsed"] > 0 and outcomes["refused"] > 0, outcomes


def test_corrupted_label_files(tmp_path):
    original = tmp_path / "labels.csv"
    write_gesture_labels(  # class ids c = 1-11 in the file
        original,
        [LabelSegment(c - 1, 1_000_000 * c, 1_000_000 * c + 500_000) for c in range(1, 12)],
    )
    data = original.read_bytes()
    rng = np.random.default_rng(11)
    for case in range(CASES):
        damaged, description = mutate(data, rng, [])
        path = tmp_path / f"case{case}.csv"
        path.write_bytes(damaged)
        try:
            segments = read_gesture_labels(path)
        except FormatError as error:
            assert str(path) in str(error)
            continue
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"labels case {case}: {description}: {type(error).__name__}: {error}")
        for segment in segments:
            assert 0 <= segment.label <= 10 and 0 <= segment.start_us < segment.end_us
