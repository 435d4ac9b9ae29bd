"""AEDAT 2.0 (jAER, DVS128 addresses): decoding convention, wraps, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from core.events import EVENT_DTYPE, EventValidationError, FormatError, SensorSize
from replay.formats.aedat2 import (
    RECORD_BYTES,
    Aedat2Stats,
    iter_aedat2,
    read_aedat2,
    read_aedat2_header,
)
from replay.formats.aedat2_writer import (
    encode_dvs128_addresses,
    header_bytes,
    write_aedat2,
    write_aedat2_records,
)


def cifar_like_events(count: int, seed: int = 0, t0_us: int = 5_000_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = np.zeros(count, dtype=EVENT_DTYPE)
    events["timestamp"] = t0_us + np.cumsum(rng.integers(0, 12, count))
    events["x"] = rng.integers(0, 128, count)
    events["y"] = rng.integers(0, 128, count)
    events["polarity"] = rng.integers(0, 2, count)
    return events


def test_round_trip_is_bit_exact(tmp_path):
    events = cifar_like_events(20_000)
    path = tmp_path / "cat_0001.aedat"
    write_aedat2(path, events)
    recording = read_aedat2(path)
    assert recording.events.tobytes() == events.tobytes()
    assert recording.sensor == SensorSize(128, 128)
    header = read_aedat2_header(path)
    assert header.header_lines[0] == "#!AER-DAT2.0"
    assert header.data_offset == len(header_bytes())
    assert path.stat().st_size == header.data_offset + RECORD_BYTES * len(events)


def test_address_convention_follows_jaer_and_libcaer(tmp_path):
    """Raw x = 5, raw y = 10, raw polarity bit 0 (ON in jAER and libcaer)."""
    raw = (10 << 8) | (5 << 1) | 0
    path = tmp_path / "one.aedat"
    write_aedat2_records(path, np.array([raw, raw | 1]), np.array([7, 8]))
    events = read_aedat2(path).events
    assert events["x"].tolist() == [127 - 5, 127 - 5]
    assert events["y"].tolist() == [127 - 10, 127 - 10]
    assert events["polarity"].tolist() == [1, 0]
    assert events["timestamp"].tolist() == [7, 8]
    data = path.read_bytes()[-16:]
    assert data[:8] == raw.to_bytes(4, "big") + (7).to_bytes(4, "big")  # big-endian records
    np.testing.assert_array_equal(encode_dvs128_addresses(events), [raw, raw | 1])


def test_sync_and_special_records_are_skipped_and_counted(tmp_path):
    events = cifar_like_events(1_000, seed=1)
    addresses = encode_dvs128_addresses(events)
    timestamps = events["timestamp"].copy()
    specials = np.array([0x8000, 0x8000 | 0x1234, 0x80000000])
    insert_at = np.array([0, 500, 1_000])
    all_addresses = np.insert(addresses, insert_at, specials)
    all_timestamps = np.insert(timestamps, insert_at, timestamps[np.minimum(insert_at, 999)])
    path = tmp_path / "sync.aedat"
    write_aedat2_records(path, all_addresses, all_timestamps)
    stats = Aedat2Stats()
    recording = read_aedat2(path, stats=stats)
    np.testing.assert_array_equal(recording.events, events)
    assert stats.special_events_skipped == 3
    assert stats.records == 1_003 and stats.polarity_events == 1_000


def test_timestamp_wrap_is_unwrapped(tmp_path):
    events = cifar_like_events(30_000, seed=2, t0_us=(1 << 32) - 60_000)
    assert events["timestamp"][0] < 1 << 32 < events["timestamp"][-1]
    path = tmp_path / "wrap.aedat"
    write_aedat2(path, events)  # stored modulo 2^32
    stats = Aedat2Stats()
    np.testing.assert_array_equal(read_aedat2(path, stats=stats).events, events)
    assert stats.timestamp_wraps == 1
    # Also when the wrap falls on a chunk boundary.
    wrap_index = int(np.argmax(events["timestamp"] >= 1 << 32))
    chunks = list(iter_aedat2(path, chunk_events=wrap_index))
    np.testing.assert_array_equal(np.concatenate(chunks), events)


@pytest.mark.parametrize("chunk_events", [1, 999, 4096, 1_000_000])
def test_chunked_iteration_equals_whole_read(tmp_path, chunk_events):
    events = cifar_like_events(9_000, seed=3)
    path = tmp_path / "c.aedat"
    write_aedat2(path, events)
    chunks = list(iter_aedat2(path, chunk_events=chunk_events))
    assert all(len(chunk) <= chunk_events for chunk in chunks)
    assert all(chunk.dtype == EVENT_DTYPE for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), events)


def test_header_only_file_has_no_events(tmp_path):
    path = tmp_path / "h.aedat"
    path.write_bytes(header_bytes())
    recording = read_aedat2(path)
    assert len(recording) == 0 and recording.events.dtype == EVENT_DTYPE


# ---------------------------------------------------------------- bad input


def test_empty_and_foreign_files(tmp_path):
    empty = tmp_path / "empty.aedat"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match=r"empty\.aedat: byte 0: empty file"):
        read_aedat2(empty)
    garbage = tmp_path / "garbage.aedat"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(FormatError, match=r"garbage\.aedat: byte 0: not an AEDAT file"):
        read_aedat2(garbage)
    three = tmp_path / "three.aedat"
    three.write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n")
    with pytest.raises(FormatError, match=r"byte 0: AEDAT version '3\.1'.*aedat3"):
        read_aedat2(three)
    cut = tmp_path / "cut.aedat"
    cut.write_bytes(header_bytes()[:30])
    with pytest.raises(FormatError, match="file ends inside a header line"):
        read_aedat2(cut)


def test_truncated_record_names_the_byte(tmp_path):
    events = cifar_like_events(100)
    path = tmp_path / "t.aedat"
    write_aedat2(path, events)
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    last = len(data) - RECORD_BYTES
    with pytest.raises(FormatError, match=rf"t\.aedat: byte {last}: file ends 5 bytes into"):
        read_aedat2(path)


def test_davis_addresses_in_a_dvs128_file_are_refused(tmp_path):
    events = cifar_like_events(50)
    addresses = encode_dvs128_addresses(events)
    addresses[20] |= 0x00412000  # DAVIS-style x/y bits
    path = tmp_path / "davis.aedat"
    write_aedat2_records(path, addresses, events["timestamp"])
    byte = read_aedat2_header(path).data_offset + 20 * RECORD_BYTES
    with pytest.raises(FormatError, match=rf"byte {byte}: address 0x0041.* not a DVS128") as info:
        read_aedat2(path)
    assert "AEChip" in str(info.value) and "skip" not in str(info.value)


def test_event_past_a_smaller_sensor(tmp_path):
    events = cifar_like_events(200, seed=4)
    events["x"] = np.minimum(events["x"], 63)
    events["y"] = np.minimum(events["y"], 63)
    events["x"][150] = 100
    path = tmp_path / "s.aedat"
    write_aedat2(path, events)
    with pytest.raises(EventValidationError, match=r"event 150: x=100, y=\d+ is outside the 64x64"):
        read_aedat2(path, sensor=SensorSize(64, 64))
    stats = Aedat2Stats()
    recording = read_aedat2(path, sensor=SensorSize(64, 64), on_out_of_sensor="skip", stats=stats)
    assert len(recording) == 199 and stats.out_of_sensor_dropped == 1


def test_timestamps_going_backwards_name_the_event(tmp_path):
    events = cifar_like_events(3_000, seed=5)
    events["timestamp"][2_000] = events["timestamp"][1_999] - 5
    path = tmp_path / "b.aedat"
    write_aedat2(path, events, check=False)
    byte = read_aedat2_header(path).data_offset + 2_000 * RECORD_BYTES
    with pytest.raises(
        EventValidationError, match=rf"b\.aedat: event 2000: timestamp .* backwards.*byte {byte}"
    ):
        read_aedat2(path)
    with pytest.raises(EventValidationError, match="event 2000"):
        list(iter_aedat2(path, chunk_events=2_000))  # at a chunk boundary
    # A large drop that is not a wrap (not from the top to the bottom quarter).
    events = cifar_like_events(10, t0_us=3_000_000_000)
    events["timestamp"][5:] = 1_500_000_000
    write_aedat2(path, events, check=False)
    with pytest.raises(EventValidationError, match="event 5"):
        read_aedat2(path)


def test_writer_refuses_what_dvs128_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="at most 128x128"):
        write_aedat2(tmp_path / "w.aedat", cifar_like_events(3), SensorSize(346, 260))
    events = cifar_like_events(3)
    events["x"][1] = 128
    with pytest.raises(EventValidationError, match="event 1"):
        write_aedat2(tmp_path / "w.aedat", events)
