"""The fast small-problem paths agree with the general ones they shortcut.

`fit_bt` solves problems up to `_DENSE_MAX_DIM` parameters with a dedicated dense Newton loop
(`_fit_dense`); the general damped Newton (`_Problem` + `_newton`) with the explicit
inverse-diagonal and `misfit` is kept for large problems and serves here as the reference.
`select_pairs` keeps a dense uses matrix (`_DenseDesign`) for small batches; the sorted-keys
`_Design` is the reference for its bookkeeping.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph

from cj import model, pairing
from cj.model import fit_bt


def _reference_fit(n, f, s, y, *, fit_delta=True, initial=None):
    f, s, yf = model._check_data(n, f, s, y)
    problem = model._Problem(n, f, s, yf, 1.0 / 4.0, 1.0, fit_delta)
    theta, delta = model._start(n, initial)
    x = np.append(theta, delta) if fit_delta else theta
    x, _, converged = model._newton(problem, x, 1e-10, 100)
    se_all = np.sqrt(np.maximum(model._inverse_diagonal(problem.dense_hessian(x)), 0.0))
    infit, outfit = model.misfit(n, f, s, y, x[:n], float(x[n]) if fit_delta else 0.0)
    return x, se_all, infit, outfit, converged


@pytest.mark.parametrize("seed", range(12))
def test_dense_fit_matches_general_newton(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 150))
    m = int(rng.integers(1, 1000))
    theta = rng.normal(0, [0.2, 2.0, 6.0][seed % 3], n)
    f = rng.integers(0, n, m)
    s = (f + rng.integers(1, n, m)) % n
    won = rng.random(m) < 1.0 / (1.0 + np.exp(-(theta[f] - theta[s] + 0.3)))
    if seed % 4 == 0:
        won[:] = True  # separable: the prior alone keeps it finite
    fit_delta = seed % 5 != 1
    x, se_all, infit, outfit, converged = _reference_fit(n, f, s, won, fit_delta=fit_delta)
    assert converged
    prev = fit_bt(n, f[:-3], s[:-3], won[:-3], fit_delta=fit_delta) if m > 3 else None
    for fit in (fit_bt(n, f, s, won, fit_delta=fit_delta), fit_bt(n, f, s, won, fit_delta=fit_delta, initial=prev)):
        assert fit.converged
        np.testing.assert_allclose(fit.theta, x[:n], atol=1e-7)
        np.testing.assert_allclose(fit.se, se_all[:n], atol=1e-5)
        if fit_delta:
            assert abs(fit.delta - x[n]) < 1e-7 and abs(fit.delta_se - se_all[n]) < 1e-5
        else:
            assert fit.delta == 0.0 and fit.delta_se == 0.0
        np.testing.assert_allclose(fit.infit, infit, atol=1e-4, equal_nan=True)
        np.testing.assert_allclose(fit.outfit, outfit, atol=1e-4, equal_nan=True)
        assert fit.ssr == pytest.approx(model.scale_separation_reliability(fit.theta, fit.se))


def test_warm_refit_takes_few_iterations() -> None:
    rng = np.random.default_rng(1)
    n, m = 30, 150
    theta = rng.normal(0, 2, n)
    f = rng.integers(0, n, m)
    s = (f + rng.integers(1, n, m)) % n
    won = rng.random(m) < 1.0 / (1.0 + np.exp(-(theta[f] - theta[s])))
    prev = fit_bt(n, f[:-4], s[:-4], won[:-4])
    assert fit_bt(n, f, s, won, initial=prev).iterations <= 5
    assert fit_bt(n, f, s, won, initial=fit_bt(n, f, s, won)).iterations == 1


@pytest.mark.parametrize("seed", range(30))
def test_dense_design_matches_sorted_design(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    repeats = int(rng.integers(1, 4))
    issued = pairing.select_pairs(
        n, int(rng.integers(0, pairing.pair_capacity(n, repeats) + 1)), [], fit=None,
        rng=rng, strategy="random", max_repeats=repeats,
    )
    arr = np.asarray(issued, dtype=np.int64).reshape(-1, 2)
    ref = pairing._Design(n, arr, repeats)
    new = pairing._DenseDesign(n, arr, repeats)
    for step in range(6):
        assert (new.level, new.remaining, new.exhausted()) == (ref.level, ref.remaining, ref.exhausted())
        np.testing.assert_array_equal(new.avail, ref.avail)
        np.testing.assert_array_equal(new.count, ref.count)
        np.testing.assert_array_equal(new.a_minus_b, ref.a_minus_b)
        assert new.n_comp == ref.n_comp
        # same partition into components (labels may differ)
        assert len(set(zip(new.comp.tolist(), ref.comp.tolist()))) == ref.n_comp
        for i in range(n):
            r = ref.partner_uses(i)
            d = new.partner_uses(i)
            off = np.arange(n) != i
            np.testing.assert_array_equal(d[off] == ref.level, r[off] == ref.level)
        if ref.exhausted():
            break
        i = int(np.flatnonzero(ref.avail > 0)[0])
        allowed = ref.partner_uses(i) == ref.level
        allowed[i] = False
        j = int(np.flatnonzero(allowed)[0])
        ref.add(i, j)
        new.add(i, j)


@pytest.mark.parametrize("seed", range(10))
def test_components_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    m = int(rng.integers(0, 2 * n))
    f = rng.integers(0, n, m)
    s = rng.integers(0, n, m)
    k, comp = pairing._components(n, f, s)
    graph = scipy.sparse.coo_matrix((np.ones(m), (f, s)), shape=(n, n))
    k_ref, comp_ref = scipy.sparse.csgraph.connected_components(graph, directed=False)
    assert k == k_ref
    assert len(set(zip(comp.tolist(), comp_ref.tolist()))) == k_ref
    uses = np.bincount(f * n + s, minlength=n * n).reshape(n, n)
    uses = uses + uses.T
    uses.flat[:: n + 1] = pairing._NEVER
    assert pairing._reaches_all(uses) == (k_ref == 1)
