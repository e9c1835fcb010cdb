"""The providers' batch APIs (Anthropic Message Batches, OpenAI Batch: half price, results
within hours) for batches that can wait. Requests are collected for a window, submitted as
one provider batch, polled until it has ended, and each result goes back to its caller.

A raising judge like the provider clients (it sits inside the retry layer, so an errored or
expired item is submitted again in a later batch). Recovery re-issues in-flight requests,
which then go into a new provider batch: the old one's results are paid for but unused.

A transient error while polling a batch (a dropped connection, a 429, a 5xx) is retried in
place, with backoff and Retry-After, on the same batch: failing the group would have the
retry layer submit (and pay for) every item again. Polling gives up on a lasting error or
when the group's deadline has passed, and then cancels the batch if it may still be running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

from judges.anthropic_judge import AnthropicJudge
from judges.anthropic_judge import map_error as anthropic_error
from judges.errors import RETRYABLE, ProviderError, kind_for_status, out_of_quota, quota_error, scrub
from judges.llm import LLMJudge
from judges.openai_judge import OpenAIJudge
from judges.openai_judge import map_error as openai_error
from judges.prompt import Prompt, build_prompt
from judges.retry import RetryPolicy
from schemas import ComparisonRequested, ErrorKind, Judgement, utc_now
from telemetry.metrics import LLM_PROVIDER_BATCHES, LLM_RETRIES

log = logging.getLogger(__name__)

Results = dict[str, Any]  # custom id -> provider response object, or a ProviderError


class BatchBackend(Protocol):
    async def submit(self, items: list[tuple[str, dict[str, Any]]]) -> str: ...

    async def status(self, batch_id: str) -> str:
        """'running', 'ended', or 'failed: why'."""

    async def results(self, batch_id: str) -> Results: ...

    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to stop the batch (optional for a backend)."""


class AnthropicBatches:
    def __init__(self, judge: AnthropicJudge):
        self.client = judge.client

    async def submit(self, items: list[tuple[str, dict[str, Any]]]) -> str:
        try:
            batch = await self.client.messages.batches.create(
                requests=[{"custom_id": cid, "params": body} for cid, body in items]  # type: ignore[misc,typeddict-item]
            )
        except Exception as exc:  # noqa: BLE001 - SDK errors mapped by kind
            raise anthropic_error(exc) from None
        return batch.id

    async def status(self, batch_id: str) -> str:
        try:
            batch = await self.client.messages.batches.retrieve(batch_id)
        except Exception as exc:  # noqa: BLE001
            raise anthropic_error(exc) from None
        return "ended" if batch.processing_status == "ended" else "running"

    async def results(self, batch_id: str) -> Results:
        out: Results = {}
        try:
            async for item in await self.client.messages.batches.results(batch_id):
                result = item.result
                if result.type == "succeeded":
                    out[item.custom_id] = result.message
                elif result.type == "errored":
                    err = result.error.error
                    said = f"batch item errored: {getattr(err, 'message', err)}"
                    details = getattr(err, "details", None)  # spend limits name themselves here
                    code = details.get("error_code") if isinstance(details, dict) else getattr(details, "error_code", None)
                    quota = out_of_quota(getattr(err, "type", None), code)
                    if quota:  # as for a direct call: no retry will cure it
                        out[item.custom_id] = quota_error(quota, 402, said, {})
                        continue
                    kind = _ANTHROPIC_KINDS.get(getattr(err, "type", ""), ErrorKind.SERVER_ERROR)
                    out[item.custom_id] = ProviderError(kind, said[:400])
                else:  # expired or canceled: worth another try
                    out[item.custom_id] = ProviderError(ErrorKind.TIMEOUT, f"batch item {result.type}")
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise anthropic_error(exc) from None
        return out

    async def cancel(self, batch_id: str) -> None:
        try:
            await self.client.messages.batches.cancel(batch_id)
        except Exception as exc:  # noqa: BLE001
            raise anthropic_error(exc) from None


_ANTHROPIC_KINDS = {
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "not_found_error": ErrorKind.NOT_FOUND,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "overloaded_error": ErrorKind.OVERLOADED,
    "api_error": ErrorKind.SERVER_ERROR,
}


class OpenAIBatches:
    ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"

    def __init__(self, judge: OpenAIJudge):
        self.client = judge.client

    async def submit(self, items: list[tuple[str, dict[str, Any]]]) -> str:
        lines = [
            json.dumps({"custom_id": cid, "method": "POST", "url": self.ENDPOINT, "body": body}) for cid, body in items
        ]
        data = ("\n".join(lines) + "\n").encode()
        try:
            file = await self.client.files.create(
                file=("cjflow-batch.jsonl", data, "application/jsonl"), purpose="batch"
            )
            batch = await self.client.batches.create(
                input_file_id=file.id,
                endpoint=self.ENDPOINT,
                completion_window="24h",
            )
        except Exception as exc:  # noqa: BLE001
            raise openai_error(exc) from None
        return batch.id

    async def status(self, batch_id: str) -> str:
        try:
            batch = await self.client.batches.retrieve(batch_id)
        except Exception as exc:  # noqa: BLE001
            raise openai_error(exc) from None
        self._last = batch
        if batch.status in ("completed", "expired", "cancelled"):
            return "ended"
        if batch.status == "failed":
            return f"failed: {batch.errors}"
        return "running"

    async def results(self, batch_id: str) -> Results:
        out: Results = {}
        try:
            batch = getattr(self, "_last", None)
            if batch is None or batch.id != batch_id:
                batch = await self.client.batches.retrieve(batch_id)
            for file_id in (batch.output_file_id, batch.error_file_id):
                if not file_id:
                    continue
                content = await self.client.files.content(file_id)
                for line in content.text.splitlines():
                    if not line.strip():
                        continue
                    rec = json.loads(line)
                    response = rec.get("response") or {}
                    status = response.get("status_code", 0)
                    if status == 200:
                        out[rec["custom_id"]] = response.get("body")
                    else:
                        detail = json.dumps(rec.get("error") or response.get("body"))[:300]
                        body = response.get("body")
                        err = body.get("error") if isinstance(body, dict) else None
                        if not isinstance(err, dict):
                            err = rec.get("error") if isinstance(rec.get("error"), dict) else {}
                        quota = out_of_quota(err.get("code"), err.get("type"))
                        if quota:  # as for a direct call: no retry will cure it
                            out[rec["custom_id"]] = quota_error(quota, status, f"batch item: {detail}", {})
                            continue
                        kind = kind_for_status(status) if status else ErrorKind.SERVER_ERROR
                        out[rec["custom_id"]] = ProviderError(
                            kind, f"batch item HTTP {status}: {detail}", status=status
                        )
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise openai_error(exc) from None
        return out

    async def cancel(self, batch_id: str) -> None:
        try:
            await self.client.batches.cancel(batch_id)
        except Exception as exc:  # noqa: BLE001
            raise openai_error(exc) from None


def backend_for(judge: LLMJudge) -> BatchBackend:
    if isinstance(judge, AnthropicJudge):
        return AnthropicBatches(judge)
    if isinstance(judge, OpenAIJudge):
        return OpenAIBatches(judge)
    raise ValueError(f"no batch API for {judge!r}")


_Pending = list[tuple[ComparisonRequested, "asyncio.Future[Judgement]"]]


class BatchApiJudge:
    def __init__(
        self,
        inner: LLMJudge,
        window_s: float = 5.0,
        max_requests: int = 10_000,
        poll_s: float = 30.0,
        backend: BatchBackend | None = None,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ):
        self.inner = inner
        self.provider, self.model = inner.provider, inner.model
        self.backend = backend or backend_for(inner)
        self.window_s, self.max_requests, self.poll_s = window_s, max_requests, poll_s
        # Backoff for polling errors: the judges' (base, cap); bounded by the group's deadline.
        self.policy = policy or RetryPolicy(base_s=inner.settings.backoff_base_s, max_s=inner.settings.backoff_max_s)
        self._rng = rng or random.Random()
        self._open: _Pending | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def judge(self, request: ComparisonRequested) -> Judgement:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Judgement] = loop.create_future()
        if self._open is None:
            self._open = []
            loop.call_later(self.window_s, self._flush, self._open)
        group = self._open
        group.append((request, fut))
        if len(group) >= self.max_requests:
            self._flush(group)
        return await fut

    def _flush(self, group: _Pending) -> None:
        if self._open is not group:
            return
        self._open = None
        task = asyncio.get_running_loop().create_task(self._run(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, group: _Pending) -> None:
        self.inner.remember_loop()
        started = time.perf_counter()
        prompts: dict[str, tuple[ComparisonRequested, Prompt, asyncio.Future[Judgement]]] = {}
        items = []
        now = utc_now()
        for i, (request, fut) in enumerate(group):
            if fut.done():  # its caller is gone (cancelled as overdue): not sent, not paid for
                continue
            if request.deadline <= now:
                fut.set_exception(ProviderError(ErrorKind.DEADLINE, "past its deadline before the provider batch"))
                continue
            cid = f"r{i}"
            prompt = build_prompt(request)
            temperature = request.temperature if request.temperature is not None else self.inner.settings.temperature
            items.append(
                (cid, self.inner.request_body(prompt, self.inner.settings.max_tokens, temperature, bundle=False))
            )
            prompts[cid] = (request, prompt, fut)
        if not prompts:
            return
        # Past the last request's deadline no caller waits for this batch any more.
        latest = max(r.deadline for r, _, _ in prompts.values())
        deadline = time.monotonic() + max(0.0, (latest - utc_now()).total_seconds())
        try:
            batch_id = await self.backend.submit(items)
            results = await self._results(batch_id, deadline, lambda: all(f.done() for _, _, f in prompts.values()))
        except ProviderError as exc:
            LLM_PROVIDER_BATCHES.labels(self.provider, self.model, exc.kind.value).inc()
            for _, _, fut in prompts.values():
                if not fut.done():
                    fut.set_exception(ProviderError(exc.kind, self._scrub(exc.detail), exc.retry_after, status=exc.status))
            return
        except Exception as exc:  # noqa: BLE001
            for _, _, fut in prompts.values():
                if not fut.done():
                    fut.set_exception(exc)
            return
        LLM_PROVIDER_BATCHES.labels(self.provider, self.model, "ok").inc()
        latency = (time.perf_counter() - started) * 1000
        for cid, (request, prompt, fut) in prompts.items():
            if fut.done():
                continue
            result = results.get(cid)
            if result is None:
                fut.set_exception(
                    ProviderError(ErrorKind.SERVER_ERROR, "no result for this request in the provider batch")
                )
            elif isinstance(result, ProviderError):
                said = self._scrub(result.detail)
                fut.set_exception(result if said == result.detail else ProviderError(
                    result.kind, said, result.retry_after, status=result.status))
            else:
                try:
                    fut.set_result(self.inner.judgement_from(request, result, prompt, latency))
                except ProviderError as exc:
                    fut.set_exception(exc)

    async def _results(self, batch_id: str, deadline: float, abandoned: Callable[[], bool] = lambda: False) -> Results:
        """Poll the batch until it has ended, then fetch its results. A retryable error is
        retried in place (same batch) with backoff or the provider's Retry-After; a lasting
        one, running past `deadline`, or every caller gone (`abandoned`) gives up: the batch
        is cancelled first if it may still be running (so that it is not processed and
        billed for nothing)."""
        ended = False
        failures = 0
        while True:
            if not ended and (time.monotonic() >= deadline or abandoned()):
                why = "nobody waits for it" if abandoned() else "past the requests' deadline"
                log.warning("giving up on provider batch %s: %s", batch_id, why)
                await self._cancel(batch_id)
                raise ProviderError(ErrorKind.DEADLINE, f"provider batch {batch_id} given up: {why}")
            try:
                if not ended:
                    state = await self.backend.status(batch_id)
                    if state.startswith("failed"):  # the batch ended itself: nothing to cancel
                        raise _BatchFailed(ErrorKind.SERVER_ERROR, f"provider batch {batch_id} {state}"[:400])
                    ended = state == "ended"
                if ended:
                    return await self.backend.results(batch_id)
                failures = 0
            except _BatchFailed:
                raise
            except ProviderError as exc:
                failures += 1
                now = time.monotonic()
                if exc.kind not in RETRYABLE or now >= deadline:
                    why = "a lasting error" if exc.kind not in RETRYABLE else "past the requests' deadline"
                    log.warning(
                        "giving up on provider batch %s (%s, %s after %d failed tries): %s",
                        batch_id,
                        why,
                        exc.kind.value,
                        failures,
                        self._scrub(exc.detail),
                    )
                    if not ended:
                        await self._cancel(batch_id)
                    raise
                # One last try at the deadline: given up on, the requests are past it, so the
                # retry layer does not submit them again.
                delay = min(self.policy.delay(failures, exc.retry_after, self._rng), deadline - now)
                LLM_RETRIES.labels(self.provider, self.model, exc.kind.value).inc()
                log.info(
                    "provider batch %s: %s while %s, trying again in %.1f s",
                    batch_id,
                    exc.kind.value,
                    "fetching results" if ended else "polling",
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            except Exception:
                if not ended:  # an unexpected failure gives up on the batch as well
                    await self._cancel(batch_id)
                raise
            await asyncio.sleep(self.poll_s)

    async def _cancel(self, batch_id: str) -> None:
        """Cancel a batch given up on; a failure to do so is logged, never raised."""
        cancel = getattr(self.backend, "cancel", None)
        if cancel is None:
            log.warning("provider batch %s given up on but not cancelled: the backend cannot cancel", batch_id)
            return
        try:
            await cancel(batch_id)
        except Exception as exc:  # noqa: BLE001 - the group fails with the polling error, not this
            detail = exc.detail if isinstance(exc, ProviderError) else f"{type(exc).__name__}: {exc}"
            log.warning("could not cancel provider batch %s: %s", batch_id, self._scrub(detail))
            return
        log.info("cancelled provider batch %s", batch_id)

    def _scrub(self, text: str) -> str:
        return scrub(text, getattr(self.inner, "_secret", None))

    async def aclose(self) -> None:
        await self.inner.aclose()


class _BatchFailed(ProviderError):
    """The provider says the batch failed: ended, not to be polled or cancelled."""
