"""The judge dataflow: comparison requests in, rate-limited async LLM calls, judgements out.

    python -m bytewax.run flows.judge:flow -r RECOVERY_DIR -s 5
"""

from __future__ import annotations

import threading

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from pydantic import TypeAdapter

from flows import kafka_io
from flows.settings import Settings, load_settings
from judges.base import Judge
from judges.registry import build_judge
from operators.judge_call import judge_comparisons
from schemas import ComparisonRequested, DeadLetter

REQUEST = TypeAdapter(ComparisonRequested)


class JudgePool:
    """One judge per (provider, model) per process, built on first use."""

    def __init__(self) -> None:
        self._judges: dict[tuple[str, str | None], Judge] = {}
        self._lock = threading.Lock()

    def __call__(self, request: ComparisonRequested) -> Judge:
        key = (request.judge_provider, request.judge_model)
        with self._lock:
            judge = self._judges.get(key)
            if judge is None:
                judge = self._judges[key] = build_judge(*key)
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
