from __future__ import annotations

import numpy as np
import pytest

from cj.grading import (
    GradingError,
    fit_cut_points,
    grade_probabilities,
    grade_scores,
    project_grades,
    validate_anchor_grades,
)
from cj.scales import SCALES, custom_scale, get_scale


def test_builtin_scales_as_designed() -> None:
    sw = get_scale("swedish_8_anchor")
    assert sw.grades == ("F", "E", "D", "D+", "C", "C+", "B", "A") and sw.below_lowest is None
    assert sw.priors == (0.02, 0.08, 0.15, 0.20, 0.25, 0.15, 0.10, 0.05)
    leg = get_scale("eng5_np_legacy_9_step")
    assert leg.grades == ("F+", "E-", "E+", "D-", "D+", "C-", "C+", "B", "A") and leg.below_lowest == "F"
    nat = get_scale("eng5_np_national_9_step")
    assert nat.grades == tuple("123456789") and nat.below_lowest == "0"
    assert set(SCALES) == {"swedish_8_anchor", "eng5_np_legacy_9_step", "eng5_np_national_9_step"}


def test_unknown_scale_and_bad_custom() -> None:
    with pytest.raises(GradingError, match="nope"):
        get_scale("nope")
    with pytest.raises(GradingError):
        custom_scale("x", ["a"])
    with pytest.raises(GradingError):
        custom_scale("x", ["a", "a"])
    with pytest.raises(GradingError):
        custom_scale("x", ["a", "b"], priors=[0.5, 0.6])
    assert custom_scale("pf", ["fail", "pass"], below_lowest=None).categories == ("fail", "pass")


@pytest.mark.parametrize("name", sorted(SCALES))
def test_projection_on_each_scale(name: str) -> None:
    scale = get_scale(name)
    rng = np.random.default_rng(1)
    grades = list(scale.grades)
    scores, _ = grade_scores(scale)
    offset = len(scale.categories) - len(grades)
    own = scores[offset:]
    centres = -3.0 + 6.0 * (own - own[0]) / (own[-1] - own[0])  # where the scale's layout puts them
    anchor_theta = np.repeat(centres, 2) + rng.normal(0, 0.05, 2 * len(grades))
    anchor_grades = [g for g in grades for _ in range(2)]
    cuts = fit_cut_points(scale, anchor_theta, anchor_grades)
    assert cuts.cuts.shape == (len(scale.categories) - 1,)
    assert np.all(np.diff(cuts.cuts) > 0)
    theta = np.concatenate([centres, [-10.0, 10.0]])
    proj = project_grades(cuts, theta, np.full(theta.shape, 0.1))
    for p in proj:
        assert list(p.probabilities) == list(scale.categories)
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
        assert all(0.0 <= v <= 1.0 for v in p.probabilities.values())
        assert p.grade == max(p.probabilities, key=p.probabilities.__getitem__)
    assert [p.grade for p in proj[: len(grades)]] == grades
    assert proj[-1].grade == grades[-1]
    assert proj[-2].grade == (scale.below_lowest or grades[0])


def test_missing_grades_follow_the_layout() -> None:
    scale = custom_scale("eight", ["F", "E", "D", "D+", "C", "C+", "B", "A"])  # equal spacing
    # anchors only at D (index 2) and B (index 6): one logit per grade step
    cuts = fit_cut_points(scale, np.array([0.0, 4.0]), ["D", "B"])
    np.testing.assert_allclose(cuts.centres, np.arange(-2.0, 6.0), atol=1e-9)
    np.testing.assert_allclose(cuts.cuts, np.arange(-1.5, 5.0), atol=1e-9)
    grades = [p.grade for p in project_grades(cuts, np.array([-5.0, 1.1, 2.0, 9.0]), np.zeros(4))]
    assert grades == ["F", "D+", "C", "A"]


def test_priors_shape_the_bands() -> None:
    scale = get_scale("swedish_8_anchor")
    cuts = fit_cut_points(scale, np.array([-1.0, 1.0, 2.0]), ["D", "C", "B"])
    widths = np.diff(cuts.cuts)
    # bands are those of a normal population with the scale's shares, not equal steps
    from scipy.special import ndtri

    expected = np.diff(ndtri(np.cumsum(scale.priors)[:-1]))  # type: ignore[arg-type]
    np.testing.assert_allclose(widths / widths.sum(), expected / expected.sum(), atol=1e-9)
    assert np.all(widths > 0) and widths.std() > 0.01 * widths.mean()


def test_anchor_se_undoes_prior_shrinkage() -> None:
    scale = custom_scale("abc", ["a", "b", "c"])
    plain = fit_cut_points(scale, np.array([-1.0, 0.0, 1.0]), ["a", "b", "c"], anchor_se=np.full(3, 0.5), prior_sd=None)
    unshrunk = fit_cut_points(scale, np.array([-1.0, 0.0, 1.0]), ["a", "b", "c"], anchor_se=np.full(3, 0.5))
    assert unshrunk.cuts[1] - unshrunk.cuts[0] > plain.cuts[1] - plain.cuts[0]
    assert np.all(unshrunk.cut_se > 0)


def test_inverted_anchors_pooled_not_crashing() -> None:
    scale = get_scale("eng5_np_national_9_step")
    cuts = fit_cut_points(scale, np.array([0.0, 2.0, 1.8, 4.0]), ["2", "4", "5", "7"])
    assert np.all(np.diff(cuts.cuts) > 0)
    with pytest.raises(GradingError, match="separate"):
        fit_cut_points(scale, np.array([3.0, 1.0]), ["2", "7"])


def test_one_poorly_measured_anchor_does_not_flip_the_slope() -> None:
    """Three well-measured anchors and a grade-1 anchor judged once, an upset win over the
    best essay (fitted values from /tmp/review_cj/grade_unweighted.py). De-shrunk, that
    anchor sits at 6.2 +- 2.3: an unweighted first pass gave a negative slope and raised,
    although the 1/SE^2-weighted fit separates the grades."""
    scale = get_scale("eng5_np_national_9_step")
    theta = np.array([-2.21, -0.34, 1.55, 2.66])
    se = np.array([0.77, 0.61, 0.66, 1.51])
    cuts = fit_cut_points(scale, theta, ["3", "5", "7", "1"], anchor_se=se, prior_sd=2.0, n_items=24)
    assert np.all(np.diff(cuts.cuts) > 0)
    three = fit_cut_points(scale, theta[:3], ["3", "5", "7"], anchor_se=se[:3], prior_sd=2.0, n_items=24)
    # the stray anchor widens and flattens the scale, but the middle stays put
    assert abs(cuts.cuts[4] - three.cuts[4]) < 1.0
    # well-measured anchors in the wrong order still raise
    with pytest.raises(GradingError, match="separate"):
        fit_cut_points(scale, np.array([1.5, -1.5, 0.1]), ["3", "7", "5"], anchor_se=np.full(3, 0.3),
                       prior_sd=2.0, n_items=24)


def test_anchor_errors() -> None:
    scale = get_scale("eng5_np_legacy_9_step")
    with pytest.raises(GradingError, match="'G'"):
        validate_anchor_grades(scale, ["F+", "G"])
    validate_anchor_grades(scale, ["F"])  # below_lowest is a grade an anchor may carry
    with pytest.raises(GradingError, match="at least 2 anchors"):
        fit_cut_points(scale, np.array([0.0]), ["B"])
    with pytest.raises(GradingError, match="distinct"):
        fit_cut_points(scale, np.array([0.0, 1.0]), ["B", "B"])
    with pytest.raises(GradingError):
        fit_cut_points(scale, np.array([0.0, 1.0, 2.0]), ["B", "A"])


def test_probabilities_follow_uncertainty() -> None:
    scale = custom_scale("abc", ["a", "b", "c"])
    cuts = fit_cut_points(scale, np.array([-2.0, 0.0, 2.0]), ["a", "b", "c"])
    sharp = grade_probabilities(cuts, np.array([0.0]), np.array([0.01]))[0]
    vague = grade_probabilities(cuts, np.array([0.0]), np.array([3.0]))[0]
    assert sharp[1] > vague[1]
    assert vague[0] == pytest.approx(vague[2], abs=1e-9)
    np.testing.assert_allclose(grade_probabilities(cuts, np.zeros(3), np.ones(3)).sum(axis=1), 1.0)


def test_non_finite_abilities_or_ses_are_refused() -> None:
    """NaN compares false with every cut, so it used to come out as a certain grade."""
    scale = get_scale("swedish_8_anchor")
    cuts = fit_cut_points(scale, np.array([-2.0, 0.0, 2.0]), ["E", "C", "A"])
    for theta, se in ((np.nan, 1.0), (np.inf, 1.0), (0.0, np.nan), (0.0, np.inf), (0.0, -1.0)):
        with pytest.raises(GradingError):
            project_grades(cuts, np.array([0.5, theta]), np.array([1.0, se]))
        with pytest.raises(GradingError):
            grade_probabilities(cuts, np.array([theta]), np.array([se]))
    with pytest.raises(GradingError, match="anchor SEs"):
        fit_cut_points(scale, np.array([-1.0, 1.0]), ["E", "A"], anchor_se=np.array([np.nan, 0.5]))
    assert project_grades(cuts, np.array([0.0]), np.array([0.0]))[0].grade in scale.categories


def test_common_shift_counted_once() -> None:
    """Every fitted ability carries the scale's common shift (prior_sd^2 / n_items); cut
    points placed from anchors carry it too, whole, and it cancels in theta - cut."""
    scale = get_scale("eng5_np_legacy_9_step")
    grades = ["F+", "E-", "D-", "D+", "C-", "C+", "B", "A"]
    theta = np.array([-3.0, -2.2, -0.7, 0.1, 0.8, 1.6, 2.4, 3.2])
    se = np.full(8, 0.5)
    plain = fit_cut_points(scale, theta, grades, anchor_se=se)  # shift unknown
    shifted = fit_cut_points(scale, theta, grades, anchor_se=se, n_items=32)
    s2 = 4.0 / 32
    k = 1.0 / (1.0 - 0.25 / 4.0)  # each anchor's de-shrinking factor: the shift scales with it
    assert plain.shared_cov is not None and np.all(plain.shared_cov == 0.0)
    assert shifted.shared_cov is not None
    np.testing.assert_allclose(shifted.shared_cov, s2 * k, rtol=1e-6)
    np.testing.assert_allclose(shifted.cuts, plain.cuts)
    # The least-squares fit averages independent noise over 8 anchors; the shift does not
    # average away, so the cut SEs grow by (1 - sum of squared weights) * s2 * k^2.
    assert np.all(shifted.cut_se > plain.cut_se)
    assert np.all(shifted.cut_se**2 - plain.cut_se**2 < s2 * k**2 + 1e-12)
    # An essay's theta - cut variance: se^2 + cut_se^2 - 2 * shared_cov.
    p_plain = grade_probabilities(plain, np.array([0.3]), np.array([0.6]))
    p_shift = grade_probabilities(shifted, np.array([0.3]), np.array([0.6]))
    assert p_shift.max() > p_plain.max()  # the shared error no longer widens the projection


def test_banked_anchors_are_taken_as_given() -> None:
    scale = custom_scale("abc", ["a", "b", "c"])
    theta, se = np.array([-1.0, 0.0, 1.0]), np.full(3, 0.5)
    banked = fit_cut_points(scale, theta, ["a", "b", "c"], anchor_se=se, n_items=20, fixed=np.ones(3, dtype=bool))
    plain = fit_cut_points(scale, theta, ["a", "b", "c"], anchor_se=se, prior_sd=None)
    # no de-shrinking and no common shift: the same placement as unshrunk values
    np.testing.assert_allclose(banked.cuts, plain.cuts)
    np.testing.assert_allclose(banked.cut_se, plain.cut_se)
    assert not np.any(banked.shared_cov)
    mixed = fit_cut_points(scale, theta, ["a", "b", "c"], anchor_se=se, fixed=[True, True, False])
    assert mixed.cuts[1] > banked.cuts[1]  # only the fitted top anchor is de-shrunk upwards
    with pytest.raises(GradingError, match="fixed"):
        fit_cut_points(scale, theta, ["a", "b", "c"], anchor_se=se, fixed=[True, False])
    with pytest.raises(GradingError, match="SEs"):
        fit_cut_points(scale, theta, ["a", "b", "c"], fixed=[True, True, True])


def test_band_spread_is_the_population_inside_the_band() -> None:
    from scipy.stats import truncnorm

    from cj.grading import _band_variances

    scale = get_scale("swedish_8_anchor")
    _, bounds = grade_scores(scale)
    edges = np.concatenate([[-np.inf], bounds, [np.inf]])
    expected = [truncnorm(lo, hi).var() for lo, hi in zip(edges[:-1], edges[1:])]
    np.testing.assert_allclose(_band_variances(scale, bounds), expected, rtol=1e-9)
    # the open top band (the top 5%) is a tail: wider than its neighbour's width suggests
    assert np.sqrt(expected[-1]) > 1.5 * (bounds[-1] - bounds[-2]) / np.sqrt(12)
    # equal layouts: width^2 / 12 throughout
    eng5 = get_scale("eng5_np_legacy_9_step")
    _, eb = grade_scores(eng5)
    np.testing.assert_allclose(_band_variances(eng5, eb), np.full(eb.shape[0] + 1, 1.0 / 12))
