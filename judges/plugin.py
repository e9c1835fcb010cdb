"""A judge given as `module:callable`, for your own model or rules.

The callable receives the two essays as presented and returns the winner:

    def my_judge(essay_a: str, essay_b: str) -> str | dict:   # may also be `async def`
        return "A"   # or "B", or {"winner": "A", "confidence": 0.8, "justification": "..."}

It may take a third keyword argument `assignment` (the task the students answered).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections.abc import Callable
from typing import Any

from judges.base import JudgeError, error_judgement
from schemas import ComparisonRequested, ErrorKind, Judgement


class PluginLoadError(ValueError):
    pass


def load_callable(spec: str) -> Callable[..., Any]:
    """Import `module:attr` (dotted attr allowed); a clear error if it is not callable."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise PluginLoadError(f"plug-in judge must be 'module:callable', got {spec!r}")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise PluginLoadError(f"cannot import plug-in judge module {mod_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginLoadError(f"module {mod_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise PluginLoadError(f"plug-in judge {spec!r} is not callable")
    return obj


class PluginJudge:
    provider = "plugin"

    def __init__(self, spec: str):
        self._fn = load_callable(spec)
        self.model = spec
        self._wants_assignment = "assignment" in inspect.signature(self._fn).parameters
        self._is_async = inspect.iscoroutinefunction(self._fn)

    async def judge(self, request: ComparisonRequested) -> Judgement:
        started = time.perf_counter()
        kwargs = {"assignment": request.assignment} if self._wants_assignment else {}
        try:
            if self._is_async:
                raw = await self._fn(request.essay_a.text, request.essay_b.text, **kwargs)
            else:
                raw = await asyncio.to_thread(self._fn, request.essay_a.text, request.essay_b.text, **kwargs)
        except JudgeError as exc:
            return error_judgement(request, self, exc.kind, exc.detail)
        except Exception as exc:  # a plug-in's bug must not stop the flow
            return error_judgement(request, self, ErrorKind.JUDGE_ERROR, f"{type(exc).__name__}: {exc}")
        latency = (time.perf_counter() - started) * 1000
        try:
            winner, confidence, justification = _parse(raw)
        except ValueError as exc:
            return error_judgement(request, self, ErrorKind.INVALID_OUTPUT, str(exc), latency_ms=latency)
        return Judgement.for_request(
            request,
            winner=winner,
            confidence=confidence,
            justification=justification,
            provider=self.provider,
            model=self.model,
            latency_ms=latency,
        )

    async def aclose(self) -> None:
        return None


def _parse(raw: Any) -> tuple[str, float | None, str]:
    if isinstance(raw, str):
        raw = {"winner": raw}
    if not isinstance(raw, dict):
        raise ValueError(f"plug-in returned {type(raw).__name__}, expected 'A', 'B' or a dict")
    winner = str(raw.get("winner", "")).strip().upper()
    if winner not in ("A", "B"):
        raise ValueError(f"plug-in winner must be 'A' or 'B', got {raw.get('winner')!r}")
    conf = raw.get("confidence")
    if conf is not None:
        conf = float(conf)
        if not 0 <= conf <= 1:
            raise ValueError(f"plug-in confidence must be in [0, 1], got {conf}")
    return winner, conf, str(raw.get("justification", ""))[:1000]
