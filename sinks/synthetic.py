"""Synthetic, deterministic event streams for the sink's tests and benchmark.

Same arguments -> the same events (ids and timestamps), so a second call is a replay.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import (
    AssessmentResult,
    BatchOpened,
    BatchSettings,
    BatchStatus,
    ErrorKind,
    EssayResult,
    EssaySubmitted,
    Judgement,
    ModelUsage,
    ResourceUsage,
    TokenUsage,
)
from schemas.envelope import Envelope, deterministic_id

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def judgement(
    batch_id: str, seq: int, attempt: int, a: str, b: str, winner: str, at: datetime, model: str = "offline-m1"
) -> Judgement:
    cid = f"{batch_id}#{seq}"
    err = winner == "error"
    return Judgement(
        event_id=deterministic_id("comparison.judged", cid, attempt),
        batch_id=batch_id,
        comparison_id=cid,
        attempt=attempt,
        essay_a_id=a,
        essay_b_id=b,
        winner=winner,  # type: ignore[arg-type]
        error_kind=ErrorKind.TIMEOUT if err else None,
        confidence=None if err else 0.5 + (seq % 5) / 10,
        justification="" if err else f"essay {'A' if winner == 'A' else 'B'} argues more clearly",
        provider="offline",
        model=model,
        prompt_sha256=f"{seq:064x}",
        tokens=TokenUsage(input=900 + seq % 50, output=0 if err else 40, cache_read=800 if seq % 3 else 0),
        cost_usd=0.0 if err else 0.0012,
        latency_ms=float(200 + seq % 300),
        occurred_at=at,
    )


def batch_events(
    batch_id: str = "batch-1",
    n_essays: int = 8,
    n_comparisons: int = 30,
    *,
    result: bool = True,
    grades: bool = True,
    error_every: int = 7,
    start: datetime = T0,
    model: str = "offline-m1",
) -> list[Envelope]:
    """A whole batch: opened, essays, judgements (every `error_every`-th comparison fails
    once and succeeds on attempt 2), then the result and its resource usage."""
    scale = "swedish_8_anchor" if grades else None
    events: list[Envelope] = [
        BatchOpened.create(
            batch_id, n_essays, grade_scale=scale, assignment="Argue for or against school uniforms.",
            correlation_id=f"corr-{batch_id}", settings=BatchSettings(budget=max(1, n_comparisons)),
            occurred_at=start,
        )
    ]
    ids = [f"essay-{i:03d}" for i in range(n_essays)]
    for i, eid in enumerate(ids):
        anchor = "C" if grades and i == 0 else None
        events.append(
            EssaySubmitted.create(
                batch_id, eid, f"Essay {i}. " + "Uniforms matter because... " * (3 + i % 5),
                anchor_grade=anchor, occurred_at=start,
            )
        )
    at = start
    for seq in range(n_comparisons):
        i = seq % n_essays
        j = (i + 1 + (seq // n_essays) % (n_essays - 1)) % n_essays
        a, b = ids[i], ids[j]
        at = start + timedelta(seconds=1 + seq)
        if error_every and seq % error_every == error_every - 1:
            events.append(judgement(batch_id, seq, 1, a, b, "error", at, model))
            events.append(judgement(batch_id, seq, 2, a, b, "A" if seq % 2 else "B", at + timedelta(milliseconds=500), model))
        else:
            events.append(judgement(batch_id, seq, 1, a, b, "A" if seq % 2 else "B", at, model))
    if result:
        end = at + timedelta(seconds=1)
        essays = [
            EssayResult(
                essay_id=eid, rank=r + 1, score=round(2.0 - 0.25 * r, 6), se=0.35, infit=1.0, outfit=1.1,
                comparisons=6, wins=max(0, 5 - r % 6), is_anchor=grades and r == 0,
                anchor_grade="C" if grades and r == 0 else None,
                projected_grade=("C" if r < 3 else "D") if grades else None,
                grade_probabilities=({"C": 0.7, "D": 0.3} if r < 3 else {"C": 0.2, "D": 0.8}) if grades else None,
            )
            for r, eid in enumerate(ids)
        ]
        usage = [
            ModelUsage(
                provider="offline", model=model, calls=n_comparisons,
                tokens=TokenUsage(input=900 * n_comparisons, output=40 * n_comparisons), cost_usd=0.0012 * n_comparisons,
            )
        ]
        events.append(
            AssessmentResult(
                event_id=AssessmentResult.id_for(batch_id), batch_id=batch_id, correlation_id=f"corr-{batch_id}",
                status=BatchStatus.COMPLETED, stop_reason="precision", essays=essays, grade_scale=scale,
                grade_cut_points=[-1.0, 0.0, 1.0] if grades else None, reliability_ssr=0.82, position_effect=0.05,
                comparisons_valid=n_comparisons, comparisons_errored=0, completion_target=n_comparisons,
                duration_s=(end - start).total_seconds(), cost_usd=0.0012 * n_comparisons, usage=usage, occurred_at=end,
            )
        )
        events.append(
            ResourceUsage(
                event_id=ResourceUsage.id_for(batch_id), batch_id=batch_id, correlation_id=f"corr-{batch_id}",
                usage=usage, occurred_at=end,
            )
        )
    return events
