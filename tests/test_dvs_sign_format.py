import io
import zipfile

import numpy as np
import pytest
from conftest import shared_path

from core.events import EVENT_DTYPE, EventValidationError, FormatError, make_events
from replay.formats.dvs_sign import DVS_SIGN_SENSOR, read_dvs_sign
from replay.formats.dvs_sign_writer import write_dvs_sign


def columns(count=300, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "t_us": np.sort(rng.integers(0, 4_000_000, count)).astype(np.uint32),
        "x": rng.integers(0, 128, count).astype(np.uint8),
        "y": rng.integers(0, 128, count).astype(np.uint8),
        "p": rng.integers(0, 2, count).astype(np.uint8),
    }


def save(path, arrays):
    np.savez_compressed(path, **arrays)
    return path


def test_real_samples_load_as_stored():
    root = shared_path("dvs_sign/train")
    files = sorted(root.glob("*/*.npz"))
    assert len(files) == 600
    for path in files[::40]:
        recording = read_dvs_sign(path)
        stored = np.load(path)
        events = recording.events
        assert recording.sensor == DVS_SIGN_SENSOR and events.dtype == EVENT_DTYPE
        assert 5_000 <= len(events) <= 130_000
        np.testing.assert_array_equal(events["timestamp"], stored["t_us"])
        np.testing.assert_array_equal(events["x"], stored["x"])
        np.testing.assert_array_equal(events["y"], stored["y"])
        np.testing.assert_array_equal(events["polarity"], stored["p"])


def test_written_sample_reads_back(tmp_path):
    arrays = columns()
    events = read_dvs_sign(save(tmp_path / "s.npz", arrays)).events
    np.testing.assert_array_equal(events["timestamp"], arrays["t_us"])
    np.testing.assert_array_equal(events["y"], arrays["y"])
    np.savez(tmp_path / "plain.npz", **arrays)  # uncompressed members read too
    assert len(read_dvs_sign(tmp_path / "plain.npz")) == 300


def test_missing_array_is_named(tmp_path):
    arrays = columns()
    del arrays["p"]
    path = save(tmp_path / "no_p.npz", arrays)
    with pytest.raises(FormatError, match=r"array\(s\) p missing") as info:
        read_dvs_sign(path)
    assert str(path) in str(info.value)


def test_unequal_lengths(tmp_path):
    arrays = columns()
    arrays["y"] = arrays["y"][:-1]
    with pytest.raises(FormatError, match="differ in length: t_us 300, x 300, y 299, p 300"):
        read_dvs_sign(save(tmp_path / "short.npz", arrays))


@pytest.mark.parametrize(
    "column, value, message",
    [("x", 128, "outside the 128x128 sensor"), ("y", 200, "outside"), ("p", 2, "p is not 0 or 1")],
)
def test_out_of_range_values_name_the_event(tmp_path, column, value, message):
    arrays = columns()
    arrays[column][17] = value
    with pytest.raises(EventValidationError, match=message) as info:
        read_dvs_sign(save(tmp_path / "bad.npz", arrays))
    assert info.value.where == "event 17"


def test_unsorted_timestamps_name_the_event(tmp_path):
    arrays = columns()
    arrays["t_us"][50] = arrays["t_us"][49] - 1
    with pytest.raises(EventValidationError, match="goes backwards") as info:
        read_dvs_sign(save(tmp_path / "unsorted.npz", arrays))
    assert info.value.where == "event 50"


def test_non_integer_array_is_refused(tmp_path):
    arrays = columns()
    arrays["t_us"] = arrays["t_us"].astype(np.float64)
    with pytest.raises(FormatError, match="1-D integer array"):
        read_dvs_sign(save(tmp_path / "float.npz", arrays))


def test_npy_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    """A member whose header claims 10^12 events but holds 300: the reader
    compares the claim with the member's size instead of trusting it."""
    arrays = columns()
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            header = np.lib.format.header_data_from_array_1_0(array)
            if name == "x":
                header["shape"] = (10**12,)
            np.lib.format.write_array_header_1_0(buffer, header)
            buffer.write(array.tobytes())
            archive.writestr(f"{name}.npy", buffer.getvalue())
    with pytest.raises(FormatError, match="header says 1000000000000") as info:
        read_dvs_sign(path)
    assert info.value.where.startswith("byte ")


def test_not_a_zip_empty_and_truncated(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x93NUMPY not a zip at all")
    with pytest.raises(FormatError, match="not a .npz") as info:
        read_dvs_sign(garbage)
    assert info.value.where == "byte 0"
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty file"):
        read_dvs_sign(empty)
    whole = save(tmp_path / "whole.npz", columns()).read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FormatError, match="damaged") as info:
        read_dvs_sign(cut)
    assert str(cut) in str(info.value)


def test_a_decompression_bomb_is_refused_before_inflating(tmp_path):
    """A few tens of KB that inflate to 70 MB of 'valid' events (issue 13: a 390 KB
    file declaring 100 M events read as valid and peaked at 2.3 GB)."""
    count = 10_000_000
    path = tmp_path / "bomb.npz"
    zeros = {name: np.zeros(count, dtype) for name, dtype in
             (("t_us", np.uint32), ("x", np.uint8), ("y", np.uint8), ("p", np.uint8))}  # fmt: skip
    np.savez_compressed(path, **zeros)
    assert path.stat().st_size < 200_000
    with pytest.raises(FormatError, match="claim") as error:
        read_dvs_sign(path)
    assert str(path) in str(error.value)


def _patched_zip(tmp_path, name: str, patch) -> str:
    """A real sample with its zip structures changed by ``patch(bytes) -> bytes``."""
    good = tmp_path / "good.npz"
    save(good, columns())
    path = tmp_path / name
    path.write_bytes(patch(good.read_bytes()))
    return path


def test_zip_features_python_cannot_read_are_format_errors(tmp_path):
    def unknown_method(data: bytes) -> bytes:
        # Compression method 98 (PPMd) in every local and central header.
        data = bytearray(data)
        for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
            at = data.find(signature)
            while at >= 0:
                data[at + offset : at + offset + 2] = (98).to_bytes(2, "little")
                at = data.find(signature, at + 4)
        return bytes(data)

    def undecodable_name(data: bytes) -> bytes:
        # The UTF-8 flag set on a member name that is not UTF-8.
        data = bytearray(data)
        at = data.find(b"PK\x01\x02")
        flags = int.from_bytes(data[at + 8 : at + 10], "little") | 0x800
        data[at + 8 : at + 10] = flags.to_bytes(2, "little")
        name_at = at + 46
        data[name_at] = 0xFF
        return bytes(data)

    for name, patch in (("method.npz", unknown_method), ("name.npz", undecodable_name)):
        path = _patched_zip(tmp_path, name, patch)
        with pytest.raises(FormatError) as error:
            read_dvs_sign(path)
        assert str(path) in str(error.value)


def test_write_dvs_sign_reads_back_exactly_and_refuses_what_it_cannot_hold(tmp_path):
    n = np.arange(500)
    events = make_events(1_000 + 33_333 * (n // 50), n % 128, (n * 7) % 128, n % 2)
    write_dvs_sign(tmp_path / "a.npz", events)
    assert np.array_equal(read_dvs_sign(tmp_path / "a.npz").events, events)
    too_late = make_events([0, 1 << 32], [0, 0], [0, 0], [1, 0])
    with pytest.raises(EventValidationError, match="event 1: timestamp 4294967296"):
        write_dvs_sign(tmp_path / "b.npz", too_late)
    outside = make_events([0, 1], [0, 128], [0, 0], [1, 0])
    with pytest.raises(EventValidationError, match="event 1"):
        write_dvs_sign(tmp_path / "c.npz", outside)
    assert not (tmp_path / "b.npz").exists() and not (tmp_path / "c.npz").exists()
