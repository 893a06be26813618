"""The chi-square survival function in probes.stats, against closed forms, tables and scipy."""
from __future__ import annotations

import math

import pytest

from probes.stats import chi2_sf, chi_square_p, chi_square_statistic, gamma_q

# (statistic, dof, sf): textbook critical values and scipy.stats.chi2.sf values, hard-coded so the
# test asserts without scipy.
REFERENCE = [
    (3.841458820694124, 1, 0.05),
    (5.991464547107979, 2, 0.05),
    (6.634896601021214, 1, 0.01),
    (1.0, 1, 0.31731050786291115),
    (10.0, 3, 0.01856613546304325),
    (0.5, 4, 0.9735009788392561),
    (50.0, 10, 2.669083424904495e-07),
    (200.0, 50, 7.857610724654791e-20),
    (0.001, 1, 0.9747728793699604),
    (100.0, 1, 1.5239706048320995e-23),
    (30.0, 30, 0.4656537089440098),
]


@pytest.mark.parametrize("x,dof,sf", REFERENCE)
def test_chi2_sf_reference_values(x, dof, sf):
    assert chi2_sf(x, dof) == pytest.approx(sf, rel=1e-9)


@pytest.mark.parametrize("x", [0.0, 0.01, 0.5, 1.0, 2.0, 3.0, 7.5, 20.0, 80.0, 300.0])
def test_closed_forms(x):
    # dof 2: Q(1, x/2) = exp(-x/2); dof 1: Q(1/2, x/2) = erfc(sqrt(x/2)).
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10, abs=1e-300)
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9, abs=1e-300)


def test_edges():
    assert chi2_sf(0.0, 5) == 1.0
    assert chi2_sf(math.inf, 5) == 0.0
    assert chi2_sf(3.0, 0) == 1.0
    assert gamma_q(1.0, 0.0) == 1.0
    with pytest.raises(ValueError):
        gamma_q(0.0, 1.0)
    with pytest.raises(ValueError):
        gamma_q(1.0, -1.0)


def test_chi_square_p_goodness_of_fit():
    # scipy.stats.chisquare([10, 20, 30]) -> statistic 10, p = exp(-5)
    assert chi_square_statistic([10, 20, 30], [20, 20, 20]) == pytest.approx(10.0)
    assert chi_square_p([10, 20, 30], [20.0, 20.0, 20.0]) == pytest.approx(0.006737946999085468, rel=1e-9)
    # expected given as weights is rescaled to the observed total
    assert chi_square_p([100, 95, 105], [1.0, 1.0, 1.0]) == pytest.approx(0.7788007830714049, rel=1e-9)
    assert chi_square_p([300, 0], [1.0, 1.0]) == pytest.approx(3.2943623833139784e-67, rel=1e-6)
    # perfectly uniform -> p = 1; a single category -> nothing to test
    assert chi_square_p([50, 50, 50], [1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert chi_square_p([300], [1.0]) == 1.0
    assert chi_square_p([0, 0], [1.0, 1.0]) == 1.0
    # an observation where none was expected can't be uniform over the expected set
    assert chi_square_p([5, 1], [1.0, 0.0]) == 0.0
    # zero-weight categories that stay empty are dropped (dof = 1 here)
    assert chi_square_p([10, 20, 0], [1.0, 1.0, 0.0]) == pytest.approx(chi_square_p([10, 20], [1.0, 1.0]))
    with pytest.raises(ValueError):
        chi_square_p([1, 2], [1.0])
    with pytest.raises(ValueError):
        chi_square_p([1, -2], [1.0, 1.0])


def test_against_scipy_when_available():
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy not installed: reference table only")
    for dof in (1, 2, 3, 4, 5, 7, 10, 20, 50, 100, 299):
        for x in (0.0, 0.05, 0.3, 1.0, dof * 0.5, dof - 1.0, float(dof), dof + 1.0, dof * 1.5,
                  dof * 3.0, dof + 40.0):
            if x < 0:
                continue
            want = float(scipy_stats.chi2.sf(x, dof))
            assert chi2_sf(x, dof) == pytest.approx(want, rel=1e-8, abs=1e-290), (x, dof)
    for observed in ([10, 20, 30], [97, 103, 100, 100], [1, 0, 0, 5, 9], [150, 150], [290, 5, 5]):
        want = float(scipy_stats.chisquare(observed).pvalue)
        assert chi_square_p(observed, [1.0] * len(observed)) == pytest.approx(want, rel=1e-8, abs=1e-290)
