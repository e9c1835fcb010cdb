

def test_nul_characters_are_refused_at_intake_and_dropped_from_judge_text():
    from datetime import UTC, datetime

    import pytest
    from pydantic import ValidationError

    from schemas import BatchOpened, ComparisonRequested, EssaySubmitted, Judgement
    from schemas.events import PresentedEssay

    for kw in ({"essay_id": "a\x00"}, {"text": "good\x00text"}):
        args = {"essay_id": "a", "text": "fine", **kw}
        with pytest.raises(ValidationError, match="NUL"):
            EssaySubmitted.create("b", args["essay_id"], args["text"])
    with pytest.raises(ValidationError, match="NUL"):
        BatchOpened.create("b", 2, assignment="write\x00")
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        BatchOpened.create("b", 10_001)
    req = ComparisonRequested.create(
        "b", "b#0", 1, essay_a=PresentedEssay(essay_id="a", text="x"), essay_b=PresentedEssay(essay_id="c", text="y"),
        deadline=datetime(2026, 1, 1, tzinfo=UTC),
    )
    j = Judgement.for_request(req, winner="A", justification="clear\x00er", provider="p", model="m")
    assert j.justification == "clearer"
    e = Judgement.for_request(req, winner="error", error_detail="bad\x00", provider="p", model="m")
    assert e.error_detail == "bad"
