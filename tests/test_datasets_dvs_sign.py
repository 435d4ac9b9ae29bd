import numpy as np
import pytest
from conftest import shared_path

from core.events import SensorSize
from replay.datasets import DatasetLayoutError, DVSSign, open_dataset
from tests.synthetic_datasets import write_dvs_sign_folder


def test_real_train_folder_loads():
    dataset = DVSSign(shared_path("dvs_sign"), "train")
    assert len(dataset) == 600
    assert dataset.sensor == SensorSize(128, 128)
    assert len(dataset.class_names) == 15
    np.testing.assert_array_equal(np.bincount(dataset.labels), [40] * 15)
    folders = [int(source.path.parent.name) for source in dataset.sources]
    np.testing.assert_array_equal(dataset.labels, folders)
    # Decoding all 600 takes a while: check every 25th sample's events.
    for i in range(0, len(dataset), 25):
        sample = dataset[i]
        assert sample.label == dataset.labels[i]
        assert 5_000 <= len(sample) <= 128_000
        t = sample.events["timestamp"]
        assert np.all(np.diff(t) >= 0)
        assert sample.events["x"].max() < 128 and sample.events["y"].max() < 128
        assert set(np.unique(sample.events["polarity"])) <= {0, 1}
        assert 1_000_000 < sample.duration_us < 10_000_000


def test_real_folder_has_no_test_split():
    root = shared_path("dvs_sign")
    if (root / "test").exists():
        pytest.skip("this copy of DVS_Sign has a test folder")
    with pytest.raises(DatasetLayoutError, match="test"):
        DVSSign(root, "test")


def test_written_train_and_test_folders_load(tmp_path):
    written = write_dvs_sign_folder(tmp_path, per_class=2, seed=2)
    for split in ("train", "test"):
        dataset = open_dataset("dvs_sign", tmp_path, split)
        assert len(dataset) == 30
        np.testing.assert_array_equal(dataset.labels, np.repeat(np.arange(15), 2))
        mine = {w.path: w for w in written if w.path.parts[-3] == split}
        for i, source in enumerate(dataset.sources):
            np.testing.assert_array_equal(dataset[i].events, mine[source.path].events)


def test_class_names_sorted_numerically_not_as_text(tmp_path):
    write_dvs_sign_folder(tmp_path, splits=("train",), per_class=12, events_per_sample=50)
    dataset = DVSSign(tmp_path)
    names = [s.path.name for s in dataset.sources[:12]]
    assert names == [f"{i}.npz" for i in range(12)]
    assert list(dataset.labels[::12]) == list(range(15))


def test_sessions_are_five_consecutive_ids_of_a_class(tmp_path):
    write_dvs_sign_folder(
        tmp_path, splits=("train",), classes=2, per_class=12, events_per_sample=50
    )
    groups = DVSSign(tmp_path).groups
    assert groups[:12].tolist() == ["0/0"] * 5 + ["0/1"] * 5 + ["0/2"] * 2
    assert groups[12] == "1/0"


def test_a_grouped_split_keeps_every_session_on_one_side(tmp_path):
    from models.splits import SplitSpec, split_indices

    write_dvs_sign_folder(
        tmp_path, splits=("train",), classes=3, per_class=20, events_per_sample=50
    )
    dataset = DVSSign(tmp_path)
    for fold in range(4):
        train, val = split_indices(dataset, SplitSpec(folds=4, fold=fold, grouped=True))
        assert len(val) == 15 and not set(dataset.groups[train]) & set(dataset.groups[val])
    with pytest.raises(ValueError, match="grouped splits need folds"):
        SplitSpec(validation_count=10, grouped=True)


def test_real_sessions_are_near_duplicates():
    """The evidence for SESSION_SIZE: samples of one session look alike (their
    event images), and far more than samples of other sessions of the class."""
    root = shared_path("dvs_sign")
    dataset = DVSSign(root)
    images = []
    for i in range(0, len(dataset), 2):  # every other sample: 300, all sessions
        events = dataset[i].events
        image = np.histogram2d(events["y"], events["x"], bins=16, range=[[0, 128], [0, 128]])[0]
        images.append(image.ravel() / np.linalg.norm(image))
    images = np.array(images)
    similarity = images @ images.T
    groups, labels = dataset.groups[::2], dataset.labels[::2]
    same_class = labels[:, None] == labels[None, :]
    same_session = groups[:, None] == groups[None, :]
    off_diagonal = ~np.eye(len(images), dtype=bool)
    inside = similarity[same_session & off_diagonal].mean()
    between = similarity[same_class & ~same_session].mean()
    assert inside > between + 0.1, (inside, between)
