"""The two feature matchers of Horn & Elliott's released code (github.com/nilq/feature-dynamics), written from their
definitions, beside the position-level Pearson matcher of `lib.sae.feature_correlations`.

Token-profile matcher (the paper's `correlation.py`, threshold 0.8). A feature's *profile* is its mean non-zero
activation per decoded token string; two features match when the Pearson correlation of their profiles, over the
strings both fire on (at least two), reaches the threshold. It ignores *where* a feature fires, only *on what*.

Flow matcher (the paper's `compare.py`, behind its released feature-flow data: similarity 0.05, consistency 0.8).
The comparison tokens come in samples of `ctx` tokens. In each sample the child's encodings are L2-normalised per
token (over features) and, for every parent feature that fires in the sample, the L1 distance over the sample's
tokens between its raw activations and each child feature is computed. The parent feature has a candidate partner
in that sample (the child feature at the smallest distance, the first index on ties) when the distance *averaged
over all child features* is below `similarity`. Families come from the first sample; a partner is dropped when, in
more than 1 - `consistency` of the later samples, the parent feature's candidate is another child feature.
Because the averaged distance is dominated by the parent feature's own activation mass in the sample, `similarity`
is in the units of the activations: 0.05 keeps features that fire weakly in the first sample. (The released loop
also re-uses its loop variable for the partner index, so later samples are looked up under the partner's index;
here they are looked up under the parent feature's own, as the definition states.)

No torch threads beyond what the caller set; everything works on CPU tensors in chunks of samples.
"""
from __future__ import annotations

import numpy as np
import torch


# --------------------------------------------------------------------------- token-profile matcher
def token_profiles(F: torch.Tensor, keys: np.ndarray, n_keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean non-zero activation of each feature per token key: F (n, d) activations, keys (n,) ints in
    [0, n_keys) (the decoded string of each position) -> (values (d, n_keys) float32, fired (d, n_keys) bool)."""
    keys_t = torch.as_tensor(np.asarray(keys), dtype=torch.long)
    sums = torch.zeros(n_keys, F.shape[1], dtype=torch.float64)
    counts = torch.zeros(n_keys, F.shape[1], dtype=torch.float64)
    for s in range(0, len(F), 4096):
        c = F[s:s + 4096].to(torch.float64)
        sums.index_add_(0, keys_t[s:s + 4096], c * (c > 0))
        counts.index_add_(0, keys_t[s:s + 4096], (c > 0).to(torch.float64))
    fired = counts > 0
    values = torch.where(fired, sums / counts.clamp_min(1), torch.zeros_like(sums))
    return values.T.float().contiguous(), fired.T.contiguous()


def profile_correlations(pa: tuple, pb: tuple, min_common: int = 2) -> torch.Tensor:
    """Pearson r (d_a, d_b), float32, of two sets of token profiles (from `token_profiles` on the same keys), each
    pair over the keys both features fire on; NaN where they share fewer than `min_common` keys or either side is
    constant there (such pairs never match)."""
    (xa, ma), (xb, mb) = pa, pb
    # float32 matmuls (one-thread budget). r is unchanged by shifting a feature's profile, so each profile is centred
    # on its own mean first: the sums of squares below then cancel far less.
    xa, xb = _centred(xa, ma), _centred(xb, mb)
    ma, mb = ma.float(), mb.float()
    n = ma @ mb.T
    sa, sb = xa @ mb.T, ma @ xb.T  # sums of a (b) over the common keys
    saa, sbb, sab = (xa * xa) @ mb.T, ma @ (xb * xb).T, xa @ xb.T
    cov = sab - sa * sb / n.clamp_min(1)
    var_a, var_b = saa - sa * sa / n.clamp_min(1), sbb - sb * sb / n.clamp_min(1)
    denom = (var_a.clamp_min(0) * var_b.clamp_min(0)).sqrt()
    ok = (n >= min_common) & (denom > 1e-5 * (saa * sbb).sqrt())
    r = torch.where(ok, cov / denom.clamp_min(1e-300), torch.full_like(cov, float("nan")))
    return r.clamp(-1, 1).float()


def _centred(x: torch.Tensor, fired: torch.Tensor) -> torch.Tensor:
    """Profiles (d, k) minus each row's mean over its fired keys, zero where it does not fire; float32."""
    x, f = x.double(), fired.double()
    mean = (x * f).sum(1, keepdim=True) / f.sum(1, keepdim=True).clamp_min(1)
    return ((x - mean) * f).float()


# --------------------------------------------------------------------------- flow matcher
def flow_candidates(Fa: torch.Tensor, Fb: torch.Tensor, ctx: int,
                    max_similarity: float = float("inf")) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of `ctx` consecutive tokens and parent feature: the distance averaged over child features and the
    candidate partner (see the module doc). Fa (n, d_a) parent, Fb (n, d_b) child activations on the same tokens ->
    (dist (S, d_a) float32, +inf where the parent feature does not fire in the sample; partner (S, d_a) int32, -1
    there and where the distance is not below `max_similarity`, which no similarity up to it can use)."""
    n, d_a = Fa.shape
    d_b = Fb.shape[1]
    S = n // ctx
    dist = np.full((S, d_a), np.inf, np.float32)
    partner = np.full((S, d_a), -1, np.int32)
    for s in range(S):
        fa = Fa[s * ctx:(s + 1) * ctx].float()  # (T, d_a), non-negative (ReLU codes)
        fb = Fb[s * ctx:(s + 1) * ctx].float()
        nb = fb / torch.linalg.vector_norm(fb, dim=1, keepdim=True).clamp_min(1e-12)  # per-token L2 normalisation
        A = torch.nonzero(fa.sum(0) != 0).flatten()
        if A.numel() == 0:
            continue
        fa = fa[:, A]  # (T, |A|)
        B = torch.nonzero((nb != 0).any(0)).flatten()  # active child features, sorted
        nb = nb[:, B]  # (T, |B|)
        base = fa.sum(0)  # (|A|,): the distance to a child feature silent in the sample
        # For f, n >= 0: |n - f| - f = n - 2 min(n, f), so the extra distance to an active child feature is
        # sum_t n_tb - 2 sum_t min(f_ta, n_tb), the second sum only over tokens where both fire.
        rows, cols, m = _co_firing_min(fa, nb)
        mean = base + (nb.sum() - 2 * torch.zeros(len(A)).index_add_(0, rows, m)) / d_b
        dist[s, A.numpy()] = mean.numpy()
        near = mean < max_similarity  # only these need their argmin, over the dense (|near|, |B|) extra distance
        if near.any():
            pos = torch.cumsum(near, 0) - 1
            keep = near[rows]
            co = torch.zeros(int(near.sum()), len(B)).index_put_((pos[rows[keep]], cols[keep]), m[keep],
                                                                  accumulate=True)
            extra = nb.sum(0)[None, :] - 2 * co
            partner[s, A[near].numpy()] = _argmin_first(extra, B, _first_absent(B, d_b), d_b).numpy()
    return dist, partner


def _co_firing_min(fa: torch.Tensor, nb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (token, i, j) triples where both non-negative (T, k) matrices fire (the sparse codes make these few), as
    (i, j, min(fa[t, i], nb[t, j])); summed over t they give sum_t min(fa[t, i], nb[t, j])."""
    ta, ia = torch.nonzero(fa, as_tuple=True)  # sorted by token
    tb, jb = torch.nonzero(nb, as_tuple=True)
    T = fa.shape[0]
    count_b = torch.bincount(tb, minlength=T)
    start_b = torch.cumsum(count_b, 0) - count_b
    reps = count_b[ta]  # child pairs on the token of each parent pair
    k = torch.repeat_interleave(torch.arange(len(ta)), reps)
    offset = torch.arange(int(reps.sum())) - torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
    kb = start_b[ta[k]] + offset
    return ia[k], jb[kb], torch.minimum(fa[ta[k], ia[k]], nb[tb[kb], jb[kb]])


def _argmin_first(extra: torch.Tensor, B: torch.Tensor, silent: int, d_b: int) -> torch.Tensor:
    """argmin over all d_b child features of (extra distance; 0 for the silent ones), first index on ties:
    extra (|A|, |B|) for the active child features B (sorted), `silent` the smallest silent index (d_b: none)."""
    n_a = extra.shape[0]
    if B.numel() == 0:
        return torch.full((n_a,), silent, dtype=torch.long)
    best, col = extra.min(1)
    if silent >= d_b:  # every child feature is active in the sample
        return B[col]
    if not (best >= 0).any():
        return B[col]
    tie = (extra == 0) & (B[None, :] < silent)
    first_tie = torch.where(tie, B[None, :].expand_as(tie), torch.full_like(tie, d_b, dtype=torch.long)).min(1).values
    return torch.where(best < 0, B[col], torch.where(tie.any(1), first_tie, torch.full_like(col, silent)))


def _first_absent(B: torch.Tensor, d: int) -> int:
    """The smallest index in [0, d) not in the sorted index tensor B (d if none)."""
    hits = torch.nonzero(B != torch.arange(len(B)))
    return int(hits[0]) if len(hits) else (len(B) if len(B) < d else d)


def flow_summary(dist: np.ndarray, partner: np.ndarray) -> dict[str, np.ndarray]:
    """What `flow_families` needs at any similarity, compactly: the first sample's distance and partner per parent
    feature, and for the later samples the (feature, distance) pairs whose partner differs from the first one's."""
    d0, p0 = dist[0], partner[0]
    later = (partner[1:] != p0[None, :]) & (partner[1:] >= 0)  # a candidate elsewhere than in the first sample
    rows, feats = np.nonzero(later)
    return {"dist0": d0, "partner0": p0, "other_feature": feats.astype(np.int32),
            "other_dist": dist[1:][rows, feats].astype(np.float32), "n_samples": np.array(len(dist))}


def flow_families(summary: dict, similarity: float, consistency: float) -> np.ndarray:
    """Each parent feature's consistent partner (d_a,) int, -1 for none: a candidate in the first sample at the
    given similarity, replaced by another candidate in at most 1 - `consistency` of the later samples."""
    d0, p0 = summary["dist0"], summary["partner0"]
    later = max(int(summary["n_samples"]) - 1, 1)
    hits = summary["other_dist"] < similarity
    changed = np.bincount(summary["other_feature"][hits], minlength=len(d0))
    keep = (d0 < similarity) & (p0 >= 0) & (changed / later <= 1 - consistency)
    return np.where(keep, p0, -1)
