"""`schema_version` is 1 in every v1 schema: a consumer validating against a published v1
schema refuses another version's events, and the events cjflow produces still decode."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from schemas import BatchOpened, DeadLetter
from schemas.events import INBOUND
from schemas.export import JSON_DIR


def test_every_published_schema_fixes_the_version():
    for path in sorted(JSON_DIR.glob("*.schema.json")):
        prop = json.loads(path.read_text())["properties"]["schema_version"]
        assert prop.get("const") == 1, path.name


def test_a_v1_consumer_refuses_version_2_and_takes_what_cjflow_emits():
    schema = json.loads((JSON_DIR / "dead_letter.schema.json").read_text())
    event = json.loads(DeadLetter.create(None, "invalid JSON", "cj.assessment.requests.v1", b"{").to_json())
    assert event["schema_version"] == 1
    jsonschema.validate(event, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**event, "schema_version": 2}, schema)


def test_events_decode_and_another_version_is_refused():
    opened = BatchOpened.create("b1", 3)
    assert INBOUND.validate_json(opened.to_json()) == opened
    raw = json.loads(opened.to_json())
    with pytest.raises(ValidationError, match="schema_version"):
        INBOUND.validate_python({**raw, "schema_version": 2})
    # a publisher that leaves the field out still means v1
    del raw["schema_version"]
    assert INBOUND.validate_python(raw).schema_version == 1
