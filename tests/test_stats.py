"""lib.stats: known answers for every test the verdicts use."""
import math

import numpy as np
import pytest

from lib import stats


def test_effect_matches_textbook_t_interval():
    # mean 2, sd 1, n 4: t(0.975, 3) = 3.182 -> half width 1.591
    eff = stats.effect([1.0, 2.0, 3.0, 2.0])
    assert eff.mean == pytest.approx(2.0) and eff.n == 4
    assert eff.sd == pytest.approx(np.std([1, 2, 3, 2], ddof=1))
    half = 3.1824463 * eff.sd / 2
    assert (eff.lo, eff.hi) == (pytest.approx(2 - half, abs=1e-6), pytest.approx(2 + half, abs=1e-6))
    assert "95% CI" in eff.text()


def test_one_value_has_no_interval():
    eff = stats.effect([0.3])
    assert math.isnan(eff.lo) and math.isnan(eff.hi) and eff.sd == 0.0
    assert "CI" not in eff.text()


def test_nan_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        stats.effect([0.1, float("nan")])


def test_sign_test_exact_values():
    assert stats.sign_test([1, 2, 3]) == pytest.approx(1 / 8)  # three of three positive
    assert stats.sign_test([1, 2, 3, 4, 5]) == pytest.approx(1 / 32)
    assert stats.sign_test([-1, -2, -3], "less") == pytest.approx(1 / 8)
    assert stats.sign_test([-1, -2, -3]) == pytest.approx(1.0)  # none positive
    assert stats.sign_test([0, 0]) == 1.0
    assert stats.sign_test([1, 2, 3, 4, 5], "two-sided") == pytest.approx(1 / 16)


def test_a_coin_rarely_passes_a_five_seed_sign_test():
    rng = np.random.default_rng(0)
    passed = np.mean([stats.sign_test(rng.normal(size=5)) < 0.05 for _ in range(2000)])
    assert passed < 0.06  # 1/32 in theory


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, big = rng.normal(1.0, 1.0, 20), rng.normal(1.0, 1.0, 2000)
    lo_s, hi_s = stats.bootstrap_interval(small, n_boot=500)
    lo_b, hi_b = stats.bootstrap_interval(big, n_boot=500)
    assert lo_b < 1.0 < hi_b and (hi_b - lo_b) < (hi_s - lo_s)


def test_permutation_test_separates_shifted_groups_and_not_equal_ones():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 1.0, 30), rng.normal(0.0, 1.0, 30)
    assert stats.permutation_test(a, b, n_perm=2000) < 0.01
    assert stats.permutation_test(b, b.copy(), n_perm=2000) > 0.3


def test_rank_correlation_known_answers():
    x = np.arange(20.0)
    rho, lo, hi = stats.rank_correlation(x, x ** 3, n_boot=300)
    assert rho == pytest.approx(1.0) and lo == pytest.approx(1.0)
    rho, lo, hi = stats.rank_correlation(x, -x, n_boot=300)
    assert rho == pytest.approx(-1.0)
    assert all(math.isnan(v) for v in stats.rank_correlation(x, np.ones(20)))


@pytest.mark.parametrize("lo, hi, expected", [(-0.05, 0.05, "equivalent"), (0.2, 0.4, "different"),
                                              (-0.4, -0.15, "different"), (-0.05, 0.2, "inconclusive"),
                                              (float("nan"), 0.0, "inconclusive")])
def test_equivalence(lo, hi, expected):
    assert stats.equivalence(lo, hi, 0.1) == expected
