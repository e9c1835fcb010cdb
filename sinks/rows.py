"""Events -> table rows (pure): which tables an event lands in, keyed how.

An event's rows are written together (one event is the unit a bad record is dead-lettered
as); `rows_for` groups the rows of many events by table, parents first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table

from schemas import AssessmentResult, BatchOpened, DeadLetter, EssaySubmitted, Judgement, ResourceUsage
from schemas.envelope import Envelope
from sinks import tables as t

Row = dict[str, Any]
Rows = dict[Table, list[Row]]


def event_rows(ev: Envelope) -> list[tuple[Table, Row]]:
    """The rows one event is stored as (none for events the database does not keep)."""
    if isinstance(ev, Judgement):  # the hot path first
        return [(t.comparisons, _comparison_row(ev)), (t.judgements, _judgement_row(ev))]
    if isinstance(ev, EssaySubmitted):
        return [
            (
                t.essays,
                dict(
                    batch_id=ev.batch_id, essay_id=ev.essay_id, event_id=ev.event_id, text=ev.text,
                    anchor_grade=ev.anchor_grade, anchor_value=ev.anchor_value,
                    anchor_value_se=ev.anchor_value_se, submitted_at=ev.occurred_at,
                ),
            )
        ]
    if isinstance(ev, BatchOpened):
        scale = ev.grade_scale if isinstance(ev.grade_scale, str) or ev.grade_scale is None else ev.grade_scale.name
        return [
            (
                t.batches,
                dict(
                    batch_id=ev.batch_id, event_id=ev.event_id, correlation_id=ev.correlation_id,
                    expected_essays=ev.expected_essays, grade_scale=scale, assignment=ev.assignment,
                    judge_provider=ev.settings.judge_provider, judge_model=ev.settings.judge_model,
                    settings=ev.settings.model_dump(mode="json"), opened_at=ev.occurred_at,
                ),
            )
        ]
    if isinstance(ev, AssessmentResult):
        return _result_rows(ev)
    if isinstance(ev, ResourceUsage):
        return [
            (
                t.resource_usage,
                dict(
                    event_id=ev.event_id, provider=u.provider, model=u.model, batch_id=ev.batch_id,
                    calls=u.calls, input_tokens=u.tokens.input, output_tokens=u.tokens.output,
                    cache_read_tokens=u.tokens.cache_read, cache_write_tokens=u.tokens.cache_write,
                    cost_usd=float(u.cost_usd), recorded_at=ev.occurred_at,
                ),
            )
            for u in ev.usage
        ]
    if isinstance(ev, DeadLetter):
        return [(t.dead_letters, dead_letter_row(ev))]
    return []


def rows_for(events: list[Envelope]) -> Rows:
    """Group the rows of `events` by table, parents first (the dict keeps table order).

    Comparisons are folded to one row per comparison (its latest attempt), because one
    upsert statement may not touch the same row twice.
    """
    out: Rows = {tbl: [] for tbl in t.WRITE_ORDER}
    latest: dict[str, Row] = {}
    for ev in events:
        for table, row in event_rows(ev):
            if table is t.comparisons:
                seen = latest.get(row["comparison_id"])
                if seen is None or row["attempts"] > seen["attempts"]:
                    latest[row["comparison_id"]] = row
            else:
                out[table].append(row)
    out[t.comparisons] = list(latest.values())
    return {tbl: rows for tbl, rows in out.items() if rows}


def dead_letter_row(ev: DeadLetter) -> Row:
    return dict(
        event_id=ev.event_id, batch_id=ev.batch_id, reason=ev.reason, source=ev.source,
        partition=ev.partition, offset=ev.offset, original=ev.original,
        original_event_type=ev.original_event_type, received_at=ev.occurred_at,
    )


def _comparison_row(ev: Judgement) -> Row:
    winner_id = ev.essay_a_id if ev.winner == "A" else ev.essay_b_id if ev.winner == "B" else None
    return dict(
        comparison_id=ev.comparison_id, batch_id=ev.batch_id, essay_a_id=ev.essay_a_id,
        essay_b_id=ev.essay_b_id, attempts=ev.attempt, winner=ev.winner, winner_essay_id=winner_id,
        error_kind=ev.error_kind.value if ev.error_kind else None, last_judgement_id=ev.event_id,
        judged_at=ev.occurred_at,
    )


def _judgement_row(ev: Judgement) -> Row:
    return dict(
        event_id=ev.event_id, batch_id=ev.batch_id, comparison_id=ev.comparison_id,
        attempt=ev.attempt, essay_a_id=ev.essay_a_id, essay_b_id=ev.essay_b_id,
        winner=ev.winner, error_kind=ev.error_kind.value if ev.error_kind else None,
        confidence=ev.confidence, justification=ev.justification, provider=ev.provider,
        model=ev.model, prompt_sha256=ev.prompt_sha256, input_tokens=ev.tokens.input,
        output_tokens=ev.tokens.output, cache_read_tokens=ev.tokens.cache_read,
        cache_write_tokens=ev.tokens.cache_write, cost_usd=float(ev.cost_usd),
        latency_ms=float(ev.latency_ms), judged_at=ev.occurred_at,
    )


def _result_rows(ev: AssessmentResult) -> list[tuple[Table, Row]]:
    rows: list[tuple[Table, Row]] = [
        (
            t.batch_results,
            dict(
                event_id=ev.event_id, batch_id=ev.batch_id, status=ev.status.value,
                stop_reason=ev.stop_reason, grade_scale=ev.grade_scale,
                grade_cut_points=ev.grade_cut_points, reliability_ssr=ev.reliability_ssr,
                position_effect=ev.position_effect, comparisons_valid=ev.comparisons_valid,
                comparisons_errored=ev.comparisons_errored, completion_target=ev.completion_target,
                duration_s=float(ev.duration_s), cost_usd=float(ev.cost_usd), finished_at=ev.occurred_at,
                payload=ev.model_dump(mode="json"),
            ),
        )
    ]
    for e in ev.essays:
        rows.append(
            (
                t.essay_scores,
                dict(
                    result_event_id=ev.event_id, essay_id=e.essay_id, batch_id=ev.batch_id, rank=e.rank,
                    score=float(e.score), se=float(e.se), infit=e.infit, outfit=e.outfit,
                    comparisons=e.comparisons, wins=e.wins, is_anchor=e.is_anchor,
                    anchor_grade=e.anchor_grade, scored_at=ev.occurred_at,
                ),
            )
        )
    for e in ev.essays:
        if e.projected_grade is None:
            continue
        probs = e.grade_probabilities or {}
        rows.append(
            (
                t.grade_projections,
                dict(
                    result_event_id=ev.event_id, essay_id=e.essay_id, batch_id=ev.batch_id,
                    grade_scale=ev.grade_scale or "", projected_grade=e.projected_grade,
                    probability=probs.get(e.projected_grade), probabilities=probs,
                    anchor_grade=e.anchor_grade,
                ),
            )
        )
    return rows
