"""Cost and metrics around any judge: prices each judgement from the model's price table
and records calls by outcome, latency, tokens by kind and cost (prometheus_client)."""

from __future__ import annotations

from judges.base import Judge
from judges.prices import cost_usd
from schemas import ComparisonRequested, Judgement
from telemetry.metrics import LLM_CALLS, LLM_COST, LLM_LATENCY, LLM_TOKENS


class AccountedJudge:
    def __init__(self, inner: Judge, batch_pricing: bool = False):
        self.inner = inner
        self.provider, self.model = inner.provider, inner.model
        self.batch_pricing = batch_pricing
        p, m = self.provider, self.model
        self._latency = LLM_LATENCY.labels(p, m)
        self._cost = LLM_COST.labels(p, m)
        self._tokens = {k: LLM_TOKENS.labels(p, m, k) for k in ("input", "output", "cache_read", "cache_write")}

    async def judge(self, request: ComparisonRequested) -> Judgement:
        judgement = await self.inner.judge(request)
        cost = cost_usd(judgement.model, judgement.tokens, batch=self.batch_pricing)
        if cost and not judgement.cost_usd:
            judgement = judgement.model_copy(update={"cost_usd": cost})
        outcome = "ok" if judgement.is_valid else (judgement.error_kind.value if judgement.error_kind else "error")
        LLM_CALLS.labels(self.provider, self.model, outcome).inc()
        if judgement.latency_ms:
            self._latency.observe(judgement.latency_ms / 1000)
        t = judgement.tokens
        for kind, n in (
            ("input", t.input),
            ("output", t.output),
            ("cache_read", t.cache_read),
            ("cache_write", t.cache_write),
        ):
            if n:
                self._tokens[kind].inc(n)
        if judgement.cost_usd:
            self._cost.inc(judgement.cost_usd)
        return judgement

    async def aclose(self) -> None:
        await self.inner.aclose()
