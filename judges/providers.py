"""Builds a ready Anthropic or OpenAI judge from configuration, composing the layers:

    AccountedJudge         cost from the price table, metrics
      RetryingJudge        backoff + jitter, Retry-After, invalid output once; never raises
        BundlingJudge      (mode "bundle") up to N comparisons per call
          LimitedJudge     requests/min, tokens/min, concurrency, rate-limit headers
            AnthropicJudge / OpenAIJudge   the bare SDK client
        BatchApiJudge      (mode "batch") provider batch APIs instead of the two above

One judge (so one limiter) per provider and model per process: the judge flow's pool
builds it once.
"""

from __future__ import annotations

from dataclasses import replace

from judges.accounting import AccountedJudge
from judges.base import Judge
from judges.config import DEFAULT_MODELS, PROVIDERS, ProviderSettings, resolve_api_key
from judges.limiter import LimitedJudge, RateLimiter
from judges.llm import LLMJudge
from judges.retry import RaisingJudge, RetryingJudge, RetryPolicy


def provider_client(name: str, model: str | None, settings: ProviderSettings, api_key: str | None = None) -> LLMJudge:
    key = resolve_api_key(name, settings, api_key)
    if name == "anthropic":
        from judges.anthropic_judge import AnthropicJudge

        return AnthropicJudge(settings, key, model)
    if name == "openai":
        from judges.openai_judge import OpenAIJudge

        return OpenAIJudge(settings, key, model)
    raise ValueError(f"unknown provider {name!r}: use anthropic or openai")


def resolved_model(name: str, model: str | None = None, settings: ProviderSettings | None = None) -> str:
    """The model the `name` judge calls when asked for `model`: that model, else
    `CJFLOW_<PROVIDER>_MODEL`, else the provider's default. The judge flow shares one judge
    (one limiter) per resolved model, so leaving the model unset or naming it are the same."""
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}: use anthropic or openai")
    if settings is None:
        settings = ProviderSettings.for_provider(name)
    return model or settings.model or DEFAULT_MODELS[name]


def build_provider_judge(
    name: str,
    model: str | None = None,
    *,
    settings: ProviderSettings | None = None,
    api_key: str | None = None,
    **overrides: object,
) -> Judge:
    """The `name` judge ("anthropic" or "openai") configured from the environment
    (`CJFLOW_<PROVIDER>_*`, see docs/judges.md); `overrides` replace settings fields.
    Raises ValueError with a readable message when no API key is set."""
    if settings is None:
        settings = ProviderSettings.for_provider(name, **overrides)
    elif overrides:
        settings = settings.model_copy(update=overrides)
    client = provider_client(name, resolved_model(name, model, settings), settings, api_key)
    policy = RetryPolicy(
        max_attempts=settings.max_attempts,
        base_s=settings.backoff_base_s,
        max_s=settings.backoff_max_s,
        deadline_s=settings.retry_deadline_s,
        invalid_output_retries=settings.invalid_output_retries,
    )
    core: RaisingJudge
    if settings.mode == "batch":
        from judges.batch_api import BatchApiJudge

        core = BatchApiJudge(client, settings.batch_window_s, settings.batch_max_requests, settings.batch_poll_s)
        # A provider batch may take up to a day: retries of its errored items stay allowed.
        policy = replace(policy, deadline_s=max(policy.deadline_s, 86_400.0))
        return AccountedJudge(RetryingJudge(core, policy), batch_pricing=True)
    limiter = RateLimiter(
        client.provider,
        client.model,
        rpm=settings.rpm,
        tpm=settings.tpm,
        max_concurrency=settings.max_concurrency,
        share=settings.share(),
        burst_s=settings.burst_s,
        token_headroom=settings.token_headroom,
    )
    limited = LimitedJudge(client, limiter)
    core = limited
    if settings.mode == "bundle":
        from judges.bundle import BundlingJudge

        core = BundlingJudge(limited, settings.bundle_size, settings.bundle_window_ms / 1000)
    return AccountedJudge(RetryingJudge(core, policy))
