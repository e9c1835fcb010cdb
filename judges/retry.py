"""Retries that wrap any raising judge: exponential backoff with full jitter, honouring
Retry-After, for rate limits, overload, 5xx, timeouts and connection errors; one more try
for invalid output; none for 400/401/403/404 or refusals. Bounded by attempts and by a
deadline (the policy's and the request's). The result is always a judgement: an `error`
one with the kind when the call cannot succeed. Tokens of failed attempts are kept.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Protocol

from judges.base import JudgeError, error_judgement
from judges.errors import RETRY_ONCE, RETRYABLE
from schemas import ComparisonRequested, ErrorKind, Judgement, TokenUsage, utc_now
from telemetry.metrics import LLM_RETRIES


class RaisingJudge(Protocol):
    """A judge that raises `JudgeError` for failures (the provider clients and their wrappers)."""

    provider: str
    model: str

    async def judge(self, request: ComparisonRequested) -> Judgement: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 0.5
    max_s: float = 30.0
    deadline_s: float = 600.0
    invalid_output_retries: int = 1

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds before attempt `attempt + 1`: full-jitter exponential backoff, or the
        provider's Retry-After plus a little jitter (so waiters do not return in lockstep)."""
        r = rng or random
        if retry_after is not None:
            return retry_after + r.uniform(0, min(self.base_s, 1.0))
        return r.uniform(0, min(self.max_s, self.base_s * 2 ** (attempt - 1)))


def add_usage(a: TokenUsage, b: TokenUsage | None) -> TokenUsage:
    if b is None:
        return a
    return TokenUsage(
        input=a.input + b.input,
        output=a.output + b.output,
        cache_read=a.cache_read + b.cache_read,
        cache_write=a.cache_write + b.cache_write,
    )


class RetryingJudge:
    def __init__(self, inner: RaisingJudge, policy: RetryPolicy | None = None, rng: random.Random | None = None):
        self.inner = inner
        self.policy = policy or RetryPolicy()
        self.provider, self.model = inner.provider, inner.model
        self._rng = rng or random.Random()

    async def judge(self, request: ComparisonRequested) -> Judgement:
        policy = self.policy
        now = time.monotonic()
        deadline = now + min(policy.deadline_s, max(0.0, (request.deadline - utc_now()).total_seconds()))
        used = TokenUsage()
        invalid = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                judgement = await self.inner.judge(request)
            except JudgeError as exc:
                used = add_usage(used, getattr(exc, "usage", None))
                retry = exc.kind in RETRYABLE
                if exc.kind in RETRY_ONCE:
                    retry, invalid = invalid < policy.invalid_output_retries, invalid + 1
                if not retry:
                    return self._error(request, exc.kind, exc.detail, used)
                if attempt >= policy.max_attempts:
                    return self._error(request, exc.kind, f"{exc.detail} (gave up after {attempt} attempts)", used)
                delay = policy.delay(attempt, exc.retry_after, self._rng)
                if time.monotonic() + delay > deadline:
                    return self._error(
                        request, exc.kind, f"{exc.detail} (retry deadline reached after {attempt} attempts)", used
                    )
                LLM_RETRIES.labels(self.provider, self.model, exc.kind.value).inc()
                await asyncio.sleep(delay)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug in a layer must not take the flow down
                return self._error(request, ErrorKind.JUDGE_ERROR, f"{type(exc).__name__}: {exc}", used)
            if used != TokenUsage():
                judgement = judgement.model_copy(update={"tokens": add_usage(judgement.tokens, used)})
            return judgement

    def _error(self, request: ComparisonRequested, kind: ErrorKind, detail: str, used: TokenUsage) -> Judgement:
        return error_judgement(request, self, kind, detail, tokens=used)

    async def aclose(self) -> None:
        await self.inner.aclose()
