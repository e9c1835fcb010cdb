"""How many comparisons each pairing strategy needs to recover a known order.

Essays get true abilities ~ N(0, sd^2); a simulated judge decides each comparison; the real
`cj` code pairs (k pairs at a time, like k comparisons in flight), fits (warm-started) and
is scored against the truth. "Comparisons per essay" counts appearances: a comparison
involves two essays, so c per essay means c * n / 2 comparisons.

    python -m bench.cj_efficiency --n 30,100 --seeds 30 --judge-model all --json

Judge models: logistic, position_bias (delta 0.3), lapse (10% random), thurstone (probit),
`all` (each built-in), or `MOD:FN` with FN(theta_first, theta_second, rng) -> bool.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, spearmanr

from cj.model import Fit, fit_bt
from cj.pairing import STRATEGIES, select_pairs
from cj.simulation import JUDGE_MODELS, JudgeModel, judge_many

TARGET_LEVEL = 10.0  # random pairing's accuracy at this many comparisons per essay is the bar
TARGET_MATCH = 7.0  # the acceptance bar for adaptive's comparisons per essay to match it
BOOTSTRAP_DRAWS = 2000


# A pairing rule other than the shipped strategies (for diagnostics, see bench.pairing_probes):
# (n, k, issued pairs, in-flight pairs, latest fit, true abilities, rng) -> up to k new pairs.
PairChooser = Callable[
    [int, int, np.ndarray, list[tuple[int, int]], Fit | None, np.ndarray, np.random.Generator],
    list[tuple[int, int]],
]


@dataclass(frozen=True)
class Checkpoint:
    per_essay: float
    spearman: float
    kendall: float
    ssr: float
    delta: float


def load_judge(spec: str) -> JudgeModel:
    """A built-in judge model by name, or `module:callable` from outside."""
    if spec in JUDGE_MODELS:
        return JUDGE_MODELS[spec]
    if ":" not in spec:
        raise SystemExit(f"unknown judge model {spec!r}; built-in: {', '.join(JUDGE_MODELS)}, or MOD:FN")
    mod, _, fn = spec.partition(":")
    judge = getattr(importlib.import_module(mod), fn)
    if not callable(judge):
        raise SystemExit(f"{spec} is not callable")
    return judge  # type: ignore[no-any-return]


def simulate_run(
    n: int,
    sd: float,
    levels: Sequence[float],
    strategy: str,
    judge: JudgeModel,
    seed: int,
    in_flight: int = 8,
    min_per_essay: int = 3,
    *,
    choose: PairChooser | None = None,
    score: Callable[[Fit, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[Checkpoint]:
    """One simulated batch, scored at each comparisons-per-essay level (ascending).

    `choose` replaces the pairing strategy, and `score(fit, first, second, first_won)` the
    fitted abilities as the ranking scored against the truth; both are for diagnostics
    (`bench.pairing_probes`).
    """
    truth_rng = np.random.default_rng([seed, 0])
    theta = truth_rng.normal(0.0, sd, n)
    pair_rng = np.random.default_rng([seed, 1])
    judge_rng = np.random.default_rng([seed, 2])
    targets = [int(round(level * n / 2)) for level in levels]
    # Pipelined like the batch operator: `in_flight` comparisons are out at once; each time
    # the oldest comes back it is recorded, the model refitted (warm) and one new pair
    # chosen, knowing which pairs are still in flight.
    first: list[int] = []
    second: list[int] = []
    won: list[bool] = []
    flight: list[tuple[int, int]] = []
    fit: Fit | None = None
    out: list[Checkpoint] = []
    final = targets[-1]
    next_cp = 0
    exhausted = False
    while next_cp < len(targets):
        want = min(in_flight, final - len(first)) - len(flight)
        if want > 0:
            issued = np.array(list(zip(first, second)) + flight, dtype=np.int64).reshape(-1, 2)
            if choose is not None:
                flight += choose(n, want, issued, flight, fit, theta, pair_rng)
            else:
                flight += select_pairs(
                    n, want, issued, fit=fit, rng=pair_rng, strategy=strategy, min_per_essay=min_per_essay,
                    pending=flight or None,
                )
        exhausted = not flight
        if flight:
            a, b = flight.pop(0)
            first.append(a)
            second.append(b)
            won.append(bool(judge_many(judge, theta, np.array([a]), np.array([b]), judge_rng)[0]))
            fit = fit_bt(n, np.asarray(first), np.asarray(second), np.asarray(won), initial=fit)
        # Score every level reached (or all remaining ones when no pair is left).
        while next_cp < len(targets) and (len(first) >= targets[next_cp] or exhausted):
            assert fit is not None
            ranking = fit.theta if score is None else score(fit, np.asarray(first), np.asarray(second), np.asarray(won))
            out.append(
                Checkpoint(
                    per_essay=levels[next_cp],
                    spearman=float(spearmanr(ranking, theta).statistic),
                    kendall=float(kendalltau(ranking, theta).statistic),
                    ssr=fit.ssr,
                    delta=fit.delta,
                )
            )
            next_cp += 1
    return out


def match_level(levels: Sequence[float], curve: Sequence[float], target: float) -> float:
    """Smallest comparisons per essay at which `curve` reaches `target`, linearly interpolated.

    inf if never reached; the first level if already reached there.
    """
    lv = np.asarray(levels, dtype=float)
    c = np.asarray(curve, dtype=float)
    hit = np.flatnonzero(c >= target)
    if hit.shape[0] == 0:
        return float("inf")
    j = int(hit[0])
    if j == 0:
        return float(lv[0])
    x0, x1, y0, y1 = lv[j - 1], lv[j], c[j - 1], c[j]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def match_interval(
    levels: Sequence[float], adaptive: np.ndarray, random: np.ndarray, rng: np.random.Generator,
    draws: int = BOOTSTRAP_DRAWS,
) -> tuple[float, float, float]:
    """90% interval of the match level, and P(match <= TARGET_MATCH), by a paired bootstrap.

    `adaptive` and `random` are (seeds, levels) Spearman values on the same simulated
    batches. Seeds are resampled together, the medians and the match recomputed: the
    scatter of the number the acceptance reads, from the seeds alone.
    """
    seeds = adaptive.shape[0]
    at = list(levels).index(TARGET_LEVEL)
    idx = rng.integers(0, seeds, size=(draws, seeds))
    med_a = np.median(adaptive[idx], axis=1)
    bar = np.median(random[idx, at], axis=1)
    found = np.array([match_level(levels, med_a[b], bar[b]) for b in range(draws)])
    # Order statistics (no interpolation): inf, never matched, sorts last and stays inf.
    lo, hi = np.percentile(found, [5.0, 95.0], method="inverted_cdf")
    return float(lo), float(hi), float(np.mean(found <= TARGET_MATCH))


def run_config(
    n: int, sd: float, per_essay: Sequence[float], strategies: Sequence[str], judge_name: str, judge: JudgeModel,
    seeds: int, in_flight: int, min_per_essay: int, seed_offset: int = 0,
) -> dict[str, object]:
    """Medians over seeds for each strategy and level, plus the adaptive-vs-random match."""
    report_levels = sorted(set(per_essay) | {TARGET_LEVEL})
    # A fine grid for the interpolation (every half comparison per essay), on top of the
    # levels reported.
    fine = np.arange(2.0, max(report_levels) + 1e-9, 0.5)
    levels = sorted(set(report_levels) | {float(x) for x in fine})
    curves: dict[str, dict[str, list[float]]] = {}
    per_seed: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for strategy in strategies:
        runs = [
            simulate_run(n, sd, levels, strategy, judge, seed, in_flight, min_per_essay)
            for seed in range(seed_offset, seed_offset + seeds)
        ]
        per_seed[strategy] = np.array([[cp.spearman for cp in r] for r in runs])
        med = {
            key: [float(np.median([getattr(r[i], key) for r in runs])) for i in range(len(levels))]
            for key in ("spearman", "kendall", "ssr", "delta")
        }
        curves[strategy] = med
    table = {
        strategy: [
            {
                "per_essay": lv,
                "spearman": round(curves[strategy]["spearman"][levels.index(lv)], 4),
                "kendall": round(curves[strategy]["kendall"][levels.index(lv)], 4),
                "ssr": round(curves[strategy]["ssr"][levels.index(lv)], 4),
            }
            for lv in report_levels
            if lv in per_essay or lv == TARGET_LEVEL
        ]
        for strategy in strategies
    }
    result: dict[str, object] = {
        "n": n, "sd": sd, "judge_model": judge_name, "seeds": seeds, "in_flight": in_flight, "table": table,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if "adaptive" in curves and "random" in curves:
        bar = curves["random"]["spearman"][levels.index(TARGET_LEVEL)]
        result["random_spearman_at_10"] = round(bar, 4)
        level = match_level(levels, curves["adaptive"]["spearman"], bar)
        # null when adaptive never gets there within the levels run
        result["adaptive_per_essay_to_match_random_10"] = round(level, 2) if np.isfinite(level) else None
        if seeds >= 2:
            lo, hi, p_met = match_interval(
                levels, per_seed["adaptive"], per_seed["random"], np.random.default_rng([n, seed_offset, seeds])
            )
            result["match_90pct_interval"] = [round(x, 2) if np.isfinite(x) else None for x in (lo, hi)]
            result["bootstrap_share_at_or_below_7"] = round(p_met, 3)
    return result


def position_check(n: int, judgements: int, sd: float, seeds: int, in_flight: int) -> dict[str, object]:
    """Position effect recovery: the same batches judged with delta = 0.3 and without.

    Reports the fitted delta after `judgements` judgements and how much the bias costs the
    ranking (median over seeds of the paired Spearman difference, unbiased - biased).
    """
    level = 2.0 * judgements / n
    deltas, rho_biased, rho_plain = [], [], []
    for seed in range(seeds):
        biased = simulate_run(n, sd, [level], "adaptive", JUDGE_MODELS["position_bias"], seed, in_flight)[-1]
        plain = simulate_run(n, sd, [level], "adaptive", JUDGE_MODELS["logistic"], seed, in_flight)[-1]
        deltas.append(biased.delta)
        rho_biased.append(biased.spearman)
        rho_plain.append(plain.spearman)
    d = np.asarray(deltas)
    loss = np.asarray(rho_plain) - np.asarray(rho_biased)
    return {
        "n": n,
        "judgements": judgements,
        "true_delta": 0.3,
        "median_delta": round(float(np.median(d)), 4),
        "median_abs_error": round(float(np.median(np.abs(d - 0.3))), 4),
        "share_within_0.1": round(float(np.mean(np.abs(d - 0.3) <= 0.1)), 3),
        "median_spearman_biased": round(float(np.median(rho_biased)), 4),
        "median_spearman_unbiased": round(float(np.median(rho_plain)), 4),
        "median_spearman_loss": round(float(np.median(loss)), 4),
    }


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cj_efficiency", description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="30", help="essays per batch, comma-separated (default 30)")
    ap.add_argument("--sd", type=float, default=2.0, help="sd of true abilities (default 2)")
    ap.add_argument("--per-essay", default="4,6,8,10,14", help="comparisons per essay levels to report")
    ap.add_argument("--seeds", type=int, default=8, help="simulated batches per configuration (use >= 30 to measure)")
    ap.add_argument("--strategy", default="adaptive,random", help=f"comma-separated from {STRATEGIES}")
    ap.add_argument("--judge-model", default="logistic", help="built-in name, 'all', or MOD:FN")
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="first seed (default 0): a disjoint seed set checks a result is not seed luck")
    ap.add_argument("--in-flight", type=int, default=8, help="comparisons in flight, one refit per judgement (default 8)")
    ap.add_argument("--min-per-essay", type=int, default=3, help="adaptive coverage floor (default 3)")
    ap.add_argument("--position-check", action="store_true",
                    help="also measure position effect recovery (n=100, 1,000 judgements, delta 0.3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    strategies = [s for s in args.strategy.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES:
            ap.error(f"unknown strategy {s!r}")
    judges = list(JUDGE_MODELS) if args.judge_model == "all" else args.judge_model.split(",")
    ns = [int(x) for x in args.n.split(",")]
    per_essay = _floats(args.per_essay)
    runs = []
    for judge_name in judges:
        judge = load_judge(judge_name)
        for n in ns:
            res = run_config(n, args.sd, per_essay, strategies, judge_name, judge, args.seeds, args.in_flight,
                             args.min_per_essay, args.seed_offset)
            runs.append(res)
            if not args.json:
                _print(res)
    matches = [r["adaptive_per_essay_to_match_random_10"] for r in runs if "adaptive_per_essay_to_match_random_10" in r]
    worst = None if not matches or any(m is None for m in matches) else max(matches)  # type: ignore[type-var]
    summary: dict[str, object] = {
        # The worst case over the configurations run: the number the acceptance holds to.
        "adaptive_per_essay_to_match_random_10": worst,
        "mean_per_essay_to_match": round(float(np.mean(matches)), 2) if matches and worst is not None else None,
        "configs_at_or_below_7": sum(1 for m in matches if m is not None and m <= TARGET_MATCH),
        "configs": len(matches),
        "runs": runs,
    }
    if args.position_check:
        summary["position_effect"] = position_check(100, 1000, args.sd, args.seeds, args.in_flight)
        if not args.json:
            print("\nposition effect (n=100, 1000 judgements, true delta 0.3):")
            for key, value in summary["position_effect"].items():  # type: ignore[union-attr]
                print(f"  {key}: {value}")
    if args.json:
        json.dump(summary, sys.stdout, indent=None if len(runs) > 1 else 2)
        print()
    elif matches:
        print(f"\nadaptive comparisons/essay to match random at 10 (worst case): {summary['adaptive_per_essay_to_match_random_10']}; "
              f"{summary['configs_at_or_below_7']} of {summary['configs']} configurations at or below {TARGET_MATCH:g}")
    return 0


def _print(res: dict[str, object]) -> None:
    print(f"\nn={res['n']} sd={res['sd']} judge={res['judge_model']} seeds={res['seeds']} ({res['seconds']} s)")
    print(f"{'strategy':<10}{'per essay':>10}{'spearman':>10}{'kendall':>10}{'ssr':>8}")
    table = res["table"]
    assert isinstance(table, dict)
    for strategy, rows in table.items():
        for row in rows:
            print(f"{strategy:<10}{row['per_essay']:>10g}{row['spearman']:>10.4f}{row['kendall']:>10.4f}{row['ssr']:>8.3f}")
    if "adaptive_per_essay_to_match_random_10" in res:
        print(f"random at 10/essay: spearman {res['random_spearman_at_10']}; "
              f"adaptive matches it at {res['adaptive_per_essay_to_match_random_10']} per essay")
    if "match_90pct_interval" in res:
        print(f"  90% bootstrap interval over seeds {res['match_90pct_interval']}, "
              f"share of resamples at or below {TARGET_MATCH:g}: {res['bootstrap_share_at_or_below_7']}")


if __name__ == "__main__":
    raise SystemExit(main())
