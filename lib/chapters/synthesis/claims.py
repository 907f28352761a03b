"""06_synthesis, claims: each paper's conclusion about its pairs, as a rule on the lenses, stated once.

A conclusion names two indicators, each read per seed (`measure.indicators`) and decided from the t-interval of
its mean against a threshold (`lib.claims.by_interval`); the two combine by `lib.claims.by_indicators`: both hold =
reproduced; either decided against = not reproduced; otherwise inconclusive (an interval straddles its threshold,
or there are fewer than two seeds). With two indicators "partly" cannot occur: one of two is not a majority.

Every rule is gated on the chapter's own verdicts: a chapter most of whose claims were "not testable at this scale"
(its base could not do its task) gives "not testable at this scale" here too, not "rebuild". The depth conclusion
(Zhao et al.) needs at least two blocks, so that there are an early and a late block to compare.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from lib import stats
from lib.claims import NOT_REPRODUCED, REPRODUCED, Claim, Requirement, Rule, by_indicators, by_interval

CKA_REUSE = 0.7  # "the representation is kept": late-half CKA to the base above this
WEIGHT_REUSE = 0.5  # "the weights are a small edit": late-half relative weight change below this
DEPTH_MARGIN = 0.05  # "later layers task-specific": early-half minus late-half CKA above this
MIN_TESTABLE = 0.5  # the share of a chapter's own claims that must have been testable
CONSTANTS = {"cka_reuse": CKA_REUSE, "weight_reuse": WEIGHT_REUSE, "depth_margin": DEPTH_MARGIN,
             "level": stats.LEVEL}

TESTABLE = Requirement("share of the chapter's own claims that were testable at this scale (its base can do its "
                       "task)", "chapter_testable", at_least=MIN_TESTABLE)
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
    "reuse": (Indicator("late CKA ≥ cka_reuse", "late_cka", "cka_reuse", True),
              Indicator("late Δw ≤ weight_reuse", "late_weight", "weight_reuse", False)),
    "rebuild": (Indicator("late CKA < cka_reuse", "late_cka", "cka_reuse", False),
                Indicator("late Δw > weight_reuse", "late_weight", "weight_reuse", True)),
    "late": (Indicator("early CKA ≥ cka_reuse", "early_cka", "cka_reuse", True),
             Indicator("early − late CKA ≥ depth_margin", "cka_drop", "depth_margin", True)),
}
_WORDS = {"late_cka": "late-half (depth > 0.5) CKA to the base", "late_weight": "late-half relative weight change",
          "early_cka": "early-half CKA to the base", "cka_drop": "early-half minus late-half CKA"}


def _test(kind: str) -> str:
    parts = [f"the {{level:.0%}} t-interval of the per-seed {_WORDS[i.key]} lies {_SIDE[i.greater]} {{{i.threshold}}}"
             for i in KINDS[kind]]
    return (f"{parts[0]} and {parts[1]}: both = reproduced, either wholly on the other side = not reproduced, "
            "otherwise inconclusive (an interval straddles its threshold, or fewer than two seeds)")


def _rule(id: str, kind: str, claim: str, depth: bool = False) -> Rule:
    return Rule(id, claim, f"qualitative: {kind}", _test(kind), CONSTANTS, (TESTABLE, DEPTH) if depth else (TESTABLE,))


LIN_TUNED = _rule("lin_tuned_reuses", "reuse", "Lin (2024): the fine-tuned model relies on pretrained "
                  "representations, particularly in later layers.")
LIN_SCRATCH = _rule("lin_scratch_rebuilds", "rebuild", "Lin (2024): the model trained from scratch forms different, "
                    "task-specific mechanisms (here its base is its own random initialisation).")
ZHAO_LATE = _rule("zhao_later_layers_specific", "late", "Zhao et al. (2024): early layers stay shared with the "
                  "pre-trained model, later layers become task-specific through instruction tuning.", depth=True)
PRAKASH_REUSE = _rule("prakash_circuit_kept", "reuse", "Prakash et al. (2024): fine-tuning keeps the base model's "
                      "entity-tracking circuit and enhances it.")
TZACH_REUSE = _rule("tzach_builds_on_pretraining", "reuse", "Tzach et al. (2025): fine-tuning builds on the "
                    "pre-trained representation, whose usefulness for the task grows along the blocks.")
HORN_REBUILD = _rule("horn_few_features_persist", "rebuild", "Horn & Elliott (2024): very few SAE features persist "
                     "from parent to child, through fine-tuning and through merging (a few generic or universal ones "
                     "do).")
RULES = (LIN_TUNED, LIN_SCRATCH, ZHAO_LATE, PRAKASH_REUSE, TZACH_REUSE, HORN_REBUILD)
KIND = {LIN_TUNED.id: "reuse", LIN_SCRATCH.id: "rebuild", ZHAO_LATE.id: "late", PRAKASH_REUSE.id: "reuse",
        TZACH_REUSE.id: "reuse", HORN_REBUILD.id: "rebuild"}
# (chapter, substring of the pair's name, rule): the first match wins
FOR_PAIRS = (("lin", "scratch", LIN_SCRATCH), ("lin", "", LIN_TUNED), ("zhao", "", ZHAO_LATE),
             ("prakash", "", PRAKASH_REUSE), ("tzach", "", TZACH_REUSE), ("horn", "", HORN_REBUILD))


def class_text() -> str:
    """The class rule in words, rendered from the reuse indicators and their constants."""
    reuse = " and ".join(f"the {stats.LEVEL:.0%} t-interval of the per-seed {_WORDS[i.key]} lies {_SIDE[i.greater]} "
                         f"{CONSTANTS[i.threshold]:g}" for i in KINDS["reuse"])
    return (f"**reuse** if {reuse}; **rebuild** if either interval lies wholly on the other side; **undecided** "
            "otherwise; **not testable** when the chapter's base could not do its task")


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


def pair_class(m: dict) -> str:
    """'reuse' if both reuse indicators hold, 'rebuild' if either is decided against, else 'undecided';
    'not testable' when the chapter's base could not do its task."""
    if not TESTABLE.met(m.get(TESTABLE.key)):
        return "not testable"
    verdicts = [d["verdict"] for d in decide("reuse", m).values()]
    if all(v == REPRODUCED for v in verdicts):
        return "reuse"
    return "rebuild" if NOT_REPRODUCED in verdicts else "undecided"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _finite(x: float | None) -> float | None:
    return x if x is not None and x == x else None


def _ours(m: dict, cls: str) -> str:
    sd_c = f" ± {m['cka_late_sd']:.2f}" if _finite(m["cka_late_sd"]) is not None else ""
    sd_w = f" ± {m['weight_late_sd']:.3f}" if _finite(m["weight_late_sd"]) is not None else ""
    n = m["n_seeds"]
    return (f"{cls}: CKA early {m['cka_early']:.2f} / late {m['cka_late']:.2f}{sd_c}, Δw early "
            f"{m['weight_early']:.3f} / late {m['weight_late']:.3f}{sd_w}, recovery > {m['recovery_level']:g} from "
            f"{m['recovery_from']} (mean of {n} seed{'s' if n > 1 else ''})")


def claim(m: dict) -> Claim:
    """The claim of one measured pair (`measure.measured`); its id names the pair, its rule is in extra["rule"]."""
    rule = rule_for(m["module"], m["pair"])
    cls = pair_class(m)
    late = m["indicators"]["late_cka"]
    extra = {"notebook": m["notebook"], "pair": m["pair"], "rule": rule.id, "class": cls,
             "late_cka_per_seed": late, **{k: m[k] for k in ("cka", "weight_change", "recovery", "m_base",
                                                             "m_tuned", "cka_final")}}
    fields = dict(id=f"{m['module']}:{_slug(m['pair'])}", value=m["cka_late"], n=m["n_seeds"],
                  spread=_finite(m["cka_late_sd"]), extra=extra,
                  interval=stats.t_interval(late) if len(late) > 1 else None)
    gated = rule.gate(m, ours=_ours(m, cls))
    if gated is not None:
        return dataclasses.replace(gated, **fields)
    ind = decide(KIND[rule.id], m)
    extra["indicators"] = ind
    why = "; ".join(f"{k}: {d['verdict']} ({_interval_text(d)})" for k, d in ind.items())
    verdict = by_indicators({k: d["verdict"] for k, d in ind.items()})
    return dataclasses.replace(rule.decide(verdict, _ours(m, cls), why), **fields)


def _interval_text(d: dict) -> str:
    n = len(d["values"])
    if n < 2:
        return f"n={n}, no interval"
    lo, hi = d["interval"]
    return f"{stats.LEVEL:.0%} CI [{lo:.3f}, {hi:.3f}], n={n}"


def claims(measured: list[dict]) -> list[Claim]:
    return [claim(m) for m in measured]
