"""The benchmarks run and print the JSON keys other tools read (tiny sizes, seconds)."""

from __future__ import annotations

import json

import pytest

from bench import cj_efficiency, cj_grading, refit


def test_efficiency_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cj_efficiency.main(["--n", "12", "--seeds", "2", "--per-essay", "4,6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "adaptive_per_essay_to_match_random_10" in out
    run = out["runs"][0]
    assert set(run["table"]) == {"adaptive", "random"}
    assert [row["per_essay"] for row in run["table"]["random"]] == [4.0, 6.0, 10.0]


def test_efficiency_outside_judge_model(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--n", "10", "--seeds", "1", "--per-essay", "4", "--strategy", "random",
            "--judge-model", "cj.simulation:judge_thurstone", "--json"]
    assert cj_efficiency.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"][0]["judge_model"] == "cj.simulation:judge_thurstone"


def test_match_level_interpolates() -> None:
    assert cj_efficiency.match_level([4, 6, 8], [0.5, 0.7, 0.9], 0.8) == pytest.approx(7.0)
    assert cj_efficiency.match_level([4, 6], [0.9, 0.95], 0.8) == 4.0
    assert cj_efficiency.match_level([4, 6], [0.5, 0.6], 0.8) == float("inf")


def test_refit_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert refit.main(["--n", "60", "--judgements", "400", "--repeats", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["refit_ms_1000"] > 0 and out["choix_spearman_agreement"] >= 0.99


def test_grading_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cj_grading.main(["--seeds", "2", "--scale", "swedish_8_anchor", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    res = out["scales"][0]
    assert 0.0 <= res["within_one_accuracy"] <= 1.0 and res["brier"] >= 0.0
