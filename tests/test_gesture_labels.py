"""DVS128 Gesture labels CSV: the real file, round trip, errors with line numbers."""

from __future__ import annotations

import pytest
from conftest import shared_path

from core.events import FormatError
from core.labels import LabelSegment
from replay.formats.gesture_labels import GESTURE_CLASS_NAMES, read_gesture_labels
from replay.formats.gesture_labels_writer import write_gesture_labels


def test_real_labels_file_parses():
    segments = read_gesture_labels(shared_path("dvsgesture/user01_natural_labels.csv"))
    assert len(segments) == 12
    # The file's class ids 1 and 11 are labels 0 and 10.
    assert segments[0] == LabelSegment(0, 53_036_986, 59_508_469)
    assert segments[-1] == LabelSegment(10, 171_367_247, 177_991_967)
    assert sorted({s.label for s in segments}) == list(range(11))  # class 8 twice
    assert all(a.end_us <= b.start_us for a, b in zip(segments, segments[1:], strict=False))
    assert GESTURE_CLASS_NAMES[segments[0].label] == "hand clap"
    assert GESTURE_CLASS_NAMES[segments[-1].label] == "other gestures"
    assert 5_000_000 < segments[0].duration_us < 8_000_000


def test_class_names():
    assert len(GESTURE_CLASS_NAMES) == 11
    assert GESTURE_CLASS_NAMES[3] == "right arm clockwise"  # class id 4
    assert GESTURE_CLASS_NAMES[6] == "left arm counter clockwise"  # class id 7


def test_round_trip(tmp_path):
    segments = [LabelSegment(2, 0, 10), LabelSegment(10, 20, 2**40)]
    path = tmp_path / "user30_led_labels.csv"
    write_gesture_labels(path, segments)
    assert path.read_text() == "class,startTime_usec,endTime_usec\n3,0,10\n11,20,1099511627776\n"
    assert read_gesture_labels(path) == segments
    for label in (-1, 11):
        with pytest.raises(ValueError, match="segment 0"):
            write_gesture_labels(path, [LabelSegment(label, 0, 1)])


def test_crlf_bom_and_blank_lines_are_accepted(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(b"\xef\xbb\xbfclass, startTime_usec ,endTime_usec\r\n2, 5, 9\r\n\r\n")
    assert read_gesture_labels(path) == [LabelSegment(1, 5, 9)]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("", "line 1", "expected the header"),
        ("class,start,end\n1,2,3\n", "line 1", "expected the header"),
        ("class,startTime_usec,endTime_usec\n1,2\n", "line 2", "expected 3 comma-separated"),
        ("class,startTime_usec,endTime_usec\n1,2,3\nx,2,3\n", "line 3", "class 'x' is not an"),
        ("class,startTime_usec,endTime_usec\n1,2.5,3\n", "line 2", "startTime_usec '2.5'"),
        ("class,startTime_usec,endTime_usec\n0,2,3\n", "line 2", "class 0 is outside 1-11"),
        ("class,startTime_usec,endTime_usec\n12,2,3\n", "line 2", "class 12 is outside"),
        ("class,startTime_usec,endTime_usec\n1,5,5\n", "line 2", "end 5 µs is not after start"),
        ("class,startTime_usec,endTime_usec\n1,9,5\n", "line 2", "end 5 µs is not after start"),
        ("class,startTime_usec,endTime_usec\n1,-9,5\n", "line 2", "start -9 µs is negative"),
    ],
)
def test_bad_files_name_the_line(tmp_path, text, where, message):
    path = tmp_path / "bad_labels.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FormatError, match=rf"bad_labels\.csv: {where}: .*{message}"):
        read_gesture_labels(path)


def test_binary_and_huge_files_are_refused(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"class,startTime_usec,endTime_usec\n1,2,3\n\xff\xfe\n")
    with pytest.raises(FormatError, match="line 3: not UTF-8"):
        read_gesture_labels(path)
    path.write_bytes(b"#" * (2 << 20))
    with pytest.raises(FormatError, match="far too large"):
        read_gesture_labels(path)
