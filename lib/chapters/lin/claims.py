"""Lin (2024)'s claims as rules, each decided over seeds (lib.claims, lib.stats).

The abstract's four claims are qualitative (no numbers could be retrieved, no code was published), so the margins
below are ours, stated once: the page renders each rule's text from the same constants the test reads.

- `both_solve`: every run (kind, seed) is an indicator that holds if it reaches the accuracy criterion.
- `tuned_reuses_base`: per seed, CKA(tuned, base) - CKA(scratch, base) averaged over blocks, at each readout.
- `later_layers`: per seed, the later half of the blocks minus the earlier half, on four indicators.
- `scratch_differs`: per seed, scratch-scratch' CKA above tuned-scratch CKA, and the irrelevant stream less
  decodable in scratch than in tuned.

An indicator over seeds holds when the t-interval of its per-seed effect lies wholly beyond its margin and fails
when it lies wholly on the other side (`claims.by_interval`); several indicators combine by majority
(`claims.by_indicators`). The claims about representations are tested only where both kinds solve the task.
"""
from __future__ import annotations

import pandas as pd

from lib import stats
from lib.claims import NOT_REPRODUCED, REPRODUCED, Claim, Requirement, Rule, by_indicators, by_interval, from_bool

from .measure import READOUTS, SCRATCH_REF, Measured, layer_means

PAPER_CLAIM = "qualitative (abstract)"
CKA_MARGIN = 0.1  # a CKA gap counts when its interval lies above this
PROBE_MARGIN = 0.05  # a probe-accuracy gap counts when its interval lies above this
SOLVED_SHARE = 0.5  # a kind solves the task when at least this share of its seeds reaches the criterion
LEVEL = stats.LEVEL

SOLVED = Requirement("the share of seeds reaching the criterion, for the kind with fewer", "solved",
                     at_least=SOLVED_SHARE)
TWO_BLOCKS = Requirement("the number of blocks", "blocks", at_least=2)

BOTH_SOLVE = Rule(
    "both_solve", claim="Both the fine-tuned and the from-scratch model solve the task.", paper=PAPER_CLAIM,
    test="each run (tuned and scratch, every seed) is an indicator that holds if its validation accuracy reaches "
         "the criterion; reproduced if every run does, partly if a strict majority does, else not reproduced")

REUSE = Rule(
    "tuned_reuses_base", claim="The fine-tuned model depends heavily on pretrained representations.",
    paper=PAPER_CLAIM,
    test="at each readout (the last prompt token; all prompt tokens) the per-seed CKA(tuned, base) - "
         "CKA(scratch, base), averaged over blocks, is an indicator that holds if the {level:.0%} t-interval of "
         "its mean lies above {margin} and fails if it lies at or below it; reproduced if both readouts hold, not "
         "reproduced if one fails, else inconclusive",
    constants={"margin": CKA_MARGIN, "level": LEVEL}, requires=(SOLVED,))

LATER = Rule(
    "later_layers", claim="Reliance on pretrained representations is strongest in later layers.",
    paper=PAPER_CLAIM,
    test="per seed, the later half of the blocks minus the earlier half on four indicators: CKA(tuned, base) at "
         "the last prompt token and over all prompt tokens (higher later), the relative weight change (lower "
         "later), the accuracy drop when one block is restored to base (lower later); an indicator holds if the "
         "{level:.0%} t-interval of its per-seed effect lies wholly on the later side of 0 and fails if wholly on "
         "the other; reproduced if all four hold, partly if three do, not reproduced if two or more fail, else "
         "inconclusive",
    constants={"level": LEVEL}, requires=(SOLVED, TWO_BLOCKS))

SCRATCH = Rule(
    "scratch_differs", claim="The from-scratch model develops different, more task-specific mechanisms.",
    paper=PAPER_CLAIM,
    test="two indicators over seeds: (a) at the last prompt token, CKA(scratch, scratch') - CKA(tuned, scratch) "
         "averaged over blocks, above {cka_margin}; (b) at the last block, the irrelevant-evidence probe accuracy "
         "of tuned minus that of scratch, above {probe_margin}; each holds if the {level:.0%} t-interval of its "
         "per-seed mean lies above its margin and fails if at or below it; reproduced if both hold, not "
         "reproduced if one fails, else inconclusive",
    constants={"cka_margin": CKA_MARGIN, "probe_margin": PROBE_MARGIN, "level": LEVEL}, requires=(SOLVED,))

RULES = (BOTH_SOLVE, REUSE, LATER, SCRATCH)


# ------------------------------------------------------------------------------------------------ per-seed effects
def halves(n_layers: int) -> tuple[list[int], list[int]]:
    """Earlier and later half of the blocks (the middle block of an odd count belongs to neither)."""
    return list(range(n_layers // 2)), list(range((n_layers + 1) // 2, n_layers))


def per_seed(df: pd.DataFrame, value: str, where: dict | None = None) -> pd.DataFrame:
    """`value` as a (seed x layer) table, rows filtered by `where` = {column: value}."""
    for col, v in (where or {}).items():
        df = df[df[col] == v]
    return df.pivot_table(index="seed", columns="layer", values=value, aggfunc="mean")


def late_minus_early(table: pd.DataFrame) -> pd.Series:
    """Per seed: mean over the later half of the blocks minus mean over the earlier half (columns are blocks)."""
    table = table[[c for c in table.columns if c >= 0]]  # the embeddings (layer -1) are no block
    early, late = halves(table.shape[1])
    cols = list(table.columns)
    return table[[cols[i] for i in late]].mean(axis=1) - table[[cols[i] for i in early]].mean(axis=1)


def reuse_gaps(cka: pd.DataFrame, tokens: str) -> pd.Series:
    """Per seed: CKA(tuned, base) - CKA(scratch, base), averaged over blocks, at one readout."""
    where = {"tokens": tokens}
    return (per_seed(cka, "cka", {**where, "pair": "tuned vs base"}).mean(axis=1)
            - per_seed(cka, "cka", {**where, "pair": "scratch vs base"}).mean(axis=1))


def preconditions(m: Measured) -> dict:
    """What the rules' requirements read: the solved share of the weaker kind, the number of blocks."""
    share = m.learn.groupby("kind")["reached"].mean()
    return {"solved": float(share.min()), "blocks": int(m.restore["layer"].max()) + 1 if len(m.restore) else 0}


def _verdict(eff: stats.Effect, margin: float = 0.0, greater: bool = True) -> str:
    return by_interval(eff.lo, eff.hi, margin, greater)


def _said(indicator: str) -> str:
    """An indicator's verdict as the `ours` text states it."""
    return {REPRODUCED: "holds", NOT_REPRODUCED: "fails"}.get(indicator, "undecided")


# ------------------------------------------------------------------------------------------------ the claims
def claim_solve(learn: pd.DataFrame) -> Claim:
    runs = {f"{r.kind} seed {r.seed}": from_bool(bool(r.reached)) for r in learn.itertuples()}
    ours = "; ".join(f"{k}: {int(g['reached'].sum())}/{len(g)} seeds reach the criterion, test accuracy "
                     f"{stats.describe(g['test_acc'])}" for k, g in learn.groupby("kind", sort=False))
    return BOTH_SOLVE.decide(by_indicators(runs), ours, value=float(learn["reached"].mean()),
                             n=int(learn["seed"].nunique()), extra={"runs": runs})


def claim_reuse(m: Measured) -> Claim:
    effects = {t: stats.effect(reuse_gaps(m.cka, t)) for t in dict.fromkeys(m.cka["tokens"])}
    indicators = {t: _verdict(e, REUSE["margin"]) for t, e in effects.items()}
    ours = "; ".join(f"{READOUTS[t]}: {e.text()} ({_said(indicators[t])})" for t, e in effects.items())
    head = effects["last"]  # the headline: the readout where the answer is produced
    fields = dict(value=head.mean, spread=head.sd, n=head.n, interval=(head.lo, head.hi),
                  extra={"effects": {t: e.to_dict() for t, e in effects.items()}, "indicators": indicators})
    return REUSE.gate(preconditions(m), ours, **fields) or REUSE.decide(by_indicators(indicators), ours, **fields)


def later_effects(m: Measured) -> dict[str, pd.Series]:
    """Per-seed late-minus-early effects, signed so that > 0 favours reliance in the later half."""
    out = {f"CKA(tuned, base) {READOUTS[t]} higher":
           late_minus_early(per_seed(m.cka, "cka", {"tokens": t, "pair": "tuned vs base"}))
           for t in dict.fromkeys(m.cka["tokens"])}
    out["weights changed less"] = -late_minus_early(per_seed(m.wchange, "change"))
    out["restoring base weights hurts less"] = -late_minus_early(per_seed(m.restore, "drop"))
    return out


def claim_later_layers(m: Measured) -> Claim:
    pre = preconditions(m)
    if pre["blocks"] < TWO_BLOCKS.at_least:
        return LATER.gate(pre, f"{pre['blocks']} block(s)")
    effects = {k: stats.effect(v) for k, v in later_effects(m).items()}
    indicators = {k: _verdict(e) for k, e in effects.items()}
    favour = sum(e.mean > 0 for e in effects.values())  # on average over seeds, before any interval
    ours = (f"{favour}/{len(effects)} indicators favour the later half on average; per seed: "
            + "; ".join(f"{k}: {e.text()} ({_said(indicators[k])})" for k, e in effects.items()))
    fields = dict(value=float(favour), n=int(m.restore["seed"].nunique()),
                  extra={"effects": {k: e.to_dict() for k, e in effects.items()}, "indicators": indicators})
    return LATER.gate(pre, ours, **fields) or LATER.decide(by_indicators(indicators), ours, **fields)


def scratch_effects(m: Measured) -> dict[str, pd.Series]:
    """Per seed: (a) CKA(scratch, scratch') - CKA(tuned, scratch) over blocks at the last prompt token;
    (b) irrelevant-evidence probe accuracy at the last block, tuned minus scratch."""
    last = {"tokens": "last"}
    different = (per_seed(m.cka, "cka", {**last, "pair": SCRATCH_REF}).mean(axis=1)
                 - per_seed(m.cka, "cka", {**last, "pair": "tuned vs scratch"}).mean(axis=1))
    p = m.probes[(m.probes["layer"] == m.probes["layer"].max()) & (m.probes["target"] == "irrelevant")
                 & m.probes["model"].isin(("tuned", "scratch"))]  # base (seed -1) has no pair
    acc = p.pivot_table(index="seed", columns="model", values="accuracy")
    return {"different": different, "task_specific": acc["tuned"] - acc["scratch"]}


def claim_scratch_differs(m: Measured) -> Claim:
    effects = {k: stats.effect(v) for k, v in scratch_effects(m).items()}
    margins = {"different": SCRATCH["cka_margin"], "task_specific": SCRATCH["probe_margin"]}
    indicators = {k: _verdict(e, margins[k]) for k, e in effects.items()}
    ts = layer_means(m.cka, "cka", {"tokens": "last", "pair": "tuned vs scratch"}).mean()
    said = {k: f"{e.text()} ({_said(indicators[k])})" for k, e in effects.items()}
    ours = (f"(a) CKA(scratch, scratch') - CKA(tuned, scratch) at the last prompt token: {said['different']}; "
            f"(b) irrelevant-evidence probe at the last block, tuned - scratch: {said['task_specific']}")
    fields = dict(value=float(ts), n=effects["different"].n,
                  extra={"effects": {k: e.to_dict() for k, e in effects.items()}, "indicators": indicators})
    return (SCRATCH.gate(preconditions(m), ours, **fields)
            or SCRATCH.decide(by_indicators(indicators), ours, **fields))


def claims(m: Measured) -> list[Claim]:
    """The chapter's four claims, in the order of RULES."""
    return [claim_solve(m.learn), claim_reuse(m), claim_later_layers(m), claim_scratch_differs(m)]

