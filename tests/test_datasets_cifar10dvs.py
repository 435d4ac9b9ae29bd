import numpy as np
import pytest

from core.events import SensorSize
from replay.datasets import CIFAR10DVS, DatasetLayoutError, open_dataset
from tests.synthetic_datasets import write_cifar10dvs_folder


def test_written_folder_loads_every_sample_exactly(tmp_path):
    written = write_cifar10dvs_folder(tmp_path, per_class=2, seed=4)
    dataset = open_dataset("cifar10dvs", tmp_path, "all")
    assert len(dataset) == 20
    assert dataset.sensor == SensorSize(128, 128)
    assert dataset.class_names[0] == "airplane" and dataset.class_names[9] == "truck"
    np.testing.assert_array_equal(dataset.labels, np.repeat(np.arange(10), 2))
    by_path = {w.path: w for w in written}
    for i, source in enumerate(dataset.sources):
        sample = dataset[i]
        np.testing.assert_array_equal(sample.events, by_path[source.path].events)
        assert sample.label == by_path[source.path].label
        assert source.path.parent.name == dataset.class_names[sample.label]


def test_train_and_test_are_a_stratified_seeded_split(tmp_path):
    write_cifar10dvs_folder(tmp_path, per_class=5, events_per_sample=100)
    train = CIFAR10DVS(tmp_path, "train", test_fraction=0.2)
    test = CIFAR10DVS(tmp_path, "test", test_fraction=0.2)
    assert len(train) == 40 and len(test) == 10
    np.testing.assert_array_equal(np.bincount(test.labels), [1] * 10)
    train_files = {s.path for s in train.sources}
    test_files = {s.path for s in test.sources}
    assert not train_files & test_files and len(train_files | test_files) == 50
    again = CIFAR10DVS(tmp_path, "test", test_fraction=0.2)
    assert [s.path for s in again.sources] == [s.path for s in test.sources]
    other = CIFAR10DVS(tmp_path, "test", test_fraction=0.2, split_seed=1)
    assert {s.path for s in other.sources} != test_files


def test_wrong_root_is_a_clear_error(tmp_path):
    write_cifar10dvs_folder(tmp_path / "cifar", per_class=1, events_per_sample=10)
    with pytest.raises(DatasetLayoutError, match="not a class folder"):
        CIFAR10DVS(tmp_path)  # one level too high
    with pytest.raises(DatasetLayoutError, match="not found"):
        CIFAR10DVS(tmp_path / "missing")
