"""06_synthesis, report: the overview figure (returned), the tables, the computed prose (Markdown) and the results
record. Every number in a sentence comes from the lenses or the claims of this run."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib import lenses, page, results, stats
from lib.chapters.synthesis import measure
from lib.chapters.synthesis import claims as rules
from lib.chapters.synthesis.build import PairLens, other_tokens
from lib.chapters.synthesis.config import CHAPTER, Config
from lib.chapters.synthesis.measure import first_recovery, halves_mean, late_spread, summary_table
from lib.claims import DECIDED, NOT_TESTABLE, VERDICTS, Claim

PAPER = ("Synthesis across the five papers: Lin 2024; Zhao, Ziser & Cohen 2024; Prakash et al. 2024; "
         "Tzach et al. 2025; Horn & Elliott 2024")
COLORS = {"lin": "#4c72b0", "zhao": "#dd8452", "prakash": "#55a868", "tzach": "#c44e52", "horn": "#8172b3"}
STYLES = ("-", "--", ":", "-.")


def _by_pair(claim_list: list[Claim]) -> dict[tuple[str, str], Claim]:
    return {(c.extra["notebook"], c.extra["pair"]): c for c in claim_list}


def _class(by: dict, p: PairLens) -> str:
    """The pair's class from its claim; a control pair (another pair's null) has no claim."""
    c = by.get((p.notebook, p.name))
    return c.extra["class"] if c is not None else f"control (the null of {measure.null_of(p)})"


def _chapters(pairs: list[PairLens]) -> list[str]:
    return list(dict.fromkeys(p.notebook for p in pairs))


# ---------------------------------------------------------------------------------------------- tables
def rules_text() -> page.Markdown:
    """The class rule and the rules the pairs are compared with, rendered from their declarations."""
    return page.md(f"A pair's class: {rules.class_text()}. Late half = layer points at depth > 0.5. The rules, with "
                   f"their thresholds (`index_reuse` = {rules.INDEX_REUSE:g}, `depth_margin` = {rules.DEPTH_MARGIN:g},"
                   f" `min_separation` = {rules.MIN_SEPARATION:g}; constants of `lib/chapters/synthesis/claims.py`, "
                   "not parameters):\n\n" + page.rules(rules.RULES).data)


def rules_table() -> pd.DataFrame:
    """Which rule each chapter's pairs are compared with, and its two indicators."""
    rows, seen = [], set()
    for m, part, rule in rules.FOR_PAIRS:
        which = f"name contains '{part}'" if part else ("the other pairs" if m in seen else "all pairs")
        seen.add(m)
        kind = rules.KIND[rule.id]
        rows.append({"chapter": m, "pairs": which, "rule": rule.id, "paper's conclusion": rule.claim,
                     "expects": kind, "indicators (late = depth > 0.5)": " and ".join(i.name for i in rules.KINDS[kind])})
    return pd.DataFrame(rows).set_index("chapter")


def table(pairs: list[PairLens], claim_list: list[Claim], cfg: Config) -> pd.DataFrame:
    """The measured summary with each pair's class, the rule's expectation and the verdict."""
    out = summary_table(pairs, cfg)
    by = _by_pair(claim_list)
    keys = list(out.index)
    control = {k for p in pairs if (k := (p.notebook, p.name)) not in by}
    lens = {(p.notebook, p.name): p for p in pairs}
    out["class"] = [_class(by, lens[k]) for k in keys]
    out["paper expects"] = ["—" if k in control else rules.KIND[by[k].extra["rule"]] for k in keys]
    out["verdict"] = ["— (a control, not a claim)" if k in control else by[k].verdict for k in keys]
    return out


# ---------------------------------------------------------------------------------------------- figure
def figure(pairs: list[PairLens], cfg: Config):
    """Rows: CKA to the base with its null (dashed) and seed ceiling (dotted), the reuse index, weight change,
    recovery with the null's (dashed); one column per chapter."""
    import matplotlib.pyplot as plt

    chapters = _chapters(pairs)
    fig, axes = plt.subplots(4, len(chapters), figsize=(2.5 * len(chapters) + 1.3, 9.0), sharex=True, sharey="row",
                             squeeze=False)
    for j, nb in enumerate(chapters):
        for k, p in enumerate(q for q in pairs if q.notebook == nb):
            style = dict(color=COLORS.get(p.module, f"C{j}"), ls=STYLES[k % len(STYLES)], marker="o", ms=3)
            index, lo, hi = measure.index_band(p)
            null_rec = lenses.recovery(p.null_m_patched, p.m_base, p.m_tuned, cfg.min_gap)
            for row, values in enumerate((p.cka, index, p.weight, p.recovery)):
                axes[row, j].plot(p.depth, values, label=p.name if row == 0 else None, **style)
            axes[0, j].plot(p.depth, p.null_cka, color=style["color"], ls="--", lw=0.9, alpha=0.7)
            axes[0, j].plot(p.depth, p.ceiling_cka, color=style["color"], ls=":", lw=0.9, alpha=0.7)
            axes[1, j].fill_between(p.depth, lo, hi, color=style["color"], alpha=0.15, lw=0)
            axes[3, j].plot(p.depth, null_rec, color=style["color"], ls="--", lw=0.9, alpha=0.7)
            for row, attr in ((2, "weight"), (3, "recovery")):
                if attr in p.sd and np.isfinite(p.sd[attr]).any():  # ± 1 sd over seeds
                    v = getattr(p, attr)
                    axes[row, j].fill_between(p.depth, v - p.sd[attr], v + p.sd[attr], color=style["color"],
                                              alpha=0.15, lw=0)
        axes[0, j].set_title(nb)
        axes[0, j].legend(fontsize=7, loc="best")
        axes[-1, j].set_xlabel("depth")
    est = " (debiased)" if cfg.debiased else ""
    labels = (f"CKA to base{est},\n{cfg.tokens} rows", "reuse index", "relative weight\nchange", "patching\nrecovery")
    for ax, label in zip(axes[:, 0], labels):
        ax.set_ylabel(label)
    axes[2, 0].set_yscale("symlog", linthresh=1e-2)
    for j in range(len(chapters)):
        for level in (0.0, 1.0):
            axes[1, j].axhline(level, c="k", lw=0.6)
        axes[1, j].axhline(rules.INDEX_REUSE, c="k", ls=":", lw=0.8)
        axes[3, j].axhline(1.0, c="k", ls=":", lw=0.8)
        axes[3, j].axhline(0, c="k", lw=0.6)
    fig.tight_layout()
    return fig


def headline_figure(pairs: list[PairLens], cfg: Config):
    """Left: each pair's late-half reuse index (mean, t-interval over seeds) against its fine-tuning dose (late-half
    relative weight change). Right: the index per layer point of every pair on one depth axis, with the null band."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.0, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    seen = set()
    for k, p in enumerate(pairs):
        color = COLORS.get(p.module, f"C{k}")
        late = measure.indicators(p)["late_index"]
        if not late or measure.null_of(p):  # a control pair is the null itself: its index is not a result
            continue
        m = float(np.mean(late))
        lo, hi = stats.t_interval(late) if len(late) > 1 else (m, m)
        bound = not measure.has_ceiling(p)
        label = p.notebook if p.notebook not in seen else None
        seen.add(p.notebook)
        ax.errorbar([measure.late_dose(p)], [m], yerr=[[m - lo], [hi - m]], fmt="o", color=color, capsize=3,
                    mfc="white" if bound else color, label=label)
        ax.annotate(p.name, (measure.late_dose(p), m), fontsize=6, xytext=(4, 3), textcoords="offset points")
        index, ilo, ihi = measure.index_band(p)
        bx.plot(p.depth, index, color=color, ls=STYLES[k % len(STYLES)], marker="o", ms=3, lw=1.2)
        band = measure.null_band(p)
        if np.isfinite(band).any():
            bx.fill_between(p.depth, -band, band, color="0.5", alpha=0.12, lw=0)
    for a in (ax, bx):
        a.axhline(0, c="k", lw=0.8)
        a.axhline(1, c="k", lw=0.8, ls="--")
        a.axhline(rules.INDEX_REUSE, c="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("fine-tuning dose: late-half relative weight change")
    ax.set_ylabel("late-half reuse index\n(0 = null, 1 = seed ceiling)")
    ax.legend(fontsize=7, loc="best")
    bx.set_xlabel("depth (0 = embeddings, 1 = last block)")
    bx.set_ylabel("reuse index")
    bx.set_title("every pair; grey: null ± 1 sd over seeds", fontsize=9)
    fig.tight_layout()
    return fig


def index_text(pairs: list[PairLens], claim_list: list[Claim], cfg: Config, sae: dict | None = None) -> page.Markdown:
    """Which null and ceiling each chapter's pairs got, and what the index says, computed from this run."""
    out = []
    for nb in _chapters(pairs):
        ps = [p for p in pairs if p.notebook == nb]
        nulls = ", ".join(dict.fromkeys(f"{p.name}: {p.null_kind}" for p in ps))
        claimed = [p for p in ps if not measure.null_of(p)]
        ceil = ("a sibling seed of each tuned model (a second fine-tune of the same base)"
                if all(measure.has_ceiling(p) for p in claimed) else
                "none for " + ", ".join(f"{p.name} ({measure.no_ceiling(p)})" for p in claimed
                                        if not measure.has_ceiling(p))
                + " (the index is shown against a ceiling of 1, a lower bound, so only 'above a threshold' is "
                "decided)")
        late = ", ".join(f"{p.name} {np.mean(v):.2f}" if (v := measure.indicators(p)["late_index"]) else
                         f"{p.name} n/a" for p in claimed)
        controls = [f"{p.name} is the null of {measure.null_of(p)}" for p in ps if measure.null_of(p)]
        line = (f"- *{nb}*: null {nulls}; seed ceiling: {ceil}. Late-half index (mean over seeds): {late}."
                + "".join(f" {c} (a control shown beside it, not a claim)." for c in controls))
        if ps[0].module == "lin":
            both = [(p.name, measure.indicators(p)) for p in ps if p.null_kind == "scratch"]
            for name, ind in both:
                if ind["late_index"] and ind["late_index_random_null"]:
                    line += (f" With the random-init null instead of the scratch model, {name}'s late index would "
                             f"be {np.mean(ind['late_index_random_null']):.2f} instead of "
                             f"{np.mean(ind['late_index']):.2f}: the calibration of the fallback null used where "
                             "a chapter has no scratch model.")
        if ps[0].module == "horn":
            line += (f" SAE lens (chapter 5's record): persistence with independent SAE seeds / the same-model seed "
                     f"control = {sae['ratio']:.2f} (over the four edges; {sae['verdict']} there)." if sae else
                     " SAE lens: chapter 5's results record of this profile is not there.")
        out.append(line)
    return page.md("\n".join(out))


# ---------------------------------------------------------------------------------------------- prose
def setup_text(pairs: list[PairLens], cfg: Config) -> page.Markdown:
    sizes = dict.fromkeys(f"{p.notebook}: {p.family}, {p.n_layers} blocks, d_model {p.d_model}, "
                          f"{p.n_params / 1e6:.2f} M parameters" for p in pairs)
    rows = ", ".join(f"{p.name} {p.n_rows}" for p in pairs)
    return page.md(f"Profile `{cfg.profile}`: {len(pairs)} pairs from {len(_chapters(pairs))} chapters "
                   f"({', '.join(_chapters(pairs))}). Models (base of each pair): {'; '.join(sizes)}. CKA rows "
                   f"({cfg.tokens} positions): {rows}.")


def _sd(p: PairLens, attr: str, digits: int) -> str:
    v = late_spread(p, attr)
    return f" ± {v:.{digits}f}" if np.isfinite(v) else ""


def _pair_sentence(p: PairLens, by: dict, cfg: Config) -> str:
    (ce, cl), (we, wl) = halves_mean(p.cka, p.n_layers), halves_mean(p.weight, p.n_layers)
    i = first_recovery(p, cfg.recovery_level)
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
                 f"{cfg.recovery_level:.0%} of the {change} from {lenses.point_labels(p.n_layers)[i]} "
                 f"(depth {p.depth[i]:.2f}) on")
    ae, al = halves_mean(p.cka_alt, p.n_layers)
    seeds = f" ({p.n_seeds} seeds)" if p.n_seeds > 1 else " (one seed)"
    final = f", after the final norm {p.cka_final:.2f}" if np.isfinite(p.cka_final) else ""
    return (f"**{p.name}**{seeds}: CKA to the base {ce:.2f} early / {cl:.2f}{_sd(p, 'cka', 2)} late{final} "
            f"({other_tokens(cfg)} rows: {ae:.2f} / {al:.2f}), relative weight change {we:.3f} / "
            f"{wl:.3f}{_sd(p, 'weight', 3)}; " + (f"reuse index late {_index(p)}: **{_class(by, p)}**" if not
                                                    measure.null_of(p) else f"**{_class(by, p)}**") + f"; {patch}.")


def _index(p: PairLens) -> str:
    v = measure.indicators(p)["late_index"]
    if not v:
        return "n/a"
    bound = "" if measure.has_ceiling(p) else f" (ceiling 1, a lower bound: {measure.no_ceiling(p)})"
    return f"{np.mean(v):.2f}" + (f" ± {np.std(v, ddof=1):.2f}" if len(v) > 1 else "") + bound


def chapter_text(pairs: list[PairLens], claim_list: list[Claim], cfg: Config) -> page.Markdown:
    """One bullet per chapter, one computed sentence per pair."""
    by = _by_pair(claim_list)
    return page.md("\n".join(f"- *{nb}*: " + " ".join(_pair_sentence(p, by, cfg) for p in pairs
                                                       if p.notebook == nb) for nb in _chapters(pairs)))


def _comparison(c: Claim) -> str:
    if c.verdict == NOT_TESTABLE:
        return f"for {c.extra['pair']} not testable at this scale ({c.precondition})"
    parts = ", ".join(f"{k} {d['verdict']}" for k, d in c.extra["indicators"].items())
    return f"for {c.extra['pair']} {c.verdict} ({parts})"


def _extra(ps: list[PairLens], by: dict, cfg: Config) -> str:
    """A chapter-specific computed remark on the detail of the paper's conclusion."""
    p0 = ps[0]
    cka = {p.name: halves_mean(p.cka, p.n_layers) for p in ps}
    if p0.module == "lin":
        t = [p for p in ps if not measure.null_of(p)]
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
        return (f" Early-minus-late CKA (mean over seeds): {drops} (the paper's pattern needs a drop whose interval "
                f"lies above {rules.DEPTH_MARGIN:g}).")
    if p0.module == "horn":
        late = [cl for _, cl in cka.values()]
        n_reuse = sum(by[p.notebook, p.name].extra["class"] == "reuse" for p in ps)
        head = f" (late CKA {min(late):.2f} to {max(late):.2f})"
        if n_reuse == len(ps):
            return (" The paper's claim is about SAE features, the lenses see whole layers: here every pair keeps "
                    f"its parent's layer geometry{head}, so whatever feature turnover the SAEs show happens inside a "
                    "largely preserved representation (CKA is dominated by the high-variance directions, an SAE "
                    "dictionary also by the rare ones).")
        return (f" The lenses see whole layers, the paper looked at SAE features; {n_reuse} of {len(ps)} pairs keep "
                f"their parent's layer geometry by the class rule{head}.")
    if p0.module in ("prakash", "tzach"):
        where = ", ".join(f"{p.name}: " + ("no change" if np.isnan(p.recovery).all() else
                                           "never" if (i := first_recovery(p, cfg.recovery_level)) is None
                                           else f"depth {p.depth[i]:.2f}") for p in ps)
        return (f" Where the tuned residual stream first carries more than {cfg.recovery_level:.0%} of the gain "
                f"when patched into the base: {where}; an early depth means the base's later layers can read the "
                "tuned model's states, i.e. they are reused.")
    return ""


def comparison_text(pairs: list[PairLens], claim_list: list[Claim], cfg: Config) -> page.Markdown:
    """One paragraph per chapter: the paper's conclusion, and whether and how our lenses agree with it."""
    by, out = _by_pair(claim_list), []
    for nb in _chapters(pairs):
        ps = [p for p in pairs if p.notebook == nb and not measure.null_of(p)]
        concl = list(dict.fromkeys(rules.rule_for(p.module, p.name).claim.rstrip(".") for p in ps))
        out.append(f"**{nb}.** {' / '.join(concl)}. At `{cfg.profile}` scale, "
                   + "; ".join(_comparison(by[nb, p.name]) for p in ps) + "." + _extra(ps, by, cfg))
    return page.md("\n\n".join(out))


def overall_text(pairs: list[PairLens], claim_list: list[Claim], cfg: Config) -> page.Markdown:
    by = _by_pair(claim_list)
    cls = [_class(by, p) for p in pairs]
    counts = {v: sum(c.verdict == v for c in claim_list) for v in VERDICTS}
    decided = sum(counts[v] for v in DECIDED)
    firsts = [(p, first_recovery(p, cfg.recovery_level)) for p in pairs
              if not np.isnan(p.recovery).all() and p.n_layers > 1]  # one block: no point inside the stack
    late = [p.name for p, i in firsts if i is not None and p.depth[i] > 0.5]
    by_class = "; ".join(f"{k}: {', '.join(p.name for p, c in zip(pairs, cls) if c == k)}"
                         for k in dict.fromkeys(cls))
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.items())
    return page.md(
        f"Of {len(pairs)} pairs, by the class rule: {by_class}. Against the papers' own conclusions: {verdicts} "
        f"({decided} decided). Patching: of the {len(firsts)} pairs with more than one block whose metric changed "
        f"by at least min_gap, {len(late)} carry more than {cfg.recovery_level:.0%} of the change in their residual "
        f"stream only in the late half (depth > 0.5: {', '.join(late) or 'none'}); in the others the base's "
        "remaining layers already turn the tuned model's earlier states into most of its behaviour.")


# ---------------------------------------------------------------------------------------------- results
def write_results(claim_list: list[Claim], cfg: Config, models: dict) -> dict:
    """results/06_synthesis.json; `scope` tells the scorecard to list these rows apart from the papers' claims."""
    return results.write(CHAPTER, PAPER, cfg.profile, models, claim_list, scope="synthesis",
                         rules={r.id: r.text() for r in rules.RULES}, late_half="layer points at depth > 0.5")
