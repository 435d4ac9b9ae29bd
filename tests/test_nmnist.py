import numpy as np
import pytest
from conftest import shared_path

from core.events import EVENT_DTYPE, EventValidationError, FormatError, make_events
from replay.formats.nmnist import (
    NMNIST_SENSOR,
    check_nmnist_size,
    decode_nmnist,
    iter_nmnist,
    read_nmnist,
)
from replay.formats.nmnist_writer import encode_nmnist, write_nmnist


def sample_events(count=500, seed=0):
    rng = np.random.default_rng(seed)
    return make_events(
        np.sort(rng.integers(0, 300_000, count)),
        rng.integers(0, 34, count),
        rng.integers(0, 34, count),
        rng.integers(0, 2, count),
    )


def test_bit_layout_of_one_record():
    # x=3, y=33, ON, t=0x5A_BCDE (23 bits: byte2 low 7 bits, byte3, byte4)
    raw = bytes([3, 33, 0x80 | 0x5A, 0xBC, 0xDE])
    (event,) = decode_nmnist(raw, "hand-made")
    assert (event["x"], event["y"], event["polarity"]) == (3, 33, 1)
    assert event["timestamp"] == 0x5ABCDE
    assert encode_nmnist(decode_nmnist(raw)) == raw
    off = decode_nmnist(bytes([0, 0, 0x7F, 0xFF, 0xFF]))
    assert off["polarity"][0] == 0 and off["timestamp"][0] == (1 << 23) - 1


def test_real_single_sample_has_documented_counts():
    path = shared_path("recordings/nmnist_single.bin")
    recording = read_nmnist(path)
    events = recording.events
    assert recording.sensor == NMNIST_SENSOR and events.dtype == EVENT_DTYPE
    assert len(events) == 4325 == check_nmnist_size(path)
    assert 310_000 <= events["timestamp"][-1] <= 312_000  # ~311 ms
    assert set(np.unique(events["polarity"])) == {0, 1}
    # written back, the bytes are the original file's
    assert encode_nmnist(events) == path.read_bytes()


def test_all_real_training_samples_load_inside_34x34():
    root = shared_path("nmnist/Train")
    files = sorted(root.glob("*/*.bin"))
    assert len(files) == 1000
    for path in files:
        events = read_nmnist(path).events
        assert len(events) > 1000, path
        assert events["x"].max() < 34 and events["y"].max() < 34, path
        assert (np.diff(events["timestamp"]) >= 0).all(), path


def test_write_read_round_trip_is_bit_exact(tmp_path):
    events = sample_events()
    events["timestamp"][10:13] = events["timestamp"][10]  # equal timestamps are fine
    path = tmp_path / "sample.bin"
    write_nmnist(path, events)
    assert path.stat().st_size == 5 * len(events)
    np.testing.assert_array_equal(read_nmnist(path).events, events)
    chunks = list(iter_nmnist(path, chunk_events=77))
    assert [len(c) for c in chunks[:-1]] == [77] * (len(chunks) - 1)
    np.testing.assert_array_equal(
        np.concatenate([c.view("V16") for c in chunks]).view(EVENT_DTYPE), events
    )


def test_length_not_a_multiple_of_five_names_the_partial_record(tmp_path):
    path = tmp_path / "cut.bin"
    write_nmnist(path, sample_events(10))
    path.write_bytes(path.read_bytes()[:-2])  # 9 whole records + 3 bytes
    with pytest.raises(FormatError) as info:
        read_nmnist(path)
    assert info.value.where == "byte 45" and str(path) in str(info.value)
    with pytest.raises(FormatError, match="byte 45"):
        list(iter_nmnist(path))
    with pytest.raises(FormatError, match="byte 45"):
        decode_nmnist(path.read_bytes(), str(path))


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match="empty file") as info:
        read_nmnist(path)
    assert info.value.where == "byte 0"


def test_coordinate_outside_34x34_names_the_event(tmp_path):
    raw = bytearray(encode_nmnist(sample_events(20)))
    raw[5 * 7] = 34  # x of event 7
    path = tmp_path / "wide.bin"
    path.write_bytes(bytes(raw))
    with pytest.raises(EventValidationError) as info:
        read_nmnist(path)
    assert info.value.where == "event 7"
    assert "x=34" in str(info.value) and "byte 35" in str(info.value)
    assert str(path) in str(info.value)
    # A larger sensor accepts it.
    assert len(read_nmnist(path, sensor=NMNIST_SENSOR._replace(width=40))) == 20


def test_timestamp_going_backwards_names_the_event_even_across_chunks(tmp_path):
    events = sample_events(12)
    events["timestamp"] = np.arange(12) * 100
    events["timestamp"][6] = 50  # backwards at event 6, the first of the third chunk of 3
    path = tmp_path / "back.bin"
    path.write_bytes(_encode_unchecked(events))
    with pytest.raises(EventValidationError) as info:
        read_nmnist(path)
    assert info.value.where == "event 6" and "goes backwards" in str(info.value)
    with pytest.raises(EventValidationError) as info:
        list(iter_nmnist(path, chunk_events=3))
    assert info.value.where == "event 6"


def test_writer_refuses_what_the_format_cannot_hold(tmp_path):
    events = sample_events(5)
    late = events.copy()
    late["timestamp"][-1] = 1 << 23
    with pytest.raises(EventValidationError, match="event 4"):
        write_nmnist(tmp_path / "late.bin", late)
    outside = events.copy()
    outside["y"][2] = 34
    with pytest.raises(EventValidationError, match="event 2"):
        write_nmnist(tmp_path / "outside.bin", outside)
    assert not (tmp_path / "outside.bin").exists()


def _encode_unchecked(events: np.ndarray) -> bytes:
    """Records without the writer's checks, to make files the reader must refuse."""
    t = events["timestamp"]
    records = np.empty((len(events), 5), dtype=np.uint8)
    records[:, 0], records[:, 1] = events["x"], events["y"]
    records[:, 2] = (events["polarity"].astype(np.uint8) << 7) | (t >> 16).astype(np.uint8)
    records[:, 3], records[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    return records.tobytes()
