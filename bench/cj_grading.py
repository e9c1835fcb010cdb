"""How well grades projected from anchors match the truth, and whether their probabilities are honest.

Each simulated batch has essays with true abilities ~ N(0, sd^2) and true grade bands on
that scale (from the scale's population priors, or equal shares); anchors are extra
essays whose true ability is drawn inside their grade's band. Without priors, the bands are
equally wide between the population's 5% and 95% points. The real `cj` code pairs,
fits, places cut points from the anchors and projects the other essays' grades.

    python -m bench.cj_grading --seeds 50 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtri

from cj.grading import CutPoints, fit_cut_points, grade_probabilities
from cj.model import Fit, fit_bt
from cj.pairing import select_pairs
from cj.scales import SCALES, GradeScale, get_scale
from cj.simulation import JUDGE_MODELS, judge_many

CAL_BINS = np.linspace(0.0, 1.0, 11)
CUTS_FROM = ("anchors", "truth", "truth+noise")


def true_bands(scale: GradeScale, sd: float) -> np.ndarray:
    """Cut points of the true grade bands: quantiles of N(0, sd^2) at cumulative shares."""
    k = len(scale.categories)
    if scale.priors is not None and scale.below_lowest is None:
        return sd * ndtri(np.cumsum(np.asarray(scale.priors, dtype=float))[:-1])
    # No priors: equally wide bands between the 5% and 95% points of the population.
    return sd * np.linspace(ndtri(0.05), ndtri(0.95), k - 1)


def _draw_in_band(lo: float, hi: float, sd: float, rng: np.random.Generator) -> float:
    """A true ability in [lo, hi) from N(0, sd^2) truncated to the band."""
    from scipy.special import ndtr

    u = rng.uniform(ndtr(lo / sd), ndtr(hi / sd))
    return float(sd * ndtri(u))


def simulate_batch(
    scale: GradeScale, n_essays: int, n_anchors: int, per_essay: float, sd: float, seed: int, in_flight: int,
    cohort_sd: float = 0.0,
    anchor_bank_se: float = 0.0,
    cuts_from: str = "anchors",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One anchored batch: (true category index, grade probabilities, fitted theta) per essay.

    With `cohort_sd` > 0 the batch's essays come from a cohort whose mean ability is drawn
    from N(0, cohort_sd^2) (classes and years differ), while the grade bands and the
    anchors stay where the scale puts them. With `anchor_bank_se` > 0 the anchors carry
    banked values, their true ability plus N(0, anchor_bank_se^2) (an earlier calibration),
    used as the batch operator uses them.

    `cuts_from` is a diagnostic: "anchors" (what cjflow does), "truth" (the true cut
    points, no error: is the projection itself calibrated?) or "truth+noise" (the true
    cuts moved together by one N(0, 1) draw times the SEs the anchors' fit states for them
    relative to the essays: unbiased cut errors of exactly the stated size). Both need the
    fitted scale's origin to be the population's: cohort sd 0, or banked anchors.
    """
    rng = np.random.default_rng([seed, 10])
    cuts_true = true_bands(scale, sd)
    edges = np.concatenate([[-np.inf], cuts_true, [np.inf]])
    grade_idx = {g: i for i, g in enumerate(scale.categories)}
    # Anchors spread evenly over the scale's own grades (below_lowest is extrapolated).
    picks = np.linspace(0, len(scale.grades) - 1, n_anchors).round().astype(int)
    anchor_grades = [scale.grades[i] for i in picks]
    anchor_theta = [
        _draw_in_band(edges[grade_idx[g]], edges[grade_idx[g] + 1], sd, rng) for g in anchor_grades
    ]
    cohort_mean = float(np.random.default_rng([seed, 13]).normal(0.0, cohort_sd)) if cohort_sd > 0 else 0.0
    essay_theta = rng.normal(cohort_mean, sd, n_essays)
    theta = np.concatenate([essay_theta, anchor_theta])
    n = theta.shape[0]
    true_cat = np.searchsorted(cuts_true, essay_theta, side="right")

    priors: dict[str, np.ndarray] = {}
    bank = None
    if anchor_bank_se > 0:
        bank = np.asarray(anchor_theta) + np.random.default_rng([seed, 14]).normal(0.0, anchor_bank_se, n_anchors)
        mean, sd_prior = np.zeros(n), np.full(n, 2.0)
        mean[n_essays:], sd_prior[n_essays:] = bank, anchor_bank_se
        # As the batch operator does: the essays' prior centres on their own cohort's mean.
        priors = {"prior_mean": mean, "prior_sd": sd_prior, "cohort": np.arange(n) < n_essays}
    pair_rng = np.random.default_rng([seed, 11])
    judge_rng = np.random.default_rng([seed, 12])
    total = int(round(per_essay * n / 2))
    first: list[int] = []
    second: list[int] = []
    won: list[bool] = []
    flight: list[tuple[int, int]] = []
    fit: Fit | None = None
    while len(first) < total:
        want = min(in_flight, total - len(first)) - len(flight)
        if want > 0:
            issued = np.array(list(zip(first, second)) + flight, dtype=np.int64).reshape(-1, 2)
            flight += select_pairs(n, want, issued, fit=fit, rng=pair_rng, pending=flight or None)
        if not flight:
            break
        a, b = flight.pop(0)
        first.append(a)
        second.append(b)
        won.append(bool(judge_many(JUDGE_MODELS["logistic"], theta, np.array([a]), np.array([b]), judge_rng)[0]))
        fit = fit_bt(n, np.asarray(first), np.asarray(second), np.asarray(won), initial=fit, **priors)
    assert fit is not None
    anchors = np.arange(n_essays, n)
    if bank is not None:
        cuts = fit_cut_points(scale, bank, anchor_grades, anchor_se=np.full(n_anchors, anchor_bank_se), n_items=n,
                              fixed=np.ones(n_anchors, dtype=bool))
    else:
        cuts = fit_cut_points(scale, fit.theta[anchors], anchor_grades, anchor_se=fit.se[anchors], n_items=n)
    if cuts_from != "anchors":
        zeros = np.zeros_like(cuts_true)
        if cuts_from == "truth":
            cuts = CutPoints(scale=scale, cuts=cuts_true, centres=cuts.centres, cut_se=zeros, shared_cov=zeros)
        else:
            # The cut error relative to the essays: the fit's stated cut variance less the
            # common shift it shares with every essay (which cancels in theta - cut).
            shared = zeros if cuts.shared_cov is None else cuts.shared_cov
            rel_se = np.sqrt(np.maximum(cuts.cut_se**2 - 2.0 * shared, 0.0))
            shift = float(np.random.default_rng([seed, 15]).normal()) * rel_se
            cuts = CutPoints(scale=scale, cuts=cuts_true + shift, centres=cuts.centres, cut_se=rel_se,
                             shared_cov=zeros)
    probs = grade_probabilities(cuts, fit.theta[:n_essays], fit.se[:n_essays])
    return true_cat, probs, fit.theta[:n_essays]


CAL_TOLERANCE = 0.05  # the acceptance: predicted and observed within this, per bin


def gap_intervals(
    batch: np.ndarray, which: np.ndarray, top: np.ndarray, hit: np.ndarray, n_bins: int,
    rng: np.random.Generator, draws: int = 1000,
) -> list[tuple[float, float] | None]:
    """90% interval of each bin's gap (observed - predicted), resampling whole batches.

    Essays of one batch share its cut-point errors, so the binomial standard error of a
    bin understates its scatter; resampling batches keeps that correlation. None for a
    bin without essays.
    """
    n_batches = int(batch.max()) + 1
    cell = batch * n_bins + which
    size = n_batches * n_bins
    count = np.bincount(cell, minlength=size).reshape(n_batches, n_bins).astype(float)
    pred = np.bincount(cell, weights=top, minlength=size).reshape(n_batches, n_bins)
    obs = np.bincount(cell, weights=hit.astype(float), minlength=size).reshape(n_batches, n_bins)
    idx = rng.integers(0, n_batches, size=(draws, n_batches))
    # How often each batch is drawn in each resample: (draws, batches), then sums by matmul.
    times = np.bincount((np.arange(draws)[:, None] * n_batches + idx).ravel(), minlength=draws * n_batches)
    times = times.reshape(draws, n_batches).astype(float)
    c, pr, ob = times @ count, times @ pred, times @ obs
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = (ob - pr) / c  # (draws, bins); nan where a resample leaves a bin empty
    out: list[tuple[float, float] | None] = []
    for b in range(n_bins):
        g = gap[:, b][np.isfinite(gap[:, b])]
        out.append((float(np.percentile(g, 5)), float(np.percentile(g, 95))) if g.size else None)
    return out


def evaluate(scale: GradeScale, args: argparse.Namespace) -> dict[str, object]:
    t0 = time.perf_counter()
    cats, probs = [], []
    for seed in range(args.seeds):
        c, p, _ = simulate_batch(
            scale, args.essays, args.anchors, args.per_essay, args.sd, seed, args.in_flight, args.cohort_sd,
            args.anchor_bank_se, args.cuts_from,
        )
        cats.append(c)
        probs.append(p)
    true_cat = np.concatenate(cats)
    p = np.concatenate(probs)
    pred = p.argmax(axis=1)
    top = p.max(axis=1)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), true_cat] = 1.0
    brier = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    hit = pred == true_cat
    bins = []
    gaps = []
    which = np.clip(np.digitize(top, CAL_BINS) - 1, 0, len(CAL_BINS) - 2)
    batch = np.repeat(np.arange(len(cats)), [c.shape[0] for c in cats])
    bin_ci = gap_intervals(batch, which, top, hit, len(CAL_BINS) - 1, np.random.default_rng(args.seeds))
    clearly_off = []
    for b in range(len(CAL_BINS) - 1):
        mask = which == b
        if mask.sum() == 0:
            continue
        predicted, observed = float(top[mask].mean()), float(hit[mask].mean())
        # Binomial standard error of the observed rate: how far off a perfectly calibrated
        # bin of this size may land by chance (batches share cut-point errors, so more: the
        # interval resampling whole batches below is the honest one).
        se = float(np.sqrt(max(predicted * (1.0 - predicted), 1e-12) / mask.sum()))
        ci = bin_ci[b]
        bins.append({"bin": f"{CAL_BINS[b]:.1f}-{CAL_BINS[b + 1]:.1f}", "count": int(mask.sum()),
                     "predicted": round(predicted, 3), "observed": round(observed, 3), "se": round(se, 3),
                     "gap_90pct_by_batch": [round(x, 3) for x in ci] if ci else None})
        if mask.sum() >= args.min_bin:
            gaps.append(abs(predicted - observed))
            if ci and (ci[0] > CAL_TOLERANCE or ci[1] < -CAL_TOLERANCE):
                clearly_off.append(bins[-1]["bin"])
    # Expected calibration error, weighted by bin counts.
    ece = float(sum(bn["count"] * abs(bn["predicted"] - bn["observed"]) for bn in bins) / len(top))
    # The same for the open end grades alone (most likely grade the lowest or highest) and
    # for the grades between them: the two behave differently (docs/cj-method.md).
    end = (pred == 0) | (pred == p.shape[1] - 1)
    by_kind = {
        kind: {"count": int(m.sum()), "predicted": round(float(top[m].mean()), 3), "observed": round(float(hit[m].mean()), 3)}
        for kind, m in (("end_grades", end), ("inner_grades", ~end))
        if m.any()
    }
    # Calibration of P(above each cut point), pooled over cuts: the quantity the grade
    # probabilities are differences of.
    above_p = (1.0 - np.cumsum(p, axis=1))[:, :-1].ravel()
    above_y = (true_cat[:, None] > np.arange(p.shape[1] - 1)[None, :]).ravel()
    which_c = np.clip(np.digitize(above_p, CAL_BINS) - 1, 0, len(CAL_BINS) - 2)
    exceed_gaps = [
        abs(float(above_p[which_c == b].mean()) - float(above_y[which_c == b].mean()))
        for b in range(len(CAL_BINS) - 1)
        if (which_c == b).sum() >= args.min_bin
    ]
    return {
        "scale": scale.name,
        "cohort_sd": args.cohort_sd,
        "anchor_bank_se": args.anchor_bank_se,
        "cuts_from": args.cuts_from,
        "essays_scored": len(true_cat),
        "exact_accuracy": round(float(hit.mean()), 4),
        "within_one_accuracy": round(float(np.mean(np.abs(pred - true_cat) <= 1)), 4),
        "brier": round(brier, 4),
        "mean_top_probability": round(float(top.mean()), 4),
        "calibration_max_gap": round(max(gaps), 4) if gaps else None,
        # Bins (>= min_bin essays) whose 90% interval, resampling batches, lies wholly beyond
        # the tolerance: miscalibration that is not the luck of the seeds.
        "bins_clearly_beyond_0.05": clearly_off,
        "calibration_ece": round(ece, 4),
        "calibration_bins": bins,
        "calibration_by_kind": by_kind,
        "exceedance_max_gap": round(max(exceed_gaps), 4) if exceed_gaps else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cj_grading", description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="all", help=f"one of {', '.join(SCALES)} or 'all'")
    ap.add_argument("--essays", type=int, default=24, help="essays to grade per batch (default 24)")
    ap.add_argument("--anchors", type=int, default=8, help="anchors per batch (default 8)")
    ap.add_argument("--per-essay", type=float, default=10.0, help="comparisons per essay (default 10)")
    ap.add_argument("--sd", type=float, default=2.0, help="sd of true abilities (default 2)")
    ap.add_argument("--seeds", type=int, default=20,
                    help="simulated batches per scale (calibration needs hundreds: a bin of 100 essays has se 0.05)")
    ap.add_argument("--in-flight", type=int, default=8)
    ap.add_argument("--cohort-sd", type=float, default=0.0,
                    help="sd of each batch's mean ability around the scale's population (default 0: every batch "
                         "from the same population)")
    ap.add_argument("--anchor-bank-se", type=float, default=0.0,
                    help="anchors carry banked values (true ability + noise of this sd, from an earlier "
                         "calibration) that fix them on the scale (default 0: anchors are measured in the batch)")
    ap.add_argument("--cuts-from", choices=CUTS_FROM, default="anchors",
                    help="diagnostic: place the cut points from the anchors (default, what cjflow does), at the "
                         "truth, or at the truth moved by unbiased noise of the fit's stated cut SEs")
    ap.add_argument("--min-bin", type=int, default=50, help="bins with fewer essays are not held to the gap")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.cuts_from != "anchors" and args.cohort_sd > 0 and args.anchor_bank_se <= 0:
        ap.error("--cuts-from truth needs the population's origin on the fitted scale: --cohort-sd 0 or banked anchors")
    names = list(SCALES) if args.scale == "all" else [args.scale]
    results = [evaluate(get_scale(name), args) for name in names]
    if args.json:
        json.dump({"scales": results}, sys.stdout, indent=2)
        print()
        return 0
    for r in results:
        print(f"\n{r['scale']}: exact {r['exact_accuracy']}, within one {r['within_one_accuracy']}, "
              f"Brier {r['brier']}, calibration max gap {r['calibration_max_gap']} "
              f"(ECE {r['calibration_ece']}; bins clearly beyond 0.05: {r['bins_clearly_beyond_0.05'] or 'none'})")
        for bn in r["calibration_bins"]:  # type: ignore[attr-defined]
            print(f"  top p {bn['bin']}: n={bn['count']:>5} predicted {bn['predicted']:.3f} "
                  f"observed {bn['observed']:.3f} (se {bn['se']:.3f}; observed - predicted, 90% by batch: "
                  f"{bn['gap_90pct_by_batch']})")
        for kind, row in r["calibration_by_kind"].items():  # type: ignore[attr-defined]
            print(f"  {kind}: n={row['count']} predicted {row['predicted']:.3f} observed {row['observed']:.3f}")
        print(f"  P(above a cut) calibration max gap: {r['exceedance_max_gap']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
