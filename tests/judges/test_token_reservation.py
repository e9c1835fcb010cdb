"""What the limiter reserves per call: OpenAI counts a request against tokens/min at
admission as its prompt plus its whole max_completion_tokens, so reserving only the expected
output let a saturated limiter send more than the provider admits (steady 429s)."""

from __future__ import annotations

import pytest

from judges.config import ProviderSettings
from judges.errors import ProviderError
from judges.providers import provider_client
from schemas import ErrorKind, Judgement, TokenUsage
from tests.judges.judge_helpers import request

ESSAY = "word " * 500  # 2,500 characters


def _estimate(provider: str, n: int = 1) -> tuple[int, ProviderSettings]:
    settings = ProviderSettings.for_provider(provider, max_tokens=1024)
    client = provider_client(provider, None, settings, api_key="sk-test")
    return client.estimate([request(i, ESSAY, ESSAY) for i in range(n)]), settings


def test_openai_reserves_the_output_cap_it_sends():
    one, settings = _estimate("openai")
    assert one >= int(2 * len(ESSAY) / 3.2) + settings.max_tokens
    four, _ = _estimate("openai", 4)  # a bundle is sent with 4 x the cap (at most 32,000)
    assert four >= 4 * settings.max_tokens


def test_anthropic_reserves_the_expected_output():
    one, settings = _estimate("anthropic")
    assert one < int(2 * len(ESSAY) / 3.2) + settings.max_tokens
    assert one >= int(2 * len(ESSAY) / 3.2) + settings.expected_output_tokens


def _limited(provider: str):
    """A LimitedJudge whose token bucket barely refills while a test runs (1 token/s, a
    bucket of 60,000), so its level drop is what the call was charged."""
    from judges.limiter import LimitedJudge, RateLimiter

    settings = ProviderSettings.for_provider(provider, max_tokens=1024)
    client = provider_client(provider, None, settings, api_key="sk-test")
    limiter = RateLimiter(provider, "m", rpm=None, tpm=60, burst_s=60_000, token_headroom=0)
    return LimitedJudge(client, limiter), client


def _charged(limited, call) -> float:  # type: ignore[no-untyped-def]
    """Run `call(limited)` through the real LimitedJudge; tokens its bucket lost."""
    import asyncio

    async def go() -> float:
        before = limited.limiter.tokens.level
        try:
            await call(limited)
        except ProviderError:
            pass
        return before - limited.limiter.tokens.level

    return asyncio.run(go())


USED = TokenUsage(input=1500, output=150, cache_read=100)


@pytest.mark.parametrize(("provider", "expected"), [("openai", 1500 + 100 + 1024), ("anthropic", 1500 + 150 + 100)])
def test_a_returned_call_stays_charged_with_the_output_cap_on_openai(provider, expected):
    """Reserving the cap is not enough: settling to the use gave it back at once, so the
    sustained rate was unchanged. An OpenAI call keeps its prompt + cap on the bucket; an
    Anthropic call is charged what it used."""
    limited, client = _limited(provider)

    async def answered(req):  # type: ignore[no-untyped-def]
        return Judgement.for_request(req, winner="A", provider=provider, model="m", tokens=USED)

    client.judge = answered  # type: ignore[method-assign]  # the provider call, after admission
    assert _charged(limited, lambda lj: lj.judge(request(0, ESSAY, ESSAY))) == pytest.approx(expected, abs=2)


@pytest.mark.parametrize(("provider", "expected"), [("openai", 1000 + 1024), ("anthropic", 1000 + 300)])
def test_an_admitted_call_that_fails_with_usage_is_charged_like_a_success(provider, expected):
    """Admitted and failed with usage (say a refusal after 300 tokens): OpenAI counted its
    cap like any other call, so the limiter must too."""
    limited, client = _limited(provider)

    async def refused(_req):  # type: ignore[no-untyped-def]
        raise ProviderError(ErrorKind.REFUSED, "no", usage=TokenUsage(input=1000, output=300))

    client.judge = refused  # type: ignore[method-assign]
    assert _charged(limited, lambda lj: lj.judge(request(0))) == pytest.approx(expected, abs=2)


def test_a_call_the_provider_did_not_admit_is_refunded():
    limited, client = _limited("openai")

    async def limited_out(_req):  # type: ignore[no-untyped-def]
        raise ProviderError(ErrorKind.RATE_LIMITED, "429", retry_after=0.0)

    client.judge = limited_out  # type: ignore[method-assign]
    assert _charged(limited, lambda lj: lj.judge(request(0))) == pytest.approx(0, abs=2)


@pytest.mark.parametrize(("provider", "cap"), [("openai", 4 * 1024), ("anthropic", None)])
def test_a_bundle_is_charged_its_prompts_and_the_bundle_cap_on_openai(provider, cap):
    """judge_many: one call for 4 comparisons, sent with 4 x the cap; an item that failed
    on its own (its usage counted, or none) does not change what the call is charged."""
    limited, client = _limited(provider)
    reqs = [request(i, ESSAY, ESSAY) for i in range(4)]
    item = TokenUsage(input=400, output=60, cache_read=20)

    async def answered(rs):  # type: ignore[no-untyped-def]
        out: list[Judgement | ProviderError] = [
            Judgement.for_request(r, winner="B", provider=provider, model="m", tokens=item) for r in rs[:2]
        ]
        out.append(ProviderError(ErrorKind.INVALID_OUTPUT, "bad item", usage=item))
        out.append(ProviderError(ErrorKind.INVALID_OUTPUT, "bad item"))
        return out

    client.judge_many = answered  # type: ignore[method-assign]
    used = 3 * (400 + 60 + 20)
    expected = used if cap is None else 3 * (400 + 20) + cap
    assert _charged(limited, lambda lj: lj.judge_many(reqs)) == pytest.approx(expected, abs=2)


@pytest.mark.parametrize(("provider", "expected"), [("openai", 2000 + 4 * 1024), ("anthropic", 2000 + 500)])
def test_a_bundle_that_fails_after_admission_with_usage_is_charged_like_a_success(provider, expected):
    limited, client = _limited(provider)

    async def cut(_rs):  # type: ignore[no-untyped-def]
        raise ProviderError(ErrorKind.INVALID_OUTPUT, "cut at max_tokens", usage=TokenUsage(input=2000, output=500))

    client.judge_many = cut  # type: ignore[method-assign]
    assert _charged(limited, lambda lj: lj.judge_many([request(i) for i in range(4)])) == pytest.approx(expected, abs=2)
