import numpy as np
import pytest

from replay.datasets import DATASETS, EventDataset, Subset, open_dataset, stratified_split
from tests.synthetic_datasets import write_cifar10dvs_folder


def test_registry_names_every_dataset_and_refuses_others(tmp_path):
    assert set(DATASETS) == {"nmnist", "dvsgesture", "cifar10dvs", "dvs_sign"}
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*nmnist"):
        open_dataset("mnist", tmp_path)


def test_subset_and_window(tmp_path):
    write_cifar10dvs_folder(tmp_path, per_class=3, events_per_sample=300, seed=1)
    dataset = open_dataset("cifar10dvs", tmp_path, "all")
    assert isinstance(dataset, EventDataset)
    train, val = stratified_split(dataset.labels, validation_count=10, seed=0)
    part = Subset(dataset, val)
    assert isinstance(part, EventDataset)
    assert len(part) == 10 and sorted(part.labels) == list(range(10))
    for i, index in enumerate(val):
        assert part.sources[i] == dataset.sources[index]
        np.testing.assert_array_equal(part[i].events, dataset[index].events)
    np.testing.assert_array_equal(part[-1].events, dataset[val[-1]].events)

    sample = dataset[0]
    middle = (sample.start_us + sample.end_us) // 2
    first, second = sample.window(sample.start_us, middle), sample.window(middle, sample.end_us)
    assert len(first) + len(second) == len(sample)
    assert first.events["timestamp"].max() < middle <= second.events["timestamp"].min()
    assert (second.start_us, second.end_us, second.label) == (middle, sample.end_us, sample.label)
