"""Kafka wiring shared by the production flows: sources, sinks and routing by event type."""

from __future__ import annotations

import logging
import zlib
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from pydantic import TypeAdapter

from flows.settings import Settings
from operators.codec import decode, reason_label
from schemas import AssessmentResult, ComparisonRequested, DeadLetter, Judgement, ResourceUsage
from schemas.envelope import Envelope
from telemetry.metrics import DEAD_LETTERS

log = logging.getLogger("cjflow")

# The largest message the flows produce: a result of MAX_BATCH_ESSAYS essays (about 0.5 KB
# each). librdkafka refuses bigger ones at produce time, and Kafka topics default to 1 MB,
# so `cjflow topics create` gives cjflow's topics this limit too (docs/deploy.md).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def brokers(settings: Settings) -> list[str]:
    return [b.strip() for b in settings.kafka_brokers.split(",") if b.strip()]


def source(settings: Settings, topics: list[str]) -> KafkaSource:
    """Reads `topics` from the beginning (recovery snapshots carry the offsets after that)."""
    # A judgement loop is latency-bound: don't let an idle fetch wait the default 500 ms.
    conf = {"fetch.wait.max.ms": "10", **settings.kafka_add_config()}
    return KafkaSource(brokers(settings), topics, tail=True, add_config=conf, raise_on_errors=False)


def sink(settings: Settings) -> KafkaSink:
    """One producer for every output topic (each message names its topic)."""
    conf = {
        "enable.idempotence": "true", "linger.ms": "5", "compression.type": "lz4",
        "message.max.bytes": str(MAX_MESSAGE_BYTES), **settings.kafka_add_config(),
    }
    return KafkaSink(brokers(settings), None, add_config=conf)


def decoded(step_id: str, flow_in: Stream[Any], adapter: TypeAdapter[Any]) -> Stream[Envelope]:
    """Kafka messages (or consumer errors) -> events or dead letters."""

    def _one(msg: Any) -> Envelope:
        if isinstance(msg, KafkaSourceMessage):
            try:
                event = decode(adapter, msg.value, msg.key, msg.topic or "?", msg.partition, msg.offset)
            except Exception as exc:  # one message must not stop the flow (it would replay)
                log.exception("cannot decode %s[%s]@%s: dead-lettered", msg.topic, msg.partition, msg.offset)
                key = msg.key.decode("utf-8", "replace") if msg.key else None
                event = DeadLetter.create(
                    key, f"undecodable: {type(exc).__name__}: {exc}", msg.topic or "?", msg.value or b"",
                    partition=msg.partition, offset=msg.offset,
                )
        else:
            err = getattr(msg, "err", msg)
            event = DeadLetter.create(None, f"kafka consumer error: {err}", "kafka", b"")
        if isinstance(event, DeadLetter):  # counted here: these never reach the operators
            DEAD_LETTERS.labels(reason_label(event.reason)).inc()
        return event

    return op.map(step_id, flow_in, _one)


def assessment_topic(event: Envelope, settings: Settings) -> str | None:
    """Where the assessment flow publishes an event; None for records kept to the database
    (batches, essays and the judgements it accepted, which came from Kafka already)."""
    t = settings.topics
    if isinstance(event, ComparisonRequested):
        return t.comparison_requests
    if isinstance(event, AssessmentResult):
        return t.results
    if isinstance(event, ResourceUsage):
        return t.resource_usage
    if isinstance(event, DeadLetter):
        return t.deadletter
    return None


def assessment_messages(event: Envelope, settings: Settings) -> list[KafkaSinkMessage[bytes, bytes]]:
    """The Kafka messages for one assessment-flow event (a result also goes to its batch's
    callback topic, if the batch named one)."""
    topic = assessment_topic(event, settings)
    if topic is None:
        return []
    out = [to_message(event, topic)]
    if isinstance(event, AssessmentResult) and event.callback_topic and event.callback_topic != topic:
        out.append(to_message(event, event.callback_topic))
    return out


def judge_topic(event: Envelope, settings: Settings) -> str:
    """Judgements go to the comparison results topic, anything else to the dead letters."""
    return settings.topics.comparison_results if isinstance(event, Judgement) else settings.topics.deadletter


def to_message(event: Envelope, topic: str) -> KafkaSinkMessage[bytes, bytes]:
    """Key = batch id, so one batch stays in one partition (and one worker)."""
    return KafkaSinkMessage(
        key=event.batch_id.encode(),
        value=event.to_json(),
        topic=topic,
        headers=[("event_type", event.event_type.encode()), ("event_id", event.event_id.encode())],
    )


def shard_of(batch_id: str, shards: int) -> str:
    """Stable shard key (crc32, not hash(): that is salted per process)."""
    return f"shard-{zlib.crc32(batch_id.encode()) % max(1, shards)}"


def new_flow(name: str) -> Dataflow:
    return Dataflow(name)
