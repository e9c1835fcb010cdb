"""When a batch is done: precision met, no informative pair left, or budget spent.

Decided on every judgement from valid judgements only (errors never count), so a result
is out as soon as the deciding judgement arrives, not after a fixed share of a budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from cj.model import Fit
from cj.pairing import pair_capacity

__all__ = ["StopReason", "StopRule", "completion_target", "precision_met", "stop_reason"]


class StopReason(StrEnum):
    PRECISION_MET = "precision_met"
    NO_PAIRS_LEFT = "no_informative_pairs"
    BUDGET_SPENT = "budget_spent"


@dataclass(frozen=True)
class StopRule:
    """A batch's stopping rule.

    Attributes
    ----------
    budget : maximum valid comparisons.
    max_mean_se : precision target on the mean SE of theta (logits); None to ignore.
        Default 0.5: about a third of a grade band at typical CJ spreads.
    min_ssr : precision target on the scale separation reliability; None (default) to
        ignore, because adaptive pairing inflates SSR (Bramley, 2015).
    min_per_essay : valid comparisons every essay needs before precision can count as met
        (default 6; a few comparisons can look precise by luck).
    max_repeats : uses allowed per unordered pair (default 2: once each way round), which
        caps how many comparisons a small batch can use.

    Precision is met when every essay has >= `min_per_essay` valid comparisons AND every
    target that is set is met; with no target set it is never met (the batch runs until
    its pairs or budget run out).
    """

    budget: int
    max_mean_se: float | None = 0.5
    min_ssr: float | None = None
    min_per_essay: int = 6
    max_repeats: int = 2

    def __post_init__(self) -> None:
        if self.budget < 0:
            raise ValueError("budget must be >= 0")
        if self.max_repeats < 1:
            raise ValueError("max_repeats must be >= 1")
        if self.min_per_essay < 0:
            raise ValueError("min_per_essay must be >= 0")


def completion_target(n_items: int, rule: StopRule) -> int:
    """Valid comparisons at which a batch is surely done: min(budget, repeats x n(n-1)/2).

    The denominator for progress reporting; capped by the pairs that exist, so a 5-essay
    batch is not measured against a budget it can never use.
    """
    return min(rule.budget, pair_capacity(n_items, rule.max_repeats))


def precision_met(rule: StopRule, valid_per_essay: np.ndarray, fit: Fit | None) -> bool:
    """Whether the precision target(s) of `rule` are met (see `StopRule`)."""
    if fit is None or (rule.max_mean_se is None and rule.min_ssr is None):
        return False
    counts = np.asarray(valid_per_essay)
    if counts.shape[0] == 0 or int(counts.min()) < rule.min_per_essay:
        return False
    if rule.max_mean_se is not None and not float(np.mean(fit.se)) <= rule.max_mean_se:
        return False
    if rule.min_ssr is not None and not fit.ssr >= rule.min_ssr:
        return False
    return True


def stop_reason(
    rule: StopRule,
    n_items: int,
    valid_per_essay: np.ndarray,
    n_valid: int,
    fit: Fit | None,
    pairs_left: bool,
) -> StopReason | None:
    """Why the batch should stop now, or None to go on.

    Parameters
    ----------
    rule : the batch's stopping rule.
    n_items : number of essays.
    valid_per_essay : (n,) valid comparisons per essay (errors excluded).
    n_valid : valid comparisons so far (errors excluded).
    fit : a fit on those valid comparisons (None if not available: precision not met).
    pairs_left : False when no new pair can be issued (see `select_pairs`).

    Returns
    -------
    The first that holds of: PRECISION_MET, NO_PAIRS_LEFT (no pair can be issued, or every
    allowed use of every pair is judged), BUDGET_SPENT (n_valid >= budget); else None.
    """
    if precision_met(rule, valid_per_essay, fit):
        return StopReason.PRECISION_MET
    if not pairs_left or n_valid >= pair_capacity(n_items, rule.max_repeats):
        return StopReason.NO_PAIRS_LEFT
    if n_valid >= rule.budget:
        return StopReason.BUDGET_SPENT
    return None
