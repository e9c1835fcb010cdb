"""Sink benchmark: judgement rows/s written to Postgres, batched vs row at a time.

    python -m bench.sink [--judgements 60000] [--single 3000] [--url URL | --admin-url URL] [--json]

Without `--url` it creates a scratch database on the local server (as the admin of
`--admin-url`, default postgresql://postgres@127.0.0.1:5432/test), migrates it, writes as
the flows' least-privilege role `cjflow_app` (like production), and drops it afterwards.
With `--url` it writes into that (migrated) database under fresh batch ids.

Each judgement event is two rows (the judgement, and its comparison's upsert); the rates
count judgement rows, as the target (>= 5,000 judgement rows/s) does. Modes:

- `batched`: `SqlWriter` (what SqlSink runs), transactions of 5,000 rows, one
  INSERT ... SELECT FROM unnest(...) ON CONFLICT per table per transaction.
- `batched_executemany`: the same transactions with executemany (the SQLite path).
- `bytewax_sink`: `SqlSink` in a Bytewax dataflow (TestingSource, batches of 1,000).
- `replay`: the batched events again (every row already there: all conflicts).
- `row_at_a_time`: one transaction per judgement (a naive sink).

A warm-up of 2,000 judgements runs first and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from typing import Any

from sqlalchemy import func, select, text

from schemas.envelope import Envelope
from sinks import migrate
from sinks import tables as t
from sinks.credentials import redacted
from sinks.sql import SqlWriter, make_engine, write_events
from sinks.synthetic import batch_events

TARGET = 5000.0
APP_ROLE = "cjflow_app"


def judgement_stream(prefix: str, n_judgements: int, per_batch: int = 500, essays: int = 30) -> list[Envelope]:
    """Batches (opened + essays first) then their judgements; no results (judgements only)."""
    events: list[Envelope] = []
    parents: list[Envelope] = []
    n_batches = max(1, -(-n_judgements // per_batch))
    for b in range(n_batches):
        evs = batch_events(f"{prefix}-{b}", essays, per_batch, result=False, error_every=0)
        parents += evs[: essays + 1]
        events += evs[essays + 1 :]
    return parents + events[:n_judgements]


def _split(events: list[Envelope]) -> tuple[list[Envelope], list[Envelope]]:
    parents = [e for e in events if e.event_type != "comparison.judged"]
    return parents, [e for e in events if e.event_type == "comparison.judged"]


def _count_judgements(engine, prefix: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(t.judgements).where(t.judgements.c.batch_id.like(f"{prefix}-%"))
        ).scalar_one()


def _result(n: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"judgements": n, "seconds": round(seconds, 3), "judgement_rows_per_s": round(n / seconds, 1), **extra}


def run_batched(engine, n: int, prefix: str, bulk: bool = True) -> dict[str, Any]:
    parents, judgements = _split(judgement_stream(prefix, n))
    write_events(engine, parents)
    writer = SqlWriter(engine, bulk=bulk)
    started = time.perf_counter()
    writer.write(judgements)
    elapsed = time.perf_counter() - started
    assert _count_judgements(engine, prefix) == len(judgements)
    replay_started = time.perf_counter()
    writer.write(judgements)
    replay = time.perf_counter() - replay_started
    assert _count_judgements(engine, prefix) == len(judgements)
    return {
        **_result(len(judgements), elapsed, chunk_rows=writer.chunk_rows),
        "replay": _result(len(judgements), replay),
    }


def run_row_at_a_time(engine, n: int, prefix: str) -> dict[str, Any]:
    parents, judgements = _split(judgement_stream(prefix, n))
    write_events(engine, parents)
    writer = SqlWriter(engine, bulk=False)
    started = time.perf_counter()
    for ev in judgements:
        writer.write([ev])
    elapsed = time.perf_counter() - started
    assert _count_judgements(engine, prefix) == len(judgements)
    return _result(len(judgements), elapsed)


def run_bytewax(url: str, engine, n: int, prefix: str) -> dict[str, Any]:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, run_main

    from sinks.sql import SqlSink

    parents, judgements = _split(judgement_stream(prefix, n))
    write_events(engine, parents)
    flow = Dataflow("bench_sink")
    op.output("db", op.input("in", flow, TestingSource(judgements, batch_size=1000)), SqlSink(url))
    started = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - started
    assert _count_judgements(engine, prefix) == len(judgements)
    return _result(len(judgements), elapsed, bytewax_batch_size=1000)


def _scratch_database(admin_url: str) -> tuple[str, str, str]:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"cjflow_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    base = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    db_admin = base.render_as_string(hide_password=False)
    migrate.upgrade(db_admin)
    app = base.set(username=APP_ROLE, password=None).render_as_string(hide_password=False)
    return name, db_admin, app


def _drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__.split("\n")[0])
    p.add_argument("--judgements", type=int, default=60_000, help="judgements written by the batched modes")
    p.add_argument("--single", type=int, default=3_000, help="judgements written row at a time")
    p.add_argument("--url", help="a migrated database to write into (default: a scratch database)")
    p.add_argument("--admin-url", default=os.environ.get("CJFLOW_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args(argv)

    scratch = None
    if args.url:
        url = args.url
    else:
        scratch, _db_admin, url = _scratch_database(args.admin_url)
    engine = make_engine(url)
    run_id = uuid.uuid4().hex[:6]
    try:
        with engine.connect() as conn:
            user = conn.execute(text("SELECT current_user")).scalar_one()
            version = conn.execute(text("SHOW server_version")).scalar_one()
        run_batched(engine, 2_000, f"warmup-{run_id}")  # connections, catalog caches, first pages
        results = {
            "batched": run_batched(engine, args.judgements, f"bb-{run_id}"),
            "batched_executemany": run_batched(engine, max(1, args.judgements // 4), f"be-{run_id}", bulk=False),
            "bytewax_sink": run_bytewax(url, engine, args.judgements, f"bw-{run_id}"),
            "row_at_a_time": run_row_at_a_time(engine, args.single, f"rt-{run_id}"),
        }
    finally:
        engine.dispose()
        if scratch:
            _drop_database(args.admin_url, scratch)
    batched = results["batched"]["judgement_rows_per_s"]
    report = {
        "command": "python -m bench.sink " + " ".join(argv if argv is not None else sys.argv[1:]),
        "database": redacted(url) if args.url else f"scratch database on {redacted(args.admin_url)}",
        "connected_as": user,
        "postgres": version,
        "machine": {"cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2), "python": platform.python_version()},
        "results": results,
        "speedup_batched_vs_row_at_a_time": round(batched / results["row_at_a_time"]["judgement_rows_per_s"], 1),
        "target_judgement_rows_per_s": TARGET,
        "meets_target": batched >= TARGET,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"Postgres {version} as {user}; {report['machine']}")
        for name, r in results.items():
            print(f"{name:>22}: {r['judgement_rows_per_s']:>10,.0f} judgement rows/s ({r['judgements']} in {r['seconds']} s)")
        print(f"{'replay (batched)':>22}: {results['batched']['replay']['judgement_rows_per_s']:>10,.0f} judgement rows/s")
        print(f"batched is {report['speedup_batched_vs_row_at_a_time']}x row at a time; target {TARGET:,.0f}/s: "
              f"{'met' if report['meets_target'] else 'NOT met'}")
    return 0 if report["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
