"""The per-batch CJ operator: a keyed `stateful` step around `BatchMachine`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from operators.batch_machine import BatchMachine, Inbound, Outbound
from operators.codec import reason_label
from schemas import AssessmentResult, ComparisonRequested, DeadLetter, Judgement, utc_now
from telemetry import metrics as m

_log = logging.getLogger(__name__)
# The labelled counters bumped per judgement and per request, looked up once (`labels()`
# returns the same child every time; it takes a lock and checks the values on each call).
_RECEIVED = {True: m.JUDGEMENTS_RECEIVED.labels("valid"), False: m.JUDGEMENTS_RECEIVED.labels("error")}
_REQUESTED = {True: m.COMPARISONS_REQUESTED.labels("new"), False: m.COMPARISONS_REQUESTED.labels("retry")}


class AssessLogic(StatefulLogic[Inbound, Outbound, dict]):
    """Holds one batch. Timers expire stuck comparisons; a finished batch is kept as a
    small tombstone for a while so late judgements are counted as strays, then dropped."""

    def __init__(self, snapshot: dict | None):
        # Bytewax's builder gets no key: a new machine takes its batch id from its first event.
        self._backlog: list[Outbound] = []  # emitted at the first activation
        self._unread: dict | None = None  # kept as it was until the backlog is out
        if not snapshot:
            self.machine = BatchMachine("")
        else:
            try:
                self.machine = BatchMachine.restore(snapshot)
            except Exception as exc:  # noqa: BLE001 - one unreadable batch must not keep the flow from starting
                _log.exception("batch %s: saved state unreadable, the batch is ended", snapshot.get("batch_id"))
                self.machine, self._backlog = BatchMachine.unreadable(snapshot, exc, utc_now())
                self._unread = snapshot
        self._open = False
        self._awaiting = False
        self._track_open()

    def on_item(self, value: Inbound) -> tuple[Iterable[Outbound], bool]:
        mc = self.machine
        if not mc.batch_id:
            mc.batch_id = value.batch_id
        strays, dups = mc.strays, mc.duplicates
        if isinstance(value, Judgement):
            _RECEIVED[value.is_valid].inc()
        now = utc_now()
        try:
            out = mc.handle(value, now)
        except Exception as exc:  # noqa: BLE001 - one batch's failure must not stop the flow (and every batch)
            out = self._crashed(exc, value, now)
        if mc.strays > strays:
            m.STRAYS.inc(mc.strays - strays)
        if mc.duplicates > dups:
            m.DUPLICATES.inc(mc.duplicates - dups)
        return self._observe(self._take_backlog() + out), self._discard()

    def on_notify(self) -> tuple[Iterable[Outbound], bool]:
        now = utc_now()
        if self._backlog:
            return self._observe(self._take_backlog()), self._discard()
        if self.machine.expired(now):
            return [], StatefulLogic.DISCARD
        try:
            fired = self.machine.on_timer(now)
        except Exception as exc:  # noqa: BLE001 - as in on_item
            fired = self._crashed(exc, None, now)
        out = self._observe(fired)
        return out, self._discard()  # essays of a never-opened batch were dead-lettered: drop it

    def on_eof(self) -> tuple[Iterable[Outbound], bool]:
        return self._observe(self._take_backlog()), self._discard()

    def notify_at(self) -> datetime | None:
        return utc_now() if self._backlog else self.machine.next_timer()

    def _take_backlog(self) -> list[Outbound]:
        out, self._backlog = self._backlog, []
        return out

    def snapshot(self) -> dict:
        if self._backlog and self._unread is not None:
            return self._unread  # not out yet: a restart ends the batch the same way
        return self.machine.snapshot()

    def _crashed(self, exc: Exception, value: Inbound | None, now: datetime) -> list[Outbound]:
        _log.exception("batch %s: internal error, the batch is ended", self.machine.batch_id)
        return self.machine.crashed(exc, value, now)

    def _discard(self) -> bool:
        if self.machine.is_unknown:
            self._track_open(force_closed=True)
            return StatefulLogic.DISCARD
        return StatefulLogic.RETAIN

    def _track_open(self, force_closed: bool = False) -> None:
        mc = self.machine
        is_open = not force_closed and mc.phase != "done" and mc.opened is not None
        if is_open != self._open:
            m.ACTIVE_BATCHES.inc(1 if is_open else -1)
            self._open = is_open
        # Waiting for the judges (the no-progress alert's base), not for its publisher's essays.
        awaiting = is_open and mc.phase == "comparing" and mc._in_flight > 0  # noqa: SLF001 - the machine's count
        if awaiting != self._awaiting:
            m.BATCHES_AWAITING.inc(1 if awaiting else -1)
            self._awaiting = awaiting

    def _observe(self, out: list[Outbound]) -> list[Outbound]:
        for ev in out:
            if isinstance(ev, ComparisonRequested):
                _REQUESTED[ev.attempt == 1].inc()
            elif isinstance(ev, DeadLetter):
                m.DEAD_LETTERS.labels(reason_label(ev.reason)).inc()
            elif isinstance(ev, AssessmentResult):
                m.BATCHES_FINISHED.labels(ev.status.value, ev.stop_reason).inc()
                m.BATCH_DURATION.observe(ev.duration_s)
                m.COMPARISONS_PER_BATCH.observe(ev.comparisons_valid)
                if ev.reliability_ssr is not None:
                    m.BATCH_SSR.observe(ev.reliability_ssr)
        self._track_open()
        return out


@operator
def assess_batches(step_id: str, up: KeyedStream[Inbound]) -> KeyedStream[Outbound]:
    """Run every batch's CJ state machine; emits requests, accepted judgements, results,
    usage and dead letters, keyed by batch id.

    >>> # up: ("batch-1", BatchOpened(...)), ("batch-1", EssaySubmitted(...)), ...
    """
    return op.stateful("machine", up, AssessLogic)
