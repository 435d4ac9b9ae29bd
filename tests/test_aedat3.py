"""AEDAT 3.1: round trips through the writer, skipping, chunking and bad input."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timezone

import numpy as np
import pytest
from conftest import shared_path

from core.events import EVENT_DTYPE, EventValidationError, FormatError, SensorSize
from replay.formats.aedat3 import (
    PACKET_HEADER_BYTES,
    Aedat3Stats,
    iter_aedat3,
    read_aedat3,
    read_aedat3_header,
)
from replay.formats.aedat3_writer import (
    ExtraPacket,
    encode_packet_header,
    header_bytes,
    imu6_packet,
    special_packet,
    write_aedat3,
)

FIXED_TIME = datetime(2017, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def gesture_like_events(count: int, seed: int = 0, t0_us: int = 1_000) -> np.ndarray:
    """Events shaped like a DVS128 recording: 128x128, both polarities, µs
    timestamps with bursts (many equal timestamps) and gaps."""
    rng = np.random.default_rng(seed)
    events = np.zeros(count, dtype=EVENT_DTYPE)
    events["timestamp"] = t0_us + np.cumsum(rng.choice([0, 0, 1, 3, 40], size=count))
    events["x"] = rng.integers(0, 128, count)
    events["y"] = rng.integers(0, 128, count)
    events["polarity"] = rng.integers(0, 2, count)
    return events


def write(path, events, **options):
    options.setdefault("start_time", FIXED_TIME)
    write_aedat3(path, events, **options)
    return path


def test_header_names_sensor_and_data_offset(tmp_path):
    path = write(tmp_path / "a.aedat", gesture_like_events(10))
    header = read_aedat3_header(path)
    expected_header = header_bytes("DVS128", FIXED_TIME)
    assert header.data_offset == len(expected_header)
    assert header.header_lines[0] == "#!AER-DAT3.1"
    assert header.header_lines[-1] == "#!END-HEADER"
    assert header.sources == {1: "DVS128"}
    assert header.sensor == SensorSize(128, 128) and header.sensor_from_header
    assert header.start_time == "2017-03-01 12:00:00 (TZ+0000)"
    with open(path, "rb") as f:
        assert f.read(header.data_offset).endswith(b"#!END-HEADER\r\n")


def test_header_sensor_from_other_cameras_and_default(tmp_path):
    path = tmp_path / "davis.aedat"
    events = gesture_like_events(50)
    events["x"] += 200
    write(path, events, sensor=SensorSize(346, 260), source_name="DAVIS346B")
    assert read_aedat3_header(path).sensor == SensorSize(346, 260)
    recording = read_aedat3(path)
    assert recording.sensor == SensorSize(346, 260)
    np.testing.assert_array_equal(recording.events, events)

    bare = tmp_path / "bare.aedat"
    bare.write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n")
    header = read_aedat3_header(bare)
    assert header.sensor == SensorSize(128, 128) and not header.sensor_from_header
    assert len(read_aedat3(bare)) == 0


def test_writer_refuses_source_name_of_another_size(tmp_path):
    with pytest.raises(ValueError, match="DVS128"):
        write(tmp_path / "x.aedat", gesture_like_events(3), sensor=SensorSize(346, 260))


@pytest.mark.parametrize("packet_events", [1, 7, 4096, 1_000_000])
def test_round_trip_is_bit_exact_across_timestamp_overflow(tmp_path, packet_events):
    events = gesture_like_events(20_000, seed=packet_events)
    # Cross 2^31 µs (eventTSOverflow 0 -> 1) and 2^32 µs (1 -> 2).
    events["timestamp"][5_000:] += (1 << 31) - int(events["timestamp"][5_000]) - 3
    events["timestamp"][12_000:] += (1 << 32) - int(events["timestamp"][12_000])
    path = write(tmp_path / "r.aedat", events, packet_events=packet_events)
    stats = Aedat3Stats()
    recording = read_aedat3(path, stats=stats)
    assert recording.events.dtype == EVENT_DTYPE
    assert recording.events.tobytes() == events.tobytes()  # padding included
    assert recording.sensor == SensorSize(128, 128)
    assert recording.source == str(path)
    assert stats.polarity_events == len(events)
    assert stats.invalid_events_dropped == 0
    # Packets split at the packet size and wherever ts >> 31 changes.
    assert stats.polarity_packets >= -(-len(events) // packet_events)
    assert stats.polarity_packets >= 3


def test_overflow_field_is_what_carries_the_high_bits(tmp_path):
    """Byte-level check of the layout against the documented formula."""
    events = gesture_like_events(2)
    events["timestamp"] = [(5 << 31) | 17, (5 << 31) | 18]
    events["x"] = [3, 127]
    events["y"] = [100, 0]
    events["polarity"] = [1, 0]
    path = write(tmp_path / "o.aedat", events)
    data = path.read_bytes()[read_aedat3_header(path).data_offset :]
    header = np.frombuffer(data[:PACKET_HEADER_BYTES], "<i4")
    assert header[0] & 0xFFFF == 1  # eventType polarity
    assert list(header[1:]) == [8, 4, 5, 2, 2, 2]  # size, tsOffset, overflow, cap, num, valid
    words = np.frombuffer(data[PACKET_HEADER_BYTES:], "<u4")
    assert words[0] == (3 << 17) | (100 << 2) | (1 << 1) | 1
    assert words[1] == 17
    assert words[2] == (127 << 17) | (0 << 2) | (0 << 1) | 1


def test_invalid_events_are_dropped_and_counted(tmp_path):
    events = gesture_like_events(5_000, seed=3)
    valid = np.random.default_rng(1).random(len(events)) > 0.1
    # Invalid events may hold anything: out of the sensor, timestamps backwards.
    events["x"][~valid] = 1000
    events["timestamp"][~valid] = 0
    path = write(tmp_path / "v.aedat", events, valid=valid, check=False, packet_events=333)
    stats = Aedat3Stats()
    recording = read_aedat3(path, stats=stats)
    np.testing.assert_array_equal(recording.events, events[valid])
    assert stats.invalid_events_dropped == int((~valid).sum())
    assert stats.declared_valid_events == int(valid.sum())
    assert stats.polarity_events == int(valid.sum())


def test_non_polarity_packets_are_skipped_and_counted(tmp_path):
    events = gesture_like_events(3_000, seed=4)
    t = events["timestamp"]
    frame_body = bytes(2 * 64)  # two 64-byte frame events, content irrelevant
    extras = [
        special_packet(0, [int(t[0])]),
        imu6_packet(100, [int(t[100]), int(t[100]) + 1]),
        special_packet(100, [int(t[100])]),
        ExtraPacket(1_500, event_type=2, event_size=64, body=frame_body, event_number=2),
        imu6_packet(3_000, [int(t[-1])]),  # after the last polarity packet
    ]
    path = write(tmp_path / "s.aedat", events, extra_packets=extras, packet_events=1000)
    stats = Aedat3Stats()
    recording = read_aedat3(path, stats=stats)
    np.testing.assert_array_equal(recording.events, events)
    assert stats.skipped_packets_by_type == {"special": 2, "imu6": 2, "frame": 1}
    assert stats.skipped_packets == 5 and stats.unknown_packets == 0
    assert stats.skipped_events_by_type == {"special": 2, "imu6": 3, "frame": 2}
    assert stats.skipped() == {
        "invalid": 0,
        "out_of_sensor": 0,
        "special": 2,
        "imu6": 3,
        "frame": 2,
    }
    # 3 polarity packets of 1000, split again at events 100 and 1500.
    assert stats.polarity_packets == 5
    assert stats.packets == 10


def test_unknown_packet_type_is_an_error_naming_the_byte_unless_skipped(tmp_path):
    events = gesture_like_events(1_000, seed=5)
    odd = ExtraPacket(400, event_type=4242, event_size=12, body=bytes(36), event_number=3)
    path = write(tmp_path / "u.aedat", events, extra_packets=[odd], packet_events=400)
    offset = read_aedat3_header(path).data_offset + PACKET_HEADER_BYTES + 400 * 8
    with pytest.raises(FormatError, match=rf"u\.aedat: byte {offset}: unknown packet type 4242"):
        read_aedat3(path)
    stats = Aedat3Stats()
    recording = read_aedat3(path, on_unknown_packet="skip", stats=stats)
    np.testing.assert_array_equal(recording.events, events)
    assert stats.unknown_packets_by_type == {4242: 1} and stats.unknown_packets == 1
    assert stats.skipped()["unknown_packets"] == 1


@pytest.mark.parametrize("chunk_events", [1, 7, 1000, 4096, 1_000_000])
@pytest.mark.parametrize("block_bytes", [64, 1000, 1 << 22])
def test_chunked_iteration_equals_whole_read(tmp_path, chunk_events, block_bytes):
    events = gesture_like_events(6_000, seed=6)
    events["timestamp"][3_000:] += 1 << 31
    extras = [special_packet(2_000, [int(events["timestamp"][2_000])])]
    path = write(tmp_path / "c.aedat", events, extra_packets=extras, packet_events=700)
    chunks = list(iter_aedat3(path, chunk_events=chunk_events, block_bytes=block_bytes))
    assert all(len(chunk) == chunk_events for chunk in chunks[:-1])
    assert 0 < len(chunks[-1]) <= chunk_events
    assert all(chunk.dtype == EVENT_DTYPE for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), events)
    whole = read_aedat3(path, block_bytes=block_bytes)
    np.testing.assert_array_equal(whole.events, events)


def test_sensor_override(tmp_path):
    events = gesture_like_events(100)
    path = write(tmp_path / "o.aedat", events)
    recording = read_aedat3(path, sensor=SensorSize(240, 180))
    assert recording.sensor == SensorSize(240, 180)
    with pytest.raises(EventValidationError, match="outside the 64x64 sensor"):
        read_aedat3(path, sensor=SensorSize(64, 64))


def test_empty_packets_and_no_events(tmp_path):
    path = tmp_path / "e.aedat"
    body = encode_packet_header(1, 8, 0, 0, 0) * 3
    path.write_bytes(header_bytes(start_time=FIXED_TIME) + body)
    stats = Aedat3Stats()
    recording = read_aedat3(path, stats=stats)
    assert len(recording) == 0 and recording.events.dtype == EVENT_DTYPE
    assert stats.packets == 3
    assert list(iter_aedat3(path)) == []


# ---------------------------------------------------------------- bad input


def test_empty_file(tmp_path):
    path = tmp_path / "empty.aedat"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match=r"empty\.aedat: byte 0: empty file"):
        read_aedat3(path)


def test_aedat4_file_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "four.aedat4"
    path.write_bytes(b"#!AER-DAT4.0\r\n" + bytes(range(256)) * 4)
    with pytest.raises(FormatError, match=r"byte 0: AEDAT version '4\.0'.*aedat4"):
        read_aedat3(path)


def test_real_aedat4_recording_is_refused():
    path = shared_path("recordings/dvxplorer_320x240.aedat4")
    with pytest.raises(FormatError, match=r"dvxplorer_320x240\.aedat4: byte 0: AEDAT version"):
        read_aedat3(path)


def test_other_files_are_refused(tmp_path):
    nmnist = shared_path("recordings/nmnist_single.bin")
    with pytest.raises(FormatError, match=r"nmnist_single\.bin: byte 0: not an AEDAT file"):
        read_aedat3(nmnist)
    garbage = tmp_path / "garbage.aedat"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(FormatError, match="byte 0: not an AEDAT file"):
        read_aedat3(garbage)
    jaer = tmp_path / "jaer.aedat"
    jaer.write_bytes(b"#!AER-DAT2.0\r\n# jAER\r\n" + bytes(80))
    with pytest.raises(FormatError, match="AEDAT 2.0"):
        read_aedat3(jaer)


def test_header_problems_name_the_byte(tmp_path):
    good = header_bytes(start_time=FIXED_TIME)
    cut = tmp_path / "cut.aedat"
    cut.write_bytes(good[:40])  # truncated mid-header
    with pytest.raises(FormatError, match="file ends inside the header"):
        read_aedat3(cut)

    no_hash = tmp_path / "nohash.aedat"
    first_line = b"#!AER-DAT3.1\r\n"
    no_hash.write_bytes(first_line + b"Format: RAW\r\n#!END-HEADER\r\n")
    with pytest.raises(FormatError, match=rf"byte {len(first_line)}: header line does not start"):
        read_aedat3(no_hash)

    compressed = tmp_path / "compressed.aedat"
    compressed.write_bytes(first_line + b"#Format: SerializedTS\r\n#!END-HEADER\r\n")
    with pytest.raises(FormatError, match="format 'SerializedTS' is not supported"):
        read_aedat3(compressed)

    endless = tmp_path / "endless.aedat"
    endless.write_bytes(first_line + b"#" + b"x" * (1 << 20) + b"\r\n#!END-HEADER\r\n")
    with pytest.raises(FormatError, match="no '#!END-HEADER' line within the first"):
        read_aedat3(endless)


def _one_packet_file(tmp_path, name, packet_header: bytes, body: bytes = b""):
    path = tmp_path / name
    path.write_bytes(header_bytes(start_time=FIXED_TIME) + packet_header + body)
    return path, len(header_bytes(start_time=FIXED_TIME))


def test_truncated_mid_packet_header_and_mid_packet(tmp_path):
    events = gesture_like_events(1_000)
    path = write(tmp_path / "t.aedat", events, packet_events=500)
    data = path.read_bytes()
    offset = read_aedat3_header(path).data_offset
    second_packet = offset + PACKET_HEADER_BYTES + 500 * 8

    (tmp_path / "h.aedat").write_bytes(data[: second_packet + 10])
    with pytest.raises(FormatError, match=rf"byte {second_packet}: truncated packet header: 10"):
        read_aedat3(tmp_path / "h.aedat")

    (tmp_path / "b.aedat").write_bytes(data[: second_packet + PACKET_HEADER_BYTES + 123])
    with pytest.raises(FormatError, match=rf"byte {second_packet}: packet of type 1 declares 500"):
        read_aedat3(tmp_path / "b.aedat")
    # The events before the damage were yielded before the error.
    chunks = []
    with pytest.raises(FormatError):
        for chunk in iter_aedat3(tmp_path / "b.aedat", chunk_events=100, block_bytes=1024):
            chunks.append(chunk)
    np.testing.assert_array_equal(np.concatenate(chunks), events[: len(np.concatenate(chunks))])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((1, 8, 2**31 - 1, 2**31 - 1, 2**31 - 1), "declares 2147483647 events of 8 bytes"),
        ((2, 2**31 - 1, 2**31 - 1, 0, 0), "declares 2147483647 events of 2147483647 bytes"),
        ((1, 0, 1, 1, 1), "eventSize 0 is not positive"),
        ((1, -8, 1, 1, 1), "eventSize -8 is not positive"),
        ((1, 16, 1, 1, 1), "polarity packet with eventSize 16"),
        ((1, 8, -1, 0, 0), "negative packet counts"),
        ((1, 8, 1, 2, 1), "packet counts out of order"),
        ((1, 8, 2, 1, 2), "packet counts out of order"),
    ],
)
def test_absurd_packet_headers_fail_fast_without_allocating(tmp_path, fields, message):
    event_type, size, capacity, number, valid = fields
    packet = encode_packet_header(event_type, size, capacity, number, valid)
    path, offset = _one_packet_file(tmp_path, "absurd.aedat", packet, bytes(64))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=rf"absurd\.aedat: byte {offset}: .*{message}"):
            read_aedat3(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_bad_timestamp_fields(tmp_path):
    packet = encode_packet_header(1, 8, 1, 1, 1, ts_overflow=-3)
    path, offset = _one_packet_file(tmp_path, "ovf.aedat", packet, bytes(8))
    with pytest.raises(FormatError, match=f"byte {offset}: negative eventTSOverflow -3"):
        read_aedat3(path)
    packet = encode_packet_header(1, 8, 1, 1, 1, ts_offset=6)
    path, offset = _one_packet_file(tmp_path, "tso.aedat", packet, bytes(8))
    with pytest.raises(FormatError, match=f"byte {offset}: eventTSOffset 6"):
        read_aedat3(path)
    body = np.array([1, 0x80000005], dtype="<u4").tobytes()  # valid event, timestamp < 0
    path, offset = _one_packet_file(
        tmp_path, "neg.aedat", encode_packet_header(1, 8, 1, 1, 1), body
    )
    with pytest.raises(FormatError, match=f"byte {offset + 28}: polarity event 0 has a negative"):
        read_aedat3(path)


def test_event_past_the_sensor_names_index_and_byte(tmp_path):
    events = gesture_like_events(2_000, seed=8)
    events["x"][1234] = 128
    events["y"][1500] = 300
    path = write(tmp_path / "big_x.aedat", events, check=False, packet_events=1000)
    data_offset = read_aedat3_header(path).data_offset
    byte = data_offset + 2 * PACKET_HEADER_BYTES + 1234 * 8
    with pytest.raises(
        EventValidationError,
        match=rf"big_x\.aedat: event 1234: x=128, y=\d+ is outside the 128x128 sensor "
        rf"\(byte {byte}",
    ):
        read_aedat3(path)
    # The index counts yielded events, also across chunks and after dropped ones.
    with pytest.raises(EventValidationError, match="event 1234"):
        list(iter_aedat3(path, chunk_events=100, block_bytes=256))
    stats = Aedat3Stats()
    recording = read_aedat3(path, on_out_of_sensor="skip", stats=stats)
    assert stats.out_of_sensor_dropped == 2
    np.testing.assert_array_equal(recording.events, np.delete(events, [1234, 1500]))


def test_timestamps_going_backwards_name_the_event(tmp_path):
    events = gesture_like_events(3_000, seed=9)
    events["timestamp"][2_500] = events["timestamp"][2_499] - 1
    path = write(tmp_path / "back.aedat", events, check=False, packet_events=1000)
    with pytest.raises(
        EventValidationError, match=r"back\.aedat: event 2500: timestamp .* backwards"
    ):
        read_aedat3(path)
    with pytest.raises(EventValidationError, match="event 2500"):
        list(iter_aedat3(path, chunk_events=64, block_bytes=128))
    # Across a packet boundary (a later packet with a smaller overflow).
    events = gesture_like_events(2_000, seed=10)
    events["timestamp"][:1_000] += 1 << 31
    path = write(tmp_path / "back2.aedat", events, check=False, packet_events=1000)
    with pytest.raises(EventValidationError, match="event 1000: timestamp"):
        read_aedat3(path)


def test_invalid_options_are_refused(tmp_path):
    path = write(tmp_path / "x.aedat", gesture_like_events(5))
    with pytest.raises(ValueError, match="on_unknown_packet"):
        read_aedat3(path, on_unknown_packet="ignore")
    with pytest.raises(ValueError, match="chunk_events"):
        list(iter_aedat3(path, chunk_events=0))
    with pytest.raises(ValueError, match="block_bytes"):
        list(iter_aedat3(path, block_bytes=8))


def test_writer_checks_events(tmp_path):
    events = gesture_like_events(10)
    events["x"][3] = 128
    with pytest.raises(EventValidationError, match="event 3"):
        write(tmp_path / "w.aedat", events)
    events = gesture_like_events(10)
    events["timestamp"][0] = -1
    with pytest.raises(EventValidationError, match="timestamps must lie in"):
        write(tmp_path / "w.aedat", events, check=False)


def test_iteration_memory_is_bounded_by_block_and_chunk_not_file(tmp_path):
    events = gesture_like_events(400_000, seed=11)  # a 3.2 MB file
    path = write(tmp_path / "long.aedat", events, packet_events=5000)
    count = 0
    tracemalloc.start()
    try:
        for chunk in iter_aedat3(path, chunk_events=10_000, block_bytes=64 << 10):
            count += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(events)
    # One 64 KiB block, its decoded events and a 160 kB chunk, far below the file.
    assert peak < 1 << 20 < path.stat().st_size


def test_packet_with_spare_capacity_decodes_number_events_and_skips_capacity(tmp_path):
    """Readers of DVS128 Gesture skip eventCapacity * eventSize bytes per packet."""
    events = gesture_like_events(5, seed=12)
    words = np.zeros((5, 2), dtype="<u4")
    words[:, 0] = (events["x"].astype(np.uint32) << 17) | (events["y"].astype(np.uint32) << 2)
    words[:, 0] |= (events["polarity"].astype(np.uint32) << 1) | 1
    words[:, 1] = events["timestamp"]
    spare = np.full((2, 2), 0xFFFFFFFF, dtype="<u4")  # unused slots: must be ignored
    body = np.concatenate([words[:3], spare]).tobytes()
    packet = encode_packet_header(1, 8, 5, 3, 3) + body
    packet += encode_packet_header(1, 8, 2, 2, 2) + words[3:].tobytes()
    path, _ = _one_packet_file(tmp_path, "spare.aedat", packet)
    np.testing.assert_array_equal(read_aedat3(path).events, events)
