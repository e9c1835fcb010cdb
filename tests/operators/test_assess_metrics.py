"""The assessment operator's batch gauges: open batches, and batches waiting for judgements
(the no-progress alert's base, which must not count a batch still collecting its essays)."""

from __future__ import annotations

from datetime import timedelta

from bytewax.operators import StatefulLogic
from prometheus_client import REGISTRY

from operators.assess import AssessLogic
from schemas import (
    AssessmentResult,
    BatchOpened,
    BatchSettings,
    ComparisonRequested,
    DeadLetter,
    ErrorKind,
    EssaySubmitted,
    Judgement,
    utc_now,
)
from schemas.events import PresentedEssay


def gauges() -> tuple[float, float]:
    return (
        REGISTRY.get_sample_value("cjflow_active_batches"),
        REGISTRY.get_sample_value("cjflow_batches_awaiting_judgements"),
    )


def feed(logic: AssessLogic, event) -> list:
    out, _ = logic.on_item(event)
    return list(out)


def answer(req: ComparisonRequested) -> Judgement:
    qa, qb = int(req.essay_a.essay_id[1:]), int(req.essay_b.essay_id[1:])
    return Judgement.for_request(req, winner="A" if qa > qb else "B", provider="test", model="m")


def test_a_collecting_batch_is_open_but_not_awaiting_judgements():
    open0, wait0 = gauges()
    logic = AssessLogic(None)
    settings = BatchSettings(in_flight=3, budget=12, max_mean_se=None)
    feed(logic, BatchOpened.create("gauge-1", 4, settings=settings))
    for i in range(3):
        feed(logic, EssaySubmitted.create("gauge-1", f"e{i}", f"essay {i}"))
    assert gauges() == (open0 + 1, wait0)  # collecting: waits for its publisher, not the judges

    pending = [e for e in feed(logic, EssaySubmitted.create("gauge-1", "e3", "essay 3"))
               if isinstance(e, ComparisonRequested)]
    assert pending
    assert gauges() == (open0 + 1, wait0 + 1)  # comparing with requests out

    restored = AssessLogic(logic.snapshot())  # a restart counts it again, once
    assert gauges() == (open0 + 2, wait0 + 2)
    restored._track_open(force_closed=True)
    assert gauges() == (open0 + 1, wait0 + 1)

    results = []
    while pending:
        out = feed(logic, answer(pending.pop(0)))
        pending += [e for e in out if isinstance(e, ComparisonRequested)]
        results += [e for e in out if isinstance(e, AssessmentResult)]
    assert len(results) == 1
    assert gauges() == (open0, wait0)


def test_judgements_for_an_unknown_batch_leave_the_gauges_alone():
    before = gauges()
    logic = AssessLogic(None)
    req = ComparisonRequested.create(
        "gauge-3", "gauge-3:cmp-0", 1,
        essay_a=PresentedEssay(essay_id="e0", text="essay 0"),
        essay_b=PresentedEssay(essay_id="e1", text="essay 1"),
        assignment="a", deadline=utc_now() + timedelta(minutes=5),
    )
    for j in (
        Judgement.for_request(req, winner="A", provider="test", model="m"),
        Judgement.for_request(req, winner="error", error_kind=ErrorKind.TIMEOUT, provider="test", model="m"),
    ):
        out, discard = logic.on_item(j)
        assert [type(e) for e in out] == [DeadLetter]  # dead-lettered, and the empty state dropped
        assert discard == StatefulLogic.DISCARD
        assert gauges() == before


def test_an_essay_before_its_batch_is_opened_leaves_the_gauges_alone():
    before = gauges()
    logic = AssessLogic(None)
    feed(logic, EssaySubmitted.create("gauge-2", "e0", "early essay"))
    assert gauges() == before
