"""Alembic environment, configured in code by sinks.migrate (no alembic.ini needed).

`config.attributes` carries either an open `connection` or the database `url` (a URL
object: the password never goes through the ini-style config, nor into logs).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.pool import NullPool

from sinks.tables import metadata

config = context.config


def _configure(**kw: object) -> None:
    context.configure(target_metadata=metadata, compare_type=True, **kw)  # type: ignore[arg-type]


def run_offline() -> None:
    _configure(url=config.attributes["url"], literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


# Two migration runs at once (a retried Job, two deploys) take turns: the second waits,
# then finds the database already at the target revision.
MIGRATION_LOCK_KEY = 0x636A666C6F77  # "cjflow"


def _run(connection: object) -> None:
    postgres = connection.dialect.name == "postgresql"  # type: ignore[attr-defined]
    _configure(connection=connection, render_as_batch=not postgres)
    with context.begin_transaction():
        if postgres:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")  # type: ignore[attr-defined]
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from sinks.sql import make_engine

    engine = make_engine(config.attributes["url"], poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
