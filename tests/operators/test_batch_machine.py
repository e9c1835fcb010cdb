"""The batch state machine, driven directly with events and a clock."""

from __future__ import annotations

import base64
import itertools
import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
from scipy.stats import spearmanr

from operators.batch_machine import BatchMachine
from schemas import (
    AssessmentResult,
    BatchOpened,
    BatchSettings,
    ComparisonRequested,
    DeadLetter,
    ErrorKind,
    EssaySubmitted,
    Judgement,
    ResourceUsage,
    TokenUsage,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def open_batch(n=6, bid="b1", anchors=None, **settings):
    m = BatchMachine(bid)
    s = BatchSettings(**{"in_flight": 4, "budget": 60, **settings})
    out = m.handle(BatchOpened.create(bid, n, settings=s, grade_scale="swedish_8_anchor", occurred_at=T0), T0)
    for i in range(n):
        grade = (anchors or {}).get(i)
        out += m.handle(EssaySubmitted.create(bid, f"e{i}", f"essay {i} [q={i}]", anchor_grade=grade), T0)
    return m, out


def answer(req: ComparisonRequested, at=T0, **kw):
    qa = int(req.essay_a.essay_id[1:])
    qb = int(req.essay_b.essay_id[1:])
    kw.setdefault("winner", "A" if qa > qb else "B")
    return Judgement.for_request(req, provider="test", model="m", occurred_at=at, **kw)


def requests(out):
    return [e for e in out if isinstance(e, ComparisonRequested)]


def run_to_end(m, out, now=T0):
    pending = requests(out)
    results = [e for e in out if isinstance(e, AssessmentResult)]
    while pending:
        req = pending.pop(0)
        now += timedelta(milliseconds=10)
        new = m.handle(answer(req, at=now), now)
        pending += requests(new)
        results += [e for e in new if isinstance(e, AssessmentResult)]
    return results



def run_answering(m, out, reply):
    """Answer every request until the batch ends; `reply(call_no, request)` gives the answer's
    fields (e.g. an error) or None for the right answer. Returns (results, calls made)."""
    pending, results, calls = requests(out), [], 0
    while pending:
        req = pending.pop(0)
        calls += 1
        new = m.handle(answer(req, **(reply(calls, req) or {})), T0)
        pending += requests(new)
        results += [e for e in new if isinstance(e, AssessmentResult)]
    return results, calls

def test_collects_then_keeps_k_in_flight():
    m, out = open_batch(n=6, in_flight=4)
    assert m.phase == "comparing"
    reqs = requests(out)
    assert len(reqs) == 4
    assert len({r.comparison_id for r in reqs}) == 4


def test_runs_to_exactly_one_result_with_the_true_order():
    m, out = open_batch(n=8, budget=200, max_mean_se=0.8)
    results = run_to_end(m, out)
    assert len(results) == 1
    r = results[0]
    assert r.event_id == AssessmentResult.id_for("b1")
    assert r.status.value == "completed"
    order = [int(e.essay_id[1:]) for e in sorted(r.essays, key=lambda e: e.rank)]
    assert spearmanr(order, sorted(order, reverse=True)).statistic > 0.9
    assert r.comparisons_valid == sum(e.comparisons for e in r.essays) // 2
    assert m.phase == "done"


def test_strays_and_duplicates_are_dropped_and_counted():
    m, out = open_batch(n=4, budget=3, in_flight=3)
    reqs = requests(out)
    first = answer(reqs[0])
    m.handle(first, T0)
    assert m.handle(first, T0) == []  # duplicate delivery
    assert m.duplicates == 1
    outs = m.handle(answer(reqs[1]), T0) + m.handle(answer(reqs[2]), T0)
    assert [type(e) for e in outs if isinstance(e, AssessmentResult)] == [AssessmentResult]
    assert m.handle(answer(reqs[0]), T0) == []  # after done: stray
    assert m.strays == 1


def test_errors_never_count_and_are_reissued_then_recorded():
    m, out = open_batch(n=4, budget=6, in_flight=1, max_attempts=2)
    req = requests(out)[0]
    new = m.handle(answer(req, winner="error", error_kind=ErrorKind.OVERLOADED), T0)
    again = requests(new)
    assert len(again) == 1 and again[0].comparison_id == req.comparison_id and again[0].attempt == 2
    new = m.handle(answer(again[0], winner="error", error_kind=ErrorKind.OVERLOADED), T0)
    nxt = requests(new)
    assert nxt and nxt[0].comparison_id != req.comparison_id  # gave up on it, asked another pair
    results = run_to_end(m, new)
    r = results[0]
    assert r.comparisons_errored == 1
    assert r.errors_by_kind == {"overloaded": 2}
    assert r.comparisons_valid == 6


def test_non_retryable_error_is_not_reissued():
    m, out = open_batch(n=4, in_flight=1)
    req = requests(out)[0]
    new = m.handle(answer(req, winner="error", error_kind=ErrorKind.AUTH), T0)
    assert all(r.comparison_id != req.comparison_id for r in requests(new))


def test_deadline_expiry_reissues_a_new_attempt():
    m, out = open_batch(n=4, in_flight=2, comparison_timeout_s=30)
    assert m.next_timer() == T0 + timedelta(seconds=30)
    new = m.on_timer(T0 + timedelta(seconds=31))
    attempts = sorted(r.attempt for r in requests(new))
    assert attempts == [2, 2]
    late = answer(requests(out)[0])  # attempt 1 answered late: still a valid answer
    assert late in m.handle(late, T0 + timedelta(seconds=32))


def test_bad_essays_go_to_dead_letters_and_the_batch_goes_on():
    m = BatchMachine("b2")
    m.handle(BatchOpened.create("b2", 4, grade_scale="swedish_8_anchor", occurred_at=T0), T0)
    outs = []
    outs += m.handle(EssaySubmitted.create("b2", "a", "fine text"), T0)
    outs += m.handle(EssaySubmitted.create("b2", "a", "again"), T0)
    outs += m.handle(EssaySubmitted.create("b2", "b", "   "), T0)
    outs += m.handle(EssaySubmitted.create("b2", "c", "graded", anchor_grade="Z"), T0)
    reasons = [d.reason for d in outs if isinstance(d, DeadLetter)]
    assert reasons[0] == "duplicate essay id"
    assert reasons[1] == "empty essay text"
    assert reasons[2].startswith("unknown anchor grade")
    assert m.phase == "collecting"
    outs = m.handle(EssaySubmitted.create("b2", "d", "another fine text"), T0)
    assert m.phase == "comparing" and requests(outs)


def test_judgement_for_unknown_batch_is_a_dead_letter():
    m = BatchMachine("ghost")
    _, out = open_batch(n=3, bid="ghost")
    out = m.handle(answer(requests(out)[0]), T0)
    assert isinstance(out[0], DeadLetter) and out[0].reason == "judgement for an unknown batch"
    assert m.is_unknown  # the operator discards it


def test_essay_for_finished_batch_is_a_dead_letter():
    m, out = open_batch(n=3, budget=3, in_flight=3)
    run_to_end(m, out)
    dl = m.handle(EssaySubmitted.create("b1", "late", "text"), T0)
    assert isinstance(dl[0], DeadLetter) and dl[0].reason == "essay for a finished batch"


def test_snapshot_restore_resumes_identically():
    m, out = open_batch(n=6, budget=40)
    reqs = requests(out)
    for r in reqs[:2]:
        reqs += requests(m.handle(answer(r), T0))
    snap = pickle.loads(pickle.dumps(m.snapshot()))
    twin = BatchMachine.restore(snap)
    rest = reqs[2:]
    a = run_to_end(m, rest)
    b = run_to_end(twin, rest)
    assert len(a) == len(b) == 1
    assert a[0] == b[0]  # same id, same content


def test_snapshot_of_a_finished_batch_is_a_small_tombstone():
    m, out = open_batch(n=6, budget=20)
    run_to_end(m, out)
    snap = m.snapshot()
    assert snap["essays"] == [] and snap["comps"] == []
    assert len(pickle.dumps(snap)) < 1000
    assert BatchMachine.restore(snap).handle(answer(requests(out)[0]), T0) == []


def test_usage_and_cost_totals_reach_the_result():
    m, out = open_batch(n=3, budget=3, in_flight=3)
    res = []
    for r in requests(out):
        res += m.handle(answer(r, tokens=TokenUsage(input=100, output=10), cost_usd=0.001), T0)
    result = next(e for e in res if isinstance(e, AssessmentResult))
    usage = next(e for e in res if isinstance(e, ResourceUsage))
    assert result.cost_usd == usage.usage[0].cost_usd == 0.003
    assert usage.usage[0].tokens.input == 300 and usage.usage[0].calls == 3


def test_anchors_give_projected_grades():
    m, out = open_batch(n=10, budget=150, anchors={1: "E", 4: "D", 7: "C", 9: "A"})
    r = run_to_end(m, out)[0]
    by_id = {e.essay_id: e for e in r.essays}
    assert by_id["e9"].anchor_grade == "A"
    assert all(e.projected_grade for e in r.essays)
    assert abs(sum(by_id["e5"].grade_probabilities.values()) - 1) < 1e-5
    assert r.grade_cut_points and np.all(np.diff(r.grade_cut_points) >= 0)


def test_restore_at_any_point_gives_the_same_result_including_precision_stops():
    """The fit in use depends on the judgement history only, so a batch resumed from any
    snapshot stops at the same judgement with the same content (the replay contract)."""
    from bench.instant_judge import decide

    def noisy(req, at):
        return Judgement.for_request(
            req, winner=decide(req.essay_a.text, req.essay_b.text), provider="t", model="m", occurred_at=at
        )

    def drive(m, pending, limit=None):
        seen, results = 0, []
        while pending and (limit is None or seen < limit):
            req = pending.pop(0)
            now = T0 + timedelta(milliseconds=10 * int(req.comparison_id.split("#")[1]))  # same in every run
            out = m.handle(noisy(req, now), now)
            seen += 1
            pending += requests(out)
            results += [e for e in out if isinstance(e, AssessmentResult)]
        return results, pending

    ref_m, out = open_batch(n=12, budget=400, max_mean_se=1.0, min_per_essay=4)
    (reference,), _ = drive(ref_m, requests(out))
    assert reference.stop_reason == "precision_met"
    for cut in range(3, reference.comparisons_valid, 7):
        m, out = open_batch(n=12, budget=400, max_mean_se=1.0, min_per_essay=4)
        early, pending = drive(m, requests(out), limit=cut)
        assert not early
        twin = BatchMachine.restore(pickle.loads(pickle.dumps(m.snapshot())))
        (resumed,), _ = drive(twin, list(pending))
        assert resumed == reference, cut


def open_banked_batch(n=10, bid="bank", **settings):
    """A batch whose anchors carry banked values: e1 E, e4 D, e7 C+, e9 A (quality = index)."""
    banked = {1: ("E", -3.0), 4: ("D", -1.0), 7: ("C+", 1.0), 9: ("A", 3.0)}
    m = BatchMachine(bid)
    s = BatchSettings(**{"in_flight": 4, "budget": 150, **settings})
    out = m.handle(BatchOpened.create(bid, n, settings=s, grade_scale="swedish_8_anchor", occurred_at=T0), T0)
    for i in range(n):
        grade, value = banked.get(i, (None, None))
        extra = {"anchor_value": value, "anchor_value_se": 0.25} if grade else {}
        out += m.handle(EssaySubmitted.create(bid, f"e{i}", f"essay {i} [q={i}]", anchor_grade=grade, **extra), T0)
    return m, out, banked


def test_banked_anchors_put_the_batch_on_the_bank_scale():
    from cj.grading import fit_cut_points
    from cj.scales import get_scale

    m, out, banked = open_banked_batch()
    r = run_to_end(m, out)[0]
    by_id = {e.essay_id: e for e in r.essays}
    for i, (grade, value) in banked.items():
        assert abs(by_id[f"e{i}"].score - value) < 0.5  # held near the banked value
    assert spearmanr([by_id[f"e{i}"].score for i in range(10)], range(10)).statistic > 0.9
    # the cut points come from the banked values, not from the fit
    ids = sorted(banked)
    cuts = fit_cut_points(
        get_scale("swedish_8_anchor"), np.array([banked[i][1] for i in ids]), [banked[i][0] for i in ids],
        anchor_se=np.full(len(ids), 0.25), fixed=np.ones(len(ids), dtype=bool),
    )
    np.testing.assert_allclose(r.grade_cut_points, cuts.cuts, atol=1e-9)
    assert all(e.projected_grade for e in r.essays)


def test_banked_batch_snapshot_restores_identically():
    m, out, _ = open_banked_batch(budget=40)
    reqs = requests(out)
    for q in reqs[:3]:
        reqs += requests(m.handle(answer(q), T0))
    twin = BatchMachine.restore(pickle.loads(pickle.dumps(m.snapshot())))
    assert twin.essays == m.essays
    a, b = run_to_end(m, reqs[3:]), run_to_end(twin, reqs[3:])
    assert len(a) == len(b) == 1 and a[0] == b[0]


def test_restore_reads_snapshots_from_before_banked_values():
    m, out = open_batch(n=6, budget=20)
    snap = m.snapshot()
    snap["essays"] = [tuple(e[:3]) for e in snap["essays"]]  # the 3-field form of older snapshots
    twin = BatchMachine.restore(snap)
    assert [e.anchor_value for e in twin.essays] == [None] * 6
    assert len(run_to_end(twin, requests(out))) == 1


def test_a_judge_that_always_fails_stops_after_the_completion_target_and_says_why():
    m, out = open_batch(n=5, budget=350, in_flight=4, max_attempts=3)
    fail = {"winner": "error", "error_kind": ErrorKind.JUDGE_ERROR, "error_detail": "RuntimeError: nope"}
    results, calls = run_answering(m, out, lambda _n, _req: fail)
    assert len(results) == 1
    r = results[0]
    assert r.stop_reason == "too_many_errors" and r.status.value == "failed"
    # nothing valid yet: two windows of 4 fail for good, each after 3 attempts (plus what was
    # in flight when it stopped), not 350 x 3 calls
    assert r.comparisons_errored == 8
    assert 3 * 8 <= calls <= 3 * (8 + 4)
    assert r.last_error == "judge_error: RuntimeError: nope"


def test_last_error_is_kept_across_a_snapshot():
    m, out = open_batch(n=4, in_flight=1)
    m.handle(answer(requests(out)[0], winner="error", error_kind=ErrorKind.AUTH, error_detail="bad key"), T0)
    m2 = BatchMachine.restore(pickle.loads(pickle.dumps(m.snapshot())))
    assert m2.last_error == m.last_error == "auth: bad key"


def test_essays_of_a_batch_never_opened_are_dead_lettered_after_the_collect_timeout():
    m = BatchMachine("lost")
    assert m.handle(EssaySubmitted.create("lost", "a", "text a", occurred_at=T0), T0) == []
    later = T0 + timedelta(minutes=5)
    m.handle(EssaySubmitted.create("lost", "b", "text b", occurred_at=later), later)
    assert m.next_timer() == T0 + timedelta(hours=1)  # from the first essay's arrival
    # survives a restart while waiting
    m = BatchMachine.restore(pickle.loads(pickle.dumps(m.snapshot())))
    assert m.on_timer(T0 + timedelta(minutes=59)) == []
    out = m.on_timer(T0 + timedelta(hours=1))
    assert [d.reason.startswith("batch never opened") for d in out] == [True, True]
    assert {EssaySubmitted.model_validate_json(base64.b64decode(d.original)).essay_id for d in out} == {"a", "b"}
    assert m.is_unknown and m.next_timer() is None  # the operator drops the state


def test_early_essays_are_kept_when_their_batch_opens_in_time():
    m = BatchMachine("b3")
    m.handle(EssaySubmitted.create("b3", "a", "text a", occurred_at=T0), T0)
    at = T0 + timedelta(minutes=30)
    m.handle(BatchOpened.create("b3", 2, occurred_at=at), at)
    assert m.early == [] and m.early_since is None and [e.essay_id for e in m.essays] == ["a"]


def test_grades_not_projected_say_why():
    m, out = open_batch(n=6, budget=40, anchors={2: "C"})  # one anchor cannot place a scale
    r = run_to_end(m, out)[0]
    assert all(e.projected_grade is None for e in r.essays)
    assert r.grading_error and "anchor" in r.grading_error
    m, out = open_batch(n=6, budget=40)  # a scale but no anchors
    r = run_to_end(m, out)[0]
    assert r.grading_error.startswith("no anchor essays")
    m, out = open_batch(n=6, budget=40, anchors={1: "E", 4: "B"})
    assert run_to_end(m, out)[0].grading_error is None



def test_errors_after_a_valid_judgement_stop_at_the_completion_target():
    m, out = open_batch(n=5, budget=350, in_flight=4, max_attempts=1)
    reqs = requests(out)
    new = m.handle(answer(reqs[0]), T0)  # one valid judgement
    pending, results = reqs[1:] + requests(new), []
    while pending:
        new = m.handle(answer(pending.pop(0), winner="error", error_kind=ErrorKind.SERVER_ERROR), T0)
        pending += requests(new)
        results += [e for e in new if isinstance(e, AssessmentResult)]
    (r,) = results
    assert r.stop_reason == "too_many_errors" and r.status.value == "partial"
    assert r.comparisons_valid == 1 and r.comparisons_errored == r.completion_target == 20


def test_a_batch_over_the_size_limit_is_dead_lettered_and_gets_its_one_failed_result():
    """Whoever waits for the batch's result is told, and the batch id is finished."""
    from schemas.events import MAX_BATCH_ESSAYS

    m = BatchMachine("huge")
    early = m.handle(EssaySubmitted.create("huge", "e0", "an early essay", occurred_at=T0), T0)
    assert early == []
    opened = BatchOpened.create("huge", MAX_BATCH_ESSAYS + 1, occurred_at=T0 + timedelta(seconds=5),
                                correlation_id="c-huge", callback_topic="their.results")
    out = m.handle(opened, T0 + timedelta(hours=2))
    assert out[0] is opened  # its row, which the result's row refers to
    dead = [e for e in out if isinstance(e, DeadLetter)]
    assert [d.reason.split(":")[0] for d in dead] == ["batch too large", "batch rejected"]
    assert dead[1].original_event_type == "essay.submitted"
    (r,) = [e for e in out if isinstance(e, AssessmentResult)]
    assert (r.status.value, r.stop_reason, r.essays) == ("failed", "rejected", [])
    assert r.last_error.startswith("batch too large") and r.correlation_id == "c-huge"
    assert r.callback_topic == "their.results"
    assert r.occurred_at == opened.occurred_at  # the event's time: a replay repeats the result
    assert not m.is_unknown and m.phase == "done"
    # the id is finished: a corrected open under it is a duplicate, essays are dead-lettered
    assert m.handle(BatchOpened.create("huge", 3, occurred_at=T0), T0) == [] and m.duplicates == 1
    (late,) = m.handle(EssaySubmitted.create("huge", "e1", "text", occurred_at=T0), T0)
    assert isinstance(late, DeadLetter) and late.reason == "essay for a finished batch"


def test_a_batch_with_an_invalid_grade_scale_gets_a_failed_result():
    from schemas.events import GradeScaleSpec

    m = BatchMachine("bad-scale")
    spec = GradeScaleSpec.model_construct(name="mine", grades=["A", "A"], below_lowest=None, priors=None)
    ev = BatchOpened.create("bad-scale", 3, occurred_at=T0).model_copy(update={"grade_scale": spec})
    out = m.handle(ev, T0)
    (r,) = [e for e in out if isinstance(e, AssessmentResult)]
    assert r.stop_reason == "rejected" and r.last_error.startswith("invalid grade scale")
    assert any(isinstance(e, DeadLetter) and e.reason.startswith("invalid grade scale") for e in out)


def test_a_result_decided_by_a_timer_is_the_same_whenever_the_timer_fires():
    """A replay after a crash fires timers later than the first run did; the result (same
    event id) must carry the same content, so it is stamped with when the timer was due."""

    def collect_timeout(late: timedelta) -> AssessmentResult:
        m = BatchMachine("slow")
        m.handle(BatchOpened.create("slow", 3, occurred_at=T0), T0)
        m.handle(EssaySubmitted.create("slow", "e0", "only one essay", occurred_at=T0), T0)
        due = m.next_timer()
        (r,) = [e for e in m.on_timer(due + late) if isinstance(e, AssessmentResult)]
        return r

    on_time, replayed = collect_timeout(timedelta(0)), collect_timeout(timedelta(seconds=37))
    assert on_time.stop_reason == "too_few_essays"
    assert on_time.to_json() == replayed.to_json()
    assert on_time.duration_s == 3600

    def every_attempt_times_out(late: timedelta) -> AssessmentResult:
        m, _ = open_batch(n=3, budget=3, in_flight=3, max_attempts=1, comparison_timeout_s=60)
        results: list[AssessmentResult] = []
        while m.phase != "done":
            results += [e for e in m.on_timer(m.next_timer() + late) if isinstance(e, AssessmentResult)]
        (r,) = results
        return r

    first, again = every_attempt_times_out(timedelta(0)), every_attempt_times_out(timedelta(seconds=9))
    assert first.stop_reason == "too_many_errors" and first.status.value == "failed"
    assert first.to_json() == again.to_json()


def test_the_result_goes_out_on_the_deciding_judgement_not_at_the_next_refit():
    """Between scheduled refits the fit in use is stale; a forecast of the new judgements'
    information decides when a fresh fit is worth it, so the batch stops on the first
    judgement at which a fresh fit meets the precision target."""
    from cj.model import fit_bt
    from cj.stopping import StopRule, precision_met

    for n, seed in ((60, 1), (200, 3)):
        rng = np.random.default_rng(seed)
        truth = rng.normal(0, 2, n)
        m, out = BatchMachine("p"), []
        s = BatchSettings(in_flight=8, budget=100 * n, max_mean_se=0.6, min_per_essay=6)
        out = m.handle(BatchOpened.create("p", n, settings=s, occurred_at=T0), T0)
        for i in range(n):
            out += m.handle(EssaySubmitted.create("p", f"e{i}", f"essay {i}", occurred_at=T0), T0)
        pending, log, result = requests(out), [], None
        while pending and result is None:
            req = pending.pop(0)
            a, b = int(req.essay_a.essay_id[1:]), int(req.essay_b.essay_id[1:])
            won = bool(rng.random() < 1 / (1 + np.exp(-(truth[a] - truth[b]))))
            log.append((a, b, won))
            new = m.handle(answer(req, winner="A" if won else "B"), T0)
            pending += requests(new)
            result = next((e for e in new if isinstance(e, AssessmentResult)), None)
        assert result is not None and result.stop_reason == "precision_met"
        arr = np.array([(a, b) for a, b, _ in log])
        won = np.array([w for *_, w in log])
        rule = StopRule(budget=100 * n, max_mean_se=0.6, min_per_essay=6)

        def met(k: int, arr=arr, won=won, rule=rule, n=n) -> bool:
            counts = np.bincount(arr[:k].ravel(), minlength=n)
            return precision_met(rule, counts, fit_bt(n, arr[:k, 0], arr[:k, 1], won[:k]))

        k = result.comparisons_valid
        assert met(k) and not any(met(j) for j in range(k - 30, k)), n


def test_pairs_in_flight_and_unfitted_answers_count_in_the_pairing():
    """Above the full-covariance size the pairing works from per-essay variances: without
    the pairs asked since the fit it would hand the same uncertain essays every top-up."""
    n = 200
    m, out = BatchMachine("big"), []
    s = BatchSettings(in_flight=40, budget=5000, max_mean_se=None)
    out = m.handle(BatchOpened.create("big", n, settings=s, occurred_at=T0), T0)
    for i in range(n):
        out += m.handle(EssaySubmitted.create("big", f"e{i}", f"essay {i} [q={i}]", occurred_at=T0), T0)
    pending = requests(out)
    while len(m.valid_order) < 8 * n // 2:  # 8 per essay, then look at the next windows
        new = m.handle(answer(pending.pop(0)), T0)
        pending += requests(new)
    window = []
    for _ in range(120):
        new = m.handle(answer(pending.pop(0)), T0)
        pending += requests(new)
        window += requests(new)
    assert m._refit_every(len(m.valid_order)) > 20  # so most picks above were on a stale fit
    uses = np.bincount([int(e.essay_id[1:]) for r in window for e in (r.essay_a, r.essay_b)], minlength=n)
    assert uses.max() <= 4, sorted(uses)[-5:]


def test_a_snapshot_from_before_the_early_wait_was_kept_still_times_out():
    m = BatchMachine("old")
    m.handle(EssaySubmitted.create("old", "a", "text", occurred_at=T0), T0)
    snap = m.snapshot()
    del snap["early_since"], snap["last_error"]  # as written before they existed
    restored = BatchMachine.restore(snap)
    assert restored.next_timer() is not None and restored.next_timer() > datetime.now(UTC)


def test_an_outage_at_the_start_does_not_fail_the_batch():
    """Rate limits or overload before the first valid judgement wait for the usual cap."""
    m, out = open_batch(n=5, budget=20, in_flight=1, max_attempts=3)
    # the provider is overloaded for the first 12 calls (4 comparisons x 3 attempts)
    overloaded = {"winner": "error", "error_kind": ErrorKind.OVERLOADED}
    (r,), _ = run_answering(m, out, lambda n, _req: overloaded if n <= 12 else None)
    assert r.status.value == "completed" and r.comparisons_valid == 20 and r.comparisons_errored == 4


def test_an_essay_the_judge_always_refuses_is_not_paired_again_and_again():
    """Each of its pairs is tried (and retried) once per level, not until the budget is gone."""
    m, out = open_batch(n=6, budget=60, in_flight=1, max_attempts=2, anchors={0: "E", 5: "A"})
    refused = {"winner": "error", "error_kind": ErrorKind.REFUSED}
    (r,), _ = run_answering(
        m, out, lambda _n, req: refused if "e3" in (req.essay_a.essay_id, req.essay_b.essay_id) else None
    )
    # 5 partners, each pair at most twice (max_repeats 2): not 60 failures
    assert r.comparisons_errored <= 10
    assert r.comparisons_valid >= 20  # the other essays got compared (10 pairs, twice)
    e3 = next(e for e in r.essays if e.essay_id == "e3")
    assert e3.comparisons == 0
    # it was never judged: the batch is partial and the essay gets no grade from its prior
    assert r.status.value == "partial" and e3.projected_grade is None and e3.grade_probabilities is None
    assert all(e.projected_grade for e in r.essays if e.essay_id != "e3")


def test_a_hard_failure_survives_a_snapshot():
    m, out = open_batch(n=4, in_flight=1)
    m.handle(answer(requests(out)[0], winner="error", error_kind=ErrorKind.REFUSED), T0)
    m2 = BatchMachine.restore(pickle.loads(pickle.dumps(m.snapshot())))
    assert [c.hard for c in m2.comps if c.state == 2] == [True]



def test_a_bad_key_midway_does_not_use_up_pairs():
    """Failures about the judge (here a bad key) leave the pair to be asked again."""
    m, out = open_batch(n=5, budget=20, in_flight=1, max_attempts=1)
    bad_key = {"winner": "error", "error_kind": ErrorKind.AUTH}
    (r,), _ = run_answering(m, out, lambda n, _req: bad_key if 5 <= n <= 10 else None)
    assert r.status.value == "completed" and r.comparisons_valid == 20


def test_one_passing_error_does_not_hide_a_judge_that_never_works():
    """A deadline while the judge starts up, then a bad key on everything: still stops early."""
    m, out = open_batch(n=8, budget=350, in_flight=4, max_attempts=1)
    deadline = {"winner": "error", "error_kind": ErrorKind.TIMEOUT}
    bad_key = {"winner": "error", "error_kind": ErrorKind.AUTH}
    (r,), calls = run_answering(m, out, lambda n, _req: deadline if n == 1 else bad_key)
    assert r.stop_reason == "too_many_errors" and r.status.value == "failed"
    assert r.comparisons_errored <= 8 + 4 and calls <= 8 + 1 + 4
    # and it comes back the same from a snapshot taken midway
    m, out = open_batch(n=8, budget=350, in_flight=4, max_attempts=1)
    first = requests(out)
    m.handle(answer(first[0], **deadline), T0)
    m.handle(answer(first[1], **bad_key), T0)
    twin = BatchMachine.restore(pickle.loads(pickle.dumps(m.snapshot())))
    assert twin._n_lasting == m._n_lasting == 1 and twin._n_error == m._n_error == 2


def test_large_batches_refit_at_most_every_tenth_of_their_size():
    """A 5,000-essay fit takes over a second; refitting on each early judgement would
    block the worker for minutes while the batch is still filling its coverage floor."""
    small, large = BatchMachine("s"), BatchMachine("l")
    small.essays = [None] * 30  # only the count matters here
    large.essays = [None] * 5_000
    assert [small._refit_every(k) for k in (0, 24, 100, 10_000)] == [1, 1, 4, 7]
    assert [large._refit_every(k) for k in (0, 12_500, 100_000)] == [500, 500, 1_250]


def test_a_fit_just_short_of_the_target_is_not_refitted_on_every_judgement(monkeypatch):
    """After a forecast-triggered fresh fit misses the target narrowly, the next forecasts
    wait for part of what is still needed, so the fits near the end thin out by halves."""
    import operators.batch_machine as bm

    fits_at: list[int] = []
    real = bm.fit_bt
    m = BatchMachine("f")

    def counted(*args, **kw):
        fits_at.append(len(m.valid_order))
        return real(*args, **kw)

    monkeypatch.setattr(bm, "fit_bt", counted)
    n, rng = 200, np.random.default_rng(5)
    truth = rng.normal(0, 1.5, n)
    s = BatchSettings(in_flight=8, budget=100 * n, max_mean_se=0.6, min_per_essay=6)
    out = m.handle(BatchOpened.create("f", n, settings=s, occurred_at=T0), T0)
    for i in range(n):
        out += m.handle(EssaySubmitted.create("f", f"e{i}", f"essay {i}", occurred_at=T0), T0)
    pending, result = requests(out), None
    while pending and result is None:
        req = pending.pop(0)
        a, b = int(req.essay_a.essay_id[1:]), int(req.essay_b.essay_id[1:])
        won = rng.random() < 1 / (1 + np.exp(-(truth[a] - truth[b])))
        new = m.handle(answer(req, winner="A" if won else "B"), T0)
        pending += requests(new)
        result = next((e for e in new if isinstance(e, AssessmentResult)), None)
    assert result is not None and result.stop_reason == "precision_met"
    last = result.comparisons_valid
    near_end = [k for k in fits_at if k > last - 300]
    assert len(near_end) <= 20, near_end
    every_judgement = sum(1 for x, y in itertools.pairwise(near_end) if y - x <= 1)
    assert every_judgement <= 5, near_end


def test_a_finished_batch_keeps_no_texts_in_memory():
    """The tombstone in memory (not only its snapshot) drops the essays and the assignment,
    derived caches included: a worker holds a week of tombstones."""
    m = BatchMachine("b1")
    s = BatchSettings(in_flight=4, budget=20)
    out = m.handle(BatchOpened.create("b1", 6, settings=s, assignment="a" * 15_000, occurred_at=T0), T0)
    for i in range(6):
        out += m.handle(EssaySubmitted.create("b1", f"e{i}", f"essay {i} [q={i}] " + "x" * 5_000), T0)
    assert len(pickle.dumps(vars(m))) > 30_000  # while running it holds them
    run_to_end(m, out)
    assert m.phase == "done"
    assert len(pickle.dumps(vars(m))) < 5_000


def test_a_finished_batch_keeps_nothing_of_its_open_event():
    """A tombstone lives 7 days: the assignment (up to 20,000 characters) must not."""
    m, out = open_batch(n=6, budget=20)
    run_to_end(m, out)
    assert m.phase == "done" and m.opened is None and m.essays == [] and m.comps == []
    assert m.handle(BatchOpened.create("b1", 6, occurred_at=T0), T0) == [] and m.duplicates == 1
    (dead,) = m.handle(EssaySubmitted.create("b1", "late", "text", occurred_at=T0), T0)
    assert dead.reason == "essay for a finished batch"
