"""Position-aware Bradley-Terry model: MAP fit, standard errors, reliability and misfit.

The model is P(essay shown first wins) = sigmoid(theta[first] - theta[second] + delta),
where delta is the judge's position effect. A Gaussian prior on theta identifies the scale
and keeps all-wins essays finite; a weak Gaussian prior on delta keeps it finite when every
judgement went the same way.

References: Bradley & Terry (1952); Pollitt (2012), "The method of Adaptive Comparative
Judgement"; Bramley (2015), "Investigating the reliability of Adaptive Comparative
Judgement"; Wright & Masters (1982) for infit/outfit mean squares.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
from scipy.special import expit as _expit

__all__ = [
    "Fit",
    "comparison_counts",
    "fit_bt",
    "misfit",
    "scale_separation_reliability",
    "win_probability",
]

# Newton steps are capped elementwise: the log-posterior is concave, but a full step from a
# poor start (e.g. a warm start from a fit before many new judgements) can overshoot.
_MAX_STEP = 5.0


@dataclass(frozen=True)
class Fit:
    """Result of a Bradley-Terry MAP fit.

    Attributes
    ----------
    theta : (n,) MAP abilities on the logit scale (prior mean 0).
    se : (n,) posterior standard errors, sqrt(diag(H^-1)) of the negative log-posterior.
    delta : position effect: log-odds advantage of the essay shown first ("A").
        0.0 when not fitted.
    delta_se : its standard error (0.0 when not fitted).
    ssr : scale separation reliability, see `scale_separation_reliability`.
    infit, outfit : (n,) information-weighted and unweighted mean squares; nan for an essay
        without comparisons. Expected value 1; well above 1 flags an essay judged
        inconsistently.
    iterations : Newton iterations used.
    converged : whether the largest Newton step fell below `tol` within `max_iter`.
    """

    theta: np.ndarray
    se: np.ndarray
    delta: float
    delta_se: float
    ssr: float
    infit: np.ndarray
    outfit: np.ndarray
    iterations: int
    converged: bool

    @property
    def n_items(self) -> int:
        return int(self.theta.shape[0])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # scipy.special.expit is numerically safe for large |x|.
    return np.asarray(_expit(x), dtype=float)


def win_probability(theta_first: np.ndarray | float, theta_second: np.ndarray | float, delta: float = 0.0) -> np.ndarray:
    """P(the essay shown first wins) under the fitted model."""
    return _sigmoid(np.asarray(theta_first, dtype=float) - np.asarray(theta_second, dtype=float) + delta)


def _check_data(
    n_items: int, first: np.ndarray, second: np.ndarray, first_won: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    f = np.asarray(first)
    s = np.asarray(second)
    y = np.asarray(first_won)
    if f.ndim != 1 or s.ndim != 1 or y.ndim != 1:
        raise ValueError("first, second and first_won must be 1-D arrays")
    if not (f.shape == s.shape == y.shape):
        raise ValueError(f"first, second and first_won differ in length: {f.shape[0]}, {s.shape[0]}, {y.shape[0]}")
    if f.size:
        if f.dtype.kind not in "iu" or s.dtype.kind not in "iu":
            raise ValueError("first and second must be integer index arrays")
        # As unsigned, a negative index is huge: one reduction per array checks both ends.
        if f.dtype == s.dtype == np.int64 and max(int(f.view(np.uint64).max()), int(s.view(np.uint64).max())) < n_items:
            lo, hi = 0, 0
        else:
            lo = min(int(f.min()), int(s.min()))
            hi = max(int(f.max()), int(s.max()))
        if lo < 0 or hi >= n_items:
            raise ValueError(f"essay index out of range [0, {n_items}): found {lo if lo < 0 else hi}")
        if (f == s).any():
            raise ValueError("an essay cannot be compared with itself")
    # 0/1 numbers are accepted; NaN (silently NaN abilities) or 2.0 are not outcomes.
    if y.dtype.kind != "b" and y.size and (y.dtype.kind not in "iuf" or not np.all((y == 0) | (y == 1))):
        raise ValueError("first_won must hold booleans (or 0/1)")
    return f.astype(np.intp, copy=False), s.astype(np.intp, copy=False), y.astype(float)


def _precision(sd: float | np.ndarray, name: str) -> float | np.ndarray:
    """1 / sd^2, checked: sd finite and > 0, and its precision finite (not 1e-300)."""
    # Fast paths (the same IEEE operations as below, without NumPy's per-call overhead):
    # within (1e-150, 1e150) sd^2 and 1/sd^2 are finite and normal, so nothing to check.
    if type(sd) is float or type(sd) is np.float64 or (type(sd) is int and 0 < sd < _SD_HI):
        v = float(sd)
        if _SD_LO < v < _SD_HI:
            return 1.0 / (v * v)
    elif type(sd) is np.ndarray and sd.dtype == np.float64 and sd.size and _SD_LO < sd.min() and sd.max() < _SD_HI:
        prec = 1.0 / sd**2
        return float(prec) if prec.ndim == 0 else prec
    arr = np.asarray(sd, dtype=float)
    if np.all(arr > 0) and np.all(np.isfinite(arr)):
        with np.errstate(over="ignore", divide="ignore", under="ignore"):
            prec = 1.0 / arr**2
        if np.all(np.isfinite(prec)):
            return float(prec) if prec.ndim == 0 else prec
    raise ValueError(f"{name} must be finite and > 0 (and not so small that 1/{name}^2 overflows)")


# sd bounds of `_precision`'s fast paths (sd^2 and 1/sd^2 finite and normal inside).
_SD_LO, _SD_HI = 1e-150, 1e150


def comparison_counts(n_items: int, first: np.ndarray, second: np.ndarray, first_won: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Comparisons and wins per essay.

    Returns
    -------
    comparisons, wins : (n,) int arrays.
    """
    f, s, y = _check_data(n_items, first, second, first_won)
    comps = np.bincount(f, minlength=n_items) + np.bincount(s, minlength=n_items)
    wins = np.bincount(f, weights=y, minlength=n_items) + np.bincount(s, weights=1.0 - y, minlength=n_items)
    return comps.astype(np.int64), np.rint(wins).astype(np.int64)


def scale_separation_reliability(theta: np.ndarray, se: np.ndarray) -> float:
    """Scale separation reliability SSR = (var(theta) - mean(se^2)) / var(theta).

    The share of the observed spread of abilities that is not measurement error (Bramley,
    2015). Population variance (ddof=0) is used; the result is clipped to [0, 1], and is 0
    when there are fewer than two essays or no spread. Adaptive pairing inflates SSR, so
    judge pairing strategies by recovery of a known order in simulation, not by SSR.
    """
    t = np.asarray(theta, dtype=float)
    e = np.asarray(se, dtype=float)
    if t.size < 2:
        return 0.0
    d = t - t.sum() / t.size
    var = float(d @ d) / t.size
    if not math.isfinite(var) or var <= 1e-12:
        return 0.0
    ssr = (var - float(e @ e) / e.size) / var
    return float(min(1.0, max(0.0, ssr)))


def misfit(
    n_items: int, first: np.ndarray, second: np.ndarray, first_won: np.ndarray, theta: np.ndarray, delta: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-essay infit and outfit mean squares.

    For each judgement the squared standardised residual is (y - p)^2 / (p(1-p)); outfit is
    its mean over an essay's judgements (sensitive to surprising outcomes against distant
    essays), infit is sum (y - p)^2 / sum p(1-p) (weighted by information, so dominated by
    close comparisons). Both are ~1 when the essay fits; nan without judgements.
    """
    f, s, y = _check_data(n_items, first, second, first_won)
    th = np.asarray(theta, dtype=float)
    p = _sigmoid(th[f] - th[s] + delta)
    w = np.clip(p * (1.0 - p), 1e-12, None)
    sq = (y - p) ** 2
    z2 = sq / w
    cnt = np.bincount(f, minlength=n_items) + np.bincount(s, minlength=n_items)
    sum_z2 = np.bincount(f, weights=z2, minlength=n_items) + np.bincount(s, weights=z2, minlength=n_items)
    sum_sq = np.bincount(f, weights=sq, minlength=n_items) + np.bincount(s, weights=sq, minlength=n_items)
    sum_w = np.bincount(f, weights=w, minlength=n_items) + np.bincount(s, weights=w, minlength=n_items)
    with np.errstate(invalid="ignore", divide="ignore"):
        outfit = np.where(cnt > 0, sum_z2 / np.maximum(cnt, 1), np.nan)
        infit = np.where(cnt > 0, sum_sq / np.where(sum_w > 0, sum_w, 1.0), np.nan)
    return infit, outfit


def _start(n_items: int, initial: Fit | None, reach: float = 0.0) -> tuple[np.ndarray, float]:
    theta = np.zeros(n_items)
    delta = 0.0
    if initial is not None:
        prev = np.asarray(initial.theta, dtype=float)
        if prev.shape[0] == n_items:
            theta = prev.copy()
        elif 0 < prev.shape[0] < n_items:
            # Essays were added since: keep the old ones, start new ones at the prior mean.
            theta[: prev.shape[0]] = prev
        # A start is only a hint: a diverged or corrupt one (NaN, or far beyond the scale
        # the priors set) would stall Newton, so such entries start at the prior mean.
        lim = reach + _MAX_START
        if theta.shape[0] and not np.abs(theta).max() <= lim:  # NaN fails the test too
            theta[~(np.abs(theta) <= lim)] = 0.0
        if abs(initial.delta) <= _MAX_START:
            delta = float(initial.delta)
    return theta, delta


# Logits beyond the largest prior mean (a bank's scale reaches 50, and its class essays a
# little past it): a start further out is a diverged or corrupt fit, not a scale.
_MAX_START = 50.0


def fit_bt(
    n_items: int,
    first: np.ndarray,
    second: np.ndarray,
    first_won: np.ndarray,
    *,
    prior_sd: float | np.ndarray = 2.0,
    delta_prior_sd: float = 1.0,
    fit_delta: bool = True,
    initial: Fit | None = None,
    tol: float = 1e-8,
    max_iter: int = 50,
    prior_mean: np.ndarray | None = None,
    cohort: np.ndarray | None = None,
) -> Fit:
    """MAP fit of the position-aware Bradley-Terry model by Newton's method.

    Parameters
    ----------
    n_items : number of essays; indices in `first`/`second` are in [0, n_items).
    first, second : (m,) int arrays, the essays shown first ("A") and second ("B").
    first_won : (m,) bool array, True when the essay shown first won.
    prior_sd : sd of the N(0, prior_sd^2) prior on each theta. It fixes the origin of the
        scale, keeps essays with only wins or only losses finite, and makes disconnected
        comparison graphs well posed. 2.0 suits typical CJ spreads on the logit scale.
        An (n_items,) array gives each essay its own (e.g. a banked anchor: the SE of its
        value from an earlier calibration).
    delta_prior_sd : sd of the N(0, .) prior on the position effect (weak: 1 logit).
    fit_delta : estimate the position effect; when False, delta is fixed at 0.
    initial : previous fit to warm-start from (its theta if it has n_items essays, or
        fewer essays, padded with 0 for new ones; and its delta).
    tol : convergence when the largest absolute Newton step is below `tol`.
    max_iter : Newton iteration cap.
    prior_mean : (n_items,) prior means (default 0): anchors with banked scale values put
        the batch on the bank's scale.
    cohort : (n_items,) bools: essays whose prior is N(mu, prior_sd^2) around their
        cohort's mean mu, fitted with them (mu itself has a weak N(0, (2 prior_sd)^2)
        prior) instead of a prior mean. On a bank's scale a class's mean is not the bank's;
        the others (banked anchors) then fix the origin, so at least one essay must be
        outside the cohort.

    Returns
    -------
    Fit : MAP estimates, posterior SEs from the inverse Hessian, SSR and misfit.

    Raises
    ------
    ValueError : arrays of different lengths, indices out of range, or self-comparisons.

    Notes
    -----
    The Hessian of the negative log-posterior is a weighted graph Laplacian plus the prior
    precision, so it is positive definite and Newton converges in a handful of steps. It is
    built densely with `np.bincount` on flat indices (no Python loop over judgements) and
    solved by Cholesky; for 1,000 essays a factorisation takes a few milliseconds.
    """
    f, s, y = _check_data(n_items, first, second, first_won)
    n = n_items
    scalar_sd = type(prior_sd) is float or type(prior_sd) is int or not np.ndim(prior_sd)
    sd = None if scalar_sd else np.broadcast_to(np.asarray(prior_sd, dtype=float), (n,))
    prec: float | np.ndarray = _precision(prior_sd if sd is None else sd, "prior_sd")
    dprec = float(_precision(delta_prior_sd, "delta_prior_sd"))
    mean = None
    if prior_mean is not None:
        mean = np.asarray(prior_mean, dtype=float).reshape(-1)
        if mean.shape != (n,) or not np.all(np.isfinite(mean)):
            raise ValueError(f"prior_mean must hold {n} finite values")
        if not mean.any():
            mean = None
    pc = None  # prior precision of the cohort's essays (0 elsewhere), when its mean is free
    pc_total = 0.0
    if cohort is not None:
        in_cohort = np.asarray(cohort, dtype=bool).reshape(-1)
        if in_cohort.shape != (n,):
            raise ValueError(f"cohort must hold {n} bools")
        if in_cohort.any():
            if in_cohort.all():
                raise ValueError("a free cohort mean needs essays outside the cohort (banked anchors) to fix the scale")
            pc = np.where(in_cohort, prec, 0.0)
            # The profiled prior below divides by sum(pc) plus mu's own prior precision: a
            # weak N(0, (2 prior_sd)^2) on mu keeps the fit proper before the class is linked
            # to the bank.
            pc_total = float(pc.sum()) * (1.0 + 0.25 / float(in_cohort.sum()))
            if mean is not None:
                mean = np.where(in_cohort, 0.0, mean)
    use_delta = bool(fit_delta)
    if f.shape[0] == 0 or n == 0:
        # Nothing observed: the posterior is the prior.
        se0 = np.full(n, float(prior_sd)) if sd is None else sd.copy()
        if pc is not None:
            # A cohort essay's prior is around the free cohort mean, so its variance carries
            # the mean's too: the inverse of the profiled prior precision
            # diag(prec) - pc pc' / pc_total (Sherman-Morrison) adds 1 / (pc_total - sum(pc))
            # inside the cohort, as the solver below does once there are judgements.
            se0 = np.sqrt(se0**2 + (pc > 0) / (pc_total - float(pc.sum())))
        return Fit(
            theta=np.zeros(n) if mean is None else mean.copy(),
            se=se0,
            delta=0.0,
            delta_se=float(delta_prior_sd) if use_delta else 0.0,
            ssr=0.0,
            infit=np.full(n, np.nan),
            outfit=np.full(n, np.nan),
            iterations=0,
            converged=True,
        )
    theta, delta = _start(n, initial, 0.0 if mean is None else float(np.abs(mean).max()))
    x = np.concatenate((theta, (delta,))) if use_delta else theta
    if n + (1 if use_delta else 0) <= _DENSE_MAX_DIM:
        return _fit_dense(n, f, s, y, prec, dprec, use_delta, x, tol, max_iter, mean, pc, pc_total)
    problem = _Problem(n, f, s, y, prec, dprec, use_delta, mean, pc, pc_total)
    x, iterations, converged = _newton(problem, x, tol, max_iter)
    # Built in single precision straight away: at 10,000 essays a float64 Hessian plus its
    # float32 copy took 1.2 GB (0.4 GB now) and seconds of memory traffic.
    cov_diag = _inverse_diagonal(problem.dense_hessian(x, np.float32), rebuild=lambda: problem.dense_hessian(x))
    theta = x[:n].copy()
    delta = float(x[n]) if use_delta else 0.0
    infit, outfit = misfit(n, f, s, y.astype(bool), theta, delta)
    return _fit_at(n, x, cov_diag, use_delta, infit, outfit, iterations, converged)


# Below this many parameters a dense Cholesky per Newton step is cheaper than conjugate
# gradients; above it (1,000 essays: ~10 ms per factorisation) CG steps cost ~1 ms.
_DENSE_MAX_DIM = 300


class _Problem:
    """Negative log-posterior of the BT model: value, gradient, Hessian products."""

    def __init__(
        self, n: int, f: np.ndarray, s: np.ndarray, y: np.ndarray, prec: float | np.ndarray, dprec: float,
        use_delta: bool, mean: np.ndarray | None = None, pc: np.ndarray | None = None, pc_total: float = 0.0,
    ) -> None:
        self.n, self.f, self.s, self.y = n, f, s, y
        self.prec, self.dprec, self.use_delta = prec, dprec, use_delta
        self.mean = np.zeros(n) if mean is None else mean
        # A free cohort mean, profiled out: the prior precision loses pc pc' / pc_total
        # (sum(pc) plus the precision of its own weak prior).
        self.pc = pc
        self.pc_sum = pc_total
        self.dim = n + (1 if use_delta else 0)
        lo, hi = np.minimum(f, s), np.maximum(f, s)
        keys, self.pair_of = np.unique(lo * n + hi, return_inverse=True)
        self.pair_lo, self.pair_hi = keys // n, keys % n
        self.w = np.zeros(f.shape[0])

    def split(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        return x[: self.n], (float(x[self.n]) if self.use_delta else 0.0)

    def value(self, x: np.ndarray) -> float:
        th, d = self.split(x)
        eta = th[self.f] - th[self.s] + d
        # -log sigmoid(eta) for wins, -log sigmoid(-eta) for losses
        nll = np.logaddexp(0.0, -eta) * self.y + np.logaddexp(0.0, eta) * (1.0 - self.y)
        dev = th - self.mean
        shared = 0.0 if self.pc is None else 0.5 * float(self.pc @ th) ** 2 / self.pc_sum
        return float(nll.sum() + 0.5 * np.sum(self.prec * dev * dev) - shared + 0.5 * self.dprec * d * d)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """Gradient at x; also stores the judgement weights p(1-p) for Hessian products."""
        n, f, s = self.n, self.f, self.s
        th, d = self.split(x)
        p = _sigmoid(th[f] - th[s] + d)
        g = p - self.y
        self.w = p * (1.0 - p)
        grad = np.empty(self.dim)
        grad[:n] = (
            np.bincount(f, weights=g, minlength=n) - np.bincount(s, weights=g, minlength=n)
            + self.prec * (th - self.mean)
        )
        if self.pc is not None:
            grad[:n] -= self.pc * (float(self.pc @ th) / self.pc_sum)
        self.deg = np.bincount(f, weights=self.w, minlength=n) + np.bincount(s, weights=self.w, minlength=n)
        self.diag = np.empty(self.dim)
        self.diag[:n] = self.deg + self.prec
        if self.pc is not None:
            self.diag[:n] -= self.pc * self.pc / self.pc_sum
        if self.use_delta:
            grad[n] = g.sum() + self.dprec * d
            self.cross = np.bincount(f, weights=self.w, minlength=n) - np.bincount(s, weights=self.w, minlength=n)
            self.diag[n] = self.w.sum() + self.dprec
        return grad

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        """Hessian (at the last `gradient` point) times v, in O(judgements)."""
        n, f, s, w = self.n, self.f, self.s, self.w
        out = self.diag * v
        vt = v[:n]
        out[:n] -= np.bincount(f, weights=w * vt[s], minlength=n) + np.bincount(s, weights=w * vt[f], minlength=n)
        if self.pc is not None:
            out[:n] -= self.pc * (float(self.pc @ vt) / self.pc_sum)
            out[:n] += self.pc * self.pc / self.pc_sum * vt  # diag already took it out once
        if self.use_delta:
            out[:n] += self.cross * v[n]
            out[n] += self.cross @ vt
        return out

    def dense_hessian(self, x: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        """The full Hessian at x, Fortran-ordered for LAPACK (float32 halves its memory)."""
        self.gradient(x)
        n = self.n
        h = np.zeros((self.dim, self.dim), dtype=dtype, order="F")
        wp = np.bincount(self.pair_of, weights=self.w, minlength=self.pair_lo.shape[0])
        h[self.pair_lo, self.pair_hi] = -wp
        h[self.pair_hi, self.pair_lo] = -wp
        h[np.arange(self.dim), np.arange(self.dim)] = self.diag
        if self.pc is not None:
            h[:n, :n] -= np.outer(self.pc, self.pc) / self.pc_sum
            h[np.arange(n), np.arange(n)] += self.pc * self.pc / self.pc_sum  # diag took it out once
        if self.use_delta:
            h[:n, n] = self.cross
            h[n, :n] = self.cross
        return h


def _pcg(problem: _Problem, b: np.ndarray, rtol: float, maxiter: int) -> np.ndarray:
    """Solve H x = b by conjugate gradients with a Jacobi preconditioner."""
    minv = 1.0 / problem.diag
    x = np.zeros_like(b)
    r = b.copy()
    z = minv * r
    p = z.copy()
    rz = float(r @ z)
    stop = rtol * float(np.linalg.norm(b))
    for _ in range(maxiter):
        hp = problem.hess_vec(p)
        alpha = rz / float(p @ hp)
        x += alpha * p
        r -= alpha * hp
        if float(np.linalg.norm(r)) <= stop:
            break
        z = minv * r
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x


def _newton(problem: _Problem, x: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int, bool]:
    """Damped Newton iterations from x; returns (x, iterations, converged)."""
    dense = problem.dim <= _DENSE_MAX_DIM
    obj = problem.value(x)
    for it in range(1, max_iter + 1):
        grad = problem.gradient(x)
        if dense:
            h = problem.dense_hessian(x)
            step = scipy.linalg.cho_solve(
                scipy.linalg.cho_factor(h, lower=True, overwrite_a=True, check_finite=False), grad, check_finite=False
            )
        else:
            # Inexact Newton: loose solves far from the optimum, accurate ones near it.
            gnorm = float(np.max(np.abs(grad)))
            step = _pcg(problem, grad, rtol=min(1e-2, max(gnorm, 1e-12)), maxiter=4 * problem.dim)
        biggest = float(np.max(np.abs(step)))
        if biggest > _MAX_STEP:
            step *= _MAX_STEP / biggest
        # Backtracking: the posterior is log-concave so a full step is nearly always taken,
        # but damping guarantees descent from any warm start.
        t = 1.0
        while True:
            new_x = x - t * step
            new_obj = problem.value(new_x)
            if new_obj <= obj + 1e-12 * max(1.0, abs(obj)) or t < 1e-4:
                break
            t *= 0.5
        x, obj = new_x, new_obj
        if biggest * t < tol:
            return x, it, True
    return x, max_iter, False


def _inverse_diagonal(hm: np.ndarray, rebuild: Callable[[], np.ndarray] | None = None) -> np.ndarray:
    """diag(H^-1) for a symmetric positive definite H.

    Column sums of squares of L^-1 from the Cholesky factor (potrf + trtri: two thirds of
    the work of a full inverse). Large problems run in float32, twice as fast: the prior
    bounds H's condition number, and SEs need 6 digits, not 15. A Fortran-ordered float32
    `hm` is factored in place (destroyed); should that fail, `rebuild()` gives the float64
    Hessian for the fallback.
    """
    if hm.shape[0] > _DENSE_MAX_DIM or hm.dtype == np.float32:
        in_place = hm.dtype == np.float32 and hm.flags.f_contiguous
        out = _inverse_diagonal_f32(hm if in_place else np.array(hm, dtype=np.float32, order="F"))
        if out is not None:
            return out
        if in_place:
            if rebuild is None:
                raise ValueError("float32 factorisation failed and no float64 Hessian to fall back on")
            hm = rebuild()
    c, info = scipy.linalg.lapack.dpotrf(np.array(hm, dtype=np.float64, order="F"), lower=1, clean=1, overwrite_a=1)
    if info != 0:
        return np.diag(np.linalg.pinv(hm))
    inv_l, info = scipy.linalg.lapack.dtrtri(c, lower=1, overwrite_c=1)
    if info != 0:
        return np.diag(np.linalg.pinv(hm))
    return np.einsum("ki,ki->i", inv_l, inv_l)


def _inverse_diagonal_f32(a: np.ndarray) -> np.ndarray | None:
    """`_inverse_diagonal` in float32, overwriting the Fortran-ordered `a`; None if it fails."""
    c, info = scipy.linalg.lapack.spotrf(a, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        return None
    inv_l, info = scipy.linalg.lapack.strtri(c, lower=1, overwrite_c=1)
    if info != 0:
        return None
    out = np.einsum("ki,ki->i", inv_l, inv_l, dtype=np.float64)
    return np.asarray(out) if np.all(np.isfinite(out)) else None


# ---- small problems: one dense Newton loop, everything evaluated once per iterate ----------
#
# Up to _DENSE_MAX_DIM parameters the cost of a fit is dominated by per-call overhead, not
# arithmetic, so the loop below keeps the number of NumPy/LAPACK calls per Newton step small:
# the gradient and the Hessian are each one `np.bincount` over precomputed flat indices, the
# Hessian is factored once by LAPACK dpotrf and that factor serves the step (dpotrs), the
# standard errors (dtrtri) at the final iterate. The objective is only evaluated when the
# cheap descent test (convexity: the directional derivative at the new point still points
# downhill) fails.

_potrf = scipy.linalg.lapack.dpotrf
_potrs = scipy.linalg.lapack.dpotrs
_trtri = scipy.linalg.lapack.dtrtri


def _softplus_sum(z: np.ndarray) -> float:
    """sum log(1 + exp(z)), stable for large |z|."""
    return float((np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0.0)).sum())


def _fit_dense(
    n: int,
    f: np.ndarray,
    s: np.ndarray,
    y: np.ndarray,
    prec: float | np.ndarray,
    dprec: float,
    use_delta: bool,
    x: np.ndarray,
    tol: float,
    max_iter: int,
    mean: np.ndarray | None = None,
    pc: np.ndarray | None = None,
    pc_total: float = 0.0,
) -> Fit:
    m = f.shape[0]
    dim = n + 1 if use_delta else n
    # Flat indices of every Hessian and gradient contribution of a judgement. Row r of
    # `ends` is an endpoint of each judgement: first, second, and the delta "essay" n.
    if use_delta:
        ends = np.empty((3, m), dtype=np.intp)
        ends[0], ends[1], ends[2] = f, s, n
        hidx = (ends[_H_ROWS_D] * dim + ends[_H_COLS_D]).ravel()
        hsign, gsign = _H_SIGN_D, _G_SIGN_D
    else:
        ends = np.empty((2, m), dtype=np.intp)
        ends[0], ends[1] = f, s
        hidx = (ends[_H_ROWS] * dim + ends[_H_COLS]).ravel()
        hsign, gsign = _H_SIGN, _G_SIGN
    gidx = ends.ravel()
    prior = np.empty(dim)
    prior[:n] = prec
    if use_delta:
        prior[n] = dprec
    # Prior means (0 unless anchors carry banked values; delta's is 0).
    centre = np.zeros(dim)
    if mean is not None:
        centre[:n] = mean
    # A free cohort mean, profiled out: the prior precision loses pcf pcf' / pc_total.
    pcf = None
    if pc is not None:
        pcf = np.zeros(dim)
        pcf[:n] = pc
        pc_sum = pc_total
        pc_outer = np.outer(pcf, pcf).ravel() / pc_sum
    hsize = dim * dim
    diag = slice(None, None, dim + 1)

    def evaluate(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        eta = x[f] - x[s]
        if use_delta:
            eta += x[n]
        p = _expit(eta)
        grad = np.bincount(gidx, weights=(gsign * (p - y)).ravel(), minlength=dim)
        grad += prior * (x - centre) if mean is not None else prior * x  # x - 0.0 is x
        if pcf is not None:
            grad -= pcf * (float(pcf @ x) / pc_sum)
        return eta, p, grad

    last_w: list[np.ndarray] = []  # p(1 - p) of the last factored iterate, for the misfit

    def factor(p: np.ndarray) -> np.ndarray | None:
        w = p * (1.0 - p)
        last_w[:] = (w,)
        h = np.bincount(hidx, weights=(hsign * w).ravel(), minlength=hsize)
        h[diag] += prior
        if pcf is not None:
            h -= pc_outer
        # symmetric: the transpose is the same matrix in Fortran order (no copy)
        c, info = _potrf(h.reshape(dim, dim).T, lower=1, clean=1, overwrite_a=1)
        return c if info == 0 else None  # None cannot happen for a positive definite H

    def dense_h(p: np.ndarray) -> np.ndarray:
        h = np.bincount(hidx, weights=(hsign * (p * (1.0 - p))).ravel(), minlength=hsize)
        h[diag] += prior
        if pcf is not None:
            h -= pc_outer
        return h.reshape(dim, dim)

    eta, p, grad = evaluate(x)
    c = factor(p)
    iterations, converged = max_iter, False
    prev_biggest = np.inf
    for it in range(1, max_iter + 1):
        if c is None:
            step = np.linalg.lstsq(dense_h(p), grad, rcond=None)[0]
        else:
            step = _potrs(c, grad, lower=1)[0]
        biggest = float(np.abs(step).max())
        # Newton converges quadratically: once a full step is tiny and much smaller than
        # the one before, the next would be far below tol, so x - step is the optimum.
        if biggest < tol or (biggest * biggest < 1e-4 * tol and biggest < 1e-2 * prev_biggest):
            x = x - step
            iterations, converged = it, True
            break
        if biggest > _MAX_STEP:
            step *= _MAX_STEP / biggest
        t = 1.0
        new_x = x - step
        new_eta, new_p, new_grad = evaluate(new_x)
        if float(new_grad @ step) < 0.0:
            # The objective may have risen (the directional derivative at the new point
            # points back): backtrack on its value, as a damped Newton does.
            ysign = 2.0 * y - 1.0
            def prior_term(z: np.ndarray) -> float:
                dev = z - centre
                shared = 0.0 if pcf is None else float(pcf @ z) ** 2 / pc_sum
                return 0.5 * (float(prior @ (dev * dev)) - shared)

            obj = _softplus_sum(-ysign * eta) + prior_term(x)
            while True:
                new_obj = _softplus_sum(-ysign * new_eta) + prior_term(new_x)
                if new_obj <= obj + 1e-12 * max(1.0, abs(obj)) or t < 1e-4:
                    break
                t *= 0.5
                new_x = x - t * step
                new_eta, new_p, new_grad = evaluate(new_x)
        x, eta, p, grad = new_x, new_eta, new_p, new_grad
        prev_biggest = biggest if t == 1.0 else np.inf
        c = factor(p)
        if biggest * t < tol:
            iterations, converged = it, True
            break
    # Standard errors from the factor at the last iterate (within tol of x).
    cov_diag = None
    if c is not None:
        inv_l, info = _trtri(c, lower=1, overwrite_c=1)
        if info == 0:
            inv_l *= inv_l
            cov_diag = inv_l.sum(axis=0)
    if cov_diag is None:
        cov_diag = np.diag(np.linalg.pinv(dense_h(p)))
    # misfit at the same iterate (see `misfit`), in one bincount
    # p is the last factored iterate's (every accepted step is factored), so its p(1 - p) is at hand
    w = np.maximum(last_w[0], 1e-12)
    sq = (y != 0) - p
    sq *= sq
    stats = np.empty((3, 2, m))
    stats[0] = sq / w
    stats[1] = sq
    stats[2] = w
    sums = np.bincount((ends[:2] + _STAT_OFFSETS * n).ravel(), weights=stats.ravel(), minlength=3 * n)
    cnt = np.bincount(gidx[: 2 * m], minlength=n)
    none = cnt == 0
    sum_w = sums[2 * n :]
    if none.any():
        outfit = sums[:n] / np.maximum(cnt, 1)
        infit = sums[n : 2 * n] / np.where(sum_w > 0, sum_w, 1.0)
        outfit[none] = np.nan
        infit[none] = np.nan
    else:
        # every essay has a judgement, so cnt >= 1 and sum_w >= 1e-12: the guards above are no-ops
        outfit = sums[:n] / cnt
        infit = sums[n : 2 * n] / sum_w
    return _fit_at(n, x, cov_diag, use_delta, infit, outfit, iterations, converged)


def _fit_at(
    n: int, x: np.ndarray, cov_diag: np.ndarray, use_delta: bool, infit: np.ndarray, outfit: np.ndarray,
    iterations: int, converged: bool,
) -> Fit:
    """The `Fit` at the final iterate `x` (theta, then delta if fitted) with diag(H^-1)."""
    se_all = np.sqrt(np.maximum(cov_diag, 0.0))
    theta = x[:n].copy()
    se = se_all[:n].copy()
    return Fit(
        theta=theta,
        se=se,
        delta=float(x[n]) if use_delta else 0.0,
        delta_se=float(se_all[n]) if use_delta else 0.0,
        ssr=scale_separation_reliability(theta, se),
        infit=infit,
        outfit=outfit,
        iterations=iterations,
        converged=converged,
    )


# Hessian entries per judgement, as (row endpoint, column endpoint, sign) with endpoints
# 0 = first, 1 = second, 2 = delta: -w at (f, s) and (s, f), +w at (f, f) and (s, s); with
# delta also +w at (f, n), (n, f), (n, n) and -w at (s, n), (n, s).
_H_ROWS = np.array([0, 1, 0, 1])
_H_COLS = np.array([1, 0, 0, 1])
_H_SIGN = np.array([-1.0, -1.0, 1.0, 1.0])[:, None]
_H_ROWS_D = np.array([0, 1, 0, 1, 0, 2, 1, 2, 2])
_H_COLS_D = np.array([1, 0, 0, 1, 2, 0, 2, 1, 2])
_H_SIGN_D = np.array([-1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0])[:, None]
_G_SIGN = np.array([1.0, -1.0])[:, None]
_G_SIGN_D = np.array([1.0, -1.0, 1.0])[:, None]
_STAT_OFFSETS = np.arange(3)[:, None, None]
