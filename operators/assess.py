"""The per-batch CJ operator: a keyed `stateful` step around `BatchMachine`."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from operators.batch_machine import BatchMachine, Inbound, Outbound
from schemas import utc_now


class AssessLogic(StatefulLogic[Inbound, Outbound, dict]):
    """Holds one batch. Timers expire stuck comparisons; a finished batch is kept as a
    small tombstone for a while so late judgements are counted as strays, then dropped."""

    def __init__(self, snapshot: dict | None):
        # Bytewax's builder gets no key: a new machine takes its batch id from its first event.
        self.machine = BatchMachine.restore(snapshot) if snapshot else BatchMachine("")

    def on_item(self, value: Inbound) -> tuple[Iterable[Outbound], bool]:
        if not self.machine.batch_id:
            self.machine.batch_id = value.batch_id
        out = self.machine.handle(value, utc_now())
        return out, self.machine.is_unknown

    def on_notify(self) -> tuple[Iterable[Outbound], bool]:
        now = utc_now()
        if self.machine.expired(now):
            return [], StatefulLogic.DISCARD
        return self.machine.on_timer(now), StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Outbound], bool]:
        return [], self.machine.is_unknown

    def notify_at(self) -> datetime | None:
        return self.machine.next_timer()

    def snapshot(self) -> dict:
        return self.machine.snapshot()


@operator
def assess_batches(step_id: str, up: KeyedStream[Inbound]) -> KeyedStream[Outbound]:
    """Run every batch's CJ state machine; emits requests, judgements accepted, results,
    usage and dead letters, keyed by batch id.

    >>> # up: ("batch-1", BatchOpened(...)), ("batch-1", EssaySubmitted(...)), ...
    """
    return op.stateful("machine", up, AssessLogic)
