from __future__ import annotations

import choix
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from cj.model import Fit, comparison_counts, fit_bt, scale_separation_reliability
from cj.simulation import judge_logistic, judge_many, judge_position_bias
from cj.simulation import random_pairs as _random_pairs


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


def random_pairs(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    return np.column_stack(_random_pairs(n, m, rng))


def simulate(theta: np.ndarray, pairs: np.ndarray, rng: np.random.Generator, delta: float = 0.0) -> np.ndarray:
    judge = judge_position_bias if delta else judge_logistic
    assert delta in (0.0, 0.3)
    return judge_many(judge, theta, pairs[:, 0], pairs[:, 1], rng)


def _fit(n: int, pairs: np.ndarray, won: np.ndarray, **kw: object) -> Fit:
    return fit_bt(n, pairs[:, 0], pairs[:, 1], won, **kw)  # type: ignore[arg-type]


def test_recovers_known_order(rng: np.random.Generator) -> None:
    n = 40
    theta = rng.normal(0, 2, n)
    pairs = random_pairs(n, 800, rng)
    fit = _fit(n, pairs, simulate(theta, pairs, rng))
    assert fit.converged
    assert spearmanr(fit.theta, theta).statistic > 0.9
    assert fit.se.shape == (n,) and np.all(fit.se > 0)
    assert 0.0 <= fit.ssr <= 1.0 and fit.ssr > 0.8


def test_agrees_with_choix(rng: np.random.Generator) -> None:
    n = 60
    theta = rng.normal(0, 1.5, n)
    pairs = random_pairs(n, 1500, rng)
    won = simulate(theta, pairs, rng)
    data = [(int(a), int(b)) if w else (int(b), int(a)) for (a, b), w in zip(pairs, won)]
    # choix penalises alpha * sum(theta^2), i.e. a N(0, 1/(2 alpha)) prior: alpha = 1/8 is ours
    ref = choix.opt_pairwise(n, data, alpha=0.125)
    fit = _fit(n, pairs, won, fit_delta=False)
    assert spearmanr(fit.theta, ref).statistic >= 0.99
    # same objective, so the MAP itself should match closely
    np.testing.assert_allclose(fit.theta, ref - ref.mean() + fit.theta.mean(), atol=1e-3)


def test_position_effect_recovered(rng: np.random.Generator) -> None:
    n = 30
    theta = rng.normal(0, 1, n)
    pairs = random_pairs(n, 3000, rng)
    fit = _fit(n, pairs, simulate(theta, pairs, rng, delta=0.3))
    assert abs(fit.delta - 0.3) < 3 * fit.delta_se + 0.02
    assert 0 < fit.delta_se < 0.1


def test_no_delta_fixed_at_zero(rng: np.random.Generator) -> None:
    pairs = random_pairs(5, 50, rng)
    fit = _fit(5, pairs, np.ones(50, bool), fit_delta=False)
    assert fit.delta == 0.0 and fit.delta_se == 0.0


def test_zero_comparisons_returns_prior() -> None:
    fit = fit_bt(4, np.array([], int), np.array([], int), np.array([], bool), prior_sd=2.0)
    np.testing.assert_array_equal(fit.theta, np.zeros(4))
    np.testing.assert_array_equal(fit.se, np.full(4, 2.0))
    assert fit.ssr == 0.0 and fit.converged and fit.iterations == 0
    assert np.all(np.isnan(fit.infit)) and np.all(np.isnan(fit.outfit))


def test_two_essays() -> None:
    fit = fit_bt(2, np.array([0, 1, 0]), np.array([1, 0, 1]), np.array([True, False, True]))
    assert fit.theta[0] > fit.theta[1]
    assert np.all(np.isfinite(fit.theta)) and np.all(np.isfinite(fit.se))


def test_all_wins_is_finite() -> None:
    # essay 0 wins every comparison, in both positions
    first = np.array([0, 1, 0, 2, 0, 3, 1, 2])
    second = np.array([1, 0, 2, 0, 3, 0, 2, 3])
    won = np.array([True, False, True, False, True, False, True, True])
    fit = fit_bt(4, first, second, won)
    assert np.all(np.isfinite(fit.theta)) and np.all(np.isfinite(fit.se))
    assert np.argmax(fit.theta) == 0
    assert fit.converged


def test_every_judgement_first_wins_gives_finite_delta() -> None:
    first = np.array([0, 1, 2, 3, 1, 2])
    second = np.array([1, 2, 3, 0, 0, 1])
    fit = fit_bt(4, first, second, np.ones(6, bool))
    assert np.isfinite(fit.delta) and fit.delta > 0


def test_disconnected_graph(rng: np.random.Generator) -> None:
    # two islands {0,1,2} and {3,4,5}, plus an essay never compared
    first = np.array([0, 1, 2, 3, 4, 5] * 5)
    second = np.array([1, 2, 0, 4, 5, 3] * 5)
    won = rng.random(30) < 0.5
    fit = fit_bt(7, first, second, won)
    assert fit.converged and np.all(np.isfinite(fit.theta)) and np.all(np.isfinite(fit.se))
    assert fit.theta[6] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(fit.infit[6]) and np.isnan(fit.outfit[6])


def test_all_equal_abilities(rng: np.random.Generator) -> None:
    n = 10
    pairs = random_pairs(n, 200, rng)
    fit = _fit(n, pairs, simulate(np.zeros(n), pairs, rng))
    assert fit.converged and 0.0 <= fit.ssr <= 1.0
    assert np.all(np.abs(fit.theta) < 1.5)


def test_warm_start_gives_same_answer(rng: np.random.Generator) -> None:
    n = 50
    theta = rng.normal(0, 2, n)
    pairs = random_pairs(n, 600, rng)
    won = simulate(theta, pairs, rng)
    cold = _fit(n, pairs, won)
    warm = _fit(n, pairs, won, initial=cold)
    assert warm.iterations <= 2
    np.testing.assert_allclose(warm.theta, cold.theta, atol=1e-7)
    # warm start from a fit with fewer essays (new essays added)
    short = _fit(n - 5, pairs[(pairs < n - 5).all(axis=1)], won[(pairs < n - 5).all(axis=1)])
    grown = _fit(n, pairs, won, initial=short)
    np.testing.assert_allclose(grown.theta, cold.theta, atol=1e-6)


def test_a_corrupt_warm_start_is_ignored_not_followed(rng: np.random.Generator) -> None:
    """A diverged previous fit (NaN, huge values) must not poison the next one."""
    import dataclasses

    n = 20
    pairs = random_pairs(n, 200, rng)
    won = simulate(rng.normal(0, 2, n), pairs, rng)
    cold = _fit(n, pairs, won)
    wild = cold.theta.copy()
    wild[0], wild[1], wild[2], wild[3] = np.nan, 1e6, -np.inf, 500.0
    for bad in (dataclasses.replace(cold, theta=wild, delta=np.nan), dataclasses.replace(cold, delta=500.0)):
        warm = _fit(n, pairs, won, initial=bad)
        assert warm.converged
        np.testing.assert_allclose(warm.theta, cold.theta, atol=1e-6)
        assert abs(warm.delta - cold.delta) < 1e-6
    # abilities past 50 are legitimate on a bank's scale (values up to 50): kept as a start
    shifted = _fit(n, pairs, won, prior_mean=np.full(n, 60.0))
    again = _fit(n, pairs, won, prior_mean=np.full(n, 60.0), initial=shifted)
    assert shifted.theta.min() > 50 and again.iterations <= 2


def test_large_problem_uses_cg_and_matches_dense(rng: np.random.Generator) -> None:
    # above the dense threshold the Newton steps come from conjugate gradients
    n = 400
    theta = rng.normal(0, 2, n)
    pairs = random_pairs(n, 4000, rng)
    won = simulate(theta, pairs, rng)
    fit = _fit(n, pairs, won)
    assert fit.converged
    data = [(int(a), int(b)) if w else (int(b), int(a)) for (a, b), w in zip(pairs, won)]
    ref = choix.opt_pairwise(n, data, alpha=0.125)
    plain = _fit(n, pairs, won, fit_delta=False)
    np.testing.assert_allclose(plain.theta, ref - ref.mean() + plain.theta.mean(), atol=1e-3)


def test_infit_outfit_flag_a_misfitting_essay(rng: np.random.Generator) -> None:
    n = 20
    theta = np.linspace(-3, 3, n)
    pairs = random_pairs(n, 2000, rng)
    won = simulate(theta, pairs, rng)
    # essay 0 (weakest) wins 40% of its judgements regardless of opponent: erratic
    involved = (pairs[:, 0] == 0) | (pairs[:, 1] == 0)
    lucky = involved & (rng.random(len(won)) < 0.4)
    won[lucky] = pairs[lucky, 0] == 0
    fit = _fit(n, pairs, won)
    others_out = np.median(fit.outfit[1:])
    assert 0.6 < others_out < 1.4
    assert fit.outfit[0] > 2 * others_out
    assert fit.infit[0] > np.median(fit.infit[1:])


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        fit_bt(3, np.array([0, 1]), np.array([1]), np.array([True]))
    with pytest.raises(ValueError):
        fit_bt(3, np.array([0]), np.array([3]), np.array([True]))
    with pytest.raises(ValueError):
        fit_bt(3, np.array([-1]), np.array([1]), np.array([True]))
    with pytest.raises(ValueError):
        fit_bt(3, np.array([1]), np.array([1]), np.array([True]))
    # outcomes are booleans or 0/1: NaN gave NaN abilities silently, 2.0 was taken as a win
    for bad in (np.nan, 2.0, -1):
        with pytest.raises(ValueError, match="first_won"):
            fit_bt(2, np.array([0, 1]), np.array([1, 0]), np.array([bad, 1.0]))
    with pytest.raises(ValueError, match="first_won"):
        fit_bt(2, np.array([0]), np.array([1]), np.array(["yes"]))
    as_bool = fit_bt(3, np.array([0, 1, 2]), np.array([1, 2, 0]), np.array([True, False, True]))
    for numbers in (np.array([1, 0, 1]), np.array([1.0, 0.0, 1.0])):
        np.testing.assert_array_equal(fit_bt(3, np.array([0, 1, 2]), np.array([1, 2, 0]), numbers).theta, as_bool.theta)


def test_ssr() -> None:
    assert scale_separation_reliability(np.array([1.0]), np.array([0.1])) == 0.0
    assert scale_separation_reliability(np.zeros(5), np.ones(5)) == 0.0
    t = np.array([-2.0, 0.0, 2.0])
    expected = (np.var(t) - 0.25) / np.var(t)
    assert scale_separation_reliability(t, np.full(3, 0.5)) == pytest.approx(expected)
    assert scale_separation_reliability(t, np.full(3, 10.0)) == 0.0


def test_comparison_counts() -> None:
    comps, wins = comparison_counts(3, np.array([0, 1, 2]), np.array([1, 2, 0]), np.array([True, False, True]))
    np.testing.assert_array_equal(comps, [2, 2, 2])
    np.testing.assert_array_equal(wins, [1, 0, 2])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 12),
    data=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11), st.booleans()), max_size=60),
)
def test_fit_is_finite_and_converges_on_any_data(n: int, data: list[tuple[int, int, bool]]) -> None:
    rows = [(a % n, b % n, w) for a, b, w in data if a % n != b % n]
    first = np.array([r[0] for r in rows], dtype=int)
    second = np.array([r[1] for r in rows], dtype=int)
    won = np.array([r[2] for r in rows], dtype=bool)
    fit = fit_bt(n, first, second, won)
    assert fit.converged
    assert np.all(np.isfinite(fit.theta)) and np.all(np.isfinite(fit.se)) and np.isfinite(fit.delta)
    assert np.all(fit.se <= 2.0 + 1e-9)  # the data can only add information to the prior
    assert 0.0 <= fit.ssr <= 1.0


def _map_with_free_cohort_mean(n, pairs, won, mean, sd, cohort):
    """Reference: the MAP with the cohort's mean as an explicit parameter (scipy, exact gradient)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    f, s, y = pairs[:, 0], pairs[:, 1], won.astype(float)

    def obj(z: np.ndarray) -> tuple[float, np.ndarray]:
        t, mu = z[:n], z[n]
        eta = t[f] - t[s]
        p = expit(eta)
        centre = np.where(cohort, mu, mean)
        value = float(np.sum(np.logaddexp(0, -eta) * y + np.logaddexp(0, eta) * (1 - y)))
        tau2 = 4.0 / float(np.mean(1.0 / sd[cohort] ** 2))  # mu ~ N(0, (2 prior_sd)^2)
        value += 0.5 * float(np.sum((t - centre) ** 2 / sd**2)) + 0.5 * mu * mu / tau2
        g = np.zeros(n + 1)
        r = p - y
        g[:n] = np.bincount(f, r, n) - np.bincount(s, r, n) + (t - centre) / sd**2
        g[n] = -float(np.sum(np.where(cohort, (t - mu) / sd**2, 0.0))) + mu / tau2
        return value, g

    res = minimize(obj, np.zeros(n + 1), jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 5000})
    return res.x


@pytest.mark.parametrize("n", [24, 330])  # the dense path and the conjugate-gradient path
def test_banked_anchors_and_a_free_cohort_mean(n: int, rng: np.random.Generator) -> None:
    # A class 1.5 logits above the bank's population; 6 anchors with banked values.
    theta = np.concatenate([rng.normal(1.5, 2.0, n - 6), np.linspace(-3, 3, 6)])
    pairs = random_pairs(n, 8 * n, rng)
    won = simulate(theta, pairs, rng)
    banked = np.arange(n) >= n - 6
    mean = np.where(banked, theta, 0.0)
    sd = np.where(banked, 0.3, 2.0)
    fit = _fit(n, pairs, won, prior_mean=mean, prior_sd=sd, cohort=~banked, fit_delta=False)
    assert fit.converged
    # the MAP with the cohort's mean as an explicit parameter, on both code paths
    ref = _map_with_free_cohort_mean(n, pairs, won, mean, sd, ~banked)
    np.testing.assert_allclose(fit.theta, ref[:n], atol=1e-5)
    # equal precisions: mu is their mean, shrunk a little by its weak prior
    assert abs(fit.theta[~banked].mean() - ref[n]) < 0.02 * abs(ref[n]) + 1e-5
    assert np.abs(fit.theta[banked] - theta[banked]).max() < 0.6  # anchors stay near their values
    assert np.isfinite(fit.se).all() and (fit.se[banked] < 0.3).all()
    # with the bank's population mean as the prior mean instead, the class is pulled down
    pulled = _fit(n, pairs, won, prior_mean=mean, prior_sd=sd, fit_delta=False)
    assert pulled.theta[~banked].mean() < fit.theta[~banked].mean() - 0.05


def test_per_essay_priors_default_to_the_scalar_one(rng: np.random.Generator) -> None:
    n = 30
    pairs = random_pairs(n, 200, rng)
    won = simulate(rng.normal(0, 2, n), pairs, rng)
    a, b = _fit(n, pairs, won), _fit(n, pairs, won, prior_sd=np.full(n, 2.0), prior_mean=np.zeros(n))
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.se, b.se)
    empty = fit_bt(3, np.array([], dtype=int), np.array([], dtype=int), np.array([], dtype=bool),
                   prior_mean=np.array([1.0, 0.0, -1.0]), prior_sd=np.array([0.5, 2.0, 2.0]))
    np.testing.assert_array_equal(empty.theta, [1.0, 0.0, -1.0])
    np.testing.assert_array_equal(empty.se, [0.5, 2.0, 2.0])


def test_bad_priors() -> None:
    f, s, w = np.array([0, 1]), np.array([1, 2]), np.array([True, False])
    with pytest.raises(ValueError, match="prior_mean"):
        fit_bt(3, f, s, w, prior_mean=np.zeros(2))
    with pytest.raises(ValueError, match="prior_sd"):
        fit_bt(3, f, s, w, prior_sd=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="outside the cohort"):
        fit_bt(3, f, s, w, cohort=np.ones(3, dtype=bool))
    # scalar priors are checked like array ones: inf was accepted (unconverged, SEs of 1e7),
    # 1e-300 raised ZeroDivisionError
    for bad in (np.inf, np.nan, 0.0, -1.0, 1e-300):
        with pytest.raises(ValueError, match="prior_sd"):
            fit_bt(3, f, s, w, prior_sd=bad)
        with pytest.raises(ValueError, match="delta_prior_sd"):
            fit_bt(3, f, s, w, delta_prior_sd=bad)
        with pytest.raises(ValueError, match="prior_sd"):
            fit_bt(3, f, s, w, prior_sd=np.array([1.0, bad, 1.0]))


def test_cohort_prior_without_judgements_carries_the_mean() -> None:
    """With a free cohort mean and no judgements, a cohort essay's SE includes the mean's
    variance, as the solver gives once there is a judgement (before: sd, then 4.47)."""
    n = 6
    banked = np.arange(n) < 2
    mean = np.where(banked, [1.0, -1.0, 0, 0, 0, 0], 0.0)
    sd = np.where(banked, 0.3, 2.0)
    none = np.array([], dtype=int)
    empty = fit_bt(n, none, none, np.array([], dtype=bool), prior_mean=mean, prior_sd=sd, cohort=~banked)
    # one judgement between the two banked anchors says nothing about the cohort
    one = fit_bt(n, np.array([0]), np.array([1]), np.array([True]), prior_mean=mean, prior_sd=sd, cohort=~banked)
    np.testing.assert_allclose(empty.se[~banked], one.se[~banked], rtol=1e-9)
    np.testing.assert_array_equal(empty.se[banked], sd[banked])
    np.testing.assert_array_equal(empty.theta, mean)
    # the prior with mu as an explicit parameter, mu ~ N(0, (2 * 2.0)^2): sd^2 + 4 sd^2
    np.testing.assert_allclose(empty.se[~banked], np.sqrt(5.0) * 2.0)


def test_large_problem_ses_from_a_float32_hessian(rng: np.random.Generator) -> None:
    """Above the dense-path size the Hessian for the SEs is built in float32 and factored in
    place (a third of the memory at 10,000 essays); a failed float32 factorisation falls back
    to float64."""
    from cj.model import _inverse_diagonal, _Problem

    n = 320
    pairs = random_pairs(n, 6 * n, rng)
    won = simulate(rng.normal(0, 2, n), pairs, rng)
    fit = _fit(n, pairs, won)
    problem = _Problem(n, pairs[:, 0], pairs[:, 1], won.astype(float), 0.25, 1.0, True)
    x = np.append(fit.theta, fit.delta)
    exact = np.sqrt(np.diag(np.linalg.inv(problem.dense_hessian(x))))
    np.testing.assert_allclose(fit.se, exact[:n], rtol=1e-5)
    assert fit.delta_se == pytest.approx(exact[n], rel=1e-5)
    broken = np.zeros((n + 1, n + 1), dtype=np.float32, order="F")  # not positive definite
    got = _inverse_diagonal(broken, rebuild=lambda: problem.dense_hessian(x))
    np.testing.assert_allclose(np.sqrt(got), exact, rtol=1e-9)
