"""Chapter 3's claims: the paper's numbers, stated once, and each claim's verdict rule as a `lib.claims.Rule`.

Every decision reads per-seed effects through a t-interval (`lib.stats.effect`): reproduced when the interval lies on
the claim's side of its threshold, not reproduced when it lies on the other side, inconclusive when it straddles it
or there are fewer than two seeds. Claims with several indicators combine them with `claims.by_indicators` ("partly"
needs a majority). Every circuit claim needs a base that *binds* the query to its box: its binding gap, accuracy
minus the accuracy of a query-blind choice with the same box shares (measure.answer_profile), must reach
`BINDS["at_least"]`; otherwise there is no mechanism to dissect and the claim is "not testable at this scale".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib import stats
from lib.claims import INCONCLUSIVE, Claim, Requirement, Rule, by_indicators, by_interval
from lib.chapters.prakash.config import GROUPS
from lib.chapters.prakash.measure import CONTROL, KNOCKOUTS, Measured
from lib.tasks.entities import DESIDERATA

PAPER = ("Prakash et al. 2024, Fine-Tuning Enhances Existing Mechanisms: A Case Study on Entity Tracking "
         "(ICLR 2024, arXiv 2402.14811)")
# The paper's numbers (research/papers.md, Paper 3 (d)).
PAPER_ACC = {"base": "Llama-7B 0.66", "arith": "Goat / FLoat 0.82"}
PAPER_FAITH = {"base": (0.66, 0.66, 1.00, 0.00), "arith": (0.82, 0.73, 0.89, 0.01)}  # model, circuit, faith, random
PAPER_OVERLAP = {"VF": (0.68, 0.40), "PT": (1.00, 0.24), "PD": (0.75, 0.38), "SR": (1.00, 0.13)}  # Llama in FLoat
PAPER_DCM = {"VF": (12.8, 45.6, 0.0), "PT": (36.9, 2.9, 0.0), "PD": (44.0, 2.1, 0.0), "SR": (13.4, 1.5, 0.0)}
PAPER_CMAP = {"full circuit": 0.82, "VF": 0.82, "PT": 0.78, "PD": 0.62, "SR": 0.65}  # Goat -> Llama

LEVEL = stats.LEVEL
MARGIN = 0.03  # an accuracy gain counts when larger than this
BINDS = Requirement("the base's binding gap (test accuracy − query-blind baseline, mean over seeds)", "binding_gap",
                    at_least=0.15)
GAINS = Requirement("the best tuned model's accuracy gain over base (mean over seeds)", "tuned_gain",
                    at_least=MARGIN)

ARITH_IMPROVES = Rule(
    "arith_improves", "Fine-tuning on arithmetic (Goat / FLoat) improves entity tracking.", "0.66 -> 0.82",
    "per-seed test-accuracy gain arith − base; reproduced if the {level:.0%} t-interval of its mean lies above "
    "{margin}, not reproduced if it lies at or below it, inconclusive if it straddles it (or one seed)",
    {"level": LEVEL, "margin": MARGIN})
FAITHFUL = Rule(
    "base_circuit_faithful", "The base model's circuit (VF, PT, PD, SR heads) accounts for the task in the base model "
    "and is present in the fine-tuned models.",
    "faithfulness 1.00 (Llama), 0.89 (Goat), 0.88 (FLoat); random 0.00-0.01",
    "indicators, per model: the base circuit's per-seed faithfulness (circuit / model accuracy) with its "
    "{level:.0%} t-interval above {faith_min}; random circuits of the same size below {random_share} of the "
    "circuit's accuracy (interval of the per-seed difference above 0); reproduced if all hold, partly if a majority",
    {"level": LEVEL, "faith_min": 0.8, "random_share": 0.5}, requires=(BINDS,))
OVERLAP = Rule(
    "circuit_overlap", "The fine-tuned models' circuits contain most of the base circuit's heads (same mechanism, "
    "more heads).", "precision VF 0.68, PT 1.00, PD 0.75, SR 1.00",
    "indicators, per group: the per-seed precision (base heads found again in the tuned circuit) minus chance "
    "(|tuned group| / heads) with its {level:.0%} t-interval above {above}; reproduced if in every group, partly if "
    "in a majority", {"level": LEVEL, "above": 0.25}, requires=(BINDS,))
DCM = Rule(
    "dcm_semantics", "VF heads encode the object value; PT and PD heads encode the position of the correct segment; "
    "no group encodes the box label.", "% target (positional/object/box label): VF 12.8/45.6/0.0, PT 36.9/2.9/0.0, "
    "PD 44.0/2.1/0.0, SR 13.4/1.5/0.0",
    "indicators, each a per-seed difference of % target with its {level:.0%} t-interval: VF object − positional "
    "above 0; PT and PD positional − object above 0; the largest box-label % over the groups below {none_pct}%; "
    "reproduced if all hold, partly if a majority", {"level": LEVEL, "none_pct": 5}, requires=(BINDS,))
CMAP = Rule(
    "cmap", "CMAP: the fine-tuned circuit's heads patched into the base recover the fine-tuned accuracy.",
    "full circuit 0.82 (tuned 0.82, base 0.66); VF 0.82, PT 0.78",
    "per seed where the best tuned model beats base by more than {margin}: the share of that gain recovered by "
    "patching its full circuit into base; reproduced if the {level:.0%} t-interval of its mean lies above "
    "{recover}, not reproduced if at or below it, inconclusive otherwise",
    {"level": LEVEL, "margin": MARGIN, "recover": 0.8}, requires=(BINDS, GAINS))
KNOCKOUT = Rule(
    "knockout", "Attention from the last token to the correct object, from the query label to its previous "
    "occurrence and from the last token to the query label is needed.",
    "Llama 0.66 -> 0.04 / 0.05 / 0.37 when knocked out from layer 0-1; random 0.62-0.66",
    "indicators, per knockout in base from the first layer on: the per-seed accuracy drop minus the larger of "
    "{drop_share} × the full accuracy and {control_times} × the drop of the control knockout (last → a wrong "
    "object), with its {level:.0%} t-interval above 0; reproduced if all hold, partly if a majority",
    {"level": LEVEL, "drop_share": 0.25, "control_times": 3}, requires=(BINDS,))
RULES = (ARITH_IMPROVES, FAITHFUL, OVERLAP, DCM, CMAP, KNOCKOUT)


# ------------------------------------------------------------------------------------------------ helpers
def shown(values, fmt: str = "{:.2f}", why: str = "") -> str:
    """'m ± s (n=k)' over the defined values; 'not defined (why)' when none is (never 'nan ± nan')."""
    v = np.asarray(values, dtype=float).ravel()
    ok = v[~np.isnan(v)]
    if len(ok) == 0:
        return f"not defined ({why})" if why else "not defined"
    text = stats.describe(ok, fmt)
    return text if len(ok) == len(v) else f"{text}; not defined in {len(v) - len(ok)} of {len(v)} ({why})"


def _mean(values) -> float | None:
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else None


def _interval(values, margin: float = 0.0, greater: bool = True) -> tuple[str, stats.Effect | None]:
    """(verdict of 'effect > margin' from the t-interval over the defined per-seed values, the effect)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return INCONCLUSIVE, None
    eff = stats.effect(v)
    return by_interval(eff.lo, eff.hi, margin, greater), eff


def paired_gain(acc: pd.DataFrame, name: str) -> np.ndarray:
    """(n_seeds,) accuracy of model `name` minus base's, seed by seed."""
    p = acc.pivot(index="seed", columns="model", values="accuracy")
    return (p[name] - p["base"]).to_numpy()


def binding_gap(answers: pd.DataFrame, model: str = "base") -> np.ndarray:
    """(n_seeds,) accuracy minus the query-blind baseline of `model` (binding shows as a positive gap)."""
    d = answers[answers["model"] == model]
    return (d["accuracy"] - d["query-blind baseline"]).to_numpy()


def best_tuned(m: Measured) -> str:
    """The tuned model with the larger mean accuracy gain over base (CMAP needs a better model)."""
    return max(m.tuned, key=lambda k: paired_gain(m.accuracy, k).mean())


def facts(m: Measured) -> dict:
    """The values the rules' preconditions read."""
    gain = float(paired_gain(m.accuracy, best_tuned(m)).mean()) if m.tuned else None
    return {"binding_gap": _mean(binding_gap(m.answers)), "tuned_gain": gain}


def _summary(eff: stats.Effect | None) -> dict:
    return {"value": eff.mean, "spread": eff.sd, "n": eff.n} if eff else {}


def _fields(values) -> dict:
    """value / spread / n of a claim over the defined per-seed values (value None when none is defined)."""
    v = np.asarray(values, dtype=float).ravel()
    ok = v[~np.isnan(v)]
    return {"value": float(ok.mean()) if len(ok) else None, "n": len(v),
            "spread": stats.mean_sd(ok)[1] if len(ok) else None}


# ------------------------------------------------------------------------------------------------ the claims
def claim_arith(m: Measured) -> Claim:
    if "arith" not in m.tuned:
        return ARITH_IMPROVES.offline("the profile made no `arith` model")
    verdict, eff = _interval(paired_gain(m.accuracy, "arith"), MARGIN)
    base, arith = (shown(m.accuracy[m.accuracy.model == k]["accuracy"]) for k in ("base", "arith"))
    ours = f"base {base} -> arith {arith}; gain {eff.text()}"
    return ARITH_IMPROVES.decide(verdict, ours, interval=(eff.lo, eff.hi), **_summary(eff))


def claim_faithful(m: Measured) -> Claim:
    d = m.faithfulness[m.faithfulness["circuit"] == "base"]
    why = "the model's accuracy is 0"
    ours = "; ".join(f"in {k}: faithfulness {shown(g['faithfulness'], why=why)}, random circuits "
                     f"{shown(g['random_acc'])} (circuit {shown(g['circuit_acc'])})"
                     for k, g in d.groupby("model", sort=False))
    fields = _fields(d[d["model"] == "base"]["faithfulness"])
    gated = FAITHFUL.gate(facts(m), ours, **fields)
    if gated:
        return gated
    ind = {}
    for k, g in d.groupby("model", sort=False):
        ind[f"{k} faithful"] = _interval(g["faithfulness"], FAITHFUL["faith_min"])[0]
        ind[f"random circuits fail in {k}"] = _interval(FAITHFUL["random_share"] * g["circuit_acc"]
                                                        - g["random_acc"])[0]
    return FAITHFUL.decide(by_indicators(ind), ours, extra=ind, **fields)


def claim_overlap(m: Measured) -> Claim:
    ov = m.overlap
    why = "the base circuit has no heads in this group"
    by = ov.groupby("group", sort=False)
    ours = "; ".join(f"{g} {shown(d['precision'], why=why)} (chance {d['chance'].mean():.2f})" for g, d in by)
    fields = _fields(ov.groupby("seed")["precision"].mean())
    gated = OVERLAP.gate(facts(m), ours, **fields)
    if gated:
        return gated
    ind = {}
    for g, d in by:
        diff = (d["precision"] - d["chance"]).groupby(d["seed"]).mean()  # one value per seed (over tuned models)
        ind[g] = _interval(diff, OVERLAP["above"])[0]
    return OVERLAP.decide(by_indicators(ind), ours, extra=ind, **fields)


def _dcm_per_seed(dcm: pd.DataFrame) -> pd.DataFrame:
    """(seed, group) x desideratum: % target in base."""
    return dcm[dcm["model"] == "base"].pivot_table(index=["seed", "group"], columns="desideratum",
                                                    values="target_pct")


def claim_dcm(m: Measured) -> Claim:
    p = _dcm_per_seed(m.dcm)
    means = p.groupby(level="group").mean()
    groups = [g for g in GROUPS if g in means.index]
    ours = "base, % target (positional/object/box label): " + ("; ".join(
        f"{g}: " + "/".join(f"{means.loc[g, k]:.1f}" for k in DESIDERATA) for g in groups)
        or "not defined (the base circuit has no heads)")
    value = float(means.loc["VF", "object"]) if "VF" in means.index else None
    gated = DCM.gate(facts(m), ours, value=value)
    if gated:
        return gated

    def diff(group, a, b):
        if group not in means.index:
            return INCONCLUSIVE  # the base circuit has no heads in this group: not defined
        d = p.xs(group, level="group")
        return _interval(d[a] - d[b])[0]
    ind = {"VF: object > positional": diff("VF", "object", "positional"),
           "PT: positional > object": diff("PT", "positional", "object"),
           "PD: positional > object": diff("PD", "positional", "object"),
           "box label nowhere": _interval(p["box_label"].groupby(level="seed").max(), DCM["none_pct"],
                                          greater=False)[0] if len(p) else INCONCLUSIVE}
    return DCM.decide(by_indicators(ind), ours, extra=ind, value=value)


def claim_cmap(m: Measured) -> Claim:
    name = best_tuned(m) if m.tuned else None
    cm = m.cmap[m.cmap["model"] == name]
    d = cm[cm["patched"] == "full circuit"]
    gain = d["tuned_acc"] - d["base_acc"]
    recovered = ((d["accuracy"] - d["base_acc"]) / gain.where(gain > MARGIN)).to_numpy()
    g = cm.groupby("patched", sort=False)["accuracy"].mean()
    ours = (f"{name} -> base: base {d['base_acc'].mean():.2f}, tuned {d['tuned_acc'].mean():.2f}; patched: "
            + ", ".join(f"{k} {v:.2f}" for k, v in g.items()) + "; share of the gain recovered by the full circuit "
            + shown(recovered, why=f"{name} does not beat base by {MARGIN}"))
    gated = CMAP.gate(facts(m), ours, extra={"tuned_model": name})
    if gated:
        return gated
    verdict, eff = _interval(recovered, CMAP["recover"])
    return CMAP.decide(verdict, ours, extra={"tuned_model": name}, **_summary(eff),
                       interval=(eff.lo, eff.hi) if eff else None)


def knockout_effects(ko: pd.DataFrame) -> pd.DataFrame:
    """seed x knockout (the three that should matter): drop − max(drop_share × full, control_times × control drop)."""
    d = ko[ko["model"] == "base"]
    full = d[d["from_layer"] == d["from_layer"].max()].groupby("seed")["accuracy"].mean()
    at0 = d[d["from_layer"] == 0].pivot_table(index="seed", columns="knockout", values="accuracy")
    drop = at0.rsub(full, axis=0)
    bar = np.maximum(KNOCKOUT["drop_share"] * full, KNOCKOUT["control_times"] * drop[CONTROL].clip(lower=0))
    return drop[[k for k in KNOCKOUTS if k != CONTROL]].sub(bar, axis=0)


def claim_knockout(m: Measured) -> Claim:
    d = m.knockout[m.knockout["model"] == "base"]
    full = d[d["from_layer"] == d["from_layer"].max()]["accuracy"].mean()
    at0 = d[d["from_layer"] == 0].groupby("knockout", sort=False)["accuracy"].mean()
    ours = f"base {full:.2f}; knocked out in all layers: " + ", ".join(f"{k} {v:.2f}" for k, v in at0.items())
    gated = KNOCKOUT.gate(facts(m), ours, value=float(full))
    if gated:
        return gated
    eff = knockout_effects(m.knockout)
    ind = {k: _interval(eff[k])[0] for k in eff.columns}
    return KNOCKOUT.decide(by_indicators(ind), ours, extra=ind, value=float(full))


def claims(m: Measured) -> list[Claim]:
    """Every claim by its rule (RULES, in order)."""
    return [claim_arith(m), claim_faithful(m), claim_overlap(m), claim_dcm(m), claim_cmap(m), claim_knockout(m)]

