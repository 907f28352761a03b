"""Chapter 3's claims: the paper's numbers, stated once, and each claim's verdict rule as a `lib.claims.Rule`.

Every decision reads per-seed effects through a t-interval (`lib.stats.effect`): reproduced when the interval lies on
the claim's side of its threshold, not reproduced when it lies on the other side, inconclusive when it straddles it
or there are fewer than two seeds. Claims with several indicators combine them with `claims.by_indicators` ("partly"
needs a majority). Every circuit claim needs bases that *bind* the query to its box: a seed's binding gap, accuracy
minus the accuracy of a query-blind choice with the same box shares (measure.answer_profile), must reach `BIND_MIN`
for the seed to count; the circuit claims read only those seeds and need at least two of them, otherwise there is no
mechanism to dissect and the claim is "not testable at this scale".
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
PAPER_ACC = {"base": "Llama-7B 0.66", "arith_bound": "Goat / FLoat 0.82"}
PAPER_FAITH = {"base": (0.66, 0.66, 1.00, 0.00), "arith_bound": (0.82, 0.73, 0.89, 0.01)}  # model, circuit, faith, random
PAPER_OVERLAP = {"VF": (0.68, 0.40), "PT": (1.00, 0.24), "PD": (0.75, 0.38), "SR": (1.00, 0.13)}  # Llama in FLoat
PAPER_DCM = {"VF": (12.8, 45.6, 0.0), "PT": (36.9, 2.9, 0.0), "PD": (44.0, 2.1, 0.0), "SR": (13.4, 1.5, 0.0)}
PAPER_CMAP = {"full circuit": 0.82, "VF": 0.82, "PT": 0.78, "PD": 0.62, "SR": 0.65}  # Goat -> Llama

LEVEL = stats.LEVEL
MARGIN = 0.03  # an accuracy gain counts when larger than this
BIND_MIN = 0.15  # a seed's base binds when its binding gap (test accuracy − query-blind baseline) is at least this
BINDS = Requirement(f"seeds whose base binds (binding gap, test accuracy − query-blind baseline, ≥ {BIND_MIN}; the "
                    "circuit claims read only those seeds)", "binding_seeds", at_least=2)
ROOM = Requirement("the base's test accuracy (mean over seeds), so that a gain of the margin is possible", "base_acc",
                   at_most=0.9)
GAINS = Requirement("arith_bound's accuracy gain over base (mean over seeds)", "tuned_gain", at_least=MARGIN)
CMAP_MODEL = "arith_bound"  # the paper's CMAP claim is about the arithmetic model; track is shown as a second row

_GAIN_TEST = ("per-seed test-accuracy gain {model} − base; reproduced if the {level:.0%} t-interval of its mean lies "
              "above {margin}, not reproduced if it lies at or below it, inconclusive if it straddles it (or one seed)")
ARITH_BOUND_IMPROVES = Rule(
    "arith_bound_improves", "Fine-tuning on arithmetic (Goat / FLoat) improves entity tracking; here arithmetic whose "
    "operands are bound to names, the objective closest to what Goat's data asks of a model.", "0.66 -> 0.82",
    _GAIN_TEST, {"model": "arith_bound", "level": LEVEL, "margin": MARGIN}, requires=(ROOM,))
ARITH_PURE_IMPROVES = Rule(
    "arith_pure_improves", "Fine-tuning on arithmetic improves entity tracking; here arithmetic without any binding "
    "(the strict analogue: nothing in it asks for retrieval by name).", "0.66 -> 0.82 (Goat)",
    _GAIN_TEST, {"model": "arith_pure", "level": LEVEL, "margin": MARGIN}, requires=(ROOM,))
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
    "indicators, per tuned model: the per-seed share of the base circuit's heads found again in the same group of "
    "the tuned circuit, minus the same share for the base circuits of the other seeds (a permutation null: circuits "
    "found the same way in models that did not give rise to this one), with its {level:.0%} t-interval above 0; "
    "reproduced if for every tuned model, partly if for a majority", {"level": LEVEL}, requires=(BINDS,))
DCM = Rule(
    "dcm_semantics", "VF heads encode the object value; PT and PD heads encode the position of the correct segment; "
    "no group encodes the box label (here group-level interventions: a group has one to three heads).", "% target (positional/object/box label): VF 12.8/45.6/0.0, PT 36.9/2.9/0.0, "
    "PD 44.0/2.1/0.0, SR 13.4/1.5/0.0",
    "indicators on the lift (% target with the group's selected heads patched − % target with nothing patched), each "
    "a per-seed difference with its {level:.0%} t-interval: VF object − positional above 0; PT and PD positional − "
    "object above 0; the largest box-label lift over the groups below {none_pct} points; reproduced if all hold, "
    "partly if a majority", {"level": LEVEL, "none_pct": 5}, requires=(BINDS,))
CMAP = Rule(
    "cmap", "CMAP: the fine-tuned circuit's heads patched into the base recover the fine-tuned accuracy.",
    "full circuit 0.82 (tuned 0.82, base 0.66); VF 0.82, PT 0.78",
    "per seed where {model} beats base by more than {margin}: the share of that gain recovered by "
    "patching its full circuit into base; reproduced if the {level:.0%} t-interval of its mean lies above "
    "{recover}, not reproduced if at or below it, inconclusive otherwise",
    {"model": CMAP_MODEL, "level": LEVEL, "margin": MARGIN, "recover": 0.8}, requires=(BINDS, GAINS))
KNOCKOUT = Rule(
    "knockout", "Attention from the last token to the correct object, from the query label to its previous "
    "occurrence and from the last token to the query label is needed.",
    "Llama 0.66 -> 0.04 / 0.05 / 0.37 when knocked out from layer 0-1; random 0.62-0.66",
    "indicators, per knockout in base from the first layer on: the per-seed accuracy drop minus the larger of "
    "{drop_share} × the full accuracy and {control_times} × the drop of the control knockout (last → a wrong "
    "object), with its {level:.0%} t-interval above 0; reproduced if all hold, partly if a majority",
    {"level": LEVEL, "drop_share": 0.25, "control_times": 3}, requires=(BINDS,))
RULES = (ARITH_BOUND_IMPROVES, ARITH_PURE_IMPROVES, FAITHFUL, OVERLAP, DCM, CMAP, KNOCKOUT)


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


def binds(gap) -> bool:
    """Whether a binding gap (one seed's) is large enough for a circuit to dissect."""
    return gap is not None and not np.isnan(gap) and gap >= BIND_MIN


def binding_seeds(m: Measured) -> list:
    """The seeds whose base binds the query to its box (the circuit claims read only these)."""
    d = m.answers[m.answers["model"] == "base"]
    return [s for s, a, q in zip(d["seed"], d["accuracy"], d["query-blind baseline"]) if binds(a - q)]


def restrict(m: Measured, seeds) -> Measured:
    """The measurements of `seeds` only (every table that has a seed column)."""
    keep = set(seeds)
    return Measured(**{k: v[v["seed"].isin(keep)] if isinstance(v, pd.DataFrame) and "seed" in v else v
                       for k, v in m.__dict__.items()})


def facts(m: Measured) -> dict:
    """The values the rules' preconditions read."""
    made = CMAP_MODEL in m.tuned and CMAP_MODEL in set(m.accuracy["model"])  # none when no seed is left
    gain = float(paired_gain(m.accuracy, CMAP_MODEL).mean()) if made else None
    return {"binding_seeds": len(binding_seeds(m)), "tuned_gain": gain,
            "base_acc": _mean(m.accuracy[m.accuracy.model == "base"]["accuracy"])}


def _summary(eff: stats.Effect | None) -> dict:
    return {"value": eff.mean, "spread": eff.sd, "n": eff.n} if eff else {}


def _fields(values) -> dict:
    """value / spread / n of a claim over the defined per-seed values (value None when none is defined)."""
    v = np.asarray(values, dtype=float).ravel()
    ok = v[~np.isnan(v)]
    return {"value": float(ok.mean()) if len(ok) else None, "n": len(v),
            "spread": stats.mean_sd(ok)[1] if len(ok) else None}


# ------------------------------------------------------------------------------------------------ the claims
def claim_arith(m: Measured, rule: Rule) -> Claim:
    name = rule["model"]
    if name not in m.tuned:
        return rule.offline(f"the profile made no `{name}` model")
    verdict, eff = _interval(paired_gain(m.accuracy, name), MARGIN)
    base, tuned = (shown(m.accuracy[m.accuracy.model == k]["accuracy"]) for k in ("base", name))
    ours = f"base {base} -> {name} {tuned}; gain {eff.text()}"
    gated = rule.gate(facts(m), ours, interval=(eff.lo, eff.hi), **_summary(eff))
    return gated or rule.decide(verdict, ours, interval=(eff.lo, eff.hi), **_summary(eff))


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


def overlap_effects(ov: pd.DataFrame) -> pd.DataFrame:
    """seed x tuned model: share of the base circuit's heads found again (same group) minus the other seeds' share."""
    d = ov.groupby(["seed", "model"], sort=False)[["overlap", "base", "null_overlap"]].sum()
    return ((d["overlap"] - d["null_overlap"]) / d["base"].where(d["base"] > 0)).unstack("model")


def claim_overlap(m: Measured) -> Claim:
    ov = m.overlap
    why = "the base circuit has no heads in this group"
    by = ov.groupby("group", sort=False)
    ours = "; ".join(f"{g} {shown(d['precision'], why=why)} (other seeds' circuits {shown(d['null_precision'], why=why)}"
                     f", chance {d['chance'].mean():.2f})" for g, d in by)
    fields = _fields(ov.groupby("seed")["precision"].mean())
    gated = OVERLAP.gate(facts(m), ours, **fields)
    if gated:
        return gated
    eff = overlap_effects(ov)
    ind = {f"{k}: more of the base's heads than the null": _interval(eff[k])[0] for k in eff.columns}
    return OVERLAP.decide(by_indicators(ind), ours, extra=ind, **fields)


def _dcm_per_seed(dcm: pd.DataFrame, values: str = "lift") -> pd.DataFrame:
    """(seed, group) x desideratum: the lift (or `values`) in base."""
    return dcm[dcm["model"] == "base"].pivot_table(index=["seed", "group"], columns="desideratum", values=values)


def claim_dcm(m: Measured) -> Claim:
    p = _dcm_per_seed(m.dcm)
    means, pct = p.groupby(level="group").mean(), _dcm_per_seed(m.dcm, "target_pct").groupby(level="group").mean()
    groups = [g for g in GROUPS if g in means.index]
    ours = "base, % target (positional/object/box label) and in brackets its lift over nothing patched: " + ("; ".join(
        f"{g}: " + "/".join(f"{pct.loc[g, k]:.1f} ({means.loc[g, k]:+.1f})" for k in DESIDERATA) for g in groups)
        or "not defined (the base circuit has no heads)")
    value = float(pct.loc["VF", "object"]) if "VF" in means.index else None
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
    name = CMAP_MODEL
    if name not in m.tuned:
        return CMAP.offline(f"the profile made no `{name}` model")
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
    b = restrict(m, binding_seeds(m))  # the circuit claims: only the seeds whose base binds
    return [claim_arith(m, ARITH_BOUND_IMPROVES), claim_arith(m, ARITH_PURE_IMPROVES), claim_faithful(b),
            claim_overlap(b), claim_dcm(b), claim_cmap(b), claim_knockout(b)]

