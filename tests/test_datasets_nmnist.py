import numpy as np
import pytest
from conftest import shared_path

from core.events import EVENT_DTYPE, SensorSize
from replay.datasets import NMNIST, DatasetLayoutError, open_dataset
from tests.synthetic_datasets import write_nmnist_folder


def test_real_train_folder_loads_all_1000_samples():
    dataset = NMNIST(shared_path("nmnist"), "train")
    assert len(dataset) == 1000
    assert dataset.sensor == SensorSize(34, 34)
    counts = np.bincount(dataset.labels, minlength=10)
    assert len(counts) == 10 and counts.min() >= 87 and counts.max() <= 117
    for sample, label, source in zip(dataset, dataset.labels, dataset.sources, strict=True):
        assert sample.events.dtype == EVENT_DTYPE and len(sample) > 0
        assert sample.events["x"].max() < 34 and sample.events["y"].max() < 34
        assert sample.label == label == int(source.path.parent.name)
        assert sample.end_us > sample.start_us


def test_missing_split_folder_is_a_clear_error(tmp_path):
    real = shared_path("nmnist")
    if (real / "Test").exists():
        pytest.skip("this copy of N-MNIST has a Test folder")
    with pytest.raises(DatasetLayoutError, match=r"Test.*not found"):
        NMNIST(real, "test")


def test_written_train_and_test_folders_load_exactly(tmp_path):
    written = write_nmnist_folder(tmp_path, per_class=2, seed=3)
    for split, folder in (("train", "Train"), ("test", "Test")):
        dataset = open_dataset("nmnist", tmp_path, split)
        mine = [w for w in written if w.path.parts[-3] == folder]
        assert len(dataset) == len(mine) == 20
        by_path = {w.path: w for w in mine}
        for i, source in enumerate(dataset.sources):
            np.testing.assert_array_equal(dataset[i].events, by_path[source.path].events)
            assert dataset.labels[i] == by_path[source.path].label


def test_stray_folder_and_unknown_split_are_errors(tmp_path):
    write_nmnist_folder(tmp_path, splits=("Train",), per_class=1)
    (tmp_path / "Train" / "10").mkdir()
    with pytest.raises(DatasetLayoutError, match="not a class folder"):
        NMNIST(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        NMNIST(tmp_path, "Train")
    (tmp_path / "Test").mkdir()
    with pytest.raises(DatasetLayoutError, match="no \\*.bin or \\*.bs2 files"):
        NMNIST(tmp_path, "test")


def test_samples_under_their_bs2_name_belong_to_the_dataset(tmp_path):
    written = write_nmnist_folder(tmp_path, splits=("Train",), per_class=2, seed=5)
    renamed = written[3].path.rename(written[3].path.with_suffix(".bs2"))
    dataset = NMNIST(tmp_path, "train")
    paths = [source.path for source in dataset.sources]
    assert len(dataset) == 20 and renamed in paths
    i = paths.index(renamed)
    np.testing.assert_array_equal(dataset[i].events, written[3].events)
    assert dataset.labels[i] == written[3].label
