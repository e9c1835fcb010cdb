"""The sink layer without a server: rows, SQLite (embedded), credentials, error sorting."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from sqlalchemy import func, inspect, select

from sinks import tables as t
from sinks.credentials import DatabaseConfigError, database_url, redacted
from sinks.errors import Severity, classify
from sinks.migrate import current_revision, head_revision
from sinks.rows import rows_for
from sinks.sql import SqlWriter, create_schema, make_engine, write_events
from sinks.synthetic import batch_events, judgement


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'cjflow.sqlite3'}")
    create_schema(engine)
    yield engine
    engine.dispose()


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {tbl.name: conn.execute(select(func.count()).select_from(tbl)).scalar_one() for tbl in t.WRITE_ORDER}


def test_synthetic_batch_has_rows_for_every_table():
    rows = rows_for(batch_events("b", 6, 20))
    assert set(rows) == set(t.WRITE_ORDER) - {t.dead_letters}
    assert len(rows[t.comparisons]) == 20  # retried comparisons fold to one row
    assert len(rows[t.judgements]) == 20 + 20 // 7


def test_sqlite_is_created_from_the_metadata_and_stamped(sqlite_engine):
    assert set(inspect(sqlite_engine).get_table_names()) == set(t.metadata.tables) | {"alembic_version"}
    assert current_revision(sqlite_engine) == head_revision()
    create_schema(sqlite_engine)  # idempotent


def test_sqlite_write_and_replay(sqlite_engine, dump):
    events = batch_events("b1", 6, 20) + batch_events("b2", 4, 9, grades=False)
    write_events(sqlite_engine, events)
    first = dump(sqlite_engine)
    counts = _counts(sqlite_engine)
    assert counts["batches"] == 2 and counts["essays"] == 10 and counts["comparisons"] == 29
    assert counts["grade_projections"] == 6 and counts["essay_scores"] == 10 and counts["resource_usage"] == 2
    write_events(sqlite_engine, events, chunk_rows=7)  # replay, cut differently
    assert dump(sqlite_engine) == first


def test_comparison_row_follows_the_latest_attempt_whatever_the_order(sqlite_engine):
    events = batch_events("b1", 4, 0, result=False)
    write_events(sqlite_engine, events)
    late = judgement("b1", 0, 2, "essay-000", "essay-001", "A", events[0].occurred_at)
    early = judgement("b1", 0, 1, "essay-000", "essay-001", "error", events[0].occurred_at)
    write_events(sqlite_engine, [late])
    write_events(sqlite_engine, [early])  # arrives after its retry: must not win
    with sqlite_engine.connect() as conn:
        row = conn.execute(select(t.comparisons)).one()
        assert (row.attempts, row.winner, row.winner_essay_id) == (2, "A", "essay-000")
        assert conn.execute(select(func.count()).select_from(t.judgements)).scalar_one() == 2


def test_bad_records_go_to_dead_letters_and_the_rest_is_written_sqlite(sqlite_engine, caplog):
    events = batch_events("b1", 5, 12)
    orphan = judgement("ghost-batch", 0, 1, "x", "y", "A", events[0].occurred_at)
    same_essay = judgement("b1", 99, 1, "essay-001", "essay-001", "A", events[0].occurred_at)
    mixed = events[:8] + [orphan] + events[8:12] + [same_essay] + events[12:]
    with caplog.at_level(logging.WARNING, "cjflow.sinks"):
        report = SqlWriter(sqlite_engine, chunk_rows=10).write(mixed)
    assert {d.original_event_type for d in report.dead_letters} == {"comparison.judged"}
    assert len(report.dead_letters) == 2
    bad_ids = {orphan.event_id, same_essay.event_id}
    decoded = {json.loads(base64.b64decode(d.original))["event_id"] for d in report.dead_letters}
    assert decoded == bad_ids
    counts = _counts(sqlite_engine)
    assert counts["judgements"] == len([e for e in events if e.event_type == "comparison.judged"])
    assert counts["dead_letters"] == 2 and counts["batch_results"] == 1
    assert "dead-lettered" in caplog.text


def test_database_url_from_env_and_secret_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t-Pa55\n")
    env = {"CJFLOW_DATABASE_URL": "postgresql://cjflow_app@db:5432/cjflow", "CJFLOW_DATABASE_PASSWORD_FILE": str(secret)}
    url = database_url(env=env)
    assert url.drivername == "postgresql+psycopg" and url.password == "s3cr3t-Pa55"
    assert "s3cr3t" not in redacted(url) and "s3cr3t" not in repr(url) and "s3cr3t" not in str(url)
    assert database_url("postgresql://u:given@h/d", env=env).password == "given"  # the URL's own wins
    with pytest.raises(DatabaseConfigError, match="CJFLOW_DATABASE_URL"):
        database_url(env={})
    with pytest.raises(DatabaseConfigError, match="password file"):
        database_url(env={**env, "CJFLOW_DATABASE_PASSWORD_FILE": str(tmp_path / "missing")})


def test_error_sorting():
    import psycopg.errors as pe

    assert classify(pe.SerializationFailure("x")).severity is Severity.TRANSIENT
    assert classify(pe.DeadlockDetected("x")).kind == "deadlock"
    assert classify(pe.AdminShutdown("x")).severity is Severity.TRANSIENT
    assert classify(psycopg_op_error()).severity is Severity.TRANSIENT
    assert classify(pe.ForeignKeyViolation("x")).severity is Severity.PERMANENT
    assert classify(pe.CheckViolation("x")).kind == "constraint"
    assert classify(pe.StringDataRightTruncation("x")).kind == "data"
    assert classify(pe.InsufficientPrivilege("x")).severity is Severity.FATAL
    assert classify(pe.UndefinedTable("x")).severity is Severity.FATAL


def psycopg_op_error():
    import psycopg

    return psycopg.OperationalError("connection failed: Connection refused")
