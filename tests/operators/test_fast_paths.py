"""The per-judgement shortcuts give what the plain computations gave: ids, event bytes, and
the batch machine's derived state (kept incrementally, rebuilt on restore)."""

from __future__ import annotations

import pickle
import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from operators.batch_machine import FLIGHT, BatchMachine, _ValidColumns
from schemas import BatchOpened, BatchSettings, ComparisonRequested, DeadLetter, EssaySubmitted, Judgement
from schemas.envelope import _NAMESPACE, deterministic_id

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_deterministic_id_is_uuid5_of_the_joined_parts() -> None:
    rnd = random.Random(5)
    alphabet = "ab#-_ \x1f\x00åä²€💥" + "0123456789"
    for _ in range(20_000):
        parts = [
            "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 30)))
            if rnd.random() < 0.7 else rnd.choice([None, 0, 7, -3, 2.5, b"x\x00", True])
            for _ in range(rnd.randrange(0, 6))
        ]
        assert deterministic_id(*parts) == str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def test_to_json_is_model_dump_json_encoded() -> None:
    opened = BatchOpened.create("b", 2, occurred_at=T0, assignment="Skriv om ö \x00", correlation_id="c")
    dead = DeadLetter.create("b", "bad\x00 ü", "src", b"\xff\x00raw", partition=1, offset=2)
    for ev in (opened, dead, EssaySubmitted.create("b", "e1", "Ä text 💥 \u2028", occurred_at=T0)):
        assert ev.to_json() == ev.model_dump_json().encode()


def test_valid_columns_keep_their_rows_when_they_grow() -> None:
    cols = _ValidColumns()
    rows = [(i % 7, (i + 3) % 11, i % 3 == 0) for i in range(100)]
    early = None
    for k, row in enumerate(rows):
        cols.append(*row)
        if k == 10:
            early = cols.rows()
    first, second, won = cols.rows()
    assert first.tolist() == [r[0] for r in rows] and second.tolist() == [r[1] for r in rows]
    assert won.tolist() == [r[2] for r in rows] and won.dtype == bool and first.dtype == np.int64
    assert early is not None and early[0].tolist() == [r[0] for r in rows[:11]]  # views taken before growing
    assert cols.rows(95)[0].tolist() == [r[0] for r in rows[95:]] and cols.rows(0, 200)[0].shape == (100,)
    with pytest.raises(ValueError):
        first[0] = 5  # read-only: no reader changes the history


def _run(m: BatchMachine, steps: int, now: datetime) -> list[ComparisonRequested]:
    pending: list[ComparisonRequested] = []
    n = 20
    s = BatchSettings(budget=80, in_flight=6, min_per_essay=3)
    pending += [o for o in m.handle(BatchOpened.create(m.batch_id, n, settings=s, occurred_at=now), now)
                if isinstance(o, ComparisonRequested)]
    for i in range(n):
        out = m.handle(EssaySubmitted.create(m.batch_id, f"e{i}", f"essay {i}", occurred_at=now), now)
        pending += [o for o in out if isinstance(o, ComparisonRequested)]
    for _ in range(steps):
        r = pending.pop(0)
        won = "A" if int(r.essay_a.essay_id[1:]) > int(r.essay_b.essay_id[1:]) else "B"
        out = m.handle(Judgement.for_request(r, winner=won, provider="p", model="m", occurred_at=now), now)
        pending += [o for o in out if isinstance(o, ComparisonRequested)]
    return pending


def _derived(m: BatchMachine) -> tuple:
    counts = m._valid_per_essay()
    short = int(np.count_nonzero(counts < m.opened.settings.min_per_essay)) if m.opened else None
    flying = [seq for seq, c in enumerate(m.comps) if c.state == FLIGHT]
    first, second, won = m._valid_arrays()
    return list(m._flying), flying, m._short, short, first.tolist(), second.tolist(), won.tolist()


def test_derived_state_matches_the_history_and_survives_a_restore() -> None:
    m = BatchMachine("d")
    _run(m, 40, T0)
    kept = _derived(m)
    assert kept[0] == kept[1] and kept[2] == kept[3]
    assert kept[4] == [m.comps[q].first for q in m.valid_order]
    twin = BatchMachine.restore(pickle.loads(pickle.dumps(m.snapshot())))
    assert _derived(twin) == kept
    assert twin.next_timer() == m.next_timer() == min(
        datetime.fromtimestamp(c.deadline, UTC) for c in m.comps if c.state == FLIGHT
    )
    later = T0 + timedelta(hours=1)  # every attempt in flight is past its deadline
    assert [o.model_dump_json() for o in twin.on_timer(later)] == [o.model_dump_json() for o in m.on_timer(later)]
    assert _derived(twin) == _derived(m)
