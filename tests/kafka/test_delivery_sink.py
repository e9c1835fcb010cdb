"""The flows' Kafka sink fails loudly when a message is not delivered (and delivers otherwise).

Bytewax's own KafkaSink flushes without delivery callbacks: an undelivered message was
dropped and the epoch snapshotted after it. kafka_io.sink must raise from write_batch instead,
so the flow stops and replays from its last snapshot.
"""

from __future__ import annotations

import time

import bytewax.operators as op
import pytest
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from kafka_test_broker import free_port, read_topic

from flows import kafka_io
from flows.settings import Settings
from schemas import DeadLetter
from schemas.topics import Topics
from telemetry.metrics import CALLBACKS_UNDELIVERABLE

BAD_TOPIC = "bad topic name!"  # illegal characters: the broker answers INVALID_TOPIC_EXCEPTION


def partition(settings: Settings):
    return kafka_io.sink(settings).build("kafka", 0, 1)


def test_write_batch_delivers_keys_headers_and_topic_per_message(kafka_broker, kafka_topics):
    a, b = kafka_topics(("sink-a", 2), ("sink-b", 1))
    dead = DeadLetter.create("batch-7", "undecodable: test", "src", b"\x00raw")
    big = b"x" * 2_000_000  # over librdkafka's default 1 MB: the sink keeps the 16 MiB limit
    msgs = [KafkaSinkMessage(key=f"k{i}".encode(), value=f"v{i}".encode(), topic=a,
                             headers=[("h", b"%d" % i)]) for i in range(20)]
    msgs += [kafka_io.to_message(dead, b), KafkaSinkMessage(key=b"big", value=big, topic=b)]
    part = partition(Settings(kafka_brokers=kafka_broker))
    try:
        part.write_batch(msgs)  # returns only once everything is on the broker
    finally:
        part.close()
    got_a = read_topic(kafka_broker, a)
    assert sorted((m.key(), m.value(), tuple(m.headers())) for m in got_a) == sorted(
        (f"k{i}".encode(), f"v{i}".encode(), (("h", b"%d" % i),)) for i in range(20)
    )
    got_b = {m.key(): m for m in read_topic(kafka_broker, b, **{"fetch.max.bytes": str(kafka_io.MAX_MESSAGE_BYTES)})}
    assert set(got_b) == {b"batch-7", b"big"}
    assert got_b[b"big"].value() == big
    assert DeadLetter.model_validate_json(got_b[b"batch-7"].value()) == dead
    assert dict(got_b[b"batch-7"].headers()) == {"event_type": dead.event_type.encode(),
                                                 "event_id": dead.event_id.encode()}


def test_write_batch_raises_when_a_topic_is_invalid(kafka_broker, kafka_topics):
    (good,) = kafka_topics(("good", 1))
    # one of cjflow's own topics (a batch's callback topic is the exception: see below)
    topics = Topics(results=good, deadletter=BAD_TOPIC)
    part = partition(Settings(kafka_brokers=kafka_broker, topics=topics, kafka_config={"message.timeout.ms": "10000"}))
    msgs = [KafkaSinkMessage(key=b"b1", value=b"ok", topic=good),
            KafkaSinkMessage(key=b"b1", value=b'{"x":1}', topic=BAD_TOPIC)]
    try:
        with pytest.raises(kafka_io.KafkaDeliveryError, match="1 of 2 Kafka messages failed") as exc:
            part.write_batch(msgs)
        assert BAD_TOPIC in str(exc.value)
    finally:
        part.close()


def test_a_callback_topic_refused_for_good_is_counted_not_raised(kafka_broker, kafka_topics):
    """A copy for a topic a batch named that Kafka will never take must not halt the flow
    (every batch's output would wait behind it); cjflow's own topics still raise."""
    (good,) = kafka_topics(("good-results", 1))
    part = partition(Settings(kafka_brokers=kafka_broker, topics=Topics(results=good),
                              kafka_config={"message.timeout.ms": "10000"}))
    before = CALLBACKS_UNDELIVERABLE.labels("TOPIC_EXCEPTION")._value.get()
    msgs = [KafkaSinkMessage(key=b"b1", value=b"result", topic=good),
            KafkaSinkMessage(key=b"b1", value=b"copy", topic=BAD_TOPIC)]
    try:
        part.write_batch(msgs)  # no raise
    finally:
        part.close()
    assert CALLBACKS_UNDELIVERABLE.labels("TOPIC_EXCEPTION")._value.get() == before + 1
    assert [m.value() for m in read_topic(kafka_broker, good)] == [b"result"]


def test_write_batch_raises_when_the_broker_is_unreachable():
    # Nothing listens on this port: every message times out after message.timeout.ms.
    settings = Settings(kafka_brokers=f"127.0.0.1:{free_port()}",
                        kafka_config={"message.timeout.ms": "1500", "log_level": "0"})
    part = partition(settings)
    t0 = time.monotonic()
    try:
        with pytest.raises(kafka_io.KafkaDeliveryError, match="timed out"):
            part.write_batch([KafkaSinkMessage(key=b"b1", value=b'{"x":1}', topic="cj.assessment.results.v1")])
    finally:
        part.close()
    assert time.monotonic() - t0 < 15


def test_a_flow_fails_instead_of_going_on_when_delivery_fails(kafka_broker, kafka_topics, monkeypatch):
    """The failure reaches Bytewax: the flow stops (and would restart from its last snapshot)."""
    monkeypatch.setenv("RUST_BACKTRACE", "0")  # Bytewax panics on a sink error; keep the log short
    (good,) = kafka_topics(("flow-good", 1))
    flow = Dataflow("delivery_fails")
    items = [KafkaSinkMessage(key=b"b1", value=b"1", topic=good),
             KafkaSinkMessage(key=b"b1", value=b"2", topic=BAD_TOPIC)]
    settings = Settings(kafka_brokers=kafka_broker, topics=Topics(results=good, deadletter=BAD_TOPIC))
    op.output("kafka", op.input("in", flow, TestingSource(items)), kafka_io.sink(settings))
    with pytest.raises(Exception, match="error writing output batch") as exc:
        run_main(flow)
    causes = []
    e: BaseException | None = exc.value
    while e is not None:
        causes.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(c, kafka_io.KafkaDeliveryError) for c in causes), causes


class _Sent:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


@pytest.mark.parametrize("code", ["MSG_SIZE_TOO_LARGE", "_MSG_TIMED_OUT", "POLICY_VIOLATION", "UNKNOWN_TOPIC_OR_PART"])
def test_no_delivery_error_on_a_callback_topic_halts_the_flow_but_any_on_our_own_does(code):
    """A callback topic belongs to whoever named it: too small, down or missing, its copy is
    counted, never a reason to stop every batch's output. Our own topics raise for each."""
    from confluent_kafka import KafkaError

    part = kafka_io._DeliveryCheckedPartition(producer=None, own_topics=frozenset({"cj.results"}))  # type: ignore[arg-type]
    before = CALLBACKS_UNDELIVERABLE.labels(code)._value.get()
    part._on_delivery(KafkaError(getattr(KafkaError, code)), _Sent("team.callbacks"))
    assert part._errors == [] and CALLBACKS_UNDELIVERABLE.labels(code)._value.get() == before + 1
    part._on_delivery(KafkaError(getattr(KafkaError, code)), _Sent("cj.results"))
    assert len(part._errors) == 1 and part._errors[0].startswith("cj.results: ")
