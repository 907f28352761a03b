"""Notebook 06_synthesis: one set of lenses on every base -> tuned pair the chapters produce.

Every chapter module that defines `synthesis_pairs(profile) -> list[dict]` offers its base -> tuned pairs (loaded
from its cache; see the chapter brief): Lin's tuned and scratch models, Zhao et al.'s E1 and a control, Prakash
et al.'s tuned models, the BERT fine-tunes of Tzach et al., Horn & Elliott's fine-tunes and merge. They are found
automatically (`discover`): the chapters of `lib.chapters.NOTEBOOKS`, in order, without this page and the scorecard.

Each pair goes through the three lenses of `lib.synthesis` (CKA to the base, relative weight change, cross-model
patching recovery), one number per layer point at depth 0 (embeddings) ... 1 (last block). A pair is then
classified by explicit thresholds (Config):

    reuse    if  mean late-half CKA >= cka_reuse  and  mean late-half weight change <= weight_reuse
    rebuild  otherwise

(late half = layer points at depth > 0.5), and compared with its paper's own conclusion (`EXPECTATIONS`): each
conclusion names two criteria on the lenses; both hold = reproduced, one = partly, none = not reproduced.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from lib import models, results
from lib import synthesis as lens
from lib.config import Config as _Config, ConfigError, param
from lib.hooks import model_spec
from lib.results import Claim
from lib.chapters import NOTEBOOKS

CHAPTER = "06_synthesis"
PAPER = ("Synthesis across the five papers: Lin 2024; Zhao, Ziser & Cohen 2024; Prakash et al. 2024; "
         "Tzach et al. 2025; Horn & Elliott 2024")
SELF = "synthesis"
COLORS = {"lin": "#4c72b0", "zhao": "#dd8452", "prakash": "#55a868", "tzach": "#c44e52", "horn": "#8172b3"}
STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Expectation:
    """What a paper concluded about a pair, and the two criteria on our lenses that would agree with it."""

    kind: str  # "reuse" | "rebuild" | "late": early layers shared, later ones task-specific
    conclusion: str


# (module, substring of the pair's name, expectation); the first match wins.
EXPECTATIONS = (
    ("lin", "scratch", Expectation("rebuild", "Lin (2024): the model trained from scratch forms different, "
                                   "task-specific mechanisms (here its base is its own random initialisation)")),
    ("lin", "", Expectation("reuse", "Lin (2024): the fine-tuned model relies on pretrained representations, "
                            "particularly in later layers")),
    ("zhao", "", Expectation("late", "Zhao et al. (2024): early layers stay shared with the pre-trained model, "
                             "later layers become task-specific through instruction tuning")),
    ("prakash", "", Expectation("reuse", "Prakash et al. (2024): fine-tuning keeps the base model's entity-tracking "
                                "circuit and enhances it")),
    ("tzach", "", Expectation("reuse", "Tzach et al. (2025): fine-tuning builds on the pre-trained representation, "
                              "whose usefulness for the task grows along the blocks")),
    ("horn", "", Expectation("rebuild", "Horn & Elliott (2024): very few SAE features persist from parent to child, "
                             "through fine-tuning and through merging (a few generic or universal ones do)")),
)
DEFAULT_EXPECTATION = Expectation("reuse", "no conclusion registered for this chapter; compared with the common "
                                  "hypothesis that fine-tuning reuses the base")


@dataclass(frozen=True)
class Config(_Config):
    notebook = CHAPTER
    chapters: tuple[str, ...] = param((), choices=tuple(NOTEBOOKS),
                                      doc="notebooks whose pairs to include (empty: all with synthesis_pairs)")
    tokens: str = param("readout", choices=("readout", "all"),
                        doc="CKA rows: the positions the metric reads, or every non-padding token")
    debiased: bool = param(True, doc="unbiased HSIC in CKA (the biased one is inflated when rows ~ d_model)")
    cka_reuse: float = param(0.7, lo=0.0, hi=1.0, doc="reuse needs mean late-half CKA to the base >= this")
    weight_reuse: float = param(0.5, lo=0.0, hi=10.0, doc="reuse needs mean late-half relative weight change <= this")
    depth_margin: float = param(0.05, lo=0.0, hi=1.0,
                                doc="'later layers task-specific' needs early-half minus late-half CKA >= this")
    min_gap: float = param(0.02, lo=0.0, hi=1.0,
                           doc="recovery is NaN when |metric(tuned) - metric(base)| is below this")
    recovery_level: float = param(0.5, lo=0.0, hi=1.0, doc="the table reports where recovery first exceeds this")
    chunk: int = param(64, lo=1, hi=4096, doc="examples per forward pass when reading activations")
    n_seeds: int = param(3, lo=1, hi=20, doc="seeds per pair: each chapter's first n_seeds (fewer where it has fewer)")

    def validate(self):
        if SELF in {NOTEBOOKS[c] for c in self.chapters}:
            raise ConfigError("parameter 'chapters' names this notebook; choose chapters that offer pairs")


# ---------------------------------------------------------------------------------------------- discovery
class ChapterNotReady(RuntimeError):
    """A chapter's synthesis_pairs failed (usually: its models are not cached in this profile)."""


def discover(notebooks: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(notebook, module) of every chapter module with a `synthesis_pairs`, in notebook order (self and scorecard
    left out)."""
    found = []
    for nb, mod in (notebooks or NOTEBOOKS).items():
        if mod == SELF or "scorecard" in mod:
            continue
        if callable(getattr(importlib.import_module(f"lib.chapters.{mod}"), "synthesis_pairs", None)):
            found.append((nb, mod))
    return found


def chapter_pairs(notebook: str, module: str, profile: str, seed_index: int = 0) -> list[dict] | None:
    """The chapter's pairs for its `seed_index`-th seed, None past its last seed; any other failure becomes one
    ChapterNotReady naming the notebook to run first."""
    fn = importlib.import_module(f"lib.chapters.{module}").synthesis_pairs
    try:
        return fn(profile, seed_index=seed_index)
    except IndexError:
        if seed_index == 0:
            raise
        return None
    except Exception as e:
        raise ChapterNotReady(
            f"{CHAPTER} reads the cached models of {notebook}: run {notebook} in the {profile} profile first: "
            f"make run NB={notebook} PROFILE={profile}  ({notebook}'s synthesis_pairs raised "
            f"{type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------- measuring
@dataclass
class PairLens:
    """The three lenses of one pair; every array has one value per layer point (n_layers + 1)."""

    notebook: str
    module: str
    name: str
    family: str
    n_layers: int
    d_model: int
    n_params: int
    n_rows: int  # CKA rows (token positions) of the chosen readout
    cka: np.ndarray  # rows = cfg.tokens
    cka_alt: np.ndarray  # rows = the other choice ("all" if cfg.tokens is "readout", and the reverse)
    weight: np.ndarray
    head_change: float
    m_base: float
    m_tuned: float
    m_patched: np.ndarray
    recovery: np.ndarray
    seed_index: int = 0
    # aggregated over seeds (see `aggregate`): the per-seed lenses, and the sd over them of cka / weight / recovery
    runs: list = field(default_factory=list, repr=False)
    sd: dict = field(default_factory=dict, repr=False)

    @property
    def n_seeds(self) -> int:
        return max(1, len(self.runs))

    def late_spread(self, attr: str) -> float:
        """Sample sd over seeds of the late-half mean of `attr` (NaN with one seed)."""
        v = [halves_mean(getattr(r, attr), r.n_layers)[1] for r in self.runs]
        v = np.asarray([x for x in v if np.isfinite(x)])
        return float(v.std(ddof=1)) if len(v) > 1 else float("nan")

    @property
    def depth(self) -> np.ndarray:
        return lens.depth_fraction(self.n_layers)


def measure(notebook: str, module: str, pair: dict, cfg: Config, seed_index: int = 0) -> PairLens:
    base, tuned, inputs = pair["base"].eval(), pair["tuned"].eval(), pair["inputs"]
    spec = model_spec(base)
    cka = lens.cka_lens(base, tuned, inputs, cfg.tokens, cfg.debiased, cfg.chunk)
    cka_alt = lens.cka_lens(base, tuned, inputs, other_tokens(cfg), cfg.debiased, cfg.chunk)
    weight, head = lens.weight_lens(base, tuned)
    patch = lens.patching_lens(base, tuned, inputs, pair["metric"], cfg.min_gap)
    rows = int(lens.token_mask(base, inputs, cfg.tokens).sum())
    return PairLens(notebook, module, pair["name"], spec.family, spec.n_layers, spec.d_model, models.n_params(base),
                    rows, cka, cka_alt, weight, head, patch["m_base"], patch["m_tuned"], patch["m_patched"],
                    patch["recovery"], seed_index)


def other_tokens(cfg: Config) -> str:
    return "all" if cfg.tokens == "readout" else "readout"


def run(cfg: Config) -> list[PairLens]:
    """Every pair of every (chosen) chapter through the three lenses for each of the chapter's first `n_seeds`
    seeds, one chapter seed's models in memory at a time; returns the lenses averaged over seeds (`aggregate`)."""
    out = []
    chosen = [(nb, m) for nb, m in discover() if not cfg.chapters or nb in cfg.chapters]
    for nb, mod in chosen:
        for i in range(cfg.n_seeds):
            with torch.no_grad():
                pairs = chapter_pairs(nb, mod, cfg.profile, i)
                if pairs is None:  # the chapter has fewer seeds
                    break
                out += [measure(nb, mod, p, cfg, i) for p in pairs]
            del pairs
    if not out:
        raise ChapterNotReady(f"no chapter offered a pair (chapters: {list(cfg.chapters) or 'all'})")
    return aggregate(out)


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
            mean = {a: np.nanmean(np.stack([getattr(p, a) for p in ps]), 0)
                    for a in ("cka", "cka_alt", "weight", "m_patched", "recovery")}
            sd = {a: (np.nanstd(np.stack([getattr(p, a) for p in ps]), 0, ddof=1) if len(ps) > 1
                      else np.full_like(mean[a], np.nan)) for a in ("cka", "weight", "recovery")}
        scalars = {a: float(np.mean([getattr(p, a) for p in ps])) for a in ("head_change", "m_base", "m_tuned")}
        out.append(dataclasses.replace(ps[0], **mean, **scalars, runs=ps, sd=sd))
    return out


# ---------------------------------------------------------------------------------------------- rules
def halves_mean(values: np.ndarray, n_layers: int) -> tuple[float, float]:
    """Mean over the early (depth <= 0.5) and the late (depth > 0.5) layer points, NaN points left out."""
    def mean(v):
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else float("nan")

    early, late = lens.halves(n_layers)
    return mean(values[early]), mean(values[late])


def expectation(p: PairLens) -> Expectation:
    for mod, part, exp in EXPECTATIONS:
        if p.module == mod and part in p.name:
            return exp
    return DEFAULT_EXPECTATION


def criteria(p: PairLens, cfg: Config) -> dict[str, bool]:
    """Every criterion the classes and verdicts are made of, each True or False (NaN halves count as False)."""
    cka_e, cka_l = halves_mean(p.cka, p.n_layers)
    _, w_l = halves_mean(p.weight, p.n_layers)
    return {"late CKA ≥ cka_reuse": cka_l >= cfg.cka_reuse, "late Δw ≤ weight_reuse": w_l <= cfg.weight_reuse,
            "late CKA < cka_reuse": cka_l < cfg.cka_reuse, "late Δw > weight_reuse": w_l > cfg.weight_reuse,
            "early CKA ≥ cka_reuse": cka_e >= cfg.cka_reuse,
            "early − late CKA ≥ depth_margin": cka_e - cka_l >= cfg.depth_margin}


def classify(p: PairLens, cfg: Config) -> str:
    c = criteria(p, cfg)
    return "reuse" if c["late CKA ≥ cka_reuse"] and c["late Δw ≤ weight_reuse"] else "rebuild"


_CRIT = {"reuse": ("late CKA ≥ cka_reuse", "late Δw ≤ weight_reuse"),
         "rebuild": ("late CKA < cka_reuse", "late Δw > weight_reuse"),
         "late": ("early CKA ≥ cka_reuse", "early − late CKA ≥ depth_margin")}


def expected_criteria(p: PairLens, cfg: Config) -> dict[str, bool]:
    """The two criteria of the paper's conclusion, each True when our lenses agree with it."""
    c = criteria(p, cfg)
    return {k: c[k] for k in _CRIT[expectation(p).kind]}


def verdict(p: PairLens, cfg: Config) -> str:
    agree = sum(expected_criteria(p, cfg).values())
    return ("not reproduced", "partly", "reproduced")[agree]


# ---------------------------------------------------------------------------------------------- tables
def _where(p: PairLens, level: float) -> str:
    i = lens.first_above(p.recovery, level)
    if np.isnan(p.recovery).all():
        return "NaN (change < min_gap)"
    return "never" if i is None else f"{lens.point_labels(p.n_layers)[i]} (depth {p.depth[i]:.2f})"


def summary_table(lenses: list[PairLens], cfg: Config) -> pd.DataFrame:
    rows = []
    for p in lenses:
        (ce, cl), (we, wl) = halves_mean(p.cka, p.n_layers), halves_mean(p.weight, p.n_layers)
        rows.append({"chapter": p.notebook, "pair": p.name, "seeds": p.n_seeds, "CKA early": ce, "CKA late": cl,
                     "CKA late sd": p.late_spread("cka"),
                     f"CKA late ({other_tokens(cfg)} rows)": halves_mean(p.cka_alt, p.n_layers)[1],
                     "Δw early": we, "Δw late": wl, "Δw late sd": p.late_spread("weight"),
                     "Δw head": p.head_change,
                     "metric base → tuned": f"{p.m_base:.3f} → {p.m_tuned:.3f}",
                     f"recovery > {cfg.recovery_level:g} from": _where(p, cfg.recovery_level),
                     "class": classify(p, cfg), "paper expects": expectation(p).kind, "verdict": verdict(p, cfg)})
    return pd.DataFrame(rows).set_index(["chapter", "pair"]).round(3)


def rules_table() -> pd.DataFrame:
    """The paper conclusions the pairs are compared with, and the two criteria that agree with each."""
    rows, seen = [], set()
    for m, part, e in EXPECTATIONS:
        which = f"name contains '{part}'" if part else ("the other pairs" if m in seen else "all pairs")
        seen.add(m)
        rows.append({"chapter module": m, "pairs": which, "paper's conclusion": e.conclusion, "expects": e.kind,
                     "criteria that agree (late = depth > 0.5)": " and ".join(_CRIT[e.kind])})
    return pd.DataFrame(rows).set_index("chapter module")


# ---------------------------------------------------------------------------------------------- figure
def plot(lenses: list[PairLens], cfg: Config):
    """Rows: CKA (chosen rows), CKA (the other rows), weight change, recovery; one column per chapter."""
    import matplotlib.pyplot as plt

    chapters = list(dict.fromkeys(p.notebook for p in lenses))
    fig, axes = plt.subplots(4, len(chapters), figsize=(2.5 * len(chapters) + 1.3, 9.0), sharex=True, sharey="row",
                             squeeze=False)
    for j, nb in enumerate(chapters):
        for k, p in enumerate(q for q in lenses if q.notebook == nb):
            style = dict(color=COLORS.get(p.module, f"C{j}"), ls=STYLES[k % len(STYLES)], marker="o", ms=3)
            for row, (attr, values) in enumerate(zip(("cka", "cka_alt", "weight", "recovery"),
                                                     (p.cka, p.cka_alt, p.weight, p.recovery))):
                axes[row, j].plot(p.depth, values, label=p.name if row == 0 else None, **style)
                if attr in p.sd and np.isfinite(p.sd[attr]).any():  # ± 1 sd over seeds
                    axes[row, j].fill_between(p.depth, values - p.sd[attr], values + p.sd[attr],
                                              color=style["color"], alpha=0.15, lw=0)
        axes[0, j].set_title(nb)
        axes[0, j].legend(fontsize=7, loc="best")
        axes[-1, j].set_xlabel("depth")
    est = " (debiased)" if cfg.debiased else ""
    labels = (f"CKA to base{est},\n{cfg.tokens} rows", f"CKA to base{est},\n{other_tokens(cfg)} rows",
              "relative weight\nchange", "patching\nrecovery")
    for ax, label in zip(axes[:, 0], labels):
        ax.set_ylabel(label)
    axes[2, 0].set_yscale("symlog", linthresh=1e-2)
    for j in range(len(chapters)):
        for row, level in ((0, cfg.cka_reuse), (1, cfg.cka_reuse), (2, cfg.weight_reuse), (3, 1.0)):
            axes[row, j].axhline(level, c="k", ls=":", lw=0.8)
        axes[3, j].axhline(0, c="k", lw=0.6)
    plt.tight_layout()
    plt.show()


# ---------------------------------------------------------------------------------------------- prose
def setup_text(lenses: list[PairLens], cfg: Config) -> str:
    sizes = dict.fromkeys(f"{p.notebook}: {p.family}, {p.n_layers} blocks, d_model {p.d_model}, "
                          f"{p.n_params / 1e6:.2f} M parameters" for p in lenses)
    rows = ", ".join(f"{p.name} {p.n_rows}" for p in lenses)
    return (f"Profile `{cfg.profile}`: {len(lenses)} pairs from {len({p.notebook for p in lenses})} chapters "
            f"({', '.join(dict.fromkeys(p.notebook for p in lenses))}). Models (base of each pair): "
            f"{'; '.join(sizes)}. CKA rows ({cfg.tokens} positions): {rows}.")


def _pair_sentence(p: PairLens, cfg: Config) -> str:
    (ce, cl), (we, wl) = halves_mean(p.cka, p.n_layers), halves_mean(p.weight, p.n_layers)
    i = lens.first_above(p.recovery, cfg.recovery_level)
    gain = f"metric {p.m_base:.3f} (base) → {p.m_tuned:.3f} (tuned)"
    change = "gain" if p.m_tuned >= p.m_base else "loss (the tuned model scores lower)"
    if np.isnan(p.recovery).all():
        patch = (f"the {gain} differs by less than min_gap = {cfg.min_gap:g}, so there is no change to share out "
                 "(recovery NaN)")
    elif i is None:
        patch = (f"{gain}; patching the tuned residual stream into the base never reproduces more than "
                 f"{cfg.recovery_level:.0%} of the {change} (at most {np.nanmax(p.recovery):.2f})")
    else:
        patch = (f"{gain}; the tuned residual stream patched into the base reproduces more than "
                 f"{cfg.recovery_level:.0%} of the {change} from {lens.point_labels(p.n_layers)[i]} "
                 f"(depth {p.depth[i]:.2f}) on")
    ae, al = halves_mean(p.cka_alt, p.n_layers)
    return (f"**{p.name}**{_seeds(p)}: CKA to the base {ce:.2f} early / {cl:.2f}{_sd(p, 'cka', 2)} late "
            f"({other_tokens(cfg)} rows: {ae:.2f} / {al:.2f}), relative weight change {we:.3f} / "
            f"{wl:.3f}{_sd(p, 'weight', 3)}: **{classify(p, cfg)}**; {patch}.")


def _seeds(p: PairLens) -> str:
    return f" ({p.n_seeds} seeds)" if p.n_seeds > 1 else " (one seed)"


def _sd(p: PairLens, attr: str, digits: int) -> str:
    """' ± sd' over seeds of the late-half mean, empty with one seed."""
    v = p.late_spread(attr)
    return f" ± {v:.{digits}f}" if np.isfinite(v) else ""


def chapter_text(lenses: list[PairLens], cfg: Config) -> str:
    """One bullet per chapter, one computed sentence per pair."""
    out = []
    for nb in dict.fromkeys(p.notebook for p in lenses):
        out.append(f"- *{nb}*: " + " ".join(_pair_sentence(p, cfg) for p in lenses if p.notebook == nb))
    return "\n".join(out)


_AGREE = {"reproduced": "our lenses agree on both counts", "partly": "our lenses agree on one count of two",
          "not reproduced": "our lenses agree on neither count"}


def _comparison(p: PairLens, cfg: Config) -> str:
    crit = expected_criteria(p, cfg)
    held = [k for k, v in crit.items() if v]
    failed = [k for k, v in crit.items() if not v]
    why = (f" (holds: {', '.join(held) or 'none'}; fails: {', '.join(failed) or 'none'})")
    return f"for {p.name} {_AGREE[verdict(p, cfg)]}{why}"


def _extra(nb_lenses: list[PairLens], cfg: Config) -> str:
    """A chapter-specific computed remark on the detail of the paper's conclusion."""
    p0 = nb_lenses[0]
    cka = {p.name: halves_mean(p.cka, p.n_layers) for p in nb_lenses}
    if p0.module == "lin":
        t = [p for p in nb_lenses if "scratch" not in p.name]
        if t:
            ce, cl = cka[t[0].name]
            rel = "about as high as" if abs(cl - ce) < 0.01 else "higher than" if cl > ce else "lower than"
            tail = {"higher than": "as the paper says.", "about as high as": "no later-layer emphasis either way.",
                    "lower than": "so at this scale the later layers are where the base changes most, the opposite "
                                  "of the paper's emphasis."}[rel]
            return (f" Lin's \"particularly in later layers\": the tuned model's late-half CKA to the base is {rel} "
                    f"its early-half CKA ({cl:.2f} vs {ce:.2f}), {tail}")
    if p0.module == "zhao":
        drops = ", ".join(f"{n} {ce - cl:+.2f}" for n, (ce, cl) in cka.items())
        return f" Early-minus-late CKA: {drops} (the paper's pattern needs a positive drop ≥ {cfg.depth_margin:g})."
    if p0.module == "horn":
        late = [halves_mean(p.cka, p.n_layers)[1] for p in nb_lenses]
        n_reuse = sum(classify(p, cfg) == "reuse" for p in nb_lenses)
        head = f" (late CKA {min(late):.2f} to {max(late):.2f})"
        if n_reuse == len(nb_lenses):
            return (" The paper's claim is about SAE features, the lenses see whole layers: here every pair keeps "
                    f"its parent's layer geometry{head}, so whatever feature turnover the SAEs show happens inside a "
                    "largely preserved representation (CKA is dominated by the high-variance directions, an SAE "
                    "dictionary also by the rare ones).")
        if n_reuse == 0:
            return (" The paper's claim is about SAE features, the lenses see whole layers: here no pair keeps its "
                    f"parent's layer geometry{head}, which agrees with low feature persistence at the level of the "
                    "whole layer.")
        return (f" The lenses see whole layers, the paper looked at SAE features; {n_reuse} of {len(nb_lenses)} "
                f"pairs keep their parent's layer geometry{head}.")
    if p0.module in ("prakash", "tzach"):
        firsts = [lens.first_above(p.recovery, cfg.recovery_level) for p in nb_lenses]
        where = ", ".join(f"{p.name}: " + ("no change" if np.isnan(p.recovery).all() else "never" if i is None
                                           else f"depth {p.depth[i]:.2f}") for p, i in zip(nb_lenses, firsts))
        return (f" Where the tuned residual stream first carries more than {cfg.recovery_level:.0%} of the gain "
                f"when patched into the base: {where}; an early depth means the base's later layers can read the "
                "tuned model's states, i.e. they are reused.")
    return ""


def comparison_text(lenses: list[PairLens], cfg: Config) -> str:
    """One paragraph per chapter: the paper's conclusion, and whether and how our lenses agree with it."""
    out = []
    for nb in dict.fromkeys(p.notebook for p in lenses):
        ps = [p for p in lenses if p.notebook == nb]
        concl = list(dict.fromkeys(expectation(p).conclusion for p in ps))
        out.append(f"**{nb}.** {' / '.join(concl)}. At `{cfg.profile}` scale, "
                   + "; ".join(_comparison(p, cfg) for p in ps) + "." + _extra(ps, cfg))
    return "\n\n".join(out)


def overall_text(lenses: list[PairLens], cfg: Config) -> str:
    cls = [classify(p, cfg) for p in lenses]
    verdicts = [verdict(p, cfg) for p in lenses]
    reuse = [p.name for p, c in zip(lenses, cls) if c == "reuse"]
    firsts = [(p, lens.first_above(p.recovery, cfg.recovery_level)) for p in lenses
              if not np.isnan(p.recovery).all() and p.n_layers > 1]  # one block: no point inside the stack
    late = [p.name for p, i in firsts if i is not None and p.depth[i] > 0.5]
    return (f"Of {len(lenses)} pairs, {len(reuse)} count as reuse by the rule ({', '.join(reuse) or 'none'}) and "
            f"{len(lenses) - len(reuse)} as rebuild. Against the papers' own conclusions: "
            f"{verdicts.count('reproduced')} reproduced, {verdicts.count('partly')} partly, "
            f"{verdicts.count('not reproduced')} not reproduced. Patching: of the {len(firsts)} pairs with more than "
            f"one block whose metric changed by at least min_gap, {len(late)} carry more than "
            f"{cfg.recovery_level:.0%} of the change in their residual stream only in the late half (depth > 0.5: "
            f"{', '.join(late) or 'none'}); in the others the base's remaining layers already turn the tuned model's "
            "earlier states into most of its behaviour.")


# ---------------------------------------------------------------------------------------------- results
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def claims(lenses: list[PairLens], cfg: Config) -> list[Claim]:
    out = []
    for p in lenses:
        (ce, cl), (we, wl) = halves_mean(p.cka, p.n_layers), halves_mean(p.weight, p.n_layers)
        exp, crit = expectation(p), expected_criteria(p, cfg)
        ours = (f"{classify(p, cfg)}: CKA early {ce:.2f} / late {cl:.2f}{_sd(p, 'cka', 2)}, Δw early {we:.3f} / "
                f"late {wl:.3f}{_sd(p, 'weight', 3)}, recovery > {cfg.recovery_level:g} from "
                f"{_where(p, cfg.recovery_level)} (mean of {p.n_seeds} seed{'s' if p.n_seeds > 1 else ''})")
        reason = ("criteria of '" + exp.kind + "': " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in crit.items())
                  + f" (cka_reuse {cfg.cka_reuse:g}, weight_reuse {cfg.weight_reuse:g}, depth_margin "
                  f"{cfg.depth_margin:g}; on the mean over seeds)")
        out.append(Claim(f"{p.module}:{_slug(p.name)}", exp.conclusion + ".", f"qualitative: {exp.kind}", ours,
                         verdict(p, cfg), reason, value=cl, n=p.n_seeds,
                         spread=_finite(p.late_spread("cka")),
                         extra={"notebook": p.notebook, "class": classify(p, cfg), "cka": p.cka.tolist(),
                                "weight_change": p.weight.tolist(), "recovery": p.recovery.tolist(),
                                "m_base": p.m_base, "m_tuned": p.m_tuned,
                                "late_cka_per_seed": [halves_mean(r.cka, r.n_layers)[1] for r in p.runs]}))
    return out


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


def verdict_table(claim_list: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([{"pair": c.id, "paper": c.claim, "ours": c.ours, "verdict": c.verdict, "why": c.reason}
                         for c in claim_list]).set_index("pair")


def write_results(lenses: list[PairLens], claim_list: list[Claim], cfg: Config) -> dict:
    info = {f"{p.module}:{p.name}": {"family": p.family, "layers": p.n_layers, "d_model": p.d_model,
                                     "n_params": p.n_params} for p in lenses}
    rules = {"reuse": f"late-half CKA >= {cfg.cka_reuse} and late-half weight change <= {cfg.weight_reuse}",
             "verdict": "two criteria per paper conclusion: both hold = reproduced, one = partly, none = not "
                        "reproduced", "late_half": "layer points at depth > 0.5"}
    return results.write(CHAPTER, PAPER, cfg.profile, info, claim_list, rules=rules)
