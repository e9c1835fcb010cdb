"""Rate limiter, retry policy and prices, on their own and against the fake provider."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta

import pytest
from judge_helpers import judge_all, make_judge, request, run

from judges.base import JudgeError
from judges.errors import ProviderError, retry_after_s
from judges.limiter import RateLimiter, TokenBucket, parse_rate_headers
from judges.prices import cost_usd, price_for
from judges.retry import RetryingJudge, RetryPolicy
from schemas import ErrorKind, Judgement, TokenUsage, utc_now


def test_token_bucket_rate_and_debt():
    b = TokenBucket(600, burst_s=1.0)  # 10/s, holds 10
    assert b.capacity == 10 and b.wait_for(10) == 0
    b.take(10)
    assert b.wait_for(1) == pytest.approx(0.1, abs=0.01)
    b.take(5)  # a debt
    assert b.wait_for(1) == pytest.approx(0.6, abs=0.02)


def test_limiter_paces_requests():
    async def go() -> float:
        lim = RateLimiter("p", "m", rpm=1200, burst_s=0.1)  # 20/s, burst 2
        start = time.monotonic()
        for _ in range(12):
            async with lim.slot(10):
                pass
        return time.monotonic() - start

    assert 0.45 <= run(go()) <= 1.5  # (12 - 2) / 20 s, plus scheduling slack on a busy machine


def test_limiter_caps_concurrency():
    async def go() -> int:
        lim = RateLimiter("p", "m", max_concurrency=3)
        current = peak = 0

        async def call() -> None:
            nonlocal current, peak
            async with lim.slot(1):
                current += 1
                peak = max(peak, current)
                await asyncio.sleep(0.02)
                current -= 1

        await asyncio.gather(*(call() for _ in range(12)))
        return peak

    assert run(go()) == 3


def test_limiter_token_estimate_is_corrected_from_usage():
    async def go() -> None:
        lim = RateLimiter("p", "m", tpm=60_000, burst_s=1.0, token_headroom=0)  # 1000/s, holds 1000
        async with lim.slot(800) as permit:
            permit.settle(100)  # used far less than estimated: 700 back
        assert lim.tokens.level == pytest.approx(900, abs=5)
        async with lim.slot(100) as permit:
            permit.settle(1500)  # used more: a debt
        assert lim.tokens.level < 0

    run(go())


def test_limits_are_split_across_processes():
    lim = RateLimiter("p", "m", rpm=600, tpm=100_000, share=4, token_headroom=0)
    assert lim.requests.per_min == 150 and lim.tokens.per_min == 25_000


def test_rate_headers_of_both_providers_are_read_and_adapted_to():
    a = parse_rate_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z",
            "anthropic-ratelimit-tokens-remaining": "1000",
        }
    )
    assert a.requests_limit == 50 and a.requests_remaining == 0 and a.tokens_remaining == 1000 and a.exhausted
    o = parse_rate_headers(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "1m0.5s",
            "x-ratelimit-reset-tokens": "120ms",
            "x-ratelimit-remaining-tokens": "2000",
        }
    )
    assert o.requests_reset_s == pytest.approx(60.5) and o.tokens_reset_s == pytest.approx(0.12)
    lim = RateLimiter("p", "m", rpm=600, share=2)
    lim.observe({"x-ratelimit-limit-requests": "120", "x-ratelimit-remaining-requests": "0"})
    assert lim.requests.per_min == 60  # the provider's lower limit, our half of it
    assert lim._paused_until > time.monotonic()
    assert retry_after_s({"retry-after": "3"}) == 3 and retry_after_s({"retry-after-ms": "250"}) == 0.25


class _Flaky:
    provider, model = "p", "m"

    def __init__(self, errors: list[JudgeError]):
        self.errors, self.calls = errors, 0

    async def judge(self, req):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return Judgement.for_request(req, winner="A", provider="p", model="m", tokens=TokenUsage(input=10))

    async def aclose(self) -> None:
        pass


def test_retry_backoff_is_bounded_and_jittered():
    p = RetryPolicy(base_s=0.5, max_s=4)
    rng = random.Random(1)
    delays = [p.delay(n, None, rng) for n in range(1, 10)]
    assert all(0 <= d <= 4 for d in delays) and len(set(delays)) == len(delays)
    assert 2.0 <= p.delay(1, 2.0, rng) <= 2.5  # Retry-After wins over backoff


def test_retry_gives_up_by_attempts_and_by_deadline_keeping_tokens():
    errs = [ProviderError(ErrorKind.SERVER_ERROR, "boom", usage=TokenUsage(input=5)) for _ in range(5)]
    inner = _Flaky(errs)
    j = run(RetryingJudge(inner, RetryPolicy(max_attempts=3, base_s=0.001)).judge(request(0)))
    assert j.error_kind == ErrorKind.SERVER_ERROR and inner.calls == 3 and j.tokens.input == 15
    inner = _Flaky([ProviderError(ErrorKind.RATE_LIMITED, "slow down", retry_after=30)])
    j = run(RetryingJudge(inner, RetryPolicy(deadline_s=5)).judge(request(0)))
    assert j.error_kind == ErrorKind.RATE_LIMITED and "deadline" in j.error_detail and inner.calls == 1
    inner = _Flaky([ProviderError(ErrorKind.OVERLOADED, "busy", retry_after=0.01)])
    j = run(RetryingJudge(inner).judge(request(0)))
    assert j.winner == "A" and inner.calls == 2


def test_retry_respects_the_request_deadline():
    inner = _Flaky([ProviderError(ErrorKind.SERVER_ERROR, "x", retry_after=2)])
    req = request(0).model_copy(update={"deadline": utc_now() + timedelta(seconds=1)})
    j = run(RetryingJudge(inner).judge(req))
    assert j.winner == "error" and inner.calls == 1


def test_prices():
    usage = TokenUsage(input=1_000_000, output=100_000, cache_read=1_000_000, cache_write=0)
    assert cost_usd("claude-haiku-4-5", usage) == pytest.approx(1.0 + 0.5 + 0.1)
    assert cost_usd("claude-haiku-4-5-20251001", usage) == cost_usd("claude-haiku-4-5", usage)
    assert cost_usd("gpt-5.1", usage, batch=True) == pytest.approx((1.25 + 1.0 + 0.125) / 2)
    assert price_for("no-such-model") is None and cost_usd("no-such-model", usage) == 0


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_client_limits_keep_the_fake_provider_from_refusing(fake, provider):
    fake.config.rpm, fake.config.tpm, fake.config.burst_s = 1200, 200_000, 0.5
    fake.reset_limits()
    judge = make_judge(fake, provider, rpm=1200, tpm=200_000, burst_s=0.5)
    started = time.monotonic()
    results = run(judge_all(judge, [request(i, f"[q={i % 5}]", "[q=2]") for i in range(40)]))
    assert all(r.is_valid for r in results)
    assert fake.stats.rate_limited_requests == 0 and fake.stats.rate_limited_tokens == 0
    assert time.monotonic() - started >= (40 - 10) / 20 * 0.9  # paced at 20/s after the burst


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("configured", [60_000, None])
def test_client_adopts_the_providers_limit_from_headers(fake, provider, configured):
    fake.config.rpm, fake.config.burst_s = 1200, 0.5  # the provider allows 20/s
    fake.reset_limits()
    judge = make_judge(fake, provider, rpm=configured, backoff_base_s=0.05)  # told 1000/s, or nothing
    limiter = judge.inner.inner.limiter
    results = run(judge_all(judge, [request(i, f"[q={i % 5}]", "[q=2]") for i in range(60)]))
    assert all(r.is_valid for r in results)  # 429s at first, retried
    assert limiter.requests.per_min == 1200  # then the provider's limit from its headers
