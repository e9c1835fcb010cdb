"""Where the database URL and password come from: the environment or a secret file.

- `CJFLOW_DATABASE_URL`: SQLAlchemy URL, e.g. `postgresql+psycopg://cjflow_app@db:5432/cjflow`
  (`postgresql://` is accepted and means psycopg 3).
- `CJFLOW_DATABASE_PASSWORD_FILE`: a file holding the password (a mounted Kubernetes
  Secret); used when the URL carries no password.

The password is never logged: show URLs with `redacted(url)` only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import URL, make_url

URL_ENV = "CJFLOW_DATABASE_URL"
PASSWORD_FILE_ENV = "CJFLOW_DATABASE_PASSWORD_FILE"


class DatabaseConfigError(ValueError):
    """No usable database URL; the message never contains a password."""


def database_url(
    url: str | URL | None = None,
    password_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> URL:
    """The URL to connect with: `url` or `$CJFLOW_DATABASE_URL`, plus the password from
    `password_file` or `$CJFLOW_DATABASE_PASSWORD_FILE` when the URL has none."""
    env = os.environ if env is None else env
    raw = url if url is not None else env.get(URL_ENV)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise DatabaseConfigError(f"no database URL: pass --url or set {URL_ENV}")
    try:
        parsed = make_url(raw) if isinstance(raw, str) else raw
    except Exception:  # noqa: BLE001 - the message of a parse error may echo the URL
        raise DatabaseConfigError("the database URL cannot be parsed") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    secret = password_file if password_file is not None else env.get(PASSWORD_FILE_ENV)
    if secret and parsed.password is None and not parsed.drivername.startswith("sqlite"):
        try:
            password = Path(secret).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise DatabaseConfigError(f"cannot read the database password file {secret}: {exc.strerror}") from None
        parsed = parsed.set(password=password)
    return parsed


def redacted(url: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return (make_url(url) if isinstance(url, str) else url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<unparsable database URL>"
