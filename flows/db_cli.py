"""`cjflow db ...`: database migrations (also what the Kubernetes migration Job runs).

    cjflow db upgrade   [--url URL] [--revision head] [--sql] [--app-role NAME] [--app-password-file F]
    cjflow db downgrade [REVISION (default -1; 'base' drops every table)] [--url URL] [--sql]
    cjflow db current   [--url URL]

The URL defaults to $CJFLOW_DATABASE_URL (password from $CJFLOW_DATABASE_PASSWORD_FILE);
migrations need an owner/admin role, the flows then connect as the app role.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="database schema migrations (Alembic)")
    actions = db.add_subparsers(dest="db_action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="database URL (default: $CJFLOW_DATABASE_URL)")
        p.add_argument(
            "--app-role", help="the flows' least-privilege role (default: $CJFLOW_APP_ROLE or cjflow_app)"
        )

    up = actions.add_parser("upgrade", help="migrate the schema up (default: to the newest revision)")
    common(up)
    up.add_argument("--revision", default="head")
    up.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    up.add_argument(
        "--app-password-file",
        default=os.environ.get("CJFLOW_APP_PASSWORD_FILE") or None,
        help="then set the app role's password from this file (default: $CJFLOW_APP_PASSWORD_FILE); "
        "only its SCRAM verifier is sent",
    )
    up.set_defaults(handler=cmd_upgrade)

    down = actions.add_parser("downgrade", help="migrate the schema down (default: one revision)")
    common(down)
    down.add_argument("revision", nargs="?", default="-1", help="target revision, -N, or 'base'")
    down.add_argument("--sql", action="store_true", help="print the SQL instead of running it")
    down.set_defaults(handler=cmd_downgrade)

    cur = actions.add_parser("current", help="print the database's revision and the newest one")
    common(cur)
    cur.set_defaults(handler=cmd_current)


def _fail(exc: BaseException) -> int:
    from sinks.credentials import DatabaseConfigError
    from sinks.errors import classify

    if isinstance(exc, (DatabaseConfigError, ValueError)):
        print(f"cjflow: error: {exc}", file=sys.stderr)
        return 2
    c = classify(exc)
    print(f"cjflow: database error ({c.kind}): {c.message}", file=sys.stderr)
    return 1


def _guarded(fn) -> int:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import SQLAlchemyError

    from sinks.credentials import DatabaseConfigError

    try:
        fn()
    except (DatabaseConfigError, ValueError, SQLAlchemyError) as exc:
        return _fail(exc)
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from sinks import migrate

    def run() -> None:
        if args.sql:
            migrate.upgrade(args.url, args.revision, sql=True, app_role_name=args.app_role, stdout=sys.stdout)
            return
        migrate.upgrade(args.url, args.revision, app_role_name=args.app_role)
        print(f"database at revision {args.revision} ({migrate.head_revision()} is the newest)")
        if args.app_password_file:
            migrate.set_app_password(args.url, args.app_password_file, args.app_role)
            print(f"set the password of role {migrate.app_role(args.app_role)}")

    return _guarded(run)


def cmd_downgrade(args: argparse.Namespace) -> int:
    from sinks import migrate

    def run() -> None:
        migrate.downgrade(
            args.url, args.revision, sql=args.sql, app_role_name=args.app_role,
            **({"stdout": sys.stdout} if args.sql else {}),
        )
        if not args.sql:
            print(f"database downgraded to {args.revision}")

    return _guarded(run)


def cmd_current(args: argparse.Namespace) -> int:
    from sinks import migrate
    from sinks.sql import make_engine

    def run() -> None:
        engine = make_engine(args.url)
        try:
            rev = migrate.current_revision(engine)
        finally:
            engine.dispose()
        head = migrate.head_revision()
        state = "up to date" if rev == head else "needs 'cjflow db upgrade'"
        print(f"current: {rev or 'none'}; newest: {head} ({state})")

    return _guarded(run)
