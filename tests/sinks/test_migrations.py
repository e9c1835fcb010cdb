"""Alembic migrations: up and down on an empty database, the same schema as the metadata
(Postgres and SQLite), and the flows' least-privilege role."""

from __future__ import annotations

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from flows.cli import main
from sinks.migrate import head_revision
from sinks.tables import metadata

APP_ROLE = "cjflow_app"


def _schema_diff(engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)


def _check_constraints(engine) -> dict[str, set[str]]:
    insp = inspect(engine)
    return {name: {c["name"] for c in insp.get_check_constraints(name)} for name in metadata.tables}


def _metadata_checks() -> dict[str, set[str]]:
    from sqlalchemy import CheckConstraint

    return {
        name: {c.name for c in tbl.constraints if isinstance(c, CheckConstraint)}
        for name, tbl in metadata.tables.items()
    }


@pytest.mark.postgres
def test_migrations_up_and_down_on_an_empty_database(pg, empty_database, capsys):
    url = pg.url(empty_database)
    engine = create_engine(url)
    try:
        assert inspect(engine).get_table_names() == []
        assert main(["db", "upgrade", "--url", url]) == 0
        assert set(inspect(engine).get_table_names()) == set(metadata.tables) | {"alembic_version"}
        assert _schema_diff(engine) == []  # the migrations build exactly the metadata's schema
        assert _check_constraints(engine) == _metadata_checks()
        assert main(["db", "current", "--url", url]) == 0
        assert f"current: {head_revision()}" in capsys.readouterr().out
        with engine.connect() as conn:
            grants = conn.execute(
                text(
                    "SELECT table_name, string_agg(privilege_type, ',' ORDER BY privilege_type) "
                    "FROM information_schema.role_table_grants WHERE grantee = :r GROUP BY table_name"
                ),
                {"r": APP_ROLE},
            ).all()
        assert dict(grants) == {**{n: "INSERT,SELECT,UPDATE" for n in metadata.tables}, "alembic_version": "SELECT"}

        assert main(["db", "downgrade", "0001", "--url", url]) == 0  # the role's grants go (0002)
        with engine.connect() as conn:
            assert conn.execute(
                text("SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = :r"), {"r": APP_ROLE}
            ).scalar_one() == 0
        assert main(["db", "downgrade", "base", "--url", url]) == 0
        assert inspect(engine).get_table_names() == ["alembic_version"]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 0

        assert main(["db", "upgrade", "--url", url]) == 0  # and up again
        assert _schema_diff(engine) == []
    finally:
        engine.dispose()


def test_migrations_on_sqlite_match_the_metadata(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    engine = create_engine(url)
    assert main(["db", "upgrade", "--url", url]) == 0
    assert _schema_diff(engine) == []
    assert _check_constraints(engine) == _metadata_checks()
    assert main(["db", "downgrade", "base", "--url", url]) == 0
    assert inspect(engine).get_table_names() == ["alembic_version"]
    engine.dispose()


def test_db_command_reports_a_missing_url(monkeypatch, capsys):
    monkeypatch.delenv("CJFLOW_DATABASE_URL", raising=False)
    assert main(["db", "upgrade"]) == 2
    assert "CJFLOW_DATABASE_URL" in capsys.readouterr().err


def test_upgrade_sql_prints_the_role_and_grants(capsys):
    assert main(["db", "upgrade", "--sql", "--url", "postgresql://admin@localhost/cjflow"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE judgements" in out and f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER" in out
    assert "GRANT SELECT, INSERT, UPDATE ON TABLE" in out


@pytest.mark.postgres
def test_the_flows_role_can_write_but_has_no_ddl_rights(pg, clean_db):
    conn = pg.connect(clean_db.name, APP_ROLE, autocommit=True)
    try:
        attrs = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert attrs == (False, False, False, False)
        conn.execute(
            "INSERT INTO batches (batch_id, event_id, expected_essays, assignment, judge_provider, settings, opened_at)"
            " VALUES ('r1', 'e1', 2, '', 'offline', '{}', now())"
        )
        conn.execute("UPDATE batches SET judge_model = 'm' WHERE batch_id = 'r1'")
        assert conn.execute("SELECT count(*) FROM batches").fetchone() == (1,)
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (head_revision(),)
        for ddl in (
            "CREATE TABLE sneaky (x int)",
            "DROP TABLE judgements",
            "ALTER TABLE batches ADD COLUMN x int",
            "CREATE INDEX ix_sneaky ON batches (assignment)",
            "TRUNCATE batches CASCADE",
            "DELETE FROM batches",
            "UPDATE alembic_version SET version_num = 'x'",
            "CREATE ROLE sneaky",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied|must be owner"):
                conn.execute(ddl)
    finally:
        conn.close()


@pytest.mark.postgres
def test_upgrade_can_set_the_app_role_password_as_a_scram_verifier(pg, clean_db, tmp_path, capsys):
    secret = tmp_path / "app-password"
    secret.write_text("App-Pa55word-Xyz\n")
    try:
        assert main(["db", "upgrade", "--url", clean_db.admin_url, "--app-password-file", str(secret)]) == 0
        with pg.connect("test") as conn:
            stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (APP_ROLE,)).fetchone()[0]
        assert stored.startswith("SCRAM-SHA-256$4096:") and "App-Pa55word" not in stored
        out = capsys.readouterr()
        assert "App-Pa55word" not in out.out + out.err
    finally:
        pg.admin_exec(f"ALTER ROLE {APP_ROLE} PASSWORD NULL")


@pytest.mark.postgres
def test_concurrent_upgrades_take_turns(pg, empty_database):
    """Two migration Jobs at once (separate processes): an advisory lock serializes them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "flows.cli", "db", "upgrade", "--url", pg.url(empty_database)]
    procs = [subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-500:] for o in outs]
    engine = create_engine(pg.url(empty_database))
    assert _schema_diff(engine) == []
    engine.dispose()


@pytest.mark.postgres
def test_create_schema_on_an_empty_postgres_database_runs_the_migrations(pg, empty_database):
    from sinks.migrate import current_revision
    from sinks.sql import create_schema, make_engine, write_events
    from sinks.synthetic import batch_events

    admin = make_engine(pg.url(empty_database))
    create_schema(admin)
    create_schema(admin)  # and leaves a migrated database alone
    assert current_revision(admin) == head_revision()
    assert _schema_diff(admin) == []
    admin.dispose()
    app = make_engine(pg.url(empty_database, APP_ROLE))  # the role and its grants exist too
    assert write_events(app, batch_events("b", 3, 3)) > 0
    app.dispose()


@pytest.mark.postgres
def test_setting_the_app_password_without_createrole_says_what_is_missing(pg, clean_db, tmp_path):
    """An owner without CREATEROLE (the set-up docs/storage.md describes, with cjflow_app made
    beforehand) gets an error that names the privilege and the way out, not 'permission denied'."""
    from sinks.credentials import DatabaseConfigError
    from sinks.migrate import set_app_password

    owner = "cjflow_owner_nocreaterole"
    secret = tmp_path / "app-password"
    secret.write_text("App-Pa55word-Xyz\n")
    pg.admin_exec(f"DROP ROLE IF EXISTS {owner}")
    pg.admin_exec(f"CREATE ROLE {owner} LOGIN NOCREATEROLE")
    try:
        with pytest.raises(DatabaseConfigError, match="needs CREATEROLE.*CJFLOW_APP_PASSWORD_FILE unset"):
            set_app_password(pg.url(clean_db.name, owner), secret)
    finally:
        pg.admin_exec(f"DROP ROLE IF EXISTS {owner}")
