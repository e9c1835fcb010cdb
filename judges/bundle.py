"""Bundles: collect requests for a short window and send up to N comparisons (default 8)
in one call, so the rubric's tokens are paid once per bundle. Each item is validated on its
own: a bad item fails alone (and the retry layer re-sends it, in a later bundle).

Wraps anything with `judge_many(requests) -> list[Judgement | JudgeError]` (a limited
provider judge); raises like it, so it sits inside the retry layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Protocol

from judges.base import JudgeError
from judges.errors import ProviderError
from judges.llm import split_usage
from schemas import ComparisonRequested, Judgement
from telemetry.metrics import LLM_BUNDLE_SIZE


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
        try:
            if len(requests) == 1:  # a lone request: the plain single-comparison call
                results: list[Judgement | ProviderError] = [await self.inner.judge(requests[0])]
            else:
                results = await self.inner.judge_many(requests)
        except JudgeError as exc:
            usage = getattr(exc, "usage", None)
            shares = split_usage(usage, len(group)) if usage else [None] * len(group)
            results = [
                ProviderError(
                    exc.kind,
                    exc.detail,
                    exc.retry_after,
                    status=getattr(exc, "status", None),
                    headers=getattr(exc, "headers", None),
                    usage=share,
                )
                for share in shares
            ]
        except Exception as exc:  # noqa: BLE001 - hand any failure to every waiter
            for _, fut in group:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(group, results):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def aclose(self) -> None:
        await self.inner.aclose()
