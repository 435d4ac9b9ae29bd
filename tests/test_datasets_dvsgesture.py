import pickle
import shutil

import numpy as np
import pytest

from core.events import EVENT_DTYPE, SensorSize, make_events
from replay.datasets import DatasetLayoutError, DVSGesture, open_dataset
from replay.datasets.cache import (
    CACHE_FORMAT_VERSION,
    SourceStamp,
    cache_file_for,
    write_segment_cache,
)
from replay.datasets.dvsgesture import CACHE_NAMESPACE
from replay.formats.aedat3 import read_aedat3
from replay.formats.aedat3_writer import write_aedat3
from replay.formats.gesture_labels import read_gesture_labels
from replay.formats.gesture_labels_writer import write_gesture_labels
from tests.synthetic_datasets import moving_blob_events, write_dvsgesture_folder


@pytest.fixture
def folder(tmp_path):
    """2 users x 2 lightings x 3 gestures; user 2 is the test user."""
    return write_dvsgesture_folder(tmp_path / "DvsGesture", seed=7)


def cache_file(dataset, name):
    return cache_file_for(dataset.cache_dir, CACHE_NAMESPACE, dataset.root / f"{name}.aedat")


@pytest.mark.parametrize("split", ["train", "test"])
def test_loads_labelled_segments_with_their_events(folder, tmp_path, split):
    dataset = DVSGesture(folder.root, split, cache_dir=tmp_path / "cache")
    expected = folder.segments(split)
    assert len(dataset) == len(expected) == 6
    assert dataset.sensor == SensorSize(128, 128)
    assert len(dataset.class_names) == 11
    np.testing.assert_array_equal(dataset.labels, [s.label for s in expected])
    for i, want in enumerate(expected):
        sample = dataset[i]
        assert sample.events.dtype == EVENT_DTYPE
        assert len(sample) == want.event_count
        assert (sample.start_us, sample.end_us) == (want.start_us, want.end_us)
        t = sample.events["timestamp"]
        assert t[0] == want.start_us and t[-1] < want.end_us and np.all(np.diff(t) >= 0)
        assert sample.label == want.label
        assert "segment" in sample.source and ".aedat" in sample.source
    users = {2} if split == "test" else {1}
    assert {int(s.path.name[4:6]) for s in dataset.sources} == users
    assert dataset[-1].end_us == expected[-1].end_us
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_segments_hold_exactly_the_events_inside_their_labels(folder, tmp_path):
    """Independent of the generator's counts: slice the decoded recording by hand."""
    dataset = DVSGesture(folder.root, "train", cache_dir=tmp_path / "cache")
    recording = read_aedat3(folder.root / "user01_fluorescent.aedat").events
    rows = read_gesture_labels(folder.root / "user01_fluorescent_labels.csv")
    for i, row in enumerate(rows):
        t = recording["timestamp"]
        inside = recording[(t >= row.start_us) & (t < row.end_us)]
        np.testing.assert_array_equal(dataset[i].events, inside)


def test_all_classes_appear_in_a_larger_folder(tmp_path):
    folder = write_dvsgesture_folder(
        tmp_path / "g", users=(1, 24), gestures_per_recording=6, events_per_gesture=200, seed=1
    )
    train = DVSGesture(folder.root, "train", cache_dir=tmp_path / "cache")
    test = DVSGesture(folder.root, "test", cache_dir=tmp_path / "cache")
    assert set(train.labels) | set(test.labels) == set(range(11))
    assert len(train) + len(test) == 24


def test_second_load_uses_the_cache(folder, tmp_path):
    first = DVSGesture(folder.root, "train", cache_dir=tmp_path / "cache")
    counts = [len(s) for s in first]
    assert first.cache_stats.builds == 2 and first.cache_stats.hits == 0
    path = cache_file(first, "user01_fluorescent")
    mtime = path.stat().st_mtime_ns

    second = DVSGesture(folder.root, "train", cache_dir=tmp_path / "cache")
    assert [len(s) for s in second] == counts
    assert second.cache_stats.builds == 0 and second.cache_stats.hits == 2
    assert path.stat().st_mtime_ns == mtime
    # Cache files are compact: 7 bytes per event plus a small header.
    assert path.stat().st_size < 7 * sum(counts[:3]) + 2048


def test_cache_is_rebuilt_when_the_recording_changes(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    DVSGesture(folder.root, "train", cache_dir=cache_dir).prepare()
    recording = folder.root / "user01_fluorescent.aedat"
    segment = folder.recording("user01_fluorescent").segments[0]
    events = read_aedat3(recording).events
    t = events["timestamp"]
    # Drop every other event of the first gesture and re-record the file.
    inside = np.flatnonzero((t >= segment.start_us) & (t < segment.end_us))
    write_aedat3(recording, np.delete(events, inside[1::2]))

    again = DVSGesture(folder.root, "train", cache_dir=cache_dir)
    assert len(again[0]) == len(inside) - len(inside[1::2])
    assert again.cache_stats.builds == 1
    assert again.cache_stats.reasons[0].startswith("stale")
    again.prepare()
    assert again.cache_stats.hits == 1  # the other recording still came from cache


def test_cache_is_rebuilt_when_the_labels_change(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    before = DVSGesture(folder.root, "train", cache_dir=cache_dir)
    full = len(before[0])
    labels = folder.root / "user01_fluorescent_labels.csv"
    rows = read_gesture_labels(labels)
    middle = (rows[0].start_us + rows[0].end_us) // 2
    rows[0] = rows[0]._replace(end_us=middle)
    write_gesture_labels(labels, rows)

    after = DVSGesture(folder.root, "train", cache_dir=cache_dir)
    assert after[0].end_us == middle
    assert 0 < len(after[0]) < full
    assert after.cache_stats.builds == 1


def test_cache_of_another_version_is_rebuilt(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    dataset = DVSGesture(folder.root, "train", cache_dir=cache_dir)
    want = dataset[0].events
    recording = folder.root / "user01_fluorescent.aedat"
    sources = [SourceStamp.of(recording), SourceStamp.of(dataset.label_files[0])]
    # A valid file of another version, with different events, at the same place.
    fake = make_events([1], [0], [0], [0])
    rows = folder.recording("user01_fluorescent").segments
    write_segment_cache(
        cache_file(dataset, "user01_fluorescent"),
        sources,
        dataset.sensor,
        [s.start_us for s in rows],
        [s.end_us for s in rows],
        [s.label for s in rows],
        [fake] * len(rows),
        version=CACHE_FORMAT_VERSION + 1,
    )
    again = DVSGesture(folder.root, "train", cache_dir=cache_dir)
    np.testing.assert_array_equal(again[0].events, want)
    assert again.cache_stats.builds == 1
    assert again.cache_stats.reasons[0].startswith("version")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped_event_byte"])
def test_corrupt_cache_is_rebuilt(folder, tmp_path, damage):
    cache_dir = tmp_path / "cache"
    dataset = DVSGesture(folder.root, "train", cache_dir=cache_dir)
    dataset.prepare()
    want = [dataset[i].events for i in range(3)]
    path = cache_file(dataset, "user01_fluorescent")
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(np.random.default_rng(0).bytes(len(data)))
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[-20] ^= 0x40  # an event byte of the last segment: only the CRC can tell
    path.write_bytes(bytes(data))

    again = DVSGesture(folder.root, "train", cache_dir=cache_dir)
    for i in range(3):
        np.testing.assert_array_equal(again[i].events, want[i])
    assert again.cache_stats.builds == 1
    assert again.cache_stats.reasons[0].startswith("corrupt")
    assert DVSGesture(folder.root, "train", cache_dir=cache_dir).prepare().hits == 2


def test_real_labels_file_with_a_generated_recording(tmp_path, data_dir):
    """The real user01_natural labels (12 rows, class 8 twice) cut a recording
    spanning them into 12 samples."""
    labels_src = data_dir / "dvsgesture" / "user01_natural_labels.csv"
    if not labels_src.exists():
        pytest.skip(f"real data not found: {labels_src}")
    root = tmp_path / "DvsGesture"
    root.mkdir()
    shutil.copy(labels_src, root / "user01_natural_labels.csv")
    rows = read_gesture_labels(root / "user01_natural_labels.csv")
    rng = np.random.default_rng(0)
    parts = [
        moving_blob_events(
            rng, 300, r.start_us, r.end_us, SensorSize(128, 128), (20, 20), (100, 100)
        )
        for r in rows
    ]
    write_aedat3(root / "user01_natural.aedat", np.concatenate(parts))
    (root / "trials_to_train.txt").write_text("user01_natural.aedat\r\n\r\n")
    dataset = open_dataset("dvsgesture", root, "train", cache_dir=tmp_path / "cache")
    assert len(dataset) == 12
    np.testing.assert_array_equal(dataset.labels, [0, 1, 2, 4, 3, 5, 6, 7, 7, 8, 9, 10])
    assert [len(s) for s in dataset] == [300] * 12


def test_layout_errors_name_the_missing_path(folder, tmp_path):
    (folder.root / "trials_to_test.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="trials_to_test.txt"):
        DVSGesture(folder.root, "test", cache_dir=tmp_path)
    (folder.root / "user01_led_labels.csv").unlink()
    with pytest.raises(DatasetLayoutError, match="user01_led_labels.csv"):
        DVSGesture(folder.root, "train", cache_dir=tmp_path)
    (folder.root / "trials_to_train.txt").write_text("user01_led.aedat\nnotes about it\n")
    with pytest.raises(DatasetLayoutError, match="line 2"):
        DVSGesture(folder.root, "train", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        DVSGesture(folder.root, "validation", cache_dir=tmp_path)


def test_dataset_pickles_without_its_memory_maps(folder, tmp_path):
    dataset = DVSGesture(folder.root, "train", cache_dir=tmp_path / "cache")
    want = dataset[1].events
    copy = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(copy[1].events, want)
    assert len(pickle.dumps(dataset)) < 10_000
