"""Provider batch mode: an error while polling a batch or fetching its results is retried in
place (same batch) when transient, rather than failing the group (which had the retry layer
submit, and pay for, every item again in a new batch). A batch given up on while it may still
run is cancelled; a cancel that fails is logged."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import anthropic
import httpx2 as httpx
import openai
import pytest
from judge_helpers import judge_all, make_judge, request, run

from judges.batch_api import BatchApiJudge
from judges.errors import ProviderError
from judges.prices import cost_usd
from judges.prompt import build_prompt
from schemas import ComparisonRequested, ErrorKind, utc_now
from schemas.events import PresentedEssay

PROVIDERS = ["anthropic", "openai"]
SDK = {"anthropic": anthropic, "openai": openai}


def _batch_judge(fake, provider, **overrides):
    settings = {"mode": "batch", "batch_window_s": 0.1, "batch_poll_s": 0.1, "backoff_base_s": 0.01}
    settings.update(overrides)
    judge = make_judge(fake, provider, **settings)
    core = judge.inner.inner
    assert isinstance(core, BatchApiJudge)
    return judge, core


def _dropped(provider):
    return SDK[provider].APIConnectionError(request=httpx.Request("GET", "http://fake"))


def _flaky(provider, fn, fail_on):
    """`fn`, raising a dropped connection on the calls numbered in `fail_on` (1-based)."""
    calls = {"n": 0}

    async def wrapper(*a, **kw):
        calls["n"] += 1
        if calls["n"] in fail_on:
            raise _dropped(provider)
        return await fn(*a, **kw)

    return wrapper, calls


def _sdk_batches(core, provider):
    client = core.backend.client
    return client.messages.batches if provider == "anthropic" else client.batches


def _request_due_in(i: int, seconds: float) -> ComparisonRequested:
    return ComparisonRequested.create(
        "batch-1",
        f"cmp-{i}",
        1,
        essay_a=PresentedEssay(essay_id=f"a{i}", text=f"[q={i}]"),
        essay_b=PresentedEssay(essay_id=f"b{i}", text="[q=2.5]"),
        assignment="Write about your favourite season.",
        deadline=utc_now() + timedelta(seconds=seconds),
    )


def _assert_half_price(results):
    for r in results:
        assert r.cost_usd and r.cost_usd == pytest.approx(cost_usd(r.model, r.tokens, batch=True))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_dropped_connection_while_polling_keeps_the_batch(fake, provider):
    judge, core = _batch_judge(fake, provider)
    res = _sdk_batches(core, provider)
    res.retrieve, calls = _flaky(provider, res.retrieve, {2})
    results = run(judge_all(judge, [request(i, f"[q={i}]", "[q=2.5]") for i in range(5)]))
    assert [r.winner for r in results] == ["B", "B", "B", "A", "A"]
    assert calls["n"] >= 3  # polled again after the blip
    assert fake.stats.batches == 1  # not submitted a second time
    assert fake.cancelled == []
    _assert_half_price(results)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_dropped_connection_while_fetching_results_keeps_the_batch(fake, provider):
    judge, core = _batch_judge(fake, provider)
    if provider == "anthropic":
        res = core.backend.client.messages.batches
        res.results, calls = _flaky(provider, res.results, {1})
    else:
        files = core.backend.client.files
        files.content, calls = _flaky(provider, files.content, {1})
    results = run(judge_all(judge, [request(i, f"[q={i}]", "[q=2.5]") for i in range(4)]))
    assert [r.winner for r in results] == ["B", "B", "B", "A"]
    assert calls["n"] >= 2
    assert fake.stats.batches == 1
    assert fake.cancelled == []
    _assert_half_price(results)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_is_respected_while_polling(fake, provider):
    judge, core = _batch_judge(fake, provider)
    status = core.backend.status
    times: list[float] = []

    async def rate_limited_once(batch_id):
        times.append(time.monotonic())
        if len(times) == 2:
            raise ProviderError(ErrorKind.RATE_LIMITED, "HTTP 429: slow down", 0.5, status=429)
        return await status(batch_id)

    core.backend.status = rate_limited_once
    results = run(judge_all(judge, [request(i, f"[q={i}]", "[q=2.5]") for i in range(3)]))
    assert [r.winner for r in results] == ["B", "B", "B"]
    assert len(times) >= 3 and times[2] - times[1] >= 0.5
    assert fake.stats.batches == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_lasting_error_while_polling_cancels_the_batch(fake, provider):
    fake.config.batch_delay_s = 30.0  # still running when given up on
    judge, core = _batch_judge(fake, provider)
    status = core.backend.status
    seen: list[str] = []

    async def key_revoked(batch_id):
        seen.append(batch_id)
        if len(seen) >= 2:
            raise ProviderError(ErrorKind.AUTH, "HTTP 401: invalid x-api-key", status=401)
        return await status(batch_id)

    core.backend.status = key_revoked
    results = run(judge_all(judge, [request(i, f"[q={i}]", "[q=2.5]") for i in range(3)]))
    assert [r.error_kind for r in results] == [ErrorKind.AUTH] * 3
    assert len(seen) == 2  # a lasting error is not retried
    assert fake.stats.batches == 1
    assert fake.cancelled == [seen[0]]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_past_the_deadline_polling_gives_up_and_cancels(fake, provider):
    fake.config.batch_delay_s = 30.0
    judge, core = _batch_judge(fake, provider, backoff_base_s=0.2)
    res = _sdk_batches(core, provider)
    res.retrieve, calls = _flaky(provider, res.retrieve, set(range(2, 10_000)))  # the network is gone
    started = time.monotonic()
    results = run(judge_all(judge, [_request_due_in(i, 1.5) for i in range(3)]))
    assert time.monotonic() - started < 10
    assert [r.error_kind for r in results] == [ErrorKind.DEADLINE] * 3  # given up at the deadline
    assert calls["n"] > 2  # retried in place until the deadline
    assert fake.stats.batches == 1
    assert fake.stats.batches_cancelled == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_healthy_batch_still_running_at_the_deadline_is_cancelled(fake, provider):
    """Nobody waits past the requests' deadline: polling on (up to 24 h) would have the
    provider process and bill the whole batch for nothing."""
    fake.config.batch_delay_s = 30.0
    judge, _core = _batch_judge(fake, provider)
    started = time.monotonic()
    results = run(judge_all(judge, [_request_due_in(i, 1.5) for i in range(3)]))
    assert time.monotonic() - started < 10
    assert [r.error_kind for r in results] == [ErrorKind.DEADLINE] * 3
    assert fake.stats.batches == 1 and fake.stats.batches_cancelled == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_failing_cancel_is_logged_not_raised(fake, provider, caplog):
    caplog.set_level(logging.INFO, logger="judges.batch_api")
    fake.config.batch_delay_s = 30.0
    judge, core = _batch_judge(fake, provider)
    status = core.backend.status
    polls = {"n": 0}

    async def gone(batch_id):
        polls["n"] += 1
        if polls["n"] >= 2:
            raise ProviderError(ErrorKind.NOT_FOUND, "HTTP 404: no such batch", status=404)
        return await status(batch_id)

    async def cannot_cancel(batch_id):
        raise ProviderError(ErrorKind.NOT_FOUND, "HTTP 404: no such batch", status=404)

    core.backend.status = gone
    core.backend.cancel = cannot_cancel
    results = run(judge_all(judge, [request(i, f"[q={i}]", "[q=2.5]") for i in range(2)]))
    assert [r.error_kind for r in results] == [ErrorKind.NOT_FOUND] * 2
    assert "could not cancel provider batch" in caplog.text
    assert fake.stats.batches == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_batch_the_provider_failed_is_not_cancelled_and_is_resubmitted(fake, provider):
    judge, core = _batch_judge(fake, provider)
    status = core.backend.status
    first: list[str] = []

    async def first_fails(batch_id):
        if not first or first[0] == batch_id:
            first.append(batch_id)
            return "failed: validation"
        return await status(batch_id)

    core.backend.status = first_fails
    results = run(judge_all(judge, [request(i, f"[q={i}]", "[q=2.5]") for i in range(2)]))
    assert [r.winner for r in results] == ["B", "B"]
    assert fake.stats.batches == 2  # the failed batch ended: its items go into a new one
    assert fake.cancelled == []


def test_the_backends_cancel_through_the_sdks(fake):
    async def go(provider):
        judge, core = _batch_judge(fake, provider)
        try:
            body = core.inner.request_body(build_prompt(request(0)), 100, None, bundle=False)
            batch_id = await core.backend.submit([("r0", body)])
            await core.backend.cancel(batch_id)
            return batch_id
        finally:
            await judge.aclose()

    ids = [asyncio.run(go(p)) for p in PROVIDERS]
    assert fake.cancelled == ids
