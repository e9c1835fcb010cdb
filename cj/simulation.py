"""Simulated judges with known abilities: the truth test for fitting, pairing and grading.

A judge model is `fn(theta_first, theta_second, rng) -> bool` (True when the essay shown
first wins); `JUDGE_MODELS` holds the built-in ones, and `bench/` accepts outside ones by
`module:callable`. Vectorised variants decide many comparisons at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit, ndtr

__all__ = [
    "JUDGE_MODELS",
    "JudgeModel",
    "judge_lapse",
    "judge_logistic",
    "judge_many",
    "judge_position_bias",
    "judge_thurstone",
    "random_pairs",
]

JudgeModel = Callable[[float, float, np.random.Generator], bool]

POSITION_BIAS = 0.3
LAPSE_RATE = 0.10


def _p_logistic(d: np.ndarray) -> np.ndarray:
    return np.asarray(expit(d), dtype=float)


def _p_position(d: np.ndarray) -> np.ndarray:
    return np.asarray(expit(d + POSITION_BIAS), dtype=float)


def _p_lapse(d: np.ndarray) -> np.ndarray:
    # With probability LAPSE_RATE the judge picks at random.
    return (1.0 - LAPSE_RATE) * np.asarray(expit(d), dtype=float) + LAPSE_RATE * 0.5


def _p_thurstone(d: np.ndarray) -> np.ndarray:
    # Probit with the logistic's scale matched (sd 1.7 ~ pi/sqrt(3) slope-matched).
    return np.asarray(ndtr(d / 1.7), dtype=float)


_PROBS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "logistic": _p_logistic,
    "position_bias": _p_position,
    "lapse": _p_lapse,
    "thurstone": _p_thurstone,
}


def _scalar(prob: Callable[[np.ndarray], np.ndarray]) -> JudgeModel:
    def judge(theta_first: float, theta_second: float, rng: np.random.Generator) -> bool:
        return bool(rng.random() < float(prob(np.asarray(theta_first - theta_second))))

    judge.__doc__ = f"Simulated judge ({prob.__name__.removeprefix('_p_')}): True when the essay shown first wins."
    judge.win_probability = prob  # type: ignore[attr-defined]  # lets judge_many vectorise
    return judge


judge_logistic = _scalar(_p_logistic)
judge_position_bias = _scalar(_p_position)
judge_lapse = _scalar(_p_lapse)
judge_thurstone = _scalar(_p_thurstone)

JUDGE_MODELS: dict[str, JudgeModel] = {
    "logistic": judge_logistic,
    "position_bias": judge_position_bias,
    "lapse": judge_lapse,
    "thurstone": judge_thurstone,
}


def judge_many(
    judge: JudgeModel, theta: np.ndarray, first: np.ndarray, second: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Outcomes (first won) of many comparisons; vectorised for the built-in judges."""
    prob = getattr(judge, "win_probability", None)
    first = np.asarray(first, dtype=np.intp)
    second = np.asarray(second, dtype=np.intp)
    if prob is not None:
        return rng.random(first.shape[0]) < prob(theta[first] - theta[second])
    return np.array([bool(judge(float(theta[a]), float(theta[b]), rng)) for a, b in zip(first, second)], dtype=bool)


def random_pairs(n: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """m uniformly random ordered pairs of distinct essays (repeats allowed)."""
    first = rng.integers(0, n, m)
    second = (first + rng.integers(1, n, m)) % n
    return first, second
