"""`stcsnn inspect`, run as the installed console command on real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from core.events import FormatError, SensorSize, make_events
from core.labels import LabelSegment
from replay.formats import detect_format, labels_for, read_recording
from replay.formats.aedat2_writer import write_aedat2
from replay.formats.aedat3_writer import imu6_packet, special_packet, write_aedat3
from replay.formats.gesture_labels_writer import write_gesture_labels

STCSNN = Path(sys.executable).parent / "stcsnn"


def inspect(*args: str) -> subprocess.CompletedProcess:
    if not STCSNN.exists():
        pytest.skip(f"console command not installed next to {sys.executable}")
    return subprocess.run(
        [str(STCSNN), "inspect", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def inspect_json(path) -> dict:
    result = inspect(path, "--json")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()  # exactly one JSON object
    return json.loads(line)


def dvs128_events(count=3_000, duration_us=10_000_000, seed=0):
    rng = np.random.default_rng(seed)
    return make_events(
        np.sort(rng.integers(0, duration_us, count)),
        rng.integers(0, 128, count),
        rng.integers(0, 128, count),
        rng.integers(0, 2, count),
    )


def test_real_aedat4_recording():
    path = shared_path("recordings/dvxplorer_320x240.aedat4")
    info = inspect_json(path)
    assert info["format"] == "aedat4"
    assert (info["width"], info["height"], info["events"]) == (320, 240, 111_954)
    assert info["t_last_us"] - info["t_first_us"] == info["duration_us"]
    assert 0.58e6 < info["duration_us"] < 0.60e6
    assert 180_000 < info["event_rate_per_s"] < 200_000
    assert 0.3 < info["polarity_on_fraction"] < 0.7
    assert info["streams"] == {"events": "events", "imu": "imu", "triggers": "triggers"}
    assert info["stream_elements"]["imu"] == 475
    assert info["skipped"] == {"imu": 475, "triggers": 0}  # the other streams, by kind
    assert "labels" not in info
    text = inspect(path)
    assert text.returncode == 0
    assert "320x240" in text.stdout and "111,954" in text.stdout and "imu" in text.stdout
    assert "skipped     imu 475" in text.stdout


def test_real_nmnist_sample_in_its_digit_folder():
    folder = shared_path("nmnist/Train/7")
    path = sorted(folder.glob("*.bin"))[0]
    info = inspect_json(path)
    assert (info["format"], info["width"], info["height"]) == ("nmnist", 34, 34)
    assert info["events"] == path.stat().st_size // 5
    assert info["labels"] == [
        {"class_id": 7, "name": "7", "start_us": info["t_first_us"], "end_us": info["t_last_us"]}
    ]
    assert info["labels_source"] == "folder"
    assert info["skipped"] == {}  # the N-MNIST reader skips nothing
    single = inspect_json(shared_path("recordings/nmnist_single.bin"))
    assert single["events"] == 4_325 and "labels" not in single


def test_real_dvs_sign_sample():
    path = shared_path("dvs_sign/train/11/0.npz")
    info = inspect_json(path)
    assert (info["format"], info["width"], info["height"]) == ("dvs_sign", 128, 128)
    assert info["labels"][0]["class_id"] == 11
    assert info["events"] == len(np.load(path)["t_us"])
    assert info["skipped"] == {}


def test_gesture_recording_with_its_labels_file(tmp_path):
    segments = [LabelSegment(0, 1_000_000, 3_000_000), LabelSegment(10, 4_000_000, 9_000_000)]
    write_aedat3(tmp_path / "user01_natural.aedat", dvs128_events())
    write_gesture_labels(tmp_path / "user01_natural_labels.csv", segments)
    info = inspect_json(tmp_path / "user01_natural.aedat")
    assert (info["format"], info["width"], info["height"], info["events"]) == (
        "aedat3",
        128,
        128,
        3_000,
    )
    # class_id as in the CSV: label + 1
    assert [(s["class_id"], s["start_us"], s["end_us"]) for s in info["labels"]] == [
        (1, 1_000_000, 3_000_000),
        (11, 4_000_000, 9_000_000),
    ]
    assert info["labels"][0]["name"] == "hand clap"
    assert info["labels_source"].endswith("user01_natural_labels.csv")
    text = inspect(tmp_path / "user01_natural.aedat").stdout
    assert "2 segments" in text and "hand clap" in text


def test_cifar10dvs_file_in_its_class_folder(tmp_path):
    folder = tmp_path / "cat"
    folder.mkdir()
    write_aedat2(folder / "cifar10_cat_0.aedat", dvs128_events(500), SensorSize(128, 128))
    info = inspect_json(folder / "cifar10_cat_0.aedat")
    assert (info["format"], info["events"], info["labels"][0]["class_id"]) == ("aedat2", 500, 3)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.bin", b"", "empty file"),
        ("cut.bin", b"\x01\x02\x00\x00\x05\x07", "byte 5"),
        ("noise.aedat4", b"#!AER-DAT4.0\r\n\xff\xff\xff\x7f", "byte 14"),
        ("notes.txt", b"hello", "unknown event file format"),
        ("old.aedat", b"#!AER-DAT1.0\r\n", "version '1.0' is not supported"),
    ],
)
def test_bad_files_give_one_line_and_exit_1(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    result = inspect(path)
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert str(path) in line and message in line and "Traceback" not in result.stderr


def test_missing_file(tmp_path):
    result = inspect(tmp_path / "nothing.aedat4")
    assert result.returncode == 1
    assert "nothing.aedat4" in result.stderr and "Traceback" not in result.stderr


def test_inspect_does_not_import_torch():
    path = shared_path("recordings/nmnist_single.bin")
    code = (
        "import sys; from stcsnn.cli import main; code = main(['inspect', '--json', sys.argv[1]]);"
        "print('torch' in sys.modules, 'dv_processing' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"


def test_detection_trusts_content_before_extension(tmp_path):
    real = shared_path("recordings/dvxplorer_320x240.aedat4")
    renamed = tmp_path / "camera.bin"
    shutil.copy(real, renamed)
    assert detect_format(renamed) == "aedat4"
    info = inspect_json(renamed)
    assert info["events"] == 111_954
    with pytest.raises(FormatError, match="supported: AEDAT 3.1"):
        detect_format(_write(tmp_path / "x.dat", b"\x00" * 10))
    assert labels_for(renamed) is None


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_dispatch_reads_every_format_the_same_way(tmp_path):
    from replay.formats import iter_recording, read_recording
    from replay.formats.aedat4_writer import write_aedat4
    from replay.formats.nmnist_writer import write_nmnist

    events = dvs128_events(2_000)
    small = events.copy()
    small["x"] %= 34
    small["y"] %= 34
    small["timestamp"] //= 4  # within N-MNIST's 23-bit µs
    (tmp_path / "5").mkdir()
    files = {
        "aedat3": (tmp_path / "a.aedat", events),
        "aedat2": (tmp_path / "b.aedat", events),
        "aedat4": (tmp_path / "c.aedat4", events),
        "nmnist": (tmp_path / "5" / "d.bin", small),
        "dvs_sign": (tmp_path / "5" / "e.npz", events),
    }
    write_aedat3(files["aedat3"][0], events)
    write_aedat2(files["aedat2"][0], events, SensorSize(128, 128))
    write_aedat4(files["aedat4"][0], events, SensorSize(128, 128))
    write_nmnist(files["nmnist"][0], small)
    np.savez_compressed(
        files["dvs_sign"][0],
        t_us=events["timestamp"].astype(np.uint32),
        x=events["x"].astype(np.uint8),
        y=events["y"].astype(np.uint8),
        p=events["polarity"].astype(np.uint8),
    )
    for name, (path, written) in files.items():
        assert detect_format(path) == name
        recording = read_recording(path)
        np.testing.assert_array_equal(recording.events, written, err_msg=name)
        sensor, chunks = iter_recording(path, chunk_events=300)
        assert sensor == recording.sensor, name
        sizes = [len(chunk) for chunk in chunks]
        assert sum(sizes) == len(written) and max(sizes) <= 300, name
    assert labels_for(files["nmnist"][0]) == 5 and labels_for(files["dvs_sign"][0]) == 5
    assert labels_for(files["aedat3"][0]) is None


def test_real_nmnist_sample_under_bs2_and_without_extension(tmp_path):
    real = shared_path("recordings/nmnist_single.bin")
    expected = read_recording(real).events
    for name in ("00002.bs2", "00002"):
        copy = tmp_path / name
        shutil.copy(real, copy)
        assert detect_format(copy) == "nmnist"
        info = inspect_json(copy)
        assert (info["format"], info["width"], info["events"], info["skipped"]) == (
            "nmnist",
            34,
            4_325,
            {},
        )
        np.testing.assert_array_equal(read_recording(copy).events, expected)


def test_headerless_files_without_extension_need_nmnist_records(tmp_path):
    """Ten zero bytes are two 'records' at one instant: no sample."""
    for name, content in (("zeros", b"\x00" * 10), ("text", b"hello world\n1234")):
        path = _write(tmp_path / name, content)
        with pytest.raises(FormatError, match="unknown event file format"):
            detect_format(path)


@pytest.mark.parametrize(
    "name, content, what",
    [
        ("rec.h5", b"\x89HDF\r\n\x1a\n" + bytes(64), "HDF5"),
        ("rec.bag", b"#ROSBAG V2.0\n" + bytes(64), "ROS bag"),
    ],
)
def test_recognised_unsupported_formats_are_named(tmp_path, name, content, what):
    path = _write(tmp_path / name, content)
    with pytest.raises(FormatError, match=f"{what}.*: not a format stcsnn reads; supported: AEDAT"):
        detect_format(path)
    result = inspect(path)
    assert result.returncode == 1 and what in result.stderr and "Traceback" not in result.stderr


def test_a_zip_that_is_no_dvs_sign_sample_is_named(tmp_path):
    import zipfile

    path = tmp_path / "notes.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not events")
    with pytest.raises(FormatError, match=r"zip archive \(readme\.txt\) but not a DVS_Sign sample"):
        detect_format(path)


def test_skipped_records_of_a_davis_aedat2_file(tmp_path):
    from tests.test_aedat2_davis import (
        DAVIS240C,
        EXTERNAL_INPUT,
        aps,
        dvs,
        imu_sample,
        jaer_header,
        write_records,
    )

    records = [(dvs(0, 0, 1), 10), *[(a, 11) for a in imu_sample()], (aps(1, 1, 0, 7), 12)]
    records += [(aps(1, 1, 1, 9), 12), (EXTERNAL_INPUT, 13), (dvs(5, 5, 0), 14)]
    path = tmp_path / "davis.aedat"
    write_records(path, jaer_header(DAVIS240C), records)
    info = inspect_json(path)
    assert (info["format"], info["width"], info["height"], info["events"]) == (
        "aedat2",
        240,
        180,
        2,
    )
    assert info["skipped"] == {"special": 1, "aps": 2, "imu": 7, "out_of_sensor": 0}
    text = inspect(path).stdout
    assert "skipped     special 1, aps 2, imu 7" in text and "240x180" in text


def test_skipped_packets_of_an_aedat3_file(tmp_path):
    events = dvs128_events(1_000)
    t = events["timestamp"]
    extras = [special_packet(0, [int(t[0])]), imu6_packet(500, [int(t[500])] * 3)]
    path = tmp_path / "g.aedat"
    write_aedat3(path, events, extra_packets=extras)
    info = inspect_json(path)
    assert info["events"] == 1_000
    assert info["skipped"] == {"invalid": 0, "out_of_sensor": 0, "special": 1, "imu6": 3}


def test_prophesee_and_event_stream_files_are_read_and_replayed(tmp_path):
    """The hand-built byte streams of replay/formats/prophesee_samples.py (EVT 2.0,
    EVT 3.0, DAT, Event Stream) through detection, inspect --json and a folder replay;
    a RAW file under another name is known by its header."""
    from replay.formats import prophesee_samples
    from replay.player import open_replay

    samples = prophesee_samples.all_samples()
    first_sensor = samples[0].sensor
    for sample in samples:
        path = tmp_path / "each" / f"{sample.name}{sample.suffix}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(sample.data)
        if sample.sensor == first_sensor:  # a replay has one sensor
            (tmp_path / "replay").mkdir(exist_ok=True)
            _write(tmp_path / "replay" / path.name, sample.data)
        assert detect_format(path) in ("prophesee_raw", "prophesee_dat", "event_stream")
        result = inspect(path, "--json")
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert (info["width"], info["height"], info["events"]) == (
            *sample.sensor,
            len(sample.events),
        ), sample.name
    raw = next(s for s in samples if s.suffix == ".raw")
    renamed = _write(tmp_path / "renamed.bin", raw.data)
    assert detect_format(renamed) == "prophesee_raw"
    source = open_replay(tmp_path / "replay")
    replayed = sum(
        len(item) for item in source.items(threading.Event()) if isinstance(item, np.ndarray)
    )
    assert replayed == sum(len(s.events) for s in samples if s.sensor == first_sensor) > 0
