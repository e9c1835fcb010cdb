"""The judge dataflow: comparison requests in, rate-limited async LLM calls, judgements out.

    python -m bytewax.run flows.judge:flow -r RECOVERY_DIR -s 5
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from pydantic import TypeAdapter

from flows import kafka_io
from flows.settings import Settings, load_settings
from judges.base import Judge
from judges.registry import build_judge
from operators.judge_call import JudgeBuildError, judge_comparisons, judge_spec
from schemas import ComparisonRequested, DeadLetter

REQUEST = TypeAdapter(ComparisonRequested)
log = logging.getLogger("cjflow")


class JudgePool:
    """One judge per (provider, model) per process, built on first use.

    A judge that cannot be built (unknown name, plug-in module that does not import,
    provider without its API key) raises `JudgeBuildError`; the judge operator turns that
    into an `error` judgement for the request. The failure is remembered for `retry_s`
    seconds, so a stream of requests for a broken judge does not rebuild it for each one;
    after that the next request tries again."""

    def __init__(self, retry_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._judges: dict[tuple[str, str | None], Judge] = {}
        self._failed: dict[tuple[str, str | None], tuple[float, str]] = {}
        self._retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()

    def __call__(self, request: ComparisonRequested) -> Judge:
        key = (request.judge_provider, request.judge_model)
        with self._lock:
            judge = self._judges.get(key)
            if judge is not None:
                return judge
            failed = self._failed.get(key)
            if failed is not None and self._clock() < failed[0]:
                raise JudgeBuildError(failed[1])
            try:
                judge = build_judge(*key)
            except Exception as exc:  # noqa: BLE001 - any build failure is the request's error, not the flow's
                cause = f"{type(exc).__name__}: {exc}"
                self._failed[key] = (self._clock() + self._retry_s, cause)
                log.warning("cannot build judge %s: %s", judge_spec(request), cause)
                raise JudgeBuildError(cause) from None
            self._failed.pop(key, None)
            self._judges[key] = judge
            return judge


def build_flow(settings: Settings | None = None) -> Dataflow:
    settings = settings or load_settings()
    t = settings.topics
    flow = Dataflow("cjflow_judge")
    messages = op.input("in", flow, kafka_io.source(settings, [t.comparison_requests]))
    events = kafka_io.decoded("decode", messages, REQUEST)
    bad = op.filter("undecodable", events, lambda e: isinstance(e, DeadLetter))
    requests = op.filter("requests", events, lambda e: isinstance(e, ComparisonRequested))
    sharded = op.key_on("shard", requests, lambda r: kafka_io.shard_of(r.batch_id, settings.judge_shards))
    judged = op.key_rm("unkey", judge_comparisons("judge", sharded, JudgePool()))
    out = op.merge("all", judged, bad)
    op.output(
        "kafka", op.map("to_kafka", out, lambda e: kafka_io.to_message(e, kafka_io.judge_topic(e, settings))),
        kafka_io.sink(settings),
    )
    return flow


flow = build_flow()
