

def test_nul_in_input_is_dead_lettered_at_decoding_and_escaped_in_cjflows_own_text():
    from datetime import UTC, datetime

    from operators.codec import decode
    from schemas import ComparisonRequested, DeadLetter, EssaySubmitted, Judgement
    from schemas.events import INBOUND as adapter
    from schemas.events import PresentedEssay

    for kw in ({"text": "good\x00text"}, {"essay_id": "a\x00"}, {"correlation_id": "c\x00"}):
        args = {"essay_id": "a", "text": "fine", **kw}
        ev = EssaySubmitted.create("b", args.pop("essay_id"), args.pop("text"), **args)
        out = decode(adapter, ev.to_json(), b"b", "requests", 0, 7)
        assert isinstance(out, DeadLetter) and "NUL" in out.reason, kw
    bad_key = decode(adapter, b"{", b"b\x00", "requests", 0, 8)  # a dead letter from a NUL key stays storable
    assert isinstance(bad_key, DeadLetter) and "\x00" not in (bad_key.batch_id or "")
    ok = EssaySubmitted.create("b", "a", "backslash-u: \\u0000 is text")  # the six characters, not NUL
    assert decode(adapter, ok.to_json(), b"b", "requests", 0, 9) == ok
    req = ComparisonRequested.create(
        "b", "b#0", 1, essay_a=PresentedEssay(essay_id="a", text="x"), essay_b=PresentedEssay(essay_id="c", text="y"),
        deadline=datetime(2026, 1, 1, tzinfo=UTC),
    )
    j = Judgement.for_request(req, winner="A", justification="clear\x00er", provider="p", model="m")
    assert j.justification == "clear\\x00er"


def test_escaping_nul_never_makes_a_record_too_long_to_exist():
    """Escaping lengthens text; what cjflow writes is cut to its field's limit after it, so a
    judgement stays valid and a dead letter can always be made (else decoding would raise)."""
    import json
    from datetime import UTC, datetime

    from operators.codec import decode
    from schemas import ComparisonRequested, DeadLetter, EssaySubmitted, Judgement
    from schemas.events import INBOUND, PresentedEssay

    ev = json.loads(EssaySubmitted.create("b", "a", "x").to_json())
    ev["\x00" * 1990] = 1  # an unknown field named with NULs: the reason quotes it
    for raw, key in ((json.dumps(ev).encode(), b"b"), (b"{", b"k" * 199 + b"\x00"), (b"{", b"k" * 300)):
        dl = decode(INBOUND, raw, key, "requests", 0, 1)
        assert isinstance(dl, DeadLetter) and len(dl.reason) <= 2000 and len(dl.batch_id) <= 200
        assert "\x00" not in dl.reason + dl.batch_id
    req = ComparisonRequested.create(
        "b", "b#0", 1, essay_a=PresentedEssay(essay_id="a", text="x"), essay_b=PresentedEssay(essay_id="c", text="y"),
        deadline=datetime(2026, 1, 1, tzinfo=UTC),
    )
    j = Judgement.for_request(req, winner="A", justification="y" * 990 + "\x00" * 10, error_detail=None,
                              provider="p", model="m")
    assert j.is_valid and len(j.justification) == 1000 and "\x00" not in j.justification
    e = Judgement.for_request(req, winner="error", error_detail="\x00" * 500, provider="p", model="m")
    assert len(e.error_detail) == 500
