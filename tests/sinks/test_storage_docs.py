"""The example SQL of docs/storage.md runs (as the flows' role) and answers sensibly."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from schemas import DeadLetter
from sinks.sql import write_events
from sinks.synthetic import T0, batch_events

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"
pytestmark = pytest.mark.postgres


def _queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_documented_queries_run(app_engine):
    events = batch_events("batch-1", 8, 40, start=T0)
    events += batch_events("batch-1-rerun", 8, 20, start=T0 + timedelta(days=1))
    events += batch_events("running", 5, 10, result=False, start=T0 + timedelta(days=2))
    events.append(DeadLetter.create("batch-1", "invalid anchor grade: Z", "assessment", b"{}", occurred_at=T0))
    write_events(app_engine, events)
    queries = _queries()
    assert len(queries) >= 8
    results = []
    with app_engine.connect() as conn:
        for sql in queries:
            results.append(conn.execute(text(sql)).mappings().all())
    latest, ranking, history, cost_per_day, running, pairs, errors, dead = results[:8]
    assert len(latest) == 1 and latest[0]["status"] == "completed"
    assert [r["rank"] for r in ranking] == list(range(1, 9)) and ranking[0]["projected_grade"] == "C"
    assert [r["batch_id"] for r in history] == ["batch-1", "batch-1-rerun"]
    assert {(r["model"], r["calls"]) for r in cost_per_day} == {("offline-m1", 40), ("offline-m1", 20)}
    assert len(running) == 1 and running[0]["calls"] == 10 + 1  # one comparison failed once
    assert len(pairs) == 40 and all(r["winner"] in ("A", "B") for r in pairs)
    assert errors[0]["error_kind"] == "timeout" and errors[0]["attempts"] == 40 // 7
    assert len(dead) == 1 and dead[0]["source"] == "assessment"
