"""Events -> table rows (pure): which table an event lands in, keyed how."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table

from schemas import AssessmentResult, BatchOpened, DeadLetter, EssaySubmitted, Judgement
from schemas.envelope import Envelope
from sinks import tables as t

Rows = dict[Table, list[dict[str, Any]]]


def rows_for(events: list[Envelope]) -> Rows:
    """Group the rows of `events` by table, parents first (the dict keeps table order)."""
    out: Rows = {tbl: [] for tbl in (t.batches, t.essays, t.judgements, t.batch_results, t.essay_scores, t.dead_letters)}
    for ev in events:
        if isinstance(ev, BatchOpened):
            scale = ev.grade_scale if isinstance(ev.grade_scale, str) or ev.grade_scale is None else ev.grade_scale.name
            out[t.batches].append(
                dict(
                    batch_id=ev.batch_id, event_id=ev.event_id, correlation_id=ev.correlation_id,
                    expected_essays=ev.expected_essays, grade_scale=scale, assignment=ev.assignment,
                    settings=ev.settings.model_dump(mode="json"), opened_at=ev.occurred_at,
                )
            )
        elif isinstance(ev, EssaySubmitted):
            out[t.essays].append(
                dict(
                    batch_id=ev.batch_id, essay_id=ev.essay_id, event_id=ev.event_id, text=ev.text,
                    anchor_grade=ev.anchor_grade, submitted_at=ev.occurred_at,
                )
            )
        elif isinstance(ev, Judgement):
            out[t.judgements].append(
                dict(
                    event_id=ev.event_id, batch_id=ev.batch_id, comparison_id=ev.comparison_id,
                    attempt=ev.attempt, essay_a_id=ev.essay_a_id, essay_b_id=ev.essay_b_id,
                    winner=ev.winner, error_kind=ev.error_kind.value if ev.error_kind else None,
                    confidence=ev.confidence, justification=ev.justification, provider=ev.provider,
                    model=ev.model, prompt_sha256=ev.prompt_sha256, input_tokens=ev.tokens.input,
                    output_tokens=ev.tokens.output, cache_read_tokens=ev.tokens.cache_read,
                    cache_write_tokens=ev.tokens.cache_write, cost_usd=ev.cost_usd,
                    latency_ms=ev.latency_ms, judged_at=ev.occurred_at,
                )
            )
        elif isinstance(ev, AssessmentResult):
            out[t.batch_results].append(
                dict(
                    event_id=ev.event_id, batch_id=ev.batch_id, status=ev.status.value,
                    stop_reason=ev.stop_reason, reliability_ssr=ev.reliability_ssr,
                    position_effect=ev.position_effect, comparisons_valid=ev.comparisons_valid,
                    comparisons_errored=ev.comparisons_errored, duration_s=ev.duration_s,
                    cost_usd=ev.cost_usd, finished_at=ev.occurred_at, payload=ev.model_dump(mode="json"),
                )
            )
            for e in ev.essays:
                out[t.essay_scores].append(
                    dict(batch_id=ev.batch_id, result_event_id=ev.event_id, **e.model_dump(mode="json"))
                )
        elif isinstance(ev, DeadLetter):
            out[t.dead_letters].append(
                dict(
                    event_id=ev.event_id, batch_id=ev.batch_id, reason=ev.reason, source=ev.source,
                    partition=ev.partition, offset=ev.offset, original=ev.original, received_at=ev.occurred_at,
                )
            )
    return {tbl: rows for tbl, rows in out.items() if rows}
