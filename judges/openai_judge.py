"""The OpenAI judge: Chat Completions through the official async SDK with structured output
(a strict JSON schema). The system block comes first and is byte-identical across calls,
so OpenAI's automatic prefix caching applies. SDK retries are off: ours wrap it."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import httpx2
import openai
from pydantic import SecretStr

from judges.config import DEFAULT_MODELS, ProviderSettings
from judges.errors import ProviderError, kind_for_status, out_of_quota, quota_error, retry_after_s
from judges.llm import LLMJudge, connection_refused, field_of, http_client_limits, http_shards, use_aiohttp
from judges.prompt import BUNDLE_SCHEMA, VERDICT_SCHEMA, Prompt
from schemas import ErrorKind, TokenUsage


class OpenAIJudge(LLMJudge):
    provider = "openai"
    default_model = DEFAULT_MODELS["openai"]
    counts_output_cap = True  # tokens/min counts prompt + max_completion_tokens at admission

    def __init__(
        self,
        settings: ProviderSettings,
        api_key: SecretStr,
        model: str | None = None,
        client: openai.AsyncOpenAI | None = None,
    ):
        super().__init__(settings, api_key, model)
        kwargs: dict[str, Any] = {}
        if settings.base_url:  # else OPENAI_BASE_URL or the SDK default
            kwargs["base_url"] = settings.base_url
        self.clients = (
            [client]
            if client
            else [
                openai.AsyncOpenAI(
                    api_key=api_key.get_secret_value(),
                    max_retries=0,
                    timeout=settings.timeout_s,
                    http_client=(
                        openai.DefaultAioHttpClient if use_aiohttp(settings) else openai.DefaultAsyncHttpxClient
                    )(limits=httpx2.Limits(**http_client_limits(settings))),
                    **kwargs,
                )
                for _ in range(http_shards(settings))
            ]
        )
        self.client = self.clients[0]
        self._next = itertools.count()

    def request_body(self, prompt: Prompt, max_tokens: int, temperature: float | None, bundle: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "judgements" if bundle else "judgement",
                    "strict": True,
                    "schema": BUNDLE_SCHEMA if bundle else VERDICT_SCHEMA,
                },
            },
            "max_completion_tokens": max_tokens,
            # Route calls with the same system block together: better prefix-cache hits.
            "prompt_cache_key": "cjflow-" + prompt.sha256_system[:16],
        }
        if temperature is not None:
            body["temperature"] = temperature
        if self.settings.reasoning_effort:
            body["reasoning_effort"] = self.settings.reasoning_effort
        return body

    async def _send(self, body: dict[str, Any]) -> tuple[Any, Mapping[str, str]]:
        try:
            client = self.clients[next(self._next) % len(self.clients)]
            raw = await client.chat.completions.with_raw_response.create(**body)
            # The JSON as sent, not the SDK's model of it (cheaper; we read a few fields).
            return await _json(raw), raw.headers
        except openai.OpenAIError as exc:
            raise map_error(exc) from None
        except ValueError as exc:  # a 200 whose body is not JSON: a provider fault, worth a retry
            raise ProviderError(ErrorKind.SERVER_ERROR, f"unreadable response body: {exc}"[:300]) from None

    def parse_response(self, response: Any) -> tuple[Any, TokenUsage]:
        return parse_completion(response)

def map_error(exc: Exception) -> ProviderError:
    """An SDK exception as a ProviderError of the right kind."""
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        quota = out_of_quota(getattr(exc, "code", None), getattr(exc, "type", None))
        if quota:  # a 429 that no wait will cure
            said = exc.body.get("message") if isinstance(exc.body, dict) else None
            return quota_error(quota, exc.status_code, str(said or getattr(exc, "message", "") or exc), headers)
        message = f"HTTP {exc.status_code}: {getattr(exc, 'message', '') or exc}"[:400]
        return ProviderError(
            kind_for_status(exc.status_code), message, retry_after_s(headers), status=exc.status_code, headers=headers
        )
    if isinstance(exc, openai.APITimeoutError) and not connection_refused(exc):
        return ProviderError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(ErrorKind.CONNECTION, f"connection error: {exc.__cause__ or exc}")
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderError(ErrorKind.INVALID_OUTPUT, f"unreadable response: {exc}")
    return ProviderError(ErrorKind.JUDGE_ERROR, f"{type(exc).__name__}: {exc}")


async def _json(raw: Any) -> Any:
    # with_raw_response gives a LegacyAPIResponse whose body is already read
    return raw.http_response.json()


def usage_of(usage: Any) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    details = field_of(usage, "prompt_tokens_details")
    cached = (field_of(details, "cached_tokens") or 0) if details else 0
    return TokenUsage(
        input=max(0, (field_of(usage, "prompt_tokens") or 0) - cached),
        output=field_of(usage, "completion_tokens") or 0,
        cache_read=cached,
    )


def parse_completion(completion: Any) -> tuple[Any, TokenUsage]:
    """The JSON text of a chat completion (the SDK's model or its JSON, as in batch output
    files); a length stop, refusals and empty answers are errors."""
    if not isinstance(completion, dict) and not hasattr(completion, "choices"):
        raise ProviderError(ErrorKind.INVALID_OUTPUT, "the answer is not a chat completion")
    usage = usage_of(field_of(completion, "usage"))
    choices = field_of(completion, "choices") or []
    if not choices:
        raise ProviderError(ErrorKind.INVALID_OUTPUT, "no choices in the answer", usage=usage)
    choice = choices[0]
    message = field_of(choice, "message") or {}
    finish = field_of(choice, "finish_reason")
    if finish == "length":
        raise ProviderError(ErrorKind.MAX_TOKENS, "output cut at max_completion_tokens", usage=usage)
    if finish == "content_filter" or field_of(message, "refusal"):
        raise ProviderError(ErrorKind.REFUSED, "the model refused", usage=usage)
    content = field_of(message, "content")
    if not content:
        raise ProviderError(ErrorKind.INVALID_OUTPUT, "empty answer", usage=usage)
    return content, usage
