import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from replay.datasets.split import grouped_stratified_kfold, stratified_kfold, stratified_split

label_lists = st.lists(st.integers(0, 6), min_size=2, max_size=300)


def nmnist_like_labels() -> np.ndarray:
    """10 classes of 87-117 samples, shuffled, like the real N-MNIST subset."""
    rng = np.random.default_rng(5)
    counts = rng.integers(87, 118, size=10)
    return rng.permutation(np.repeat(np.arange(10), counts))


@settings(max_examples=200, deadline=None)
@given(labels=label_lists, fraction=st.floats(0.02, 0.98), seed=st.integers(0, 2**32 - 1))
def test_split_is_disjoint_covering_and_stratified(labels, fraction, seed):
    labels = np.array(labels)
    n = len(labels)
    assume(1 <= round(fraction * n) <= n - 1)
    train, val = stratified_split(labels, validation_fraction=fraction, seed=seed)
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert len(val) == round(fraction * n)
    share = len(val) / n
    for c in np.unique(labels):
        n_c = int((labels == c).sum())
        val_c = int((labels[val] == c).sum())
        assert abs(val_c - n_c * share) <= 1, (c, n_c, val_c, share)


def test_every_class_in_both_parts_when_possible():
    labels = nmnist_like_labels()
    train, val = stratified_split(labels, validation_count=100, seed=0)
    assert len(val) == 100
    for c in range(10):
        assert (labels[val] == c).sum() in (9, 10, 11, 12)
        assert (labels[train] == c).any()
    # Three classes of two: a validation part of three holds one of each,
    # although plain rounding could give a class none.
    labels = np.array([0, 0, 1, 1, 2, 2])
    train, val = stratified_split(labels, validation_count=3, seed=1)
    assert sorted(labels[val]) == [0, 1, 2]
    assert sorted(labels[train]) == [0, 1, 2]
    # A tiny class that rounding leaves out of validation is moved in.
    labels = np.array([0] * 20 + [1] * 2)
    for seed in range(10):
        train, val = stratified_split(labels, validation_fraction=0.1, seed=seed)
        assert set(labels[val]) == {0, 1} and set(labels[train]) == {0, 1}


def test_split_is_deterministic_under_a_seed_and_differs_under_another():
    labels = nmnist_like_labels()
    a = stratified_split(labels, validation_fraction=0.1, seed=3)
    b = stratified_split(labels, validation_fraction=0.1, seed=3)
    c = stratified_split(labels, validation_fraction=0.1, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert a[0].dtype == np.int64 and np.all(np.diff(a[1]) > 0)


def test_split_rejects_bad_arguments():
    labels = np.arange(10) % 2
    with pytest.raises(ValueError, match="exactly one"):
        stratified_split(labels)
    with pytest.raises(ValueError, match="exactly one"):
        stratified_split(labels, validation_fraction=0.1, validation_count=1)
    with pytest.raises(ValueError, match="validation_fraction"):
        stratified_split(labels, validation_fraction=1.0)
    with pytest.raises(ValueError, match="between 1 and 9"):
        stratified_split(labels, validation_count=10)
    with pytest.raises(ValueError, match="one-dimensional"):
        stratified_split(np.zeros((2, 2)), validation_count=1)


@settings(max_examples=100, deadline=None)
@given(labels=label_lists, k=st.integers(2, 10), seed=st.integers(0, 1000))
def test_kfold_puts_every_sample_in_exactly_one_validation_fold(labels, k, seed):
    labels = np.array(labels)
    n = len(labels)
    assume(k <= n)
    folds = stratified_kfold(labels, k, seed=seed)
    assert len(folds) == k
    seen = np.concatenate([val for _, val in folds])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    sizes = [len(val) for _, val in folds]
    assert max(sizes) - min(sizes) <= 1
    for train, val in folds:
        np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
        for c in np.unique(labels):
            n_c = int((labels == c).sum())
            assert abs(int((labels[val] == c).sum()) - n_c / k) < 1


def test_kfold_is_deterministic_and_seeded():
    labels = nmnist_like_labels()
    a = stratified_kfold(labels, 5, seed=0)
    b = stratified_kfold(labels, 5, seed=0)
    c = stratified_kfold(labels, 5, seed=1)
    for (ta, va), (tb, vb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(va, vb)
    assert any(not np.array_equal(va, vc) for (_, va), (_, vc) in zip(a, c, strict=True))
    with pytest.raises(ValueError, match="k must be"):
        stratified_kfold(labels, 1)


@settings(max_examples=100, deadline=None)
@given(
    sessions=st.lists(st.integers(1, 6), min_size=2, max_size=40),
    classes=st.integers(1, 4),
    k=st.integers(2, 4),
    seed=st.integers(0, 1000),
)
def test_grouped_kfold_never_splits_a_group(sessions, classes, k, seed):
    # sessions[i] samples in session i; session i belongs to class i % classes
    labels = np.concatenate([np.full(n, i % classes) for i, n in enumerate(sessions)])
    groups = np.concatenate([np.full(n, i) for i, n in enumerate(sessions)])
    per_class = [sum(1 for i in range(len(sessions)) if i % classes == c) for c in range(classes)]
    assume(min(per_class) >= k)
    folds = grouped_stratified_kfold(labels, groups, k, seed=seed)
    seen = np.concatenate([val for _, val in folds])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(labels)))
    for train, val in folds:
        assert not set(groups[train]) & set(groups[val])
        for c in range(classes):  # every class's sessions spread within one of n / k
            in_val = len(set(groups[val][labels[val] == c]))
            assert abs(in_val - per_class[c] / k) < 1


def test_grouped_kfold_of_dvs_sign_shape_holds_out_two_sessions_per_class():
    labels = np.repeat(np.arange(15), 40)
    groups = np.array([f"{c}/{i // 5}" for c in range(15) for i in range(40)])
    folds = grouped_stratified_kfold(labels, groups, 4, seed=0)
    assert [len(val) for _, val in folds] == [150] * 4
    for _, val in folds:
        assert np.bincount(labels[val]).tolist() == [10] * 15
    with pytest.raises(ValueError, match="number of groups of each class"):
        grouped_stratified_kfold(labels, groups, 9)
    with pytest.raises(ValueError, match="groups must match labels"):
        grouped_stratified_kfold(labels, groups[:-1], 4)


def test_a_split_records_grouped_only_when_it_is():
    from models.splits import SplitSpec

    plain = SplitSpec(folds=3, fold=1)
    assert "grouped" not in plain.to_dict()
    assert SplitSpec.from_dict(plain.to_dict()) == plain
    grouped = SplitSpec(folds=4, fold=0, grouped=True)
    assert grouped.to_dict()["grouped"] is True
    assert SplitSpec.from_dict(grouped.to_dict()) == grouped
