"""Example downstream consumer of cjflow assessment results.

Reads `cj.assessment.results.v1`, validates each message against the published JSON Schema
(schemas/json/assessment_result.schema.json), and handles each batch once even though
delivery is at-least-once: a replay after recovery repeats a result with the same event id
and identical content, so deduplicating by `event_id` is enough.

    python examples/consumer.py --brokers localhost:9092 [--topic cj.assessment.results.v1]

Needs only confluent-kafka and jsonschema, not cjflow itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jsonschema
from confluent_kafka import Consumer

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "schemas" / "json" / "assessment_result.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def handle(raw: bytes, seen: set[str]) -> dict | None:
    """The result if it is valid and new; None for a repeat; raises on an invalid message."""
    result = json.loads(raw)
    VALIDATOR.validate(result)
    if result["event_id"] in seen:
        return None
    seen.add(result["event_id"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="localhost:9092")
    ap.add_argument("--topic", default="cj.assessment.results.v1")
    ap.add_argument("--group", default="example-results-consumer")
    args = ap.parse_args()
    consumer = Consumer({
        "bootstrap.servers": args.brokers, "group.id": args.group, "auto.offset.reset": "earliest",
        # the smallest session Kafka accepts by default: joins the group in seconds, not ~25 s
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 2000,
    })
    consumer.subscribe([args.topic])
    seen: set[str] = set()  # in production: a unique key on event_id in your own store
    try:
        while True:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            try:
                result = handle(msg.value(), seen)
            except (ValueError, jsonschema.ValidationError) as exc:
                print(f"invalid result at {msg.topic()}[{msg.partition()}]@{msg.offset()}: {exc}")
                continue
            if result:
                top = min(result["essays"], key=lambda e: e["rank"])["essay_id"] if result["essays"] else "-"
                print(f"{result['batch_id']}: {result['status']} ({result['stop_reason']}), "
                      f"{len(result['essays'])} essays, best {top}, SSR {result['reliability_ssr']}")
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
