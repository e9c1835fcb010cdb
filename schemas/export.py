"""Export the events' JSON Schemas to `schemas/json/` (checked in; a test keeps them in sync)."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.events import ALL_EVENTS

JSON_DIR = Path(__file__).parent / "json"


# Events cjflow emits to other services. Within a schema_version cjflow may add optional
# fields to them, so their published schemas let readers through with fields they do not
# know yet (a tolerant reader); the models stay strict for what cjflow itself reads.
EMITTED = frozenset({"assessment_result", "resource_usage", "dead_letter"})


def _allow_additions(node: object) -> None:
    """Drop `additionalProperties: false` throughout a schema (in place)."""
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        for value in node.values():
            _allow_additions(value)
    elif isinstance(node, list):
        for value in node:
            _allow_additions(value)


def render_schemas() -> dict[str, str]:
    """File name -> JSON text for every event model."""
    out = {}
    for name, model in ALL_EVENTS.items():
        schema = model.model_json_schema(mode="serialization")
        if name in EMITTED:
            _allow_additions(schema)
        schema["$id"] = f"https://cjflow.dev/schemas/{name}.v1.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export_schemas(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in render_schemas().items():
        path = directory / fname
        path.write_text(text)
        written.append(path)
    return written
