"""The async judge operator: many LLM calls in flight on a background asyncio loop,
results emitted on later activations, the Bytewax worker never blocked.

Finished calls are collected by done-callbacks into a queue (scanning pending futures
costs seconds at a thousand in flight). In-flight requests are the snapshot and are
re-issued on resume: calls must be safe to repeat, and the assessment flow dedupes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from datetime import datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic
from pydantic import ValidationError

from judges.base import Judge, error_judgement
from judges.registry import BUILTIN
from operators.aio import background_loop
from schemas import ComparisonRequested, ErrorKind, Judgement, utc_now
from telemetry.metrics import JUDGE_REQUESTS_EXPIRED, LLM_IN_FLIGHT

_log = logging.getLogger(__name__)

POLL = timedelta(milliseconds=10)
SWEEP = timedelta(seconds=1)
JudgeFor = Callable[[ComparisonRequested], Judge]


class JudgeBuildError(Exception):
    """The judge a request names cannot be built; the message is the cause."""


class _Unbuilt:
    """Stands in for a judge that could not be built, to label its error judgements."""

    def __init__(self, request: ComparisonRequested):
        self.provider = request.judge_provider
        self.model = request.judge_model or "unknown"


def judge_spec(request: ComparisonRequested) -> str:
    """The judge a request names, as written: `provider` or `provider` with its model."""
    model = f" (model {request.judge_model!r})" if request.judge_model else ""
    return f"{request.judge_provider!r}{model}"


def build_cause(exc: Exception) -> str:
    """Why a judge could not be built: a JudgeBuildError's message, else the exception."""
    return str(exc) if isinstance(exc, JudgeBuildError) else f"{type(exc).__name__}: {exc}"


def build_failed(request: ComparisonRequested, exc: Exception) -> Judgement:
    """The `error` judgement for a request whose judge cannot be built (a configuration
    error: unknown judge, plug-in that does not import, provider without its API key)."""
    return error_judgement(
        request, _Unbuilt(request), ErrorKind.JUDGE_ERROR, f"cannot build judge {judge_spec(request)}: {build_cause(exc)}"
    )


async def call_judge(judge: Judge, request: ComparisonRequested) -> Judgement:
    """Never raises: a judge's unexpected exception becomes an `error` judgement."""
    try:
        return await judge.judge(request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken judge must not take the flow down
        return error_judgement(request, judge, ErrorKind.JUDGE_ERROR, f"{type(exc).__name__}: {exc}")


def _result(request: ComparisonRequested, fut: Future[Judgement]) -> Judgement:
    """The call's judgement; a cancelled call (loop shut down) is an error judgement."""
    try:
        return fut.result()
    except BaseException as exc:  # noqa: BLE001 - CancelledError is a BaseException
        return Judgement.for_request(
            request, winner="error", error_kind=ErrorKind.JUDGE_ERROR,
            error_detail=f"call did not finish: {type(exc).__name__}", provider=request.judge_provider,
            model=request.judge_model or "unknown",
        )


class JudgeCallLogic(StatefulLogic[ComparisonRequested, Judgement, list[str]]):
    def __init__(self, judge_for: JudgeFor, snapshot: list[str] | None):
        self._judge_for = judge_for
        self._loop = background_loop()
        self._pending: dict[str, ComparisonRequested] = {}
        self._futures: dict[str, Future[Judgement]] = {}
        self._next_sweep = utc_now() + SWEEP
        self._done: queue.SimpleQueue[tuple[ComparisonRequested, Future[Judgement]]] = queue.SimpleQueue()
        for raw in snapshot or ():
            try:
                request = ComparisonRequested.model_validate_json(raw)
            except ValidationError as exc:
                # Snapshotted by an older version whose schema allowed it: not judged, like an
                # overdue request (the assessment flow times the attempt out and re-issues it).
                _log.error("dropping a restored comparison request this version cannot read: %s", exc)
                continue
            self._submit(request)

    def _submit(self, request: ComparisonRequested) -> None:
        if request.event_id in self._pending:
            return  # the same attempt is already being judged
        if request.deadline <= utc_now():
            # The assessment flow has timed this attempt out and re-issued or given up on it:
            # a call now (a backlog after an outage, a restored snapshot) would be paid for and
            # ignored. No judgement: the assessment flow already counts the attempt as timed out.
            provider = request.judge_provider if request.judge_provider in BUILTIN else "plugin"
            JUDGE_REQUESTS_EXPIRED.labels(provider).inc()
            return
        self._pending[request.event_id] = request
        try:
            judge = self._judge_for(request)
        except Exception as exc:  # noqa: BLE001 - a judge that cannot be built must not take the flow down
            # Answered at once, through the same queue as finished calls (so it is in the
            # snapshot until emitted): the request is not lost and the flow keeps running.
            answered: Future[Judgement] = Future()
            answered.set_result(build_failed(request, exc))
            self._futures[request.event_id] = answered
            self._done.put((request, answered))
            return
        gauge = LLM_IN_FLIGHT.labels(judge.provider, judge.model)
        gauge.inc()

        def done(f: Future[Judgement], r: ComparisonRequested = request) -> None:
            gauge.dec()
            self._done.put((r, f))

        fut = asyncio.run_coroutine_threadsafe(call_judge(judge, request), self._loop)
        self._futures[request.event_id] = fut
        fut.add_done_callback(done)

    def _drain(self) -> list[Judgement]:
        out = []
        while True:
            try:
                request, fut = self._done.get_nowait()
            except queue.Empty:
                return out
            self._pending.pop(request.event_id, None)
            self._futures.pop(request.event_id, None)
            if not fut.cancelled():
                out.append(_result(request, fut))

    def _abandon_overdue(self) -> None:
        """Cancel calls running past their request's deadline (checked once a second): the
        assessment flow has re-issued them, and they must not pile up in the snapshot."""
        now = utc_now()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP
        for event_id, request in list(self._pending.items()):
            if request.deadline < now:
                fut = self._futures.pop(event_id, None)
                if fut is not None:
                    fut.cancel()
                del self._pending[event_id]

    def on_item(self, value: ComparisonRequested) -> tuple[Iterable[Judgement], bool]:
        self._submit(value)
        return self._drain(), StatefulLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Judgement], bool]:
        self._abandon_overdue()
        return self._drain(), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Judgement], bool]:
        # No notifications fire after end of input: wait here or the results are lost.
        # A call still running past its request's deadline is abandoned: the assessment
        # flow has re-issued it already, and a hung call must not keep the flow open.
        out = []
        while self._pending:
            wait = max(r.deadline for r in self._pending.values()).timestamp() - utc_now().timestamp()
            try:
                request, fut = self._done.get(timeout=max(0.0, wait) + 0.05)
            except queue.Empty:
                for fut in self._futures.values():
                    fut.cancel()
                self._pending.clear()
                self._futures.clear()
                break
            self._pending.pop(request.event_id, None)
            self._futures.pop(request.event_id, None)
            if not fut.cancelled():
                out.append(_result(request, fut))
        return out, StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return utc_now() + POLL if self._pending else None

    def snapshot(self) -> list[str]:
        return [r.model_dump_json() for r in self._pending.values()]

    @property
    def in_flight(self) -> int:
        return len(self._pending)


@operator
def judge_comparisons(
    step_id: str, up: KeyedStream[ComparisonRequested], judge_for: JudgeFor
) -> KeyedStream[Judgement]:
    """Judge each request asynchronously; one logic (and in-flight set) per key, so key the
    stream by a few shard keys rather than by batch id."""
    return op.stateful("calls", up, lambda snap: JudgeCallLogic(judge_for, snap))
