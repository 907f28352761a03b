"""The claims of Horn & Elliott (2024) as rules, each declared once (lib.claims.Rule): the paper's statement, the test
over constants and its preconditions. The page's rule text is rendered from the same declarations.

Every feature-persistence claim is read against the same-model control: two SAEs of the base that differ only in
their seed. When even they share few features at the paper's matching threshold, the SAEs do not identify features
well enough for "this feature persists in the child" to mean anything, and the claim is not testable at this scale.

    m = measured(comps, acc)      # per-seed numbers, at the paper's matching threshold MATCH
    claims(m)                     # -> list[Claim]
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lib import stats
from lib.claims import Claim, Requirement, Rule, by_indicators, by_interval

from lib.chapters.horn import measure
from lib.chapters.horn.measure import CONTROL, CROSS

PAPER = "Horn & Elliott 2024, Tracking Universal Features Through Fine-Tuning and Model Merging (arXiv 2410.12391)"
MATCH = 0.8  # the paper's activation correlation that makes two features one
# The two matchers of the paper's released code (lib.chapters.horn.matching), shown beside MATCH:
PROFILE_MATCH = 0.8  # token-profile Pearson r (its correlation.py)
FLOW_SIMILARITY, FLOW_CONSISTENCY = 0.05, 0.8  # its compare.py, behind the released feature-flow data
THRESHOLDS = {"position": MATCH, "profile": PROFILE_MATCH, "flow": FLOW_SIMILARITY}
# The paper's released flow data (data/flow/all_models_flow.json): of 16,384 base features, 462 in families (2.8 %),
# 456 with a TinyStories partner, 405 with a merge partner, 399 whole chains.
PAPER_FAMILIES = {"families": 462, "with stories partner": 456, "with merge partner": 405, "whole chains": 399,
                  "features": 16384}
# SAE quality below which feature matching means little (held-out tokens; the worst SAE of the chapter counts):
# conventional floors for a usable dictionary, not tuned to this build.
FVE_MIN = 0.7  # fraction of variance explained
LOSS_RECOVERED_MIN = 0.8  # share of the zero-ablation loss gap closed by the reconstruction
DEAD_MAX = 0.1  # share of features that never fire
LEVEL = stats.LEVEL

SAE_FVE = Requirement("the FVE of the worst SAE", "sae_fve_min", at_least=FVE_MIN)
SAE_LOSS = Requirement("the loss recovered by the worst SAE", "sae_loss_recovered_min", at_least=LOSS_RECOVERED_MIN)
SAE_DEAD = Requirement("the dead share of the worst SAE", "sae_dead_max", at_most=DEAD_MAX)
SAE_QUALITY = (SAE_FVE, SAE_LOSS, SAE_DEAD)
IDENTIFIABLE = Requirement(f"the control's persisting share at r ≥ {MATCH} (two SAEs of the base that differ only in "
                           f"their seed; lowest seed)", "control", at_least=0.6)
ASSIGN_SELECTIVE = Requirement("the selectivity of the base's assignment feature (its r with `=` in code, mean over "
                               "seeds)", "assign_selectivity", at_least=0.3)
EXCEPT_SELECTIVE = Requirement("the selectivity of the base's exception feature (its r with raise/except/…Error in "
                               "code, mean over seeds)", "except_selectivity", at_least=0.3)
EXCEPT_REIDENTIFIED = Requirement(f"the exception feature's best partner in a second SAE of the base (other seed; "
                                  f"r, mean over seeds), so that 'no match' is not the SAE's seed alone",
                                  "except_control_r_mean", at_least=MATCH)
FINETUNES_DIFFER = Requirement("each fine-tune's accuracy lead over the other on its own domain (the smaller of the "
                               "two)", "domain_lead", at_least=0.01)

FEW_PERSIST = Rule(
    "few_persist", claim="Very few SAE features persist across fine-tuning and merging.",
    paper="qualitative, Figure 2 (exact shares not retrieved)",
    test="per seed, the persisting share at r ≥ {match} along the four edges with the child's SAE from another seed, "
         "divided by the control's: the {level:.0%} interval of its mean below {at_most} (fine-tuning or merging, "
         "not re-training the SAE, removes most features)",
    constants={"match": MATCH, "at_most": 0.5, "level": LEVEL}, requires=(*SAE_QUALITY, IDENTIFIABLE))
GENERIC_PERSIST = Rule(
    "generic_persist", claim="Persisting features are mostly generic ones (punctuation, formatting).",
    paper="qualitative (GPT-4 explanations)",
    test="per seed, the share of punctuation/whitespace features among persisting minus among disappearing parent "
         "features (four edges pooled, r ≥ {match}): the {level:.0%} interval of its mean above {margin}",
    constants={"match": MATCH, "margin": 0.10, "level": LEVEL}, requires=(*SAE_QUALITY, IDENTIFIABLE))
ASSIGNMENT_UNIVERSAL = Rule(
    "assignment_universal", claim="A variable-assignment feature appears in all four models.",
    paper="qualitative, Figure 3 (high pairwise correlations)",
    test="per seed, the weakest of the best-partner correlations of the base's most `=`-selective feature in "
         "stories, lua and merged: the {level:.0%} interval of its mean above {match}",
    constants={"match": MATCH, "level": LEVEL}, requires=(*SAE_QUALITY, IDENTIFIABLE, ASSIGN_SELECTIVE))
EXCEPTION_NO_LUA_MATCH = Rule(
    "exception_no_lua_match", claim="A Python-exception feature of the base has no match in the Lua model.",
    paper="qualitative, Figure 4 (no match above the threshold)",
    test="per seed, the best-partner correlation in the Lua model of the base's most exception-selective feature: "
         "the {level:.0%} interval of its mean below {match}",
    constants={"match": MATCH, "level": LEVEL},
    requires=(*SAE_QUALITY, IDENTIFIABLE, EXCEPT_SELECTIVE, EXCEPT_REIDENTIFIED))
INTERPOLATION_MONOTONE = Rule(
    "interpolation_monotone",
    claim="Along the SLERP path each domain's accuracy moves monotonically between the two fine-tunes (Figure 5).",
    paper="stories 0.247 → 0.497, Lua 0.494 → 0.203 from the Lua to the stories end (exploratory metric_test.json)",
    test="Spearman ρ of next-token accuracy against t along the SLERP path (one fine-tune seed): its {level:.0%} "
         "bootstrap interval above {rho} on stories and below -{rho} on Lua (both must hold)",
    constants={"rho": 0.9, "level": LEVEL}, requires=(FINETUNES_DIFFER,))
GPT4_EXPLANATIONS = Rule(
    "gpt4_explanations", claim="Automated GPT-4 explanations score persisting features differently (Figure 6).",
    paper="explanation-score histograms", test="needs an LLM explainer; offline, features are labelled by token class")
RULES = (FEW_PERSIST, GENERIC_PERSIST, ASSIGNMENT_UNIVERSAL, EXCEPTION_NO_LUA_MATCH, INTERPOLATION_MONOTONE,
         GPT4_EXPLANATIONS)
PERSISTENCE_RULES = (FEW_PERSIST, GENERIC_PERSIST, ASSIGNMENT_UNIVERSAL, EXCEPTION_NO_LUA_MATCH)


def sae_gates(quality: pd.DataFrame) -> dict[str, float]:
    """The SAE-quality numbers the preconditions read: the worst SAE's FVE, loss recovered and dead share."""
    return {"sae_fve_min": float(quality["fve"].min()),
            "sae_loss_recovered_min": float(quality["loss_recovered"].min()),
            "sae_dead_max": float(quality["dead_share"].max())}


def by_matcher(comps: list[dict]) -> dict[str, dict[str, float]]:
    """Mean persisting share under each matcher at its threshold: the paper's protocol, independent SAE seeds and
    the same-model control (for the results record: the control beside every parent -> child share)."""
    groups = {"paper_protocol": measure.EDGES, "independent": CROSS, "control": [CONTROL]}
    return {matcher: {g: float(np.mean(measure.persistence(comps, THRESHOLDS[matcher], edges, matcher,
                                                            FLOW_CONSISTENCY))) for g, edges in groups.items()}
            for matcher in measure.MATCHERS}


def measured(comps: list[dict], acc: dict, quality: pd.DataFrame) -> dict:
    """The numbers the rules read, at r >= MATCH: lists are per seed, scalars feed the preconditions; `quality` is
    measure.sae_quality(saes)."""
    ctrl = measure.persistence(comps, MATCH, [CONTROL])
    case = {k: measure.case_study(comps, k).pivot(index="seed", columns="model") for k in measure.CASES}
    sweep, acc_m = pd.DataFrame(acc["sweep"]), acc["models"]
    return {
        "paper_protocol": measure.persistence(comps, MATCH), "independent": measure.persistence(comps, MATCH, CROSS),
        "control_per_seed": ctrl, "control": min(ctrl), "generic_gap": measure.generic_gap(comps, MATCH),
        "assign_weakest": case["assign"]["r"][["stories", "lua", "merged"]].min(axis=1).tolist(),
        "assign_selectivity": float(case["assign"]["selectivity"]["base"].mean()),
        "assign_control_r": case["assign"]["control_r"]["base"].tolist(),
        "except_lua": case["except"]["r"]["lua"].tolist(), "except_stories": case["except"]["r"]["stories"].tolist(),
        "except_selectivity": float(case["except"]["selectivity"]["base"].mean()),
        "except_control_r": case["except"]["control_r"]["base"].tolist(),
        "except_control_r_mean": float(case["except"]["control_r"]["base"].mean()),
        **sae_gates(quality), "by_matcher": by_matcher(comps),
        "sweep_t": sweep["t"].tolist(), "sweep_stories": sweep["stories"].tolist(), "sweep_lua": sweep["lua"].tolist(),
        "domain_lead": float(min(acc_m["stories"]["stories"] - acc_m["lua"]["stories"],
                                 acc_m["lua"]["lua"] - acc_m["stories"]["lua"])),
    }


def _judge(rule: Rule, m: dict, ours: str, decide, **fields) -> Claim:
    """The rule's claim: "not testable at this scale" if a precondition fails (the measured numbers stay on it),
    else the verdict `decide()` -> (verdict, reason, interval) reads."""
    gated = rule.gate(m, ours, **fields)
    if gated is not None:
        return gated
    verdict, reason, interval = decide()
    return rule.decide(verdict, ours, reason, interval=interval, **fields)


def _seeds(values) -> dict:
    eff = stats.effect(values)
    return {"value": eff.mean, "spread": eff.sd, "n": eff.n}


def few_persist(m: dict) -> Claim:
    rule, pers = FEW_PERSIST, m["paper_protocol"]

    def decide():
        rel = stats.effect(np.asarray(m["independent"]) / np.asarray(m["control_per_seed"]))
        return (by_interval(rel.lo, rel.hi, rule["at_most"], greater=False),
                f"independent-seed persistence relative to the control: {rel.text('{:.2f}')}", (rel.lo, rel.hi))

    extra = {"independent_seeds": float(np.mean(m["independent"])), "control": float(np.mean(m["control_per_seed"])),
             "per_seed": list(pers), "by_matcher": m.get("by_matcher", {})}
    ours = (f"{stats.describe(pers)} persist (paper protocol); with independent SAE seeds "
            f"{np.mean(m['independent']):.3f}, control {np.mean(m['control_per_seed']):.3f}")
    return _judge(rule, m, ours, decide, extra=extra, **_seeds(pers))


def generic_persist(m: dict) -> Claim:
    rule, gap = GENERIC_PERSIST, m["generic_gap"]

    def decide():
        eff = stats.effect(gap)
        return by_interval(eff.lo, eff.hi, rule["margin"]), f"punctuation/whitespace gap {eff.text('{:+.2f}')}", \
            (eff.lo, eff.hi)

    return _judge(rule, m, stats.describe(gap), decide, **_seeds(gap))


def assignment_universal(m: dict) -> Claim:
    rule, weakest = ASSIGNMENT_UNIVERSAL, m["assign_weakest"]

    def decide():
        eff = stats.effect(weakest)
        return (by_interval(eff.lo, eff.hi, rule["match"]),
                f"weakest best-match r {eff.text('{:.2f}')}; selectivity {m['assign_selectivity']:.2f}; the "
                f"feature's best partner in a second SAE of the base r {np.mean(m['assign_control_r']):.2f}",
                (eff.lo, eff.hi))

    return _judge(rule, m, stats.describe(weakest), decide, **_seeds(weakest))


def exception_no_lua_match(m: dict) -> Claim:
    rule, r_lua, r_sto = EXCEPTION_NO_LUA_MATCH, m["except_lua"], m["except_stories"]

    def decide():
        eff = stats.effect(r_lua)
        also = " (also unmatched: not Lua-specific)" if np.mean(r_sto) < rule["match"] else ""
        return (by_interval(eff.lo, eff.hi, rule["match"], greater=False),
                f"best Lua partner r {eff.text('{:.2f}')}, selectivity {m['except_selectivity']:.2f}; best stories "
                f"partner r {np.mean(r_sto):.2f}{also}", (eff.lo, eff.hi))

    return _judge(rule, m, stats.describe(r_lua), decide, **_seeds(r_lua))


def interpolation_monotone(m: dict) -> Claim:
    rule, t = INTERPOLATION_MONOTONE, m["sweep_t"]
    rho_s, lo_s, hi_s = stats.rank_correlation(t, m["sweep_stories"])
    rho_l, lo_l, hi_l = stats.rank_correlation(t, m["sweep_lua"])

    def decide():
        parts = {"stories": by_interval(lo_s, hi_s, rule["rho"]),
                 "lua": by_interval(lo_l, hi_l, -rule["rho"], greater=False)}
        return (by_indicators(parts), f"Spearman ρ: stories {rho_s:+.2f} [{lo_s:+.2f}, {hi_s:+.2f}], Lua {rho_l:+.2f} "
                f"[{lo_l:+.2f}, {hi_l:+.2f}]", None)

    ours = (f"stories {m['sweep_stories'][0]:.3f} → {m['sweep_stories'][-1]:.3f}, Lua {m['sweep_lua'][0]:.3f} → "
            f"{m['sweep_lua'][-1]:.3f} (t = 0 → 1, one fine-tune seed)")
    value = None if math.isnan(rho_s) else rho_s  # a constant accuracy has no rank correlation
    return _judge(rule, m, ours, decide, value=value, n=1,
                  extra={"rho_lua": None if math.isnan(rho_l) else rho_l})


def claims(m: dict) -> list[Claim]:
    """Every rule's claim from `measured(...)`, in RULES order."""
    return [few_persist(m), generic_persist(m), assignment_universal(m), exception_no_lua_match(m),
            interpolation_monotone(m), GPT4_EXPLANATIONS.offline("no LLM explainer offline; features are labelled by "
                                                                 "token class")]
