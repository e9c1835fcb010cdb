"""Bradley-Terry refit cost: 1,000 essays / 10,000 judgements, and per judgement at 30.

    python -m bench.refit --json

Also fits the same data with choix (`opt_pairwise`, the same MAP objective without the
position effect) and reports the rank agreement and the time ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import spearmanr

from cj.model import fit_bt
from cj.pairing import select_pairs
from cj.simulation import judge_many, judge_position_bias, random_pairs


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches and lazy imports
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def run(n: int, m: int, repeats: int, seed: int, with_choix: bool) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 2.0, n)
    first, second = random_pairs(n, m, rng)
    won = judge_many(judge_position_bias, theta, first, second, rng)
    cold = _median_ms(lambda: fit_bt(n, first, second, won), repeats)
    # Warm: the previous fit saw all but the last judgement, as in the batch operator.
    prev = fit_bt(n, first[:-1], second[:-1], won[:-1])
    warm = _median_ms(lambda: fit_bt(n, first, second, won, initial=prev), repeats)
    fit = fit_bt(n, first, second, won, initial=prev)
    out: dict[str, object] = {
        "n": n,
        "judgements": m,
        "refit_ms_1000": round(max(cold, warm), 2),
        "refit_ms_cold": round(cold, 2),
        "refit_ms_warm": round(warm, 2),
        "iterations_warm": fit.iterations,
        "spearman_with_truth": round(float(spearmanr(fit.theta, theta).statistic), 4),
    }
    # Per-judgement cost in a 30-essay batch: refit (warm) and pick the next pair.
    n30 = 30
    f30, s30 = random_pairs(n30, 150, rng)
    w30 = judge_many(judge_position_bias, theta[:n30], f30, s30, rng)
    prev30 = fit_bt(n30, f30[:-1], s30[:-1], w30[:-1])
    issued = list(zip(f30.tolist(), s30.tolist()))

    def one_judgement() -> None:
        f = fit_bt(n30, f30, s30, w30, initial=prev30)
        select_pairs(n30, 1, issued, fit=f, rng=np.random.default_rng(0), max_repeats=3)

    out["per_judgement_ms_30"] = round(_median_ms(one_judgement, repeats * 5), 3)
    out["refit_ms_30"] = round(_median_ms(lambda: fit_bt(n30, f30, s30, w30, initial=prev30), repeats * 5), 3)
    if with_choix:
        import choix

        data = [(int(a), int(b)) if w else (int(b), int(a)) for a, b, w in zip(first, second, won)]
        # choix penalises alpha * sum(theta^2): alpha = 1 / (2 prior_sd^2) is our N(0, 2^2) prior.
        choix_ms = _median_ms(lambda: choix.opt_pairwise(n, data, alpha=0.125), max(3, repeats // 3))
        ref = choix.opt_pairwise(n, data, alpha=0.125)
        plain = fit_bt(n, first, second, won, fit_delta=False)
        out["choix_ms"] = round(choix_ms, 2)
        out["choix_spearman_agreement"] = round(float(spearmanr(fit.theta, ref).statistic), 5)
        out["choix_spearman_agreement_no_delta"] = round(float(spearmanr(plain.theta, ref).statistic), 5)
        out["choix_time_ratio"] = round(choix_ms / cold, 2)  # > 1: we are faster
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.refit", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="essays (default 1000)")
    ap.add_argument("--judgements", type=int, default=10_000, help="judgements (default 10000)")
    ap.add_argument("--repeats", type=int, default=15, help="timed repetitions (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-choix", action="store_true", help="skip the choix comparison")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    res = run(args.n, args.judgements, args.repeats, args.seed, not args.no_choix)
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
    else:
        for k, v in res.items():
            print(f"{k:<36}{v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
