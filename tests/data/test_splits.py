import numpy as np

from medfuse.data.splits import stratified_split


def test_stratified_split_sizes_and_label_balance():
    rng = np.random.default_rng(0)
    y = rng.random((4000, 10)) < np.linspace(0.02, 0.5, 10)
    fold = stratified_split(y, (0.7, 0.1, 0.2), seed=1)
    assert np.bincount(fold).tolist() == [2800, 400, 800]
    overall = y.mean(axis=0)
    for k in range(3):
        np.testing.assert_allclose(y[fold == k].mean(axis=0), overall, atol=0.006)


def test_stratified_split_is_seeded():
    y = np.random.default_rng(1).random((500, 4)) < 0.3
    a, b, c = (stratified_split(y, (0.7, 0.1, 0.2), seed=s) for s in (5, 5, 6))
    assert (a == b).all() and (a != c).any()


def test_rows_without_labels_are_assigned():
    y = np.zeros((50, 3), dtype=bool)
    y[:5, 0] = True
    fold = stratified_split(y, (0.6, 0.2, 0.2), seed=0)
    assert (fold >= 0).all() and np.bincount(fold).tolist() == [30, 10, 10]
