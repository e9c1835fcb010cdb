"""Grade projection: cut points on the theta scale from anchors, grade probabilities per essay.

Anchors are essays with known grades. Each anchored grade gets a centre on the theta scale
(the mean theta of its anchors, made non-decreasing by isotonic regression); grades without
anchors get centres by linear interpolation between anchored neighbours, or by
extrapolation with the mean spacing per grade step beyond the anchored range. Cut points
are the midpoints between adjacent centres. An essay's grade probabilities are the mass of
N(theta, SE^2) in each interval, widened by the uncertainty of the cut points themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from cj.errors import GradingError
from cj.scales import GradeScale

__all__ = [
    "GradingError",
    "GradeProjection",
    "CutPoints",
    "fit_cut_points",
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
        anchors' spread within a grade band); zeros if unknown.
    """

    scale: GradeScale
    cuts: np.ndarray
    centres: np.ndarray | None = None
    cut_se: np.ndarray | None = None


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


def _isotonic(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted non-decreasing least-squares fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight, size]
    for v, w in zip(values, weights):
        blocks.append([float(v), float(w), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([np.full(int(n), m) for m, _, n in blocks])


def fit_cut_points(
    scale: GradeScale,
    anchor_theta: np.ndarray,
    anchor_grades: Sequence[str],
    *,
    anchor_se: np.ndarray | None = None,
) -> CutPoints:
    """Cut points between adjacent grades of `scale` from anchor essays' abilities.

    Parameters
    ----------
    scale : the grade scale; anchors may carry any of `scale.categories`.
    anchor_theta : (a,) fitted abilities of the anchors.
    anchor_grades : (a,) their known grades.
    anchor_se : (a,) their SEs; used for the cut points' uncertainty (optional).

    Returns
    -------
    CutPoints with strictly increasing `cuts`.

    Raises
    ------
    GradingError : unknown grade, fewer than 2 anchors or 2 distinct grades, lengths differ,
        or anchors ordered against the scale so badly that no spacing between grades is left.

    Notes
    -----
    Centre of an anchored grade = mean theta of its anchors; inversions (a higher grade's
    anchors scoring lower) are pooled by isotonic regression weighted by anchor counts.
    Unanchored grades between anchored ones are interpolated linearly in grade steps; those
    beyond are extrapolated with the mean step (range of anchored centres / grade steps).
    Cut = midpoint of adjacent centres; pooled grades are spread a quarter step apart so
    every grade keeps a non-empty interval. The cut SE combines the SEs of the centres it
    lies between (anchor SE^2 / count, plus a band-width term step^2 / 12 / count for where
    an anchor sits inside its band) and, for extrapolated grades, grows with the distance.
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

    cats = scale.categories
    k = len(cats)
    pos = {g: i for i, g in enumerate(cats)}
    gi = np.array([pos[g] for g in grades])
    counts = np.bincount(gi, minlength=k)
    anchored = np.flatnonzero(counts)
    means = np.bincount(gi, weights=theta, minlength=k)[anchored] / counts[anchored]
    centre_var = np.bincount(gi, weights=se**2, minlength=k)[anchored] / counts[anchored] ** 2
    iso = _isotonic(means, counts[anchored].astype(float))
    span_steps = int(anchored[-1] - anchored[0])
    step = (iso[-1] - iso[0]) / span_steps
    if not step > 1e-9:
        raise GradingError(
            f"anchors do not separate the grades of {scale.name!r}: higher grades do not score higher"
        )
    idx = np.arange(k)
    centres = np.interp(idx, anchored, iso)
    below = idx < anchored[0]
    above = idx > anchored[-1]
    centres[below] = iso[0] - step * (anchored[0] - idx[below])
    centres[above] = iso[-1] + step * (idx[above] - anchored[-1])
    # Pooled (tied) centres would give empty grades: spread them a quarter step apart.
    min_gap = 0.25 * step
    for i in range(1, k):
        if centres[i] < centres[i - 1] + min_gap:
            centres[i] = centres[i - 1] + min_gap

    # Uncertainty of each centre: measured (anchors' SE and where in its band an anchor
    # sits) for anchored grades, interpolated between, growing by one step's worth per
    # step of extrapolation.
    band_var = step**2 / 12.0
    var_anch = centre_var + band_var / counts[anchored]
    cvar = np.interp(idx, anchored, var_anch)
    cvar[below] = var_anch[0] + band_var * (anchored[0] - idx[below])
    cvar[above] = var_anch[-1] + band_var * (idx[above] - anchored[-1])
    cuts = 0.5 * (centres[:-1] + centres[1:])
    cut_se = 0.5 * np.sqrt(cvar[:-1] + cvar[1:])
    return CutPoints(scale=scale, cuts=cuts, centres=centres, cut_se=cut_se)


def grade_probabilities(cuts: CutPoints, theta: np.ndarray, se: np.ndarray) -> np.ndarray:
    """(n, categories) probabilities of each grade for each essay (rows sum to 1).

    P(above cut c) = Phi((theta - c) / sqrt(SE^2 + cut_se^2)); a grade's probability is the
    difference of adjacent exceedances (made monotone, so never negative).
    """
    th = np.asarray(theta, dtype=float).reshape(-1, 1)
    s = np.asarray(se, dtype=float).reshape(-1, 1)
    if th.shape != s.shape:
        raise GradingError("theta and se differ in length")
    c = np.asarray(cuts.cuts, dtype=float).reshape(1, -1)
    cse = np.zeros_like(c) if cuts.cut_se is None else np.asarray(cuts.cut_se, dtype=float).reshape(1, -1)
    sd = np.sqrt(s**2 + cse**2)
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
