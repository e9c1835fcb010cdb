"""Build a judge from its name: `offline`, `anthropic`, `openai`, or `module:callable`."""

from __future__ import annotations

import hashlib
import time

from judges.base import Judge
from judges.plugin import PluginJudge
from schemas import ComparisonRequested, Judgement

BUILTIN = ("offline", "anthropic", "openai")


class OfflineJudge:
    """Deterministic stand-in judge (surface features only, no network): see judges.offline."""

    provider = "offline"
    model = "surface-features-v1"

    def __init__(self) -> None:
        from judges.offline import offline_verdict

        self._verdict = offline_verdict

    async def judge(self, request: ComparisonRequested) -> Judgement:
        started = time.perf_counter()
        winner, confidence, why = self._verdict(request.essay_a.text, request.essay_b.text)
        return Judgement.for_request(
            request,
            winner=winner,
            confidence=confidence,
            justification=why,
            provider=self.provider,
            model=self.model,
            prompt_sha256=hashlib.sha256(
                (request.essay_a.text + "\x00" + request.essay_b.text).encode()
            ).hexdigest(),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def aclose(self) -> None:
        return None


def judge_key(name: str, model: str | None = None) -> tuple[str, str | None]:
    """What `build_judge(name, model)` would call, as (name, model): requests with equal keys
    can share one judge and its rate limiter. Only the provider judges use a model (resolved
    to their default when unset); the others ignore it."""
    if name in ("anthropic", "openai"):
        from judges.providers import resolved_model

        return name, resolved_model(name, model)
    return name, None


def build_judge(name: str, model: str | None = None) -> Judge:
    """The judge called `name`; raises ValueError with a readable message if unknown."""
    if name == "offline":
        return OfflineJudge()
    if name in ("anthropic", "openai"):
        from judges.providers import build_provider_judge

        return build_provider_judge(name, model)
    if ":" in name:
        return PluginJudge(name)
    raise ValueError(f"unknown judge {name!r}: use offline, anthropic, openai or module:callable")
