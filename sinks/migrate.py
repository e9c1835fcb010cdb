"""Alembic, configured in code: the migration scripts ship inside the package
(`sinks/migrations`), so `cjflow db upgrade` works from an installed wheel with no
alembic.ini. Also the helpers the migrations use for the flows' least-privilege role.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from sinks.credentials import database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
APP_ROLE_ENV = "CJFLOW_APP_ROLE"
DEFAULT_APP_ROLE = "cjflow_app"
#: what the flows may do on every cjflow table: read, insert, upsert. No DELETE, no DDL.
APP_PRIVILEGES = "SELECT, INSERT, UPDATE"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def app_role(name: str | None = None) -> str:
    """The flows' role name (`$CJFLOW_APP_ROLE`, default cjflow_app), checked to be a plain
    identifier because it is spliced into GRANT statements."""
    role = name or os.environ.get(APP_ROLE_ENV) or DEFAULT_APP_ROLE
    if not _IDENT.match(role):
        raise ValueError(f"invalid role name {role!r}: use lower-case letters, digits and _")
    return role


def alembic_config(
    url: str | URL | None = None,
    *,
    engine: Engine | None = None,
    app_role_name: str | None = None,
    stdout: Any = None,
) -> Config:
    """An Alembic Config for cjflow's migrations against `url` (or `$CJFLOW_DATABASE_URL`)
    or an existing `engine`."""
    cfg = Config(stdout=stdout or io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["app_role"] = app_role(app_role_name)
    if engine is not None:
        cfg.attributes["engine"] = engine
        cfg.attributes["url"] = engine.url
    else:
        cfg.attributes["url"] = database_url(url)
    return cfg


def _run(cfg: Config, fn: Any, *args: Any, **kw: Any) -> None:
    engine: Engine | None = cfg.attributes.get("engine")
    if engine is None:
        fn(cfg, *args, **kw)
        return
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        try:
            fn(cfg, *args, **kw)
        finally:
            cfg.attributes.pop("connection", None)


def upgrade(url: str | URL | None = None, revision: str = "head", *, sql: bool = False, **kw: Any) -> None:
    cfg = alembic_config(url, **kw)
    _run(cfg, command.upgrade, revision, sql=sql)


def downgrade(url: str | URL | None = None, revision: str = "-1", *, sql: bool = False, **kw: Any) -> None:
    cfg = alembic_config(url, **kw)
    _run(cfg, command.downgrade, revision, sql=sql)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def stamp_head(engine: Engine) -> None:
    """Record that the database is at the newest migration (it was made from the metadata)."""
    with engine.begin() as conn:
        ctx = MigrationContext.configure(conn)
        ctx.stamp(ScriptDirectory.from_config(alembic_config("sqlite://")), "head")


# --- helpers for the migration scripts -------------------------------------------------------------
def migration_app_role(op: Any) -> str:
    """The app role for the running migration (from the Alembic config, else the env)."""
    cfg = op.get_context().config
    return app_role(cfg.attributes.get("app_role") if cfg is not None else None)


def grant_app_role(op: Any, tables: Iterable[str], privileges: str = APP_PRIVILEGES) -> None:
    """GRANT the flows' role its privileges on `tables` (Postgres only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    role = migration_app_role(op)
    names = ", ".join(f'"{t}"' for t in tables)
    op.execute(f"GRANT {privileges} ON TABLE {names} TO {role}")


def revoke_app_role(op: Any, tables: Iterable[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    role = migration_app_role(op)
    names = ", ".join(f'"{t}"' for t in tables)
    op.execute(
        f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN "
        f"REVOKE ALL ON TABLE {names} FROM {role}; END IF; END $$"
    )


# --- the app role's password -------------------------------------------------------------------------
APP_PASSWORD_FILE_ENV = "CJFLOW_APP_PASSWORD_FILE"
_VERIFIER = re.compile(r"^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$")


def set_app_password(url: str | URL | None, password_file: str | Path, app_role_name: str | None = None) -> None:
    """Set the flows' role's password from a file (Postgres only). The SCRAM-SHA-256
    verifier is computed here by libpq, so the password itself never reaches the server
    (nor its statement log)."""
    from sinks.credentials import DatabaseConfigError
    from sinks.sql import make_engine

    role = app_role(app_role_name)
    try:
        password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise DatabaseConfigError(f"cannot read the app password file {password_file}: {exc.strerror}") from None
    if not password:
        raise DatabaseConfigError(f"the app password file {password_file} is empty")
    engine = make_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            return
        with engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            verifier = raw.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
            if not _VERIFIER.match(verifier):  # it is spliced into the statement below
                raise RuntimeError("unexpected password verifier format from libpq")
            try:
                conn.exec_driver_sql(f"ALTER ROLE {role} PASSWORD '{verifier}'")
            except sqlalchemy.exc.ProgrammingError as exc:
                if getattr(exc.orig, "sqlstate", None) != "42501":
                    raise
                raise DatabaseConfigError(
                    f"the migration role may not set {role}'s password (it needs CREATEROLE, and from"
                    f" PostgreSQL 16 ADMIN OPTION on {role}); grant that, or set the password yourself"
                    " and leave CJFLOW_APP_PASSWORD_FILE unset (docs/storage.md)"
                ) from None
    finally:
        engine.dispose()
