"""Banked anchor values are stored: essays.anchor_value and essays.anchor_value_se (nullable).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

An anchor's banked scale value and its SE (the value,se columns of `--anchors`, carried on
`essay.submitted`) are inputs of the batch, so a rerun under the same batch id must compare
them too. Rows written before this revision keep NULL (the values were not recorded).
Adding nullable columns is a plain ALTER TABLE on Postgres and on SQLite (no table copy).
Downgrade drops them (and the values with them); on SQLite with a native DROP COLUMN,
not batch mode's copy-and-rename: dropping `essays` there, with foreign keys on, would
cascade-delete the comparisons and judgements that refer to it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("anchor_value", "anchor_value_se")


def upgrade() -> None:
    with op.batch_alter_table("essays") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    # recreate="never": ALTER TABLE ... DROP COLUMN (SQLite 3.35+; neither column is in an
    # index or constraint), never the copy that would drop the table `comparisons` refers to
    with op.batch_alter_table("essays", recreate="never") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
