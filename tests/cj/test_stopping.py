from __future__ import annotations

import numpy as np
import pytest

from cj.model import fit_bt
from cj.stopping import StopReason, StopRule, completion_target, precision_met, stop_reason


def _fit(n: int, se: float) -> object:
    base = fit_bt(n, np.array([], int), np.array([], int), np.array([], bool))
    return type(base)(**{**base.__dict__, "theta": np.linspace(-2, 2, n), "se": np.full(n, se), "ssr": 0.9})


def test_completion_target_caps_at_pairs() -> None:
    assert completion_target(5, StopRule(budget=60, max_repeats=1)) == 10
    assert completion_target(5, StopRule(budget=60, max_repeats=2)) == 20
    assert completion_target(100, StopRule(budget=350)) == 350
    assert completion_target(2, StopRule(budget=10)) == 2


def test_precision_met_needs_floor_and_target() -> None:
    rule = StopRule(budget=100, max_mean_se=0.5, min_per_essay=3)
    n = 4
    good = _fit(n, 0.4)
    assert stop_reason(rule, n, np.array([3, 3, 4, 5]), 8, good, True) is StopReason.PRECISION_MET
    assert stop_reason(rule, n, np.array([2, 3, 4, 5]), 8, good, True) is None
    assert stop_reason(rule, n, np.array([3, 3, 4, 5]), 8, _fit(n, 0.6), True) is None
    assert stop_reason(rule, n, np.array([3, 3, 4, 5]), 8, None, True) is None


def test_ssr_target_and_both() -> None:
    counts = np.full(4, 6)
    fit = _fit(4, 0.4)  # ssr 0.9
    assert precision_met(StopRule(budget=9, max_mean_se=None, min_ssr=0.8), counts, fit)
    assert not precision_met(StopRule(budget=9, max_mean_se=None, min_ssr=0.95), counts, fit)
    assert not precision_met(StopRule(budget=9, max_mean_se=0.3, min_ssr=0.8), counts, fit)
    assert not precision_met(StopRule(budget=9, max_mean_se=None, min_ssr=None), counts, fit)


def test_no_pairs_left_and_budget() -> None:
    rule = StopRule(budget=15, max_mean_se=0.01, max_repeats=2)
    fit = _fit(5, 1.0)
    counts = np.full(5, 4)
    assert stop_reason(rule, 5, counts, 10, fit, False) is StopReason.NO_PAIRS_LEFT
    assert stop_reason(rule, 5, counts, 15, fit, True) is StopReason.BUDGET_SPENT
    assert stop_reason(rule, 5, counts, 14, fit, True) is None
    # every allowed use of every pair judged counts as no pairs left, whatever the caller says
    assert stop_reason(StopRule(budget=50, max_mean_se=0.01, max_repeats=2), 5, counts, 20, fit, True) is (
        StopReason.NO_PAIRS_LEFT
    )


def test_errors_never_count() -> None:
    # the caller passes valid counts only: 3 valid of 10 issued is not done
    rule = StopRule(budget=10)
    assert stop_reason(rule, 5, np.array([1, 1, 2, 1, 1]), 3, _fit(5, 1.0), True) is None


def test_reason_values_are_stable() -> None:
    assert [r.value for r in StopReason] == ["precision_met", "no_informative_pairs", "budget_spent"]


def test_rule_validation() -> None:
    with pytest.raises(ValueError):
        StopRule(budget=-1)
    with pytest.raises(ValueError):
        StopRule(budget=5, max_repeats=0)
