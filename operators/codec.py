"""Kafka messages <-> events. Anything that cannot be decoded or validated becomes a
dead letter carrying the original bytes, where they came from and why."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas import DeadLetter
from schemas.envelope import Envelope


def decode(
    adapter: TypeAdapter[Any], value: bytes | None, key: bytes | None, topic: str, partition: int | None, offset: int | None
) -> Envelope | DeadLetter:
    """Validate `value` as one of the adapter's events, or explain why not."""
    raw = value or b""
    batch_hint = key.decode("utf-8", "replace") if key else None
    where = dict(partition=partition, offset=offset)
    try:
        event = adapter.validate_json(raw)
    except ValidationError as exc:
        return DeadLetter.create(batch_hint, _reason(exc, raw), topic, raw, original_event_type=_event_type(raw), **where)
    if key is not None and batch_hint != event.batch_id:
        return DeadLetter.create(
            batch_hint, f"message key {batch_hint!r} is not the batch id {event.batch_id!r}", topic, raw,
            original_event_type=event.event_type, **where,
        )
    return event


def _event_type(raw: bytes) -> str | None:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    et = obj.get("event_type") if isinstance(obj, dict) else None
    return et if isinstance(et, str) else None


def _reason(exc: ValidationError, raw: bytes) -> str:
    if not raw:
        return "empty message"
    errors = exc.errors(include_url=False)
    if errors and errors[0]["type"] == "json_invalid":
        return "invalid JSON"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "invalid event: " + "; ".join(parts)


def reason_label(reason: str) -> str:
    """A bounded metric label for a dead-letter reason (the text before any detail)."""
    return reason.split(":", 1)[0][:60]
