"""The benchmarks run and print the JSON keys other tools read (tiny sizes, seconds)."""

from __future__ import annotations

import json

import pytest

from bench import cj_efficiency, cj_grading, pairing_probes, refit


def test_efficiency_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cj_efficiency.main(["--n", "12", "--seeds", "2", "--per-essay", "4,6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "adaptive_per_essay_to_match_random_10" in out
    run = out["runs"][0]
    assert set(run["table"]) == {"adaptive", "random"}
    assert [row["per_essay"] for row in run["table"]["random"]] == [4.0, 6.0, 10.0]
    match = run["adaptive_per_essay_to_match_random_10"]
    assert out["configs"] == 1 and out["configs_at_or_below_7"] == int(match is not None and match <= 7)
    lo, hi = run["match_90pct_interval"]  # hi None: some resamples never reach random at 10
    assert 0.0 <= run["bootstrap_share_at_or_below_7"] <= 1.0
    assert lo is not None and 4.0 <= lo <= 10.0 and (hi is None or lo <= hi <= 10.0)


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


def test_match_interval_is_the_seed_scatter() -> None:
    import numpy as np

    levels = [6.0, 8.0, 10.0]
    rng = np.random.default_rng(0)
    # Every seed alike: every resample gives the same match (7.0), so the interval is a point.
    same_a = np.tile([0.7, 0.9, 0.95], (30, 1))
    same_r = np.tile([0.6, 0.7, 0.8], (30, 1))
    assert cj_efficiency.match_interval(levels, same_a, same_r, rng, draws=200) == (7.0, 7.0, 1.0)
    # Noisy seeds: the interval brackets the point estimate and widens with the noise.
    noise = rng.normal(0.0, 0.03, (30, 3))
    lo, hi, share = cj_efficiency.match_interval(levels, same_a + noise, same_r, rng, draws=400)
    point = cj_efficiency.match_level(levels, np.median(same_a + noise, axis=0), 0.8)
    assert lo <= point <= hi and hi - lo > 0.1 and 0.0 < share < 1.0
    # Never matched in most resamples: the upper end is inf, the share small.
    lo, hi, share = cj_efficiency.match_interval(levels, same_a - 0.2, same_r, rng, draws=100)
    assert hi == float("inf") and share == 0.0


def test_refit_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert refit.main(["--n", "60", "--judgements", "400", "--repeats", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["refit_ms_1000"] > 0 and out["choix_spearman_agreement"] >= 0.99


def test_grading_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cj_grading.main(["--seeds", "2", "--scale", "swedish_8_anchor", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    res = out["scales"][0]
    assert 0.0 <= res["within_one_accuracy"] <= 1.0 and res["brier"] >= 0.0
    assert isinstance(res["bins_clearly_beyond_0.05"], list)


def test_gap_intervals_resample_batches() -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    # 40 batches of 25 essays, all in one bin predicted 0.8; batches right 90% or 50% of the
    # time: the pooled gap is -0.1, and resampling batches shows its spread.
    batch = np.repeat(np.arange(40), 25)
    which = np.zeros(1000, dtype=int)
    top = np.full(1000, 0.8)
    good = np.repeat(rng.random(40) < 0.75, 25)
    hit = np.where(good, rng.random(1000) < 0.9, rng.random(1000) < 0.5)
    per_bin = cj_grading.gap_intervals(batch, which, top, hit, 2, rng, draws=500)
    pooled = hit.mean() - 0.8
    lo, hi = per_bin[0]  # type: ignore[misc]
    assert lo < pooled < hi and hi - lo > 0.05  # wider than the binomial 1.64 * 0.013 each side
    assert per_bin[1] is None  # an empty bin has no interval


def test_grading_cuts_from_changes_only_the_cuts(capsys: pytest.CaptureFixture[str]) -> None:
    """The diagnostic modes grade the same batches; only where the cut points sit changes."""
    import numpy as np

    from cj.scales import get_scale

    scale = get_scale("swedish_8_anchor")
    runs = {
        mode: cj_grading.simulate_batch(scale, 24, 8, 10.0, 2.0, 3, 8, cuts_from=mode)
        for mode in cj_grading.CUTS_FROM
    }
    (cat0, probs0, theta0) = runs["anchors"]
    for mode, (cat, probs, theta) in runs.items():
        np.testing.assert_array_equal(cat, cat0)
        np.testing.assert_array_equal(theta, theta0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        if mode != "anchors":
            assert np.abs(probs - probs0).max() > 0.01
    assert cj_grading.main(["--seeds", "2", "--scale", "swedish_8_anchor", "--cuts-from", "truth", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scales"][0]["cuts_from"] == "truth"
    with pytest.raises(SystemExit):
        cj_grading.main(["--seeds", "2", "--cuts-from", "truth", "--cohort-sd", "1"])


def test_pairing_probes_run_on_the_same_batches(capsys: pytest.CaptureFixture[str]) -> None:
    probes = "truth-centred,posterior-draw:0,rank-band:3,expected-rank,prior-sd:2"
    assert pairing_probes.main(["--n", "10", "--seeds", "2", "--probes", probes]) == 0
    out = json.loads(capsys.readouterr().out)
    # A draw with zero spread is the shipped rule, and a refit with the shipped prior is the
    # shipped ranking: both reproduce adaptive exactly, so the probes share its batches.
    for same in ("posterior-draw:0", "prior-sd:2"):
        assert out[same]["spearman_at_7_minus_adaptive"] == 0.0
        assert out[same]["per_essay_to_match_random_10"] == out["adaptive"]
    assert set(out) >= set(probes.split(","))
