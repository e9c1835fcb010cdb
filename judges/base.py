"""The `Judge` protocol every provider implements, and the error type judges raise."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from schemas import ComparisonRequested, ErrorKind, Judgement


@runtime_checkable
class Judge(Protocol):
    """Decides one comparison. Implementations must be safe to call again for the same
    request (recovery re-issues in-flight calls) and must not raise for provider failures:
    they return an `error` judgement with its kind instead."""

    provider: str
    model: str

    async def judge(self, request: ComparisonRequested) -> Judgement: ...

    async def aclose(self) -> None: ...


class JudgeError(Exception):
    """A failure a judge reports with its kind; wrappers turn it into an `error` judgement."""

    def __init__(self, kind: ErrorKind, detail: str = "", retry_after: float | None = None):
        super().__init__(f"{kind.value}: {detail}" if detail else kind.value)
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after


def error_judgement(
    request: ComparisonRequested, judge: Judge, kind: ErrorKind, detail: str = "", **kw: object
) -> Judgement:
    return Judgement.for_request(
        request,
        winner="error",
        error_kind=kind,
        error_detail=detail[:500] or None,
        provider=judge.provider,
        model=judge.model,
        **kw,
    )
