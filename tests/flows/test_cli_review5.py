"""`cjflow assess`: outputs in UTF-8 whatever the locale, one-line errors for a bad --out or
--db, Ctrl-C, the default budget on a large batch, and anchors headers as Excel writes them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import main
from tests.flows.test_cli import ROOT, assess_fails_in_one_line, marker_essays, run_cli, write_essays

# an ASCII locale that Python does not coerce to UTF-8 (as a non-UTF-8 locale would be)
ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}

MESSAGE_JUDGE = '''
def judge(essay_a, essay_b):
    raise ValueError("domaren svarade \\u201cos\\u00e4ker\\u201d")
'''

SLOW_JUDGE = '''
import time


def judge(essay_a, essay_b):
    time.sleep(0.3)
    return "A" if len(essay_a) >= len(essay_b) else "B"
'''


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests" / "plugins"), str(tmp_path / "mods")])
    return {**os.environ, "PYTHONPATH": path, "OPENBLAS_NUM_THREADS": "1", **extra}


def _module(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / "mods").mkdir(exist_ok=True)
    (tmp_path / "mods" / f"{name}.py").write_text(text)


# --- 1. outputs in UTF-8 --------------------------------------------------------------------------
def test_a_non_ascii_judge_message_is_written_in_utf8_under_an_ascii_locale(tmp_path):
    _module(tmp_path, "cjflow_msg_judge", MESSAGE_JUDGE)
    folder = marker_essays(tmp_path, n=3)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "assess", str(folder), "--judge", "cjflow_msg_judge:judge",
         "--out", str(out), "--no-progress", "--no-png"],
        capture_output=True, env=_env(tmp_path, **ASCII_LOCALE), cwd=ROOT, timeout=120, check=False,
    )
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert proc.returncode == 1  # every call failed: a failed batch, reported as usual
    result = json.loads((out / "results.json").read_bytes().decode("utf-8"))
    assert "\u201cos\u00e4ker\u201d" in result["last_error"]
    assert (out / "results.csv").read_bytes().decode("utf-8").startswith("rank,essay_id")
    assert b"last judge error: " in proc.stdout  # shown, escaped where the locale cannot show it


def test_non_ascii_essay_ids_are_written_in_utf8_under_an_ascii_locale(tmp_path):
    folder = write_essays(tmp_path / "e", {"Zo\u00eb.txt": "Essay number 3. [q=3]", "\u00c5sa.txt": "Essay number 1. [q=1]",
                                          "e03.txt": "Essay number 2. [q=2]"})
    first = tmp_path / "first"
    assert main(["assess", str(folder), "--judge", "cj_test_plugins:by_marker", "--out", str(first),
                 "--no-progress", "--no-png", "--budget", "6"]) == 0
    out = tmp_path / "again"
    code = (
        "import sys; from pathlib import Path; from flows.output import write_results; from schemas import AssessmentResult;"
        " r = AssessmentResult.model_validate_json(Path(sys.argv[1]).read_bytes()); write_results(r, Path(sys.argv[2]))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(first / "results.json"), str(out)], capture_output=True,
                          text=True, env=_env(tmp_path, **ASCII_LOCALE), cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / "results.json").read_bytes() == (first / "results.json").read_bytes()
    ids = {line.split(",")[1] for line in (out / "results.csv").read_bytes().decode("utf-8").splitlines()[1:]}
    assert ids == {"Zo\u00eb", "\u00c5sa", "e03"}


# --- 2. a bad --out or --db -------------------------------------------------------------------------
def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "panicked" not in proc.stderr, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cjflow: error:"), err
    return err


def test_an_out_that_is_a_file_is_a_one_line_error(tmp_path):
    folder = marker_essays(tmp_path, n=3)
    (tmp_path / "afile").write_text("not a folder")
    err = _one_line_error(run_cli("assess", str(folder), "--out", str(tmp_path / "afile"), "--no-progress"))
    assert f"--out {tmp_path / 'afile'} is a file, not a folder" in err
    err = _one_line_error(run_cli("assess", str(folder), "--out", str(tmp_path / "afile" / "sub"), "--no-progress"))
    assert f"cannot create the --out folder {tmp_path / 'afile' / 'sub'}: Not a directory" in err


def test_a_sqlite_db_in_a_missing_folder_is_a_one_line_error(tmp_path):
    folder = marker_essays(tmp_path, n=3)
    db = tmp_path / "nodir" / "x.db"
    err = _one_line_error(run_cli("assess", str(folder), "--out", str(tmp_path / "o"), "--db", f"sqlite:///{db}",
                                  "--no-progress"))
    assert f"cannot use database sqlite:///{db}: cannot create {db}: folder {db.parent} does not exist" in err
    assert not db.parent.exists()


# --- 3. Ctrl-C ----------------------------------------------------------------------------------
def test_an_interrupt_inside_the_flow_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    from bytewax.errors import BytewaxRuntimeError

    import flows.embedded

    def interrupted(*_a, **_k):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:  # the shape run_main gives it
            raise BytewaxRuntimeError("interrupt signal received") from exc

    monkeypatch.setattr(flows.embedded, "run_embedded", interrupted)
    folder = marker_essays(tmp_path, n=3)
    assert main(["assess", str(folder), "--out", str(tmp_path / "o"), "--no-progress", "--batch-id", "b1"]) == 130
    err = capsys.readouterr().err
    assert err == "cjflow: interrupted: batch b1 has no stored result; the same command assesses it from the start\n"


def test_ctrl_c_during_assess_stops_in_one_line_and_says_how_to_rerun(tmp_path):
    _module(tmp_path, "cjflow_slow_judge", SLOW_JUDGE)
    folder = marker_essays(tmp_path, n=6)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "flows.cli", "assess", str(folder), "--judge", "cjflow_slow_judge:judge",
            "--out", str(out), "--no-progress", "--no-png", "--batch-id", "slow"]
    env = _env(tmp_path, RUST_BACKTRACE="0")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    deadline = time.monotonic() + 60
    judged = 0
    while judged < 2 and time.monotonic() < deadline and proc.poll() is None:  # judging has begun
        time.sleep(0.2)
        try:
            con = sqlite3.connect(out / "cjflow.sqlite3")
            judged = con.execute("select count(*) from judgements").fetchone()[0]
            con.close()
        except sqlite3.Error:
            pass
    assert judged >= 2 and proc.poll() is None
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == ""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("cjflow:")]
    assert lines == [("cjflow: interrupted: batch slow has no stored result; its rows so far stay in the database,"
                      " so the same command is refused: to assess it again pass a new --batch-id or another --db")]
    again = run_cli(*args[3:])  # and so it is
    assert again.returncode == 2
    assert "batch slow already exists in the database but it has no stored result" in again.stderr
    assert "pass a new --batch-id or another --db" in again.stderr


# --- 4. the default budget and the batch size --------------------------------------------------
def test_the_default_budget_warns_when_it_cannot_reach_every_essay(tmp_path, monkeypatch, capsys):
    import flows.embedded

    class Stop(Exception):
        pass

    def no_run(*_a, **_k):
        raise Stop

    monkeypatch.setattr(flows.embedded, "run_embedded", no_run)
    folder = marker_essays(tmp_path, n=150)
    with pytest.raises(Stop):
        main(["assess", str(folder), "--out", str(tmp_path / "o"), "--no-progress", "--no-png"])
    assert capsys.readouterr().err == (
        "cjflow: warning: the default --budget 350 allows about 4.7 comparisons per essay for 150 essays"
        " (the stopping rule wants at least 6 each); pass --budget 750 for about 10 per essay\n"
    )
    with pytest.raises(Stop):  # an explicit budget is the user's choice
        main(["assess", str(folder), "--out", str(tmp_path / "o"), "--no-progress", "--budget", "350"])
    with pytest.raises(Stop):  # enough for a smaller batch
        main(["assess", str(marker_essays(tmp_path / "small", n=100)), "--out", str(tmp_path / "o2"), "--no-progress"])
    assert capsys.readouterr().err == ""


def test_the_budget_help_states_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["assess", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "maximum valid comparisons (default 350" in help_text


# --- anchors headers ----------------------------------------------------------------------------
def test_anchors_with_a_trailing_empty_column_as_excel_writes_them_are_read(tmp_path, examples):
    anchors = tmp_path / "excel.csv"
    anchors.write_text("essay_id,grade,\r\ne11,A,\r\ne21,B,\r\ne09,F,\r\n")
    banked = tmp_path / "banked.csv"
    banked.write_text("essay_id,grade,value,se,\ne11,A,1.5,0.3,\ne09,F,-1.5,0.3,\n")
    for path, expected in ((anchors, {"e11": "A", "e21": "B", "e09": "F"}), (banked, {"e11": "A", "e09": "F"})):
        out = tmp_path / path.stem
        assert main(["assess", str(examples / "essays"), "--anchors", str(path), "--out", str(out),
                     "--no-progress", "--no-png", "--budget", "20"]) == 0
        result = json.loads((out / "results.json").read_text(encoding="utf-8"))
        assert {e["essay_id"]: e["anchor_grade"] for e in result["essays"] if e["is_anchor"]} == expected


@pytest.mark.parametrize(
    "header, columns",
    [("essay_id,grade,comment", "'comment'"), ("Essay_ID, Grade, value, se, note", "'note'"),
     ("essay_id,grade,value", "'value'")],
)
def test_an_anchors_header_with_other_columns_is_a_one_line_error(tmp_path, examples, header, columns):
    (tmp_path / "anc.csv").write_text(f"{header}\ne11,A,great\ne09,F,poor\n")
    assess_fails_in_one_line(
        tmp_path, [str(examples / "essays"), "--anchors", "{p}/anc.csv"],
        f"anc.csv line 1: unexpected header column(s) {columns}; the accepted header is essay_id,grade[,value,se]",
    )
