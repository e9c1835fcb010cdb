"""A request naming a judge that cannot be built gets an `error` judgement (the flow keeps
running), and `cjflow submit` refuses such a judge before publishing anything."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from judge_helpers import TEST_KEY, request

import flows.judge
import flows.kafka_cli
from flows.cli import main
from flows.judge import JudgePool
from judges.registry import build_judge
from operators.aio import background_loop
from operators.judge_call import JudgeCallLogic
from schemas import BatchOpened, ErrorKind

BROKEN = [
    ("nope", "unknown judge 'nope'"),
    ("nomod:fn", "cannot import plug-in judge module 'nomod'"),
    ("openai", "no API key for the openai judge"),
]


@pytest.fixture
def no_openai_key(monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_API_KEY_FILE", "CJFLOW_OPENAI_API_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)


def collect(logic: JudgeCallLogic, out, n: int, timeout_s: float = 10.0) -> list:
    """The judgements in `out` plus those of later activations, until there are `n`."""
    results = list(out)
    deadline = time.monotonic() + timeout_s
    while len(results) < n and time.monotonic() < deadline:
        time.sleep(0.01)
        more, _ = logic.on_notify()
        results.extend(more)
    return results


def registry_judge_for(r):
    return build_judge(r.judge_provider, r.judge_model)


# The pool is told to allow the plug-in, so what is tested is a listed plug-in that does not import.
@pytest.mark.parametrize(
    "judge_for", [lambda: JudgePool(plugins=["nomod:fn"]), lambda: registry_judge_for], ids=["pool", "bare-registry"]
)
def test_unbuildable_judges_give_one_error_judgement_each_and_the_logic_keeps_judging(judge_for, no_openai_key):
    logic = JudgeCallLogic(judge_for(), None)
    for i, (spec, cause) in enumerate(BROKEN):
        out, _ = logic.on_item(request(i, judge_provider=spec))
        (j,) = list(out)  # answered at once, not raised
        assert j.comparison_id == f"cmp-{i}" and j.winner == "error"
        assert j.error_kind is ErrorKind.JUDGE_ERROR
        assert f"cannot build judge {spec!r}" in j.error_detail and cause in j.error_detail
        assert j.provider == spec and j.model == "unknown"
    assert logic.in_flight == 0 and logic.snapshot() == []

    out, _ = logic.on_item(request(9, "[q=9] a long and careful essay", "[q=1] short", judge_provider="offline"))
    (ok,) = collect(logic, out, 1)
    assert ok.comparison_id == "cmp-9" and ok.is_valid and ok.provider == "offline" and ok.error_kind is None


def test_detail_names_the_model_too(no_openai_key):
    logic = JudgeCallLogic(JudgePool(), None)
    out, _ = logic.on_item(request(0, judge_provider="openai", judge_model="gpt-x"))
    (j,) = list(out)
    assert "cannot build judge 'openai' (model 'gpt-x')" in j.error_detail and j.model == "gpt-x"


def test_a_restored_request_for_a_broken_judge_is_answered_not_raised(no_openai_key):
    snapshot = [request(0, judge_provider="nomod:fn").model_dump_json()]
    logic = JudgeCallLogic(JudgePool(), snapshot)  # the restore itself must not raise
    assert logic.in_flight == 1 and logic.notify_at() is not None
    (j,) = collect(logic, [], 1)
    assert j.error_kind is ErrorKind.JUDGE_ERROR and "'nomod:fn'" in j.error_detail
    assert logic.in_flight == 0 and logic.snapshot() == []


def test_on_eof_answers_a_broken_request_too(no_openai_key):
    logic = JudgeCallLogic(JudgePool(), [request(0, judge_provider="nope").model_dump_json()])
    out, _ = logic.on_eof()
    assert [j.error_kind for j in out] == [ErrorKind.JUDGE_ERROR]


def test_pool_remembers_a_failure_briefly_then_builds_the_judge_once_it_can(monkeypatch, no_openai_key):
    calls: list[str] = []

    def counting_build(name, model=None):
        calls.append(name)
        return build_judge(name, model)

    monkeypatch.setattr(flows.judge, "build_judge", counting_build)
    now = [1000.0]
    pool = JudgePool(retry_s=30.0, clock=lambda: now[0])
    logic = JudgeCallLogic(pool, None)
    for i in range(50):
        (j,) = list(logic.on_item(request(i, judge_provider="openai"))[0])
        assert j.error_kind is ErrorKind.JUDGE_ERROR and "no API key" in j.error_detail
    assert calls == ["openai"]  # not rebuilt for every request

    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    now[0] += 10  # still remembered as broken
    (j,) = list(logic.on_item(request(100, judge_provider="openai"))[0])
    assert j.error_kind is ErrorKind.JUDGE_ERROR and calls == ["openai"]
    now[0] += 30  # the failure has expired: the key is there now, the judge builds
    judge = pool(request(101, judge_provider="openai"))
    try:
        assert judge.provider == "openai" and calls == ["openai", "openai"]
        assert pool(request(102, judge_provider="openai")) is judge and len(calls) == 2
    finally:
        asyncio.run_coroutine_threadsafe(judge.aclose(), background_loop()).result(10)


def essays(tmp_path: Path) -> Path:
    folder = tmp_path / "essays"
    folder.mkdir()
    for i in range(3):
        (folder / f"s{i}.txt").write_text(f"Essay number {i}. [q={i}]")
    return folder


@pytest.fixture
def published(monkeypatch) -> list:
    """Replaces the Kafka producer: the events `cjflow submit` would publish (no broker)."""
    sent: list = []
    monkeypatch.setattr(flows.kafka_cli, "publish", lambda _settings, _topic, events: sent.extend(events))
    return sent


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nope", "unknown judge 'nope'"), ("nomod:fn", "cannot import plug-in judge module 'nomod'")],
)
def test_submit_refuses_an_unknown_judge_with_one_line_and_exit_2(tmp_path, capsys, published, spec, message):
    rc = main(["submit", str(essays(tmp_path)), "--judge", spec])
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("cjflow: error: ") and message in err
    assert published == []  # nothing reached Kafka


@pytest.mark.parametrize("spec", ["openai", "anthropic", "offline", "cj_test_plugins:by_marker"])
def test_submit_accepts_known_judges_without_their_api_keys(tmp_path, monkeypatch, published, spec, no_openai_key):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["submit", str(essays(tmp_path)), "--judge", spec]) == 0
    opened = [e for e in published if isinstance(e, BatchOpened)]
    assert len(opened) == 1 and opened[0].settings.judge_provider == spec
