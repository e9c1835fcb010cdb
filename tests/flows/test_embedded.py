"""The embedded flow's timing behaviour: stuck requests expire and are re-issued."""

from __future__ import annotations

import time

from bench.pipeline import batch_events
from flows.embedded import run_embedded
from judges.registry import build_judge
from schemas import BatchSettings


def test_stuck_requests_expire_are_reissued_and_the_run_ends():
    settings = BatchSettings(budget=12, in_flight=3, comparison_timeout_s=0.3, max_attempts=3, max_mean_se=None,
                             judge_provider="cj_test_plugins:hangs_first_time")
    events = batch_events(1, 6, seed=1, settings=settings, prefix="stuck")
    started = time.perf_counter()
    collector = run_embedded(events, build_judge("cj_test_plugins:hangs_first_time"))
    elapsed = time.perf_counter() - started
    (result,) = collector.results.values()
    assert result.status.value == "completed"
    assert result.comparisons_valid == 12
    assert result.errors_by_kind["deadline"] >= 3  # every first attempt timed out
    assert result.comparisons_errored == 0  # the second attempts answered
    assert elapsed < 30  # hung calls do not keep the run open


def test_a_stored_batch_reads_back_its_result_and_inputs(tmp_path):
    from flows.embedded import read_stored_batch, schema_problem
    from sinks.rows import event_rows
    from sinks.sql import create_schema, make_engine

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = make_engine(url)
    assert schema_problem(engine) == "has no cjflow schema"
    create_schema(engine)
    assert schema_problem(engine) is None
    settings = BatchSettings(budget=15, max_mean_se=None)
    events = batch_events(1, 5, seed=2, settings=settings, prefix="stored")
    collector = run_embedded(events, build_judge("offline"), db_url=url)
    (result,) = collector.results.values()
    stored = read_stored_batch(engine, result.batch_id)
    assert stored is not None and stored.result == result and stored.result_error is None
    ((_t, batch_row),) = event_rows(events[0])
    essay_rows = {row["essay_id"]: row for ev in events[1:] for _t, row in event_rows(ev)}
    assert stored.same_inputs(batch_row, essay_rows)
    other = {**essay_rows, next(iter(essay_rows)): {**next(iter(essay_rows.values())), "text": "changed"}}
    assert not stored.same_inputs(batch_row, other)
    assert not stored.same_inputs({**batch_row, "assignment": "other"}, essay_rows)
    assert read_stored_batch(engine, "no-such-batch") is None
    engine.dispose()
