"""Kafka wiring shared by the production flows: sources, sinks and routing by event type."""

from __future__ import annotations

import logging
import zlib
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Producer
from pydantic import TypeAdapter

from flows.settings import Settings
from operators.codec import decode, reason_label
from schemas import AssessmentResult, ComparisonRequested, DeadLetter, Judgement, ResourceUsage
from schemas.envelope import Envelope
from telemetry.metrics import CALLBACKS_UNDELIVERABLE, DEAD_LETTERS

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


class KafkaDeliveryError(RuntimeError):
    """Messages of a batch were not delivered: the flow must fail (and replay), not go on."""


class _DeliveryCheckedPartition(StatelessSinkPartition[KafkaSinkMessage[Any, Any]]):
    """One producer per worker; `write_batch` returns only once the broker has every message.

    Bytewax's own KafkaSink flushes without delivery callbacks, so a message that fails
    (broker away longer than message.timeout.ms, unknown or invalid topic, too large) is
    dropped and the epoch is snapshotted after it. Here any failure raises: the flow stops
    before the epoch closes and restarts from the last snapshot, which replays the batch.
    """

    def __init__(self, producer: Producer, own_topics: frozenset[str] | None = None) -> None:
        self._producer = producer
        self._own = own_topics
        self._errors: list[str] = []

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            return
        topic = msg.topic()
        if self._own is not None and topic not in self._own:
            # A copy for a topic a batch named (callback_topic), owned by someone else: missing,
            # forbidden, too small for the result, or down. Raising would halt every batch's
            # output behind this one for as long as that lasts, and the result itself is on
            # the results topic (and in the database): count it, log it, go on.
            CALLBACKS_UNDELIVERABLE.labels(err.name()).inc()
            log.error("callback topic %r did not take a result copy (%s); not retried", topic, err)
            return
        self._errors.append(f"{topic}: {err}")

    def write_batch(self, items: list[KafkaSinkMessage[Any, Any]]) -> None:
        self._errors = []
        for msg in items:
            if msg.topic is None:
                raise RuntimeError(f"no topic to produce to for {msg}")
            kwargs: dict[str, Any] = {}
            if msg.partition is not None:
                kwargs["partition"] = msg.partition
            while True:
                try:
                    self._producer.produce(
                        msg.topic, value=msg.value, key=msg.key, headers=msg.headers,
                        timestamp=msg.timestamp, on_delivery=self._on_delivery, **kwargs,
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    self._producer.poll(0.1)
            self._producer.poll(0)
        # Without a timeout flush() returns when every message is delivered or has failed
        # (librdkafka fails it after message.timeout.ms); check both outcomes anyway.
        remaining = self._producer.flush()
        errors, self._errors = self._errors, []
        if errors or remaining:
            raise KafkaDeliveryError(
                f"{len(errors)} of {len(items)} Kafka messages failed delivery"
                + (f", {remaining} still undelivered after flush" if remaining else "")
                + (f"; first errors: {'; '.join(errors[:3])}" if errors else "")
            )

    def close(self) -> None:
        remaining = self._producer.flush(30)
        if remaining or self._errors:  # write_batch flushes, so this should never happen
            log.error("Kafka sink closed with %s undelivered messages, errors %s", remaining, self._errors[:3])


class DeliveryCheckedKafkaSink(DynamicSink[KafkaSinkMessage[Any, Any]]):
    """A Kafka sink that fails the flow when a message is not delivered (see
    `_DeliveryCheckedPartition`); each message names its topic."""

    def __init__(self, config: dict[str, str], own_topics: frozenset[str] | None = None) -> None:
        self._config = config
        self._own = own_topics

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeliveryCheckedPartition:
        return _DeliveryCheckedPartition(Producer(self._config), self._own)


def sink(settings: Settings) -> DeliveryCheckedKafkaSink:
    """One producer for every output topic (each message names its topic). A message that
    is not delivered raises, so the flow restarts from its last snapshot and replays it;
    except a result's copy for a batch's callback topic (logged and counted)."""
    conf = {
        "bootstrap.servers": ",".join(brokers(settings)),
        "enable.idempotence": "true", "linger.ms": "5", "compression.type": "lz4",
        "message.max.bytes": str(MAX_MESSAGE_BYTES), **settings.kafka_add_config(),
    }
    return DeliveryCheckedKafkaSink(conf, frozenset(settings.topics.model_dump().values()))


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


def shard_of(key: str, shards: int) -> str:
    """Stable shard key (crc32, not hash(): that is salted per process)."""
    return f"shard-{zlib.crc32(key.encode()) % max(1, shards)}"


def new_flow(name: str) -> Dataflow:
    return Dataflow(name)
