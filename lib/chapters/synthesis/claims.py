"""06_synthesis, claims: each paper's conclusion about its pairs, as a rule on the reuse index, stated once.

The index (`lib.lenses.reuse_index`, per seed and layer point) puts CKA to the base on a scale fixed by two
references measured with the same lens: 0 = no closer to the base than a model that shares nothing with it (the
chapter's scratch model, else a random init of the base's architecture), 1 = as close as two seeds of the same
fine-tune are to each other. A conclusion names one or two indicators on it, each read per seed
(`measure.indicators`) and decided from the t-interval of its mean against a threshold (`lib.claims.by_interval`);
they combine by `lib.claims.by_indicators`: all hold = reproduced; a majority decided against = not reproduced;
otherwise inconclusive (an interval straddles its threshold, or fewer than two seeds, so no seed ceiling either).
A pair without a seed ceiling (one seed, or seeds that start from different bases, so no sibling fine-tune) is
scored against a ceiling of 1: its index is then a lower bound of the true one (for a tuned model closer to the
base than the null), so only a decision that the index lies *above* a threshold stands; one that rests on it lying
below (or on a difference of two bounds) becomes inconclusive. A pair that is another pair's null (Lin's scratch
model, `build.NULL_PAIRS`) is shown beside it and is not a claim of its own.
The raw CKA and the weight change are shown beside the index but decide nothing: a late-half weight change of
0.08-0.21 for every fine-tune made "Δw ≤ 0.5" hold always, and a fixed CKA threshold flipped with the choice of rows.

Every rule is gated on the chapter's own verdicts: a chapter most of whose claims were "not testable at this scale"
(its base could not do its task) gives "not testable at this scale" here too, not "rebuild"; and on the two
references being apart (a ceiling no higher than the null leaves nothing to calibrate against). The depth conclusion
(Zhao et al.) needs at least two blocks, so that there are an early and a late block to compare.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from lib import stats
from lib.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, Requirement, Rule, by_indicators, by_interval

INDEX_REUSE = 0.5  # "reused": the late-half reuse index above this, i.e. more than halfway from the null to the ceiling
DEPTH_MARGIN = 0.1  # "later layers task-specific": early-half minus late-half reuse index above this
MIN_SEPARATION = 0.1  # the seed ceiling's CKA must exceed the null's by this in both halves
MIN_TESTABLE = 0.5  # the share of a chapter's own claims that must have been testable
CONSTANTS = {"index_reuse": INDEX_REUSE, "depth_margin": DEPTH_MARGIN, "min_separation": MIN_SEPARATION,
             "level": stats.LEVEL}

TESTABLE = Requirement("share of the chapter's own claims that were testable at this scale (its base can do its "
                       "task)", "chapter_testable", at_least=MIN_TESTABLE)
SEPARATED = Requirement("seed-ceiling minus null CKA, the smaller of the two halves' means (the lens tells a sibling "
                        "seed from the null)", "separation", at_least=MIN_SEPARATION)
DEPTH = Requirement("blocks in the model (a depth claim needs an early and a late block)", "n_layers", at_least=2)


@dataclass(frozen=True)
class Indicator:
    """One per-seed indicator against one threshold: holds if the interval of its mean is on the `greater` side."""
    name: str
    key: str  # in measure.indicators
    threshold: str  # a key of CONSTANTS
    greater: bool

    def decide(self, values: list[float]) -> tuple[str, tuple[float, float]]:
        lo, hi = stats.t_interval(values) if len(values) else (float("nan"), float("nan"))
        return by_interval(lo, hi, CONSTANTS[self.threshold], self.greater), (lo, hi)


_SIDE = {True: "above", False: "below"}
KINDS = {
    "reuse": (Indicator("late index ≥ index_reuse", "late_index", "index_reuse", True),),
    "rebuild": (Indicator("late index < index_reuse", "late_index", "index_reuse", False),),
    "late": (Indicator("early index ≥ index_reuse", "early_index", "index_reuse", True),
             Indicator("early − late index ≥ depth_margin", "index_drop", "depth_margin", True)),
}
_WORDS = {"late_index": "late-half (depth > 0.5) reuse index", "early_index": "early-half reuse index",
          "index_drop": "early-half minus late-half reuse index"}


def _test(kind: str) -> str:
    parts = [f"the {{level:.0%}} t-interval of the per-seed {_WORDS[i.key]} lies {_SIDE[i.greater]} {{{i.threshold}}}"
             for i in KINDS[kind]]
    if len(parts) == 1:
        return (f"{parts[0]} = reproduced, wholly on the other side = not reproduced, otherwise inconclusive (it "
                "straddles the threshold, or fewer than two seeds)")
    return (f"{parts[0]} and {parts[1]}: both = reproduced, either wholly on the other side = not reproduced, "
            "otherwise inconclusive (an interval straddles its threshold, or fewer than two seeds)")


def _rule(id: str, kind: str, claim: str, depth: bool = False) -> Rule:
    return Rule(id, claim, f"qualitative: {kind}", _test(kind), CONSTANTS,
                (TESTABLE, SEPARATED, DEPTH) if depth else (TESTABLE, SEPARATED))


LIN_TUNED = _rule("lin_tuned_reuses", "reuse", "Lin (2024): the fine-tuned model relies on pretrained "
                  "representations, particularly in later layers.")
ZHAO_LATE = _rule("zhao_later_layers_specific", "late", "Zhao et al. (2024): early layers stay shared with the "
                  "pre-trained model, later layers become task-specific through instruction tuning.", depth=True)
PRAKASH_REUSE = _rule("prakash_circuit_kept", "reuse", "Prakash et al. (2024): fine-tuning keeps the base model's "
                      "entity-tracking circuit and enhances it.")
TZACH_REUSE = _rule("tzach_builds_on_pretraining", "reuse", "Tzach et al. (2025): fine-tuning builds on the "
                    "pre-trained representation, whose usefulness for the task grows along the blocks.")
HORN_REBUILD = _rule("horn_few_features_persist", "rebuild", "Horn & Elliott (2024): very few SAE features persist "
                     "from parent to child, through fine-tuning and through merging (a few generic or universal ones "
                     "do).")
RULES = (LIN_TUNED, ZHAO_LATE, PRAKASH_REUSE, TZACH_REUSE, HORN_REBUILD)
KIND = {LIN_TUNED.id: "reuse", ZHAO_LATE.id: "late", PRAKASH_REUSE.id: "reuse", TZACH_REUSE.id: "reuse",
        HORN_REBUILD.id: "rebuild"}
# (chapter, substring of the pair's name, rule): the first match wins; control pairs (build.NULL_PAIRS) have none
FOR_PAIRS = (("lin", "", LIN_TUNED), ("zhao", "", ZHAO_LATE),
             ("prakash", "", PRAKASH_REUSE), ("tzach", "", TZACH_REUSE), ("horn", "", HORN_REBUILD))


def class_text() -> str:
    """The class rule in words, rendered from the reuse indicator and its constants."""
    (ind,) = KINDS["reuse"]
    return (f"**reuse** if the {stats.LEVEL:.0%} t-interval of the per-seed {_WORDS[ind.key]} lies above "
            f"{CONSTANTS[ind.threshold]:g}; **rebuild** if it lies wholly below; **undecided** otherwise; **not "
            "testable** when the chapter's base could not do its task or the seed ceiling is not above the null")


def rule_for(module: str, pair: str) -> Rule:
    for m, part, rule in FOR_PAIRS:
        if m == module and part in pair:
            return rule
    raise KeyError(f"no synthesis rule for chapter {module!r} (pair {pair!r}): add one to FOR_PAIRS")


def decide(kind: str, m: dict) -> dict[str, dict]:
    """Each indicator of `kind` on the measured pair: {name: {"verdict", "interval", "values"}}."""
    out = {}
    for ind in KINDS[kind]:
        values = m["indicators"][ind.key]
        verdict, interval = ind.decide(values)
        out[ind.name] = {"verdict": verdict, "interval": interval, "values": values}
    return out


def bounded(kind: str, decided: dict[str, dict], m: dict) -> dict[str, dict]:
    """Without a seed ceiling the index is a lower bound: keep only decisions that it lies above a threshold (a
    "reuse"-side indicator reproduced, a "rebuild"-side one not reproduced); the rest become inconclusive."""
    if m["has_ceiling"]:
        return decided
    out = {}
    for ind in KINDS[kind]:
        d = dict(decided[ind.name])
        above = d["verdict"] == (REPRODUCED if ind.greater else NOT_REPRODUCED)
        if ind.key == "index_drop" or (d["verdict"] in (REPRODUCED, NOT_REPRODUCED) and not above):
            d["verdict"] = INCONCLUSIVE
        out[ind.name] = d
    return out


def pair_class(m: dict) -> str:
    """'reuse' if both reuse indicators hold, 'rebuild' if either is decided against, else 'undecided';
    'not testable' when the chapter's base could not do its task; 'control' for another pair's null."""
    if m.get("null_of"):
        return "control"
    if not (TESTABLE.met(m.get(TESTABLE.key)) and SEPARATED.met(m.get(SEPARATED.key))):
        return "not testable"
    verdicts = [d["verdict"] for d in bounded("reuse", decide("reuse", m), m).values()]
    if all(v == REPRODUCED for v in verdicts):
        return "reuse"
    return "rebuild" if NOT_REPRODUCED in verdicts else "undecided"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _finite(x: float | None) -> float | None:
    return x if x is not None and x == x else None


def _ours(m: dict, cls: str) -> str:
    n = m["n_seeds"]
    late = m["indicators"]["late_index"]
    iv = stats.t_interval(late) if len(late) > 1 else None
    ci = f", {stats.LEVEL:.0%} CI [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else ""
    ceiling = "" if m["has_ceiling"] else f" against a ceiling of 1 ({m['no_ceiling']}: a lower bound)"
    return (f"{cls}: reuse index early {m['index_early']:.2f} / late {m['index_late']:.2f}{ci}{ceiling} (null: "
            f"{m['null_kind']}); CKA late {m['cka_late']:.2f}, Δw late {m['weight_late']:.3f}, recovery > "
            f"{m['recovery_level']:g} from {m['recovery_from']} (mean of {n} seed{'s' if n > 1 else ''})")


def claim(m: dict) -> Claim:
    """The claim of one measured pair (`measure.measured`); its id names the pair, its rule is in extra["rule"]."""
    rule = rule_for(m["module"], m["pair"])
    cls = pair_class(m)
    late = m["indicators"]["late_index"]
    extra = {"notebook": m["notebook"], "pair": m["pair"], "rule": rule.id, "class": cls,
             "late_index_per_seed": late, "late_cka_per_seed": m["indicators"]["late_cka"],
             **{k: m[k] for k in ("cka", "weight_change", "recovery", "m_base", "m_tuned", "cka_final", "index",
                                  "null_cka", "ceiling_cka", "null_kind", "has_ceiling", "separation", "dose")}}
    spread = float(np.std(late, ddof=1)) if len(late) > 1 else None
    fields = dict(id=f"{m['module']}:{_slug(m['pair'])}", value=_finite(m["index_late"]), n=m["n_seeds"],
                  spread=spread, extra=extra, interval=stats.t_interval(late) if len(late) > 1 else None)
    gated = rule.gate(m, ours=_ours(m, cls))
    if gated is not None:
        return dataclasses.replace(gated, **fields)
    ind = bounded(KIND[rule.id], decide(KIND[rule.id], m), m)
    extra["indicators"] = ind
    why = "; ".join(f"{k}: {d['verdict']} ({_interval_text(d)})" for k, d in ind.items())
    if len(late) < 2:
        why += "; too few seeds: one tuned model, so no interval and no seed ceiling"
    elif not m["has_ceiling"]:
        why += (f"; no seed ceiling ({m['no_ceiling']}): the index is a lower bound, so only a decision that it "
                "lies above a threshold stands")
    verdict = by_indicators({k: d["verdict"] for k, d in ind.items()})
    return dataclasses.replace(rule.decide(verdict, _ours(m, cls), why), **fields)


def _interval_text(d: dict) -> str:
    n = len(d["values"])
    if n < 2:
        return f"n={n}, no interval"
    lo, hi = d["interval"]
    return f"{stats.LEVEL:.0%} CI [{lo:.3f}, {hi:.3f}], n={n}"


def claims(measured: list[dict]) -> list[Claim]:
    """One claim per measured pair, control pairs (another pair's null) left out."""
    return [claim(m) for m in measured if not m.get("null_of")]
