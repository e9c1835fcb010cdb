"""Alembic revisions, oldest first (numbered 0001, 0002, ...)."""
