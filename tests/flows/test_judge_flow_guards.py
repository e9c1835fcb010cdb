"""The judge flow's guards: it runs only the plug-ins an operator allows, shares one judge
(one rate limiter) per model it calls, and does not call the judge for expired requests."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import cj_test_plugins
import pytest
from prometheus_client import REGISTRY

import flows.judge
from flows.cli import judge_from_cli
from flows.folder import InputError
from flows.judge import JudgePool
from flows.settings import Settings, load_settings
from judges.registry import judge_key
from operators.aio import background_loop
from operators.judge_call import JudgeCallLogic
from schemas import ComparisonRequested, ErrorKind, PresentedEssay, utc_now

PLUGIN = "cj_test_plugins:by_marker"
TEST_KEY = "sk-test-guards-0123456789"


def request(i: int, a: str = "[q=3] a", b: str = "[q=7] b", deadline_s: float = 300, **kw: object):
    return ComparisonRequested.create(
        "batch-g", f"batch-g#{i}", 1,
        essay_a=PresentedEssay(essay_id=f"a{i}", text=a), essay_b=PresentedEssay(essay_id=f"b{i}", text=b),
        deadline=utc_now() + timedelta(seconds=deadline_s), **kw,
    )


def collect(logic: JudgeCallLogic, out, n: int, timeout_s: float = 10.0) -> list:
    results = list(out)
    until = time.monotonic() + timeout_s
    while len(results) < n and time.monotonic() < until:
        time.sleep(0.01)
        results.extend(logic.on_notify()[0])
    return results


def close(*judges) -> None:
    for judge in judges:
        asyncio.run_coroutine_threadsafe(judge.aclose(), background_loop()).result(10)


# --- 1. plug-ins: only the allowed ones ---------------------------------------------------------


@pytest.fixture
def probe(tmp_path, monkeypatch) -> Iterator[tuple[str, Path]]:
    """A plug-in module whose import leaves a mark: `module:judge` and the mark's path."""
    name = f"cj_guard_probe_{tmp_path.name.replace('-', '_')}"
    mark = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(mark)!r}, 'w').close()\n\ndef judge(essay_a, essay_b):\n    return 'A'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{name}:judge", mark
    sys.modules.pop(name, None)


def test_a_plugin_not_allowed_is_not_imported_and_gets_a_judge_error(probe):
    spec, mark = probe
    logic = JudgeCallLogic(JudgePool(), None)
    (j,) = list(logic.on_item(request(0, judge_provider=spec))[0])
    assert j.winner == "error" and j.error_kind is ErrorKind.JUDGE_ERROR
    assert f"cannot build judge {spec!r}" in j.error_detail
    assert "not allowed" in j.error_detail and "CJFLOW_JUDGE_PLUGINS" in j.error_detail
    assert not mark.exists() and spec.partition(":")[0] not in sys.modules  # its code never ran
    assert logic.in_flight == 0

    # built-in judges need no listing; a listed plug-in is imported and judges
    logic = JudgeCallLogic(JudgePool(plugins=[spec]), None)
    out = list(logic.on_item(request(1, judge_provider="offline"))[0])
    out += logic.on_item(request(2, judge_provider=spec))[0]
    results = {r.comparison_id: r for r in collect(logic, out, 2)}
    assert all(r.is_valid for r in results.values()) and mark.exists()
    assert results["batch-g#2"].provider == "plugin" and results["batch-g#2"].model == spec


def test_a_request_cannot_run_arbitrary_callables(tmp_path):
    victim, moved = tmp_path / "victim", tmp_path / "moved"
    victim.write_text("x")
    logic = JudgeCallLogic(JudgePool(plugins=[PLUGIN]), None)
    (j,) = list(logic.on_item(request(0, str(victim), str(moved), judge_provider="os:rename"))[0])
    assert j.error_kind is ErrorKind.JUDGE_ERROR and "not allowed" in j.error_detail
    assert victim.exists() and not moved.exists()


def test_the_kafka_judge_flow_takes_its_allow_list_from_the_setting(monkeypatch):
    monkeypatch.setenv("CJFLOW_JUDGE_PLUGINS", f" {PLUGIN} , mod.sub:obj.fn ,")
    settings = load_settings()
    assert settings.judge_plugin_specs() == {PLUGIN, "mod.sub:obj.fn"}
    assert Settings(judge_plugins="").judge_plugin_specs() == frozenset()  # the default: none
    monkeypatch.setenv("CJFLOW_JUDGE_PLUGINS", "mymodule.judge")
    with pytest.raises(InputError, match="judge_plugins"):
        load_settings()

    pools: list[JudgePool] = []

    class Recorded(JudgePool):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            pools.append(self)

    monkeypatch.setattr(flows.judge, "JudgePool", Recorded)
    flows.judge.build_flow(settings)
    (pool,) = pools
    assert pool(request(0, judge_provider=PLUGIN)).model == PLUGIN
    with pytest.raises(flows.judge.JudgeBuildError, match="not allowed"):
        pool(request(1, judge_provider="cj_test_plugins:shortest_wins"))


def test_the_embedded_cli_still_builds_any_plugin():
    assert judge_from_cli("cj_test_plugins:shortest_wins", None).model == "cj_test_plugins:shortest_wins"


# --- 2. one judge, one limiter, per model called ------------------------------------------------


def test_the_default_model_named_or_not_shares_one_judge(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.delenv("CJFLOW_ANTHROPIC_MODEL", raising=False)
    monkeypatch.setenv("CJFLOW_OPENAI_MODEL", "gpt-5-mini")
    pool = JudgePool()
    unset, named = pool(request(0, judge_provider="anthropic")), pool(
        request(1, judge_provider="anthropic", judge_model="claude-haiku-4-5")
    )
    o_unset, o_named = pool(request(2, judge_provider="openai")), pool(
        request(3, judge_provider="openai", judge_model="gpt-5-mini")
    )
    other = pool(request(4, judge_provider="openai", judge_model="gpt-5.1"))
    try:
        assert unset is named and unset.model == "claude-haiku-4-5"
        assert o_unset is o_named and o_unset.model == "gpt-5-mini"  # CJFLOW_OPENAI_MODEL
        assert other is not o_unset and other.model == "gpt-5.1"
        assert judge_key("openai") == ("openai", "gpt-5-mini") and judge_key("offline", "x") == ("offline", None)
    finally:
        close(unset, o_unset, other)


def test_the_models_one_worker_calls_are_bounded(monkeypatch):
    """A publisher naming a new model per batch would grow judges, limiters and metric
    series without end; past the bound the request fails with a judge_error saying why."""
    from flows.judge import MAX_MODELS_PER_PROVIDER

    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    monkeypatch.delenv("CJFLOW_ANTHROPIC_MODEL", raising=False)
    pool = JudgePool()
    built = [pool(request(i, judge_provider="anthropic", judge_model=f"made-up-{i}"))
             for i in range(MAX_MODELS_PER_PROVIDER)]
    try:
        with pytest.raises(flows.judge.JudgeBuildError, match="too many anthropic models"):
            pool(request(99, judge_provider="anthropic", judge_model="one-more"))
        # the models already called keep working, the deployment's default model is always
        # served, and other providers have their own room
        assert pool(request(100, judge_provider="anthropic", judge_model="made-up-0")) is built[0]
        default = pool(request(102, judge_provider="anthropic"))
        built.append(default)
        assert default.model == "claude-haiku-4-5"
        assert pool(request(101, judge_provider="offline")) is not None
    finally:
        close(*built)


def test_failed_builds_are_remembered_within_a_bound():
    """Every refused name is remembered (so it is not rebuilt per request), but not forever:
    names a publisher invents must not grow the pool's memory without end."""
    from flows.judge import MAX_FAILURES

    now = [0.0]
    pool = JudgePool(retry_s=30.0, clock=lambda: now[0])
    for i in range(MAX_FAILURES + 50):
        with pytest.raises(flows.judge.JudgeBuildError):
            pool(request(i, judge_provider=f"nope-{i}"))
    assert len(pool._failed) == MAX_FAILURES
    assert ("nope-0", None) not in pool._failed and (f"nope-{MAX_FAILURES + 49}", None) in pool._failed
    now[0] = 31.0  # all expired: the next failure clears them
    with pytest.raises(flows.judge.JudgeBuildError):
        pool(request(0, judge_provider="nope-again"))
    assert list(pool._failed) == [("nope-again", None)]
    assert pool._keys == {}  # nothing kept for names that never built


def test_provider_models_that_fail_to_build_leave_no_trace(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY_FILE", raising=False)
    pool = JudgePool()
    for i in range(50):
        with pytest.raises(flows.judge.JudgeBuildError):
            pool(request(i, judge_provider="openai", judge_model=f"invented-{i}"))
    assert pool._keys == {} and pool._judges == {} and len(pool._failed) == 50


# --- 3. expired requests are not called ---------------------------------------------------------


def expired_count(provider: str) -> float:
    return REGISTRY.get_sample_value("cjflow_judge_requests_expired_total", {"provider": provider}) or 0.0


def test_requests_past_their_deadline_are_dropped_not_called():
    before = {p: expired_count(p) for p in ("plugin", "offline")}
    logic = JudgeCallLogic(JudgePool(plugins=[PLUGIN]), None)
    late = [request(i, f"[q=1] late {i}", "[q=2] late", deadline_s=-60 * i, judge_provider=PLUGIN)
            for i in range(1, 4)]
    out = []
    for r in late:
        out += logic.on_item(r)[0]
    assert out == [] and logic.in_flight == 0 and logic.snapshot() == []
    (live,) = collect(logic, logic.on_item(request(9, "[q=5] live", "[q=2] live", judge_provider=PLUGIN))[0], 1)
    assert live.comparison_id == "batch-g#9" and live.is_valid
    called = {a for a, _b in cj_test_plugins.CALLS}
    assert "[q=5] live" in called and not any(r.essay_a.text in called for r in late)

    # a restored snapshot (after an outage) does not re-issue an attempt that expired meanwhile
    stale = request(10, "[q=1] stale", "[q=2] stale", deadline_s=-1)
    restored = JudgeCallLogic(JudgePool(), [stale.model_dump_json()])
    assert restored.in_flight == 0 and restored.snapshot() == [] and restored.on_eof()[0] == []
    assert expired_count("plugin") - before["plugin"] == 3 and expired_count("offline") - before["offline"] == 1


def test_one_batch_is_spread_over_every_shard_and_an_attempt_meets_its_repeats():
    """Each judge process's limiter holds 1/N of the rate: keyed by batch, a lone batch ran at
    1/N of what the deployment pays for."""
    from datetime import timedelta

    from flows.judge import shard_key
    from schemas import ComparisonRequested, PresentedEssay, utc_now

    def req(seq: int, attempt: int = 1) -> ComparisonRequested:
        essay = PresentedEssay(essay_id="e", text="t")
        return ComparisonRequested.create("one-batch", f"one-batch#{seq}", attempt, essay_a=essay, essay_b=essay,
                                          deadline=utc_now() + timedelta(minutes=5))

    shards = {shard_key(req(i), 16) for i in range(400)}
    assert len(shards) == 16
    assert all(shard_key(req(i, 1), 16) == shard_key(req(i, 3), 16) for i in range(50))
