import json
from datetime import UTC

import jsonschema
import pytest
from pydantic import ValidationError

from flows.cli import main
from schemas import AssessmentResult, BatchOpened, ComparisonRequested, EssaySubmitted, Judgement, PresentedEssay
from schemas.events import INBOUND
from schemas.export import JSON_DIR, render_schemas


def test_checked_in_json_schemas_match_the_models():
    rendered = render_schemas()
    on_disk = {p.name for p in JSON_DIR.glob("*.schema.json")}
    assert on_disk == set(rendered), "run `cjflow schemas export`"
    for name, text in rendered.items():
        assert (JSON_DIR / name).read_text() == text, f"{name} is stale: run `cjflow schemas export`"


def test_schemas_check_command_detects_drift(tmp_path, capsys):
    assert main(["schemas", "export", "--dir", str(tmp_path)]) == 0
    assert main(["schemas", "check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "judgement.schema.json").write_text("{}")
    assert main(["schemas", "check", "--dir", str(tmp_path)]) == 1
    assert "judgement.schema.json" in capsys.readouterr().err


def _request():
    from datetime import datetime

    return ComparisonRequested.create(
        "b1", "b1#0", 1,
        essay_a=PresentedEssay(essay_id="x", text="one"),
        essay_b=PresentedEssay(essay_id="y", text="two"),
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
    )


def test_event_ids_are_deterministic_where_events_can_be_re_emitted():
    assert BatchOpened.create("b1", 3).event_id == BatchOpened.create("b1", 3).event_id
    assert EssaySubmitted.create("b1", "e1", "t").event_id != EssaySubmitted.create("b1", "e2", "t").event_id
    r = _request()
    j1 = Judgement.for_request(r, winner="A", provider="p", model="m")
    j2 = Judgement.for_request(r, winner="B", provider="p", model="m")
    assert j1.event_id == j2.event_id  # one id per comparison attempt, whatever the verdict
    assert AssessmentResult.id_for("b1") == AssessmentResult.id_for("b1") != AssessmentResult.id_for("b2")


def test_events_validate_against_their_exported_schema():
    r = _request()
    j = Judgement.for_request(r, winner="A", confidence=0.7, provider="p", model="m")
    schema = json.loads((JSON_DIR / "judgement.schema.json").read_text())
    jsonschema.validate(json.loads(j.to_json()), schema)
    assert INBOUND.validate_json(j.to_json()) == j


def test_bad_events_are_rejected_with_a_reason():
    with pytest.raises(ValidationError):
        INBOUND.validate_json(b'{"event_type": "essay.submitted", "batch_id": "b"}')
    with pytest.raises(ValidationError):
        BatchOpened.create("b1", 1)  # a batch needs at least two essays
    with pytest.raises(ValidationError):
        Judgement.for_request(_request(), winner="C", provider="p", model="m")


def test_banked_anchor_values_validate_and_round_trip():
    ev = EssaySubmitted.create("b", "e1", "text", anchor_grade="A", anchor_value=2.5, anchor_value_se=0.3)
    again = EssaySubmitted.model_validate_json(ev.model_dump_json())
    assert (again.anchor_value, again.anchor_value_se) == (2.5, 0.3)
    for kw, message in [
        ({"anchor_grade": "A", "anchor_value": 2.5}, "go together"),
        ({"anchor_grade": "A", "anchor_value_se": 0.3}, "go together"),
        ({"anchor_value": 2.5, "anchor_value_se": 0.3}, "needs an anchor_grade"),
        ({"anchor_grade": "A", "anchor_value": float("inf"), "anchor_value_se": 0.3}, r"within \[-50, 50\]"),
        # values that would break the fit (a singular prior, an overflow), not just odd ones
        ({"anchor_grade": "A", "anchor_value": 1e155, "anchor_value_se": 0.3}, r"within \[-50, 50\]"),
        ({"anchor_grade": "A", "anchor_value": 1.0, "anchor_value_se": 0.0}, r"within \[0.001, 50\]"),
        ({"anchor_grade": "A", "anchor_value": 1.0, "anchor_value_se": 1e-160}, r"within \[0.001, 50\]"),
    ]:
        with pytest.raises(ValidationError, match=message):
            EssaySubmitted.create("b", "e1", "text", **kw)


def test_emitted_events_admit_fields_added_within_v1_and_inputs_stay_strict():
    """A consumer validating results with the published schema keeps working when cjflow
    adds an optional field; cjflow's own inputs still reject unknown fields (typos)."""
    schemas = {name: json.loads(text) for name, text in render_schemas().items()}
    result = json.loads(
        AssessmentResult(
            event_id="e", batch_id="b", status="completed", stop_reason="budget_spent", essays=[],
            comparisons_valid=0, comparisons_errored=0, completion_target=0, duration_s=0.0,
        ).to_json()
    )
    jsonschema.validate({**result, "a_field_added_later": 1}, schemas["assessment_result.schema.json"])
    opened = json.loads(BatchOpened.create("b", 2).to_json())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**opened, "expected_essay": 3}, schemas["batch_opened.schema.json"])
    with pytest.raises(ValidationError):
        BatchOpened.model_validate({**opened, "expected_essay": 3})
