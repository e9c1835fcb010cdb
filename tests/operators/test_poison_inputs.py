"""Inputs that passed the schema but then crashed the batch operator (and, through it, the
whole dataflow on every restart), and late or stale events that the machine mishandled."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta

import pytest
from bytewax.operators import StatefulLogic
from pydantic import ValidationError

from flows.embedded import run_embedded
from flows.judge import REQUEST
from judges.registry import OfflineJudge
from operators.assess import AssessLogic
from operators.batch_machine import BatchMachine
from operators.codec import decode, reason_label
from schemas import (
    AssessmentResult,
    BatchOpened,
    BatchSettings,
    DeadLetter,
    ErrorKind,
    EssaySubmitted,
)
from schemas.events import INBOUND
from tests.operators.test_batch_machine import T0, answer, open_batch, requests


def _raw(event) -> dict:
    return json.loads(event.to_json())


@pytest.mark.parametrize("field", ["occurred_at"])
def test_a_time_without_utc_offset_is_a_dead_letter_at_decode(field):
    raw = _raw(BatchOpened.create("b1", 2))
    raw[field] = "2026-01-05T09:00:00"  # what datetime.utcnow().isoformat() gives
    out = decode(INBOUND, json.dumps(raw).encode(), b"b1", "in", 0, 7)
    assert isinstance(out, DeadLetter) and "timezone" in out.reason


def test_a_request_deadline_without_utc_offset_is_a_dead_letter_at_decode():
    _m, out = open_batch(n=3)
    raw = _raw(requests(out)[0])
    raw["deadline"] = "2026-01-05T09:00:00"
    got = decode(REQUEST, json.dumps(raw).encode(), b"b1", "req", 0, 1)
    assert isinstance(got, DeadLetter) and "deadline" in got.reason


@pytest.mark.parametrize(
    "settings",
    [{"seed": -1}, {"comparison_timeout_s": 1e12}, {"judge_model": "m" * 201}, {"judge_provider": ""}],
)
def test_settings_the_machine_cannot_run_are_refused_by_the_schema(settings):
    with pytest.raises(ValidationError):
        BatchSettings(**settings)


def test_fields_longer_than_their_columns_are_refused_by_the_schema():
    with pytest.raises(ValidationError):
        BatchOpened.create("b1", 2, correlation_id="c" * 201)
    with pytest.raises(ValidationError):
        BatchOpened.create("b1", 2, grade_scale={"name": "s" * 101, "grades": ["lo", "hi"]})
    with pytest.raises(ValidationError):
        BatchOpened.create("b1", 2, callback_topic="bad topic name!")
    assert BatchOpened.create("b1", 2, callback_topic="team.results-v1_x").callback_topic


def test_a_comparison_id_with_a_unicode_digit_is_a_dead_letter_not_a_crash():
    m, out = open_batch(n=4)
    stray = answer(requests(out)[0]).model_copy(update={"comparison_id": "b1#\u00b2"})
    got = m.handle(stray, T0)
    assert [d.reason for d in got if isinstance(d, DeadLetter)] == ["judgement for an unknown comparison"]


def test_the_collect_timeout_runs_from_when_the_flow_saw_the_batch_open():
    """A batch.opened read two hours after it was produced (consumer lag, a replay) still
    waits for its essays, and the wait survives a snapshot."""
    m = BatchMachine("late")
    seen = T0 + timedelta(hours=2)
    m.handle(BatchOpened.create("late", 3, occurred_at=T0), seen)
    m.handle(EssaySubmitted.create("late", "e0", "one"), seen)
    assert m.on_timer(seen + timedelta(seconds=1)) == []
    m = BatchMachine.restore(m.snapshot())
    assert m.next_timer() == seen + timedelta(hours=1)
    out = m.handle(EssaySubmitted.create("late", "e1", "two"), seen + timedelta(minutes=5))
    out += m.handle(EssaySubmitted.create("late", "e2", "three"), seen + timedelta(minutes=5))
    assert not [d for d in out if isinstance(d, DeadLetter)] and m.phase == "comparing"


def test_a_late_error_from_an_earlier_attempt_leaves_the_live_attempt_alone():
    m, out = open_batch(n=4, in_flight=1, comparison_timeout_s=30, max_attempts=2)
    first = requests(out)[0]
    retry = requests(m.on_timer(T0 + timedelta(seconds=31)))[0]
    assert retry.attempt == 2
    stale = answer(first, winner="error", error_kind=ErrorKind.RATE_LIMITED, cost_usd=0.01)
    got = m.handle(stale, T0 + timedelta(seconds=32))
    assert got == [stale]  # kept (it was paid for), but it neither fails nor reissues
    live = answer(retry)
    assert live in m.handle(live, T0 + timedelta(seconds=33))
    assert m.duplicates == 0 and m.usage[("test", "m")][0] == 2


def _judge_then_break(monkeypatch, where: str):
    def boom(*_a, **_k):
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(BatchMachine, where, boom)


def test_an_operator_error_ends_the_batch_with_its_result_and_a_dead_letter(monkeypatch):
    logic = AssessLogic(None)
    out = []
    out += logic.on_item(BatchOpened.create("b1", 3, occurred_at=T0))[0]
    for i in range(3):
        out += logic.on_item(EssaySubmitted.create("b1", f"e{i}", f"essay {i} [q={i}]"))[0]
    reqs = requests(out)
    got = list(logic.on_item(answer(reqs[0]))[0])  # one valid answer first
    _judge_then_break(monkeypatch, "_record_valid")
    bad = answer(reqs[1])
    got = list(logic.on_item(bad)[0])
    dead = [d for d in got if isinstance(d, DeadLetter)]
    assert len(dead) == 1 and dead[0].reason.startswith("internal error: ZeroDivisionError: injected")
    assert reason_label(dead[0].reason) == "internal error"
    (result,) = [r for r in got if isinstance(r, AssessmentResult)]
    assert result.stop_reason == "internal_error" and result.status.value == "partial"
    assert result.comparisons_valid == 1 and "injected" in (result.last_error or "")
    assert logic.machine.phase == "done"


def test_an_operator_error_while_finishing_still_gives_one_failed_result(monkeypatch):
    logic = AssessLogic(None)
    out = list(logic.on_item(BatchOpened.create("b1", 2, occurred_at=T0))[0])
    out += logic.on_item(EssaySubmitted.create("b1", "e0", "essay 0 [q=0]"))[0]
    _judge_then_break(monkeypatch, "_finish")
    _judge_then_break(monkeypatch, "_advance")
    got = list(logic.on_item(EssaySubmitted.create("b1", "e1", "essay 1 [q=1]"))[0])
    (result,) = [r for r in got if isinstance(r, AssessmentResult)]
    assert result.status.value == "failed" and result.stop_reason == "internal_error"
    assert [d.original_event_type for d in got if isinstance(d, DeadLetter)] == ["essay.submitted"]


def test_a_batch_that_breaks_the_operator_does_not_stop_the_flow(monkeypatch):
    """A real Bytewax run: one batch whose grading raises, one healthy batch; both get their
    one result and the run completes (before, the dataflow aborted and no batch got one)."""
    real = BatchMachine._scale

    def scale(self, opened):
        if self.batch_id == "bad" and self.phase == "done":
            raise ZeroDivisionError("injected")
        return real(self, opened)

    monkeypatch.setattr(BatchMachine, "_scale", scale)
    events = []
    for bid in ("ok", "bad"):
        events += [BatchOpened.create(bid, 3, grade_scale="swedish_8_anchor")]
        events += [EssaySubmitted.create(bid, f"e{i}", f"essay number {i} " * (i + 1)) for i in range(3)]
    collected = run_embedded(events, OfflineJudge())
    assert set(collected.results) == {"ok", "bad"}
    assert collected.results["ok"].stop_reason != "internal_error"
    assert collected.results["bad"].stop_reason == "internal_error"


def _opened_snapshot(**changes):
    m, _ = open_batch(n=4, in_flight=2)
    snap = m.snapshot()
    opened = json.loads(snap["opened"])
    opened["settings"].update(changes)
    snap["opened"] = json.dumps(opened)
    return snap


def test_a_snapshot_an_older_version_wrote_that_this_one_cannot_read_ends_its_batch():
    """Older versions accepted a 2-day timeout; restoring must not stop the flow (every
    batch): the batch ends with its one result, failed, saying why."""
    snap = _opened_snapshot(comparison_timeout_s=172_800)
    logic = AssessLogic(snap)
    assert logic.notify_at() is not None and logic.snapshot() == snap  # nothing out yet
    out, _keep = logic.on_notify()
    (result,) = [r for r in out if isinstance(r, AssessmentResult)]
    assert result.status.value == "failed" and result.stop_reason == "internal_error"
    assert "saved state could not be read" in (result.last_error or "")
    assert logic.machine.phase == "done" and logic.snapshot()["phase"] == "done"
    assert list(logic.on_notify()[0]) == []  # once
    # a replay (crash before the next snapshot) repeats the same result, not a restart-time one
    (again,) = [r for r in AssessLogic(snap).on_notify()[0] if isinstance(r, AssessmentResult)]
    assert again.to_json() == result.to_json()
    assert result.occurred_at == datetime.fromisoformat(snap["opened_at"])


def test_unreadable_early_essays_are_dead_lettered_with_their_bytes():
    m = BatchMachine("b9")
    m.handle(EssaySubmitted.create("b9", "e0", "text"), T0)
    snap = m.snapshot()
    naive = json.loads(snap["early"][0])
    naive["occurred_at"] = "2026-01-05T09:00:00"
    snap["early"] = [json.dumps(naive)]
    logic = AssessLogic(snap)
    out, keep = logic.on_notify()
    (dead,) = out
    assert isinstance(dead, DeadLetter) and json.loads(base64.b64decode(dead.original)) == naive
    assert keep is StatefulLogic.DISCARD


def test_a_request_naming_a_judge_longer_than_a_judgement_can_carry_is_a_dead_letter():
    _m, out = open_batch(n=3)
    raw = _raw(requests(out)[0])
    raw["judge_provider"] = "p" * 101
    got = decode(REQUEST, json.dumps(raw).encode(), b"b1", "req", 0, 1)
    assert isinstance(got, DeadLetter) and "judge_provider" in got.reason


def test_the_judge_flow_drops_a_restored_request_it_cannot_read():
    from flows.judge import JudgePool
    from operators.judge_call import JudgeCallLogic

    _m, out = open_batch(n=3)
    raw = _raw(requests(out)[0])
    raw["judge_model"] = "m" * 300  # allowed by older versions
    logic = JudgeCallLogic(JudgePool(), [json.dumps(raw)])  # must not raise
    assert logic.snapshot() == []


def test_an_event_taken_in_before_the_error_is_still_passed_on_for_its_row(monkeypatch):
    """The result's rows refer to the batch's and essays' rows: an essay accepted just before
    the error is passed on (besides its dead letter), or the database would refuse them."""
    logic = AssessLogic(None)
    logic.on_item(BatchOpened.create("b1", 2, occurred_at=T0))
    logic.on_item(EssaySubmitted.create("b1", "e0", "essay 0 [q=0]"))
    _judge_then_break(monkeypatch, "_advance")  # raised once the last essay is in
    last = EssaySubmitted.create("b1", "e1", "essay 1 [q=1]")
    got = list(logic.on_item(last)[0])
    assert got[0] == last and isinstance(got[1], DeadLetter)
    (result,) = [r for r in got if isinstance(r, AssessmentResult)]
    assert {e.essay_id for e in result.essays} == {"e0", "e1"}


def test_early_essays_taken_in_at_the_open_are_passed_on_when_the_open_fails(monkeypatch):
    logic = AssessLogic(None)
    early = [EssaySubmitted.create("b1", f"e{i}", f"essay {i} [q={i}]") for i in range(2)]
    for e in early:
        assert list(logic.on_item(e)[0]) == []  # held until the batch opens
    _judge_then_break(monkeypatch, "_advance")
    opened = BatchOpened.create("b1", 2, occurred_at=T0)
    got = list(logic.on_item(opened)[0])
    assert got[:3] == [opened, *early]  # their rows exist for the result's rows to refer to
    (result,) = [r for r in got if isinstance(r, AssessmentResult)]
    assert {e.essay_id for e in result.essays} == {"e0", "e1"}
