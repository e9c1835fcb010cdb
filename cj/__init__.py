"""Comparative Judgement maths: Bradley-Terry fit, pairing, stopping, grade projection.

Pure numpy/scipy, no I/O: every function is testable with a seed and a few lines.
"""

from cj.grading import CutPoints, GradeProjection, GradingError, fit_cut_points, project_grades, validate_anchor_grades
from cj.model import Fit, fit_bt, scale_separation_reliability
from cj.pairing import STRATEGIES, select_pairs
from cj.scales import SCALES, GradeScale, custom_scale, get_scale
from cj.stopping import StopReason, StopRule, completion_target, stop_reason

__all__ = [
    "SCALES",
    "STRATEGIES",
    "CutPoints",
    "Fit",
    "GradeProjection",
    "GradeScale",
    "GradingError",
    "StopReason",
    "StopRule",
    "completion_target",
    "custom_scale",
    "fit_bt",
    "fit_cut_points",
    "get_scale",
    "project_grades",
    "scale_separation_reliability",
    "select_pairs",
    "stop_reason",
    "validate_anchor_grades",
]
