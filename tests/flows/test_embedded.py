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
