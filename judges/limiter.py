"""Client-side rate limiting that wraps any provider judge: token buckets for requests/min
and tokens/min (tokens estimated before a call, corrected from its usage after), a cap on
concurrent calls, and adaptation to the provider's rate-limit headers.

Configured limits are for the whole deployment; each process takes `1/share` of them.
Waiters are served first come, first served.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from judges.errors import NOT_ADMITTED, ProviderError
from judges.llm import LLMJudge
from schemas import ComparisonRequested, ErrorKind, Judgement, TokenUsage
from telemetry.metrics import RATE_LIMIT_WAIT

MAX_PAUSE_S = 60.0


class TokenBucket:
    """`per_min` units a minute, holding at most `burst_s` seconds of them (and at least two
    of the largest takes asked for, so that a take never needs a completely full bucket,
    which would waste refunds against the cap); starts full. The level may go negative (a
    debt) when a call used more than was taken for it."""

    def __init__(self, per_min: float, burst_s: float = 1.0):
        self.burst_s = burst_s
        self.min_capacity = 1.0
        self.level = 0.0
        self.at = time.monotonic()
        self.set_rate(per_min)
        self.level = self.capacity

    def set_rate(self, per_min: float) -> None:
        self._refill()
        self.per_min = per_min
        self.rate = per_min / 60.0
        self.capacity = max(self.min_capacity, self.rate * self.burst_s)
        self.level = min(self.level, self.capacity)

    def fit(self, amount: float) -> None:
        """Make room for takes of `amount` (two of them)."""
        if 2 * amount > self.capacity:
            self.min_capacity = 2 * amount
            self.capacity = self.min_capacity

    def _refill(self) -> None:
        now = time.monotonic()
        if hasattr(self, "rate"):
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` (at most one full bucket) can be taken."""
        self._refill()
        need = min(amount, self.capacity) - self.level
        return 0.0 if need <= 0 else need / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


@dataclass
class RateInfo:
    """What a response's rate-limit headers say (None: not present)."""

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset_s: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_reset_s: float | None = None

    @property
    def present(self) -> bool:
        return self.requests_remaining is not None or self.tokens_remaining is not None

    @property
    def exhausted(self) -> bool:
        return self.requests_remaining == 0 or self.tokens_remaining == 0


def parse_rate_headers(headers: Mapping[str, str]) -> RateInfo:
    """Anthropic (`anthropic-ratelimit-requests-remaining`, RFC 3339 resets) or OpenAI
    (`x-ratelimit-remaining-requests`, resets like `1m0.5s`) headers."""
    h = {k.lower(): v for k, v in headers.items()}
    info = RateInfo()
    for what in ("requests", "tokens"):
        if f"anthropic-ratelimit-{what}-remaining" in h:
            limit = h.get(f"anthropic-ratelimit-{what}-limit")
            remaining = h.get(f"anthropic-ratelimit-{what}-remaining")
            reset = _rfc3339_in(h.get(f"anthropic-ratelimit-{what}-reset"))
        else:
            limit = h.get(f"x-ratelimit-limit-{what}")
            remaining = h.get(f"x-ratelimit-remaining-{what}")
            reset = _duration_s(h.get(f"x-ratelimit-reset-{what}"))
        setattr(info, f"{what}_limit", _num(limit))
        setattr(info, f"{what}_remaining", _num(remaining))
        setattr(info, f"{what}_reset_s", reset)
    return info


def _num(v: str | None) -> float | None:
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


def _rfc3339_in(v: str | None) -> float | None:
    if not v:
        return None
    try:
        return max(0.0, datetime.fromisoformat(v).timestamp() - time.time())
    except ValueError:
        return None


def _duration_s(v: str | None) -> float | None:
    """'1m2.5s', '120ms', '3s' -> seconds."""
    if not v:
        return None
    total, num = 0.0, ""
    i = 0
    try:
        while i < len(v):
            c = v[i]
            if c.isdigit() or c == ".":
                num += c
            elif v.startswith("ms", i):
                total += float(num) / 1000
                num, i = "", i + 1
            else:
                total += float(num) * {"h": 3600, "m": 60, "s": 1}[c]
                num = ""
            i += 1
        return total + (float(num) if num else 0.0)
    except (KeyError, ValueError):
        return None


@asynccontextmanager
async def _nullcontext() -> AsyncIterator[None]:
    yield


class Permit:
    """One admitted call: settle it with the tokens it used, or refund it."""

    def __init__(self, limiter: RateLimiter, estimate: int):
        self._limiter = limiter
        self.estimate = estimate
        self._open = True

    def settle(self, tokens: int) -> None:
        if self._open and self._limiter.tokens is not None:
            self._limiter.tokens.give(self.estimate - tokens)  # negative: a debt
        self._open = False

    def refund(self) -> None:
        if self._open:
            if self._limiter.requests is not None:
                self._limiter.requests.give(1)
            if self._limiter.tokens is not None:
                self._limiter.tokens.give(self.estimate)
        self._open = False


class RateLimiter:
    def __init__(
        self,
        provider: str,
        model: str,
        rpm: float | None = None,
        tpm: float | None = None,
        max_concurrency: int = 2000,
        share: int = 1,
        burst_s: float = 1.0,
        token_headroom: float = 0.05,
    ):
        self.provider, self.model = provider, model
        self.share = max(1, share)
        self.token_headroom = token_headroom
        self.burst_s = burst_s
        self.requests = TokenBucket(rpm / self.share, burst_s) if rpm else None
        self.tokens = TokenBucket(tpm * (1 - token_headroom) / self.share, burst_s) if tpm else None
        self.max_concurrency = max_concurrency
        self._sem: asyncio.Semaphore | None = None
        self._lock: asyncio.Lock | None = None
        self._paused_until = 0.0
        self._wait_metric = RATE_LIMIT_WAIT.labels(provider, model)

    def _primitives(self) -> tuple[asyncio.Semaphore, asyncio.Lock]:
        if self._sem is None or self._lock is None:
            self._sem, self._lock = asyncio.Semaphore(self.max_concurrency), asyncio.Lock()
        return self._sem, self._lock

    @asynccontextmanager
    async def slot(self, estimate: int) -> AsyncIterator[Permit]:
        """Wait for a concurrency slot, a request and `estimate` tokens; hold the slot."""
        sem, lock = self._primitives()
        if self.tokens is not None:
            self.tokens.fit(estimate)
        started = time.monotonic()
        await sem.acquire()
        try:
            unlimited = self.requests is None and self.tokens is None and self._paused_until <= time.monotonic()
            async with _nullcontext() if unlimited else lock:  # FIFO: waiters queue behind the head
                while not unlimited:
                    wait = self._paused_until - time.monotonic()
                    if self.requests is not None:
                        wait = max(wait, self.requests.wait_for(1))
                    if self.tokens is not None:
                        wait = max(wait, self.tokens.wait_for(estimate))
                    if wait <= 0:
                        break
                    await asyncio.sleep(wait)
                if self.requests is not None:
                    self.requests.take(1)
                if self.tokens is not None:
                    self.tokens.take(estimate)
            waited = time.monotonic() - started
            if waited > 0.001:
                self._wait_metric.inc(waited)
            permit = Permit(self, estimate)
            yield permit
        finally:
            sem.release()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + min(seconds, MAX_PAUSE_S))

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adapt to a response's rate-limit headers: adopt a lower limit than configured
        (our share of it), and hold new calls when the provider says a limit is used up."""
        info = parse_rate_headers(headers)
        if not info.present:
            return
        # A limit we were not given, or a lower one than we were given: adopt our share.
        if info.requests_limit:
            ours = info.requests_limit / self.share
            if self.requests is None:
                self.requests = TokenBucket(ours, self.burst_s)
            elif ours < self.requests.per_min:
                self.requests.set_rate(ours)
        if info.tokens_limit:
            ours = info.tokens_limit * (1 - self.token_headroom) / self.share
            if self.tokens is None:
                self.tokens = TokenBucket(ours, self.burst_s)
            elif ours < self.tokens.per_min:
                self.tokens.set_rate(ours)
        if info.requests_remaining == 0:
            limit = info.requests_limit or (self.requests.per_min * self.share if self.requests else 60.0)
            self.pause(min(info.requests_reset_s or 60.0, 60.0 / max(limit, 1.0)))
            if self.requests:
                self.requests.level = min(self.requests.level, 0.0)
        if (
            info.tokens_remaining is not None
            and self.tokens is not None
            and info.tokens_remaining < self.tokens.capacity / 4
        ):
            self.tokens.level = min(self.tokens.level, info.tokens_remaining / self.share)

    def on_failure(self, exc: ProviderError, permit: Permit) -> None:
        if exc.kind in NOT_ADMITTED:
            permit.refund()
        else:
            permit.settle(total_tokens(exc.usage) if exc.usage else permit.estimate)
        if exc.kind == ErrorKind.RATE_LIMITED:
            info = parse_rate_headers(exc.headers)
            # A 429 with headers that still show room is an isolated refusal: only that call
            # waits (the retry layer). Otherwise everyone holds off for Retry-After.
            if not info.present or info.exhausted:
                self.pause(exc.retry_after if exc.retry_after is not None else 1.0)


def total_tokens(usage: TokenUsage) -> int:
    return usage.input + usage.output + usage.cache_read + usage.cache_write


class LimitedJudge:
    """A provider judge behind a `RateLimiter`; raises what the provider raises."""

    def __init__(self, inner: LLMJudge, limiter: RateLimiter):
        self.inner, self.limiter = inner, limiter
        self.provider, self.model = inner.provider, inner.model
        inner.rate_listener = limiter.observe

    async def judge(self, request: ComparisonRequested) -> Judgement:
        async with self.limiter.slot(self.inner.estimate([request])) as permit:
            try:
                judgement = await self.inner.judge(request)
            except ProviderError as exc:
                self._settle_failure(exc, permit, 1)
                raise
            permit.settle(self._charged(total_tokens(judgement.tokens), judgement.tokens, 1))
            return judgement

    async def judge_many(self, requests: list[ComparisonRequested]) -> list[Judgement | ProviderError]:
        async with self.limiter.slot(self.inner.estimate(requests)) as permit:
            try:
                results = await self.inner.judge_many(requests)
            except ProviderError as exc:
                self._settle_failure(exc, permit, len(requests))
                raise
            used, prompt = 0, 0
            for r in results:
                usage = r.tokens if isinstance(r, Judgement) else r.usage
                used += total_tokens(usage) if usage else 0
                prompt += total_tokens(usage) - usage.output if usage else 0
            permit.settle(self._charged(used, TokenUsage(input=prompt), len(requests)))
            return results

    def _settle_failure(self, exc: ProviderError, permit: Permit, n_requests: int) -> None:
        """An admitted call that failed with its usage (e.g. cut at max_tokens) is charged
        like a success; the rest is the limiter's (refunds, pauses)."""
        if exc.kind not in NOT_ADMITTED and exc.usage is not None:
            permit.settle(self._charged(total_tokens(exc.usage), exc.usage, n_requests))
        self.limiter.on_failure(exc, permit)

    def _charged(self, used: int, usage: TokenUsage, n_requests: int) -> int:
        """Tokens a call counts against tokens/min: what it used, or for a provider that
        counts the output cap (OpenAI) its prompt plus the whole cap; charging only the use
        let the limiter admit more than the provider does (steady 429s)."""
        if not self.inner.counts_output_cap:
            return used
        return max(used, total_tokens(usage) - usage.output + self.inner.output_cap(n_requests))

    async def aclose(self) -> None:
        await self.inner.aclose()
