"""Accuracy per token (APT) and strong-match token clusters (Tzach et al. 2025).

Tzach, Gross, Koresh, Rosner, Shpringer, Halevi & Kanter 2025, "Learning mechanism underlying NLP
pre-training and fine-tuning" (arXiv:2509.03407), read masked-token prediction token by token.
Over the positions selected for masking, with true token y_i and prediction yhat_i,

    APT(t) = #{i : y_i = t and yhat_i = t} / #{i : y_i = t}        (recall of token type t)

and the order parameter is its UNWEIGHTED mean over the token types present, so a rare token
counts as much as "the" (plain accuracy instead weights types by frequency). APT grows with a
token's frequency; `apt_top_frequent` (mean APT over the k most frequent types, APT(50) for k=50)
and `apt_by_frequency_bins` (mean APT in log-spaced frequency bins) show that dependence.

The confusion matrix M[i, j] = #(true i, predicted j) exposes *strong match* tokens: tokens the
model swaps for one another. Following the paper, rows whose maximum is not on the diagonal (the
token is mostly predicted as something else) or whose diagonal is zero are dropped, and each kept
row is divided by its diagonal, so M^[i, i] = 1 and M^[i, j] = how often j is predicted relative
to the correct i. Tokens i, j with M^[i, j] >= threshold (default 0.5; the paper's value is not
known) in either direction are linked; the connected components with at least two tokens are the strong-match clusters. Everything
is sparse, so vocabularies of tens of thousands of types never need a dense T x T matrix.
"""
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components


def _ids(x, name: str) -> np.ndarray:
    """1-D non-negative integer ids from a numpy array, torch tensor or sequence."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids, got dtype {x.dtype}")
    x = x.astype(np.int64, copy=False)
    if x.size and x.min() < 0:
        raise ValueError(f"{name} holds negative ids; select the masked positions first")
    return x


def _pair(true_ids, pred_ids) -> tuple[np.ndarray, np.ndarray]:
    t, p = _ids(true_ids, "true_ids"), _ids(pred_ids, "pred_ids")
    if t.shape != p.shape:
        raise ValueError(f"true_ids and pred_ids differ in length: {t.size} vs {p.size}")
    return t, p


def accuracy_per_token(true_ids, pred_ids) -> dict[int, float]:
    """APT per token type: true_ids, pred_ids (n,) over masked positions -> {type: accuracy}.

    Only types occurring in true_ids appear as keys.
    """
    t, p = _pair(true_ids, pred_ids)
    if t.size == 0:
        return {}
    size = int(t.max()) + 1
    totals = np.bincount(t, minlength=size)
    hits = np.bincount(t[t == p], minlength=size)
    present = np.flatnonzero(totals)
    return dict(zip(present.tolist(), (hits[present] / totals[present]).tolist()))


def mean_apt_from(apt: Mapping[int, float]) -> float:
    """Unweighted mean over token types of a precomputed APT dict."""
    if not apt:
        raise ValueError("empty APT: no masked positions")
    return float(np.mean(list(apt.values())))


def mean_apt(true_or_apt, pred_ids=None) -> float:
    """Average APT over token types (each type weighs the same).

    Call as mean_apt(true_ids, pred_ids) or mean_apt(apt_dict).
    """
    if pred_ids is None:
        if not isinstance(true_or_apt, Mapping):
            raise ValueError("pass (true_ids, pred_ids) or a precomputed APT dict")
        return mean_apt_from(true_or_apt)
    return mean_apt_from(accuracy_per_token(true_or_apt, pred_ids))


def mean_apt_frequent(true_ids, pred_ids, min_count: int = 20) -> tuple[float, int]:
    """⟨APT⟩ over the token types selected at least `min_count` times: (mean, number of such types); NaN when
    none is. A type seen once or twice has APT 0 or 1, so the unweighted mean over every type seen depends on the
    evaluation set's size; restricted to well-estimated types it does not."""
    t, p = _pair(true_ids, pred_ids)
    if t.size == 0:
        return float("nan"), 0
    totals = np.bincount(t)
    hits = np.bincount(t[t == p], minlength=totals.size)
    ok = np.flatnonzero(totals >= min_count)
    return (float((hits[ok] / totals[ok]).mean()) if ok.size else float("nan")), int(ok.size)


def _count_of(counts, ids: np.ndarray) -> np.ndarray:
    """Frequencies of token ids from a {id: count} mapping or an array indexed by id (missing -> 0)."""
    if isinstance(counts, Mapping):
        return np.array([counts.get(i, 0) for i in ids.tolist()], dtype=np.float64)
    c = np.asarray(counts.detach().cpu() if isinstance(counts, torch.Tensor) else counts, dtype=np.float64)
    out = np.zeros(ids.size)
    inside = ids < c.size
    out[inside] = c[ids[inside]]
    return out


def apt_top_frequent(apt: Mapping[int, float], counts, k: int = 50) -> float:
    """APT(k): mean APT over the k most frequent token types that have an APT.

    counts: {id: frequency} or an array indexed by id (e.g. corpus token counts). Ties in frequency
    go to the smaller id; with fewer than k types all are used.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ids = np.fromiter(apt.keys(), dtype=np.int64, count=len(apt))
    if ids.size == 0:
        raise ValueError("empty APT: no masked positions")
    order = np.lexsort((ids, -_count_of(counts, ids)))[:k]
    vals = np.fromiter(apt.values(), dtype=np.float64, count=len(apt))
    return float(vals[order].mean())


def apt_by_frequency_bins(apt: Mapping[int, float], counts, n_bins: int = 10) -> pd.DataFrame:
    """Mean APT in n_bins log-spaced frequency bins.

    Returns a DataFrame with one row per bin: bin_lo, bin_hi (edges; the last bin includes bin_hi),
    mean_apt (NaN for an empty bin) and n_types. Types with frequency 0 cannot sit on a log axis and
    are left out.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    ids = np.fromiter(apt.keys(), dtype=np.int64, count=len(apt))
    vals = np.fromiter(apt.values(), dtype=np.float64, count=len(apt))
    freq = _count_of(counts, ids)
    ids, vals, freq = ids[freq > 0], vals[freq > 0], freq[freq > 0]
    if freq.size == 0:
        raise ValueError("no token type with a positive frequency")
    edges = np.geomspace(freq.min(), freq.max(), n_bins + 1)
    which = np.searchsorted(edges[1:-1], freq, side="right")  # interior edges -> bins 0..n_bins-1
    n = np.bincount(which, minlength=n_bins)
    sums = np.bincount(which, weights=vals, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
    return pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "mean_apt": means, "n_types": n})


def confusion_counts(true_ids, pred_ids, vocab_size: int) -> sp.csr_matrix:
    """Sparse confusion counts (vocab_size, vocab_size), int64: M[i, j] = #(true i, predicted j)."""
    t, p = _pair(true_ids, pred_ids)
    if t.size and max(t.max(), p.max()) >= vocab_size:
        raise ValueError(f"token id {max(t.max(), p.max())} outside vocab_size {vocab_size}")
    ones = np.ones(t.size, dtype=np.int64)
    # COO -> CSR sums duplicate (i, j) entries, which is exactly the counting we need.
    return sp.coo_matrix((ones, (t, p)), shape=(vocab_size, vocab_size)).tocsr()


def normalise_confusion(M: sp.spmatrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """Keep rows with a positive diagonal that is (one of) the row maxima; divide rows by the diagonal.

    M: (T, T) counts. Returns (M_norm, kept_ids): M_norm is float64 CSR of shape (K, K) restricted
    to the kept tokens in BOTH rows and columns (so confusions with dropped tokens are discarded and
    the matrix stays square, M_norm[i, i] = 1), and kept_ids (K,) maps its indices to token ids.
    """
    M = sp.csr_matrix(M, dtype=np.float64)
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"confusion matrix must be square, got {M.shape}")
    diag = M.diagonal()
    row_max = M.max(axis=1).toarray().ravel()
    kept = np.flatnonzero((diag > 0) & (diag >= row_max))
    sub = M[kept][:, kept]
    return sp.csr_matrix(sp.diags(1.0 / diag[kept]) @ sub), kept


def strong_match_clusters(M_norm: sp.spmatrix, kept_ids, threshold: float = 0.5) -> list[np.ndarray]:
    """Connected components (>= 2 tokens) of the graph with edges M^[i, j] >= threshold (either way).

    M_norm: (K, K) from normalise_confusion; kept_ids: (K,) token ids. Returns arrays of token ids
    (each sorted), largest cluster first (ties: smallest id first).
    """
    if threshold <= 0:
        raise ValueError("threshold must be positive (every absent entry would match otherwise)")
    C = sp.coo_matrix(M_norm)
    kept_ids = np.asarray(kept_ids)
    if C.shape[0] != C.shape[1] or C.shape[0] != kept_ids.size:
        raise ValueError(f"M_norm {C.shape} does not fit kept_ids of length {kept_ids.size}")
    edge = (C.data >= threshold) & (C.row != C.col)
    A = sp.coo_matrix((np.ones(edge.sum()), (C.row[edge], C.col[edge])), shape=C.shape)
    _, labels = connected_components(A, directed=False)
    sizes = np.bincount(labels)
    clusters = [np.sort(kept_ids[labels == c]) for c in np.flatnonzero(sizes >= 2)]
    clusters.sort(key=lambda ids: (-ids.size, ids[0]))
    return clusters


def cluster_summary(clusters: list[np.ndarray], n_kept: int | None = None) -> dict:
    """Cluster statistics: n_clusters, mean_size, max_size, size_histogram {size: count},
    n_clustered (tokens in clusters) and share_clustered (= n_clustered / n_kept; NaN without n_kept).
    """
    sizes = [len(c) for c in clusters]
    n_clustered = int(sum(sizes))
    return {
        "n_clusters": len(sizes),
        "mean_size": float(np.mean(sizes)) if sizes else 0.0,
        "max_size": max(sizes, default=0),
        "size_histogram": dict(sorted(Counter(sizes).items())),
        "n_clustered": n_clustered,
        "share_clustered": n_clustered / n_kept if n_kept else float("nan"),
    }
