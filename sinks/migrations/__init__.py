"""Alembic migrations of the cjflow schema (run them with `cjflow db upgrade`)."""
