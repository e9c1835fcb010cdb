"""cjflow schema: tables, keys, foreign keys, indexes and check constraints.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Mirrors sinks/tables.py (tests/sinks/test_migrations.py checks that they agree).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('batch_id', sa.String(length=200), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('correlation_id', sa.String(length=200), nullable=True),
    sa.Column('expected_essays', sa.Integer(), nullable=False),
    sa.Column('grade_scale', sa.String(length=100), nullable=True),
    sa.Column('assignment', sa.Text(), nullable=False),
    sa.Column('judge_provider', sa.String(length=100), nullable=False),
    sa.Column('judge_model', sa.String(length=200), nullable=True),
    sa.Column('settings', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('expected_essays >= 2', name=op.f('ck_batches_expected_essays')),
    sa.PrimaryKeyConstraint('batch_id', name=op.f('pk_batches'))
    )
    op.create_index(op.f('ix_batches_correlation_id'), 'batches', ['correlation_id'], unique=False)
    op.create_index(op.f('ix_batches_opened_at'), 'batches', ['opened_at'], unique=False)
    op.create_table('dead_letters',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('batch_id', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=250), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('offset', sa.Integer(), nullable=True),
    sa.Column('original', sa.Text(), nullable=False),
    sa.Column('original_event_type', sa.String(length=100), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_dead_letters'))
    )
    op.create_index(op.f('ix_dead_letters_batch_id'), 'dead_letters', ['batch_id'], unique=False)
    op.create_index(op.f('ix_dead_letters_received_at'), 'dead_letters', ['received_at'], unique=False)
    op.create_table('batch_results',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('batch_id', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('stop_reason', sa.String(length=50), nullable=False),
    sa.Column('grade_scale', sa.String(length=100), nullable=True),
    sa.Column('grade_cut_points', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('reliability_ssr', sa.Float(), nullable=True),
    sa.Column('position_effect', sa.Float(), nullable=True),
    sa.Column('comparisons_valid', sa.Integer(), nullable=False),
    sa.Column('comparisons_errored', sa.Integer(), nullable=False),
    sa.Column('completion_target', sa.Integer(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.CheckConstraint("status IN ('completed', 'partial', 'failed')", name=op.f('ck_batch_results_status')),
    sa.CheckConstraint('comparisons_valid >= 0 AND comparisons_errored >= 0 AND completion_target >= 0', name=op.f('ck_batch_results_counts')),
    sa.CheckConstraint('duration_s >= 0 AND cost_usd >= 0', name=op.f('ck_batch_results_duration_cost')),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.batch_id'], name=op.f('fk_batch_results_batch_id_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_batch_results'))
    )
    op.create_index(op.f('ix_batch_results_batch_id_finished_at'), 'batch_results', ['batch_id', 'finished_at'], unique=False)
    op.create_table('essays',
    sa.Column('batch_id', sa.String(length=200), nullable=False),
    sa.Column('essay_id', sa.String(length=200), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('anchor_grade', sa.String(length=50), nullable=True),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('length(essay_id) > 0', name=op.f('ck_essays_essay_id')),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.batch_id'], name=op.f('fk_essays_batch_id_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('batch_id', 'essay_id', name=op.f('pk_essays'))
    )
    op.create_table('resource_usage',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('provider', sa.String(length=100), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('batch_id', sa.String(length=200), nullable=False),
    sa.Column('calls', sa.Integer(), nullable=False),
    sa.Column('input_tokens', sa.Integer(), nullable=False),
    sa.Column('output_tokens', sa.Integer(), nullable=False),
    sa.Column('cache_read_tokens', sa.Integer(), nullable=False),
    sa.Column('cache_write_tokens', sa.Integer(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('calls >= 0 AND input_tokens >= 0 AND output_tokens >= 0 AND cache_read_tokens >= 0 AND cache_write_tokens >= 0 AND cost_usd >= 0', name=op.f('ck_resource_usage_non_negative')),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.batch_id'], name=op.f('fk_resource_usage_batch_id_batches'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_id', 'provider', 'model', name=op.f('pk_resource_usage'))
    )
    op.create_index(op.f('ix_resource_usage_batch_id'), 'resource_usage', ['batch_id'], unique=False)
    op.create_index(op.f('ix_resource_usage_model_recorded_at'), 'resource_usage', ['model', 'recorded_at'], unique=False)
    op.create_index(op.f('ix_resource_usage_recorded_at'), 'resource_usage', ['recorded_at'], unique=False)
    op.create_table('comparisons',
    sa.Column('comparison_id', sa.String(length=250), nullable=False),
    sa.Column('batch_id', sa.String(length=200), nullable=False),
    sa.Column('essay_a_id', sa.String(length=200), nullable=False),
    sa.Column('essay_b_id', sa.String(length=200), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('winner', sa.String(length=5), nullable=False),
    sa.Column('winner_essay_id', sa.String(length=200), nullable=True),
    sa.Column('error_kind', sa.String(length=40), nullable=True),
    sa.Column('last_judgement_id', sa.String(length=36), nullable=False),
    sa.Column('judged_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(winner = 'error' AND winner_essay_id IS NULL) OR (winner = 'A' AND winner_essay_id = essay_a_id) OR (winner = 'B' AND winner_essay_id = essay_b_id)", name=op.f('ck_comparisons_winner_essay')),
    sa.CheckConstraint("winner IN ('A', 'B', 'error')", name=op.f('ck_comparisons_winner')),
    sa.CheckConstraint('attempts >= 1', name=op.f('ck_comparisons_attempts')),
    sa.CheckConstraint('essay_a_id <> essay_b_id', name=op.f('ck_comparisons_distinct_essays')),
    sa.ForeignKeyConstraint(['batch_id', 'essay_a_id'], ['essays.batch_id', 'essays.essay_id'], name=op.f('fk_comparisons_batch_id_essay_a_id_essays'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['batch_id', 'essay_b_id'], ['essays.batch_id', 'essays.essay_id'], name=op.f('fk_comparisons_batch_id_essay_b_id_essays'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('comparison_id', name=op.f('pk_comparisons'))
    )
    op.create_index(op.f('ix_comparisons_batch_id'), 'comparisons', ['batch_id'], unique=False)
    op.create_table('essay_scores',
    sa.Column('result_event_id', sa.String(length=36), nullable=False),
    sa.Column('essay_id', sa.String(length=200), nullable=False),
    sa.Column('batch_id', sa.String(length=200), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('se', sa.Float(), nullable=False),
    sa.Column('infit', sa.Float(), nullable=True),
    sa.Column('outfit', sa.Float(), nullable=True),
    sa.Column('comparisons', sa.Integer(), nullable=False),
    sa.Column('wins', sa.Integer(), nullable=False),
    sa.Column('is_anchor', sa.Boolean(), nullable=False),
    sa.Column('anchor_grade', sa.String(length=50), nullable=True),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('comparisons >= 0 AND wins >= 0 AND wins <= comparisons', name=op.f('ck_essay_scores_wins')),
    sa.CheckConstraint('rank >= 1', name=op.f('ck_essay_scores_rank')),
    sa.CheckConstraint('se >= 0', name=op.f('ck_essay_scores_se')),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.batch_id'], name=op.f('fk_essay_scores_batch_id_batches'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['result_event_id'], ['batch_results.event_id'], name=op.f('fk_essay_scores_result_event_id_batch_results'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('result_event_id', 'essay_id', name=op.f('pk_essay_scores'))
    )
    op.create_index(op.f('ix_essay_scores_batch_id_essay_id'), 'essay_scores', ['batch_id', 'essay_id'], unique=False)
    op.create_index(op.f('ix_essay_scores_essay_id_scored_at'), 'essay_scores', ['essay_id', 'scored_at'], unique=False)
    op.create_table('grade_projections',
    sa.Column('result_event_id', sa.String(length=36), nullable=False),
    sa.Column('essay_id', sa.String(length=200), nullable=False),
    sa.Column('batch_id', sa.String(length=200), nullable=False),
    sa.Column('grade_scale', sa.String(length=100), nullable=False),
    sa.Column('projected_grade', sa.String(length=50), nullable=False),
    sa.Column('probability', sa.Float(), nullable=True),
    sa.Column('probabilities', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('anchor_grade', sa.String(length=50), nullable=True),
    sa.CheckConstraint('probability IS NULL OR (probability >= 0 AND probability <= 1)', name=op.f('ck_grade_projections_probability')),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.batch_id'], name=op.f('fk_grade_projections_batch_id_batches'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['result_event_id', 'essay_id'], ['essay_scores.result_event_id', 'essay_scores.essay_id'], name=op.f('fk_grade_projections_result_event_id_essay_id_essay_scores'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('result_event_id', 'essay_id', name=op.f('pk_grade_projections'))
    )
    op.create_index(op.f('ix_grade_projections_batch_id'), 'grade_projections', ['batch_id'], unique=False)
    op.create_table('judgements',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('batch_id', sa.String(length=200), nullable=False),
    sa.Column('comparison_id', sa.String(length=250), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('essay_a_id', sa.String(length=200), nullable=False),
    sa.Column('essay_b_id', sa.String(length=200), nullable=False),
    sa.Column('winner', sa.String(length=5), nullable=False),
    sa.Column('error_kind', sa.String(length=40), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('justification', sa.Text(), nullable=False),
    sa.Column('provider', sa.String(length=100), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('prompt_sha256', sa.String(length=64), nullable=True),
    sa.Column('input_tokens', sa.Integer(), nullable=False),
    sa.Column('output_tokens', sa.Integer(), nullable=False),
    sa.Column('cache_read_tokens', sa.Integer(), nullable=False),
    sa.Column('cache_write_tokens', sa.Integer(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('judged_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("winner IN ('A', 'B', 'error')", name=op.f('ck_judgements_winner')),
    sa.CheckConstraint('attempt >= 1', name=op.f('ck_judgements_attempt')),
    sa.CheckConstraint('confidence IS NULL OR (confidence >= 0 AND confidence <= 1)', name=op.f('ck_judgements_confidence')),
    sa.CheckConstraint('cost_usd >= 0 AND latency_ms >= 0', name=op.f('ck_judgements_cost_latency')),
    sa.CheckConstraint('essay_a_id <> essay_b_id', name=op.f('ck_judgements_distinct_essays')),
    sa.CheckConstraint('input_tokens >= 0 AND output_tokens >= 0 AND cache_read_tokens >= 0 AND cache_write_tokens >= 0', name=op.f('ck_judgements_tokens')),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparisons.comparison_id'], name=op.f('fk_judgements_comparison_id_comparisons'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_judgements'))
    )
    op.create_index(op.f('ix_judgements_comparison_id_attempt'), 'judgements', ['comparison_id', 'attempt'], unique=True)


def downgrade() -> None:
    op.drop_index(op.f('ix_judgements_comparison_id_attempt'), table_name='judgements')
    op.drop_table('judgements')
    op.drop_index(op.f('ix_grade_projections_batch_id'), table_name='grade_projections')
    op.drop_table('grade_projections')
    op.drop_index(op.f('ix_essay_scores_essay_id_scored_at'), table_name='essay_scores')
    op.drop_index(op.f('ix_essay_scores_batch_id_essay_id'), table_name='essay_scores')
    op.drop_table('essay_scores')
    op.drop_index(op.f('ix_comparisons_batch_id'), table_name='comparisons')
    op.drop_table('comparisons')
    op.drop_index(op.f('ix_resource_usage_recorded_at'), table_name='resource_usage')
    op.drop_index(op.f('ix_resource_usage_model_recorded_at'), table_name='resource_usage')
    op.drop_index(op.f('ix_resource_usage_batch_id'), table_name='resource_usage')
    op.drop_table('resource_usage')
    op.drop_table('essays')
    op.drop_index(op.f('ix_batch_results_batch_id_finished_at'), table_name='batch_results')
    op.drop_table('batch_results')
    op.drop_index(op.f('ix_dead_letters_received_at'), table_name='dead_letters')
    op.drop_index(op.f('ix_dead_letters_batch_id'), table_name='dead_letters')
    op.drop_table('dead_letters')
    op.drop_index(op.f('ix_batches_opened_at'), table_name='batches')
    op.drop_index(op.f('ix_batches_correlation_id'), table_name='batches')
    op.drop_table('batches')
