"""The assessment dataflow: batch requests and judgements in, per-batch CJ state keyed by
batch id, comparison requests / results / usage / dead letters out, rows to the database.

    python -m bytewax.run flows.assessment:flow -r RECOVERY_DIR -s 5
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows import kafka_io
from flows.settings import Settings, load_settings
from operators.assess import assess_batches
from schemas import ComparisonRequested, DeadLetter
from schemas.events import INBOUND
from sinks.sql import SqlSink


def build_flow(settings: Settings | None = None) -> Dataflow:
    settings = settings or load_settings()
    t = settings.topics
    flow = Dataflow("cjflow_assessment")
    messages = op.input("in", flow, kafka_io.source(settings, [t.requests, t.comparison_results]))
    events = kafka_io.decoded("decode", messages, INBOUND)
    bad = op.filter("undecodable", events, lambda e: isinstance(e, DeadLetter))
    good = op.filter("decodable", events, lambda e: not isinstance(e, DeadLetter))
    out = op.key_rm("unkey", assess_batches("assess", op.key_on("by_batch", good, lambda e: e.batch_id)))
    everything = op.merge("all", out, bad)
    to_kafka = op.flat_map("to_kafka", everything, lambda e: kafka_io.assessment_messages(e, settings))
    op.output("kafka", to_kafka, kafka_io.sink(settings))
    if settings.database_url:
        records = op.filter("records", everything, lambda e: not isinstance(e, ComparisonRequested))
        op.output("db", records, SqlSink(settings.database_url, password_file=settings.database_password_file))
    return flow


flow = build_flow()
