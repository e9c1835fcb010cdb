"""What the limiter reserves per call: OpenAI counts a request against tokens/min at
admission as its prompt plus its whole max_completion_tokens, so reserving only the expected
output let a saturated limiter send more than the provider admits (steady 429s)."""

from __future__ import annotations

from judges.config import ProviderSettings
from judges.providers import provider_client
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


def test_openai_calls_stay_charged_with_their_output_cap_after_they_return():
    """Reserving the cap is not enough: settling to the use gave it back at once, so the
    sustained rate was unchanged. An OpenAI call keeps its prompt + cap on the bucket; an
    Anthropic call is charged what it used."""
    from judges.limiter import LimitedJudge, RateLimiter
    from schemas import TokenUsage

    used = TokenUsage(input=1500, output=150, cache_read=100)
    for provider, expected in (("openai", 1500 + 100 + 1024), ("anthropic", 1500 + 150 + 100)):
        settings = ProviderSettings.for_provider(provider, max_tokens=1024)
        limited = LimitedJudge(provider_client(provider, None, settings, api_key="sk-test"),
                               RateLimiter(provider, "m", rpm=60, tpm=100_000))
        assert limited._charged(1750, used, 1) == expected


def test_an_admitted_openai_call_that_fails_with_usage_is_charged_its_cap_too():
    """Admitted and failed with usage (say a refusal after 300 tokens): OpenAI counted its
    cap like any other call, so the limiter must too."""
    import asyncio

    from judges.errors import ProviderError
    from judges.limiter import LimitedJudge, RateLimiter
    from schemas import ErrorKind, TokenUsage

    settings = ProviderSettings.for_provider("openai", max_tokens=1024)
    client = provider_client("openai", None, settings, api_key="sk-test")
    limited = LimitedJudge(client, RateLimiter("openai", "m", rpm=600, tpm=1_000_000))

    async def refused(_request):
        raise ProviderError(ErrorKind.REFUSED, "no", usage=TokenUsage(input=1000, output=300))

    client.judge = refused  # type: ignore[method-assign]  # the call itself, after admission
    settled: list[int] = []

    async def go():
        async with limited.limiter.slot(100) as permit:
            real = permit.settle
            permit.settle = lambda tokens: settled.append(tokens) or real(tokens)  # type: ignore[method-assign]
            try:
                await client.judge(request(0))
            except ProviderError as exc:
                limited._settle_failure(exc, permit, 1)

    asyncio.run(go())
    assert settled[0] == 1000 + 1024  # prompt + cap, not the 1,300 used
