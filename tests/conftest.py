"""Shared fixtures: paths to the examples, and a tiny plug-in judge module."""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # see flows/__init__.py

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(ROOT / "tests" / "plugins"))


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def ensure_postgres() -> bool:
    """Start the local Postgres cluster if it is down (as .ci/run does); True if reachable."""
    import glob
    import subprocess
    import time

    import sqlalchemy as sa

    def ok() -> bool:
        try:
            eng = sa.create_engine(PG_ADMIN_URL)
            with eng.connect():
                pass
            eng.dispose()
            return True
        except Exception:  # noqa: BLE001
            return False

    if ok():
        return True
    versions = glob.glob("/etc/postgresql/*")
    if versions:
        v = Path(sorted(versions)[-1]).name
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", v, "main", "start"], capture_output=True)
        for _ in range(30):
            if ok():
                return True
            time.sleep(1)
    return False


@pytest.fixture
def pg_url():
    """A fresh Postgres database with cjflow's tables; dropped afterwards."""
    import os
    import uuid

    import sqlalchemy as sa

    if not ensure_postgres():
        if os.environ.get("CI"):
            pytest.fail("Postgres is not reachable on 127.0.0.1:5432")
        pytest.skip("Postgres is not reachable on 127.0.0.1:5432")
    from sinks.sql import create_schema

    name = f"cjflow_t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    eng = sa.create_engine(url)
    create_schema(eng)
    eng.dispose()
    yield url
    for attempt in range(3):  # another test may be restarting Postgres right now
        try:
            admin.dispose()
            with admin.connect() as con:
                con.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            break
        except sa.exc.OperationalError:
            ensure_postgres()
    admin.dispose()
