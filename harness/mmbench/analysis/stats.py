"""Paired significance tests for per-query scores (pure NumPy; no SciPy needed).

Every function takes two aligned per-query score vectors ``a`` (the new system) and ``b`` (the
baseline) and works on the differences ``d = a - b``:

* :func:`randomization_test` -- paired randomization (sign-flip) test of ``mean(d) == 0``: each
  resample flips the sign of every difference with probability 1/2. Exact (all ``2**n`` sign
  patterns) when that is no more than the number of resamples asked for, otherwise Monte Carlo with
  ``numpy.random.Generator(PCG64(seed))`` -- the same seed gives the same p-value, bit for bit. The
  Monte Carlo p-value is ``(1 + #{|mean*| >= |mean|}) / (R + 1)``, never 0 (Phipson & Smyth 2010).
* :func:`t_test` -- paired Student t-test (two-sided), p-value from the regularised incomplete beta
  function (continued fraction, accurate to ~1e-12 against SciPy).
* :func:`bootstrap_ci` -- paired percentile bootstrap confidence interval of ``mean(d)``.
* :func:`holm` -- Holm's step-down adjustment of a family of p-values (NaN entries are left out).
* :func:`paired` -- all of the above plus wins/ties/losses in one :class:`PairedResult`.

Differences with ``|d| <= atol`` count as ties (zero), so float noise in the last digit of a
per-query file is not "a change".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
_BLOCK_ELEMENTS = 1 << 22          # resample blocks of at most ~4M elements (32 MB of float64)


def _diff(a, b, atol: float = 0.0) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired vectors must have the same length, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-query scores must be finite")
    d = a - b
    if atol > 0:
        d[np.abs(d) <= atol] = 0.0
    return d


def randomization_test(a, b, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                       atol: float = 0.0) -> float:
    """Two-sided p-value of the paired sign-flip randomization test on the mean difference."""
    d = _diff(a, b, atol)
    n = d.size
    if n == 0 or not np.any(d):
        return 1.0
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))    # float-equal permuted means count as extreme
    nz = d[d != 0]                                   # zeros flip to themselves: drop them (same p)
    m = nz.size
    if m <= 20 and 2 ** m <= n_resamples:            # exact: every sign pattern once
        signs = ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1) * 2 - 1
        means = np.abs(signs @ nz) / n
        return float(np.mean(means >= observed - tol))
    rng = np.random.Generator(np.random.PCG64(seed))
    block = max(1, _BLOCK_ELEMENTS // m)
    extreme, done = 0, 0
    while done < n_resamples:
        size = min(block, n_resamples - done)
        signs = rng.integers(0, 2, size=(size, m), dtype=np.int8) * 2 - 1
        extreme += int(np.count_nonzero(np.abs(signs @ nz) / n >= observed - tol))
        done += size
    return (extreme + 1) / (n_resamples + 1)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(ln_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with ``df`` degrees of freedom."""
    if math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


def t_test(a, b, *, atol: float = 0.0) -> tuple[float, float]:
    """Paired two-sided t-test: ``(t statistic, p-value)``. Constant differences give t = +-inf, p = 0
    (or t = 0, p = 1 when they are all zero); fewer than two queries give NaN."""
    d = _diff(a, b, atol)
    n = d.size
    if n < 2:
        return float("nan"), float("nan")
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0 or sd <= 1e-14 * abs(mean):
        if mean == 0.0:
            return 0.0, 1.0
        return math.copysign(math.inf, mean), 0.0
    t = mean / (sd / math.sqrt(n))
    return t, t_sf2(t, n - 1)


def bootstrap_ci(a, b, *, n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                 seed: int = DEFAULT_SEED, atol: float = 0.0) -> tuple[float, float]:
    """Paired percentile bootstrap interval of the mean difference (queries resampled with replacement)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = _diff(a, b, atol)
    n = d.size
    if n == 0:
        return float("nan"), float("nan")
    if not np.any(d != d[0]):                        # constant: every resample has the same mean
        return float(d[0]), float(d[0])
    rng = np.random.Generator(np.random.PCG64(seed))
    block = max(1, _BLOCK_ELEMENTS // n)
    means = np.empty(n_resamples)
    done = 0
    while done < n_resamples:
        size = min(block, n_resamples - done)
        idx = rng.integers(0, n, size=(size, n))
        means[done:done + size] = d[idx].mean(axis=1)
        done += size
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given; NaNs stay NaN and are not counted)."""
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


@dataclass(frozen=True)
class PairedResult:
    n: int
    mean_a: float
    mean_b: float
    delta: float                 # mean(a) - mean(b)
    ci_low: float
    ci_high: float
    p_randomization: float
    p_t: float
    t: float
    wins: int                    # queries where a > b
    ties: int
    losses: int

    def to_dict(self) -> dict:
        return asdict(self)


def paired(a, b, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
           confidence: float = 0.95, atol: float = 1e-9) -> PairedResult:
    """Everything :mod:`mmbench.analysis.compare` and :mod:`mmbench.analysis.regress` report for one pair of vectors."""
    d = _diff(a, b, atol)
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    t, p_t = t_test(a, b, atol=atol)
    low, high = bootstrap_ci(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed, atol=atol)
    return PairedResult(
        n=int(d.size), mean_a=float(a.mean()) if a.size else float("nan"),
        mean_b=float(b.mean()) if b.size else float("nan"), delta=float(d.mean()) if d.size else float("nan"),
        ci_low=low, ci_high=high,
        p_randomization=randomization_test(a, b, n_resamples=n_resamples, seed=seed, atol=atol),
        p_t=p_t, t=t, wins=int(np.sum(d > 0)), ties=int(np.sum(d == 0)), losses=int(np.sum(d < 0)))
