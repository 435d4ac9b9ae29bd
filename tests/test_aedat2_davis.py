"""AEDAT 2.0 from DAVIS cameras: files written here byte by byte in jAER's layout.

No real DAVIS recording is available here, so every file is written from jAER's
published constants (``DavisChip.java``: y at bit 22, x at bit 12, polarity at
bit 11, bit 31 for APS/IMU words, 0x80000C00 for IMU words, bit 10 for external
input events) with ``struct``, not with the reader's own constants, and read
back. The expected coordinates follow jAER's extractor (x = W - 1 - raw_x,
y = raw_y from the bottom), turned to (0, 0) at the top left.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from core.events import EVENT_DTYPE, EventValidationError, FormatError, SensorSize
from replay.formats import detect_format, iter_recording, read_recording
from replay.formats.aedat2 import Aedat2Stats, iter_aedat2, read_aedat2, read_aedat2_header
from replay.formats.aedat2_writer import encode_davis_addresses

DAVIS240C = "eu.seebetter.ini.chips.davis.DAVIS240C"
DAVIS346B = "eu.seebetter.ini.chips.davis.Davis346B"


def jaer_header(chip: str | None, end_line: bool = True) -> bytes:
    lines = [
        "#!AER-DAT2.0",
        "# This is a raw AE data file - do not edit",
        "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event",
        "# Timestamps tick is 1 us",
        "# created Thu Dec 03 14:47:00 CET 2015",
    ]
    if chip is not None:
        lines.append(f"# AEChip: {chip}")
    if end_line:
        lines.append("#End Of ASCII Header")
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def dvs(raw_x: int, raw_y: int, on: int) -> int:
    return (raw_y << 22) | (raw_x << 12) | (on << 11)


def aps(raw_x: int, raw_y: int, readout: int, adc: int) -> int:
    """An APS sample: bit 31, pixel address, readout type (0 reset, 1 signal), ADC value."""
    return (1 << 31) | (raw_y << 22) | (raw_x << 12) | (readout << 10) | adc


def imu_sample() -> list[int]:
    """The 7 words of one IMU sample: type code in bits 28-30, value in 12-27, 0x80000C00."""
    values = [100, -200, 16384, 1200, 5, -6, 7]
    return [0x80000C00 | (code << 28) | ((v & 0xFFFF) << 12) for code, v in enumerate(values)]


EXTERNAL_INPUT = 1 << 10  # a DVS-space address with bit 10: an external input event


def write_records(path, header: bytes, records: list[tuple[int, int]]) -> None:
    path.write_bytes(header + b"".join(struct.pack(">II", a, t) for a, t in records))


def test_davis240c_records_decode_as_jaer_shows_them(tmp_path):
    records = [
        (dvs(0, 0, 1), 100),  # raw (0, 0): jAER x = 239, y = 0 (bottom) -> top-left y = 179
        *[(a, 105) for a in imu_sample()],
        (dvs(239, 179, 0), 110),
        (aps(5, 6, 0, 512), 111),
        (aps(5, 6, 1, 300), 112),
        (aps(239, 179, 0, 1023), 113),
        (EXTERNAL_INPUT, 114),
        (dvs(10, 20, 1), 120),
    ]
    path = tmp_path / "davis240c.aedat"
    write_records(path, jaer_header(DAVIS240C), records)
    header = read_aedat2_header(path)
    assert (header.chip.name, header.chip.layout, header.sensor) == (
        DAVIS240C,
        "davis",
        SensorSize(240, 180),
    )
    stats = Aedat2Stats()
    recording = read_aedat2(path, stats=stats)
    assert recording.sensor == SensorSize(240, 180)
    events = recording.events
    assert events["x"].tolist() == [239, 0, 229]
    assert events["y"].tolist() == [179, 0, 159]
    assert events["polarity"].tolist() == [1, 0, 1]
    assert events["timestamp"].tolist() == [100, 110, 120]
    assert (stats.records, stats.polarity_events) == (len(records), 3)
    assert stats.skipped() == {"special": 1, "aps": 3, "imu": 7, "out_of_sensor": 0}


@pytest.mark.parametrize(
    "chip, sensor",
    [
        ("eu.seebetter.ini.chips.davis.DAVIS240A", SensorSize(240, 180)),
        ("eu.seebetter.ini.chips.davis.DAVIS240B", SensorSize(240, 180)),
        ("eu.seebetter.ini.chips.davis.DVS240", SensorSize(240, 180)),
        (DAVIS346B, SensorSize(346, 260)),
        ("eu.seebetter.ini.chips.davis.Davis346red", SensorSize(346, 260)),
        ("eu.seebetter.ini.chips.davis.Davis346blue", SensorSize(346, 260)),
        ("eu.seebetter.ini.chips.davis.Davis346cBSI", SensorSize(346, 260)),
        ("eu.seebetter.ini.chips.davis.Davis346mini", SensorSize(346, 260)),
        ("eu.seebetter.ini.chips.davis.Davis346BColor", SensorSize(346, 260)),
        ("ch.unizh.ini.jaer.chip.retina.DVS128", SensorSize(128, 128)),
        ("ch.unizh.ini.jaer.chip.retina.Tmpdiff128", SensorSize(128, 128)),
        (None, SensorSize(128, 128)),  # no AEChip line: DVS128
    ],
)
def test_chip_names_give_the_sensor(tmp_path, chip, sensor):
    path = tmp_path / "c.aedat"
    write_records(path, jaer_header(chip), [])
    assert read_aedat2_header(path).sensor == sensor
    assert iter_recording(path)[0] == sensor
    assert read_recording(path).sensor == sensor


def test_davis346_corners_and_polarity(tmp_path):
    corners = [(0, 0), (345, 0), (0, 259), (345, 259)]
    records = [(dvs(x, y, i % 2), 10 * i) for i, (x, y) in enumerate(corners)]
    path = tmp_path / "d346.aedat"
    write_records(path, jaer_header(DAVIS346B), records)
    events = read_aedat2(path).events
    assert list(zip(events["x"].tolist(), events["y"].tolist(), strict=True)) == [
        (345, 259),
        (0, 259),
        (345, 0),
        (0, 0),
    ]
    assert events["polarity"].tolist() == [0, 1, 0, 1]


def test_unknown_chip_is_named(tmp_path):
    path = tmp_path / "rgbw.aedat"
    header = jaer_header("eu.seebetter.ini.chips.davis.DavisRGBW640")
    write_records(path, header, [(dvs(1, 1, 1), 5)])
    line = header.index(b"# AEChip")
    with pytest.raises(FormatError, match=rf"byte {line}: AEChip '.*DavisRGBW640' is not a camera"):
        read_aedat2(path)
    with pytest.raises(FormatError, match="DavisRGBW640"):
        list(iter_recording(path)[1])


@pytest.mark.parametrize("end_line", [True, False])
def test_first_record_starting_with_hash_is_data(tmp_path, end_line):
    """Raw y 140-143 puts 0x23 ('#') in a DVS record's first byte."""
    first = dvs(7, 141, 1)
    assert first >> 24 == ord("#")
    records = [(first, 1_000), (dvs(8, 2, 0), 1_001)]
    path = tmp_path / "hash.aedat"
    header = jaer_header(DAVIS240C, end_line=end_line)
    write_records(path, header, records)
    assert read_aedat2_header(path).data_offset == len(header)
    events = read_aedat2(path).events
    assert events["x"].tolist() == [239 - 7, 239 - 8]
    assert events["y"].tolist() == [179 - 141, 179 - 2]


def test_end_of_header_line_ends_the_header_even_before_printable_bytes(tmp_path):
    """A record whose 8 bytes are printable text, then one starting with a line
    feed (raw y 40): without jAER's end line it would read as a header line."""
    first = int.from_bytes(b"#ABC", "big")
    path = tmp_path / "text.aedat"
    header = jaer_header(DAVIS240C, end_line=True)
    path.write_bytes(header + b"#ABCDEFG" + struct.pack(">II", dvs(3, 40, 1), 0x44454650))
    assert read_aedat2_header(path).data_offset == len(header)
    events = read_aedat2(path).events
    raw_x, raw_y = (first >> 12) & 0x3FF, first >> 22
    assert events["x"].tolist() == [239 - raw_x, 239 - 3]
    assert events["y"].tolist() == [179 - raw_y, 179 - 40]
    assert events["timestamp"].tolist() == [int.from_bytes(b"DEFG", "big"), 0x44454650]


def test_coordinate_beyond_the_chip_is_outside_the_sensor(tmp_path):
    records = [(dvs(3, 3, 1), 1), (dvs(300, 3, 1), 2), (dvs(3, 200, 0), 3), (dvs(4, 4, 0), 4)]
    path = tmp_path / "far.aedat"
    write_records(path, jaer_header(DAVIS240C), records)
    with pytest.raises(EventValidationError, match=r"event 1: x=-61, y=176 is outside the 240x180"):
        read_aedat2(path)
    stats = Aedat2Stats()
    recording = read_aedat2(path, on_out_of_sensor="skip", stats=stats)
    assert len(recording) == 2 and stats.out_of_sensor_dropped == 2


def davis_stream(count: int, sensor: SensorSize, t0_us: int, seed: int = 0):
    """(events, addresses, timestamps): DVS events of a ``sensor`` chip with
    an IMU sample every 100 events and an APS row every 250, timestamps as the
    camera stores them (modulo 2^32)."""
    rng = np.random.default_rng(seed)
    events = np.zeros(count, dtype=EVENT_DTYPE)
    events["timestamp"] = t0_us + np.cumsum(rng.integers(0, 30, count))
    events["x"] = rng.integers(0, sensor.width, count)
    events["y"] = rng.integers(0, sensor.height, count)
    events["polarity"] = rng.integers(0, 2, count)
    addresses = encode_davis_addresses(events, sensor).tolist()
    out_a: list[int] = []
    out_t: list[int] = []
    for i, (a, t) in enumerate(zip(addresses, events["timestamp"].tolist(), strict=True)):
        if i % 100 == 0:
            out_a += imu_sample()
            out_t += [t] * 7
        if i % 250 == 0:
            out_a += [aps(x, 0, 1, 400) for x in range(sensor.width)]
            out_t += [t] * sensor.width
        out_a.append(a)
        out_t.append(t)
    return events, np.array(out_a, dtype=np.uint32), np.array(out_t, dtype=np.int64)


def test_round_trip_across_a_timestamp_wrap_in_chunks(tmp_path):
    sensor = SensorSize(346, 260)
    events, addresses, timestamps = davis_stream(5_000, sensor, t0_us=(1 << 32) - 40_000)
    assert timestamps[0] < 1 << 32 < timestamps[-1]
    path = tmp_path / "wrap346.aedat"
    stored = (timestamps % (1 << 32)).tolist()
    write_records(path, jaer_header(DAVIS346B), list(zip(addresses.tolist(), stored, strict=True)))
    stats = Aedat2Stats()
    recording = read_aedat2(path, stats=stats)
    np.testing.assert_array_equal(recording.events, events)
    assert stats.timestamp_wraps == 1
    assert stats.skipped() == {"special": 0, "aps": 20 * 346, "imu": 50 * 7, "out_of_sensor": 0}
    for chunk_events in (1, 777, 4096):
        chunks = list(iter_aedat2(path, chunk_events=chunk_events))
        assert all(len(chunk) <= chunk_events for chunk in chunks)
        np.testing.assert_array_equal(np.concatenate(chunks), events)


def test_detected_and_dispatched_like_any_aedat2_file(tmp_path):
    path = tmp_path / "renamed.bin"  # content decides, not the name
    write_records(path, jaer_header(DAVIS240C), [(dvs(1, 2, 1), 9), (aps(0, 0, 0, 1), 10)])
    assert detect_format(path) == "aedat2"
    sensor, chunks = iter_recording(path, chunk_events=10)
    assert sensor == SensorSize(240, 180)
    (chunk,) = list(chunks)
    assert (int(chunk["x"][0]), int(chunk["y"][0])) == (238, 177)
