"""Diagnostics for the pairing target: pairing rules and rankings other than the shipped ones.

Each probe runs on the same simulated batches as the shipped `adaptive` and `random`
strategies (same seeds, same judge draws per comparison index) and reports the comparisons
per essay it needs to match random at 10, and its paired change in Spearman at 7 per essay
against shipped adaptive (mean over seeds, with its standard error).

    python -m bench.pairing_probes --n 100 --judge-model logistic --seeds 30

Probes (docs/cj-method.md, "Other designs tried"):
- `truth-centred`: the shipped criterion evaluated at the true abilities instead of the fit;
- `posterior-draw:S`: evaluated at a draw theta + S * SE * N(0, 1) (Thompson-style);
- `rank-band:K`: the least-compared essay meets a random allowed partner within K places of
  it in the fitted ranking (a Swiss-style design);
- `expected-rank`: shipped pairing, essays ranked by their posterior expected rank instead
  of their fitted ability (the Bayes ranking for squared rank error);
- `prior-sd:X`: shipped pairing, ranking refitted with a N(0, X^2) prior on abilities.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import norm

from bench.cj_efficiency import PairChooser, load_judge, match_level, simulate_run
from cj.model import Fit, fit_bt
from cj.pairing import _make_design, _orient, select_pairs

LEVELS = [float(x) for x in np.arange(4.0, 10.01, 0.5)]
AT_7 = LEVELS.index(7.0)


def _match(curves: np.ndarray, bar: float) -> float | None:
    """Comparisons per essay where the median curve reaches `bar`; None if not by 10."""
    level = match_level(LEVELS, np.median(curves, axis=0), bar)
    return round(level, 2) if np.isfinite(level) else None


def _shifted(centre: Callable[[Fit, np.ndarray, np.random.Generator], np.ndarray]) -> PairChooser:
    """The shipped adaptive rule, with the abilities it is evaluated at replaced."""

    def choose(n, k, issued, flight, fit, truth, rng):  # type: ignore[no-untyped-def]
        at = fit if fit is None else dataclasses.replace(fit, theta=centre(fit, truth, rng))
        return select_pairs(n, k, issued, fit=at, rng=rng, strategy="adaptive", pending=flight or None)

    return choose


def _noise(fit: Fit) -> np.ndarray:
    """N(0, 1) per essay from a generator of its own, seeded by the fit, so the pairing's
    own random stream (ties) stays that of the shipped rule."""
    seed = int.from_bytes(hashlib.blake2b(fit.theta.tobytes(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(fit.n_items)


def _rank_band(width: int) -> PairChooser:
    def choose(n, k, issued, flight, fit, truth, rng):  # type: ignore[no-untyped-def]
        design = _make_design(n, issued, 1)
        if fit is None or design.n_comp > 1:
            return select_pairs(n, k, issued, fit=fit, rng=rng, strategy="random")
        place = np.empty(n, dtype=int)
        place[np.argsort(fit.theta)] = np.arange(n)
        out: list[tuple[int, int]] = []
        for _ in range(k):
            if design.exhausted():
                break
            count = np.where(design.avail > 0, design.count + rng.random(n) * 0.1, np.inf)
            i = int(np.argmin(count))
            allowed = design.partner_uses(i) == design.level
            allowed[i] = False
            distance = np.where(allowed, np.abs(place - place[i]), n + 1)
            near = allowed & (distance <= width)
            if not near.any():
                near = distance == distance.min()
            idx = np.flatnonzero(near)
            idx = idx[design.count[idx] == design.count[idx].min()]
            a, b = _orient(design, i, int(idx[rng.integers(idx.shape[0])]), rng=rng)
            out.append((a, b))
            design.add(a, b)
        return out

    return choose


def _expected_rank(fit: Fit, *_: np.ndarray) -> np.ndarray:
    spread = np.sqrt(fit.se[:, None] ** 2 + fit.se[None, :] ** 2)
    return norm.cdf((fit.theta[:, None] - fit.theta[None, :]) / spread).sum(axis=1)


def _refit(prior_sd: float) -> Callable[[Fit, np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    def score(fit: Fit, first: np.ndarray, second: np.ndarray, won: np.ndarray) -> np.ndarray:
        return fit_bt(fit.n_items, first, second, won, prior_sd=prior_sd).theta

    return score


def probe(spec: str) -> tuple[str, dict[str, object]]:
    """(strategy, simulate_run keyword arguments) for a probe name."""
    name, _, arg = spec.partition(":")
    if name == "truth-centred":
        return "adaptive", {"choose": _shifted(lambda fit, truth, rng: truth)}
    if name == "posterior-draw":
        s = float(arg or 1.0)
        return "adaptive", {"choose": _shifted(lambda fit, truth, rng: fit.theta + s * fit.se * _noise(fit))}
    if name == "rank-band":
        return "adaptive", {"choose": _rank_band(int(arg or 10))}
    if name == "expected-rank":
        return "adaptive", {"score": _expected_rank}
    if name == "prior-sd":
        return "adaptive", {"score": _refit(float(arg or 2.0))}
    raise SystemExit(f"unknown probe {spec!r}")


def run(n: int, judge_name: str, seeds: int, probes: Sequence[str], in_flight: int = 8) -> dict[str, object]:
    judge = load_judge(judge_name)

    def curves(strategy: str, **kw: object) -> np.ndarray:
        return np.array([
            [cp.spearman for cp in simulate_run(n, 2.0, LEVELS, strategy, judge, seed, in_flight, **kw)]  # type: ignore[arg-type]
            for seed in range(seeds)
        ])

    random, adaptive = curves("random"), curves("adaptive")
    bar = float(np.median(random[:, -1]))
    out: dict[str, object] = {
        "n": n, "judge_model": judge_name, "seeds": seeds, "random_spearman_at_10": round(bar, 4),
        "adaptive": _match(adaptive, bar),
    }
    for spec in probes:
        strategy, kw = probe(spec)
        got = curves(strategy, **kw)
        # A ranking probe is held to random ranked the same way.
        own_bar = float(np.median(curves("random", score=kw["score"])[:, -1])) if "score" in kw else bar
        diff = got[:, AT_7] - adaptive[:, AT_7]
        out[spec] = {
            "per_essay_to_match_random_10": _match(got, own_bar),
            "spearman_at_7_minus_adaptive": round(float(diff.mean()), 4),
            "se": round(float(diff.std(ddof=1) / np.sqrt(seeds)), 4) if seeds > 1 else None,
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pairing_probes", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--judge-model", default="logistic")
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--probes", default="truth-centred,posterior-draw:0.5,posterior-draw:1,rank-band:10,expected-rank,prior-sd:3",
                    help="comma-separated probe names (see the module docstring)")
    args = ap.parse_args(argv)
    json.dump(run(args.n, args.judge_model, args.seeds, [p for p in args.probes.split(",") if p]), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
