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
