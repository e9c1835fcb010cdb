"""Grade projection: cut points on the theta scale from anchors, grade probabilities per essay.

Anchors are essays with known grades. The scale fixes the grades' relative layout (bands
of a normal population with the scale's priors, or equal spacing); the anchors place it
on the theta scale (origin and spread, by weighted least squares), which gives ordered cut
points for every grade, anchored or not. An essay's grade probabilities are the mass of
N(theta, SE^2) in each interval, widened by the uncertainty of the cut points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from cj.errors import GradingError
from cj.scales import GradeScale

__all__ = [
    "CutPoints",
    "GradeProjection",
    "GradingError",
    "fit_cut_points",
    "grade_probabilities",
    "grade_scores",
    "project_grades",
    "validate_anchor_grades",
]


@dataclass(frozen=True)
class GradeProjection:
    """One essay's projected grade.

    Attributes
    ----------
    grade : the most likely grade.
    probabilities : probability of every grade of the scale (below_lowest first if the scale
        has one), low -> high; sums to 1.
    """

    grade: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class CutPoints:
    """Ordered boundaries between adjacent grades of `scale.categories` on the theta scale.

    Attributes
    ----------
    scale : the grade scale.
    cuts : (len(scale.categories) - 1,) increasing boundaries; cuts[g] separates
        categories[g] from categories[g + 1].
    centres : (len(scale.categories),) theta of each grade's centre (anchored or inferred).
    cut_se : (len(cuts),) standard error of each boundary (from the anchors' SEs and the
        anchors' spread within a grade band, the common shift of the scale included); zeros
        if unknown.
    shared_cov : (len(cuts),) covariance of any essay's error with each boundary's error:
        every fitted ability carries the common shift of the scale (variance prior_sd^2 /
        n_items), and so does every cut point placed from the anchors; it cancels in
        theta - cut. None (or zeros) if unknown.
    """

    scale: GradeScale
    cuts: np.ndarray
    centres: np.ndarray | None = None
    cut_se: np.ndarray | None = None
    shared_cov: np.ndarray | None = None


def validate_anchor_grades(scale: GradeScale, grades: Sequence[str], *, require_enough: bool = False) -> None:
    """Raise GradingError if an anchor grade is not on `scale`.

    With `require_enough`, also require at least 2 anchors of at least 2 distinct grades,
    the least that places a scale (checked by `fit_cut_points`; off by default so one
    anchor can be checked on arrival).
    """
    known = set(scale.categories)
    for g in grades:
        if g not in known:
            raise GradingError(
                f"anchor grade {g!r} is not on scale {scale.name!r} (grades: {', '.join(scale.categories)})"
            )
    if require_enough:
        if len(grades) < 2:
            raise GradingError(f"need at least 2 anchors to place grades on the scale, got {len(grades)}")
        if len(set(grades)) < 2:
            raise GradingError(f"need anchors of at least 2 distinct grades, got only {sorted(set(grades))}")


def grade_scores(scale: GradeScale) -> tuple[np.ndarray, np.ndarray]:
    """Relative positions of grade centres and of the boundaries between them.

    With population priors (and no below_lowest grade), grades are bands of a standard
    normal population holding those shares: boundaries at its quantiles, centres at the
    band means. Otherwise grades are equally spaced: centre g at g, boundaries halfway.
    The theta scale is then a + b * score; only a and b are fitted from the anchors.
    """
    k = len(scale.categories)
    if scale.priors is not None and scale.below_lowest is None:
        shares = np.asarray(scale.priors, dtype=float)
        shares = np.clip(shares, 1e-9, None) / np.clip(shares, 1e-9, None).sum()
        bounds = ndtri(np.clip(np.cumsum(shares)[:-1], 1e-12, 1 - 1e-12))
        edges = np.concatenate([[-np.inf], bounds, [np.inf]])
        dens = np.exp(-0.5 * np.where(np.isfinite(edges), edges, 0.0) ** 2) / np.sqrt(2 * np.pi)
        dens[~np.isfinite(edges)] = 0.0
        centres = (dens[:-1] - dens[1:]) / shares
        return centres, bounds
    idx = np.arange(k, dtype=float)
    return idx, idx[:-1] + 0.5


def _truncated_normal_var(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Variance of a standard normal truncated to [lo, hi] (bounds may be infinite).

    Closed form; scipy.stats.truncnorm gives the same at a thousand times the cost.
    """
    pdf_lo = np.exp(-0.5 * lo * lo) / np.sqrt(2.0 * np.pi)  # 0 at an infinite bound
    pdf_hi = np.exp(-0.5 * hi * hi) / np.sqrt(2.0 * np.pi)
    with np.errstate(invalid="ignore"):
        t_lo = np.where(np.isfinite(lo), lo * pdf_lo, 0.0)
        t_hi = np.where(np.isfinite(hi), hi * pdf_hi, 0.0)
    mass = np.maximum(ndtr(hi) - ndtr(lo), 1e-300)
    mean = (pdf_lo - pdf_hi) / mass
    return 1.0 + (t_lo - t_hi) / mass - mean * mean


def _band_variances(scale: GradeScale, cut_scores: np.ndarray) -> np.ndarray:
    """Variance, in score units, of where an anchor sits inside its grade's band.

    With population priors the bands are slices of a standard normal, so this is the
    variance of a truncated normal; the open end bands are tails, about twice as wide in sd
    as a band of their neighbour's width would be. Without priors the bands are equally
    wide (width^2 / 12), and the open end bands are given their neighbour's width.
    """
    k = cut_scores.shape[0] + 1
    if scale.priors is not None and scale.below_lowest is None:
        lo = np.concatenate([[-np.inf], cut_scores])
        hi = np.concatenate([cut_scores, [np.inf]])
        return np.maximum(_truncated_normal_var(lo, hi), 1e-12)
    widths = np.diff(cut_scores)
    band = np.concatenate([[widths[0] if widths.size else 1.0], widths, [widths[-1] if widths.size else 1.0]])
    return band[:k] ** 2 / 12.0


def fit_cut_points(
    scale: GradeScale,
    anchor_theta: np.ndarray,
    anchor_grades: Sequence[str],
    *,
    anchor_se: np.ndarray | None = None,
    prior_sd: float | None = 2.0,
    n_items: int | None = None,
    fixed: np.ndarray | Sequence[bool] | None = None,
) -> CutPoints:
    """Cut points between adjacent grades of `scale` from anchor essays' abilities.

    Parameters
    ----------
    scale : the grade scale; anchors may carry any of `scale.categories`.
    anchor_theta : (a,) fitted abilities of the anchors.
    anchor_grades : (a,) their known grades.
    anchor_se : (a,) their SEs (optional, recommended: they weight the anchors, widen the
        cuts and undo the prior's shrinkage).
    prior_sd : the prior sd the abilities were fitted with (`fit_bt`'s `prior_sd`); None
        if they were not shrunk.
    n_items : essays in the fit (anchors included). With the prior, every fitted ability
        shares one common-shift error of variance prior_sd^2 / n_items; anchors and essays
        share it, so it cancels between an essay and a cut point. Given, the cut SEs carry
        it in full (the least-squares fit would treat it as independent per anchor and
        average most of it away) and `shared_cov` records it, so projections take it out
        of theta - cut exactly once.
    fixed : (a,) bools: anchors whose ability is a banked value from an earlier
        calibration (pass the value and its SE), not a fit under the prior. They are not
        de-shrunk, and with any of them the bank fixes the scale's origin, so there is no
        common shift to carry.

    Returns
    -------
    CutPoints with strictly increasing `cuts`, grade `centres` and `cut_se`.

    Raises
    ------
    GradingError : unknown grade, fewer than 2 anchors or 2 distinct grades, lengths differ,
        or anchors ordered against the scale (higher grades scoring lower overall).

    Notes
    -----
    The grades' relative layout comes from the scale (`grade_scores`: population priors
    or equal spacing); the anchors fit only its origin and spread, theta = a + b * score,
    by weighted least squares. Two parameters from a handful of anchors are stable, where
    a separate centre per grade would let each grade's width follow one anchor's noise,
    and the grade probabilities would then be overconfident (measured in
    `bench/cj_grading.py`). Grades without anchors follow from the layout, above, below
    or between anchored ones. Each anchor's variance is its SE^2 plus the spread of a
    position inside its band (`_band_variances`); the cut SEs come from the fit's covariance,
    inflated when the anchors scatter clearly more than that (chi^2 / dof above
    1 + 2 sd of its null distribution).

    The fitted abilities are posterior means, shrunk towards 0 by the prior, while an
    essay's posterior N(theta, SE^2) is about its true ability; so with `anchor_se` the
    prior is divided out of each anchor first (mean theta / (1 - SE^2 / prior_sd^2),
    variance 1 / (1/SE^2 - 1/prior_sd^2)) and the cuts land on the true scale. Without it,
    shrunk cut points make extreme grades overconfident.
    """
    theta = np.asarray(anchor_theta, dtype=float).reshape(-1)
    grades = list(anchor_grades)
    if theta.shape[0] != len(grades):
        raise GradingError(f"{theta.shape[0]} anchor abilities for {len(grades)} anchor grades")
    validate_anchor_grades(scale, grades, require_enough=True)
    if not np.all(np.isfinite(theta)):
        raise GradingError("anchor abilities must be finite")
    se = np.zeros_like(theta) if anchor_se is None else np.asarray(anchor_se, dtype=float).reshape(-1)
    if se.shape != theta.shape:
        raise GradingError("anchor_se must have one value per anchor")
    if not (np.all(np.isfinite(se)) and np.all(se >= 0)):
        raise GradingError("anchor SEs must be finite and >= 0")

    fx = np.zeros(theta.shape, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool).reshape(-1)
    if fx.shape != theta.shape:
        raise GradingError("fixed must have one value per anchor")
    if fx.any() and (anchor_se is None or not np.all(se[fx] > 0)):
        raise GradingError("banked anchors need their values' SEs (> 0)")

    de_shrink = None
    if anchor_se is not None and prior_sd is not None and prior_sd > 0:
        # Divide the prior out: the anchors' likelihood alone, on the true scale (banked
        # anchors are already there).
        info = np.maximum(1.0 / np.maximum(se, 1e-9) ** 2 - 1.0 / prior_sd**2, 1e-6)
        de_shrink = np.where(fx, 1.0, 1.0 / (np.maximum(se, 1e-9) ** 2 * info))
        theta = theta * de_shrink
        se = np.where(fx, se, np.sqrt(1.0 / info))

    centre_scores, cut_scores = grade_scores(scale)
    pos = {g: i for i, g in enumerate(scale.categories)}
    gi = np.array([pos[g] for g in grades])
    x = np.column_stack([np.ones_like(theta), centre_scores[gi]])
    band_var = _band_variances(scale, cut_scores)

    def solve(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xtw = x.T * weights
        cov = np.linalg.pinv(xtw @ x)
        return cov @ (xtw @ theta), cov

    # The band term needs the slope: a first pass weighted by 1/SE^2 gives it (ordinary
    # least squares without SEs). Unweighted, one poorly measured anchor (judged once, an
    # upset win) could flip it although the weighted fit separates the grades; only the
    # final slope must be positive.
    coef, _ = solve(1.0 / np.maximum(se**2, 1e-6))
    var = se**2 + coef[1] ** 2 * band_var[gi]
    var = np.maximum(var, 1e-6)
    coef, cov = solve(1.0 / var)
    if not coef[1] > 1e-9:
        raise GradingError(
            f"anchors do not separate the grades of {scale.name!r}: higher grades do not score higher"
        )
    dof = theta.shape[0] - 2
    inflate = 1.0
    if dof > 0:
        # Widen only for a clear misfit: with a few anchors chi^2/dof scatters widely, and
        # max(1, chi^2/dof) on every batch would make all projections underconfident.
        chi2 = float(np.sum((theta - x @ coef) ** 2 / var)) / dof
        if chi2 > 1.0 + 2.0 * np.sqrt(2.0 / dof):
            inflate = chi2
    a, b = coef
    cuts = a + b * cut_scores
    centres = a + b * centre_scores
    z = np.column_stack([np.ones_like(cut_scores), cut_scores])
    cut_var = inflate * np.maximum(np.einsum("ij,jk,ik->i", z, cov, z), 0.0)
    shared_cov = np.zeros_like(cut_scores)
    if n_items and de_shrink is not None and not fx.any():
        # The common shift (variance s2) of the prior moves every anchor together, each
        # de-shrunk value by its de-shrinking factor, so it moves each cut by
        # k = (weights of the cut on the anchors) . de_shrink, about 1. The fit above
        # counted it as independent noise per anchor (sum of squared weights * s2); put
        # it back whole (k^2 * s2). Its covariance with an essay's error is k * s2.
        assert prior_sd is not None  # de_shrink exists only with a prior
        s2 = prior_sd**2 / n_items
        w_cut = z @ (cov @ (x.T / var))  # (cuts, anchors): cut = w_cut @ theta
        k = w_cut @ de_shrink
        counted = inflate * s2 * np.einsum("ij,j->i", w_cut**2, de_shrink**2)
        cut_var = np.maximum(cut_var - counted, 0.0) + s2 * k**2
        shared_cov = s2 * k
    cut_se = np.sqrt(cut_var)
    return CutPoints(scale=scale, cuts=cuts, centres=centres, cut_se=cut_se, shared_cov=shared_cov)


def grade_probabilities(cuts: CutPoints, theta: np.ndarray, se: np.ndarray) -> np.ndarray:
    """(n, categories) probabilities of each grade for each essay (rows sum to 1).

    P(above cut c) = Phi((theta - c) / sqrt(SE^2 + cut_se^2 - 2 shared_cov)); a grade's
    probability is the difference of adjacent exceedances (made monotone, so never negative).
    """
    th = np.asarray(theta, dtype=float).reshape(-1, 1)
    s = np.asarray(se, dtype=float).reshape(-1, 1)
    if th.shape != s.shape:
        raise GradingError("theta and se differ in length")
    # NaN would otherwise come out as a certain grade (NaN compares false with every cut).
    if not np.all(np.isfinite(th)):
        raise GradingError("abilities to project must be finite")
    if not (np.all(np.isfinite(s)) and np.all(s >= 0)):
        raise GradingError("standard errors to project must be finite and >= 0")
    c = np.asarray(cuts.cuts, dtype=float).reshape(1, -1)
    cse = np.zeros_like(c) if cuts.cut_se is None else np.asarray(cuts.cut_se, dtype=float).reshape(1, -1)
    shared = np.zeros_like(c) if cuts.shared_cov is None else np.asarray(cuts.shared_cov, dtype=float).reshape(1, -1)
    total = s**2 + cse**2
    # The scale's common shift is in both the essay's and the cuts' errors and cancels.
    sd = np.sqrt(np.maximum(total - 2.0 * shared, 0.25 * total))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, (th - c) / np.where(sd > 0, sd, 1.0), np.where(th >= c, np.inf, -np.inf))
    above = ndtr(z)  # P(theta above each cut), should fall with the cut index
    above = np.minimum.accumulate(above, axis=1)
    upper = np.concatenate([np.ones((th.shape[0], 1)), above], axis=1)
    lower = np.concatenate([above, np.zeros((th.shape[0], 1))], axis=1)
    probs = np.clip(upper - lower, 0.0, 1.0)
    total = probs.sum(axis=1, keepdims=True)
    return probs / np.where(total > 0, total, 1.0)


def project_grades(cuts: CutPoints, theta: np.ndarray, se: np.ndarray) -> list[GradeProjection]:
    """Most likely grade and grade probabilities for each essay from N(theta, SE^2)."""
    probs = grade_probabilities(cuts, theta, se)
    cats = cuts.scale.categories
    out = []
    for row in probs:
        out.append(
            GradeProjection(
                grade=cats[int(np.argmax(row))],
                probabilities={g: float(p) for g, p in zip(cats, row)},
            )
        )
    return out
