"""The largest batch's result fits one Kafka message end to end (producer and topic limits)."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer

from flows import kafka_io
from flows.cli import main
from schemas import AssessmentResult
from schemas.events import MAX_BATCH_ESSAYS, BatchStatus, EssayResult

GRADES = ["F+", "E-", "E+", "D-", "D+", "C-", "C+", "B", "A"]


def largest_result() -> AssessmentResult:
    """MAX_BATCH_ESSAYS essays with the longest ids and a probability for every grade."""
    p = 1.0 / len(GRADES)
    essays = [
        EssayResult(
            essay_id=f"{i:06d}" + "x" * 194, rank=i + 1, score=-1.234567, se=0.987654, infit=1.012345,
            outfit=0.998765, comparisons=12, wins=6, projected_grade="C+",
            grade_probabilities={g: p for g in GRADES},
        )
        for i in range(MAX_BATCH_ESSAYS)
    ]
    return AssessmentResult(
        event_id=AssessmentResult.id_for("big"), batch_id="big", status=BatchStatus.COMPLETED, stop_reason="budget_spent",
        essays=essays, comparisons_valid=60_000, comparisons_errored=0, completion_target=60_000, duration_s=1.0,
    )


def test_largest_result_goes_through_topics_made_by_topics_create(kafka_broker, monkeypatch, capsys):
    suffix = uuid.uuid4().hex[:8]
    monkeypatch.setenv("CJFLOW_KAFKA_BROKERS", kafka_broker)
    monkeypatch.setenv("CJFLOW_TOPICS__RESULTS", f"results-{suffix}")
    monkeypatch.setenv("CJFLOW_TOPIC_PARTITIONS", "1")
    assert main(["topics", "create"]) == 0  # with the topic size limit the results need
    assert f"created results-{suffix}" in capsys.readouterr().out
    result = largest_result()
    msg = kafka_io.to_message(result, f"results-{suffix}")
    assert 1_000_000 < len(msg.value) < kafka_io.MAX_MESSAGE_BYTES  # over Kafka's default, within ours
    # The flows' producer settings (as in kafka_io.sink) accept it; librdkafka's default would not.
    conf = {"bootstrap.servers": kafka_broker, "message.max.bytes": str(kafka_io.MAX_MESSAGE_BYTES)}
    producer = Producer(conf)
    producer.produce(msg.topic, key=msg.key, value=msg.value)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_broker, "group.id": f"g-{suffix}", "auto.offset.reset": "earliest",
                         "fetch.max.bytes": str(kafka_io.MAX_MESSAGE_BYTES)})
    consumer.subscribe([msg.topic])
    got = None
    for _ in range(60):
        m = consumer.poll(1.0)
        if m is not None and not m.error():
            got = m
            break
    consumer.close()
    assert got is not None
    assert AssessmentResult.model_validate_json(got.value()) == result
