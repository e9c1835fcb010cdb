"""The Anthropic judge: Messages API through the official async SDK, the verdict as a forced
tool call, the system block marked for prompt caching. SDK retries are off: ours wrap it."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import anthropic
import httpx2
from pydantic import SecretStr

from judges.config import DEFAULT_MODELS, ProviderSettings
from judges.errors import ProviderError, kind_for_status, out_of_quota, quota_error, retry_after_s
from judges.llm import LLMJudge, connection_refused, field_of, http_client_limits, http_shards, use_aiohttp
from judges.prompt import BUNDLE_SCHEMA, TOOL_BUNDLE, TOOL_SINGLE, VERDICT_SCHEMA, Prompt
from schemas import ErrorKind, TokenUsage

# A task block this long is worth its own cache breakpoint (shorter ones are below the
# provider's minimum cacheable length anyway).
TASK_CACHE_CHARS = 4000


class AnthropicJudge(LLMJudge):
    provider = "anthropic"
    default_model = DEFAULT_MODELS["anthropic"]

    def __init__(
        self,
        settings: ProviderSettings,
        api_key: SecretStr,
        model: str | None = None,
        client: anthropic.AsyncAnthropic | None = None,
    ):
        super().__init__(settings, api_key, model)
        self.clients = (
            [client]
            if client
            else [
                anthropic.AsyncAnthropic(
                    api_key=api_key.get_secret_value(),
                    base_url=settings.base_url,  # None: ANTHROPIC_BASE_URL or the SDK default
                    max_retries=0,
                    timeout=settings.timeout_s,
                    http_client=(
                        anthropic.DefaultAioHttpClient if use_aiohttp(settings) else anthropic.DefaultAsyncHttpxClient
                    )(limits=httpx2.Limits(**http_client_limits(settings))),
                )
                for _ in range(http_shards(settings))
            ]
        )
        self.client = self.clients[0]
        self._next = itertools.count()

    def request_body(self, prompt: Prompt, max_tokens: int, temperature: float | None, bundle: bool) -> dict[str, Any]:
        name = TOOL_BUNDLE if bundle else TOOL_SINGLE
        task: dict[str, Any] = {"type": "text", "text": prompt.task}
        if len(prompt.task) >= TASK_CACHE_CHARS:
            task["cache_control"] = {"type": "ephemeral"}
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "system": [{"type": "text", "text": prompt.system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [task, {"type": "text", "text": prompt.essays}]}],
            "tools": [
                {
                    "name": name,
                    "description": "Record the judgement"
                    + ("s of all comparisons." if bundle else " of the two essays."),
                    "input_schema": BUNDLE_SCHEMA if bundle else VERDICT_SCHEMA,
                }
            ],
            "tool_choice": {"type": "tool", "name": name},
        }
        if temperature is not None:
            body["temperature"] = temperature
        return body

    async def _send(self, body: dict[str, Any]) -> tuple[Any, Mapping[str, str]]:
        try:
            client = self.clients[next(self._next) % len(self.clients)]
            raw = await client.messages.with_raw_response.create(**body)
            # The JSON as sent, not the SDK's model of it: building that model costs a
            # fair share of a call's CPU at a thousand calls in flight, and we read 4 fields.
            return await raw.json(), raw.headers
        except anthropic.AnthropicError as exc:
            raise map_error(exc) from None
        except ValueError as exc:  # a 200 whose body is not JSON: a provider fault, worth a retry
            raise ProviderError(ErrorKind.SERVER_ERROR, f"unreadable response body: {exc}"[:300]) from None

    def parse_response(self, response: Any) -> tuple[Any, TokenUsage]:
        return parse_message(response)

def map_error(exc: Exception) -> ProviderError:
    """An SDK exception as a ProviderError of the right kind."""
    if isinstance(exc, anthropic.APIStatusError):
        message = getattr(exc, "api_message", None) or str(exc)
        # a spend limit (some come as a 429) or a billing error: no wait will cure it
        quota = out_of_quota(getattr(exc, "error_code", None), getattr(exc, "type", None))
        if quota:
            return quota_error(quota, exc.status_code, message, exc.response.headers)
        return provider_error(exc.status_code, exc.response.headers, message)
    if isinstance(exc, anthropic.APITimeoutError) and not connection_refused(exc):
        return ProviderError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(ErrorKind.CONNECTION, f"connection error: {exc.__cause__ or exc}")
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ProviderError(ErrorKind.INVALID_OUTPUT, f"unreadable response: {exc}")
    return ProviderError(ErrorKind.JUDGE_ERROR, f"{type(exc).__name__}: {exc}")


def provider_error(status: int, headers: Mapping[str, str], message: str) -> ProviderError:
    kind = kind_for_status(status)
    return ProviderError(
        kind, f"HTTP {status}: {message}"[:400], retry_after_s(headers), status=status, headers=headers
    )


def usage_of(usage: Any) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    return TokenUsage(
        input=field_of(usage, "input_tokens") or 0,
        output=field_of(usage, "output_tokens") or 0,
        cache_read=field_of(usage, "cache_read_input_tokens") or 0,
        cache_write=field_of(usage, "cache_creation_input_tokens") or 0,
    )


def parse_message(message: Any) -> tuple[Any, TokenUsage]:
    """The tool input (or text) of a Message (the SDK's model or its JSON); max_tokens and
    refusals are errors."""
    if not isinstance(message, dict) and not hasattr(message, "content"):
        raise ProviderError(ErrorKind.INVALID_OUTPUT, "the answer is not a message")
    usage = usage_of(field_of(message, "usage"))
    stop = field_of(message, "stop_reason")
    if stop == "max_tokens":
        raise ProviderError(ErrorKind.MAX_TOKENS, "output cut at max_tokens", usage=usage)
    if stop == "refusal":
        raise ProviderError(ErrorKind.REFUSED, "the model refused", usage=usage)
    texts = []
    for block in field_of(message, "content") or ():
        kind = field_of(block, "type")
        if kind == "tool_use":
            return field_of(block, "input"), usage
        if kind == "text":
            texts.append(field_of(block, "text") or "")
    if texts:
        return "".join(texts), usage
    raise ProviderError(ErrorKind.INVALID_OUTPUT, f"no tool call in the answer (stop: {stop})", usage=usage)
