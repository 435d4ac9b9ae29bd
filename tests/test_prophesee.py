"""Prophesee RAW (EVT 2.0, EVT 3.0), DAT and Event Stream files (replay.formats.prophesee,
replay.formats.event_stream): hand-built files decode to the exact events of the
published layouts, files faery writes round-trip, bad files raise FormatError,
and 640x480 / 1280x720 sensors reach the models through the sensor adapter."""

from __future__ import annotations

import numpy as np
import pytest

from core.adapt import SensorAdapter
from core.events import EVENT_DTYPE, EventError, FormatError, SensorSize, make_events
from replay.formats import event_stream, faery_chunks, prophesee
from replay.formats import prophesee_samples as samples
from streamer.classifier import MIN_SENSOR_COVERAGE

VGA, HD, ATIS = samples.VGA, samples.HD, samples.ATIS
ALL_SAMPLES = samples.all_samples()


def read_any(path, **options):
    if path.suffix == ".es":
        return event_stream.read_event_stream(path, **options)
    return prophesee.read_prophesee(path, **options)


def iter_any(path, **options):
    if path.suffix == ".es":
        return event_stream.iter_event_stream(path, **options)
    return prophesee.iter_prophesee(path, **options)


def as_tuples(events: np.ndarray) -> list[tuple[int, int, int, int]]:
    return [(int(e["timestamp"]), int(e["x"]), int(e["y"]), int(e["polarity"])) for e in events]


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- hand-built files: exact events ---


@pytest.mark.parametrize("sample", ALL_SAMPLES, ids=[s.name for s in ALL_SAMPLES])
def test_hand_built_files_decode_to_the_published_events(tmp_path, sample):
    path = write(tmp_path, sample.name + sample.suffix, sample.data)
    recording = read_any(path)
    assert recording.events.dtype == EVENT_DTYPE
    assert recording.sensor == sample.sensor
    assert recording.source == str(path)
    assert as_tuples(recording.events) == sample.events


@pytest.mark.parametrize("sample", ALL_SAMPLES, ids=[s.name for s in ALL_SAMPLES])
@pytest.mark.parametrize("chunk_events", [1, 2, 1_000_000])
def test_iterating_gives_the_same_events_in_chunks_of_the_size_asked(
    tmp_path, sample, chunk_events
):
    path = write(tmp_path, sample.name + sample.suffix, sample.data)
    chunks = list(iter_any(path, chunk_events=chunk_events))
    assert all(len(c) == chunk_events for c in chunks[:-1])
    assert 1 <= len(chunks[-1]) <= chunk_events
    assert [e for c in chunks for e in as_tuples(c)] == sample.events


def test_skipped_events_are_counted(tmp_path):
    raw = samples.evt3_sample(HD)
    stats = prophesee.PropheseeStats()
    prophesee.read_prophesee(write(tmp_path, "a.raw", raw.data), stats=stats)
    assert stats.events == len(raw.events)
    assert stats.skipped() == {"trigger": 1}  # one EXT_TRIGGER word

    atis = samples.es_atis_sample()
    es_stats = event_stream.EventStreamStats()
    list(event_stream.iter_event_stream(write(tmp_path, "a.es", atis.data), stats=es_stats))
    assert es_stats.events == len(atis.events) == 3
    assert es_stats.skipped() == {"exposure": 2}


def test_the_header_says_format_sensor_and_data_offset(tmp_path):
    for sample in ALL_SAMPLES:
        if sample.kind == "es":
            continue
        path = write(tmp_path, sample.name + sample.suffix, sample.data)
        header = prophesee.read_prophesee_header(path)
        assert (header.kind, header.sensor) == (sample.kind, sample.sensor)
        assert prophesee.prophesee_sensor(path) == sample.sensor
        assert prophesee.detect_prophesee(path) == sample.kind
        text_end = sample.data.index(b"\n% end\n") + 7 if sample.kind != "dat" else None
        if text_end is not None:
            assert header.data_offset == header.records_offset == text_end
    es = samples.es_dvs_sample()
    header = event_stream.read_event_stream_header(write(tmp_path, "a.es", es.data))
    assert (header.version, header.stream_type, header.sensor) == ("2.0.0", "dvs", VGA)
    assert event_stream.is_event_stream(es.data[:16])


# --- files written by the library round-trip ---


def synthetic(count: int, sensor: SensorSize, span_us: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_events(
        np.sort(rng.integers(0, span_us, count)),
        rng.integers(0, sensor.width, count),
        rng.integers(0, sensor.height, count),
        rng.integers(0, 2, count),
    )


def faery_write(path, kind: str, events: np.ndarray, sensor: SensorSize, zero_t0=False):
    """Write ``events`` with faery's own encoders (what its users' files look like)."""
    import faery
    from faery import dat, es, evt

    packed = np.zeros(len(events), dtype=faery.EVENTS_DTYPE)
    packed["t"], packed["x"] = events["timestamp"], events["x"]
    packed["y"], packed["on"] = events["y"], events["polarity"].astype(bool)
    if kind == "es":
        packed["y"] = sensor.height - 1 - packed["y"]  # Event Stream counts y from the bottom
        with es.Encoder(str(path), "dvs", zero_t0, tuple(sensor)) as encoder:
            encoder.write(packed)
    elif kind == "dat":
        records = packed.astype(
            [("t", "=u8"), ("x", "=u2"), ("y", "=u2"), ("payload", "u1")], casting="unsafe"
        )
        with dat.Encoder(str(path), "dat2", "cd", zero_t0, tuple(sensor)) as encoder:
            encoder.write(records)
    else:
        with evt.Encoder(str(path), kind, zero_t0, tuple(sensor), True) as encoder:
            encoder.write({"events": packed})


FORMATS = [("evt2", ".raw"), ("evt3", ".raw"), ("dat", ".dat"), ("es", ".es")]


@pytest.mark.parametrize("kind,suffix", FORMATS)
@pytest.mark.parametrize("sensor", [VGA, HD], ids=str)
def test_files_written_by_faery_round_trip(tmp_path, kind, suffix, sensor):
    # 40 s: past the 16.8 s wrap of EVT 3.0's 24-bit time
    events = synthetic(30_000, sensor, span_us=40_000_000)
    path = tmp_path / f"written{suffix}"
    faery_write(path, kind, events, sensor)
    recording = read_any(path)
    assert recording.sensor == sensor
    assert np.array_equal(recording.events, events)
    chunks = list(iter_any(path, chunk_events=7_000))
    assert [len(c) for c in chunks] == [7_000] * 4 + [2_000]
    assert np.array_equal(np.concatenate(chunks), events)


@pytest.mark.parametrize("kind,suffix", [("evt3", ".raw"), ("dat", ".dat")])
def test_a_t0_in_the_header_is_added_back(tmp_path, kind, suffix):
    events = synthetic(1_000, VGA, span_us=1_000_000)
    events["timestamp"] += 5_000_000_000  # faery writes 0-based times and '% t0 ...'
    path = tmp_path / f"shifted{suffix}"
    faery_write(path, kind, events, VGA, zero_t0=True)
    assert b"t0" in path.read_bytes()[:200].lower()
    assert np.array_equal(read_any(path).events, events)


def test_a_file_without_events_is_an_empty_recording(tmp_path):
    path = write(tmp_path, "empty.raw", samples.raw_header("evt3", HD))
    recording = prophesee.read_prophesee(path)
    assert len(recording) == 0 and recording.sensor == HD
    assert list(prophesee.iter_prophesee(path)) == []


# --- the sensor: from the header, the camera generation, or the caller ---


def evt2_without_size(extra_lines: str) -> bytes:
    data = samples.evt2_sample(VGA).data
    words = data[data.index(b"% end\n") + 6 :]
    return f"% evt 2.0\n{extra_lines}% end\n".encode() + words


@pytest.mark.parametrize(
    "lines,sensor",
    [
        ("% generation 3.1\n", VGA),
        ("% sensor_generation 4.2\n", HD),
        ("% plugin_name hal_plugin_gen31_fx3\n", VGA),
        ("% plugin_name hal_plugin_imx636_evk4\n", HD),
    ],
)
def test_without_a_size_the_camera_generation_names_the_sensor(tmp_path, lines, sensor):
    path = write(tmp_path, "a.raw", evt2_without_size(lines))
    assert prophesee.read_prophesee(path).sensor == sensor


def test_without_a_size_or_a_generation_the_caller_names_the_sensor(tmp_path):
    path = write(tmp_path, "a.raw", evt2_without_size("% serial_number 00ca0009\n"))
    with pytest.raises(FormatError, match="names no sensor size.*sensor="):
        prophesee.read_prophesee(path)
    assert prophesee.read_prophesee(path, sensor=VGA).sensor == VGA
    assert prophesee.prophesee_sensor(path, VGA) == VGA
    # the header's size wins over the caller's
    sized = write(tmp_path, "b.raw", samples.evt2_sample(HD).data)
    assert prophesee.read_prophesee(sized, sensor=VGA).sensor == HD


# --- bad files: FormatError naming the file ---


def raises_format_error(path, match: str):
    with pytest.raises(FormatError, match=match) as caught:
        read_any(path)
    assert caught.value.source == str(path)
    with pytest.raises(FormatError, match=match):
        list(iter_any(path))


@pytest.mark.parametrize("sample", [s for s in ALL_SAMPLES if s.kind != "es"], ids=lambda s: s.name)
def test_a_file_cut_inside_a_word_is_truncated(tmp_path, sample):
    path = write(tmp_path, "cut" + sample.suffix, sample.data[:-1])
    raises_format_error(path, "truncated")


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty file"),
        (b"% evt 3.0\n% format EVT3;height=720;wid", "inside the '%' text header"),
        (b"\x00\x01binary", "no '%' text header"),
        (b"% evt 2.1\n% geometry 640x480\n% end\n" + bytes(8), "EVT 2.1: not supported"),
        (b"% format EVT4;height=1;width=1\n% end\n", "encoding 'EVT4': not supported"),
        (b"% camera_integrator_name Prophesee\n% end\n", "names no encoding"),
        (b"% evt 3.0\n% geometry 40000x720\n% end\n", "sensor 40000x720: each side"),
        (
            samples.raw_header("evt3", HD) + samples.evt3_word(samples.ADDR_Y, 0x25) + b"\n\x00",
            "starts like a '%' header line",
        ),
    ],
    ids=[
        "empty",
        "cut-header",
        "binary",
        "evt21",
        "unknown-evt",
        "no-encoding",
        "huge-sensor",
        "percent-data",
    ],
)
def test_bad_raw_files_raise_format_error(tmp_path, data, match):
    raises_format_error(write(tmp_path, "bad.raw", data), match)


@pytest.mark.parametrize(
    "tail,match",
    [
        (b"", "before the DAT event type"),
        (bytes([0x0E, 8]), "external trigger events"),
        (bytes([0x42, 8]), "event type 0x42 not supported"),
        (bytes([0x0C, 16]), "event size 16"),
    ],
)
def test_bad_dat_type_bytes_raise_format_error(tmp_path, tail, match):
    header = samples.dat_header(VGA)[:-2]
    raises_format_error(write(tmp_path, "bad.dat", header + tail), match)


def test_a_dat_file_without_its_version_raises_format_error(tmp_path):
    data = samples.dat_sample(VGA).data.replace(b"% Version 2\n", b"")
    raises_format_error(write(tmp_path, "old.dat", data), "version")


@pytest.mark.parametrize(
    "data,match",
    [
        (b"", "empty file"),
        (b"Event Strea", "not the Event Stream magic"),
        (b"Event Stream\x01\x00\x00\x01" + bytes(4), "version 1.0.0 not supported"),
        (b"Event Stream\x02\x00\x00\x00", "generic events: not supported"),
        (b"Event Stream\x02\x00\x00\x04" + bytes(4), "color events: not supported"),
        (b"Event Stream\x02\x00\x00\x01\x80", "inside the Event Stream header"),
        (b"Event Stream\x02\x00\x00\x01" + bytes(4), "sensor 0x0: each side must be"),
        (b"Event Stream\x02\x00\x00\x01\xf0\xf0\x10\x00", "sensor 61680x16: each side"),
    ],
    ids=["empty", "magic", "version", "generic", "color", "cut-header", "no-pixels", "huge"],
)
def test_bad_event_stream_files_raise_format_error(tmp_path, data, match):
    raises_format_error(write(tmp_path, "bad.es", data), match)


def test_events_outside_the_sensor_raise_format_error_naming_the_decoder(tmp_path):
    header = samples.raw_header("evt2", VGA)
    words = samples.evt2_word(samples.EVT2_TIME_HIGH, 1) + samples.evt2_cd(1, 0, 700, 5)
    raises_format_error(write(tmp_path, "wide.raw", header + words), "x overflow.*700")
    dat = samples.dat_header(VGA) + samples.dat_record(1, 3, 480, 1)
    raises_format_error(write(tmp_path, "tall.dat", dat), "y overflow")
    es = samples.es_header(1, VGA) + samples.es_dvs_event(3, 640, 0, 1)
    raises_format_error(write(tmp_path, "wide.es", es), "x overflow")


@pytest.mark.parametrize("sample", ALL_SAMPLES, ids=[s.name for s in ALL_SAMPLES])
def test_damaged_files_raise_only_the_readers_errors(tmp_path, sample):
    """Bytes overwritten anywhere (the text header included) or cut anywhere: a
    reader returns checked events or raises FormatError / EventValidationError."""
    rng = np.random.default_rng(len(sample.data))
    path = tmp_path / ("damaged" + sample.suffix)
    for case in range(150):
        data = bytearray(sample.data)
        if case % 3 == 0:
            data = data[: rng.integers(0, len(data))]
        else:
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        path.write_bytes(bytes(data))
        try:
            recording = read_any(path)
        except EventError:
            continue
        assert recording.events.dtype == EVENT_DTYPE
        assert np.all(recording.events["x"] < recording.sensor.width)
        assert np.all(recording.events["y"] < recording.sensor.height)
        assert np.all(np.diff(recording.events["timestamp"]) >= 0)


class PanicException(BaseException):
    """Stands for pyo3's PanicException, which a Rust panic raises (a BaseException)."""


def test_library_errors_and_panics_become_format_errors():
    for error in (RuntimeError("x overflow"), OSError("short read"), PanicException("todo!()")):
        with pytest.raises(FormatError, match="f.raw: after event 3: decoding RAW: .*") as caught:
            with faery_chunks.library_errors("f.raw", lambda: "after event 3", "decoding RAW"):
                raise error
        assert caught.value.__cause__ is error
    with pytest.raises(KeyboardInterrupt):  # other BaseExceptions pass
        with faery_chunks.library_errors("f.raw", lambda: "", "decoding"):
            raise KeyboardInterrupt


# --- the sensors reach the models ---


@pytest.mark.parametrize("sensor", [VGA, HD, ATIS], ids=str)
@pytest.mark.parametrize("target", [SensorSize(34, 34), SensorSize(128, 128)], ids=str)
def test_prophesee_sensors_fill_the_model_inputs(tmp_path, sensor, target):
    events = synthetic(20_000, sensor, span_us=1_000_000)
    path = tmp_path / "scene.raw"
    faery_write(path, "evt3", events, sensor)
    recording = prophesee.read_prophesee(path)
    adapter = SensorAdapter(recording.sensor, target)
    assert adapter.coverage >= 0.9  # 0.94 for 128x128 (4 empty rows top and bottom), else 1
    assert adapter.coverage >= MIN_SENSOR_COVERAGE
    adapted = adapter(recording.events)
    assert 0 < len(adapted) < len(events)  # the edges beyond the integer scale are cropped
    assert adapted["x"].min() >= 0 and adapted["x"].max() < target.width
    assert adapted["y"].min() >= 0 and adapted["y"].max() < target.height
    assert np.all(np.diff(adapted["timestamp"]) >= 0)
