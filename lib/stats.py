"""The statistics every verdict uses: per-seed effects with an interval, sign and permutation tests, rank
correlation, equivalence. Plain numpy and scipy; every function takes the raw values and returns numbers.

    eff = effect([0.12, 0.08, 0.15])          # mean, sd, n, 95 % t-interval, one-sided sign-test p
    eff.lo > 0                                # the interval excludes no effect
    equivalence(-0.04, 0.07, bound=0.1)       # 'equivalent': the interval lies inside (-0.1, 0.1)

Decisions over seeds use these, never a mean against a margin alone: three seeds that all agree give a sign-test
p of 1/8, so a rule that needs p < 0.05 from a sign test needs at least five seeds; the t-interval is the test
that can decide with three.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

LEVEL = 0.95  # the confidence level of every interval in the book


def _clean(values) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    if np.isnan(v).any():
        raise ValueError("a per-seed value is NaN: the measurement failed upstream; fix it before deciding a claim")
    return v


@dataclass(frozen=True)
class Effect:
    """A per-seed effect summarised: mean, sample sd, n, a t-interval at `LEVEL`, and the sign test's p."""
    mean: float
    sd: float
    n: int
    lo: float
    hi: float
    p_sign: float  # one-sided exact sign test that the effect is > 0 (ties dropped)

    def text(self, fmt: str = "{:.3f}") -> str:
        """'m ± s (n=k), 95 % CI [lo, hi]' (no interval for one value)."""
        core = f"{fmt.format(self.mean)} ± {fmt.format(self.sd)} (n={self.n})"
        if self.n < 2:
            return core
        return core + f", {LEVEL:.0%} CI [{fmt.format(self.lo)}, {fmt.format(self.hi)}]"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "n": self.n, "lo": self.lo, "hi": self.hi, "p_sign": self.p_sign}


def mean_sd(values) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n); sd 0 for a single value."""
    v = _clean(values)
    if len(v) == 0:
        raise ValueError("no values")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def describe(values, fmt: str = "{:.3f}") -> str:
    """'m ± s (n=k)': the book's format for a mean over seeds."""
    m, s, n = mean_sd(values)
    return f"{fmt.format(m)} ± {fmt.format(s)} (n={n})"


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """Two-sided Student-t interval of the mean; (nan, nan) for fewer than two values."""
    v = _clean(values)
    if len(v) < 2:
        return math.nan, math.nan
    m, se = v.mean(), v.std(ddof=1) / math.sqrt(len(v))
    h = float(_st.t.ppf(0.5 + level / 2, len(v) - 1)) * se
    return float(m - h), float(m + h)


def sign_test(effects, alternative: str = "greater") -> float:
    """Exact sign test p-value: how often a fair coin gives at least this many positive signs (ties dropped).
    `alternative`: 'greater' (effect > 0), 'less' or 'two-sided'. 1.0 when every value is a tie."""
    v = _clean(effects)
    pos, neg = int((v > 0).sum()), int((v < 0).sum())
    if pos + neg == 0:
        return 1.0
    k = {"greater": pos, "less": neg}.get(alternative)
    if k is not None:
        return float(_st.binom.sf(k - 1, pos + neg, 0.5))
    if alternative != "two-sided":
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    return float(min(1.0, 2 * _st.binom.sf(max(pos, neg) - 1, pos + neg, 0.5)))


def effect(values, level: float = LEVEL) -> Effect:
    """The summary every seed-level decision starts from."""
    m, s, n = mean_sd(values)
    lo, hi = t_interval(values, level)
    return Effect(m, s, n, lo, hi, sign_test(values))


def bootstrap_interval(data, stat=np.mean, n_boot: int = 2000, level: float = LEVEL, seed: int = 0,
                       axis: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over resamples of `data` along `axis` (rows by default)."""
    x = np.asarray(data, dtype=float)
    if x.shape[axis] < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[axis], size=(n_boot, x.shape[axis]))
    boots = np.array([stat(np.take(x, i, axis=axis)) for i in idx])
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def permutation_test(a, b, n_perm: int = 10_000, seed: int = 0, alternative: str = "greater") -> float:
    """p-value that mean(a) - mean(b) is this large (alternative 'greater'), this small ('less') or this far from
    0 ('two-sided') when the group labels are exchangeable. Includes the observed split (p >= 1/(n_perm+1))."""
    a, b = _clean(a), _clean(b)
    pooled, na = np.concatenate([a, b]), len(a)
    obs = a.mean() - b.mean()
    rng = np.random.default_rng(seed)
    perms = np.array([(lambda p: p[:na].mean() - p[na:].mean())(rng.permutation(pooled)) for _ in range(n_perm)])
    if alternative == "greater":
        hits = (perms >= obs - 1e-12).sum()
    elif alternative == "less":
        hits = (perms <= obs + 1e-12).sum()
    elif alternative == "two-sided":
        hits = (np.abs(perms) >= abs(obs) - 1e-12).sum()
    else:
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    return float((hits + 1) / (n_perm + 1))


def rank_correlation(x, y, n_boot: int = 2000, level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho with a bootstrap interval over pairs: (rho, lo, hi). A constant input gives rho = nan."""
    x, y = _clean(x), _clean(y)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan
    rho = float(_st.spearmanr(x, y).statistic)
    xy = np.stack([x, y], axis=1)

    def stat(s):
        if np.ptp(s[:, 0]) == 0 or np.ptp(s[:, 1]) == 0:
            return 0.0
        return _st.spearmanr(s[:, 0], s[:, 1]).statistic

    lo, hi = bootstrap_interval(xy, stat, n_boot, level, seed)
    return rho, lo, hi


def equivalence(lo: float, hi: float, bound: float) -> str:
    """Two one-sided tests read from an interval: 'equivalent' if it lies inside (-bound, bound), 'different' if it
    lies wholly outside it, 'inconclusive' if it straddles a bound (or is undefined)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if -bound < lo and hi < bound:
        return "equivalent"
    if lo >= bound or hi <= -bound:
        return "different"
    return "inconclusive"
