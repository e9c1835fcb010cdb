

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
