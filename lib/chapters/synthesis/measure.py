"""06_synthesis, measure: the per-seed lenses averaged per pair, split into early and late halves, and the numbers
every rule and table reads. No plotting, no prose.

Late half = the layer points at depth > 0.5 (`lib.lenses.halves`). A pair's rule reads one value per seed of each
indicator (`indicators`): the late-half mean of the reuse index, the early-half one and their difference (and, for
the tables, the same of the raw CKA and the late-half relative weight change); a seed whose half has no finite point
is left out of that indicator.

The reuse index of seed s at layer point i (`index_runs`) is `lib.lenses.reuse_index` of that seed's CKA to the base,
its null and its seed ceiling. A pair with one seed has no ceiling: its index is shown against a ceiling of 1 (a
lower bound of the calibrated index, since a sibling seed's CKA is at most 1) and never decides a rule (one value,
no interval).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from lib import lenses, stats
from lib.chapters.synthesis.build import NULL_PAIRS, ONE_SEED, PairLens, other_tokens
from lib.chapters.synthesis.config import Config

PER_LAYER = ("cka", "cka_alt", "weight", "m_patched", "recovery", "null_cka", "null_cka_alt", "random_null_cka",
             "null_m_patched", "ceiling_cka", "ceiling_cka_alt")
SPREAD = ("cka", "weight", "recovery")
MEANS = ("head_change", "m_base", "m_tuned", "cka_final")


def aggregate(per_seed: list[PairLens]) -> list[PairLens]:
    """One lens per (chapter, pair): the mean over its seeds of every per-layer array and metric (NaN points left
    out of a mean; all-NaN stays NaN), with the per-seed lenses in `runs` and the per-layer sd in `sd`."""
    groups: dict[tuple[str, str], list[PairLens]] = {}
    for p in per_seed:
        groups.setdefault((p.notebook, p.name), []).append(p)
    out = []
    for ps in groups.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points (nothing to compare) stay NaN
            mean = {a: np.nanmean(np.stack([getattr(p, a) for p in ps]), 0) for a in PER_LAYER}
            sd = {a: (np.nanstd(np.stack([getattr(p, a) for p in ps]), 0, ddof=1) if len(ps) > 1
                      else np.full_like(mean[a], np.nan)) for a in SPREAD}
            scalars = {a: float(np.nanmean([getattr(p, a) for p in ps])) for a in MEANS}
        out.append(dataclasses.replace(ps[0], **mean, **scalars, runs=ps, sd=sd))
    return out


def halves_mean(values: np.ndarray, n_layers: int) -> tuple[float, float]:
    """Mean over the early (depth <= 0.5) and the late (depth > 0.5) layer points, NaN points left out."""
    def mean(v):
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else float("nan")

    early, late = lenses.halves(n_layers)
    return mean(values[early]), mean(values[late])


def late_spread(p: PairLens, attr: str) -> float:
    """Sample sd over seeds of the late-half mean of `attr` (NaN with one seed)."""
    v = np.asarray([halves_mean(getattr(r, attr), r.n_layers)[1] for r in p.runs or [p]])
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def indicators(p: PairLens) -> dict[str, list[float]]:
    """Per seed (finite values only): early- and late-half CKA, early minus late CKA, late-half weight change."""
    keys = ("early_cka", "late_cka", "cka_drop", "late_weight", "early_index", "late_index", "index_drop",
            "late_index_alt", "late_index_random_null")
    out: dict[str, list[float]] = {k: [] for k in keys}
    for r in p.runs or [p]:
        (ce, cl), (_, wl) = halves_mean(r.cka, r.n_layers), halves_mean(r.weight, r.n_layers)
        ie, il = halves_mean(index_of(r), r.n_layers)
        values = (ce, cl, ce - cl, wl, ie, il, ie - il, halves_mean(index_of(r, alt=True), r.n_layers)[1],
                  halves_mean(index_of(r, null="random"), r.n_layers)[1])
        for key, v in zip(keys, values):
            if np.isfinite(v):
                out[key].append(float(v))
    return out


# ---------------------------------------------------------------------------------------------- reuse index
def has_ceiling(p: PairLens) -> bool:
    """A seed ceiling was measured (the chapter trained at least two seeds of this pair from one base)."""
    return any(np.isfinite(r.ceiling_cka).any() for r in p.runs or [p])


def no_ceiling(p: PairLens) -> str:
    """Why a pair has no seed ceiling ("" if it has one): one seed, or seeds whose bases differ (no sibling)."""
    if has_ceiling(p):
        return ""
    return next((r.no_ceiling for r in p.runs or [p] if r.no_ceiling and r.no_ceiling != ONE_SEED), ONE_SEED)


def null_of(p: PairLens) -> str | None:
    """The pair this one is the null of (a control shown beside it, not a claim), else None."""
    return NULL_PAIRS.get((p.module, p.name))


def _ceiling(r: PairLens, alt: bool = False) -> np.ndarray:
    c = r.ceiling_cka_alt if alt else r.ceiling_cka
    return c if np.isfinite(c).any() else np.ones_like(c)  # one seed: the bound 1


def index_of(r: PairLens, alt: bool = False, null: str = "null") -> np.ndarray:
    """(n_layers + 1,) reuse index of one seed; `alt`: on the other CKA rows; null="random": against the random-init
    null instead of the pair's own (the comparison of the two nulls where a chapter has a scratch model)."""
    cka = r.cka_alt if alt else r.cka
    n = r.random_null_cka if null == "random" else (r.null_cka_alt if alt else r.null_cka)
    return lenses.reuse_index(cka, n, _ceiling(r, alt))


def index_runs(p: PairLens, alt: bool = False, null: str = "null") -> np.ndarray:
    """(n_seeds, n_layers + 1) reuse index per seed and layer point."""
    return np.stack([index_of(r, alt, null) for r in p.runs or [p]])


def index_band(p: PairLens) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, lo, hi) per layer point of the reuse index over seeds: the t-interval (lo = hi = mean with one seed)."""
    runs = index_runs(p)
    mean, lo, hi = (np.full(runs.shape[1], np.nan) for _ in range(3))
    for i in range(runs.shape[1]):
        v = runs[:, i][np.isfinite(runs[:, i])]
        if len(v):
            mean[i] = v.mean()
            lo[i], hi[i] = stats.t_interval(v) if len(v) > 1 else (v[0], v[0])
    return mean, lo, hi


def null_band(p: PairLens) -> np.ndarray:
    """Half-width per layer point of the null in index units: the sd over seeds of CKA(null, base) divided by the
    mean separation of ceiling and null (NaN with one seed): how far the index moves when only the null is redrawn."""
    runs = p.runs or [p]
    if len(runs) < 2:
        return np.full(p.n_layers + 1, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(np.stack([r.null_cka for r in runs]), 0, ddof=1)
        sep = np.nanmean(np.stack([_ceiling(r) - r.null_cka for r in runs]), 0)
    return np.where(sep > 0, sd / sep, np.nan)


def separation(p: PairLens) -> float:
    """The smaller over the two halves of the mean (seed ceiling - null) CKA: how well the lens tells a sibling seed
    from the null; the index means nothing when this is near 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sep = np.nanmean(np.stack([_ceiling(r) - r.null_cka for r in p.runs or [p]]), 0)
    early, late = halves_mean(sep, p.n_layers)
    return float(np.nanmin([early, late])) if np.isfinite([early, late]).any() else float("nan")


def late_dose(p: PairLens) -> float:
    """The fine-tuning dose of the headline figure: the late-half relative weight change (mean over seeds)."""
    return halves_mean(p.weight, p.n_layers)[1]


def first_recovery(p: PairLens, level: float) -> int | None:
    """The first layer point whose mean recovery exceeds `level` (None: never, or no gap to share)."""
    return lenses.first_above(p.recovery, level)


def recovery_from(p: PairLens, level: float) -> str:
    """Where the mean recovery first exceeds `level`, as text."""
    if np.isnan(p.recovery).all():
        return "NaN (change < min_gap)"
    i = first_recovery(p, level)
    return "never" if i is None else f"{lenses.point_labels(p.n_layers)[i]} (depth {p.depth[i]:.2f})"


def measured(p: PairLens, cfg: Config) -> dict:
    """Everything a rule of `claims.py` reads about one pair (aggregated over seeds)."""
    (ce, cl), (we, wl) = halves_mean(p.cka, p.n_layers), halves_mean(p.weight, p.n_layers)
    ind = indicators(p)
    mean = lambda k: float(np.mean(ind[k])) if ind[k] else float("nan")  # noqa: E731
    return {"notebook": p.notebook, "module": p.module, "pair": p.name, "n_layers": p.n_layers,
            "n_seeds": p.n_seeds, "chapter_testable": p.chapter_testable, "indicators": ind,
            "index_early": mean("early_index"), "index_late": mean("late_index"), "separation": separation(p),
            "has_ceiling": has_ceiling(p), "no_ceiling": no_ceiling(p), "null_of": null_of(p),
            "null_kind": p.null_kind, "index": index_band(p)[0].tolist(),
            "null_cka": p.null_cka.tolist(), "ceiling_cka": p.ceiling_cka.tolist(), "dose": late_dose(p),
            "cka_early": ce, "cka_late": cl, "weight_early": we, "weight_late": wl,
            "cka_late_sd": late_spread(p, "cka"), "weight_late_sd": late_spread(p, "weight"),
            "recovery_from": recovery_from(p, cfg.recovery_level), "recovery_level": cfg.recovery_level,
            "cka": p.cka.tolist(), "weight_change": p.weight.tolist(), "recovery": p.recovery.tolist(),
            "m_base": p.m_base, "m_tuned": p.m_tuned, "cka_final": p.cka_final}


def summary_table(pairs: list[PairLens], cfg: Config) -> pd.DataFrame:
    """One row per pair: seeds, early / late CKA (both row choices) and weight change, metric, recovery."""
    rows = []
    for p in pairs:
        (ce, cl), (we, wl) = halves_mean(p.cka, p.n_layers), halves_mean(p.weight, p.n_layers)
        rows.append({"chapter": p.notebook, "pair": p.name, "seeds": p.n_seeds, "CKA early": ce, "CKA late": cl,
                     "CKA late sd": late_spread(p, "cka"),
                     f"CKA late ({other_tokens(cfg)} rows)": halves_mean(p.cka_alt, p.n_layers)[1],
                     "CKA final norm": p.cka_final,
                     "Δw early": we, "Δw late": wl, "Δw late sd": late_spread(p, "weight"), "Δw head": p.head_change,
                     "metric base → tuned": f"{p.m_base:.3f} → {p.m_tuned:.3f}",
                     f"recovery > {cfg.recovery_level:g} from": recovery_from(p, cfg.recovery_level)})
    return pd.DataFrame(rows).set_index(["chapter", "pair"]).round(3)


def _ci(v: list[float]) -> str:
    if len(v) < 2:
        return "n=1, no interval"
    lo, hi = stats.t_interval(v)
    return f"[{lo:.2f}, {hi:.2f}]"


def index_table(pairs: list[PairLens], cfg: Config, sae: dict | None = None) -> pd.DataFrame:
    """One row per pair: the index's references (null, ceiling, their separation), the index early / late with the
    t-interval of the late one, the late index on the other rows and against the random-init null, the dose, the
    patching lens against its null, and for Horn & Elliott's pairs the SAE lens (persistence / seed control)."""
    rows = []
    for p in pairs:
        ind = indicators(p)
        mean = lambda k: float(np.mean(ind[k])) if ind[k] else float("nan")  # noqa: E731
        rec, rec_null = (halves_mean(lenses.recovery(a, p.m_base, p.m_tuned, cfg.min_gap), p.n_layers)[1]
                         for a in (p.m_patched, p.null_m_patched))
        row = {"chapter": p.notebook, "pair": p.name, "seeds": p.n_seeds, "null": p.null_kind,
               "ceiling": ("sibling seed" if has_ceiling(p) else f"1 ({no_ceiling(p)}: bound)") +
                          (f"; the null of {null_of(p)}" if null_of(p) else ""),
               "CKA late: tuned": halves_mean(p.cka, p.n_layers)[1],
               "CKA late: null": halves_mean(p.null_cka, p.n_layers)[1],
               "CKA late: ceiling": halves_mean(p.ceiling_cka, p.n_layers)[1], "separation": separation(p),
               "index early": mean("early_index"), "index late": mean("late_index"),
               "index late CI": _ci(ind["late_index"]),
               f"index late ({other_tokens(cfg)} rows)": mean("late_index_alt"),
               "index late (random-init null)": mean("late_index_random_null"),
               "Δw late (dose)": late_dose(p), "recovery late: tuned": rec, "recovery late: null": rec_null}
        if p.module == "horn":
            row["SAE persistence / control"] = sae["ratio"] if sae else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index(["chapter", "pair"]).round(3)


def models_info(pairs: list[PairLens]) -> dict:
    """The results record's `models`: per pair, the base's family, depth, width and size."""
    return {f"{p.notebook}/{p.name}": {"family": p.family, "layers": p.n_layers, "d_model": p.d_model,
                                       "n_params": p.n_params} for p in pairs}
