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
    if b"\\u0000" in raw:  # cheap test first: JSON can carry NUL only escaped
        field = _nul_field(event.model_dump(mode="json"))
        if field is not None:
            return DeadLetter.create(
                batch_hint, f"contains a NUL character (\\x00), which the database cannot store: in {field}", topic,
                raw, original_event_type=event.event_type, **where,
            )
    if key is not None and batch_hint != event.batch_id:
        return DeadLetter.create(
            batch_hint, f"message key is not the batch id: key {batch_hint!r}, batch id {event.batch_id!r}", topic, raw,
            original_event_type=event.event_type, **where,
        )
    return event


def _nul_field(value: Any, path: str = "") -> str | None:
    """The path of the first string holding NUL (Postgres text cannot store it), else None."""
    if isinstance(value, str):
        return path or "the event" if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        if isinstance(k, str) and "\x00" in k:  # a field name (an unknown field) holding NUL
            return path or "the event"
        found = _nul_field(v, f"{path}.{k}" if path else str(k))
        if found is not None:
            return found
    return None


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
