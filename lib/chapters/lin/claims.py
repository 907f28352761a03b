"""Lin (2024)'s claims as rules, each decided over seeds (lib.claims, lib.stats).

The abstract's claims are qualitative (no numbers could be retrieved, no code was published), so the margins below
are ours, stated once: the page renders each rule's text from the same constants the test reads. Every indicator
is a per-seed effect; it holds when the t-interval of its mean lies wholly beyond its margin (consistent across
seeds), fails when it lies wholly on the other side, and is undecided otherwise (`claims.by_interval`). Several
indicators combine by majority (`claims.by_indicators`): "partly" needs a strict majority of indicators that each
hold across seeds. Each claim about what a model does with its representations has a control that lets it fail:

- `both_solve`: per kind (tuned, scratch): every seed reaches the criterion; incongruent-trial and held-out-pair
  accuracy above chance.
- `both_solve_words`: the same on the wordier `words` prompt (its own row: at this scale it is the prompt where
  pretraining and training from scratch differed most in our trial runs).
- `generic_base`: the base, untrained on the task, exposes each stream's sign (context-free) better than an
  untrained random network of the same architecture.
- `tuned_reuses_base`: tuned keeps more of base (linear predictivity, debiased CKA) than scratch keeps of its own
  random start, and more than a fine-tuned weight-shuffled base keeps of its start.
- `tuned_depends_on_base`: functional: the pretrained weights make learning faster and better than the shuffled
  base (same norms, same learning rate and steps), and a frozen base's states carry the answer linearly better
  than a random network's.
- `later_layers`: late minus early half of the blocks on five indicators (retention by R^2 and by CKA, the cost of
  restoring attention and MLP to base, the cost of freezing each half).
- `scratch_differs`: tuned and scratch are less alike than two scratch seeds and than two tuned seeds; scratch
  keeps less of the irrelevant stream.
"""
from __future__ import annotations

import pandas as pd

from lib import stats
from lib.claims import Claim, Requirement, Rule, by_indicators, by_interval, REPRODUCED, NOT_REPRODUCED

from .measure import READOUTS, Measured, layer_means

PAPER_CLAIM = "qualitative (abstract)"
CKA_MARGIN = 0.1  # a similarity gap (debiased CKA or R^2) counts when its interval lies above this
PROBE_MARGIN = 0.05  # a probe- or readout-accuracy gap counts when its interval lies above this
CHANCE = 0.5  # the two-way task's chance accuracy
SOLVED_SHARE = 0.5  # a kind solves the task when at least this share of its seeds reaches the criterion
LEVEL = stats.LEVEL

# A claim about what the fine-tuned model does with the base needs a fine-tuned model that does the task; the
# from-scratch runs are its matched control there (same learning rate and steps), which need not solve it. Only the
# claim that compares the two solutions needs both to solve it.
TUNED_SOLVED = Requirement("the share of tuned seeds reaching the criterion", "solved_tuned", at_least=SOLVED_SHARE)
SOLVED = Requirement("the share of seeds reaching the criterion, for tuned or scratch, whichever is fewer",
                     "solved", at_least=SOLVED_SHARE)
TWO_BLOCKS = Requirement("the number of blocks", "blocks", at_least=2)
_EACH = ("an indicator holds if the {level:.0%} t-interval of its per-seed mean lies above its margin and fails if "
         "it lies at or below it; ")
_VOTE = "reproduced if every indicator holds, partly if a strict majority do, not reproduced if half or more fail"

BOTH_SOLVE = Rule(
    "both_solve", claim="Both the fine-tuned and the from-scratch model solve the task.", paper=PAPER_CLAIM,
    test="six indicators, three per kind (tuned, scratch): every seed reaches the criterion; the incongruent-trial "
         "accuracy and the held-out-pair accuracy each above chance ({chance}); " + _EACH + _VOTE,
    constants={"chance": CHANCE, "level": LEVEL})

WORDS = Rule(
    "both_solve_words", claim="Both models solve the task (the wordier `words` prompt).", paper=PAPER_CLAIM,
    test="as both_solve, on tuned and scratch trained on the `words` prompt (the prompt closest to the paper's); "
         "the per-seed test-accuracy gap tuned - scratch is reported beside it",
    requires=(Requirement("seeds trained on the words prompt", "words_seeds", at_least=2),))

GENERIC = Rule(
    "generic_base", claim="The pretrained model holds a generic representation the task can use (the title).",
    paper=PAPER_CLAIM,
    test="per random-init seed, the base's cross-validated probe accuracy for the sign of the motion stream, and "
         "for that of the colour stream (context-free), averaged over the blocks, minus the same for an untrained "
         "random network of the same architecture, above {margin}; " + _EACH + _VOTE,
    constants={"margin": PROBE_MARGIN, "level": LEVEL})

REUSE = Rule(
    "tuned_reuses_base", claim="The fine-tuned model keeps the pretrained representations.", paper=PAPER_CLAIM,
    test="at the last prompt token, per seed and averaged over the blocks: (a) the linear predictivity R^2 of "
         "base's states from tuned's minus that of scratch's random start from scratch's; (b) the same with "
         "debiased CKA; (c) R^2 of base from tuned minus R^2 of the shuffled base from its fine-tuned copy; each "
         "above {margin}; " + _EACH + _VOTE,
    constants={"margin": CKA_MARGIN, "level": LEVEL}, requires=(TUNED_SOLVED,))

DEPENDS = Rule(
    "tuned_depends_on_base", claim="The fine-tuned model depends heavily on pretrained representations.",
    paper=PAPER_CLAIM,
    test="per seed: (a) mean validation accuracy over the learning curve, tuned minus a fine-tuned weight-shuffled "
         "base (same norms, learning rate and steps), above 0; (b) final test accuracy, tuned minus shuffled, "
         "above 0; (c) a linear readout of the answer trained on the frozen base's last-token states minus one "
         "on an untrained random network's, best block of each, test accuracy above {margin}; " + _EACH + _VOTE,
    constants={"margin": PROBE_MARGIN, "level": LEVEL}, requires=(TUNED_SOLVED,))

LATER = Rule(
    "later_layers", claim="Reliance on pretrained representations is strongest in later layers.",
    paper=PAPER_CLAIM,
    test="per seed, the later half of the blocks minus the earlier half (blocks read before the final norm) on five "
         "indicators, signed so that > 0 favours the later half: retention of base in tuned by R^2 and by "
         "debiased CKA at the last prompt token (higher later); the accuracy drop when a block's attention, and "
         "when its MLP, is restored to base (lower later); test accuracy with the later half frozen minus with "
         "the earlier half frozen (higher); each above 0; " + _EACH + _VOTE,
    constants={"level": LEVEL}, requires=(TUNED_SOLVED, TWO_BLOCKS))

SCRATCH = Rule(
    "scratch_differs", claim="The from-scratch model develops different, more task-specific mechanisms.",
    paper=PAPER_CLAIM,
    test="per seed, at the last prompt token and averaged over the blocks: (a) debiased CKA(scratch, scratch') - "
         "CKA(tuned, scratch) and (b) CKA(tuned, tuned') - CKA(tuned, scratch), each above {cka_margin}; (c) the "
         "irrelevant-stream probe accuracy, tuned minus scratch, above {probe_margin}; " + _EACH + _VOTE,
    constants={"cka_margin": CKA_MARGIN, "probe_margin": PROBE_MARGIN, "level": LEVEL}, requires=(SOLVED,))

RULES = (BOTH_SOLVE, WORDS, GENERIC, REUSE, DEPENDS, LATER, SCRATCH)


# ------------------------------------------------------------------------------------------------ per-seed effects
def halves(n_layers: int) -> tuple[list[int], list[int]]:
    """Earlier and later half of the blocks (the middle block of an odd count belongs to neither)."""
    return list(range(n_layers // 2)), list(range((n_layers + 1) // 2, n_layers))


def per_seed(df: pd.DataFrame, value: str, where: dict | None = None) -> pd.DataFrame:
    """`value` as a (seed x layer) table, rows filtered by `where` = {column: value}."""
    for col, v in (where or {}).items():
        df = df[df[col] == v]
    return df.pivot_table(index="seed", columns="layer", values=value, aggfunc="mean")


def blocks_only(table: pd.DataFrame, n_blocks: int) -> pd.DataFrame:
    """The block columns 0..n_blocks-1 of a (seed x layer) table: no embeddings (-1), no final norm (n_blocks)."""
    return table[[c for c in table.columns if 0 <= c < n_blocks]]


def late_minus_early(table: pd.DataFrame) -> pd.Series:
    """Per seed: mean over the later half of the blocks minus mean over the earlier half (columns are blocks)."""
    early, late = halves(table.shape[1])
    cols = list(table.columns)
    return table[[cols[i] for i in late]].mean(axis=1) - table[[cols[i] for i in early]].mean(axis=1)


def n_blocks(m: Measured) -> int:
    return int(m.restore["layer"].max()) + 1 if len(m.restore) else 0


def block_mean(m: Measured, pair: str, value: str = "cka", tokens: str = "last") -> pd.Series:
    """Per seed: `value` of `pair` averaged over the blocks."""
    return blocks_only(per_seed(m.sim, value, {"tokens": tokens, "pair": pair}), n_blocks(m)).mean(axis=1)


def preconditions(m: Measured) -> dict:
    """What the rules' requirements read: the solved share of tuned, that of the weaker of tuned and scratch, and the
    number of blocks."""
    learn = m.learn[m.learn["kind"].isin(("tuned", "scratch"))]
    share = learn.groupby("kind")["reached"].mean()
    return {"solved_tuned": float(share.get("tuned", 0.0)), "solved": float(share.min()) if len(share) == 2 else 0.0,
            "blocks": n_blocks(m)}


def _said(indicator: str) -> str:
    return {REPRODUCED: "holds", NOT_REPRODUCED: "fails"}.get(indicator, "undecided")


def decide(rule: Rule, m: Measured | None, effects: dict[str, pd.Series], margins: dict[str, float],
           pre: dict | None = None) -> Claim:
    """The common end of every claim: per-seed effects -> intervals -> indicators -> one verdict by majority."""
    eff = {k: stats.effect(v) for k, v in effects.items()}
    indicators = {k: by_interval(e.lo, e.hi, margins.get(k, 0.0)) for k, e in eff.items()}
    ours = "; ".join(f"{k}: {e.text()} ({_said(indicators[k])})" for k, e in eff.items())
    head = next(iter(eff.values()))
    fields = dict(value=head.mean, spread=head.sd, n=head.n, interval=(head.lo, head.hi),
                  extra={"effects": {k: e.to_dict() for k, e in eff.items()}, "indicators": indicators})
    gated = rule.gate(pre, ours, **fields) if pre is not None else None
    return gated or rule.decide(by_indicators(indicators), ours, **fields)


# ------------------------------------------------------------------------------------------------ the claims
def solve_effects(learn: pd.DataFrame) -> dict[str, pd.Series]:
    out = {}
    for kind in ("tuned", "scratch"):
        g = learn[learn["kind"] == kind].set_index("seed")
        out[f"{kind}: every seed reaches the criterion"] = g["reached"].astype(float)
        out[f"{kind}: incongruent accuracy - chance"] = g["incongruent_acc"] - CHANCE
        out[f"{kind}: held-out accuracy - chance"] = g["heldout_acc"] - CHANCE
    return out


def claim_solve(learn: pd.DataFrame, rule: Rule = BOTH_SOLVE) -> Claim:
    eff = solve_effects(learn)
    reach = {k: v for k, v in eff.items() if "criterion" in k}
    # "every seed": the mean of the 0/1 flags must be 1, which an interval cannot show; decided directly
    effects = {k: v for k, v in eff.items() if k not in reach}
    claim = decide(BOTH_SOLVE, None, effects, {})
    indicators = {**{k: REPRODUCED if v.all() else NOT_REPRODUCED for k, v in reach.items()},
                  **claim.extra["indicators"]}
    ours = "; ".join(f"{k}: {int(v.sum())}/{len(v)}" for k, v in reach.items()) + "; " + claim.ours
    return rule.decide(by_indicators(indicators), ours, value=float(learn["reached"].mean()),
                       n=int(learn["seed"].nunique()), extra={**claim.extra, "indicators": indicators})


def claim_words(words: pd.DataFrame, why: str = "") -> Claim:
    """both_solve on the words-prompt runs, with the tuned - scratch accuracy gap per seed."""
    n = int(words["seed"].nunique()) if len(words) else 0
    gated = WORDS.gate({"words_seeds": n}, f"not run: {why}" if why else "")
    if gated:
        return gated
    claim = claim_solve(words, WORDS)
    acc = words.set_index(["kind", "seed"])["test_acc"]
    gap = stats.effect(acc["tuned"] - acc["scratch"])
    claim.ours += f"; test accuracy tuned - scratch: {gap.text()}"
    claim.extra["gap"] = gap.to_dict()
    return claim


def generic_effects(probes: pd.DataFrame) -> dict[str, pd.Series]:
    """Per init seed: base minus random-init probe accuracy for each stream's sign, averaged over the points."""
    out = {}
    for stream in ("motion", "color"):
        d = probes[(probes["target"] == stream) & (probes["layer"] < probes["layer"].max())]  # blocks only
        base = d[d["model"] == "base"]["accuracy"].mean()
        init = d[d["model"] == "init"].groupby("seed")["accuracy"].mean()
        out[f"{stream} sign, base - random init"] = base - init
    return out


def claim_generic(m: Measured) -> Claim:
    return decide(GENERIC, m, generic_effects(m.probes), dict.fromkeys(generic_effects(m.probes), PROBE_MARGIN))


def reuse_effects(m: Measured) -> dict[str, pd.Series]:
    return {"R^2 retention, tuned - scratch": block_mean(m, "tuned vs base", "r2")
            - block_mean(m, "scratch vs init", "r2"),
            "CKA retention, tuned - scratch": block_mean(m, "tuned vs base") - block_mean(m, "scratch vs init"),
            "R^2 retention, tuned - shuffled": block_mean(m, "tuned vs base", "r2")
            - block_mean(m, "shuffled vs its start", "r2")}


def claim_reuse(m: Measured) -> Claim:
    eff = reuse_effects(m)
    return decide(REUSE, m, eff, dict.fromkeys(eff, CKA_MARGIN), preconditions(m))


def depends_effects(m: Measured) -> dict[str, pd.Series]:
    curve = m.curves.groupby(["kind", "seed"])["val_acc"].mean()
    final = m.learn.set_index(["kind", "seed"])["test_acc"]
    r = m.readout[(m.readout["split"] == "test") & (m.readout["layer"] < n_blocks(m))]
    best = r.groupby(["model", "seed"])["accuracy"].max()
    return {"learning-curve accuracy, tuned - shuffled": curve["tuned"] - curve["shuffled"],
            "test accuracy, tuned - shuffled": final["tuned"] - final["shuffled"],
            "frozen readout, base - random init": float(best["base"].iloc[0]) - best["init"]}


def claim_depends(m: Measured) -> Claim:
    return decide(DEPENDS, m, depends_effects(m), {"frozen readout, base - random init": PROBE_MARGIN},
                  preconditions(m))


def later_effects(m: Measured) -> dict[str, pd.Series]:
    """Per-seed late-minus-early effects, signed so that > 0 favours reliance in the later half."""
    nb = n_blocks(m)
    last = {"tokens": "last", "pair": "tuned vs base"}
    out = {"R^2 retention higher later": late_minus_early(blocks_only(per_seed(m.sim, "r2", last), nb)),
           "CKA retention higher later": late_minus_early(blocks_only(per_seed(m.sim, "cka", last), nb))}
    for part, name in (("attn", "attention"), ("mlp", "MLP")):
        out[f"restoring {name} hurts less later"] = -late_minus_early(per_seed(m.restore, "drop", {"part": part}))
    acc = m.learn.set_index(["kind", "seed"])["test_acc"]
    out["freezing the later half costs less"] = acc["frozen_late"] - acc["frozen_early"]
    return out


def claim_later_layers(m: Measured) -> Claim:
    pre = preconditions(m)
    if pre["blocks"] < TWO_BLOCKS.at_least:
        return LATER.gate(pre, f"{pre['blocks']} block(s)")
    return decide(LATER, m, later_effects(m), {}, pre)


def scratch_effects(m: Measured) -> dict[str, pd.Series]:
    ts = block_mean(m, "tuned vs scratch")
    p = m.probes[(m.probes["target"] == "irrelevant") & (m.probes["layer"] < n_blocks(m))]
    acc = p[p["model"].isin(("tuned", "scratch"))].groupby(["model", "seed"])["accuracy"].mean()
    return {"CKA(scratch, scratch') - CKA(tuned, scratch)": block_mean(m, "scratch vs scratch'") - ts,
            "CKA(tuned, tuned') - CKA(tuned, scratch)": block_mean(m, "tuned vs tuned'") - ts,
            "irrelevant-stream probe, tuned - scratch": acc["tuned"] - acc["scratch"]}


def claim_scratch_differs(m: Measured) -> Claim:
    eff = scratch_effects(m)
    margins = {k: SCRATCH["probe_margin"] if "probe" in k else SCRATCH["cka_margin"] for k in eff}
    return decide(SCRATCH, m, eff, margins, preconditions(m))


def claims(m: Measured) -> list[Claim]:
    """The chapter's claims, in the order of RULES."""
    return [claim_solve(m.learn), claim_words(m.words, m.words_why), claim_generic(m), claim_reuse(m), claim_depends(m), claim_later_layers(m),
            claim_scratch_differs(m)]
