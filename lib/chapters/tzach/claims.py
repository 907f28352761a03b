"""Chapter 4's claims: the paper's numbers once, each claim's test as a `Rule` constant, and `claims(measured)`.

Every threshold of a verdict is a constant here (none is a notebook parameter); the page states the rules from the
same declarations (`page.rules(RULES)`). What counts as a replicate: for a depth claim, an independently
pre-trained model (mask draws of one model measure the readout's noise, not the model's), so with one base the depth
claims are "inconclusive"; for the fine-tuning claim, a train/test split; for the W_S claim, a pre-training size.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats as st

from lib import stats
from lib.claims import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, Requirement, Rule, by_indicators,
                        by_interval)

PAPER_APT = {0: 0.037, 6: 0.31}  # ⟨APT⟩ at the embedding and after block 6 (the paper's Table 1)
CLUSTER_THRESHOLD = 0.5  # strong match: normalised confusion >= this (the paper gives no value)
MIN_KEPT = 10  # a block's clusters count only when at least this many token types keep their diagonal

LEARNED = Requirement("token types the base's own head recovers, Σ_t APT(t) (a constant "
                      "prediction scores 1)", "types_recovered", at_least=5)
DEPTH = Rule(
    "apt_rises_with_depth", "⟨APT⟩ rises along the transformer blocks", "0.037 (block 0) → 0.31 (block 6)",
    test="fresh-head readout, per independently pre-trained model: ⟨APT⟩ after the last block minus block 0 over "
         "all selected positions, the same over [MASK] positions only (both: the {level:.0%} interval of the mean "
         "over models above {min_gap}), and Spearman(block, ⟨APT⟩) (interval above {rho}); reproduced when all "
         "three hold, partly when two do; fewer than {min_models} models: inconclusive (mask draws of one model "
         "are not replicates)",
    constants={"min_gap": 0.001, "rho": 0.8, "min_models": 2, "level": stats.LEVEL},
    requires=(Requirement("blocks in the model", "n_layers", at_least=2), LEARNED))
DEPTH_CAUSAL = Rule(
    "apt_rises_with_depth_causal", "⟨APT⟩ rises along the layers (extension: causal LM, next token)",
    "0.037 → 0.31 (BERT-6, masked LM)",
    test="logit lens, per model: last layer minus layer 0 (interval above {min_gap}) and Spearman(layer, ⟨APT⟩) "
         "(interval above {rho}); fewer than {min_models} models: inconclusive",
    constants={"min_gap": 0.001, "rho": 0.8, "min_models": 2},
    requires=(Requirement("layers in the model", "n_layers", at_least=2),))
FREQUENCY = Rule(
    "apt_rises_with_frequency", "APT rises with token frequency", "qualitative (Fig. 1)",
    test="Spearman(frequency in the pre-training rows, APT) over token types at the base's own head: the "
         "{level:.0%} bootstrap interval above {rho}",
    constants={"rho": 0.3, "level": stats.LEVEL},
    requires=(LEARNED, Requirement("token types with an APT", "n_types", at_least=30)))
DATA = Rule(
    "apt_rises_with_data", "⟨APT⟩ rises with the pre-training set size W_S", "qualitative (Fig. 2)",
    test="one model per size: a sign test over the steps between consecutive sizes (⟨APT⟩ of the larger minus the "
         "smaller, mean over mask draws); reproduced when p(rise) < {alpha}, not reproduced when p(fall) < {alpha}; "
         "fewer than {min_steps} steps cannot reach p < {alpha}: inconclusive",
    constants={"alpha": 0.05, "min_steps": 5},
    requires=(LEARNED,))
SMALL_CLUSTERS = Rule(
    "small_clusters", "pre-training forms finite, small strong-match token clusters", "qualitative",
    test="strong-match clusters of the base's own head (links at normalised confusion ≥ {threshold}); indicators: "
         "at least {n_min} clusters; at least {share:.0%} of them of ≤ {small} tokens; none larger than "
         "max({cap}, {giant:.0%} of the kept token types); reproduced when all hold, partly when two do",
    constants={"threshold": CLUSTER_THRESHOLD, "n_min": 3, "share": 0.9, "small": 4, "cap": 10, "giant": 0.05},
    requires=(LEARNED, Requirement("token types whose row maximum is on the diagonal", "n_kept", at_least=MIN_KEPT)))
SHARPEN = Rule(
    "clusters_sharpen", "strong-match clusters sharpen towards the output", "qualitative",
    test="share of the kept token types' confusions that land on a cluster partner (fresh-head readout, blocks "
         "with ≥ {min_kept} kept types), per independently pre-trained model: last minus first such block "
         "(interval above 0) and Spearman(block, share) (interval above {rho}); reproduced when both hold; fewer "
         "than {min_models} models: inconclusive",
    constants={"min_kept": MIN_KEPT, "rho": 0.8, "min_models": 2},
    requires=(LEARNED, Requirement(f"blocks with ≥ {MIN_KEPT} kept token types", "sharp_blocks", at_least=3)))
FINETUNE = Rule(
    "finetune_rises_with_depth", "fine-tuning accuracy rises along the blocks", "qualitative (FewRel, DBpedia)",
    test="per task, per train/test split: test accuracy of a logistic head on the frozen pre-trained states of "
         "the last block minus block 0, the {level:.0%} interval of the mean above {min_gap}; one indicator per "
         "task (all hold: reproduced; a strict majority: partly)",
    constants={"min_gap": 0.001, "level": stats.LEVEL},
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


def _per_model_rise(curves: Mapping[str, pd.Series]) -> dict[str, list[float]]:
    """For each model's curve (index: block, values: the measure): last minus first, and Spearman(block, value)."""
    return {"gap": [float(c.iloc[-1] - c.iloc[0]) for c in curves.values()],
            "rho": [_rho(c.index, c.values) for c in curves.values()]}


def depth_claim(rule: Rule, curves: dict[str, dict[str, pd.Series]], ours: str, gate: dict) -> Claim:
    """A depth rule over models: `curves` = {model: {indicator: Series block -> value (mean over draws)}}; the
    gap indicators are the series named in the dict, plus one monotonicity indicator on the first of them."""
    claim = rule.gate(gate, ours)
    if claim:
        return claim
    n = len(curves)
    if n < rule["min_models"]:
        return rule.decide(INCONCLUSIVE, ours, f"{n} pre-trained model(s): the rule needs {rule['min_models']} "
                                               f"(mask draws of one model are not replicates)")
    names = list(next(iter(curves.values())))
    rises = {k: _per_model_rise({m: c[k] for m, c in curves.items()}) for k in names}
    ind = {f"gap ({k})": _above(r["gap"], rule.constants.get("min_gap", 0.0)) for k, r in rises.items()}
    ind["monotone"] = _above(rises[names[0]]["rho"], rule["rho"])
    return rule.decide(by_indicators(ind), ours, "; ".join(f"{k}: {v}" for k, v in ind.items()),
                       extra={"indicators": ind, "gaps": rises[names[0]]["gap"]})


def _depth(m: dict) -> Claim:
    """Headline number: the base's ⟨APT⟩ after the last block, fresh-head readout (mean ± sd over mask draws)."""
    curves, txt, last = {}, [], {}
    for model, t in m["depth"].items():
        probe = t.query("readout == 'probe'").groupby("block")
        curves[model] = {"all positions": probe["mean_apt"].mean(), "[MASK] only": probe["mean_apt_masked"].mean()}
    t = m["depth"].get("base")
    if t is not None:
        for ro in ("probe", "lens"):
            g = t.query("readout == @ro").groupby("block")["mean_apt"]
            mean, sd = g.mean(), g.std().fillna(0.0)
            txt.append(f"{ro} {_fmt(mean.iloc[0], sd.iloc[0])} → {_fmt(mean.iloc[-1], sd.iloc[-1])}")
            last[ro] = (float(mean.iloc[-1]), float(sd.iloc[-1]))
    n = int(t["seed"].nunique()) if t is not None else 0
    ours = "; ".join(txt) + f" (block {m['n_layers']}; ± sd over {n} mask draws of one model)"
    value, spread = last.get("probe", (None, None))
    return _with(depth_claim(DEPTH, curves, ours, m), value=value, spread=spread, n=n)


def local_claims(df: pd.DataFrame) -> list[Claim]:
    """The local extension's one claim (APT rising with depth in a packaged causal LM, one model)."""
    curve = df.set_index("block")["mean_apt"]
    ours = f"{curve.iloc[0]:.3f} → {curve.iloc[-1]:.3f} (one model, one held-out sample)"
    claim = depth_claim(DEPTH_CAUSAL, {"local": {"all positions": curve}}, ours, {"n_layers": len(curve) - 1})
    return [_with(claim, value=float(curve.iloc[-1]), n=1)]


def _frequency(m: dict) -> Claim:
    f = m["frequency"]
    lo, hi = f["ci"]
    ours = (f"Spearman(frequency, APT) = {f['rho']:.2f} [{lo:.2f}, {hi:.2f}] over {f['n_types']} token types; "
            f"⟨APT⟩ {f['mean_apt']}, APT({f['k']}) {f['apt_top']}")
    gate = {"types_recovered": m["types_recovered"], "n_types": f["n_types"]}
    claim = FREQUENCY.gate(gate, ours) or FREQUENCY.decide(by_interval(lo, hi, FREQUENCY["rho"]), ours)
    return _with(claim, value=f["rho"], n=f["n_types"], interval=(lo, hi))


def _data(m: dict) -> Claim:
    means = m["ws"].groupby("rows")["mean_apt"].mean()
    ours = ", ".join(f"{int(r)} rows: {v:.4f}" for r, v in means.items()) + \
        f" ({m['ws_protocol'].replace('_', ' ')}; mean over {m['ws']['seed'].nunique()} mask draws)"
    fields = {"value": float(means.iloc[-1]), "n": int(m["ws"]["seed"].nunique())}
    steps = np.diff(means.values)
    claim = DATA.gate(m, ours)
    if claim is None and len(steps) < DATA["min_steps"]:
        claim = DATA.decide(INCONCLUSIVE, ours, f"{len(means)} sizes give {len(steps)} steps: a sign test cannot "
                                                f"go below p = {0.5 ** max(len(steps), 1):.3g}")
    if claim is None:
        up, down = stats.sign_test(steps, "greater"), stats.sign_test(steps, "less")
        verdict = REPRODUCED if up < DATA["alpha"] else NOT_REPRODUCED if down < DATA["alpha"] else INCONCLUSIVE
        claim = DATA.decide(verdict, ours, f"sign test over {len(steps)} steps: p(rise) {up:.3g}, p(fall) {down:.3g}")
    return _with(claim, **fields)


def _small_clusters(m: dict) -> Claim:
    c, r = m["final_clusters"], SMALL_CLUSTERS
    sizes, kept = np.asarray(c["sizes"], int), c["n_kept"]
    ours = (f"{len(sizes)} clusters among {kept} kept token types, sizes {min(sizes.tolist(), default=0)}–"
            f"{sizes.max(initial=0)} (mean {sizes.mean() if sizes.size else 0:.1f})")
    claim = r.gate({"types_recovered": m["types_recovered"], "n_kept": kept}, ours)
    if claim:
        return _with(claim, value=float(sizes.size))
    ind = {"several clusters": REPRODUCED if sizes.size >= r["n_min"] else NOT_REPRODUCED,
           "mostly small": REPRODUCED if sizes.size and (sizes <= r["small"]).mean() >= r["share"] else NOT_REPRODUCED,
           "finite": REPRODUCED if sizes.max(initial=0) <= max(r["cap"], r["giant"] * kept) else NOT_REPRODUCED}
    return _with(r.decide(by_indicators(ind), ours, "; ".join(f"{k}: {v}" for k, v in ind.items()),
                          extra={"indicators": ind}), value=float(sizes.size))


def _sharpen(m: dict) -> Claim:
    curves, kept = {}, {}
    for model, t in m["sharpness"].items():
        ok = t[t["n_kept"] >= MIN_KEPT].dropna(subset=["concentration"]).set_index("block")["concentration"]
        curves[model] = {"share on a partner": ok}
        kept[model] = t["n_kept"].tolist()
    base = curves.get("base", {}).get("share on a partner", pd.Series(dtype=float))
    ours = (f"share on a cluster partner {base.iloc[0]:.2f} (block {base.index[0]}) → {base.iloc[-1]:.2f} "
            f"(block {base.index[-1]})" if len(base) >= 2 else
            "kept token types per block: " + ", ".join(map(str, kept.get("base", []))))
    gate = {"types_recovered": m["types_recovered"], "sharp_blocks": min((len(c["share on a partner"])
                                                                          for c in curves.values()), default=0)}
    gap = float(base.iloc[-1] - base.iloc[0]) if len(base) >= 3 else float("nan")  # headline: last minus first
    return _with(depth_claim(SHARPEN, curves, ours, gate), value=gap)


def _finetune(m: dict) -> Claim:
    t, ind, txt = m["finetune"], {}, []
    L = int(t["block"].max())
    for task, g in t.groupby("task"):
        acc = g.pivot(index="seed", columns="block", values="accuracy")
        ind[task] = _above((acc[L] - acc[0]).values, FINETUNE["min_gap"])
        txt.append(f"{task}: {_fmt(acc[0].mean(), _sd(acc[0]))} → {_fmt(acc[L].mean(), _sd(acc[L]))}")
    above = t.groupby(["task", "block"])["accuracy"].mean().groupby("task").max() - t.groupby("task")["chance"].first()
    ours = "; ".join(txt) + f" (block 0 → {L}; n={t['seed'].nunique()} splits)"
    last = t[t["block"] == L].groupby("task")["accuracy"].mean()
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
