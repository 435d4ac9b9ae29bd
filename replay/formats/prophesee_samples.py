"""Small Prophesee RAW (EVT 2.0, EVT 3.0), DAT and Event Stream files built
word by word from the published layouts, with the events each must decode to:
for tests (tests/test_prophesee.py) and benchmarks (benchmarks/bench_prophesee.py
runs every candidate library on them), like the ``*_writer`` modules.

Each sample covers what a decoder can get wrong: EVT 2.0 time-high bases up
to the top of the 34-bit range and words to skip (EXT_TRIGGER, OTHERS,
CONTINUED); EVT 3.0 single events, VECT_12 and VECT_8 vectors from a
VECT_BASE_X, the system-type bit of EVT_ADDR_Y, words to skip, the sensor's
corners and the 24-bit time wrap; DAT records at the corners and a timestamp
near 2^32, with the CD (0x0C) and the Event2d (0x00) type byte of the Gen1
ATIS dataset; Event Stream overflow bytes, y counted from the bottom and ATIS
exposure events to skip.

Expected events are ``(t_us, x, y, polarity)`` with (0, 0) at the top left.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from core.events import SensorSize

# EVT 2.0 word types (bits 28-31)
EVT2_CD_OFF, EVT2_CD_ON, EVT2_TIME_HIGH = 0x0, 0x1, 0x8
EVT2_EXT_TRIGGER, EVT2_OTHERS, EVT2_CONTINUED = 0xA, 0xE, 0xF
# EVT 3.0 word types (bits 12-15)
ADDR_Y, ADDR_X, VECT_BASE_X, VECT_12, VECT_8 = 0x0, 0x2, 0x3, 0x4, 0x5
TIME_LOW, CONTINUED_4, TIME_HIGH, EXT_TRIGGER, OTHERS, CONTINUED_12 = 0x6, 0x7, 0x8, 0xA, 0xE, 0xF
POLARITY_BIT = 1 << 11  # EVT_ADDR_X, VECT_BASE_X; system type in EVT_ADDR_Y

VGA = SensorSize(640, 480)  # Gen3.1
HD = SensorSize(1280, 720)  # Gen4.x
ATIS = SensorSize(304, 240)  # Gen1 ATIS


@dataclass(frozen=True)
class Sample:
    name: str
    suffix: str  # ".raw", ".dat" or ".es"
    kind: str  # "evt2", "evt3", "dat" or "es"
    data: bytes
    sensor: SensorSize
    events: list[tuple[int, int, int, int]]  # (t_us, x, y, polarity), y from the top


def raw_header(kind: str, sensor: SensorSize) -> bytes:
    """A RAW header as Metavision writes it (EVK4, EVT 3.0)."""
    version = {"evt2": "2.0", "evt3": "3.0"}[kind]
    w, h = sensor
    return (
        "% camera_integrator_name Prophesee\n% date 2023-03-29 16:37:46\n"
        f"% evt {version}\n% format {kind.upper()};height={h};width={w}\n"
        f"% geometry {w}x{h}\n% end\n"
    ).encode()


def evt2_word(kind: int, payload: int) -> bytes:
    return struct.pack("<I", (kind << 28) | payload)


def evt2_cd(polarity: int, t_low: int, x: int, y: int) -> bytes:
    return evt2_word(polarity, (t_low << 22) | (x << 11) | y)


def evt2_sample(sensor: SensorSize = VGA) -> Sample:
    w, h = sensor
    words = [
        evt2_word(EVT2_TIME_HIGH, 1),  # base 64 µs
        evt2_cd(1, 5, 10, 20),
        evt2_cd(0, 5, w - 1, h - 1),
        evt2_word(EVT2_EXT_TRIGGER, (7 << 22) | 1),
        evt2_word(EVT2_OTHERS, (7 << 22) | 0x1234),
        evt2_word(EVT2_CONTINUED, 0xABCDEF),
        evt2_cd(0, 63, 0, 0),
        evt2_word(EVT2_TIME_HIGH, 0x0FFFFFF),
        evt2_cd(1, 0, w // 2, h // 2),
        evt2_word(EVT2_TIME_HIGH, 0xFFFFFFF),  # the top of the 34-bit time
        evt2_cd(1, 63, 1, 2),
    ]
    events = [
        (69, 10, 20, 1),
        (69, w - 1, h - 1, 0),
        (127, 0, 0, 0),
        (0x0FFFFFF << 6, w // 2, h // 2, 1),
        ((0xFFFFFFF << 6) + 63, 1, 2, 1),
    ]
    return Sample(
        f"evt2_{sensor}",
        ".raw",
        "evt2",
        raw_header("evt2", sensor) + b"".join(words),
        sensor,
        events,
    )


def evt3_word(kind: int, payload: int) -> bytes:
    return struct.pack("<H", (kind << 12) | payload)


def evt3_sample(sensor: SensorSize = HD) -> Sample:
    w3 = evt3_word
    w, h = sensor
    words = [
        w3(TIME_HIGH, 1),
        w3(TIME_LOW, 0x010),  # t = 4096 + 16
        w3(ADDR_Y, POLARITY_BIT | 100),  # system type bit: not part of y
        w3(ADDR_X, POLARITY_BIT | 200),
        w3(ADDR_X, 201),
        w3(VECT_BASE_X, POLARITY_BIT | 300),
        w3(VECT_12, 0b100000000101),  # x = 300, 302, 311
        w3(VECT_8, 0b10000001),  # x = 312, 319
        w3(EXT_TRIGGER, 1),
        w3(OTHERS, 0x016),
        w3(CONTINUED_12, 0xABC),
        w3(CONTINUED_4, 0x5),
        w3(TIME_LOW, 0x020),
        w3(ADDR_Y, h - 1),
        w3(ADDR_X, w - 1),
        w3(TIME_HIGH, 2),
        w3(TIME_LOW, 5),  # t = 8192 + 5
        w3(ADDR_Y, 0),
        w3(VECT_BASE_X, 0),
        w3(VECT_8, 0b00000011),  # x = 0, 1
        w3(TIME_HIGH, 0xFFF),
        w3(TIME_LOW, 0xFFF),  # t = 2^24 - 1
        w3(ADDR_X, POLARITY_BIT | 7),
        w3(TIME_HIGH, 0x000),
        w3(TIME_LOW, 0x003),  # wrapped: t = 2^24 + 3
        w3(ADDR_X, POLARITY_BIT | 8),
    ]
    events = [
        (4112, 200, 100, 1),
        (4112, 201, 100, 0),
        (4112, 300, 100, 1),
        (4112, 302, 100, 1),
        (4112, 311, 100, 1),
        (4112, 312, 100, 1),
        (4112, 319, 100, 1),
        (4128, w - 1, h - 1, 0),
        (8197, 0, 0, 0),
        (8197, 1, 0, 0),
        ((1 << 24) - 1, 7, 0, 1),
        ((1 << 24) + 3, 8, 0, 1),
    ]
    return Sample(
        f"evt3_{sensor}",
        ".raw",
        "evt3",
        raw_header("evt3", sensor) + b"".join(words),
        sensor,
        events,
    )


def dat_record(t: int, x: int, y: int, polarity: int) -> bytes:
    return struct.pack("<II", t, x | (y << 14) | (polarity << 28))


def dat_header(sensor: SensorSize, event_type: int = 0x0C) -> bytes:
    return (
        "% Data file containing CD events\n% Date 2020-09-14 14:18:29\n% Version 2\n"
        f"% Width {sensor.width}\n% Height {sensor.height}\n"
    ).encode() + bytes([event_type, 8])


def dat_sample(sensor: SensorSize = VGA, event_type: int = 0x0C) -> Sample:
    w, h = sensor
    events = [(10, 0, 0, 1), (10, w - 1, h - 1, 0), (500, 123, 45, 1), (0xFFFFFFF0, 7, 8, 0)]
    data = dat_header(sensor, event_type) + b"".join(dat_record(*e) for e in events)
    name = f"dat_{'cd' if event_type == 0x0C else '2d'}_{sensor}"
    return Sample(name, ".dat", "dat", data, sensor, events)


def es_header(stream_type: int, sensor: SensorSize) -> bytes:
    return b"Event Stream" + bytes([2, 0, 0, stream_type]) + struct.pack("<HH", *sensor)


def es_dvs_event(dt: int, x: int, y_up: int, on: int) -> bytes:
    overflows = b"\xff" * (dt // 127)  # 127 µs each
    return overflows + bytes([((dt % 127) << 1) | on]) + struct.pack("<HH", x, y_up)


def es_dvs_sample(sensor: SensorSize = VGA) -> Sample:
    w, h = sensor
    events = [
        (0, 0, 0, 1),
        (5, w - 1, h - 1, 0),
        (5, 10, 20, 1),
        (300, 11, 21, 0),
        (681, 12, 22, 1),
    ]
    body, previous = b"", 0
    for t, x, y, on in events:
        body += es_dvs_event(t - previous, x, h - 1 - y, on)
        previous = t
    return Sample(f"es_dvs_{sensor}", ".es", "es", es_header(1, sensor) + body, sensor, events)


def es_atis_event(dt: int, x: int, y_up: int, polarity: int, exposure: int) -> bytes:
    overflows = b""
    while dt >= 63:  # 0b111111nn: n * 63 µs
        n = min(dt // 63, 3)
        overflows += bytes([0xFC | n])
        dt -= 63 * n
    return overflows + bytes([(dt << 2) | (polarity << 1) | exposure]) + struct.pack("<HH", x, y_up)


def es_atis_sample(sensor: SensorSize = ATIS) -> Sample:
    w, h = sensor
    # (t, x, y, polarity, exposure measurement)
    atis = [
        (3, 1, 2, 1, 0),
        (10, 5, 6, 0, 1),
        (10, w - 1, 0, 0, 0),
        (200, 7, h - 1, 1, 0),
        (201, 8, 9, 1, 1),
    ]
    body, previous = b"", 0
    for t, x, y, p, exposure in atis:
        body += es_atis_event(t - previous, x, h - 1 - y, p, exposure)
        previous = t
    events = [(t, x, y, p) for t, x, y, p, exposure in atis if not exposure]
    return Sample(f"es_atis_{sensor}", ".es", "es", es_header(2, sensor) + body, sensor, events)


def all_samples() -> list[Sample]:
    """One of each, at the sizes of Gen3 (640x480), Gen4 (1280x720) and ATIS (304x240)."""
    return [
        evt2_sample(VGA),
        evt2_sample(HD),
        evt3_sample(VGA),
        evt3_sample(HD),
        dat_sample(VGA),
        dat_sample(HD),
        dat_sample(ATIS, event_type=0x00),
        es_dvs_sample(VGA),
        es_atis_sample(ATIS),
    ]
