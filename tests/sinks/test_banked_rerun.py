"""Banked anchor values (the value,se columns of --anchors) are inputs of a batch: the
essays rows store them (migration 0004), and an `assess` rerun under the same --batch-id
with other banked values is refused instead of replaying the old result."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from flows.cli import main
from tests.flows.test_cli import table_rows

ROOT = Path(__file__).resolve().parents[2]
REFUSED = (
    "cjflow: error: batch {id} already exists in the database with other essays or settings;"
    " to assess it anew pass a new --batch-id or another --db"
)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False
    )


def shifted(bank: Path, dest: Path, dv: float = 0.0, dse: float = 0.0) -> Path:
    """A copy of the anchors file `bank` with every banked value / SE moved."""
    with bank.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    iv, ise = header.index("value"), header.index("se")
    for r in body:
        r[iv] = repr(float(r[iv]) + dv)
        r[ise] = repr(float(r[ise]) + dse)
    with dest.open("w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    return dest


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    """An anchors file with banked values, from `cjflow report --bank` on a calibration run."""
    examples = ROOT / "examples"
    tmp = tmp_path_factory.mktemp("calib")
    assert main(["assess", str(examples / "essays"), "--anchors", str(examples / "anchors.csv"),
                 "--out", str(tmp / "calib"), "--no-progress", "--no-png", "--budget", "60"]) == 0
    path = tmp / "bank.csv"
    assert main(["report", str(tmp / "calib" / "results.json"), "--png", str(tmp / "s.png"), "--bank", str(path)]) == 0
    return path


def _assess(out: Path, anchors: Path, *extra: str) -> list[str]:
    return ["assess", str(ROOT / "examples" / "essays"), "--anchors", str(anchors), "--out", str(out),
            "--no-progress", "--no-png", "--budget", "30", *extra]


def test_rerun_with_other_banked_values_under_the_same_batch_id_is_refused(tmp_path, bank, capsys):
    out = tmp_path / "out"
    assert main(_assess(out, bank, "--batch-id", "mine")) == 0
    db = out / "cjflow.sqlite3"
    con = sqlite3.connect(db)
    stored = dict(con.execute("select essay_id, anchor_value from essays where anchor_value is not null").fetchall())
    con.close()
    assert len(stored) == 6  # the banked values are stored with the essays
    before = table_rows(db)

    # the same values: a replay
    capsys.readouterr()
    assert main(_assess(out, bank, "--batch-id", "mine")) == 0
    assert "replayed the stored result without judging" in capsys.readouterr().out.strip().splitlines()[-1]

    # other values (or only other SEs) under the same --batch-id: refused with one line
    for dv, dse in ((0.5, 0.0), (0.0, 0.1)):
        other = shifted(bank, tmp_path / f"bank_{dv}_{dse}.csv", dv, dse)
        proc = run_cli(*_assess(out, other, "--batch-id", "mine"))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == REFUSED.format(id="mine")
    # the anchors without their banked values are other input too
    proc = run_cli(*_assess(out, ROOT / "examples" / "anchors.csv", "--batch-id", "mine"))
    assert proc.returncode == 2 and proc.stderr.strip() == REFUSED.format(id="mine"), proc.stderr
    assert table_rows(db) == before


def test_a_database_from_before_0004_is_migrated_and_compared(tmp_path, bank, capsys):
    """An embedded database at 0003 (no anchor value columns) is upgraded by the rerun; its
    essays then hold NULL values: a batch without banked values replays as before, one with
    banked values cannot be shown to have had these and is refused."""
    out = tmp_path / "out"
    assert main(_assess(out, ROOT / "examples" / "anchors.csv", "--batch-id", "plain")) == 0
    assert main(_assess(out, bank, "--batch-id", "banked")) == 0
    db = out / "cjflow.sqlite3"
    url = f"sqlite:///{db}"
    counts = {t: len(rows) for t, rows in table_rows(db).items()}
    assert main(["db", "downgrade", "0003", "--url", url]) == 0  # as an older cjflow left it
    engine = create_engine(url)
    assert {c["name"] for c in inspect(engine).get_columns("essays")}.isdisjoint({"anchor_value", "anchor_value_se"})
    engine.dispose()
    assert {t: len(rows) for t, rows in table_rows(db).items()} == counts  # the downgrade keeps every row

    capsys.readouterr()
    assert main(_assess(out, ROOT / "examples" / "anchors.csv", "--batch-id", "plain")) == 0
    assert "replayed the stored result without judging" in capsys.readouterr().out.strip().splitlines()[-1]
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar_one() == "0004"
        assert conn.execute(text("select count(*) from essays where anchor_value is not null")).scalar_one() == 0
    engine.dispose()
    assert {t: len(rows) for t, rows in table_rows(db).items()} == counts

    proc = run_cli(*_assess(out, bank, "--batch-id", "banked"))
    assert proc.returncode == 2 and proc.stderr.strip() == REFUSED.format(id="banked"), proc.stderr


def test_essay_rows_carry_the_banked_value_and_se():
    from schemas import EssaySubmitted
    from sinks import tables as t
    from sinks.rows import event_rows

    ev = EssaySubmitted.create("b", "e1", "text", anchor_grade="C", anchor_value=0.75, anchor_value_se=0.2)
    ((table, row),) = event_rows(ev)
    assert table is t.essays and (row["anchor_value"], row["anchor_value_se"]) == (0.75, 0.2)
    ((_t, row),) = event_rows(EssaySubmitted.create("b", "e2", "text"))
    assert (row["anchor_value"], row["anchor_value_se"]) == (None, None)


@pytest.mark.postgres
def test_migration_0004_on_postgres_keeps_rows_and_values_round_trip(pg, empty_database):
    from schemas import EssaySubmitted
    from sinks import migrate
    from sinks.sql import make_engine, write_events
    from sinks.synthetic import batch_events

    url = pg.url(empty_database)
    migrate.upgrade(url, "0003")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # a batch written by an older cjflow
            conn.execute(text(
                "INSERT INTO batches (batch_id, event_id, expected_essays, assignment, judge_provider, settings,"
                " opened_at) VALUES ('old', 'e0', 2, '', 'offline', '{}', now())"
            ))
            conn.execute(text(
                "INSERT INTO essays (batch_id, essay_id, event_id, text, anchor_grade, submitted_at)"
                " VALUES ('old', 'a', 'e1', 'x', 'C', now())"
            ))
        migrate.upgrade(url)
        events = batch_events("new", 3, 3)
        events[1] = EssaySubmitted.create("new", events[1].essay_id, events[1].text, anchor_grade="C",
                                          anchor_value=-1.25, anchor_value_se=0.3, occurred_at=events[1].occurred_at)
        assert write_events(engine, events) > 0
        with engine.connect() as conn:
            got = conn.execute(text(
                "SELECT batch_id, anchor_value, anchor_value_se FROM essays WHERE anchor_grade IS NOT NULL"
                " ORDER BY batch_id"
            )).all()
        assert [tuple(r) for r in got] == [("new", -1.25, 0.3), ("old", None, None)]
        migrate.downgrade(url, "0003")
        columns = {c["name"] for c in inspect(engine).get_columns("essays")}
        assert columns.isdisjoint({"anchor_value", "anchor_value_se"})
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM essays")).scalar_one() == 4
    finally:
        engine.dispose()
