"""The embedded flow: the same operators as production in one process, with an in-memory
loop instead of Kafka closing the judgement cycle and SQLite instead of Postgres."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from pydantic import ValidationError
from sqlalchemy import Engine, inspect, select

from judges.base import Judge
from operators.assess import assess_batches
from operators.judge_call import judge_comparisons
from schemas import AssessmentResult, BatchOpened, ComparisonRequested, DeadLetter, Judgement, utc_now
from schemas.envelope import Envelope
from sinks.sql import SqlSink

IDLE = timedelta(milliseconds=1)


class LoopBus:
    """Stands in for the Kafka topics: the flow's input queue, fed again with judgements;
    closes once every expected batch has its result."""

    def __init__(self, events: Iterable[Envelope], batch_ids: Iterable[str]):
        self._items: deque[Envelope] = deque(events)
        self._lock = threading.Lock()
        self._waiting = set(batch_ids)
        self.closed = not self._waiting

    def put(self, items: Iterable[Envelope]) -> None:
        with self._lock:
            self._items.extend(items)

    def take(self, limit: int = 1000) -> list[Envelope]:
        with self._lock:
            n = min(limit, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def finished(self, batch_id: str) -> None:
        with self._lock:
            self._waiting.discard(batch_id)
            self.closed = not self._waiting

    def empty(self) -> bool:
        with self._lock:
            return not self._items


class _LoopPartition(StatelessSourcePartition[Envelope]):
    def __init__(self, bus: LoopBus):
        self._bus = bus
        self._idle = False

    def next_batch(self) -> list[Envelope]:
        items = self._bus.take()
        if not items and self._bus.closed and self._bus.empty():
            raise StopIteration
        self._idle = not items
        return items

    def next_awake(self) -> datetime | None:
        return utc_now() + IDLE if self._idle else None


class LoopSource(DynamicSource[Envelope]):
    def __init__(self, bus: LoopBus):
        self._bus = bus

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LoopPartition:
        if worker_count != 1:
            raise ValueError("the embedded flow runs with one worker")
        return _LoopPartition(self._bus)


class _CallbackPartition(StatelessSinkPartition[Envelope]):
    def __init__(self, fn: Callable[[list[Envelope]], None]):
        self._fn = fn

    def write_batch(self, items: list[Envelope]) -> None:
        self._fn(items)


class CallbackSink(DynamicSink[Envelope]):
    def __init__(self, fn: Callable[[list[Envelope]], None]):
        self._fn = fn

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CallbackPartition:
        return _CallbackPartition(self._fn)


class Collector:
    """Gathers results and dead letters, reports progress, and closes the loop when done."""

    def __init__(self, bus: LoopBus, on_judgement: Callable[[Judgement], None] | None = None):
        self.bus = bus
        self.results: dict[str, AssessmentResult] = {}
        self.dead_letters: list[DeadLetter] = []
        self.judgements = 0
        self.result_lag_s: list[float] = []  # deciding judgement -> result collected
        self.max_open = 0
        self._open = 0
        self._on_judgement = on_judgement

    def __call__(self, items: list[Envelope]) -> None:
        for ev in items:
            if isinstance(ev, BatchOpened):
                self._open += 1
                self.max_open = max(self.max_open, self._open)
            elif isinstance(ev, AssessmentResult):
                self.result_lag_s.append(max(0.0, (utc_now() - ev.occurred_at).total_seconds()))
                self._open -= 1
                self.results.setdefault(ev.batch_id, ev)
                self.bus.finished(ev.batch_id)
            elif isinstance(ev, DeadLetter):
                self.dead_letters.append(ev)
                if ev.original_event_type == "batch.opened":
                    self.bus.finished(ev.batch_id)  # a batch that cannot open has no result
            elif isinstance(ev, Judgement):
                self.judgements += 1
                if self._on_judgement:
                    self._on_judgement(ev)


def build_embedded_flow(
    bus: LoopBus, judge_for: Callable[[ComparisonRequested], Judge], collector: Collector, db_url: str | None
) -> Dataflow:
    flow = Dataflow("cjflow_embedded")
    events = op.input("events", flow, LoopSource(bus))
    out = op.key_rm("unkey", assess_batches("assess", op.key_on("by_batch", events, lambda e: e.batch_id)))
    requests = op.filter("requests", out, lambda e: isinstance(e, ComparisonRequested))
    records = op.filter("records", out, lambda e: not isinstance(e, ComparisonRequested))
    judged = judge_comparisons("judge", op.key_on("shard", requests, lambda _e: "judge"), judge_for)
    op.output("loop", op.key_rm("judged", judged), CallbackSink(bus.put))
    if db_url:
        op.output("db", records, SqlSink(db_url))
    op.output("collect", records, CallbackSink(collector))
    return flow


def run_embedded(
    events: list[Envelope],
    judge: Judge,
    db_url: str | None = None,
    on_judgement: Callable[[Judgement], None] | None = None,
) -> Collector:
    """Run batches to completion in this process; returns the collected results."""
    if db_url and db_url.startswith("sqlite"):
        from sinks.sql import create_schema, make_engine

        engine = make_engine(db_url)
        create_schema(engine)  # embedded SQLite: tables from the metadata (Postgres: migrations)
        engine.dispose()
    batch_ids = {e.batch_id for e in events if e.event_type == "batch.opened"}
    bus = LoopBus(events, batch_ids)
    collector = Collector(bus, on_judgement)
    run_main(build_embedded_flow(bus, lambda _r: judge, collector, db_url))
    return collector


# --- reading a batch back (replays) --------------------------------------------------------------
#: the columns of a batch's stored rows that hold its inputs (the rest are ids and times)
_BATCH_INPUTS = ("expected_essays", "grade_scale", "assignment", "judge_provider", "judge_model", "settings")
#: anchors' banked value and SE included (the batch id hashes them only when it is not given
#: with --batch-id). A row from before migration 0004 holds NULL for them: it matches a run
#: without banked values, never one with (the stored result cannot be shown to be theirs).
_ESSAY_INPUTS = ("text", "anchor_grade", "anchor_value", "anchor_value_se")


@dataclass(frozen=True)
class StoredBatch:
    """A batch as the database holds it: its `batches` row, its `essays` rows and its
    newest result (rebuilt from the stored payload; None, with the reason, if it cannot be)."""

    batch: dict[str, Any]
    essays: dict[str, dict[str, Any]]
    result: AssessmentResult | None
    result_error: str | None = None

    def same_inputs(self, batch_row: dict[str, Any], essay_rows: dict[str, dict[str, Any]]) -> bool:
        """Whether the rows a new run would store (`sinks.rows.event_rows`) hold the same
        inputs: essays, anchors (grades and banked values), scale, assignment and settings."""
        if any(self.batch.get(c) != batch_row.get(c) for c in _BATCH_INPUTS):
            return False
        if set(self.essays) != set(essay_rows):
            return False
        return all(
            self.essays[eid].get(c) == row.get(c) for eid, row in essay_rows.items() for c in _ESSAY_INPUTS
        )


def schema_problem(engine: Engine) -> str | None:
    """What keeps the database from holding cjflow's rows ('has no cjflow schema', 'is at
    schema revision X, cjflow needs Y'), or None when it is at the newest migration."""
    from sinks.migrate import current_revision, head_revision
    from sinks.tables import metadata

    tables = set(inspect(engine).get_table_names())
    if not set(metadata.tables) <= tables:
        return "has no cjflow schema"
    if "alembic_version" not in tables:
        return "has cjflow's tables but no schema revision"
    revision, head = current_revision(engine), head_revision()
    if revision != head:
        return f"is at schema revision {revision or 'none'}, cjflow needs {head}"
    return None


def read_stored_batch(engine: Engine, batch_id: str) -> StoredBatch | None:
    """The stored batch `batch_id` (None if the database has none): what the SQL sink
    wrote (`sinks.rows`), the result from the full payload of its newest `batch_results` row."""
    from sinks import tables as t

    with engine.connect() as conn:
        batch = conn.execute(select(t.batches).where(t.batches.c.batch_id == batch_id)).mappings().first()
        if batch is None:
            return None
        essays = {
            r["essay_id"]: dict(r)
            for r in conn.execute(select(t.essays).where(t.essays.c.batch_id == batch_id)).mappings()
        }
        payload = conn.execute(
            select(t.batch_results.c.payload)
            .where(t.batch_results.c.batch_id == batch_id)
            .order_by(t.batch_results.c.finished_at.desc())
            .limit(1)
        ).scalar()
    if payload is None:
        return StoredBatch(dict(batch), essays, None, "it has no stored result (an interrupted run?)")
    try:
        result = AssessmentResult.model_validate(payload)
    except ValidationError as exc:
        return StoredBatch(dict(batch), essays, None, f"its stored result cannot be read: {exc.errors()[0]['msg']}")
    return StoredBatch(dict(batch), essays, result)
