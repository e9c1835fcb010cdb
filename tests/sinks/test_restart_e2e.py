"""End to end: the embedded flow writing to Postgres as the flows' role while the server
is restarted (`pg_ctlcluster ... main restart`) in the middle of the run. No row may be
lost and none duplicated."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from telemetry.metrics import SINK_ERRORS

pytestmark = pytest.mark.postgres


def _essays(prefix: str, n: int) -> dict[str, str]:
    return {
        f"{prefix}-{i:02d}": ("Uniforms help " * (20 + 7 * i) + ". However, moreover.\n\n") * (1 + i % 3)
        for i in range(n)
    }


def _sink_errors() -> float:
    return sum(s.value for m in SINK_ERRORS.collect() for s in m.samples if s.name.endswith("_total"))


def test_postgres_restart_mid_run_loses_no_row_and_duplicates_none(pg, clean_db):
    from flows.embedded import run_embedded
    from flows.folder import FolderBatch
    from judges.registry import build_judge
    from schemas import BatchSettings
    from sinks.sql import make_engine

    settings = BatchSettings(seed=7, budget=150)
    events = []
    for b in ("r1", "r2"):
        events += FolderBatch(f"restart-{b}", _essays(b, 20), {}).events(settings, None, "Argue.")

    seen: list[str] = []
    restarted = threading.Event()
    restarter: list[threading.Thread] = []

    def on_judgement(j) -> None:
        seen.append(j.event_id)
        if len(seen) == 100 and not restarted.is_set():
            restarted.set()
            th = threading.Thread(target=pg.restart, daemon=True)
            th.start()
            restarter.append(th)
            deadline = time.monotonic() + 15  # hold the flow until the server is going down
            while time.monotonic() < deadline and _server_up(pg):
                time.sleep(0.02)

    errors_before = _sink_errors()
    started = time.perf_counter()
    collector = run_embedded(events, build_judge("offline"), db_url=clean_db.app_url, on_judgement=on_judgement)
    elapsed = time.perf_counter() - started
    for th in restarter:
        th.join(60)
    assert restarted.is_set(), "the run finished before the restart point"
    assert _sink_errors() > errors_before, "no write hit the restart: the test proved nothing"
    assert set(collector.results) == {"restart-r1", "restart-r2"}

    engine = make_engine(clean_db.app_url)
    try:
        with engine.connect() as conn:
            q = lambda sql: conn.execute(text(sql)).scalar_one()
            assert q("SELECT current_user") == "cjflow_app"
            stored = {r[0] for r in conn.execute(text("SELECT event_id FROM judgements"))}
            assert q("SELECT count(*) FROM judgements") == len(stored)  # (primary key) no duplicates
            assert stored == set(seen), "judgements lost or invented"
            assert len(seen) == len(set(seen))
            assert q("SELECT count(*) FROM (SELECT comparison_id, attempt FROM judgements "
                     "GROUP BY 1, 2 HAVING count(*) > 1) d") == 0
            assert q("SELECT count(*) FROM comparisons") == q("SELECT count(DISTINCT comparison_id) FROM judgements")
            assert q("SELECT count(*) FROM batches") == 2
            assert q("SELECT count(*) FROM essays") == 40
            assert q("SELECT count(*) FROM batch_results") == 2
            for batch_id, result in collector.results.items():
                n_scores = conn.execute(
                    text("SELECT count(*) FROM essay_scores WHERE batch_id = :b"), {"b": batch_id}
                ).scalar_one()
                assert n_scores == len(result.essays)
                valid = conn.execute(
                    text("SELECT count(*) FROM comparisons WHERE batch_id = :b AND winner <> 'error'"), {"b": batch_id}
                ).scalar_one()
                assert valid == result.comparisons_valid
            assert q("SELECT count(*) FROM resource_usage") == 2
            assert q("SELECT count(*) FROM dead_letters") == len(collector.dead_letters) == 0
    finally:
        engine.dispose()
    print(f"run {elapsed:.1f} s, {len(seen)} judgements, sink errors retried: {_sink_errors() - errors_before:.0f}")


def _server_up(pg) -> bool:
    try:
        with pg.connect("test"):
            return True
    except Exception:  # noqa: BLE001
        return False
