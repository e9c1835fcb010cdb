"""The events of the cjflow topology, one pydantic model each (see docs/events.md)."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from schemas.envelope import Envelope, deterministic_id

Winner = Literal["A", "B", "error"]
MAX_ESSAY_CHARS = 60_000
# Essays per batch that cjflow grades: its result (about 0.5 KB per essay) must fit one Kafka
# message (flows/kafka_io.py MAX_MESSAGE_BYTES, 16 MiB). Larger batches are dead-lettered by
# the batch operator; the schema keeps its v1 bound.
MAX_BATCH_ESSAYS = 10_000
# A rubric id names a file in the judge workers' rubric folder: a plain name, never a path.
RUBRIC_ID = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$"


def _escape_nul(limit: int) -> Any:
    """A before-validator for text cjflow writes itself, which may carry NUL from a judge, an
    error or bad input: Postgres text cannot hold it, so it is escaped (then cut to the
    field's `limit`, since escaping lengthens it) rather than the record lost. (Input with
    NUL is dead-lettered at decoding, `operators/codec.py`.)"""

    def escape(value: object) -> object:
        return value.replace("\x00", "\\x00")[:limit] if isinstance(value, str) else value

    return escape


class ErrorKind(StrEnum):
    """Why a judgement failed: a closed set shared by judges, operators and sinks."""

    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    INVALID_OUTPUT = "invalid_output"
    MAX_TOKENS = "max_tokens"
    REFUSED = "refused"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    DEADLINE = "deadline"
    JUDGE_ERROR = "judge_error"


# Failures about the pair itself: the judge refused it, the provider rejected the request, or
# the answer never fit. The assessment counts such a pair as asked (and failed for good);
# a bundle failing as a whole with one of them is re-judged item by item, since one pair may
# be the cause. Other kinds (outages, a bad key, a broken plug-in) say nothing about the pair.
PAIR_KINDS = frozenset({ErrorKind.REFUSED, ErrorKind.BAD_REQUEST, ErrorKind.MAX_TOKENS, ErrorKind.INVALID_OUTPUT})


class BatchStatus(StrEnum):
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GradeScaleSpec(_Model):
    """A custom grade scale given inline (built-in scales are named instead)."""

    # Lengths are the database columns' (sinks/tables.py): a longer value would only fail there.
    name: str = Field(min_length=1, max_length=100)
    grades: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        min_length=2, description="Grades from lowest to highest."
    )
    below_lowest: str | None = Field(default=None, min_length=1, max_length=50)
    priors: list[float] | None = None


class BatchSettings(_Model):
    """How one batch is assessed. Defaults suit a class-sized batch."""

    budget: int = Field(default=350, ge=1, description="Maximum valid comparisons.")
    max_mean_se: float | None = Field(default=0.5, gt=0, description="Precision target: mean SE.")
    min_ssr: float | None = Field(default=None, ge=0, le=1, description="Precision target: SSR.")
    min_per_essay: int = Field(default=6, ge=1, description="Valid comparisons per essay first.")
    max_repeats: int = Field(default=2, ge=1, description="Uses of one pair, positions swapped.")
    in_flight: int = Field(default=8, ge=1, le=10_000, description="Comparisons in flight.")
    pairing: Literal["adaptive", "random"] = "adaptive"
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Seeds the pairing's random choices.")
    max_attempts: int = Field(default=3, ge=1, description="Attempts per comparison.")
    comparison_timeout_s: float = Field(default=300.0, gt=0, le=86_400, description="Deadline per attempt.")
    judge_provider: str = Field(default="offline", min_length=1, max_length=100)
    judge_model: str | None = Field(default=None, max_length=200)
    temperature: float | None = None
    rubric_id: str = Field(default="default", pattern=RUBRIC_ID)


class BatchOpened(Envelope):
    """Opens a batch: the essays follow as `essay.submitted` events, same key."""

    event_type: Literal["batch.opened"] = "batch.opened"
    expected_essays: int = Field(ge=2, le=100_000)
    grade_scale: Annotated[str, Field(max_length=100)] | GradeScaleSpec | None = Field(
        default=None, description="Built-in scale name or an inline custom scale."
    )
    assignment: str = Field(default="", max_length=20_000, description="The task, shown to the judge.")
    assignment_id: str | None = None
    callback_topic: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="A Kafka topic that gets a copy of the result (a legal topic name).",
    )
    settings: BatchSettings = BatchSettings()

    @classmethod
    def create(cls, batch_id: str, expected_essays: int, **kw: object) -> BatchOpened:
        return cls(
            event_id=deterministic_id("batch.opened", batch_id),
            batch_id=batch_id,
            expected_essays=expected_essays,
            **kw,  # type: ignore[arg-type]
        )


class EssaySubmitted(Envelope):
    """One essay of a batch; anchors are essays with a known grade."""

    event_type: Literal["essay.submitted"] = "essay.submitted"
    essay_id: str = Field(min_length=1, max_length=200)
    text: str = Field(description="Essay text; must be non-blank.")
    anchor_grade: str | None = Field(default=None, min_length=1, max_length=50)
    anchor_value: float | None = Field(
        default=None,
        description="Banked ability of an anchor on the logit scale of an earlier calibration with the same "
        "judge (e.g. its score there); puts the batch on that scale. Needs anchor_grade and anchor_value_se.",
    )
    anchor_value_se: float | None = Field(default=None, description="Standard error of anchor_value (> 0).")

    @model_validator(mode="after")
    def _banked_value_is_complete(self) -> EssaySubmitted:
        if self.anchor_value is None and self.anchor_value_se is None:
            return self
        if self.anchor_value is None or self.anchor_value_se is None:
            raise ValueError("anchor_value and anchor_value_se go together")
        if self.anchor_grade is None:
            raise ValueError("anchor_value needs an anchor_grade")
        # Logit-scale values: |value| beyond 50 or an SE outside [0.001, 50] is a unit mistake,
        # and would break the fit (a prior of SE 1e-160 is singular).
        if not (math.isfinite(self.anchor_value) and abs(self.anchor_value) <= 50):
            raise ValueError("anchor_value must be a logit-scale ability within [-50, 50]")
        if not (math.isfinite(self.anchor_value_se) and 0.001 <= self.anchor_value_se <= 50):
            raise ValueError("anchor_value_se must be within [0.001, 50]")
        return self

    @classmethod
    def create(cls, batch_id: str, essay_id: str, text: str, **kw: object) -> EssaySubmitted:
        return cls(
            event_id=deterministic_id("essay.submitted", batch_id, essay_id),
            batch_id=batch_id,
            essay_id=essay_id,
            text=text,
            **kw,  # type: ignore[arg-type]
        )


class PresentedEssay(_Model):
    essay_id: str = Field(max_length=200)
    text: str


class ComparisonRequested(Envelope):
    """Ask a judge which of two essays is better; positions are as presented."""

    event_type: Literal["comparison.requested"] = "comparison.requested"
    comparison_id: str = Field(min_length=1, max_length=250)
    attempt: int = Field(ge=1)
    essay_a: PresentedEssay
    essay_b: PresentedEssay
    assignment: str = ""
    rubric_id: str = Field(default="default", pattern=RUBRIC_ID)
    # as bounded as the judgement that answers it (Judgement.provider, .model)
    judge_provider: str = Field(default="offline", min_length=1, max_length=100)
    judge_model: str | None = Field(default=None, max_length=200)
    temperature: float | None = None
    deadline: AwareDatetime

    @classmethod
    def create(cls, batch_id: str, comparison_id: str, attempt: int, **kw: object) -> ComparisonRequested:
        return cls(
            event_id=deterministic_id("comparison.requested", comparison_id, attempt),
            batch_id=batch_id,
            comparison_id=comparison_id,
            attempt=attempt,
            **kw,  # type: ignore[arg-type]
        )


class TokenUsage(_Model):
    input: int = Field(default=0, ge=0)
    output: int = Field(default=0, ge=0)
    cache_read: int = Field(default=0, ge=0)
    cache_write: int = Field(default=0, ge=0)


class Judgement(Envelope):
    """A judge's answer to one attempt of one comparison."""

    event_type: Literal["comparison.judged"] = "comparison.judged"
    comparison_id: str = Field(min_length=1, max_length=250)
    attempt: int = Field(ge=1)
    essay_a_id: str = Field(max_length=200)
    essay_b_id: str = Field(max_length=200)
    winner: Winner
    error_kind: ErrorKind | None = None
    error_detail: str | None = Field(default=None, max_length=500)
    confidence: float | None = Field(default=None, ge=0, le=1)
    justification: str = Field(default="", max_length=1000)
    provider: str = Field(max_length=100)
    model: str = Field(max_length=200)
    prompt_sha256: str | None = Field(default=None, max_length=64)
    tokens: TokenUsage = TokenUsage()
    cost_usd: float = Field(default=0.0, ge=0)
    latency_ms: float = Field(default=0.0, ge=0)

    _nul_justification = field_validator("justification", mode="before")(_escape_nul(1000))
    _nul_detail = field_validator("error_detail", mode="before")(_escape_nul(500))

    @classmethod
    def for_request(cls, request: ComparisonRequested, **kw: object) -> Judgement:
        """A judgement answering `request`, with its deterministic id."""
        return cls(
            event_id=deterministic_id("comparison.judged", request.comparison_id, request.attempt),
            batch_id=request.batch_id,
            correlation_id=request.correlation_id,
            comparison_id=request.comparison_id,
            attempt=request.attempt,
            essay_a_id=request.essay_a.essay_id,
            essay_b_id=request.essay_b.essay_id,
            **kw,  # type: ignore[arg-type]
        )

    @property
    def is_valid(self) -> bool:
        return self.winner in ("A", "B")


class EssayResult(_Model):
    essay_id: str
    rank: int = Field(ge=1)
    score: float
    se: float
    infit: float | None = None
    outfit: float | None = None
    comparisons: int
    wins: int
    is_anchor: bool = False
    anchor_grade: str | None = None
    projected_grade: str | None = None
    grade_probabilities: dict[str, float] | None = None


class ModelUsage(_Model):
    provider: str
    model: str
    calls: int = 0
    tokens: TokenUsage = TokenUsage()
    cost_usd: float = 0.0


class AssessmentResult(Envelope):
    """The one result of a batch. Its id depends on the batch id only."""

    event_type: Literal["assessment.result"] = "assessment.result"
    status: BatchStatus
    stop_reason: str
    essays: list[EssayResult]
    grade_scale: str | None = None
    grade_cut_points: list[float] | None = None
    reliability_ssr: float | None = None
    position_effect: float | None = None
    position_effect_se: float | None = None
    comparisons_valid: int
    comparisons_errored: int
    errors_by_kind: dict[str, int] = {}
    last_error: str | None = Field(
        default=None, max_length=600,
        description="The latest judge error of the batch ('kind: detail'), so a failing judge says why.",
    )
    grading_error: str | None = Field(
        default=None, max_length=600,
        description="Why grades were not projected although the batch has a grade scale (e.g. too few anchors).",
    )
    completion_target: int = Field(description="min(budget, repeats x n(n-1)/2)")
    duration_s: float = Field(ge=0)
    cost_usd: float = 0.0
    usage: list[ModelUsage] = []
    strays: int = 0
    duplicates: int = 0
    callback_topic: str | None = Field(
        default=None, description="The batch's callback topic; the result is published there too."
    )

    @staticmethod
    def id_for(batch_id: str) -> str:
        return deterministic_id("assessment.result", batch_id)


class ResourceUsage(Envelope):
    """LLM usage of one finished batch, per provider and model."""

    event_type: Literal["resource.usage"] = "resource.usage"
    usage: list[ModelUsage]

    @staticmethod
    def id_for(batch_id: str) -> str:
        return deterministic_id("resource.usage", batch_id)


class DeadLetter(Envelope):
    """Input that could not be used, kept whole with where it came from and why."""

    event_type: Literal["deadletter"] = "deadletter"
    reason: str = Field(max_length=2000)
    source: str = Field(description="Topic or component the input came from.")
    partition: int | None = None
    offset: int | None = None
    original: str = Field(description="The original bytes, base64.")
    original_event_type: str | None = None

    # The key, reason and type come from the bad input itself: a NUL there must not make the
    # dead letter unstorable too.
    _nul_batch = field_validator("batch_id", mode="before")(_escape_nul(200))
    _nul_reason = field_validator("reason", mode="before")(_escape_nul(2000))
    _nul_source = field_validator("source", mode="before")(_escape_nul(250))  # the columns' widths
    _nul_type = field_validator("original_event_type", mode="before")(_escape_nul(100))

    @classmethod
    def create(
        cls, batch_id: str | None, reason: str, source: str, original: bytes, **kw: object
    ) -> DeadLetter:
        import base64

        return cls(
            event_id=deterministic_id("deadletter", source, kw.get("partition"), kw.get("offset"), original, reason),
            batch_id=batch_id or "-",
            reason=reason[:2000],
            source=source,
            original=base64.b64encode(original).decode(),
            **kw,  # type: ignore[arg-type]
        )


InboundEvent = Annotated[
    BatchOpened | EssaySubmitted | Judgement, Field(discriminator="event_type")
]
INBOUND = TypeAdapter(InboundEvent)
REQUEST_EVENT = TypeAdapter(
    Annotated[BatchOpened | EssaySubmitted, Field(discriminator="event_type")]
)

ALL_EVENTS: dict[str, type[Envelope]] = {
    "batch_opened": BatchOpened,
    "essay_submitted": EssaySubmitted,
    "comparison_requested": ComparisonRequested,
    "judgement": Judgement,
    "assessment_result": AssessmentResult,
    "resource_usage": ResourceUsage,
    "dead_letter": DeadLetter,
}
