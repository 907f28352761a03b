import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lib.apt import (
    accuracy_per_token,
    apt_by_frequency_bins,
    apt_top_frequent,
    cluster_summary,
    confusion_counts,
    mean_apt,
    mean_apt_from,
    normalise_confusion,
    strong_match_clusters,
)

TRUE = [1, 1, 2, 3, 3, 3]
PRED = [1, 0, 2, 3, 0, 0]


def test_perfect_predictions():
    ids = np.array([5, 5, 7, 9, 9, 9, 0])
    apt = accuracy_per_token(ids, ids)
    assert apt == {0: 1.0, 5: 1.0, 7: 1.0, 9: 1.0}
    assert mean_apt(ids, ids) == 1.0


def test_known_example():
    apt = accuracy_per_token(TRUE, PRED)
    assert apt == pytest.approx({1: 0.5, 2: 1.0, 3: 1 / 3})
    assert 0 not in apt  # a type only ever predicted has no APT
    assert mean_apt(TRUE, PRED) == pytest.approx((0.5 + 1 + 1 / 3) / 3)
    assert mean_apt(apt) == mean_apt_from(apt) == pytest.approx(0.6111111)


def test_torch_input_and_errors():
    assert accuracy_per_token(torch.tensor(TRUE), torch.tensor(PRED)) == accuracy_per_token(TRUE, PRED)
    with pytest.raises(ValueError):
        accuracy_per_token([1, 2], [1])
    with pytest.raises(ValueError):
        accuracy_per_token(np.ones((2, 2), int), np.ones((2, 2), int))
    with pytest.raises(ValueError):
        mean_apt([1, 2])


def test_mean_is_unweighted():
    # 99 correct "the" (id 0) and one wrong rare token: accuracy 0.99 but mean APT 0.5
    true = np.array([0] * 99 + [1])
    pred = np.array([0] * 99 + [0])
    assert mean_apt(true, pred) == pytest.approx(0.5)
    assert (true == pred).mean() == pytest.approx(0.99)


def test_top_frequent_and_bins():
    apt = {0: 1.0, 1: 0.5, 2: 0.0, 3: 0.25}
    counts = {0: 1000, 1: 100, 2: 10, 3: 1}
    assert apt_top_frequent(apt, counts, k=2) == pytest.approx(0.75)
    assert apt_top_frequent(apt, np.array([1000, 100, 10, 1]), k=3) == pytest.approx(0.5)
    assert apt_top_frequent(apt, counts, k=50) == pytest.approx(1.75 / 4)  # fewer than k: all
    df = apt_by_frequency_bins(apt, counts, n_bins=3)
    np.testing.assert_allclose(df["bin_lo"], [1, 10, 100])
    np.testing.assert_allclose(df["bin_hi"], [10, 100, 1000])
    # edges are [1, 10, 100, 1000]; a count on an inner edge goes to the upper bin
    assert df["n_types"].tolist() == [1, 1, 2]
    np.testing.assert_allclose(df["mean_apt"], [0.25, 0.0, 0.75])
    assert df["n_types"].sum() == len(apt)


def test_confusion_counts_match_dense():
    rng = np.random.default_rng(0)
    V, n = 12, 500
    t, p = rng.integers(0, V, n), rng.integers(0, V, n)
    M = confusion_counts(t, p, V)
    assert sp.issparse(M) and M.shape == (V, V)
    assert M.sum() == n
    dense = np.bincount(t * V + p, minlength=V * V).reshape(V, V)
    np.testing.assert_array_equal(M.toarray(), dense)
    with pytest.raises(ValueError):
        confusion_counts([0, 12], [0, 1], V)


def test_large_vocab_stays_sparse():
    V = 50_000
    rng = np.random.default_rng(1)
    t = rng.integers(0, V, 20_000)
    p = np.where(rng.random(20_000) < 0.7, t, rng.integers(0, V, 20_000))
    M = confusion_counts(t, p, V)
    assert isinstance(M, sp.csr_matrix) and M.nnz <= 20_000
    Mn, kept = normalise_confusion(M)
    assert sp.issparse(Mn) and Mn.shape == (kept.size, kept.size)
    assert isinstance(strong_match_clusters(Mn, kept), list)


def test_normalise_confusion():
    M = np.array(
        [
            [4, 2, 0, 0],  # kept: diagonal 4 is the max
            [3, 3, 0, 0],  # kept: tie with the diagonal
            [0, 5, 1, 0],  # dropped: max off the diagonal
            [0, 0, 0, 0],  # dropped: never seen
        ]
    )
    Mn, kept = normalise_confusion(sp.csr_matrix(M))
    np.testing.assert_array_equal(kept, [0, 1])
    np.testing.assert_allclose(Mn.toarray(), [[1.0, 0.5], [1.0, 1.0]])
    np.testing.assert_allclose(Mn.diagonal(), 1.0)


def _hand_matrix():
    # kept tokens 10..15; edges >= 0.5: 10-11 (one direction only), 11-12, 13-14; 15 alone; 0.4 is below
    ids = np.array([10, 11, 12, 13, 14, 15])
    A = np.eye(6)
    A[0, 1] = 0.6
    A[2, 1] = 0.5
    A[3, 4] = 0.9
    A[4, 5] = 0.4
    return sp.csr_matrix(A), ids


def test_strong_match_clusters_known_components():
    Mn, ids = _hand_matrix()
    clusters = strong_match_clusters(Mn, ids, threshold=0.5)
    assert [c.tolist() for c in clusters] == [[10, 11, 12], [13, 14]]


def test_threshold_respected():
    Mn, ids = _hand_matrix()
    assert [c.tolist() for c in strong_match_clusters(Mn, ids, threshold=0.55)] == [[10, 11], [13, 14]]
    assert [c.tolist() for c in strong_match_clusters(Mn, ids, threshold=0.35)] == [[10, 11, 12], [13, 14, 15]]
    assert strong_match_clusters(Mn, ids, threshold=0.95) == []
    with pytest.raises(ValueError):
        strong_match_clusters(Mn, ids, threshold=0.0)


def test_cluster_summary():
    Mn, ids = _hand_matrix()
    s = cluster_summary(strong_match_clusters(Mn, ids), n_kept=len(ids))
    assert s["n_clusters"] == 2 and s["max_size"] == 3
    assert s["mean_size"] == pytest.approx(2.5)
    assert s["size_histogram"] == {2: 1, 3: 1}
    assert s["share_clustered"] == pytest.approx(5 / 6)
    assert cluster_summary([])["n_clusters"] == 0


def test_end_to_end_pipeline():
    # tokens 1 and 2 are swapped for each other 60% as often as predicted right; 3 is clean
    true = [1] * 10 + [2] * 10 + [3] * 10
    pred = [1] * 6 + [2] * 4 + [2] * 6 + [1] * 4 + [3] * 10
    Mn, kept = normalise_confusion(confusion_counts(true, pred, vocab_size=5))
    np.testing.assert_array_equal(kept, [1, 2, 3])
    assert Mn[0, 1] == pytest.approx(4 / 6)
    assert [c.tolist() for c in strong_match_clusters(Mn, kept)] == [[1, 2]]
