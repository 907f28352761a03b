import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from lib.similarity import (
    cka_by_layer,
    grouped_weight_change,
    linear_cka,
    relative_weight_change,
)


def _gram_cka(X, Y, debiased=False):
    """Reference CKA straight from the definitions, with (n, n) Grams."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    n = X.shape[0]

    def hsic(K, L):
        if not debiased:
            H = np.eye(n) - np.ones((n, n)) / n
            return np.trace(K @ H @ L @ H) / (n - 1) ** 2
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(L, 0)
        one = np.ones(n)
        return (
            np.trace(K @ L)
            + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ K @ L @ one
        ) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T  # uncentred: the reference centres (biased) or is invariant (debiased)
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)) + 2.0
    Y = X @ rng.normal(size=(8, 5)) + 0.5 * rng.normal(size=(60, 5))
    return X, Y


@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one(xy, debiased):
    assert linear_cka(xy[0], xy[0], debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_matches_gram_reference(xy, debiased):
    X, Y = xy
    ref = _gram_cka(X, Y, debiased)
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(ref, rel=1e-10)
    assert 0.0 < ref < 1.0  # a non-trivial known value


def test_debiased_differs_from_biased(xy):
    assert abs(linear_cka(*xy) - linear_cka(*xy, debiased=True)) > 1e-3


def test_wide_input_uses_sample_space_form_correctly():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(10, 40)), rng.normal(size=(10, 30))  # p*q > n*n
    for debiased in (False, True):
        assert linear_cka(X, Y, debiased) == pytest.approx(_gram_cka(X, Y, debiased), rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(xy, debiased):
    X, Y = xy
    base = linear_cka(X, Y, debiased)
    Q = ortho_group.rvs(8, random_state=3)
    assert linear_cka(X @ Q, Y, debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(X, Y @ ortho_group.rvs(5, random_state=4), debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * X, 0.01 * Y, debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(X + np.arange(8), Y - 3.0, debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(Y, X, debiased) == pytest.approx(base, rel=1e-12)


def test_not_invariant_to_anisotropic_scaling(xy):
    X, Y = xy
    S = np.diag([100.0] + [1.0] * 7)
    assert abs(linear_cka(X @ S, Y) - linear_cka(X, Y)) > 1e-2


def test_independent_data_near_zero():
    rng = np.random.default_rng(5)
    n = 4000
    X, Y = rng.normal(size=(n, 20)), rng.normal(size=(n, 20))
    biased, unbiased = linear_cka(X, Y), linear_cka(X, Y, debiased=True)
    assert 0 < biased < 0.02
    assert abs(unbiased) < 2e-3
    assert abs(unbiased) < biased  # debiasing removes the small-n inflation


def test_small_n_bias_is_removed():
    rng = np.random.default_rng(6)
    X, Y = rng.normal(size=(50, 40)), rng.normal(size=(50, 40))
    assert linear_cka(X, Y) > 0.3  # the biased estimator is badly inflated here
    assert abs(linear_cka(X, Y, debiased=True)) < 0.1


def test_torch_and_numpy_agree(xy):
    X, Y = xy
    ref = linear_cka(X, Y)
    assert linear_cka(torch.tensor(X), torch.tensor(Y)) == pytest.approx(ref, rel=1e-12)
    assert linear_cka(torch.tensor(X, dtype=torch.float32), Y) == pytest.approx(ref, rel=1e-5)
    assert isinstance(linear_cka(torch.tensor(X), Y), float)


def test_nan_rows_dropped(xy):
    X, Y = xy
    Xn, Yn = X.copy(), Y.copy()
    Xn[3, 2] = np.nan
    Yn[10, 0] = np.nan
    keep = np.ones(len(X), bool)
    keep[[3, 10]] = False
    got = linear_cka(Xn, Yn, debiased=True)
    assert got == pytest.approx(linear_cka(X[keep], Y[keep], debiased=True), rel=1e-12)
    assert np.isfinite(got)


def test_constant_input_is_zero_not_nan(xy):
    assert linear_cka(np.full((30, 4), 3.7), xy[1][:30]) == 0.0
    assert linear_cka(xy[0][:30], np.ones((30, 2)), debiased=True) == 0.0


def test_shape_errors(xy):
    with pytest.raises(ValueError):
        linear_cka(xy[0], xy[1][:10])
    with pytest.raises(ValueError):
        linear_cka(xy[0][:, 0], xy[1])


def test_cka_by_layer(xy):
    X, Y = xy
    got = cka_by_layer([X, X], [Y, X])
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [linear_cka(X, Y), 1.0], rtol=1e-12)
    with pytest.raises(ValueError):
        cka_by_layer([X], [Y, Y])


def test_relative_weight_change():
    torch.manual_seed(0)
    sd = {"a": torch.randn(4, 3), "b": torch.randn(5)}
    assert relative_weight_change(sd, {k: v.clone() for k, v in sd.items()}) == {"a": 0.0, "b": 0.0}
    doubled = relative_weight_change(sd, {k: 2 * v for k, v in sd.items()})
    assert doubled == pytest.approx({"a": 1.0, "b": 1.0})
    # missing and mis-shaped tensors are skipped
    partial = relative_weight_change(sd, {"a": -sd["a"], "b": torch.zeros(6), "c": torch.ones(1)})
    assert partial == pytest.approx({"a": 2.0})
    with pytest.raises(ValueError):
        relative_weight_change(sd, {"z": torch.ones(1)})


def test_grouped_weight_change_pools_squared_norms():
    sd0 = {"l0.w": torch.ones(3, 4), "l0.b": torch.ones(4), "l1.w": torch.ones(2), "skip": torch.ones(1)}
    sd1 = {"l0.w": 2 * torch.ones(3, 4), "l0.b": torch.ones(4), "l1.w": torch.zeros(2), "skip": torch.zeros(1)}
    got = grouped_weight_change(sd0, sd1, lambda n: None if n == "skip" else n.split(".")[0])
    assert set(got) == {"l0", "l1"}
    assert got["l0"] == pytest.approx(np.sqrt(12 / 16))
    assert got["l1"] == pytest.approx(1.0)
