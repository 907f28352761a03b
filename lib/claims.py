"""Claims, the verdict vocabulary and `Rule`: the one mechanism every chapter, the synthesis and the scorecard use.

A rule is declared once, as a constant of its chapter's `claims.py`:

    REUSE = Rule("tuned_reuses_base", claim="The fine-tuned model depends on pretrained representations.",
                 paper="qualitative (abstract)",
                 test="per-seed CKA(tuned, base) - CKA(scratch, base) at the last token: the {level:.0%} interval "
                      "of its mean above {margin}",
                 constants={"margin": 0.0, "level": 0.95},
                 requires=(Requirement("both models solve the task", "solved", at_least=1),))

and used as

    claim = REUSE.gate(measured) or REUSE.decide(by_interval(eff.lo, eff.hi, REUSE["margin"]), ours=eff.text())

so the rule text on the page (`rule.text()`) is rendered from the same constants the test reads: they cannot drift.
`gate` returns a "not testable at this scale" claim that names the failed precondition and its measured value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly", "not reproduced"
NOT_TESTABLE = "not testable at this scale"
INCONCLUSIVE = "inconclusive"
OFFLINE = "not testable offline"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_TESTABLE, INCONCLUSIVE, OFFLINE)
DECIDED = (REPRODUCED, PARTLY, NOT_REPRODUCED)  # the test ran with enough power and decided
MEANING = {
    REPRODUCED: "the test ran with enough power and the paper's claim holds",
    PARTLY: "the test ran and decided: a majority of the claim's indicators hold, not all",
    NOT_REPRODUCED: "the test ran with enough power and the claim does not hold",
    NOT_TESTABLE: "a stated precondition failed (e.g. the base cannot do the task); the claim names it and its value",
    INCONCLUSIVE: "the test ran but cannot decide (an interval straddles the margin, too few seeds)",
    OFFLINE: "needs data or models that do not exist offline",
}


@dataclass
class Claim:
    id: str  # short stable name, e.g. "later_layers_reused"
    claim: str  # the paper's claim in one sentence
    paper: str  # the paper's number or statement, e.g. "0.82" or "qualitative"
    ours: str  # our measurement as text, e.g. "0.71 ± 0.03 (n=3)"
    verdict: str  # one of VERDICTS
    reason: str  # one line: why this verdict
    value: float | None = None  # our headline number (mean over seeds), if there is one
    spread: float | None = None  # its standard deviation over seeds
    n: int | None = None  # number of seeds / runs behind it
    extra: dict = field(default_factory=dict)
    rule: str = ""  # the rule's text, rendered from its declaration
    interval: tuple[float, float] | None = None  # the interval the decision read, if any
    precondition: str | None = None  # for "not testable at this scale": the failed precondition and its value

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.interval is not None:
            self.interval = (float(self.interval[0]), float(self.interval[1]))


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)


@dataclass(frozen=True)
class Requirement:
    """A precondition of a rule: the measured value `key` must be at least / at most a threshold."""
    what: str  # in words, e.g. "the base's binding gap on 7 boxes"
    key: str  # its name in the mapping `Rule.gate` reads
    at_least: float | None = None
    at_most: float | None = None

    def __post_init__(self):
        if self.at_least is None and self.at_most is None:
            raise ValueError(f"requirement {self.what!r} needs at_least or at_most")

    def text(self) -> str:
        parts = ([f"≥ {_num(self.at_least)}"] if self.at_least is not None else []) + \
                ([f"≤ {_num(self.at_most)}"] if self.at_most is not None else [])
        return f"{self.what} {' and '.join(parts)}"

    def met(self, value) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return ((self.at_least is None or value >= self.at_least)
                and (self.at_most is None or value <= self.at_most))


@dataclass(frozen=True)
class Rule:
    """A claim's test, declared once. `test` is a template over `constants` (`{margin}`), rendered by `text()`."""
    id: str
    claim: str
    paper: str
    test: str
    constants: Mapping[str, object] = field(default_factory=dict)
    requires: tuple[Requirement, ...] = ()

    def __post_init__(self):
        self.test.format(**self.constants)  # a template naming a constant that is not declared fails at import

    def __getitem__(self, name: str):
        return self.constants[name]

    def text(self) -> str:
        """The rule as the page states it: the test, then its preconditions."""
        text = self.test.format(**self.constants)
        if self.requires:
            text += "; tested only if " + "; ".join(r.text() for r in self.requires)
        return text

    def unmet(self, measured: Mapping[str, object]) -> list[str]:
        """The preconditions that fail, each with its measured value (a missing value fails)."""
        out = []
        for r in self.requires:
            value = measured.get(r.key)
            if not r.met(value):
                shown = "not measured" if value is None else f"measured {value:.3g}" if isinstance(value, float) \
                    else f"measured {value}"
                out.append(f"{r.text()} ({shown})")
        return out

    def decide(self, verdict: str, ours: str, reason: str = "", **fields) -> Claim:
        """This rule's claim with the given verdict; the rule text is filled in."""
        return Claim(self.id, self.claim, self.paper, ours, verdict, reason or self.text(), rule=self.text(),
                     **fields)

    def gate(self, measured: Mapping[str, object], ours: str = "", **fields) -> Claim | None:
        """A "not testable at this scale" claim naming every failed precondition, or None if all hold. `fields`
        (value, spread, n, extra, ...) keep what was measured on the claim even though it is not decided."""
        failed = self.unmet(measured)
        if not failed:
            return None
        why = "; ".join(failed)
        return self.decide(NOT_TESTABLE, ours or "not decided: precondition failed", f"precondition failed: {why}",
                           precondition=why, **fields)

    def offline(self, why: str) -> Claim:
        return self.decide(OFFLINE, "not run", why)


def by_interval(lo: float, hi: float, margin: float = 0.0, greater: bool = True) -> str:
    """The claim "effect > margin" (greater=False: "effect < margin") read from an interval of the effect:
    reproduced if the whole interval is on the claim's side, not reproduced if it is wholly on the other side,
    inconclusive if it straddles the margin or is undefined (fewer than two seeds)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    if not greater:
        lo, hi, margin = -hi, -lo, -margin
    if lo > margin:
        return REPRODUCED
    if hi <= margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def by_indicators(results: Mapping[str, str]) -> str:
    """One verdict from several indicators' verdicts: reproduced if all are, not reproduced if a majority fail,
    partly if a strict majority hold; inconclusive when the undecided indicators could swing it either way."""
    if not results:
        raise ValueError("no indicators")
    verdicts = list(results.values())
    for v in verdicts:
        if v not in VERDICTS:
            raise ValueError(f"indicator verdict {v!r} is not one of {VERDICTS}")
    hold = sum(v == REPRODUCED for v in verdicts)
    fail = sum(v == NOT_REPRODUCED for v in verdicts)
    n = len(verdicts)
    if hold == n:
        return REPRODUCED
    if 2 * hold > n:
        return PARTLY
    if 2 * fail >= n:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def from_bool(holds: bool) -> str:
    return REPRODUCED if holds else NOT_REPRODUCED


def counts(claims) -> dict[str, int]:
    """How many claims got each verdict (every category listed, zeros included)."""
    out = dict.fromkeys(VERDICTS, 0)
    for c in claims:
        out[c["verdict"] if isinstance(c, dict) else c.verdict] += 1
    return out
