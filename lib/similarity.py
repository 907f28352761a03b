"""Representation and weight similarity: linear CKA and relative weight change.

Linear CKA (Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural Network Representations
Revisited") compares two sets of activations X (n, p) and Y (n, q) recorded on the same n inputs.
With column-centred Xc, Yc and Gram matrices K = Xc Xc^T, L = Yc Yc^T,

    HSIC(K, L) = tr(K L) / (n-1)^2 = ||Yc^T Xc||_F^2 / (n-1)^2
    CKA(X, Y)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
               = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F).

The right-hand side is the *feature-space* form: it needs (p, q) cross-products, not (n, n) Grams, so
n = 10,000 tokens costs no more memory than the hidden size. CKA is invariant to orthogonal
transforms and isotropic scaling of either argument (and, by the centring, to translation), but not
to arbitrary invertible linear maps. CKA(X, X) = 1.

The biased estimator above is inflated for small n relative to the feature count: independent random
X and Y give CKA of about sqrt(p q) / n (for n >> p, q) rather than 0. `debiased=True` swaps HSIC for
the unbiased U-statistic of Song, Smola, Gretton, Borgwardt & Bedo 2007, as used for "debiased CKA"
by Nguyen, Raghu & Kornblith 2021 ("Do Wide and Deep Networks Learn the Same Things?"). With K~, L~ the Grams with zeroed diagonal,

    HSIC_u(K, L) = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1 ] / (n(n-3)).

Each term has a feature-space expression (r_i = ||x_i||^2, s_i = ||y_i||^2, centred rows so X^T 1 = 0):
tr(K~ L~) = ||Y^T X||_F^2 - sum_i r_i s_i,  1^T K~ 1 = -sum_i r_i,  1^T K~ L~ 1 = sum_i r_i s_i,
so debiased CKA is also O(n p q) with no (n, n) matrix. It may dip slightly below 0.

Relative weight change ||W_tuned - W_base||_F / ||W_base||_F measures how far fine-tuning moved each
parameter tensor; `grouped_weight_change` pools it over groups (e.g. per layer or per module type).
"""
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch

# Below this relative size a centred matrix is treated as exactly zero (a constant input whose
# centring left only float round-off); CKA of such an input is reported as 0.0, not noise or NaN.
_DEGENERATE_RTOL = 1e-10


def _as_float64(X) -> np.ndarray:
    """Any numpy array / torch tensor (any float dtype, any device) -> 2-D float64 numpy array."""
    if isinstance(X, torch.Tensor):
        X = X.detach().to("cpu", torch.float64).numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D (n, features) matrix, got shape {X.shape}")
    return X


def _cross_sq(X: np.ndarray, Y: np.ndarray) -> float:
    """||Y^T X||_F^2 = <X X^T, Y Y^T>_F, using whichever of the two forms is the smaller product."""
    n, p = X.shape
    q = Y.shape[1]
    if p * q <= n * n:
        return float(np.sum((Y.T @ X) ** 2))
    # Very wide inputs (e.g. SAE codes with p > n): the (n, n) Grams are the cheaper route.
    return float(np.sum((X @ X.T) * (Y @ Y.T)))


def _hsic_unbiased(X: np.ndarray, Y: np.ndarray, cross: float) -> float:
    """Song et al. 2007 unbiased HSIC for linear kernels, up to the common 1/(n(n-3)) factor.

    X, Y are column-centred; cross = ||Y^T X||_F^2.
    """
    n = X.shape[0]
    r = np.einsum("ij,ij->i", X, X)
    s = np.einsum("ij,ij->i", Y, Y)
    rs = float(r @ s)
    trace_term = cross - rs
    ones_term = r.sum() * s.sum() / ((n - 1) * (n - 2))
    return trace_term + ones_term - 2.0 / (n - 2) * rs


def linear_cka(X, Y, debiased: bool = False) -> float:
    """Linear CKA between activations X (n, p) and Y (n, q) recorded on the same n inputs.

    Accepts numpy arrays or torch tensors of any float dtype; computes in float64. Rows with a
    non-finite value in X or Y are dropped from both. Returns a Python float in [0, 1] (debiased
    may be slightly negative). A degenerate input (constant over rows, so zero after centring)
    returns 0.0 instead of NaN.
    """
    X, Y = _as_float64(X), _as_float64(Y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y need the same number of rows, got {X.shape[0]} and {Y.shape[0]}")
    keep = np.isfinite(X).all(axis=1) & np.isfinite(Y).all(axis=1)
    if not keep.all():
        X, Y = X[keep], Y[keep]
    n = X.shape[0]
    if debiased and n < 4:
        raise ValueError(f"debiased CKA needs at least 4 rows, got {n}")

    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    for M, Mc in ((X, Xc), (Y, Yc)):
        if n < 2 or np.linalg.norm(Mc) <= _DEGENERATE_RTOL * max(np.linalg.norm(M), 1e-300):
            return 0.0

    xy, xx, yy = _cross_sq(Xc, Yc), _cross_sq(Xc, Xc), _cross_sq(Yc, Yc)
    if debiased:
        xy, xx, yy = _hsic_unbiased(Xc, Yc, xy), _hsic_unbiased(Xc, Xc, xx), _hsic_unbiased(Yc, Yc, yy)
        if xx <= 0 or yy <= 0:  # possible only for tiny n: the self-similarity estimate is noise
            return 0.0
    return float(xy / np.sqrt(xx * yy))


def cka_by_layer(Xs: Sequence, Ys: Sequence, debiased: bool = False) -> np.ndarray:
    """CKA per layer: Xs[l] (n, p_l) against Ys[l] (n, q_l) -> array (n_layers,)."""
    if len(Xs) != len(Ys):
        raise ValueError(f"need the same number of layers, got {len(Xs)} and {len(Ys)}")
    return np.array([linear_cka(X, Y, debiased=debiased) for X, Y in zip(Xs, Ys)], dtype=np.float64)


def _common_pairs(sd_base: Mapping, sd_tuned: Mapping):
    """Yield (name, W_base, W_tuned) as float64 tensors for keys present in both with equal shapes."""
    found = False
    for name, wb in sd_base.items():
        if name not in sd_tuned:
            continue
        wb, wt = torch.as_tensor(wb), torch.as_tensor(sd_tuned[name])
        if wb.shape != wt.shape:
            continue
        found = True
        yield name, wb.detach().to("cpu", torch.float64), wt.detach().to("cpu", torch.float64)
    if not found:
        raise ValueError("the two state dicts share no tensor with a common name and shape")


def relative_weight_change(sd_base: Mapping, sd_tuned: Mapping) -> dict[str, float]:
    """||W_tuned - W_base||_F / ||W_base||_F for every tensor name the two state dicts share.

    Tensors missing from either dict or with mismatched shapes are skipped; no common tensor raises
    ValueError. A zero base tensor gives 0.0 if unchanged, else inf.
    """
    out = {}
    for name, wb, wt in _common_pairs(sd_base, sd_tuned):
        delta, base = torch.linalg.vector_norm(wt - wb).item(), torch.linalg.vector_norm(wb).item()
        out[name] = delta / base if base > 0 else (0.0 if delta == 0 else float("inf"))
    return out


def grouped_weight_change(
    sd_base: Mapping, sd_tuned: Mapping, group_fn: Callable[[str], Hashable | None]
) -> dict[Hashable, float]:
    """Pooled change per group: sqrt(sum_g ||dW||_F^2) / sqrt(sum_g ||W_base||_F^2).

    group_fn(name) gives the group of a tensor, or None to leave it out. Tensors are pooled by their
    squared norms, so large matrices dominate a group as they dominate its parameters.
    """
    num: dict[Hashable, float] = {}
    den: dict[Hashable, float] = {}
    for name, wb, wt in _common_pairs(sd_base, sd_tuned):
        g = group_fn(name)
        if g is None:
            continue
        num[g] = num.get(g, 0.0) + torch.sum((wt - wb) ** 2).item()
        den[g] = den.get(g, 0.0) + torch.sum(wb**2).item()
    return {
        g: (np.sqrt(num[g] / den[g]) if den[g] > 0 else (0.0 if num[g] == 0 else float("inf")))
        for g in num
    }
