"""Chapter 4's claims: the paper's numbers once, each claim's test as a `Rule` constant, and `claims(measured)`.

Every threshold of a verdict is a constant here (none is a notebook parameter); the page states the rules from the
same declarations (`page.rules(RULES)`). What counts as a replicate: for the depth and cluster claims, an
independently pre-trained model (mask draws of one model measure the readout's noise, not the model's; they are
pooled as more positions), so with one base those claims are "inconclusive"; for the fine-tuning claim, a
train/test split; for the W_S claim, a pre-training size. Every APT claim needs an evaluation of at least
`MIN_POSITIONS` selected positions per model, else it is "not testable at this scale".
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as st

from lib import stats
from lib.chapters.tzach.measure import MIN_OCCURRENCES
from lib.claims import (INCONCLUSIVE, NOT_REPRODUCED, PARTLY, REPRODUCED, Claim, Requirement, Rule, by_indicators,
                        by_interval)

PAPER_APT = {0: 0.037, 6: 0.31}  # ⟨APT⟩ at the embedding and after block 6 (the paper's Table 1)
CLUSTER_THRESHOLD = 0.5  # strong match: normalised confusion >= this (the paper gives no value)
MIN_KEPT = 10  # a block's clusters count only when at least this many token types keep their diagonal
MIN_POSITIONS = 100_000  # selected held-out positions per model below which no APT claim is decided
MIN_MODELS = 2  # independently pre-trained models a depth or cluster claim needs
MIN_LOSS_GAP = 1.5  # nats below the unigram predictor's held-out loss before a model's APT structure means anything

LEARNED = Requirement("token types the base's own head recovers on [MASK] positions, Σ_t APT(t) (a constant "
                      "prediction scores 1)", "types_recovered", at_least=5)
ENOUGH = Requirement("selected held-out positions per model", "n_positions", at_least=MIN_POSITIONS)
TRAINED = Requirement("nats by which every pre-trained base copy's held-out masked-LM loss lies below the unigram "
                      "predictor's (the least-trained copy; a model on the frequency plateau sits near 0; the "
                      "smaller W_S models are not held to it)",
                      "loss_gap", at_least=MIN_LOSS_GAP)
DEPTH = Rule(
    "apt_rises_with_depth", "⟨APT⟩ rises along the transformer blocks", "0.037 (block 0) → 0.31 (block 6)",
    test="tuned head (the model's MLM head trained on each frozen block), [MASK] positions, ⟨APT⟩ over types "
         "selected ≥ {min_occ} times; per independently pre-trained model: *rising* = Spearman(block, ⟨APT⟩) ≥ "
         "{rho} and the last block above block 0; *strong* = the last block ≥ {ratio}× block 0. Reproduced when "
         "every model rises strongly, partly when every model rises but not all strongly, not reproduced when no "
         "model rises, inconclusive when the models disagree or there are fewer than {min_models}",
    constants={"min_occ": MIN_OCCURRENCES, "rho": 0.8, "ratio": 3.0, "min_models": MIN_MODELS},
    requires=(Requirement("blocks in the model", "n_layers", at_least=2), TRAINED, LEARNED, ENOUGH))
DEPTH_CAUSAL = Rule(
    "apt_rises_with_depth_causal_extension", "extension, not the paper's claim: next-token accuracy per type "
    "rises along the layers of a causal LM", "no paper number (the paper measures masked tokens in a BERT-6)",
    test="not scored: the local model is an instruction-tuned, 4-bit-quantised causal LM read through the logit "
         "lens, whose last layer is the model's own output by construction, so the rise along the layers is "
         "guaranteed by the lens; a different claim from the paper's masked-LM one",
    requires=(Requirement("masked LM readouts (1 = a masked LM; the local model is causal)", "masked_lm",
                          at_least=1),))
FREQUENCY = Rule(
    "apt_rises_with_frequency", "APT rises with token frequency", "qualitative (Fig. 1)",
    test="base's own head after the last block, [MASK] positions, token types selected ≥ {min_occ} times; the "
         "reference APT(t) = max(random-init control's APT(t), the unigram predictor's expected APT(t) = p(t)); "
         "indicators: Spearman(pre-training frequency, APT − reference) with its {level:.0%} bootstrap interval "
         "above {rho}, and the mean of APT − reference over types (bootstrap interval over types above {margin}); "
         "reproduced when both hold (a model that only predicts frequent tokens has APT ≈ p(t) and fails both)",
    constants={"min_occ": MIN_OCCURRENCES, "rho": 0.3, "margin": 0.01, "level": stats.LEVEL},
    requires=(TRAINED, LEARNED, ENOUGH, Requirement("token types with an APT", "n_types", at_least=30)))
DATA = Rule(
    "apt_rises_with_data", "⟨APT⟩ rises with the pre-training set size W_S", "qualitative (Fig. 2)",
    test="one model per size, final head, [MASK] positions: a sign test over the steps between consecutive sizes "
         "(⟨APT⟩ of the larger minus the smaller); reproduced when p(rise) < {alpha}, not reproduced when p(fall) "
         "< {alpha}; fewer than {min_steps} steps cannot reach p < {alpha}: inconclusive",
    constants={"alpha": 0.05, "min_steps": 5},
    requires=(TRAINED, LEARNED, ENOUGH))
SMALL_CLUSTERS = Rule(
    "small_clusters", "pre-training forms finite, small strong-match token clusters", "qualitative",
    test="strong-match clusters of each pre-trained model's own head, [MASK] positions (links at normalised "
         "confusion ≥ {threshold}); per model, indicators: its small clusters (2–{small} tokens) exceed every one "
         "of the shuffled-prediction nulls (same marginals, pairing broken) and their mean by ≥ {n_min}; they "
         "exceed the random-init control's by ≥ {n_min}; at least {share:.0%} of its clusters are small; none is "
         "larger than max({cap}, {giant:.0%} of the kept types). Per model by the majority of indicators; "
         "combined over models as the depth rule (fewer than {min_models} models: inconclusive)",
    constants={"threshold": CLUSTER_THRESHOLD, "n_min": 3, "share": 0.9, "small": 4, "cap": 10, "giant": 0.05,
               "min_models": MIN_MODELS},
    requires=(TRAINED, LEARNED, ENOUGH, Requirement("token types whose row maximum is on the diagonal (fewest over models)",
                                           "n_kept", at_least=MIN_KEPT)))
SHARPEN = Rule(
    "clusters_sharpen", "strong-match clusters sharpen towards the output", "qualitative",
    test="sharpening = share of the kept types' confusions that land on a cluster partner after the last block "
         "(own head) minus the same at the first block whose tuned head keeps ≥ {min_kept} types, [MASK] "
         "positions; per model, the {level:.0%} bootstrap interval over positions of its sharpening minus the "
         "shuffled-prediction null's, and minus the random-init control's, both above {margin}; combined over "
         "models as the depth rule (fewer than {min_models} models: inconclusive)",
    constants={"min_kept": MIN_KEPT, "margin": 0.0, "level": stats.LEVEL, "min_models": MIN_MODELS},
    requires=(TRAINED, LEARNED, ENOUGH, Requirement(f"models with a block below the last keeping ≥ {MIN_KEPT} types "
                                           "(1 = all of them)", "sharp_ok", at_least=1)))
FINETUNE = Rule(
    "finetune_rises_with_depth", "fine-tuning accuracy rises along the blocks", "qualitative (FewRel, DBpedia)",
    test="per task, per train/test split: gap(b) = test accuracy of a logistic head on the frozen pre-trained "
         "states of block b minus the random-init control's at the same block and split; gap(last) − gap(0), the "
         "{level:.0%} interval of its mean over splits above {min_gap}; one indicator per task (all hold: "
         "reproduced; a strict majority: partly)",
    constants={"min_gap": 0.02, "level": stats.LEVEL},
    requires=(Requirement("the worst task's best-block accuracy above chance", "finetune_above_chance",
                          at_least=0.05),))
CONFIDENCE = Rule(
    "confidence_independent_of_apt", "classifier confidence does not depend on the input's mean APT", "qualitative",
    test="topic task: the {level:.0%} bootstrap interval of Spearman(input's mean APT, confidence) inside "
         "(-{bound}, {bound}) reproduced, wholly outside not reproduced, straddling a bound inconclusive "
         "(an equivalence test)",
    constants={"bound": 0.1, "level": stats.LEVEL},
    requires=(Requirement("the fine-tuned topic classifier's accuracy above chance", "confidence_above_chance",
                          at_least=0.1),))
RULES = (DEPTH, FREQUENCY, DATA, SMALL_CLUSTERS, SHARPEN, FINETUNE, CONFIDENCE)


def _fmt(m: float, sd: float) -> str:
    return f"{m:.3f} ± {sd:.3f}"


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _with(claim: Claim, **fields) -> Claim:
    """The claim with its headline number filled in, whatever the verdict path (the number does not depend on it)."""
    for k, v in fields.items():
        setattr(claim, k, v)
    return claim


def _rho(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(st.spearmanr(x, y).statistic) if np.ptp(x) and np.ptp(y) else 0.0


def _above(values, margin: float) -> str:
    e = stats.effect(values)
    return by_interval(e.lo, e.hi, margin)


def over_models(rule: Rule, per_model: dict[str, str]) -> tuple[str, str]:
    """One verdict from per-model verdicts: fewer than min_models -> inconclusive (too few seeds); all agree ->
    that verdict; reproduced and partly mixed -> partly; otherwise the models disagree -> inconclusive."""
    said = "; ".join(f"{m}: {v}" for m, v in per_model.items())
    if len(per_model) < rule["min_models"]:
        return INCONCLUSIVE, (f"{len(per_model)} pre-trained model(s), the rule needs {rule['min_models']} (mask "
                              f"draws of one model are not replicates); per model: {said}")
    got = set(per_model.values())
    if len(got) == 1:
        return got.pop(), said
    if got <= {REPRODUCED, PARTLY}:
        return PARTLY, said
    return INCONCLUSIVE, "the models disagree: " + said


def depth_verdict(curve: pd.Series, rule: Rule = DEPTH) -> str:
    """One model's depth verdict from its curve (index: block, values: ⟨APT⟩)."""
    c = curve.dropna()
    if len(c) < 2 or len(c) < len(curve):
        return INCONCLUSIVE
    first, last = float(c.iloc[0]), float(c.iloc[-1])
    rising = last > first and _rho(c.index, c.values) >= rule["rho"]
    strong = last >= rule["ratio"] * first and last > 0
    return (REPRODUCED if strong else PARTLY) if rising else NOT_REPRODUCED


def _depth(m: dict) -> Claim:
    """Headline number: the base's ⟨APT⟩ after the last block, tuned head, [MASK] positions."""
    curves = {name: t.set_index("block")["mean_apt"].sort_index() for name, t in m["depth"].items()}
    base = curves.get("base", next(iter(curves.values())))
    ours = (f"tuned head, [MASK] positions: {base.iloc[0]:.3f} (block 0) → {base.iloc[-1]:.3f} (block "
            f"{base.index[-1]}) in the base; {len(curves)} pre-trained model(s)")
    fields = {"value": float(base.iloc[-1]), "n": len(curves)}
    claim = DEPTH.gate(m, ours, **fields)
    if claim:
        return claim
    per = {name: depth_verdict(c) for name, c in curves.items()}
    verdict, why = over_models(DEPTH, per)
    ratios = {k: float(c.iloc[-1] / c.iloc[0]) if c.iloc[0] > 0 else float("inf") for k, c in curves.items()}
    return DEPTH.decide(verdict, ours, why, extra={"per_model": per, "ratio": ratios}, **fields)


def local_claims(df: pd.DataFrame) -> list[Claim]:
    """The local extension's one record: next-token ⟨APT⟩ along the layers of a packaged causal LM. It is not a
    reproduction of anything (see DEPTH_CAUSAL), so it is never decided: "not testable at this scale", naming why."""
    curve = df.set_index("block")["mean_apt"]
    ours = (f"next-token ⟨APT⟩ {curve.iloc[0]:.3f} (layer 0) → {curve.iloc[-1]:.3f} (last layer), one "
            f"instruction-tuned, 4-bit-quantised causal LM through the logit lens")
    return [DEPTH_CAUSAL.gate({"masked_lm": 0}, ours, value=float(curve.iloc[-1]), n=1)]


def _frequency(m: dict) -> Claim:
    f, r = m["frequency"], FREQUENCY
    t = f["types"]
    ours = (f"⟨APT⟩ {f['mean_apt']:.3f} over {f['n_types']} types selected ≥ {MIN_OCCURRENCES} times, "
            f"APT({f['k']}) {f['apt_top']:.3f}; Spearman(frequency, APT) = {f['rho']:.2f}")
    gate = {"loss_gap": m["loss_gap"], "types_recovered": m["types_recovered"], "n_positions": m["n_positions"],
            "n_types": len(t)}
    claim = r.gate(gate, ours, value=f["rho"], n=len(t))
    if claim:
        return claim
    excess = (t["apt"] - np.maximum(t["control"], t["unigram"])).to_numpy(float)
    rho, lo, hi = stats.rank_correlation(t["freq"], excess, n_boot=m.get("n_boot", 1000), seed=0)
    mlo, mhi = stats.bootstrap_interval(excess, n_boot=m.get("n_boot", 1000), seed=0)
    ind = {"rises beyond the baselines": by_interval(lo, hi, r["rho"]) if np.isfinite(rho) else NOT_REPRODUCED,
           "above the baselines": by_interval(mlo, mhi, r["margin"])}
    ours += (f"; against max(control, unigram): Spearman(frequency, excess) {rho:.2f} [{lo:.2f}, {hi:.2f}], "
             f"mean excess {excess.mean():.3f} [{mlo:.3f}, {mhi:.3f}]")
    return r.decide(by_indicators(ind), ours, "; ".join(f"{k}: {v}" for k, v in ind.items()),
                    extra={"indicators": ind}, value=f["rho"], n=len(t), interval=(lo, hi))


def _data(m: dict) -> Claim:
    means = m["ws"].groupby("rows")["mean_apt"].mean()
    ours = ", ".join(f"{int(r)} rows: {v:.4f}" for r, v in means.items()) + \
        f" ({m['ws_protocol'].replace('_', ' ')}; [MASK] positions)"
    fields = {"value": float(means.iloc[-1]), "n": len(means)}
    steps = np.diff(means.values)
    claim = DATA.gate(m, ours)
    if claim is None and np.isnan(steps).any():
        claim = DATA.decide(INCONCLUSIVE, ours, "a size has no token type selected often enough for ⟨APT⟩")
    if claim is None and len(steps) < DATA["min_steps"]:
        claim = DATA.decide(INCONCLUSIVE, ours, f"{len(means)} sizes give {len(steps)} steps: a sign test cannot "
                                                f"go below p = {0.5 ** max(len(steps), 1):.3g}")
    if claim is None:
        up, down = stats.sign_test(steps, "greater"), stats.sign_test(steps, "less")
        verdict = REPRODUCED if up < DATA["alpha"] else NOT_REPRODUCED if down < DATA["alpha"] else INCONCLUSIVE
        claim = DATA.decide(verdict, ours, f"sign test over {len(steps)} steps: p(rise) {up:.3g}, p(fall) {down:.3g}")
    return _with(claim, **fields)


def _n_small(sizes, small: int) -> int:
    return int(sum(2 <= s <= small for s in sizes))


def cluster_verdict(ev: dict, control: dict, r: Rule = SMALL_CLUSTERS) -> tuple[str, dict]:
    """One model's small-clusters verdict from its cluster_tests evidence and the control's."""
    sizes, kept = np.asarray(ev["sizes"], int), ev["n_kept"]
    obs, null = _n_small(sizes, r["small"]), [_n_small(x, r["small"]) for x in ev["null_sizes"]]
    ind = {"beyond the null": REPRODUCED if null and obs > max(null) and obs - np.mean(null) >= r["n_min"]
           else NOT_REPRODUCED,
           "beyond the control": REPRODUCED if obs - _n_small(control["sizes"], r["small"]) >= r["n_min"]
           else NOT_REPRODUCED,
           "mostly small": REPRODUCED if sizes.size and (sizes <= r["small"]).mean() >= r["share"] else NOT_REPRODUCED,
           "finite": REPRODUCED if sizes.max(initial=0) <= max(r["cap"], r["giant"] * kept) else NOT_REPRODUCED}
    return by_indicators(ind), ind


def _small_clusters(m: dict) -> Claim:
    ev = {k: v for k, v in m["clusters"].items() if k != "control"}
    b = ev.get("base", next(iter(ev.values())))
    sizes = np.asarray(b["sizes"], int)
    ours = (f"base: {len(sizes)} clusters among {b['n_kept']} kept token types, {_n_small(sizes, 4)} of 2–4 tokens "
            f"(shuffled nulls: mean {np.mean([_n_small(x, 4) for x in b['null_sizes']] or [0]):.1f}; control: "
            f"{_n_small(m['clusters']['control']['sizes'], 4)}); {len(ev)} pre-trained model(s)")
    gate = {"loss_gap": m["loss_gap"], "types_recovered": m["types_recovered"], "n_positions": m["n_positions"],
            "n_kept": min(e["n_kept"] for e in ev.values())}
    claim = SMALL_CLUSTERS.gate(gate, ours, value=float(sizes.size))
    if claim:
        return claim
    per = {k: cluster_verdict(e, m["clusters"]["control"]) for k, e in ev.items()}
    verdict, why = over_models(SMALL_CLUSTERS, {k: v for k, (v, _) in per.items()})
    return SMALL_CLUSTERS.decide(verdict, ours, why, extra={"indicators": {k: i for k, (_, i) in per.items()}},
                                 value=float(sizes.size), n=len(ev))


def _interval(x) -> tuple[float, float]:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size < 10:
        return float("nan"), float("nan")
    a = (1 - SHARPEN["level"]) / 2
    return float(np.quantile(x, a)), float(np.quantile(x, 1 - a))


def sharpen_verdict(ev: dict, control: dict, r: Rule = SHARPEN) -> tuple[str, dict]:
    """One model's sharpening verdict: the bootstrap intervals of (model − null) and (model − control)."""
    s = np.asarray(ev["sharpening"], float)
    d_null = s - np.asarray(ev["null_sharpening"], float)
    c = np.asarray(control.get("sharpening", []), float)
    c = np.nan_to_num(c, nan=0.0) if c.size else np.zeros_like(s)  # a control without clusters does not sharpen
    ind = {"beyond the null": by_interval(*_interval(d_null), r["margin"]),
           "beyond the control": by_interval(*_interval(s - c[: s.size]), r["margin"])}
    return by_indicators(ind), ind


def _sharpen(m: dict) -> Claim:
    ev = {k: v for k, v in m["clusters"].items() if k != "control"}
    ok = all(e.get("sharpening") is not None for e in ev.values())
    b = ev.get("base", next(iter(ev.values())))
    gap = float(np.nanmedian(b["sharpening"])) if b.get("sharpening") else float("nan")
    ours = (f"base: sharpening {gap:.3f} (block {b['first_block']} → {b['last_block']}, median over resamples); "
            f"{len(ev)} pre-trained model(s)" if ok else "no block below the last keeps enough token types")
    gate = {"loss_gap": m["loss_gap"], "types_recovered": m["types_recovered"], "n_positions": m["n_positions"],
            "sharp_ok": int(ok)}
    claim = SHARPEN.gate(gate, ours, value=gap)
    if claim:
        return claim
    per = {k: sharpen_verdict(e, m["clusters"]["control"]) for k, e in ev.items()}
    verdict, why = over_models(SHARPEN, {k: v for k, (v, _) in per.items()})
    return SHARPEN.decide(verdict, ours, why, extra={"indicators": {k: i for k, (_, i) in per.items()}},
                          value=gap, n=len(ev))


def _finetune(m: dict) -> Claim:
    t, ind, txt = m["finetune"], {}, []
    L = int(t["block"].max())
    for task, g in t.groupby("task"):
        acc = g.pivot_table(index="seed", columns=["model", "block"], values="accuracy")
        gap = acc["base"] - acc["control"]  # (splits, blocks)
        ind[task] = _above((gap[L] - gap[0]).values, FINETUNE["min_gap"])
        txt.append(f"{task}: base − control {_fmt(gap[0].mean(), _sd(gap[0]))} (block 0) → "
                   f"{_fmt(gap[L].mean(), _sd(gap[L]))} (block {L})")
    base = t[t["model"] == "base"]
    above = base.groupby(["task", "block"])["accuracy"].mean().groupby("task").max() - \
        base.groupby("task")["chance"].first()
    ours = "; ".join(txt) + f" (n={t['seed'].nunique()} splits)"
    last = base[base["block"] == L].groupby("task")["accuracy"].mean()
    claim = FINETUNE.gate({"finetune_above_chance": float(above.min())}, ours) or FINETUNE.decide(
        by_indicators(ind), ours, "; ".join(f"{k}: {v}" for k, v in ind.items()), extra={"indicators": ind})
    return _with(claim, value=float(last.mean()), n=int(t["seed"].nunique()))


def _confidence(m: dict) -> Claim:
    c, rest = m["confidence"]["topic"], {k: v for k, v in m["confidence"].items() if k != "topic"}
    lo, hi = c["spearman_ci"]
    ours = (f"topic: Spearman {c['spearman']:.2f} [{lo:.2f}, {hi:.2f}] (n={c['n']}, fine-tuned accuracy "
            f"{c['accuracy']:.3f}, chance {c['chance']:.3f})"
            + "".join(f", {k}: {v['spearman']:.2f}" for k, v in rest.items()))
    eq = stats.equivalence(lo, hi, CONFIDENCE["bound"])
    verdict = {"equivalent": REPRODUCED, "different": NOT_REPRODUCED}.get(eq, INCONCLUSIVE)
    claim = CONFIDENCE.gate({"confidence_above_chance": c["accuracy"] - c["chance"]}, ours) or CONFIDENCE.decide(
        verdict, ours, f"equivalence test with bound ±{CONFIDENCE['bound']}: {eq}")
    return _with(claim, value=c["spearman"], n=c["n"], interval=(lo, hi))


def claims(measured: dict) -> list[Claim]:
    """One Claim per headline statement of the paper, in the order of RULES (`measure.for_claims` builds the
    input)."""
    return [fn(measured) for fn in (_depth, _frequency, _data, _small_clusters, _sharpen, _finetune, _confidence)]
