"""SQLAlchemy 2 Core tables. Every row has a deterministic key, so writes are upserts and a
replay after recovery changes nothing."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

batches = Table(
    "batches",
    metadata,
    Column("batch_id", String(200), primary_key=True),
    Column("event_id", String(36), nullable=False),
    Column("correlation_id", String(200)),
    Column("expected_essays", Integer, nullable=False),
    Column("grade_scale", String(100)),
    Column("assignment", Text, nullable=False, default=""),
    Column("settings", JSON, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
)

essays = Table(
    "essays",
    metadata,
    Column("batch_id", String(200), ForeignKey("batches.batch_id"), primary_key=True),
    Column("essay_id", String(200), primary_key=True),
    Column("event_id", String(36), nullable=False),
    Column("text", Text, nullable=False),
    Column("anchor_grade", String(50)),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
)

judgements = Table(
    "judgements",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("batch_id", String(200), ForeignKey("batches.batch_id"), nullable=False),
    Column("comparison_id", String(250), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("essay_a_id", String(200), nullable=False),
    Column("essay_b_id", String(200), nullable=False),
    Column("winner", String(5), nullable=False),
    Column("error_kind", String(40)),
    Column("confidence", Float),
    Column("justification", Text, nullable=False, default=""),
    Column("provider", String(50), nullable=False),
    Column("model", String(200), nullable=False),
    Column("prompt_sha256", String(64)),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cache_read_tokens", Integer, nullable=False, default=0),
    Column("cache_write_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("judged_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("winner IN ('A', 'B', 'error')", name="ck_judgements_winner"),
    Index("ix_judgements_batch", "batch_id"),
)

essay_scores = Table(
    "essay_scores",
    metadata,
    Column("batch_id", String(200), ForeignKey("batches.batch_id"), primary_key=True),
    Column("essay_id", String(200), primary_key=True),
    Column("result_event_id", String(36), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("score", Float, nullable=False),
    Column("se", Float, nullable=False),
    Column("infit", Float),
    Column("outfit", Float),
    Column("comparisons", Integer, nullable=False),
    Column("wins", Integer, nullable=False),
    Column("is_anchor", Boolean, nullable=False, default=False),
    Column("anchor_grade", String(50)),
    Column("projected_grade", String(50)),
    Column("grade_probabilities", JSON),
)

batch_results = Table(
    "batch_results",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("batch_id", String(200), ForeignKey("batches.batch_id"), nullable=False, unique=True),
    Column("status", String(20), nullable=False),
    Column("stop_reason", String(50), nullable=False),
    Column("reliability_ssr", Float),
    Column("position_effect", Float),
    Column("comparisons_valid", Integer, nullable=False),
    Column("comparisons_errored", Integer, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSON, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("batch_id", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", String(250), nullable=False),
    Column("partition", Integer),
    Column("offset", Integer),
    Column("original", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
