"""Bundles: collect requests for a short window and send up to N comparisons (default 8)
in one call, so the rubric's tokens are paid once per bundle. Each item is validated on its
own: a bad item fails alone (and the retry layer re-sends it, in a later bundle). A call
that fails as a whole for a reason about a pair (a refusal, a 400, max_tokens, an answer
unreadable as a whole) is not blamed on every item: each is judged again on its own, so
only the pair that caused it carries the error.

Wraps anything with `judge_many(requests) -> list[Judgement | JudgeError]` (a limited
provider judge); raises like it, so it sits inside the retry layer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from typing import Protocol

from judges.base import JudgeError
from judges.errors import ProviderError
from judges.llm import split_usage
from judges.retry import add_usage
from schemas import ComparisonRequested, ErrorKind, Judgement, TokenUsage
from schemas.events import PAIR_KINDS
from telemetry.metrics import LLM_BUNDLE_SIZE

log = logging.getLogger(__name__)


class ManyJudge(Protocol):
    provider: str
    model: str

    async def judge(self, request: ComparisonRequested) -> Judgement: ...

    async def judge_many(self, requests: list[ComparisonRequested]) -> list[Judgement | ProviderError]: ...

    async def aclose(self) -> None: ...


_Group = list[tuple[ComparisonRequested, "asyncio.Future[Judgement]"]]


class BundlingJudge:
    def __init__(self, inner: ManyJudge, size: int = 8, window_s: float = 0.05):
        self.inner, self.size, self.window_s = inner, max(1, size), window_s
        self.provider, self.model = inner.provider, inner.model
        self._open: dict[Hashable, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def judge(self, request: ComparisonRequested) -> Judgement:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Judgement] = loop.create_future()
        # Only requests with the same task, rubric and temperature share a prompt.
        key = (request.rubric_id, request.assignment, request.temperature)
        group = self._open.setdefault(key, [])
        group.append((request, fut))
        if len(group) >= self.size:
            self._flush(key, group)
        elif len(group) == 1:
            loop.call_later(self.window_s, self._flush, key, group)
        return await fut

    def _flush(self, key: Hashable, group: _Group) -> None:
        if self._open.get(key) is not group:
            return  # already sent
        del self._open[key]
        task = asyncio.get_running_loop().create_task(self._send(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, group: _Group) -> None:
        requests = [r for r, _ in group]
        LLM_BUNDLE_SIZE.labels(self.provider, self.model).observe(len(requests))
        results: list[Judgement | BaseException]
        isolate: tuple[str, list[TokenUsage | None]] | None = None  # (why, the bundle's tokens per item)
        try:
            if len(requests) == 1:  # a lone request: the plain single-comparison call
                results = [await self.inner.judge(requests[0])]
            else:
                results = list(await self.inner.judge_many(requests))
                if _unreadable_as_a_whole(results):
                    isolate = ("every item's answer invalid", [getattr(r, "usage", None) for r in results])
        except JudgeError as exc:
            usage = getattr(exc, "usage", None)
            shares: list[TokenUsage | None] = list(split_usage(usage, len(group))) if usage else [None] * len(group)
            if len(group) > 1 and exc.kind in PAIR_KINDS:  # one pair may be the cause: judge each alone
                isolate = (f"{exc.kind.value}: {exc.detail}", shares)
            else:
                results = [_as_provider_error(exc, share) for share in shares]
        except Exception as exc:  # noqa: BLE001 - hand any failure to every waiter
            for _, fut in group:
                if not fut.done():
                    fut.set_exception(exc)
            return
        if isolate is not None:
            why, shares = isolate
            log.info("bundle of %d failed as a whole (%s): judging each comparison on its own", len(group), why[:200])
            results = await self._one_by_one(requests, shares, [fut for _, fut in group])
        for (_, fut), result in zip(group, results):
            if fut.done():
                continue
            if isinstance(result, asyncio.CancelledError):
                fut.cancel()
            elif isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def _one_by_one(
        self, requests: list[ComparisonRequested], shares: Sequence[TokenUsage | None],
        futures: Sequence[asyncio.Future[Judgement]],
    ) -> list[Judgement | BaseException]:
        """Each request whose caller still waits in a call of its own (through the inner
        judge: the limiter admits each call); the failed bundle's tokens, shared out, are added
        to each item's outcome, so that they are priced and reach the retry layer's count."""

        async def one(request: ComparisonRequested, fut: asyncio.Future[Judgement]) -> Judgement:
            if fut.done():  # cancelled as overdue meanwhile: not judged, not paid for
                raise asyncio.CancelledError
            return await self.inner.judge(request)

        outcomes = await asyncio.gather(*(one(r, f) for r, f in zip(requests, futures)), return_exceptions=True)
        out: list[Judgement | BaseException] = []
        for outcome, share in zip(outcomes, shares):
            if isinstance(outcome, Judgement):
                if share is not None:
                    outcome = outcome.model_copy(update={"tokens": add_usage(outcome.tokens, share)})
                out.append(outcome)
            elif isinstance(outcome, JudgeError):
                own = getattr(outcome, "usage", None)
                usage = add_usage(own or TokenUsage(), share) if share is not None else own
                out.append(_as_provider_error(outcome, usage))
            else:
                out.append(outcome)
        return out

    async def aclose(self) -> None:
        await self.inner.aclose()


def _unreadable_as_a_whole(results: Sequence[Judgement | ProviderError]) -> bool:
    """Every item of a bundle answer invalid: the answer failed as a whole (unreadable, or
    nothing usable in it), not item by item."""
    return len(results) > 1 and all(
        isinstance(r, ProviderError) and r.kind == ErrorKind.INVALID_OUTPUT for r in results
    )


def _as_provider_error(exc: JudgeError, usage: TokenUsage | None) -> ProviderError:
    """`exc` for one item, carrying `usage` (the tokens charged to that item)."""
    return ProviderError(
        exc.kind,
        exc.detail,
        exc.retry_after,
        status=getattr(exc, "status", None),
        headers=getattr(exc, "headers", None),
        usage=usage,
    )
