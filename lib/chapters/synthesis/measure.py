"""06_synthesis, measure: the per-seed lenses averaged per pair, split into early and late halves, and the numbers
every rule and table reads. No plotting, no prose.

Late half = the layer points at depth > 0.5 (`lib.lenses.halves`). A pair's rule reads one value per seed of each
indicator (`indicators`): the late-half mean CKA to the base, the early-half one, their difference, and the late-half
relative weight change; a seed whose half has no finite point is left out of that indicator.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from lib import lenses
from lib.chapters.synthesis.build import PairLens, other_tokens
from lib.chapters.synthesis.config import Config

PER_LAYER = ("cka", "cka_alt", "weight", "m_patched", "recovery")
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
    out: dict[str, list[float]] = {"early_cka": [], "late_cka": [], "cka_drop": [], "late_weight": []}
    for r in p.runs or [p]:
        (ce, cl), (_, wl) = halves_mean(r.cka, r.n_layers), halves_mean(r.weight, r.n_layers)
        for key, v in (("early_cka", ce), ("late_cka", cl), ("cka_drop", ce - cl), ("late_weight", wl)):
            if np.isfinite(v):
                out[key].append(float(v))
    return out


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
    return {"notebook": p.notebook, "module": p.module, "pair": p.name, "n_layers": p.n_layers,
            "n_seeds": p.n_seeds, "chapter_testable": p.chapter_testable, "indicators": indicators(p),
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


def models_info(pairs: list[PairLens]) -> dict:
    """The results record's `models`: per pair, the base's family, depth, width and size."""
    return {f"{p.notebook}/{p.name}": {"family": p.family, "layers": p.n_layers, "d_model": p.d_model,
                                       "n_params": p.n_params} for p in pairs}
