"""Event and record models shared by every cjflow component: the product's contract."""

from schemas.envelope import Envelope, deterministic_id, utc_now
from schemas.events import (
    AssessmentResult,
    BatchOpened,
    BatchSettings,
    BatchStatus,
    ComparisonRequested,
    DeadLetter,
    ErrorKind,
    EssayResult,
    EssaySubmitted,
    GradeScaleSpec,
    Judgement,
    ModelUsage,
    PresentedEssay,
    ResourceUsage,
    TokenUsage,
    Winner,
)
from schemas.topics import Topics

__all__ = [
    "AssessmentResult",
    "BatchOpened",
    "BatchSettings",
    "BatchStatus",
    "ComparisonRequested",
    "DeadLetter",
    "Envelope",
    "ErrorKind",
    "EssayResult",
    "EssaySubmitted",
    "GradeScaleSpec",
    "Judgement",
    "ModelUsage",
    "PresentedEssay",
    "ResourceUsage",
    "TokenUsage",
    "Topics",
    "Winner",
    "deterministic_id",
    "utc_now",
]
