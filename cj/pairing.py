"""Choosing the next pairs to compare: a connected random start, then information-driven.

Both strategies share the same rules, so they differ only in which partner they pick:

1. Connectivity: while the comparison graph has more than one component, pair the
   least-compared essay with the least-compared essay of another component. From scratch
   this builds a random spanning tree of matchings (every essay gets ~2 comparisons), so
   all essays sit on one scale early.
2. No repeats while unused pairs remain: an unordered pair is reused only once all
   n(n-1)/2 pairs have been issued, level by level (no third use before every pair has a
   second), with positions swapped relative to its previous use, and at most `max_repeats`
   uses in all.
3. Positions: a new pair puts first the essay that has been shown second more often, so
   a judge's position bias spreads evenly over essays.
4. `random`: the least-compared essay meets a random least-compared allowed partner (a
   balanced random design, the baseline).
5. `adaptive`: up to 150 essays, once there is a fit, rule 1 picks among the
   least-compared partners in other components the one of largest gain (below) rather
   than at random. Essays below `min_per_essay` comparisons come first (the coverage
   floor); up to 150 essays the floor is filled with the pair of largest gain among the
   essays both below it (else with one below it).
   Then, up to 150 essays, the pair with the largest expected gain for the ranking: the
   drop in posterior variance from one comparison, weighted by the squared local density
   of essays (Spearman's loss is the sum of squared rank errors, and a rank error is a
   theta error times that density), computed on the full posterior covariance so that
   comparisons in flight and correlations count (see `_RankDesign`). Above 150 essays,
   the pair that maximises the expected variance reduction of both essays,
   v^2 w / (1 + v w) summed over the two with w = E[p(1 - p)] (Pollitt, 2012), among the
   pairs of the `_FAST_ROWS` essays of largest posterior variance with any partner (fewer
   rows above 1,000 essays, so a pick scores ~32,000 pairs). A pick stays within
   milliseconds (1,000 essays ~0.6 ms, 10,000 ~2 ms), and an extreme essay (w ~ 0 against
   everyone, so its variance stays largest) is not picked against every essay in turn.

Adaptive pairing inflates SSR (Bramley, 2015); `bench/cj_efficiency.py` compares the
strategies by recovery of a known order instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
from scipy.linalg.lapack import dpotrf as _potrf
from scipy.linalg.lapack import dpotri as _potri

from cj.model import Fit

__all__ = ["STRATEGIES", "pair_capacity", "select_pairs"]

STRATEGIES = ("adaptive", "random")

# Prior variance used when there is no fit (matches fit_bt's default prior_sd = 2).
_PRIOR_VAR = 4.0
# Information of one comparison between essays of unknown, similar ability.
_W0 = 0.25
# Up to this many essays, adaptive pairing works on the full posterior covariance
# (O(n^2) per pick); above it, on per-essay variances only, so 1,000 essays stay fast.
_FULL_COV_MAX = 150
# Above _FULL_COV_MAX essays, the pair is chosen among the rows of this many essays of
# largest posterior variance (against every partner): O(rows * n) per pick.
_FAST_ROWS = 32
# Bandwidth of the essay-density estimate, as a share of the spread of abilities.
_DENSITY_BANDWIDTH = 0.25
# Usage marker of a pair already picked in the current call (never equal to a level).
_PICKED = np.iinfo(np.int64).max


def pair_capacity(n_items: int, max_repeats: int) -> int:
    """How many comparisons the no-repeat rule allows in all: max_repeats * n(n-1)/2."""
    return max(0, max_repeats) * n_items * (n_items - 1) // 2


def _as_pairs(issued: Sequence[tuple[int, int]] | np.ndarray, n_items: int, what: str) -> np.ndarray:
    if isinstance(issued, np.ndarray):
        arr = issued.astype(np.int64, copy=False).reshape(-1, 2)
    else:
        m = len(issued)
        arr = np.fromiter(itertools.chain.from_iterable(issued), dtype=np.int64, count=2 * m).reshape(m, 2)
    if arr.shape[0]:
        # As unsigned, a negative index is huge: one reduction checks both ends.
        if int(arr.view(np.uint64).max()) >= n_items:
            raise ValueError(f"{what} holds an essay index outside [0, {n_items})")
        if (arr[:, 0] == arr[:, 1]).any():
            raise ValueError(f"{what} pairs an essay with itself")
    return arr


class _Design:
    """Usage counts of the comparison graph, updated as pairs are picked in one call."""

    def __init__(self, n: int, arr: np.ndarray, max_repeats: int) -> None:
        self.n = n
        self.max_repeats = max_repeats
        self.first = arr[:, 0]
        self.second = arr[:, 1]
        self.picked: list[tuple[int, int]] = []
        self.count = np.bincount(self.first, minlength=n) + np.bincount(self.second, minlength=n)
        self.a_minus_b = np.bincount(self.first, minlength=n) - np.bincount(self.second, minlength=n)
        self._set_level()
        self._components()

    def _all_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.picked:
            return self.first, self.second
        extra = np.asarray(self.picked, dtype=np.int64)
        return np.concatenate([self.first, extra[:, 0]]), np.concatenate([self.second, extra[:, 1]])

    def _set_level(self) -> None:
        """The usage level to draw pairs from, and how many pairs each essay has at it."""
        n = self.n
        f, s = self._all_pairs()
        total = n * (n - 1) // 2
        keys, uses = np.unique(np.minimum(f, s) * n + np.maximum(f, s), return_counts=True)
        if keys.shape[0] < total:
            self.level = 0
            lo, hi = keys // n, keys % n
            self.avail = (n - 1) - (np.bincount(lo, minlength=n) + np.bincount(hi, minlength=n))
            self.remaining = total - keys.shape[0]
        else:
            self.level = int(uses.min())
            at = keys[uses == self.level]
            lo, hi = at // n, at % n
            self.avail = np.bincount(lo, minlength=n) + np.bincount(hi, minlength=n)
            self.remaining = at.shape[0]
            # A pair already picked in this call is not offered again in it.
            for a, b in self.picked:
                j = np.searchsorted(keys, min(a, b) * n + max(a, b))
                if uses[j] == self.level:
                    self.avail[a] -= 1
                    self.avail[b] -= 1
                    self.remaining -= 1

    def exhausted(self) -> bool:
        return self.level >= self.max_repeats or self.remaining == 0

    def _components(self) -> None:
        n = self.n
        f, s = self._all_pairs()
        graph = scipy.sparse.coo_matrix((np.ones(f.shape[0]), (f, s)), shape=(n, n)).tocsr()
        self.n_comp, self.comp = scipy.sparse.csgraph.connected_components(graph, directed=False)

    def partner_uses(self, i: int) -> np.ndarray:
        """(n,) times each essay has been paired with essay i; huge if picked in this call."""
        return self.rows_uses(np.array([i]))[0]

    def rows_uses(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n): `partner_uses` of each essay in `rows` (distinct), in O(judgements)."""
        n, k = self.n, rows.shape[0]
        f, s = self.first, self.second
        slot = np.full(n, -1, dtype=np.int64)
        slot[rows] = np.arange(k)
        sf, ss = slot[f], slot[s]
        hit_f, hit_s = sf >= 0, ss >= 0
        keys = np.concatenate([sf[hit_f] * n + s[hit_f], ss[hit_s] * n + f[hit_s]])
        uses = np.bincount(keys, minlength=k * n).reshape(k, n)
        for a, b in self.picked:
            if slot[a] >= 0:
                uses[slot[a], b] = _PICKED
            if slot[b] >= 0:
                uses[slot[b], a] = _PICKED
        return uses

    def last_order(self, a: int, b: int) -> tuple[int, int] | None:
        """The orientation of the most recent use of the unordered pair {a, b}, if any."""
        for x, y in reversed(self.picked):
            if {x, y} == {a, b}:
                return x, y
        f, s = self.first, self.second
        hits = np.flatnonzero(((f == a) & (s == b)) | ((f == b) & (s == a)))
        if hits.shape[0] == 0:
            return None
        j = hits[-1]
        return int(f[j]), int(s[j])

    def add(self, a: int, b: int) -> None:
        self.picked.append((a, b))
        self.count[a] += 1
        self.count[b] += 1
        self.a_minus_b[a] += 1
        self.a_minus_b[b] -= 1
        self.avail[a] -= 1
        self.avail[b] -= 1
        self.remaining -= 1
        if self.comp[a] != self.comp[b]:
            self.comp[self.comp == self.comp[b]] = self.comp[a]
            self.n_comp -= 1
        if self.remaining == 0:
            self._set_level()


# Up to this many essays the design keeps the n x n matrix of pair uses (cheap at this size)
# and finds connected components with a vectorised union-find instead of scipy.sparse.
_DENSE_DESIGN_MAX = 300


def _components(n: int, f: np.ndarray, s: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of components, root label per essay) of the graph with edges (f, s).

    Vectorised union-find: hook the larger root of every edge onto the smaller, then
    compress paths by pointer jumping; repeat until every edge joins equal roots.
    """
    parent = np.arange(n)
    if f.shape[0]:
        while True:
            pf, ps = parent[f], parent[s]
            differ = pf != ps
            if not differ.any():
                break
            pf, ps = pf[differ], ps[differ]
            np.minimum.at(parent, np.maximum(pf, ps), np.minimum(pf, ps))
            while True:
                pp = parent[parent]
                if (pp == parent).all():
                    break
                parent = pp
    return int(np.count_nonzero(parent == np.arange(n))), parent


# Up to this many judgements plus essays, components are found by a plain Python union-find
# (~0.15 us an edge), cheaper than the vectorised one's fixed cost of ~30 us.
_PY_COMPONENTS_MAX = 200


def _components_py(n: int, f: np.ndarray, s: np.ndarray) -> tuple[int, np.ndarray]:
    """`_components` by a sequential union-find (larger root hooked onto the smaller, so
    each label is the smallest essay of its component, as there): for small graphs."""
    parent = list(range(n))
    for a, b in zip(f.tolist(), s.tolist()):
        while parent[a] != a:
            parent[a] = a = parent[parent[a]]
        while parent[b] != b:
            parent[b] = b = parent[parent[b]]
        if a < b:
            parent[b] = a
        elif b < a:
            parent[a] = b
    n_comp = 0
    for i in range(n):
        r = parent[i]
        if r == i:
            n_comp += 1
        else:
            parent[i] = parent[r]  # parent[r] is final: r < i was settled before i
    return n_comp, np.array(parent, dtype=np.intp)


class _DenseDesign(_Design):
    """`_Design` for small batches: pair uses as an n x n matrix, no sorting or sparse graphs."""

    def __init__(self, n: int, arr: np.ndarray, max_repeats: int) -> None:
        self.n = n
        self.max_repeats = max_repeats
        self.first = f = arr[:, 0]
        self.second = s = arr[:, 1]
        self.picked = []
        u = np.bincount(f * n + s, minlength=n * n).reshape(n, n)
        cf = np.bincount(f, minlength=n)  # u's row sums
        cs = np.bincount(s, minlength=n)  # u's column sums
        self.count = cf + cs
        self.a_minus_b = cf - cs
        self.uses = u + u.T
        self.uses.reshape(-1)[:: n + 1] = _NEVER  # an essay is never paired with itself
        self.blocked = np.zeros((n, n), dtype=bool)
        # `_set_level` with nothing blocked yet
        self.level = int(self.uses.min())
        self.allowed = self.uses == self.level
        self.avail = self.allowed.sum(axis=1)
        self.remaining = int(self.avail.sum()) // 2
        # (an essay without comparisons, count 0, is a component of its own)
        if f.shape[0] >= n - 1 and self.count.all() and _reaches_all(self.uses):
            self.n_comp, self.comp = 1, np.zeros(n, dtype=np.intp)
        elif f.shape[0] + n <= _PY_COMPONENTS_MAX:
            self.n_comp, self.comp = _components_py(n, f, s)
        else:
            self.n_comp, self.comp = _components(n, f, s)

    def _set_level(self) -> None:
        self.level = int(self.uses.min())
        self.allowed = (self.uses == self.level) & ~self.blocked
        self.avail = self.allowed.sum(axis=1)
        self.remaining = int(self.avail.sum()) // 2

    def rows_uses(self, rows: np.ndarray) -> np.ndarray:
        return np.where(self.blocked[rows], _PICKED, self.uses[rows])

    def partner_uses(self, i: int) -> np.ndarray:
        return np.where(self.blocked[i], _PICKED, self.uses[i])  # rows_uses of one row

    def add(self, a: int, b: int) -> None:
        self.uses[a, b] += 1
        self.uses[b, a] += 1
        self.blocked[a, b] = self.blocked[b, a] = True
        self.allowed[a, b] = self.allowed[b, a] = False
        super().add(a, b)


# Diagonal of the dense uses matrix: larger than any level, small enough not to overflow.
_NEVER = np.iinfo(np.int64).max // 4


def _reaches_all(uses: np.ndarray) -> bool:
    """Whether essay 0 reaches every essay (breadth-first, one mat-vec per hop).

    `uses` is the dense uses matrix; its diagonal is positive, so the adjacency below
    carries self-loops and the reached set only grows.
    """
    n = uses.shape[0]
    # Uses as floats: a reached essay has a positive entry (>= 1); capping at 1 after each
    # hop keeps the entries 0/1, so the products never overflow.
    adj = uses.astype(np.float64)
    seen = adj[0]
    total = int(np.count_nonzero(seen))
    while total < n:
        seen = adj @ seen
        np.minimum(seen, 1.0, out=seen)
        new_total = int(np.count_nonzero(seen))
        if new_total == total:
            return False
        total = new_total
    return True


def _make_design(n: int, arr: np.ndarray, max_repeats: int) -> _Design:
    return _DenseDesign(n, arr, max_repeats) if n <= _DENSE_DESIGN_MAX else _Design(n, arr, max_repeats)


def _pick_min(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the smallest value among mask, ties broken at random."""
    idx = mask.nonzero()[0]
    v = values[idx]
    best = idx[v == v.min()]
    return int(best[0]) if best.shape[0] == 1 else int(best[rng.integers(best.shape[0])])


def _pick_max(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> int:
    idx = mask.nonzero()[0]
    v = values[idx]
    top = v.max()
    best = idx[v >= top - 1e-12 * max(1.0, abs(top))]
    return int(best[0]) if best.shape[0] == 1 else int(best[rng.integers(best.shape[0])])


def _pick_max_masked(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> int:
    """`_pick_max` for large masks (values are finite and >= 0); -1 when mask is empty."""
    vm = np.where(mask, values, -1.0)
    j = int(vm.argmax())
    if not mask[j]:
        return -1
    top = float(vm[j])
    best = (vm >= top - 1e-12 * max(1.0, abs(top))).nonzero()[0]
    return j if best.shape[0] == 1 else int(best[rng.integers(best.shape[0])])


def _gain(v_i: float | np.ndarray, v_j: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Expected reduction of the two posterior variances from one comparison of weight w."""
    return v_i * v_i * w / (1.0 + v_i * w) + v_j * v_j * w / (1.0 + v_j * w)


def _beliefs(n: int, fit: Fit | None, count: np.ndarray, pending: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Current theta and posterior variance per essay, counting pending comparisons."""
    theta = np.zeros(n)
    if fit is None or fit.theta.shape[0] == 0:
        var = 1.0 / (1.0 / _PRIOR_VAR + _W0 * count)
    else:
        k = min(n, fit.theta.shape[0])
        if not (np.isfinite(fit.theta[:k]).all() and np.isfinite(fit.se[:k]).all()):
            # a clear error rather than numpy's "high <= 0" from a tie-break over NaN gains
            raise ValueError("fit holds non-finite abilities or SEs: pass a fit from fit_bt")
        theta[:k] = fit.theta[:k]
        if k == n:
            var = np.asarray(fit.se[:k], dtype=float) ** 2
        else:
            var = np.empty(n)
            var[:k] = np.asarray(fit.se[:k], dtype=float) ** 2
            var[k:] = _PRIOR_VAR
        if pending is not None and pending.shape[0]:
            # Judgements on their way will add information the fit has not seen yet.
            p = 1.0 / (1.0 + np.exp(-(theta[pending[:, 0]] - theta[pending[:, 1]])))
            w = p * (1.0 - p)
            info = np.bincount(pending[:, 0], weights=w, minlength=n) + np.bincount(pending[:, 1], weights=w, minlength=n)
            var = 1.0 / (1.0 / var + info)
    return theta, np.maximum(var, 1e-12)


def _expected_w(theta: np.ndarray, var: np.ndarray, i: int | np.ndarray) -> np.ndarray:
    """E[p(1-p)] of essay i against every essay, with theta uncertainty folded in (probit
    approx): (n,) for one essay, (len(i), n) for an array of them (a row each)."""
    ti, vi = (theta[i], var[i]) if np.ndim(i) == 0 else (theta[i, None], var[i, None])
    d = (ti - theta) / np.sqrt(1.0 + np.pi * (vi + var) / 8.0)
    p = 1.0 / (1.0 + np.exp(-d))
    return p * (1.0 - p)


def select_pairs(
    n_items: int,
    k: int,
    issued: Sequence[tuple[int, int]] | np.ndarray,
    *,
    fit: Fit | None,
    rng: np.random.Generator,
    strategy: str = "adaptive",
    max_repeats: int = 1,
    min_per_essay: int = 3,
    pending: Sequence[tuple[int, int]] | np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Up to `k` new ordered pairs (shown first, shown second) to compare next.

    Parameters
    ----------
    n_items : number of essays (anchors included: they are essays).
    k : how many pairs are wanted now.
    issued : every ordered pair issued so far, judged or in flight, in issue order, repeats
        included; a (m, 2) int array is accepted too (faster for large m).
    fit : the latest fit (None before any); may cover fewer essays than `n_items`.
    rng : the only source of randomness: same state, same pairs.
    strategy : "adaptive" (information-driven after a coverage floor) or "random".
    max_repeats : uses allowed per unordered pair (repeats swap positions).
    min_per_essay : adaptive coverage floor: comparisons every essay gets before the
        information-driven choice.
    pending : pairs issued but not yet in `fit` (in flight); their expected information
        is counted so one uncertain essay is not picked again and again while its
        judgements are on their way.

    Returns
    -------
    list of (first, second) index pairs; fewer than `k` (possibly none) when the
    no-repeat rule leaves no more. No unordered pair appears twice in one answer.

    Raises
    ------
    ValueError : unknown strategy, bad sizes, or `issued` indices out of range.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pairing strategy {strategy!r}; expected one of {STRATEGIES}")
    if n_items < 0 or max_repeats < 0:
        raise ValueError("n_items and max_repeats must be >= 0")
    arr = _as_pairs(issued, max(n_items, 0), "issued")
    if n_items < 2 or k <= 0 or max_repeats == 0:
        return []
    pend = _as_pairs(pending, n_items, "pending") if pending is not None else None
    design = _make_design(n_items, arr, max_repeats)
    theta, var = _beliefs(n_items, fit, design.count, pend)
    plan = _RankDesign(design, theta) if strategy == "adaptive" and n_items <= _FULL_COV_MAX else None
    out: list[tuple[int, int]] = []
    for _ in range(k):
        if design.exhausted():
            break
        pair = None
        for _attempt in range(n_items + 1):  # bounded: each failed attempt retires an essay
            if design.exhausted() or design.avail.max() <= 0:
                break
            pair = _next_pair(design, strategy, theta, var, min_per_essay, rng, plan)
            if pair is not None:
                break
        if pair is None:
            break
        a, b = _orient(design, *pair, rng=rng)
        out.append((a, b))
        if len(out) == k:
            break  # the last pick: nothing below would be used again
        if plan is not None:
            plan.add(a, b)
        elif strategy == "adaptive":
            w = float(_expected_w(theta, var, a)[b])
            var[a] = 1.0 / (1.0 / var[a] + w)
            var[b] = 1.0 / (1.0 / var[b] + w)
        design.add(a, b)
    return out


def _next_pair(
    design: _Design,
    strategy: str,
    theta: np.ndarray,
    var: np.ndarray,
    min_per_essay: int,
    rng: np.random.Generator,
    plan: _RankDesign | None = None,
) -> tuple[int, int] | None:
    count = design.count
    if design.n_comp == 1 and plan is not None and count.min() >= min_per_essay:
        return plan.best_pair(design, rng)  # no essay below the coverage floor (see below)
    can = design.avail > 0
    if design.n_comp > 1:
        # Join components: least-compared essay, least-compared partner elsewhere.
        i = _pick_min(count, can, rng)
        allowed = (design.partner_uses(i) == design.level) & (design.comp != design.comp[i])
        allowed[i] = False
        if allowed.any():
            if plan is not None and plan.informed:
                # Adaptive, once there is a fit: among the least-compared partners in other
                # components, the most informative one (e.g. winners meet winners).
                least = allowed & (count == count[allowed].min())
                return i, _pick_max(plan.gain_row(i), least, rng)
            return i, _pick_min(count, allowed, rng)
    below = count < min_per_essay
    floor = can & below
    if plan is not None:
        if not floor.any():
            return plan.best_pair(design, rng)
        # Coverage floor: the most informative pair of essays both below the floor (else
        # with one below it), rather than the least-compared essay's best partner.
        pair = plan.best_pair(design, rng, below[:, None] & below[None, :], below[:, None] | below[None, :])
        if pair is not None:
            return pair
    if strategy == "adaptive" and plan is None and not floor.any():
        return _best_fast_pair(design, theta, var, can, rng)
    i = _pick_min(count, can, rng)
    allowed = design.partner_uses(i) == design.level
    allowed[i] = False
    if not allowed.any():  # bookkeeping says otherwise; never loop on it
        design.avail[i] = 0
        return None
    if strategy == "random":
        return i, _pick_min(count, allowed, rng)
    below = allowed & (count < min_per_essay)
    if below.any():
        allowed = below  # fill the coverage floor two essays at a time
    gain = plan.gain_row(i) if plan is not None else _gain(var[i], var, _expected_w(theta, var, i))
    return i, _pick_max(gain, allowed, rng)


def _fast_rows(n: int) -> int:
    """Rows scored per pick: `_FAST_ROWS`, fewer above 1,000 essays so that a pick scores
    about 32,000 pairs whatever the size (10,000 essays: 4 rows, ~3 ms a pick)."""
    return max(4, min(_FAST_ROWS, 32_000 // max(n, 1)))


def _best_fast_pair(
    design: _Design, theta: np.ndarray, var: np.ndarray, can: np.ndarray, rng: np.random.Generator
) -> tuple[int, int] | None:
    """The allowed pair of largest variance gain (large batches, above the floor).

    Rows are the `_FAST_ROWS` essays of largest variance; each row's gain against every
    partner is the pair's, so an essay whose variance stays large because it is far from
    everyone (w ~ 0) loses to closer pairs instead of meeting every essay in turn.
    """
    idx = can.nonzero()[0]
    rows = _fast_rows(design.n)
    if idx.shape[0] > rows:
        idx = idx[np.argpartition(var[idx], -rows)[-rows:]]
    allowed = design.rows_uses(idx) == design.level
    allowed[np.arange(idx.shape[0]), idx] = False
    if not allowed.any():  # bookkeeping says otherwise; never loop on it
        design.avail[idx] = 0
        return None
    gain = _gain(var[idx, None], var, _expected_w(theta, var, idx))
    flat = _pick_max_masked(gain.ravel(), allowed.ravel(), rng)
    if flat < 0:
        return None
    r, j = divmod(flat, design.n)
    return int(idx[r]), int(j)


class _RankDesign:
    """Rank-targeted optimal design on the full posterior covariance (small batches).

    The posterior covariance S is approximated at the current abilities from every issued
    pair (in flight ones included: their information does not depend on the outcome). A
    comparison x = e_a - e_b of expected information w shrinks S by w S x x'S / (1 + w x'Sx).
    Spearman's loss is the sum of squared rank errors, and an essay's rank error is its
    theta error times the local density of essays, so the gain of (a, b) is the
    density^2-weighted drop in variance, w u'Du / (1 + w x'Sx) with u = Sx. Weighting by
    density sends comparisons to the crowded middle of the scale, where ranks are decided;
    plain variance (A-optimal) wastes them on the tails.
    """

    def __init__(self, design: _Design, theta: np.ndarray) -> None:
        n = design.n
        self.theta = theta
        self.informed = bool(theta.any())  # False before the first fit
        self.diff = diff = theta[:, None] - theta[None, :]
        if isinstance(design, _DenseDesign) and not design.picked:
            # p(1 - p) of a pair depends on the pair only, p = sigmoid(d): 1 / (2 + 2 cosh d)
            h = np.cosh(diff)
            h += 1.0
            np.divide(0.5, h, out=h)
            h *= design.uses
            h.reshape(-1)[:: n + 1] = 0.0
        else:
            f, s = design._all_pairs()
            w = 0.5 / (1.0 + np.cosh(theta[f] - theta[s]))
            h = np.bincount(f * n + s, weights=w, minlength=n * n).reshape(n, n).astype(np.float64, copy=False)
            h = h + h.T
        hm = -h
        hm.reshape(-1)[:: n + 1] = h.sum(axis=1) + 1.0 / _PRIOR_VAR
        self.cov = _spd_inverse(hm)
        centred = theta - theta.sum() / n
        spread = math.sqrt(float(centred @ centred) / n)
        bw = max(0.1, _DENSITY_BANDWIDTH * spread) if spread > 0 else 1.0
        dens = np.exp((diff * diff) * (-0.5 / (bw * bw))).sum(axis=1)
        self.weight = (dens / (dens.sum() / n)) ** 2  # dens.mean(), without its Python wrapper
        self.b = self.cov @ (self.weight[:, None] * self.cov)

    def _gains(self, rows: np.ndarray | slice) -> np.ndarray:
        c, b = self.cov, self.b
        dc, db = c.diagonal(), b.diagonal()
        if isinstance(rows, slice) and rows == slice(None):
            dci, dbi, cr, br, diff = dc[:, None], db[:, None], c, b, self.diff
        else:
            dci, dbi, cr, br, diff = dc[rows, None], db[rows, None], c[rows], b[rows], self.diff[rows]
        var_diff = cr * -2.0
        var_diff += dci
        var_diff += dc
        q = br * -2.0
        q += dbi
        q += db
        # w = E[p(1-p)] with the uncertainty of the difference folded in (probit approx),
        # and p(1 - p) = 1 / (2 + 2 cosh z), so w q / (1 + w var) = q / (2 + 2 cosh z + var)
        t = np.maximum(var_diff, 0.0)
        t *= np.pi / 8.0
        t += 1.0
        np.sqrt(t, out=t)
        np.divide(diff, t, out=t)
        np.cosh(t, out=t)
        t *= 2.0
        t += var_diff
        t += 2.0
        q /= t
        return q

    def gain_row(self, i: int) -> np.ndarray:
        return self._gains(np.array([i]))[0]

    def best_pair(self, design: _Design, rng: np.random.Generator, *among: np.ndarray) -> tuple[int, int] | None:
        """The allowed pair of largest gain.

        With (n, n) masks in `among`, within the first mask that leaves an allowed pair
        (None if none does); the gains are computed once for all of them.
        """
        n = design.n
        if isinstance(design, _DenseDesign):
            allowed = design.allowed
        else:
            f, s = design._all_pairs()
            uses = (np.bincount(f * n + s, minlength=n * n) + np.bincount(s * n + f, minlength=n * n)).reshape(n, n)
            for a, b in design.picked:
                uses[a, b] = uses[b, a] = _PICKED
            allowed = uses == design.level
            np.fill_diagonal(allowed, False)
        if among:
            mask = next((m for m in (allowed & m for m in among) if m.any()), None)
        else:
            mask = allowed if allowed.any() else None
        if mask is None:
            return None
        g = self._gains(slice(None))
        flat = _pick_max_masked(g.ravel(), mask.ravel(), rng)
        if flat < 0:
            return None
        a, b = divmod(flat, n)
        return int(a), int(b)

    def add(self, a: int, b: int) -> None:
        """Fold a picked comparison into the covariance (rank-1 update)."""
        c = self.cov
        x_var = c.item(a, a) + c.item(b, b) - 2.0 * c.item(a, b)  # Python floats: the same IEEE ops
        z = self.diff.item(a, b) / math.sqrt(1.0 + math.pi * max(x_var, 0.0) / 8.0)
        w = 0.5 / (1.0 + math.cosh(z)) if abs(z) < 700.0 else 0.0
        u = c[:, a] - c[:, b]
        k = w / (1.0 + w * x_var)
        mu = self.weight * u
        # b' = (S - k u u') D (S - k u u') = b - k (u g' + g u') + k^2 (u'Du) u u', g = S D u
        #    = b - k (u g2' + g2 u') with g2 = g - k (u'Du) u / 2
        g2 = c @ mu
        g2 -= (0.5 * k * float(u @ mu)) * u
        ku = k * u
        upd = np.multiply.outer(ku, g2)
        self.b -= upd
        self.b -= upd.T
        c -= np.multiply.outer(ku, u)  # c is self.cov, updated in place


def _spd_inverse(hm: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix (LAPACK potrf + potri)."""
    c, info = _potrf(hm, lower=1, clean=1, overwrite_a=0)
    if info == 0:
        ci, info = _potri(c, lower=1, overwrite_c=1)
        if info == 0:
            inv = ci + ci.T
            d = inv.reshape(-1)[:: inv.shape[0] + 1]
            d *= 0.5
            return inv
    return np.linalg.inv(hm)


def _orient(design: _Design, a: int, b: int, *, rng: np.random.Generator) -> tuple[int, int]:
    """Order a pair: swap a repeated pair; otherwise show first the essay more often second."""
    if design.level > 0:
        last = design.last_order(a, b)
        if last is not None:
            return last[1], last[0]
    da, db = design.a_minus_b[a], design.a_minus_b[b]
    if da < db:
        return a, b
    if db < da:
        return b, a
    return (a, b) if rng.random() < 0.5 else (b, a)
