"""The envelope every event carries, and deterministic event ids.

Recovery is at-least-once, so an event that can be re-emitted gets an id derived from
what it is about (batch, comparison, attempt); sinks upsert by that id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
_NAMESPACE = uuid.UUID("6f1c2a8e-4d0b-5c7e-9a3f-1b2c3d4e5f60")


def deterministic_id(*parts: object) -> str:
    """A UUIDv5 over the parts: the same parts always give the same id."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields common to all events. Kafka key = `batch_id`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(description="Unique id; deterministic where the event can be re-emitted.")
    event_type: str
    # A constant, so the published v1 schemas refuse another version's events (`const: 1`);
    # a new version comes with new models and `.v2` topics (docs/events.md).
    schema_version: Literal[1] = SCHEMA_VERSION
    batch_id: str = Field(min_length=1, max_length=200)
    correlation_id: str | None = Field(
        default=None, max_length=200, description="Caller's id, copied onto every event of the batch."
    )
    # With its UTC offset (RFC 3339): a naive time cannot be compared with the flows' clocks.
    occurred_at: AwareDatetime = Field(default_factory=utc_now)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()
