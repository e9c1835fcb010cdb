"""Grade scales: ordered grades (low -> high) that anchors carry and essays are projected onto."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cj.errors import GradingError

__all__ = ["SCALES", "GradeScale", "custom_scale", "get_scale"]


@dataclass(frozen=True)
class GradeScale:
    """An ordered grade scale.

    Attributes
    ----------
    name : identifier, e.g. "swedish_8_anchor".
    grades : grades from lowest to highest; anchors carry one of these.
    below_lowest : grade given to essays that fall below the lowest grade's band (e.g. "F"
        on a scale whose lowest anchor grade is "F+"); None when the lowest grade is open
        downwards.
    priors : population share of each grade (same order as `grades`), for reporting and
        simulation; projection does not use them (theta already carries a prior).
    """

    name: str
    grades: tuple[str, ...]
    below_lowest: str | None = None
    priors: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise GradingError("a grade scale needs a name")
        if len(self.grades) < 2:
            raise GradingError(f"grade scale {self.name!r} needs at least 2 grades, got {len(self.grades)}")
        if any(not isinstance(g, str) or not g for g in self.grades):
            raise GradingError(f"grade scale {self.name!r}: grades must be non-empty strings")
        if len(set(self.grades)) != len(self.grades):
            raise GradingError(f"grade scale {self.name!r} repeats a grade: {list(self.grades)}")
        if self.below_lowest is not None and self.below_lowest in self.grades:
            raise GradingError(f"grade scale {self.name!r}: below_lowest {self.below_lowest!r} is also a grade")
        if self.priors is not None:
            if len(self.priors) != len(self.grades):
                raise GradingError(
                    f"grade scale {self.name!r}: {len(self.priors)} priors for {len(self.grades)} grades"
                )
            if any(not (p >= 0) for p in self.priors) or not math.isclose(sum(self.priors), 1.0, abs_tol=1e-6):
                raise GradingError(f"grade scale {self.name!r}: priors must be >= 0 and sum to 1")

    @property
    def categories(self) -> tuple[str, ...]:
        """Every grade an essay can be given, low -> high (below_lowest first, if any)."""
        return ((self.below_lowest,) if self.below_lowest is not None else ()) + self.grades


SCALES: dict[str, GradeScale] = {
    s.name: s
    for s in (
        GradeScale(
            "swedish_8_anchor",
            ("F", "E", "D", "D+", "C", "C+", "B", "A"),
            None,
            (0.02, 0.08, 0.15, 0.20, 0.25, 0.15, 0.10, 0.05),
        ),
        GradeScale("eng5_np_legacy_9_step", ("F+", "E-", "E+", "D-", "D+", "C-", "C+", "B", "A"), "F"),
        GradeScale("eng5_np_national_9_step", tuple(str(i) for i in range(1, 10)), "0"),
    )
}


def get_scale(name: str) -> GradeScale:
    """The built-in scale called `name`; GradingError listing the known ones otherwise."""
    try:
        return SCALES[name]
    except KeyError:
        raise GradingError(f"unknown grade scale {name!r}; built-in scales: {', '.join(SCALES)}") from None


def custom_scale(
    name: str,
    grades: Sequence[str],
    below_lowest: str | None = None,
    priors: Sequence[float] | None = None,
) -> GradeScale:
    """A scale from configuration (grades low -> high); GradingError if inconsistent."""
    return GradeScale(
        name,
        tuple(grades),
        below_lowest,
        tuple(float(p) for p in priors) if priors is not None else None,
    )
