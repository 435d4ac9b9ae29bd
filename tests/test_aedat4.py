import struct
import time

import dv_processing as dv
import numpy as np
import pytest
from conftest import shared_path

from core.events import EVENT_DTYPE, EventValidationError, FormatError, SensorSize, make_events
from replay.formats.aedat4 import Aedat4Reader, aedat4_info, iter_aedat4, read_aedat4
from replay.formats.aedat4_writer import write_aedat4

DVXPLORER = SensorSize(320, 240)
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"


def sample_events(count=5_000, seed=0, sensor=DVXPLORER, start_us=1_700_000_000_000_000):
    rng = np.random.default_rng(seed)
    return make_events(
        start_us + np.sort(rng.integers(0, count * 50, count)),
        rng.integers(0, sensor.width, count),
        rng.integers(0, sensor.height, count),
        rng.integers(0, 2, count),
    )


def first_packet_offset(data: bytes) -> int:
    """Byte where the first packet's compressed data starts (after the IOHeader
    and the packet's 8-byte stream id + size)."""
    (header_bytes,) = struct.unpack_from("<i", data, 14)
    return 14 + 4 + header_bytes + 8


def test_real_dvxplorer_recording():
    path = shared_path("recordings/dvxplorer_320x240.aedat4")
    recording = read_aedat4(path)
    events = recording.events
    assert recording.sensor == DVXPLORER and events.dtype == EVENT_DTYPE
    assert len(events) == 111_954
    assert 0.58e6 < events["timestamp"][-1] - events["timestamp"][0] < 0.60e6
    # same events as dv-processing gives in this process
    direct = dv.io.MonoCameraRecording(str(path))
    parts = []
    while (batch := direct.getNextEventBatch()) is not None:
        parts.append(batch.numpy().view("V16"))
    np.testing.assert_array_equal(events, np.concatenate(parts).view(EVENT_DTYPE))

    info = aedat4_info(path, count_elements=True)
    assert info.sensor == DVXPLORER
    assert info.streams == {"events": "events", "imu": "imu", "triggers": "triggers"}
    assert info.has("imu") and info.has("triggers") and not info.has("frames")
    assert info.element_counts == {"events": 111_954, "imu": 475, "triggers": 0}
    assert info.time_range_us[0] <= events["timestamp"][0]
    assert info.time_range_us[1] >= events["timestamp"][-1]


def test_chunks_are_bounded_and_add_up():
    path = shared_path("recordings/dvxplorer_320x240.aedat4")
    with iter_aedat4(path, chunk_events=25_000) as reader:
        assert reader.sensor == DVXPLORER
        sizes = [len(chunk) for chunk in reader]
    assert sizes == [25_000] * 4 + [11_954]


def test_round_trip_is_bit_exact(tmp_path):
    events = sample_events()
    events["timestamp"][100:110] = events["timestamp"][100]  # equal timestamps
    for compression in ("lz4", "zstd", "none"):
        path = tmp_path / f"rt_{compression}.aedat4"
        write_aedat4(path, events, DVXPLORER, camera_name="test_cam", compression=compression)
        back = read_aedat4(path)
        assert back.sensor == DVXPLORER
        np.testing.assert_array_equal(back.events, events)
        assert aedat4_info(path).camera_name == "test_cam"


def test_round_trip_of_the_real_recording(tmp_path):
    real = read_aedat4(shared_path("recordings/dvxplorer_320x240.aedat4"))
    path = tmp_path / "copy.aedat4"
    write_aedat4(path, real.events, real.sensor, packet_events=7_000)
    np.testing.assert_array_equal(read_aedat4(path).events, real.events)


def test_empty_event_stream_and_any_file_name(tmp_path):
    path = tmp_path / "empty.dat"  # dv-processing itself needs .aedat4; the writer renames
    write_aedat4(path, sample_events()[:0], SensorSize(128, 128))
    recording = read_aedat4(path)
    assert len(recording) == 0 and recording.sensor == SensorSize(128, 128)
    assert aedat4_info(path).time_range_us is None
    assert list(tmp_path.iterdir()) == [path]


def test_writer_refuses_bad_events_and_leaves_no_file(tmp_path):
    events = sample_events(100)
    events["x"][40] = 320
    with pytest.raises(EventValidationError, match="event 40"):
        write_aedat4(tmp_path / "bad.aedat4", events, DVXPLORER)
    events = sample_events(100)
    events["timestamp"][60] = events["timestamp"][59] - 1
    with pytest.raises(EventValidationError, match="event 60"):
        write_aedat4(tmp_path / "bad.aedat4", events, DVXPLORER)
    assert list(tmp_path.iterdir()) == []


def test_recording_without_event_stream_is_a_clear_error(tmp_path):
    path = tmp_path / "imu_only.aedat4"
    config = dv.io.MonoCameraWriter.Config("imu_cam")
    config.addImuStream()
    writer = dv.io.MonoCameraWriter(str(path), config)
    for i in range(5):
        writer.writeImu(dv.data.generate.levelImuMeasurement(1_000 + 10 * i))
    del writer
    with pytest.raises(FormatError, match=r"no event stream .*imu \(imu\)") as info:
        read_aedat4(path)
    assert str(path) in str(info.value)
    info = aedat4_info(path, count_elements=True)
    assert info.sensor is None and info.element_counts == {"imu": 5}


def test_bad_headers_fail_fast_naming_the_byte(tmp_path):
    cases = {
        "empty.aedat4": (b"", "byte 0", "empty file"),
        "v3.aedat4": (b"#!AER-DAT3.1\r\n#!END-HEADER\r\n", "byte 0", "AEDAT 3.x"),
        "text.aedat4": (b"hello world, not events", "byte 0", "not an AEDAT4 file"),
        "huge_header.aedat4": (
            b"#!AER-DAT4.0\r\n" + struct.pack("<i", 10**6) + b"IOHE" * 4,
            "byte 14",
            "does not fit",
        ),
    }
    for name, (content, where, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(FormatError, match=message) as info:
            read_aedat4(path)
        assert info.value.where == where, name
        assert str(path) in str(info.value)


def test_truncated_file_is_refused_before_dv_processing_starts(tmp_path):
    data = shared_path("recordings/dvxplorer_320x240.aedat4").read_bytes()
    path = tmp_path / "cut.aedat4"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FormatError, match="data table position 945243 is outside the file") as info:
        read_aedat4(path)
    assert str(path) in str(info.value)


def _second_packet(data: bytes) -> int:
    """Byte where the second packet's compressed data starts."""
    first = first_packet_offset(data)
    (first_size,) = struct.unpack_from("<i", data, first - 4)
    return first + first_size + 8


def test_broken_framing_is_found_without_a_child(tmp_path):
    """The packet framing is checked in this process (aedat4_layout.py): sizes,
    stream ids, the LZ4 frame's magic, descriptor, checksum and block chain."""
    path = tmp_path / "x.aedat4"
    write_aedat4(path, sample_events(30_000), DVXPLORER, packet_events=10_000)
    good = path.read_bytes()
    second = _second_packet(good)
    cases = {
        "flipped magic": (second, 0x10, "packet 2: LZ4 frame: no frame magic"),
        "flipped descriptor": (second + 6, 0x01, "frame header checksum mismatch"),
        "flipped block size": (second + 9, 0x10, "over the frame's 65536"),
        "undeclared stream": (second - 8, 0x07, "which the header does not declare"),
        "oversized packet": (second - 1, 0x10, "declares .* bytes, past the data table"),
    }
    for name, (at, bit, message) in cases.items():
        data = bytearray(good)
        data[at] ^= bit
        path.write_bytes(bytes(data))
        started = time.monotonic()
        with pytest.raises(FormatError, match=message):
            read_aedat4(path)
        assert time.monotonic() - started < 0.2, name  # no child process started


def test_corrupt_packet_that_makes_dv_processing_loop_is_stopped(tmp_path):
    """dv-processing 2.0.4 spins forever on some bad LZ4 frames that are framed
    correctly (here: a compressed block marked as stored); the reader stops it,
    after a stall timeout that scales with the file's largest packet."""
    path = tmp_path / "loop.aedat4"
    write_aedat4(path, sample_events(30_000), DVXPLORER, packet_events=10_000)
    data = bytearray(path.read_bytes())
    second = _second_packet(data)
    assert data[second : second + 4] == LZ4_FRAME_MAGIC
    data[second + 10] ^= 0x80  # the first block's "uncompressed" flag
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="no progress for 0.5 s decoding event packet 2") as info:
        read_aedat4(path, stall_timeout_s=0.5)
    assert info.value.where == "event 10000"
    reader = Aedat4Reader(path)  # the default: 1 s plus 1 s per 5 MB of the largest packet
    assert 1.0 <= reader.stall_timeout_s < 1.1
    reader.close()
    real = Aedat4Reader(shared_path("recordings/dvxplorer_320x240.aedat4"))
    assert real.layout.packets == 118 and real.layout.largest_packet_bytes == 24_053
    real.close()


def test_child_that_dies_is_reported_and_closing_stops_it(tmp_path):
    path = tmp_path / "x.aedat4"
    # 3.2 MB of events: more than the 1 MiB pipe holds, so the child cannot have
    # sent everything and exited before it is killed.
    write_aedat4(path, sample_events(200_000), DVXPLORER)
    reader = Aedat4Reader(path, chunk_events=1_000)
    next(reader)
    child = reader._process
    child.kill()
    with pytest.raises(FormatError, match="stopped unexpectedly"):
        list(reader)
    reader = Aedat4Reader(path, chunk_events=1_000)
    child = reader._process
    next(reader)
    reader.close()
    assert child.poll() is not None
