"""lib.claims: the verdict vocabulary and the Rule mechanism, with known answers."""
import numpy as np
import pytest

from lib import claims, page, stats
from lib.claims import Requirement, Rule

RULE = Rule("gap", claim="Tuned stays closer to base than scratch does.", paper="qualitative",
            test="per-seed gap: the {level:.0%} interval of its mean above {margin}",
            constants={"margin": 0.05, "level": 0.95},
            requires=(Requirement("share of seeds that solve the task", "solved", at_least=1.0),))


def decide(gaps, solved=1.0):
    gated = RULE.gate({"solved": solved})
    if gated:
        return gated
    eff = stats.effect(gaps)
    return RULE.decide(claims.by_interval(eff.lo, eff.hi, RULE["margin"]), ours=eff.text(), value=eff.mean,
                       interval=(eff.lo, eff.hi))


def test_rule_text_is_rendered_from_its_constants():
    assert RULE.text().startswith("per-seed gap: the 95% interval of its mean above 0.05")
    assert "share of seeds that solve the task ≥ 1" in RULE.text()
    with pytest.raises(KeyError):
        Rule("bad", "c", "p", test="above {missing}")


def test_clear_effect_is_reproduced_and_carries_its_rule():
    c = decide([0.30, 0.32, 0.28, 0.31])
    assert c.verdict == "reproduced" and c.rule == RULE.text() and c.interval[0] > 0.05


def test_clear_absence_is_not_reproduced():
    assert decide([0.00, 0.01, -0.01, 0.02]).verdict == "not reproduced"


def test_noisy_effect_is_inconclusive():
    assert decide([0.4, -0.2, 0.3]).verdict == "inconclusive"
    assert decide([0.4]).verdict == "inconclusive"  # one seed: no interval


def test_failed_precondition_is_not_testable_and_names_the_value():
    c = decide([0.3, 0.3, 0.3], solved=0.5)
    assert c.verdict == "not testable at this scale"
    assert "share of seeds that solve the task ≥ 1" in c.precondition and "0.5" in c.precondition
    assert RULE.gate({})  # a missing measurement fails the gate too
    assert RULE.gate({"solved": float("nan")})


def test_a_coin_flip_rarely_passes_the_interval_rule():
    rng = np.random.default_rng(0)
    passes = np.mean([decide(rng.normal(0, 0.1, 5)).verdict == "reproduced" for _ in range(500)])
    assert passes < 0.05


@pytest.mark.parametrize("indicators, expected", [
    ({"a": "reproduced", "b": "reproduced", "c": "reproduced"}, "reproduced"),
    ({"a": "reproduced", "b": "reproduced", "c": "not reproduced"}, "partly"),
    ({"a": "reproduced", "b": "not reproduced", "c": "not reproduced"}, "not reproduced"),
    ({"a": "reproduced", "b": "not reproduced"}, "not reproduced"),  # half is not a majority
    ({"a": "reproduced", "b": "inconclusive", "c": "not reproduced"}, "inconclusive"),
])
def test_partly_needs_a_majority(indicators, expected):
    assert claims.by_indicators(indicators) == expected


def test_coin_flip_indicators_rarely_pass():
    rng = np.random.default_rng(0)
    flips = [claims.by_indicators({i: claims.from_bool(rng.random() < 0.5) for i in range(4)}) for _ in range(4000)]
    assert np.mean([v in ("reproduced", "partly") for v in flips]) == pytest.approx(5 / 16, abs=0.03)


def test_by_interval_for_a_claim_of_a_decrease():
    assert claims.by_interval(-0.5, -0.2, 0.0, greater=False) == "reproduced"
    assert claims.by_interval(0.1, 0.5, 0.0, greater=False) == "not reproduced"


def test_unknown_verdict_is_refused_and_counts_list_every_category():
    with pytest.raises(ValueError):
        claims.Claim("x", "c", "p", "o", "maybe", "r")
    counted = claims.counts([decide([0.3, 0.3, 0.31]), decide([0.3], solved=0.0)])
    assert list(counted) == list(claims.VERDICTS) and counted["reproduced"] == 1
    assert counted["not testable at this scale"] == 1 and counted["inconclusive"] == 0


def test_verdict_table_keeps_whole_text():
    long = "x" * 300
    c = RULE.decide("reproduced", ours=long)
    table = page.verdict_table([c, decide([0.3], solved=0.0)])
    assert list(table.columns) == list(page.COLUMNS)
    page.setup()
    assert long in table.to_html()  # pandas would cut it at 50 characters without page.setup
    assert "precondition failed" in table.loc[1, "why"]
