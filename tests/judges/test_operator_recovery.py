"""The judge operator's snapshot holds the calls in flight; a restored logic re-issues them."""

from __future__ import annotations

import asyncio
import time

from judge_helpers import TEST_KEY, request

from judges.providers import build_provider_judge
from operators.aio import background_loop
from operators.judge_call import JudgeCallLogic
from telemetry.metrics import LLM_IN_FLIGHT


def test_in_flight_calls_are_snapshotted_and_reissued(fake):
    fake.config.latency_ms = (300, 300)
    judge = build_provider_judge("anthropic", api_key=TEST_KEY, base_url=fake.url)
    logic = JudgeCallLogic(lambda _r: judge, None)
    for i in range(5):
        out, _ = logic.on_item(request(i, f"[q={i}]", "[q=2.5]"))
        assert list(out) == []  # nothing finished yet: the worker did not wait
    assert LLM_IN_FLIGHT.labels("anthropic", "claude-haiku-4-5")._value.get() >= 5
    snapshot = logic.snapshot()
    assert len(snapshot) == 5 and logic.notify_at() is not None
    # "crash": drop the logic; a new one from the snapshot re-issues the 5 calls
    restored = JudgeCallLogic(lambda _r: judge, snapshot)
    assert restored.in_flight == 5
    deadline = time.monotonic() + 10
    results = []
    while len(results) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
        out, _ = restored.on_notify()
        results.extend(out)
    assert sorted(j.comparison_id for j in results) == [f"cmp-{i}" for i in range(5)]
    assert [j.winner for j in sorted(results, key=lambda j: j.comparison_id)] == ["B", "B", "B", "A", "A"]
    assert restored.snapshot() == []
    out, _ = logic.on_eof()  # the old logic's calls still end (calls are safe to repeat)
    assert len(list(out)) == 5
    asyncio.run_coroutine_threadsafe(judge.aclose(), background_loop()).result(10)
