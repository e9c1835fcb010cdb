"""Kafka offsets are 64-bit: dead_letters.offset becomes BIGINT (was INTEGER, 32-bit).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

A partition past 2^31 - 1 messages would make every dead letter from it fail to store
(integer out of range) and be dead-lettered again by the sink. Widening keeps the values;
downgrade narrows again (and fails if a stored offset does not fit, rather than lose it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.alter_column("offset", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.alter_column("offset", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True)
