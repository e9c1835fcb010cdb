"""Golden outputs of `select_pairs` and `fit_bt`, pinned from the code before the
small-batch speed-ups (commit d6acafe): those speed-ups were meant to change no output, so any
later change that moves a pair, its orientation, the rng stream or a fitted value shows here.

Pairs and rng draws must match exactly; fitted values to 1e-9 (BLAS builds may differ in the
last bits). The cases cover the batch operator's call (30 essays, a fit, pending pairs, k = 4),
the coverage floor and joining components, repeats (positions swapped), `random`, the large-batch
pick (> 150 essays), a start from scratch, and fits with per-essay priors, a banked cohort,
no position effect and separable data.
"""

from __future__ import annotations

import numpy as np
import pytest

from cj import model, pairing


def data(n, m, seed):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 2.0, n)
    f = rng.integers(0, n, m)
    s = (f + rng.integers(1, n, m)) % n
    won = rng.random(m) < 1.0 / (1.0 + np.exp(-(theta[f] - theta[s] + 0.3)))
    return f, s, won


def all_pairs(n, times, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(times):
        ps = [(i, j) for i in range(n) for j in range(i + 1, n)]
        for idx in rng.permutation(len(ps)):
            a, b = ps[idx]
            out.append((a, b) if rng.random() < 0.5 else (b, a))
    return out


def pair_cases():
    cases = {}
    for name, n, m, seed, k, kw in [
        ("n30_m150_adaptive", 30, 150, 1, 4, {"max_repeats": 3}),
        ("n30_m150_random", 30, 150, 1, 4, {"max_repeats": 3, "strategy": "random"}),
        ("n30_m40_floor", 30, 40, 2, 6, {"max_repeats": 3}),
        ("n30_m300_k1", 30, 300, 3, 1, {"max_repeats": 3}),
        ("n100_m500_k8", 100, 500, 4, 8, {"max_repeats": 2}),
        ("n200_m900_fast", 200, 900, 5, 6, {}),
        ("n151_m400_fast_floor", 151, 400, 6, 5, {"min_per_essay": 4}),
    ]:
        f, s, won = data(n, m, seed)
        fit = model.fit_bt(n, f[:-4], s[:-4], won[:-4])
        issued = list(zip(f.tolist(), s.tolist()))
        rng = np.random.default_rng(seed + 100)
        pairs = pairing.select_pairs(n, k, issued, fit=fit, rng=rng, pending=np.array(issued[-4:]), **kw)
        cases[name] = (pairs, int(rng.integers(1 << 30)))
    for name, n, times, k, kw in [
        ("n6_all_once_repeat", 6, 1, 6, {"max_repeats": 2}),
        ("n5_all_twice_level2", 5, 2, 4, {"max_repeats": 3}),
        ("n6_all_once_random", 6, 1, 5, {"max_repeats": 2, "strategy": "random"}),
    ]:
        issued = all_pairs(n, times, n)
        arr = np.asarray(issued)
        fit = model.fit_bt(n, arr[:, 0], arr[:, 1], (arr[:, 0] + arr[:, 1]) % 3 == 0)
        rng = np.random.default_rng(n + 7)
        pairs = pairing.select_pairs(n, k, issued, fit=fit, rng=rng, **kw)
        cases[name] = (pairs, int(rng.integers(1 << 30)))
    rng = np.random.default_rng(11)
    pairs = pairing.select_pairs(30, 20, [], fit=None, rng=rng)
    cases["n30_scratch_k20"] = (pairs, int(rng.integers(1 << 30)))
    return cases


def fit_cases():
    out = {}
    f, s, won = data(30, 150, 21)
    prev = model.fit_bt(30, f[:-4], s[:-4], won[:-4])
    out["warm30"] = model.fit_bt(30, f, s, won, initial=prev)
    f, s, won = data(12, 40, 22)
    out["no_delta_sd_array"] = model.fit_bt(12, f, s, won, fit_delta=False, prior_sd=np.linspace(0.5, 3.0, 12))
    mean = np.zeros(12); mean[:3] = [4.0, -2.0, 7.5]
    sd = np.full(12, 2.0); sd[:3] = 0.3
    coh = np.ones(12, bool); coh[:3] = False
    out["bank_cohort"] = model.fit_bt(12, f, s, won, prior_mean=mean, prior_sd=sd, cohort=coh)
    out["separable"] = model.fit_bt(12, f, s, np.ones(40, bool))
    return out


PAIRS = {'n100_m500_k8': ([(21, 60), (57, 60), (21, 79), (30, 86), (57, 51), (44, 60), (30, 61), (21, 10)],
                  705125516),
 'n151_m400_fast_floor': ([(0, 48), (70, 49), (3, 97), (48, 16), (146, 89)], 256113375),
 'n200_m900_fast': ([(98, 174), (174, 123), (149, 64), (137, 133), (118, 184), (140, 129)], 515207386),
 'n30_m150_adaptive': ([(21, 12), (9, 21), (8, 15), (7, 22)], 144803507),
 'n30_m150_random': ([(21, 0), (21, 15), (9, 21), (2, 0)], 842678394),
 'n30_m300_k1': ([(19, 28)], 335741064),
 'n30_m40_floor': ([(8, 16), (9, 29), (22, 8), (29, 21), (11, 22), (16, 9)], 654231024),
 'n30_scratch_k20': ([(4, 3), (18, 19), (5, 14), (17, 1), (28, 24), (11, 26), (12, 21), (6, 25), (20, 8),
                      (22, 29), (27, 23), (7, 10), (2, 16), (0, 13), (15, 9), (26, 22), (13, 19), (29, 7),
                      (25, 8), (24, 11)],
                     723017325),
 'n5_all_twice_level2': ([(1, 2), (1, 0), (0, 2), (1, 3)], 69169180),
 'n6_all_once_random': ([(5, 4), (3, 2), (1, 0), (3, 4), (1, 2)], 82892286),
 'n6_all_once_repeat': ([(0, 4), (3, 2), (4, 2), (1, 0), (5, 4), (0, 3)], 1011425286)}

FITS = {'bank_cohort': {'converged': True,
                 'delta': 0.6581565962955487,
                 'delta_se': 0.546298194304439,
                 'infit2': [0.012935419448091769, 5415.864431420886],
                 'iterations': 8,
                 'outfit2': [0.003288837942902545, 1826.219720014338],
                 'se2': [0.2996601431156191, 0.2999975084364111],
                 'ssr': 0.8163003481029316,
                 'theta4': [3.9976624003740695, -1.9100166147786073, 7.356755652309208, 8.923001266370553]},
 'no_delta_sd_array': {'converged': True,
                       'delta': 0.0,
                       'delta_se': 0.0,
                       'infit2': [0.5381753827209941, 0.3249782798255486],
                       'iterations': 6,
                       'outfit2': [0.3344740604334772, 0.2355504354588409],
                       'se2': [0.4566213965042777, 0.6681216835184984],
                       'ssr': 0.3646455542780659,
                       'theta4': [-0.3991413058607133,
                                  0.06905743809328939,
                                  -0.6527544065949045,
                                  0.07065727178956886]},
 'separable': {'converged': True,
               'delta': 2.5209392274701297,
               'delta_se': 0.5583889462760404,
               'infit2': [0.059051877348637594, 0.07104347158048811],
               'iterations': 6,
               'outfit2': [0.04847826103460808, 0.0664816238614187],
               'se2': [1.3824777001093262, 1.5721338340798956],
               'ssr': 0.0,
               'theta4': [-0.6869549994284325,
                          -0.06820104504331868,
                          0.07069100153437773,
                          0.014149834674183452]},
 'warm30': {'converged': True,
            'delta': 0.305635782824527,
            'delta_se': 0.24763760119172976,
            'infit2': [0.8005358700532094, 0.8809949164128409],
            'iterations': 5,
            'outfit2': [0.5614702544629568, 0.6644149660061045],
            'se2': [0.7506766474486818, 0.7520975713643379],
            'ssr': 0.5813764355889295,
            'theta4': [-0.4013249252605437, 1.004352679024798, -2.570327365189272, 2.4111958346277387]}}

_PAIRS_NOW = pair_cases()
_FITS_NOW = fit_cases()


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_select_pairs_golden(name: str) -> None:
    assert _PAIRS_NOW[name] == PAIRS[name]


@pytest.mark.parametrize("name", sorted(FITS))
def test_fit_bt_golden(name: str) -> None:
    fit, want = _FITS_NOW[name], FITS[name]
    assert (fit.iterations, fit.converged) == (want["iterations"], want["converged"])
    np.testing.assert_allclose(fit.theta[:4], want["theta4"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.se[:2], want["se2"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.infit[:2], want["infit2"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.outfit[:2], want["outfit2"], rtol=1e-9, atol=1e-12)
    for key in ("delta", "delta_se", "ssr"):
        assert getattr(fit, key) == pytest.approx(want[key], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_small_components_match_vectorised(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    m = int(rng.integers(0, 2 * n))
    f = rng.integers(0, n, m)
    s = rng.integers(0, n, m)
    k, comp = pairing._components_py(n, f, s)
    k_ref, comp_ref = pairing._components(n, f, s)
    assert k == k_ref
    np.testing.assert_array_equal(comp, comp_ref)  # both label a component by its smallest essay
