"""Idempotent, batched, fault-tolerant writes to SQLite or Postgres, and the Bytewax sinks.

- Rows are keyed by deterministic ids. Facts are inserted with ON CONFLICT DO NOTHING (the
  first write wins); a comparison row follows its latest attempt with an upsert guarded by
  `attempts < EXCLUDED.attempts`. So a replay after recovery, or a retry of a transaction
  whose COMMIT was lost with the connection, changes nothing.
- On Postgres each table's rows go in one `INSERT ... SELECT FROM unnest(arrays)`
  statement per chunk (one round trip whatever the number of rows); elsewhere executemany.
- A transient error (connection lost, server restarted, serialization failure, deadlock)
  rolls the chunk back and retries it with exponential backoff and jitter; when the retry
  budget runs out the error is raised (the flow stops and recovery replays; nothing is
  silently dropped).
- A permanent error (constraint violation, bad value) bisects the chunk to find the bad
  events; each is stored in `dead_letters` with the reason, the rest is written.
- Anything else (missing table, no privilege, bugs) is raised at once.
"""

from __future__ import annotations

import base64
import logging
import operator
import random
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition
from sqlalchemy import Boolean, DateTime, Engine, Float, Integer, Table, create_engine, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import JSON

from schemas import DeadLetter, Judgement
from schemas.envelope import Envelope, deterministic_id
from sinks.credentials import database_url
from sinks.errors import Classified, Severity, classify
from sinks.rows import Row, event_rows, rows_for
from sinks.tables import metadata
from telemetry.metrics import DEAD_LETTERS, SINK_ERRORS, SINK_WRITES

try:
    from psycopg import Error as _DriverError
except ImportError:  # pragma: no cover - SQLite only
    _DriverError = SQLAlchemyError  # type: ignore[misc,assignment]

log = logging.getLogger("cjflow.sinks")

DEFAULT_CHUNK_ROWS = 5000
SINK_SOURCE = "sink:database"


# --- engines and schema ------------------------------------------------------------------------
def make_engine(url: str | URL | None = None, password_file: str | Path | None = None, **kw: Any) -> Engine:
    """An engine for `url` (default `$CJFLOW_DATABASE_URL`, password from
    `$CJFLOW_DATABASE_PASSWORD_FILE`); SQLite gets WAL and foreign keys on.

    Statement parameters are hidden from error messages (essays are data, not logs)."""
    resolved = database_url(url, password_file)
    opts: dict[str, Any] = dict(pool_pre_ping=True, hide_parameters=True)
    if resolved.drivername.startswith("postgresql"):
        opts["connect_args"] = {"connect_timeout": 5, "application_name": "cjflow"}
        if "poolclass" not in kw:
            opts["pool_size"] = 2
    opts.update(kw)
    engine = create_engine(resolved, **opts)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


def create_schema(engine: Engine) -> None:
    """Create the tables from the metadata (embedded runs; servers use `cjflow db upgrade`).

    A SQLite database that had none of the tables is stamped with the newest migration, so
    `cjflow db upgrade` can take it over later. An empty Postgres database gets the
    migrations instead (the same schema, plus the flows' role and its grants); one that
    has the tables is left alone."""
    existing = set(inspect(engine).get_table_names())
    fresh = not (existing & set(metadata.tables)) and "alembic_version" not in existing
    if fresh and engine.dialect.name == "postgresql":
        from sinks.migrate import upgrade

        upgrade(engine=engine)
        return
    metadata.create_all(engine)
    if fresh:
        from sinks.migrate import stamp_head

        stamp_head(engine)


# --- statements --------------------------------------------------------------------------------
_CONFLICT_UPDATE: dict[str, tuple[str, ...]] = {
    # table -> (conflict columns..., guard column): update only when the guard grows
    "comparisons": ("comparison_id", "attempts"),
}


def _pg_array_type(col: Any) -> str:
    ty = col.type
    if isinstance(ty, JSON) or getattr(ty, "_variant_mapping", None):
        return "jsonb[]"
    if isinstance(ty, Boolean):
        return "boolean[]"
    if isinstance(ty, Integer):
        return "bigint[]"
    if isinstance(ty, Float):
        return "float8[]"
    if isinstance(ty, DateTime):
        return "timestamptz[]"
    return "text[]"  # never varchar(n)[]: an explicit cast would truncate silently


def _pg_coercer(col: Any) -> Callable[[list[Any]], list[Any]] | None:
    """Make a column's values one Python type (psycopg dumps a list by one type), or None
    when they already are."""
    ty = col.type
    if isinstance(ty, JSON) or getattr(ty, "_variant_mapping", None):
        from psycopg.types.json import Jsonb

        return lambda vs: [None if v is None else Jsonb(v) for v in vs]
    for kind, conv in ((Boolean, bool), (Integer, int), (Float, float)):
        if isinstance(ty, kind):

            def coerce(vs: list[Any], conv: Callable[[Any], Any] = conv) -> list[Any]:
                if all(v is None or type(v) is conv for v in vs):
                    return vs
                return [None if v is None else conv(v) for v in vs]

            return coerce
    return None


@dataclass
class _PgBulk:
    sql: str
    columns: list[str]
    coercers: list[Callable[[list[Any]], list[Any]] | None]

    def params(self, rows: list[Row]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for i, (name, coerce) in enumerate(zip(self.columns, self.coercers)):
            values = [r.get(name) for r in rows]
            out[f"p{i}"] = coerce(values) if coerce else values
        return out


_pg_cache: dict[str, _PgBulk] = {}
_pg_lock = threading.Lock()


def _pg_bulk(engine: Engine, table: Table) -> _PgBulk:
    """`INSERT INTO t (...) SELECT * FROM unnest(%(p0)s::type[], ...) ON CONFLICT ...`."""
    with _pg_lock:
        if table.name in _pg_cache:
            return _pg_cache[table.name]
        q = engine.dialect.identifier_preparer.quote
        cols = list(table.columns)
        names = ", ".join(q(c.name) for c in cols)
        arrays = ", ".join(f"%(p{i})b::{_pg_array_type(c)}" for i, c in enumerate(cols))
        sql = f"INSERT INTO {q(table.name)} ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT"
        if table.name in _CONFLICT_UPDATE:
            *target, guard = _CONFLICT_UPDATE[table.name]
            sets = ", ".join(f"{q(c.name)} = EXCLUDED.{q(c.name)}" for c in cols if c.name not in target)
            sql += (
                f" ({', '.join(q(c) for c in target)}) DO UPDATE SET {sets}"
                f" WHERE {q(table.name)}.{q(guard)} < EXCLUDED.{q(guard)}"
            )
        else:
            sql += " DO NOTHING"
        bulk = _PgBulk(sql, [c.name for c in cols], [_pg_coercer(c) for c in cols])
        _pg_cache[table.name] = bulk
        return bulk


def _generic_insert(engine: Engine, table: Table) -> Any:
    """INSERT ... ON CONFLICT for executemany (SQLite, and Postgres row at a time)."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise ValueError(f"unsupported database dialect {dialect!r}")
    if table.name in _CONFLICT_UPDATE:
        *target, guard = _CONFLICT_UPDATE[table.name]
        return stmt.on_conflict_do_update(
            index_elements=target,
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in target},
            where=table.c[guard] < stmt.excluded[guard],
        )
    return stmt.on_conflict_do_nothing()


def _pk_sorter(table: Table) -> Callable[[Row], Any]:
    return operator.itemgetter(*[c.name for c in table.primary_key.columns])  # keys are non-null strings


def _write_rows(conn: Any, engine: Engine, rows: dict[Table, list[Row]], bulk: bool) -> None:
    """All `rows` in the open transaction `conn`, parents first, each table's rows in key
    order (so concurrent writers lock rows in the same order and cannot deadlock)."""
    for table, batch in rows.items():
        batch = sorted(batch, key=_pk_sorter(table))
        if bulk and engine.dialect.name == "postgresql":
            b = _pg_bulk(engine, table)
            conn.exec_driver_sql(b.sql, b.params(batch))
        else:
            conn.execute(_generic_insert(engine, table), batch)


# --- the writer --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient errors, within a time budget."""

    initial_s: float = 0.05
    max_delay_s: float = 5.0
    multiplier: float = 2.0
    max_elapsed_s: float = 300.0

    def delays(self) -> Any:
        delay = self.initial_s
        while True:
            yield random.uniform(delay / 2, delay)
            delay = min(delay * self.multiplier, self.max_delay_s)


class SinkUnavailable(RuntimeError):
    """Transient errors outlasted the retry budget; the chunk was not written."""


class _Permanent(Exception):
    def __init__(self, classified: Classified):
        super().__init__(classified.message)
        self.classified = classified


@dataclass
class WriteReport:
    rows: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    retries: int = 0


class SqlWriter:
    """Writes events to one database: chunked transactions, retries, dead letters."""

    def __init__(
        self,
        engine: Engine,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        retry: RetryPolicy | None = None,
        bulk: bool = True,
        source: str = SINK_SOURCE,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        self.engine = engine
        self.chunk_rows = chunk_rows
        self.retry = retry or RetryPolicy()
        self.bulk = bulk
        self.source = source
        self._sleep = sleep
        self._dialect = engine.dialect.name

    def write(self, events: Sequence[Envelope]) -> WriteReport:
        report = WriteReport()
        for chunk in self._chunks(events):
            self._write_bisecting(chunk, report)
        return report

    def _chunks(self, events: Sequence[Envelope]) -> Any:
        chunk: list[Envelope] = []
        n = 0
        for ev in events:
            size = 2 if isinstance(ev, Judgement) else max(1, len(event_rows(ev)))
            if chunk and n + size > self.chunk_rows:
                yield chunk
                chunk, n = [], 0
            chunk.append(ev)
            n += size
        if chunk:
            yield chunk

    def _write_bisecting(self, events: list[Envelope], report: WriteReport) -> None:
        try:
            report.rows += self._write_retrying(events, report)
        except _Permanent as exc:
            if len(events) == 1:
                self._dead_letter(events[0], exc.classified, report)
                return
            mid = len(events) // 2
            self._write_bisecting(events[:mid], report)
            self._write_bisecting(events[mid:], report)

    def _write_retrying(self, events: list[Envelope], report: WriteReport) -> int:
        rows = rows_for(list(events))
        if not rows:
            return 0
        started = time.monotonic()
        delays = self.retry.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.engine.begin() as conn:
                    _write_rows(conn, self.engine, rows, self.bulk)
            except (SQLAlchemyError, OSError, _DriverError) as exc:
                c = classify(exc, self._dialect)
                SINK_ERRORS.labels(kind=c.kind).inc()
                if c.severity is Severity.PERMANENT:
                    raise _Permanent(c) from None
                if c.severity is Severity.FATAL:
                    log.error("database write failed (SQLSTATE %s): %s", c.sqlstate, c.message)
                    raise
                delay = next(delays)
                if time.monotonic() - started + delay > self.retry.max_elapsed_s:
                    log.error("database unavailable for %.0f s, giving up: %s", time.monotonic() - started, c.message)
                    raise SinkUnavailable(
                        f"database unavailable after {attempt} attempts ({c.kind}): {c.message}"
                    ) from exc
                report.retries += 1
                log.warning(
                    "transient database error (%s, SQLSTATE %s), retry %d in %.2f s: %s",
                    c.kind, c.sqlstate, attempt, delay, c.message,
                )
                self._sleep(delay)
                continue
            n = 0
            for table, batch in rows.items():
                SINK_WRITES.labels(table=table.name).inc(len(batch))
                n += len(batch)
            return n

    def _dead_letter(self, ev: Envelope, c: Classified, report: WriteReport) -> None:
        if isinstance(ev, DeadLetter) and ev.source == self.source:
            log.error("the database rejected a dead letter (SQLSTATE %s): %s", c.sqlstate, c.message)
            raise RuntimeError(f"the database rejected a dead letter: {c.message}")
        state = f", SQLSTATE {c.sqlstate}" if c.sqlstate else ""
        dl = DeadLetter(
            event_id=deterministic_id("deadletter", self.source, ev.event_id),
            batch_id=ev.batch_id,
            correlation_id=ev.correlation_id,
            reason=f"database rejected the record: {c.kind}{state}: {c.message}"[:2000],
            source=self.source,
            original=base64.b64encode(ev.to_json()).decode(),
            original_event_type=ev.event_type,
            occurred_at=ev.occurred_at,
        )
        log.warning("dead-lettered %s %s: %s", ev.event_type, ev.event_id, dl.reason)
        try:
            self._write_retrying([dl], report)
        except _Permanent as exc:
            raise RuntimeError(f"the database rejected a dead letter: {exc.classified.message}") from None
        DEAD_LETTERS.labels(reason="database rejected the record").inc()
        report.dead_letters.append(dl)


def write_events(
    engine: Engine,
    events: Sequence[Envelope],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    retry: RetryPolicy | None = None,
    bulk: bool = True,
) -> int:
    """Upsert the rows of `events` (transactions of up to `chunk_rows` rows, retried on
    transient errors, bad records dead-lettered); returns the rows offered."""
    return SqlWriter(engine, chunk_rows=chunk_rows, retry=retry, bulk=bulk).write(events).rows


# --- Bytewax sinks -------------------------------------------------------------------------------
class _SqlPartition(StatelessSinkPartition[Envelope]):
    def __init__(self, writer: SqlWriter):
        self._writer = writer

    def write_batch(self, items: list[Envelope]) -> None:
        self._writer.write(items)

    def close(self) -> None:
        self._writer.engine.dispose()


class SqlSink(DynamicSink[Envelope]):
    """Writes each worker's items in batches: one transaction per Bytewax batch (split in
    chunks of `chunk_rows` rows), retried on transient errors.

    Put it downstream of the per-batch stateful step with no re-keying in between (as the
    cjflow flows do): every row of a batch is then written by the worker that owns the
    batch, so workers never contend on the same rows.
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        password_file: str | Path | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        retry: RetryPolicy | None = None,
    ):
        self._url = url
        self._password_file = password_file
        self._chunk_rows = chunk_rows
        self._retry = retry

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SqlPartition:
        engine = make_engine(self._url, self._password_file)
        return _SqlPartition(SqlWriter(engine, chunk_rows=self._chunk_rows, retry=self._retry))


class _KeyedSqlPartition(StatefulSinkPartition[Envelope, None]):
    def __init__(self, writer: SqlWriter):
        self._writer = writer

    def write_batch(self, values: list[Envelope]) -> None:
        self._writer.write(values)

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._writer.engine.dispose()


class PartitionedSqlSink(FixedPartitionedSink[Envelope, None]):
    """For keyed streams `(batch_id, event)`: routes every batch to one of `partitions`
    fixed partitions (crc32 of the key), so one writer owns a batch's rows wherever the
    items come from. Each partition has its own small connection pool."""

    def __init__(
        self,
        url: str | URL | None = None,
        partitions: int = 4,
        *,
        password_file: str | Path | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        retry: RetryPolicy | None = None,
    ):
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._url = url
        self._partitions = partitions
        self._password_file = password_file
        self._chunk_rows = chunk_rows
        self._retry = retry

    def list_parts(self) -> list[str]:
        return [f"db-{i}" for i in range(self._partitions)]

    def part_fn(self, item_key: str) -> int:
        return zlib.crc32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KeyedSqlPartition:
        engine = make_engine(self._url, self._password_file, pool_size=1)
        return _KeyedSqlPartition(SqlWriter(engine, chunk_rows=self._chunk_rows, retry=self._retry))


__all__ = [
    "PartitionedSqlSink",
    "RetryPolicy",
    "SinkUnavailable",
    "SqlSink",
    "SqlWriter",
    "WriteReport",
    "create_schema",
    "make_engine",
    "write_events",
]
