"""mmbench.analysis.stats: known values, SciPy agreement, reproducibility and properties."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmbench.analysis import stats

floats = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 3))  # away from atol


def test_exact_randomization_known_value():
    # d = (1, 1, 1): 8 sign patterns, |mean| >= 1 only for +++ and --- -> p = 2/8
    assert stats.randomization_test([1, 1, 1], [0, 0, 0]) == pytest.approx(0.25)
    # d = (1, 2, 3, -1): enumerate by hand
    d = np.array([1.0, 2.0, 3.0, -1.0])
    obs = abs(d.mean())
    count = sum(abs(np.dot(s, d)) / 4 >= obs - 1e-12 for s in itertools.product([-1, 1], repeat=4))
    assert stats.randomization_test(d, np.zeros(4)) == pytest.approx(count / 16)


def test_randomization_zeros_do_not_change_p_and_identical_is_one():
    assert stats.randomization_test([1, 1, 1, 0, 0], [0, 0, 0, 0, 0]) == pytest.approx(0.25)
    assert stats.randomization_test([0.3, 0.5], [0.3, 0.5]) == 1.0
    assert stats.randomization_test([0.3 + 1e-12], [0.3], atol=1e-9) == 1.0


def test_monte_carlo_is_reproducible_and_close_to_exact():
    rng = np.random.default_rng(1)
    a, b = rng.random(200), rng.random(200)
    p1 = stats.randomization_test(a, b, seed=7, n_resamples=4000)
    p2 = stats.randomization_test(a, b, seed=7, n_resamples=4000)
    p3 = stats.randomization_test(a, b, seed=8, n_resamples=4000)
    assert p1 == p2 and p1 != p3
    # a clear shift: the smallest possible Monte-Carlo p-value, 1/(R+1)
    assert stats.randomization_test(a + 0.5, a, n_resamples=999) == pytest.approx(1 / 1000)
    # 14 non-zero differences, exact when 2**14 <= R; Monte Carlo within 3 standard errors of it
    d = rng.normal(0.1, 1, 14)
    exact = stats.randomization_test(d, np.zeros(14), n_resamples=2 ** 14)
    mc = stats.randomization_test(d, np.zeros(14), n_resamples=20000, seed=3)
    assert abs(mc - exact) < 3 * math.sqrt(exact * (1 - exact) / 20000) + 1e-4


def test_t_test_matches_scipy_and_known_values():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 30, 300, 5000):
        a, b = rng.random(n), rng.random(n) * 0.9
        t, p = stats.t_test(a, b)
        ref = scipy_stats.ttest_rel(a, b)
        assert t == pytest.approx(ref.statistic, rel=1e-10)
        assert p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-14)
    # textbook: t = 2.0 with 9 df -> two-sided p = 0.0765565...
    assert stats.t_sf2(2.0, 9) == pytest.approx(0.07656, abs=1e-5)
    assert stats.t_sf2(0.0, 5) == pytest.approx(1.0)
    assert stats.t_test([1, 2, 3], [0, 1, 2]) == (math.inf, 0.0)
    assert stats.t_test([1, 2, 3], [1, 2, 3]) == (0.0, 1.0)
    assert all(math.isnan(x) for x in stats.t_test([1], [0]))


def test_betainc_matches_scipy():
    special = pytest.importorskip("scipy.special")
    for a, b, x in [(0.5, 0.5, 0.3), (2, 3, 0.9), (150, 0.5, 0.99), (1.5, 0.5, 0.01), (1000, 0.5, 0.999)]:
        assert stats.betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-9, abs=1e-15)


def test_bootstrap_ci_known_cases_and_reproducible():
    assert stats.bootstrap_ci([1, 1, 1], [0, 0, 0]) == (1.0, 1.0)
    rng = np.random.default_rng(2)
    a, b = rng.random(500), rng.random(500)
    ci = stats.bootstrap_ci(a, b, seed=5, n_resamples=3000)
    assert ci == stats.bootstrap_ci(a, b, seed=5, n_resamples=3000)
    d = a - b
    se = d.std(ddof=1) / math.sqrt(d.size)       # close to the normal interval for n = 500
    assert ci[0] == pytest.approx(d.mean() - 1.96 * se, abs=0.25 * se)
    assert ci[1] == pytest.approx(d.mean() + 1.96 * se, abs=0.25 * se)


def test_holm_known_values():
    # classic example: p = (0.01, 0.04, 0.03, 0.005) -> (0.03, 0.06, 0.06, 0.02)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = stats.holm([0.5, float("nan"), 0.6])
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1]) and out[2] == pytest.approx(1.0)
    assert stats.holm([]).size == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1, allow_nan=False), min_size=1, max_size=40))
def test_holm_properties(ps):
    adj = stats.holm(ps)
    p = np.asarray(ps)
    assert np.all(adj >= p - 1e-15) and np.all(adj <= 1.0)
    assert np.all(adj <= np.minimum(1.0, p * len(ps)) + 1e-12)     # never worse than Bonferroni
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-15)                     # monotone in p


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(floats, floats), min_size=2, max_size=30), st.integers(0, 2 ** 32 - 1))
def test_paired_properties(pairs, seed):
    a = np.array([x for x, _ in pairs])
    b = np.array([y for _, y in pairs])
    r = stats.paired(a, b, n_resamples=500, seed=seed)
    assert 0 < r.p_randomization <= 1 and (math.isnan(r.p_t) or 0 <= r.p_t <= 1)
    assert r.wins + r.ties + r.losses == len(pairs)
    assert r.ci_low <= r.delta + 1e-9 and r.delta - 1e-9 <= r.ci_high or r.ci_low <= r.ci_high
    # swapping the systems mirrors everything
    s = stats.paired(b, a, n_resamples=500, seed=seed)
    assert s.delta == pytest.approx(-r.delta, abs=1e-12)
    assert s.p_randomization == pytest.approx(r.p_randomization)
    assert s.ci_low == pytest.approx(-r.ci_high, abs=1e-9) and s.ci_high == pytest.approx(-r.ci_low, abs=1e-9)
    assert (s.wins, s.losses) == (r.losses, r.wins)
    # shifting both systems by the same amount changes nothing
    u = stats.paired(a + 0.25, b + 0.25, n_resamples=500, seed=seed)
    assert u.p_randomization == pytest.approx(r.p_randomization) and u.delta == pytest.approx(r.delta, abs=1e-9)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        stats.paired([1, 2], [1])
