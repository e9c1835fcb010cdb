"""The flows' least-privilege role: SELECT, INSERT, UPDATE on the cjflow tables, nothing else.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

The role (default `cjflow_app`, or `$CJFLOW_APP_ROLE`) is created if missing, as a LOGIN
role with no password and no attributes (no superuser, createdb, createrole, DDL): give it
a password with `ALTER ROLE cjflow_app PASSWORD ...` (or GRANT it to your login users).
It owns nothing, so it cannot ALTER, DROP or TRUNCATE; it cannot DELETE; and CREATE on
the schema is revoked from PUBLIC (the default since Postgres 15). Postgres only.

Downgrade revokes what upgrade granted in this database but keeps the role: roles are
cluster-wide and may serve other databases; drop it by hand when it is unused.
"""

from __future__ import annotations

from alembic import op

from sinks.migrate import grant_app_role, migration_app_role, revoke_app_role

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = [
    "batches",
    "essays",
    "comparisons",
    "judgements",
    "batch_results",
    "essay_scores",
    "grade_projections",
    "resource_usage",
    "dead_letters",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    role = migration_app_role(op)
    op.execute(
        f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
    BEGIN
      CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    EXCEPTION WHEN duplicate_object THEN NULL;  -- created concurrently
    END;
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO {role}', current_database());
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', current_schema());
  EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
END $$
"""
    )
    grant_app_role(op, TABLES)
    grant_app_role(op, ["alembic_version"], "SELECT")  # lets the flows check the schema version


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    role = migration_app_role(op)
    revoke_app_role(op, TABLES + ["alembic_version"])
    op.execute(
        f"""
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {role}', current_schema());
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {role}', current_database());
  END IF;
END $$
"""
    )
