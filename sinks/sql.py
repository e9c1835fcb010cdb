"""Idempotent writes to SQLite or Postgres, and the Bytewax sink that batches them.

Rows are keyed by deterministic ids and inserted with ON CONFLICT DO NOTHING: an event id
names one immutable fact, so the first write wins and a replay changes nothing.
"""

from __future__ import annotations

from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

from schemas.envelope import Envelope
from sinks.rows import rows_for
from sinks.tables import metadata


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and foreign keys on."""
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    return engine


def create_schema(engine: Engine) -> None:
    """Create the tables from the metadata (embedded runs; production uses migrations)."""
    metadata.create_all(engine)


def _insert_ignore(engine: Engine, table: Table) -> Any:
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"unsupported database dialect {dialect!r}")


def write_events(engine: Engine, events: list[Envelope]) -> int:
    """Upsert the rows of `events` in one transaction; returns the rows offered."""
    rows = rows_for(events)
    if not rows:
        return 0
    with engine.begin() as conn:
        for table, batch in rows.items():
            conn.execute(_insert_ignore(engine, table), batch)
    return sum(len(b) for b in rows.values())


class _SqlPartition(StatelessSinkPartition[Envelope]):
    def __init__(self, engine: Engine):
        self._engine = engine

    def write_batch(self, items: list[Envelope]) -> None:
        write_events(self._engine, items)

    def close(self) -> None:
        self._engine.dispose()


class SqlSink(DynamicSink[Envelope]):
    """Writes each worker's items in batches (one transaction per Bytewax batch)."""

    def __init__(self, url: str):
        self._url = url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SqlPartition:
        return _SqlPartition(make_engine(self._url))
