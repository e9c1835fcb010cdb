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
    proc = run_cli("assess", *[a.format(p=tmp_path) for a in args], "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1 and err.startswith("cjflow: error:"), err
    assert message in err


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
