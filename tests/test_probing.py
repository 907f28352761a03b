"""lib.probing: known answers on separable and random data, baselines, edge cases."""
import numpy as np
import pytest
import torch

from lib import probing


def blobs(n=200, d=10, gap=4.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d))
    X[:, 3] += gap * (2 * y - 1)  # one informative direction
    return X, y


def test_separable_labels_are_decoded():
    X, y = blobs()
    assert probing.probe_accuracy(X, y) > 0.97
    assert probing.probe_accuracy(torch.tensor(X, dtype=torch.float32), y) > 0.97  # torch input


def test_random_labels_stay_near_chance():
    X, _ = blobs(n=400)
    y = np.random.default_rng(1).integers(0, 2, 400)
    assert abs(probing.probe_accuracy(X, y) - 0.5) < 0.1


def test_constant_features_give_the_majority_rate():
    y = np.array([0] * 30 + [1] * 10)
    assert probing.probe_accuracy(np.ones((40, 3)), y, folds=5) == pytest.approx(0.75)
    assert probing.majority_baseline(y) == 0.75


def test_single_class_and_bad_shapes():
    assert probing.probe_accuracy(np.zeros((5, 2)), np.ones(5)) == 1.0
    with pytest.raises(ValueError):
        probing.probe_accuracy(np.zeros((5, 2)), np.ones(4))
    with pytest.raises(ValueError, match="at least 2"):
        probing.probe_accuracy(np.random.default_rng(0).normal(size=(5, 2)), np.array([0, 0, 0, 0, 1]))


def test_folds_are_capped_by_the_rarest_class():
    X, y = blobs(n=40)
    y[:] = 0
    y[:3] = 1  # 3 examples of class 1: at most 3 folds
    assert 0 <= probing.probe_accuracy(X, y, folds=10) <= 1


def test_probe_layers_table():
    X, y = blobs()
    noise = np.random.default_rng(2).normal(size=X.shape)
    df = probing.probe_layers([noise, X], {"label": y, "other": 1 - y}, control=True)
    assert list(df.columns) == ["layer", "target", "accuracy", "chance", "control"] and len(df) == 4
    acc = df.set_index(["target", "layer"])["accuracy"]
    assert acc["label", 1] > 0.95 and acc["label", 0] < 0.7  # the information lives in layer 1 only
    assert (df["control"] < 0.7).all()
