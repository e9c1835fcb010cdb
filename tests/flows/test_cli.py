"""`cjflow assess` end to end on the embedded flow, and its errors for bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from flows.cli import main

ROOT = Path(__file__).resolve().parents[2]


def write_essays(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text)
    return folder


def marker_essays(tmp_path: Path, n: int = 8) -> Path:
    return write_essays(tmp_path / "essays", {f"s{i:02d}.txt": f"Essay number {i}. [q={i}]" for i in range(n)})


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "plugins")])}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def table_rows(db: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(db)
    tables = [r[0] for r in con.execute("select name from sqlite_master where type='table' order by name")]
    out = {t: sorted(con.execute(f'select * from "{t}"').fetchall(), key=repr) for t in tables}
    con.close()
    return out


def test_assess_examples_prints_ranking_and_writes_outputs(tmp_path, examples, capsys):
    out = tmp_path / "out"
    rc = main(["assess", str(examples / "essays"), "--anchors", str(examples / "anchors.csv"),
               "--assignment", str(examples / "assignment.txt"), "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "rank" in printed and "grade" in printed and "SE" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["status"] == "completed"
    assert len(result["essays"]) == len(list((examples / "essays").glob("*.txt")))
    assert all(e["projected_grade"] for e in result["essays"])
    assert (out / "results.csv").read_text().startswith("rank,essay_id,score")
    assert table_rows(out / "cjflow.sqlite3")["essay_scores"]


def test_offline_judge_ranking_follows_the_intended_quality_order(tmp_path, examples):
    out = tmp_path / "out"
    assert main(["assess", str(examples / "essays"), "--out", str(out), "--no-progress"]) == 0
    ranks = {e["essay_id"]: e["rank"] for e in json.loads((out / "results.json").read_text())["essays"]}
    intended = {}
    for line in (examples / "quality_order.csv").read_text().splitlines()[1:]:
        eid, q = line.split(",")
        intended[eid] = int(q)
    ids = sorted(intended)
    rho = spearmanr([ranks[i] for i in ids], [intended[i] for i in ids]).statistic
    assert rho >= 0.6, rho


def test_assess_twice_on_the_same_database_leaves_identical_rows(tmp_path, examples):
    out = tmp_path / "out"
    args = ["assess", str(examples / "essays"), "--anchors", str(examples / "anchors.csv"), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    first = table_rows(out / "cjflow.sqlite3")
    assert main(args) == 0
    second = table_rows(out / "cjflow.sqlite3")
    assert first == second
    n_judgements = len(first["judgements"])
    assert n_judgements == len({r[0] for r in first["judgements"]}) > 0


def test_plugin_judge_decides(tmp_path):
    folder = marker_essays(tmp_path)
    rc = main(["assess", str(folder), "--judge", "cj_test_plugins:by_marker", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    result = json.loads((tmp_path / "o" / "results.json").read_text())
    order = [e["essay_id"] for e in sorted(result["essays"], key=lambda e: e["rank"])]
    assert order[:2] == ["s07", "s06"] and order[-1] == "s00"
    con = sqlite3.connect(tmp_path / "o" / "cjflow.sqlite3")
    providers = con.execute("select provider, count(*) from judgements group by provider").fetchall()
    assert providers == [("plugin", result["comparisons_valid"])]


def test_a_different_plugin_gives_a_different_order(tmp_path):
    folder = write_essays(tmp_path / "e", {f"s{i}.txt": "x" * (10 + 10 * i) for i in range(6)})
    assert main(["assess", str(folder), "--judge", "cj_test_plugins:shortest_wins", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [e["essay_id"] for e in sorted(result["essays"], key=lambda e: e["rank"])][0] == "s0"


def test_broken_plugin_gives_error_judgements_and_a_failed_batch(tmp_path, capsys):
    folder = marker_essays(tmp_path, n=4)
    rc = main(["assess", str(folder), "--judge", "cj_test_plugins:broken", "--out", str(tmp_path / "o"), "--no-progress"])
    result = json.loads((tmp_path / "o" / "results.json").read_text())
    assert rc == 1 and result["status"] == "failed"
    assert result["comparisons_valid"] == 0 and result["errors_by_kind"]["judge_error"] > 0


def assess_fails_in_one_line(tmp_path, args, message):
    """`cjflow assess ARGS` stops with exit code 2 and one line naming the problem."""
    proc = run_cli("assess", *[a.format(p=tmp_path) for a in args], "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1 and err.startswith("cjflow: error:"), err
    assert message in err


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda p: None, ["{p}/missing"], "essay folder not found"),
        (lambda p: (p / "empty").mkdir(), ["{p}/empty"], "no essays (.txt or .md files)"),
        (lambda p: write_essays(p / "e", {"a.txt": "fine", "b.txt": "  \n"}), ["{p}/e"], "empty essay: b.txt"),
        (lambda p: write_essays(p / "e", {"a.txt": "fine", "a.md": "also"}), ["{p}/e"], "duplicate essay id 'a'"),
        (lambda p: (write_essays(p / "e", {"a.txt": "fine", "b.txt": "x"}), (p / "e" / "c.txt").write_bytes(b"\xff\xfe\xfa")),
         ["{p}/e"], "cannot read essay c.txt"),
        (lambda p: write_essays(p / "e", {"a.txt": "only one"}), ["{p}/e"], "need at least 2 essays"),
        (lambda p: (write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), (p / "anc.csv").write_text("essay_id,grade\nzz,A\n")),
         ["{p}/e", "--anchors", "{p}/anc.csv"], "anchor names unknown essay 'zz'"),
        (lambda p: (write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), (p / "anc.csv").write_text("a,Q\n")),
         ["{p}/e", "--anchors", "{p}/anc.csv"], "unknown grade 'Q'"),
        (lambda p: write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), ["{p}/e", "--anchors", "{p}/nope.csv"],
         "anchors file not found"),
        (lambda p: (write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), (p / "anc.csv").write_text("a,A,1.5\n")),
         ["{p}/e", "--anchors", "{p}/anc.csv"], "anc.csv line 1: a banked value needs both 'value,se'"),
        (lambda p: (write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), (p / "anc.csv").write_text("a,A,high,0.3\n")),
         ["{p}/e", "--anchors", "{p}/anc.csv"], "value and se must be numbers"),
        (lambda p: (write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), (p / "anc.csv").write_text("a,A,1.5,0\n")),
         ["{p}/e", "--anchors", "{p}/anc.csv"], "se must be a finite number > 0"),
        (lambda p: (write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), (p / "anc.csv").write_text("a,A,nan,0.3\n")),
         ["{p}/e", "--anchors", "{p}/anc.csv"], "value must be finite"),
        (lambda p: (write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), (p / "anc.csv").write_text("a,A,1.5,0.3\nb,F\n")),
         ["{p}/e", "--anchors", "{p}/anc.csv"], "some anchors have banked values and some not (none for b)"),
        (lambda p: write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), ["{p}/e", "--judge", "nosuchmod:fn"],
         "cannot import plug-in judge module 'nosuchmod'"),
        (lambda p: write_essays(p / "e", {"a.txt": "x", "b.txt": "y"}), ["{p}/e", "--judge", "bogus"], "unknown judge 'bogus'"),
    ],
)
def test_bad_input_gives_one_line_error_and_nonzero_exit(tmp_path, setup, args, message):
    setup(tmp_path)
    assess_fails_in_one_line(tmp_path, args, message)


def test_assess_draws_the_scale_and_report_redraws_it(tmp_path, examples, capsys):
    out = tmp_path / "out"
    assert main(["assess", str(examples / "essays"), "--anchors", str(examples / "anchors.csv"), "--out", str(out),
                 "--no-progress", "--budget", "80"]) == 0
    png = out / "scale.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    capsys.readouterr()
    assert main(["report", str(out / "results.json"), "--png", str(tmp_path / "again.png")]) == 0
    printed = capsys.readouterr().out
    assert "anchor A" in printed and (tmp_path / "again.png").exists()


def test_banked_anchor_values_reach_the_batch_and_fix_the_scale(tmp_path, examples):
    from flows.folder import read_anchor_file, read_essays

    essays = read_essays(examples / "essays")
    plain = (examples / "anchors.csv").read_text().splitlines()
    # bank each example anchor at a value by its grade (A high ... F low), SE 0.3
    level = {g: i - 3.5 for i, g in enumerate(["F", "E", "D", "D+", "C", "C+", "B", "A"])}
    rows = ["essay_id,grade,value,se"] + [f"{r},{level[r.split(',')[1]]},0.3" for r in plain[1:] if r.strip()]
    banked_csv = tmp_path / "banked.csv"
    banked_csv.write_text("\n".join(rows) + "\n")
    grades, values = read_anchor_file(banked_csv, essays, tuple(level))
    assert set(values) == set(grades) and all(se == 0.3 for _, se in values.values())
    out = tmp_path / "out"
    assert main(["assess", str(examples / "essays"), "--anchors", str(banked_csv), "--out", str(out),
                 "--no-progress", "--budget", "120"]) == 0
    result = json.loads((out / "results.json").read_text())
    scores = {e["essay_id"]: e["score"] for e in result["essays"]}
    for eid, (value, _) in values.items():
        assert abs(scores[eid] - value) < 0.8  # held near its banked value
    assert all(e["projected_grade"] for e in result["essays"])


def test_report_banks_the_anchors_for_a_later_batch(tmp_path, examples, capsys):
    from flows.folder import read_anchor_file, read_essays

    calib = tmp_path / "calib"
    assert main(["assess", str(examples / "essays"), "--anchors", str(examples / "anchors.csv"), "--out", str(calib),
                 "--no-progress", "--budget", "200"]) == 0
    bank = tmp_path / "bank.csv"
    assert main(["report", str(calib / "results.json"), "--png", str(tmp_path / "s.png"), "--bank", str(bank)]) == 0
    result = json.loads((calib / "results.json").read_text())
    anchors = {e["essay_id"]: e for e in result["essays"] if e["is_anchor"]}
    grades, values = read_anchor_file(bank, read_essays(examples / "essays"), ("F", "E", "D", "D+", "C", "C+", "B", "A"))
    assert grades == {k: e["anchor_grade"] for k, e in anchors.items()}
    assert values == {k: (pytest.approx(e["score"]), pytest.approx(e["se"])) for k, e in anchors.items()}
    # the bank is an anchors file for the next batch
    assert main(["assess", str(examples / "essays"), "--anchors", str(bank), "--out", str(tmp_path / "next"),
                 "--no-progress", "--budget", "80"]) == 0
    capsys.readouterr()
    no_anchors = tmp_path / "plain"
    assert main(["assess", str(examples / "essays"), "--out", str(no_anchors), "--no-progress", "--budget", "20"]) == 0
    proc = run_cli("report", str(no_anchors / "results.json"), "--png", str(tmp_path / "p.png"), "--bank", str(tmp_path / "b.csv"))
    assert proc.returncode == 2 and "nothing to bank" in proc.stderr


def test_report_on_a_file_that_is_not_a_result_is_a_one_line_error(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"hello": 1}')
    proc = run_cli("report", str(bad))
    assert proc.returncode == 2 and proc.stderr.startswith("cjflow: error: not a cjflow results file")
    assert len(proc.stderr.strip().splitlines()) == 1


# --- batch ids, replays ---------------------------------------------------------------------------
def _batches(db: Path) -> dict[str, tuple]:
    con = sqlite3.connect(db)
    rows = {r[0]: r[1:] for r in con.execute("select batch_id, assignment, grade_scale from batches")}
    con.close()
    return rows


def test_batch_id_follows_the_assignment_and_the_grade_scale(tmp_path, examples):
    anchors = tmp_path / "anchors.csv"
    anchors.write_text("e11,A\ne21,B\n")  # grades on both scales used below
    task1, task2 = tmp_path / "task1.txt", tmp_path / "task2.txt"
    task1.write_text("Write about school weeks.")
    task2.write_text("Write about something else.")
    out = tmp_path / "out"
    base = ["assess", str(examples / "essays"), "--anchors", str(anchors), "--out", str(out), "--no-progress",
            "--no-png", "--budget", "30"]
    ids = []
    for extra in (["--assignment", str(task1)], ["--assignment", str(task2)],
                  ["--assignment", str(task2), "--scale", "eng5_np_legacy_9_step"]):
        assert main([*base, *extra]) == 0
        ids.append(json.loads((out / "results.json").read_text())["batch_id"])
    assert len(set(ids)) == 3
    stored = _batches(out / "cjflow.sqlite3")
    assert stored == {
        ids[0]: ("Write about school weeks.", "swedish_8_anchor"),
        ids[1]: ("Write about something else.", "swedish_8_anchor"),
        ids[2]: ("Write about something else.", "eng5_np_legacy_9_step"),
    }


def test_batch_id_for_covers_every_input_of_the_batch(tmp_path):
    from flows.folder import batch_id_for
    from schemas import BatchSettings

    essays, anchors, s = {"a": "x", "b": "y"}, {"a": "A", "b": "F"}, BatchSettings()
    base = batch_id_for(tmp_path, essays, anchors, s)
    assert base == batch_id_for(tmp_path, dict(essays), dict(anchors), BatchSettings())  # stable
    variants = [
        batch_id_for(tmp_path, {"a": "x", "b": "z"}, anchors, s),
        batch_id_for(tmp_path, essays, {"a": "A", "b": "E"}, s),
        batch_id_for(tmp_path, essays, anchors, BatchSettings(seed=1)),
        batch_id_for(tmp_path, essays, anchors, s, {"a": (1.0, 0.3), "b": (-1.0, 0.3)}),
        batch_id_for(tmp_path, essays, anchors, s, scale="eng5_np_legacy_9_step"),  # not the default
        batch_id_for(tmp_path, essays, anchors, s, assignment="task one"),
        batch_id_for(tmp_path, essays, anchors, s, assignment="task two"),
    ]
    assert len({base, *variants}) == len(variants) + 1


COIN_JUDGE = '''
import random

CALLS = []


def coin(essay_a, essay_b):
    """A judge that does not repeat itself (as an LLM may not)."""
    CALLS.append(1)
    return random.choice("AB")
'''


@pytest.fixture
def coin_judge(tmp_path, monkeypatch):
    """A non-deterministic plug-in judge counting its calls."""
    import importlib

    mod_dir = tmp_path / "judge_mod"
    mod_dir.mkdir()
    (mod_dir / "cjflow_coin_judge.py").write_text(COIN_JUDGE)
    monkeypatch.syspath_prepend(str(mod_dir))
    sys.modules.pop("cjflow_coin_judge", None)
    module = importlib.import_module("cjflow_coin_judge")
    yield module
    sys.modules.pop("cjflow_coin_judge", None)


def test_rerun_replays_the_stored_result_without_judging(tmp_path, examples, coin_judge, capsys):
    out = tmp_path / "out"
    args = ["assess", str(examples / "essays"), "--anchors", str(examples / "anchors.csv"), "--out", str(out),
            "--no-progress", "--no-png", "--judge", "cjflow_coin_judge:coin", "--budget", "60"]
    assert main(args) == 0
    calls = len(coin_judge.CALLS)
    assert calls >= 60
    first_json, first_csv = (out / "results.json").read_text(), (out / "results.csv").read_text()
    rows = table_rows(out / "cjflow.sqlite3")
    capsys.readouterr()

    (out / "results.json").unlink()
    (out / "results.csv").unlink()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert len(coin_judge.CALLS) == calls  # no judge call (no paid call) the second time
    last = printed.strip().splitlines()[-1]
    assert "replayed the stored result without judging" in last and "--batch-id" in last
    assert "rank" in printed and "anchor A" in printed  # the ranking is shown as usual
    # the files show what the database holds: the first run
    assert (out / "results.json").read_text() == first_json
    assert (out / "results.csv").read_text() == first_csv
    assert table_rows(out / "cjflow.sqlite3") == rows
    con = sqlite3.connect(out / "cjflow.sqlite3")
    (payload,) = con.execute("select payload from batch_results").fetchone()
    con.close()
    assert json.loads(payload) == json.loads(first_json)


def test_rerun_of_a_batch_without_a_stored_result_is_refused(tmp_path, examples):
    out = tmp_path / "out"
    args = ["assess", str(examples / "essays"), "--out", str(out), "--no-progress", "--no-png", "--budget", "20"]
    assert main(args) == 0
    con = sqlite3.connect(out / "cjflow.sqlite3")
    with con:  # as if the first run had been interrupted before its result
        con.execute("delete from grade_projections")
        con.execute("delete from essay_scores")
        con.execute("delete from batch_results")
    con.close()
    before = table_rows(out / "cjflow.sqlite3")
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cjflow: error: batch essays-"), err
    assert "already exists in the database but it has no stored result" in err
    assert "pass a new --batch-id or another --db" in err
    assert table_rows(out / "cjflow.sqlite3") == before


def test_an_explicit_batch_id_the_database_holds_with_other_input_is_refused(tmp_path, examples):
    out = tmp_path / "out"
    base = ["assess", str(examples / "essays"), "--out", str(out), "--no-progress", "--no-png", "--batch-id", "mine"]
    assert main([*base, "--budget", "20"]) == 0
    before = table_rows(out / "cjflow.sqlite3")
    proc = run_cli(*base, "--budget", "30")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "cjflow: error: batch mine already exists in the database with other essays or settings;"
        " to assess it anew pass a new --batch-id or another --db"
    )
    assert table_rows(out / "cjflow.sqlite3") == before
    assert main([*base[:-1], "mine-2", "--budget", "30"]) == 0  # a new id runs


# --- Postgres ----------------------------------------------------------------------------------------
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def empty_pg_url():
    """A new Postgres database without cjflow's schema; dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as con:
            name = f"cjflow_t_{uuid.uuid4().hex[:10]}"
            con.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail("Postgres is not reachable on 127.0.0.1:5432")
        pytest.skip("Postgres is not reachable on 127.0.0.1:5432")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as con:
        con.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.postgres
def test_postgres_without_the_schema_says_run_db_upgrade(tmp_path, examples, empty_pg_url):
    args = ["assess", str(examples / "essays"), "--db", empty_pg_url, "--out", str(tmp_path / "out"),
            "--no-progress", "--no-png", "--budget", "20"]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in proc.stderr, err
    assert err.startswith("cjflow: error: database postgresql+psycopg://") and "has no cjflow schema" in err
    assert "run 'cjflow db upgrade'" in err
    assert not (tmp_path / "out" / "results.json").exists()
    assert main(["db", "upgrade", "--url", empty_pg_url]) == 0
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.postgres
def test_postgres_rerun_replays_from_the_stored_result(tmp_path, examples, pg_url, coin_judge):
    import sqlalchemy as sa

    args = ["assess", str(examples / "essays"), "--db", pg_url, "--no-progress", "--no-png",
            "--judge", "cjflow_coin_judge:coin", "--budget", "40"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    calls = len(coin_judge.CALLS)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert len(coin_judge.CALLS) == calls
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    assert json.loads((tmp_path / "b" / "results.json").read_text()) == first
    eng = sa.create_engine(pg_url)
    with eng.connect() as con:
        assert con.execute(sa.text("select count(*) from batch_results")).scalar() == 1
        assert con.execute(sa.text("select count(*) from judgements")).scalar() == calls
    eng.dispose()


# --- one-line errors ----------------------------------------------------------------------------------
def _two_essays(p: Path) -> Path:
    return write_essays(p / "e", {"a.txt": "x", "b.txt": "y"})


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (_two_essays, ["{p}/e", "--in-flight", "0"], "invalid option --in-flight: Input should be greater than or equal to 1"),
        (_two_essays, ["{p}/e", "--max-se", "-1"], "invalid option --max-se: Input should be greater than 0"),
        (lambda p: write_essays(p / "e", {"a.txt": "x", "b" * 201 + ".txt": "y"}), ["{p}/e"],
         "essay file name too long: bbbb"),
        (_two_essays, ["{p}/e", "--batch-id", "b" * 201], "--batch-id may have at most 200 characters, got 201"),
        (lambda p: (_two_essays(p), (p / "t.txt").write_text("x" * 20_001)), ["{p}/e", "--assignment", "{p}/t.txt"],
         "invalid batch: assignment: String should have at most 20000 characters"),
        (lambda p: (_two_essays(p), (p / "anc.csv").write_text("a,A\n")), ["{p}/e", "--anchors", "{p}/anc.csv"],
         "anc.csv: need at least 2 anchors to place grades on the scale, got 1"),
        (lambda p: (_two_essays(p), (p / "anc.csv").write_text("essay_id,grade\na,A\nb,A\n")),
         ["{p}/e", "--anchors", "{p}/anc.csv"], "anc.csv: need anchors of at least 2 distinct grades, got only ['A']"),
        (_two_essays, ["{p}/e", "--db", "nosuchdialect://x"], "cannot use database nosuchdialect://x"),
    ],
)
def test_more_bad_input_gives_one_line_error_and_exit_2(tmp_path, setup, args, message):
    setup(tmp_path)
    assess_fails_in_one_line(tmp_path, args, message)
    assert not (tmp_path / "out" / "results.json").exists()


def test_one_anchor_is_refused_where_it_used_to_give_no_grades(tmp_path, examples):
    (tmp_path / "a.csv").write_text("e11,A\n")
    proc = run_cli("assess", str(examples / "essays"), "--anchors", str(tmp_path / "a.csv"), "--out",
                   str(tmp_path / "out"), "--no-png")
    assert proc.returncode == 2
    assert proc.stderr == "cjflow: error: a.csv: need at least 2 anchors to place grades on the scale, got 1\n"


def test_anchors_saved_by_excel_with_a_byte_order_mark_are_read(tmp_path, examples):
    anchors = tmp_path / "excel.csv"
    anchors.write_bytes(b"\xef\xbb\xbf" + (examples / "anchors.csv").read_bytes().replace(b"\n", b"\r\n"))
    out = tmp_path / "out"
    assert main(["assess", str(examples / "essays"), "--anchors", str(anchors), "--out", str(out),
                 "--no-progress", "--no-png", "--budget", "40"]) == 0
    result = json.loads((out / "results.json").read_text())
    expected = dict(line.split(",") for line in (examples / "anchors.csv").read_text().split()[1:])
    assert {e["essay_id"]: e["anchor_grade"] for e in result["essays"] if e["is_anchor"]} == expected
    assert all(e["projected_grade"] for e in result["essays"])


def test_bank_quotes_essay_ids_and_assess_reads_it_back(tmp_path):
    import csv

    folder = write_essays(tmp_path / "e", {
        "Smith, Anna.txt": "Essay number 7. [q=7]", 'say "hi".txt': "Essay number 1. [q=1]",
        **{f"s{i}.txt": f"Essay number {i}. [q={i}]" for i in (2, 3, 4, 5)},
    })
    anchors = tmp_path / "anchors.csv"
    anchors.write_text('"Smith, Anna",A\n"say ""hi""",E\n')
    args = ["--judge", "cj_test_plugins:by_marker", "--no-progress", "--no-png", "--budget", "30"]
    assert main(["assess", str(folder), "--anchors", str(anchors), "--out", str(tmp_path / "a"), *args]) == 0
    bank = tmp_path / "bank.csv"
    assert main(["report", str(tmp_path / "a" / "results.json"), "--png", str(tmp_path / "s.png"),
                 "--bank", str(bank)]) == 0
    with bank.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["essay_id", "grade", "value", "se"]
    assert sorted((r[0], r[1]) for r in rows[1:]) == [("Smith, Anna", "A"), ('say "hi"', "E")]
    assert all(len(r) == 4 for r in rows)
    assert main(["assess", str(folder), "--anchors", str(bank), "--out", str(tmp_path / "b"), *args]) == 0
    result = json.loads((tmp_path / "b" / "results.json").read_text())
    assert {e["essay_id"]: e["anchor_grade"] for e in result["essays"] if e["is_anchor"]} == {
        "Smith, Anna": "A", 'say "hi"': "E"}


# --- notes under the summary --------------------------------------------------------------------------
def test_summary_notes_the_last_judge_error(tmp_path, capsys):
    folder = marker_essays(tmp_path, n=4)
    rc = main(["assess", str(folder), "--judge", "cj_test_plugins:broken", "--out", str(tmp_path / "o"),
               "--no-progress", "--no-png"])
    assert rc == 1
    lines = capsys.readouterr().out.splitlines()
    notes = [ln for ln in lines if ln.startswith("last judge error: ")]
    assert notes == ["last judge error: judge_error: RuntimeError: plug-in bug"], lines


def test_summary_notes_why_there_are_no_grades(examples, tmp_path):
    from flows.output import ranking_table
    from schemas import AssessmentResult

    assert main(["assess", str(examples / "essays"), "--out", str(tmp_path / "o"), "--no-progress", "--no-png",
                 "--budget", "20"]) == 0
    result = AssessmentResult.model_validate_json((tmp_path / "o" / "results.json").read_text())
    assert "no grades:" not in ranking_table(result) and "last judge error" not in ranking_table(result)
    table = ranking_table(result.model_copy(update={"grading_error": "anchors ordered against\nthe scale"}))
    assert table.splitlines()[-1] == "no grades: anchors ordered against the scale"


# --- reruns against what an earlier run stored ---------------------------------------------------
def test_rerun_of_a_failed_batch_says_how_to_assess_it_again(tmp_path, capsys):
    folder = marker_essays(tmp_path, n=4)
    args = ["assess", str(folder), "--judge", "cj_test_plugins:broken", "--out", str(tmp_path / "o"),
            "--no-progress", "--no-png"]
    assert main(args) == 1
    capsys.readouterr()
    assert main(args) == 2  # the stored failure is not replayed as if it were the answer
    err = capsys.readouterr().err
    assert "failed before (" in err and "last judge error: judge_error: RuntimeError: plug-in bug)" in err
    assert "--batch-id" in err


def test_rerun_brings_an_older_embedded_database_up_to_date_and_replays(tmp_path, examples, capsys):
    from sqlalchemy import create_engine

    from sinks.migrate import current_revision, downgrade, head_revision

    out = tmp_path / "out"
    args = ["assess", str(examples / "essays"), "--out", str(out), "--no-progress", "--no-png", "--budget", "20"]
    assert main(args) == 0
    url = f"sqlite:///{out / 'cjflow.sqlite3'}"
    downgrade(url, "0002")  # as an older cjflow left it
    engine = create_engine(url)
    assert current_revision(engine) == "0002"
    capsys.readouterr()
    assert main(args) == 0
    assert "replayed the stored result without judging" in capsys.readouterr().out
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_the_default_scale_keeps_batch_ids_as_before(tmp_path):
    from flows.folder import batch_id_for
    from schemas import BatchSettings

    essays, anchors, settings = {"a": "x", "b": "y"}, {"a": "A", "b": "F"}, BatchSettings()
    same = batch_id_for(tmp_path, essays, anchors, settings)
    assert batch_id_for(tmp_path, essays, anchors, settings, scale="swedish_8_anchor") == same
    assert batch_id_for(tmp_path, essays, anchors, settings, scale="eng5_np_legacy_9_step") != same


def test_a_nul_in_the_assignment_is_refused(tmp_path, examples):
    task = tmp_path / "task.txt"
    task.write_text("Write about\x00 school.")
    assess_fails_in_one_line(tmp_path, [str(examples / "essays"), "--assignment", str(task)], "contains a NUL character")


def test_an_embedded_database_from_a_newer_cjflow_is_refused_in_one_line(tmp_path, examples, capsys):
    out = tmp_path / "out"
    args = ["assess", str(examples / "essays"), "--out", str(out), "--no-progress", "--no-png", "--budget", "20"]
    assert main(args) == 0
    con = sqlite3.connect(out / "cjflow.sqlite3")
    with con:
        con.execute("update alembic_version set version_num = '0099'")
    con.close()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "written by a newer cjflow" in err, err
