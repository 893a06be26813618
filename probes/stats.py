"""Chi-square goodness of fit without scipy.

The survival function of the chi-square distribution with k degrees of freedom at x is the
regularized upper incomplete gamma function Q(k/2, x/2), computed as in Numerical Recipes
(gammq: series for P when x < a + 1, Lentz's continued fraction for Q otherwise).
"""
from __future__ import annotations

import math

_EPS = 1e-15
_FPMIN = 1e-300
_ITMAX = 10_000


def _gamma_p_series(a: float, x: float) -> float:
    """P(a, x) by its series; converges quickly for x < a + 1."""
    ap = a
    term = total = 1.0 / a
    for _ in range(_ITMAX):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_q_cf(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction (modified Lentz); converges quickly for x >= a + 1."""
    b = x + 1.0 - a
    c = 1.0 / _FPMIN
    d = 1.0 / b
    h = d
    for i in range(1, _ITMAX):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _FPMIN:
            d = _FPMIN
        c = b + an / c
        if abs(c) < _FPMIN:
            c = _FPMIN
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a)."""
    if a <= 0:
        raise ValueError(f"gamma_q: a must be > 0, got {a}")
    if x < 0:
        raise ValueError(f"gamma_q: x must be >= 0, got {x}")
    if x == 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _gamma_p_series(a, x))
    return min(1.0, _gamma_q_cf(a, x))


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ chi-square with `dof` degrees of freedom."""
    if dof <= 0:
        return 1.0
    return gamma_q(dof / 2.0, max(0.0, statistic) / 2.0)


def chi_square_statistic(observed: list[int], expected: list[float]) -> float:
    """Pearson's statistic; `expected` is rescaled to the observed total (it may be weights)."""
    if len(observed) != len(expected):
        raise ValueError("observed and expected differ in length")
    n = float(sum(observed))
    weight = float(sum(expected))
    if weight <= 0:
        raise ValueError("expected must have a positive sum")
    stat = 0.0
    for o, e in zip(observed, expected, strict=True):
        e = e * n / weight
        if e <= 0:
            if o > 0:
                return math.inf
            continue
        stat += (o - e) ** 2 / e
    return stat


def chi_square_p(observed: list[int], expected: list[float]) -> float:
    """p-value of Pearson's chi-square goodness-of-fit test (as scipy.stats.chisquare).

    `expected` holds expected counts or weights (rescaled to the observed total). Categories
    expected with zero weight are dropped if nothing was observed there, and make p = 0 otherwise.
    Degrees of freedom: the number of remaining categories minus one; with one category (or none
    observed at all) there is nothing to test and p = 1.
    """
    if len(observed) != len(expected):
        raise ValueError("observed and expected differ in length")
    if any(o < 0 for o in observed) or any(e < 0 for e in expected):
        raise ValueError("counts and expectations must be non-negative")
    if sum(observed) == 0:
        return 1.0
    stat = chi_square_statistic(observed, expected)
    if math.isinf(stat):
        return 0.0
    categories = sum(1 for e in expected if e > 0)
    return chi2_sf(stat, categories - 1)
