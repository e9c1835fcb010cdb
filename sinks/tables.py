"""SQLAlchemy 2 Core tables: the one definition of the cjflow schema.

The Alembic migrations (sinks/migrations) build exactly this schema on Postgres, and the
embedded SQLite database is created from this metadata; a test compares the two.
Every row has a deterministic key, so writes are upserts and a replay after recovery
changes nothing. See docs/storage.md for the diagram and the downstream queries.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

# Constraint names are fixed by convention so migrations can refer to them by name.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

#: JSONB on Postgres (indexable, compact), JSON text elsewhere.
Json = JSON().with_variant(JSONB(), "postgresql")
ID = String(36)  # event ids: UUIDv5 strings
KEY = String(200)  # batch and essay ids (the event schema caps them at 200)
TS = DateTime(timezone=True)

batches = Table(
    "batches",
    metadata,
    Column("batch_id", KEY, primary_key=True),
    Column("event_id", ID, nullable=False),
    Column("correlation_id", String(200)),
    Column("expected_essays", Integer, nullable=False),
    Column("grade_scale", String(100)),
    Column("assignment", Text, nullable=False, default=""),
    Column("judge_provider", String(100), nullable=False),
    Column("judge_model", String(200)),
    Column("settings", Json, nullable=False),
    Column("opened_at", TS, nullable=False),
    CheckConstraint("expected_essays >= 2", name="expected_essays"),
    Index(None, "correlation_id"),
    Index(None, "opened_at"),
)

essays = Table(
    "essays",
    metadata,
    Column("batch_id", KEY, ForeignKey("batches.batch_id", ondelete="CASCADE"), primary_key=True),
    Column("essay_id", KEY, primary_key=True),
    Column("event_id", ID, nullable=False),
    Column("text", Text, nullable=False),
    Column("anchor_grade", String(50)),
    # an anchor's banked scale value and its SE (--anchors value,se): inputs of the batch,
    # compared on a rerun; NULL when not banked (and in rows written before migration 0004)
    Column("anchor_value", Float),
    Column("anchor_value_se", Float),
    Column("submitted_at", TS, nullable=False),
    CheckConstraint("length(essay_id) > 0", name="essay_id"),
)

# One row per comparison (a pair as presented), upserted from its judgements: the row
# follows the latest attempt (attempts only grow, so the upsert is idempotent).
comparisons = Table(
    "comparisons",
    metadata,
    Column("comparison_id", String(250), primary_key=True),
    # no FK to batches: the two FKs to essays (batch_id, essay_id) already imply the batch
    Column("batch_id", KEY, nullable=False),
    Column("essay_a_id", KEY, nullable=False),
    Column("essay_b_id", KEY, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("winner", String(5), nullable=False),
    Column("winner_essay_id", KEY),
    Column("error_kind", String(40)),
    Column("last_judgement_id", ID, nullable=False),
    Column("judged_at", TS, nullable=False),
    ForeignKeyConstraint(["batch_id", "essay_a_id"], ["essays.batch_id", "essays.essay_id"], ondelete="CASCADE"),
    ForeignKeyConstraint(["batch_id", "essay_b_id"], ["essays.batch_id", "essays.essay_id"], ondelete="CASCADE"),
    CheckConstraint("essay_a_id <> essay_b_id", name="distinct_essays"),
    CheckConstraint("attempts >= 1", name="attempts"),
    CheckConstraint("winner IN ('A', 'B', 'error')", name="winner"),
    CheckConstraint(
        "(winner = 'error' AND winner_essay_id IS NULL) OR "
        "(winner = 'A' AND winner_essay_id = essay_a_id) OR (winner = 'B' AND winner_essay_id = essay_b_id)",
        name="winner_essay",
    ),
    Index(None, "batch_id"),
)

judgements = Table(
    "judgements",
    metadata,
    Column("event_id", ID, primary_key=True),
    # no FK to batches (the hot path): the comparison's FKs to essays imply the batch
    Column("batch_id", KEY, nullable=False),
    Column(
        "comparison_id", String(250), ForeignKey("comparisons.comparison_id", ondelete="CASCADE"), nullable=False
    ),
    Column("attempt", Integer, nullable=False),
    Column("essay_a_id", KEY, nullable=False),
    Column("essay_b_id", KEY, nullable=False),
    Column("winner", String(5), nullable=False),
    Column("error_kind", String(40)),
    Column("confidence", Float),
    Column("justification", Text, nullable=False, default=""),
    Column("provider", String(100), nullable=False),
    Column("model", String(200), nullable=False),
    Column("prompt_sha256", String(64)),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cache_read_tokens", Integer, nullable=False, default=0),
    Column("cache_write_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("judged_at", TS, nullable=False),
    CheckConstraint("winner IN ('A', 'B', 'error')", name="winner"),
    CheckConstraint("attempt >= 1", name="attempt"),
    CheckConstraint("essay_a_id <> essay_b_id", name="distinct_essays"),
    CheckConstraint("confidence IS NULL OR (confidence >= 0 AND confidence <= 1)", name="confidence"),
    CheckConstraint(
        "input_tokens >= 0 AND output_tokens >= 0 AND cache_read_tokens >= 0 AND cache_write_tokens >= 0",
        name="tokens",
    ),
    CheckConstraint("cost_usd >= 0 AND latency_ms >= 0", name="cost_latency"),
    # one judgement per attempt; also the index behind the FK (cascades) and the join to
    # comparisons, which is how a batch's judgements are found (no batch_id index: the
    # hot table keeps two indexes only)
    Index(None, "comparison_id", "attempt", unique=True),
)

# A batch's result; its id depends on the batch id only, but the table keeps any number
# per batch (re-assessments) and "the latest" is the newest finished_at.
batch_results = Table(
    "batch_results",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("batch_id", KEY, ForeignKey("batches.batch_id", ondelete="CASCADE"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("stop_reason", String(50), nullable=False),
    Column("grade_scale", String(100)),
    Column("grade_cut_points", Json),
    Column("reliability_ssr", Float),
    Column("position_effect", Float),
    Column("comparisons_valid", Integer, nullable=False),
    Column("comparisons_errored", Integer, nullable=False),
    Column("completion_target", Integer, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("finished_at", TS, nullable=False),
    Column("payload", Json, nullable=False),
    CheckConstraint("status IN ('completed', 'partial', 'failed')", name="status"),
    CheckConstraint(
        "comparisons_valid >= 0 AND comparisons_errored >= 0 AND completion_target >= 0", name="counts"
    ),
    CheckConstraint("duration_s >= 0 AND cost_usd >= 0", name="duration_cost"),
    Index(None, "batch_id", "finished_at"),
)

# One row per essay per result; `scored_at` repeats the result's finished_at so an essay's
# score history is one index range scan.
essay_scores = Table(
    "essay_scores",
    metadata,
    Column(
        "result_event_id",
        ID,
        ForeignKey("batch_results.event_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("essay_id", KEY, primary_key=True),
    Column("batch_id", KEY, ForeignKey("batches.batch_id", ondelete="CASCADE"), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("score", Float, nullable=False),
    Column("se", Float, nullable=False),
    Column("infit", Float),
    Column("outfit", Float),
    Column("comparisons", Integer, nullable=False),
    Column("wins", Integer, nullable=False),
    Column("is_anchor", Boolean, nullable=False, default=False),
    Column("anchor_grade", String(50)),
    Column("scored_at", TS, nullable=False),
    CheckConstraint("rank >= 1", name="rank"),
    CheckConstraint("se >= 0", name="se"),
    CheckConstraint("comparisons >= 0 AND wins >= 0 AND wins <= comparisons", name="wins"),
    Index(None, "essay_id", "scored_at"),
    Index(None, "batch_id", "essay_id"),
)

# The grade an essay's score projects to (only for results with anchors and a scale).
grade_projections = Table(
    "grade_projections",
    metadata,
    Column("result_event_id", ID, primary_key=True),
    Column("essay_id", KEY, primary_key=True),
    Column("batch_id", KEY, ForeignKey("batches.batch_id", ondelete="CASCADE"), nullable=False),
    Column("grade_scale", String(100), nullable=False),
    Column("projected_grade", String(50), nullable=False),
    Column("probability", Float),
    Column("probabilities", Json, nullable=False),
    Column("anchor_grade", String(50)),
    ForeignKeyConstraint(
        ["result_event_id", "essay_id"],
        ["essay_scores.result_event_id", "essay_scores.essay_id"],
        ondelete="CASCADE",
    ),
    CheckConstraint("probability IS NULL OR (probability >= 0 AND probability <= 1)", name="probability"),
    Index(None, "batch_id"),
)

# LLM usage of a finished batch, one row per provider and model: cost per day and model.
resource_usage = Table(
    "resource_usage",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("provider", String(100), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("batch_id", KEY, ForeignKey("batches.batch_id", ondelete="CASCADE"), nullable=False),
    Column("calls", Integer, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cache_read_tokens", Integer, nullable=False),
    Column("cache_write_tokens", Integer, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("recorded_at", TS, nullable=False),
    CheckConstraint(
        "calls >= 0 AND input_tokens >= 0 AND output_tokens >= 0 AND cache_read_tokens >= 0 "
        "AND cache_write_tokens >= 0 AND cost_usd >= 0",
        name="non_negative",
    ),
    Index(None, "recorded_at"),
    Index(None, "model", "recorded_at"),
    Index(None, "batch_id"),
)

# Inputs that could not be used (by the assessment flow, or rejected by the database),
# kept whole. No foreign key: a dead letter may name a batch that does not exist.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("batch_id", KEY, nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", String(250), nullable=False),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("original", Text, nullable=False),
    Column("original_event_type", String(100)),
    Column("received_at", TS, nullable=False),
    Index(None, "batch_id"),
    Index(None, "received_at"),
)

#: Tables in foreign-key order (parents first): the order rows are written in.
WRITE_ORDER: tuple[Table, ...] = (
    batches,
    essays,
    comparisons,
    judgements,
    batch_results,
    essay_scores,
    grade_projections,
    resource_usage,
    dead_letters,
)
assert set(WRITE_ORDER) == set(metadata.tables.values())
