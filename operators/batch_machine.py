"""One batch's Comparative Judgement state: collecting -> comparing -> done.

Pure Python (no Bytewax): every method takes the current time and returns the events to
emit, so the machine is tested directly and the Bytewax logic around it stays thin.
It emits its result exactly once; whatever arrives afterwards is a counted stray.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Union

import numpy as np

from cj.grading import GradingError, fit_cut_points, project_grades, validate_anchor_grades
from cj.model import Fit, fit_bt
from cj.pairing import select_pairs
from cj.scales import GradeScale, custom_scale, get_scale
from cj.stopping import StopRule, completion_target, stop_reason
from schemas import (
    AssessmentResult,
    BatchOpened,
    BatchStatus,
    ComparisonRequested,
    DeadLetter,
    ErrorKind,
    EssayResult,
    EssaySubmitted,
    Judgement,
    ModelUsage,
    PresentedEssay,
    ResourceUsage,
    TokenUsage,
)
from schemas.events import MAX_BATCH_ESSAYS, MAX_ESSAY_CHARS, PAIR_KINDS, GradeScaleSpec

SNAPSHOT_VERSION = 1
COLLECT_TIMEOUT = timedelta(hours=1)  # also how long essays wait for a batch.opened that never comes
# How long a finished batch is remembered: late judgements count as strays, and its id
# stays finished (a re-sent batch.opened is a duplicate, not a second paid run). About
# 400 bytes of snapshot and 2.7 kB of memory each.
TOMBSTONE_TTL = timedelta(days=7)
MAX_EARLY_ESSAYS = 10_000
LARGE_BATCH = 2_000  # essays; above this a refit costs more than 0.15 s (see _refit_every)
DEFAULT_PRIOR_SD = 2.0  # fit_bt's prior sd for essays; the grading divides it out of fitted anchors
# Errors the judge already retried but that may pass on a fresh attempt.
REISSUE_KINDS = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.OVERLOADED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.INVALID_OUTPUT,
        ErrorKind.MAX_TOKENS,
        ErrorKind.DEADLINE,
        ErrorKind.JUDGE_ERROR,
    }
)

# Failures that say nothing about the judge itself (the provider was busy or unreachable).
TRANSIENT_KINDS = frozenset(
    k.value for k in (ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT,
                      ErrorKind.CONNECTION, ErrorKind.DEADLINE)
)

Inbound = Union[BatchOpened, EssaySubmitted, Judgement]
Outbound = Union[
    BatchOpened, EssaySubmitted, ComparisonRequested, Judgement, AssessmentResult, ResourceUsage, DeadLetter
]

# comparison states
FLIGHT, VALID, ERROR = 0, 1, 2


@dataclass
class Essay:
    essay_id: str
    text: str
    anchor_grade: str | None
    anchor_value: float | None = None  # banked scale value of an anchor, and its SE
    anchor_value_se: float | None = None
    _presented: PresentedEssay | None = field(default=None, init=False, repr=False, compare=False)

    def presented(self) -> PresentedEssay:
        """The essay as a request shows it, built (and validated) on first use: every
        request pairing it shares the one frozen object rather than validating a copy."""
        if self._presented is None:
            self._presented = PresentedEssay(essay_id=self.essay_id, text=self.text)
        return self._presented


@dataclass
class Comparison:
    first: int
    second: int
    attempt: int
    deadline: float  # epoch seconds of the current attempt
    state: int = FLIGHT
    first_won: bool = False
    failed_kind: str | None = None  # why it failed for good (an ErrorKind value)

    @property
    def hard(self) -> bool:
        """Failed for a reason about the pair (refused, bad request...): it counts as asked."""
        return self.failed_kind in PAIR_KINDS

    @property
    def lasting(self) -> bool:
        """Failed for a reason that does not pass (a bad key, a broken judge), not an outage."""
        return self.failed_kind is not None and self.failed_kind not in TRANSIENT_KINDS


@dataclass(frozen=True)
class _Fixed:
    """What a batch's open fixes for its whole run, derived once rather than per judgement
    (the machine keeps it for as long as `opened` is the event it was derived from)."""

    opened: BatchOpened
    rule: StopRule
    timeout: timedelta  # per attempt
    request: dict[str, object]  # the fields every comparison request of the batch shares

    @classmethod
    def of(cls, opened: BatchOpened) -> _Fixed:
        s = opened.settings
        rule = StopRule(
            budget=s.budget, max_mean_se=s.max_mean_se, min_ssr=s.min_ssr,
            min_per_essay=s.min_per_essay, max_repeats=s.max_repeats,
        )
        request = {
            "correlation_id": opened.correlation_id, "assignment": opened.assignment, "rubric_id": s.rubric_id,
            "judge_provider": s.judge_provider, "judge_model": s.judge_model, "temperature": s.temperature,
        }
        return cls(opened, rule, timedelta(seconds=s.comparison_timeout_s), request)


class _ValidColumns:
    """The valid comparisons as numpy columns (first, second, first_won), in answer order.

    Only ever appended to (grown by doubling), so the rows below `n` never change: a fit
    reads them as views instead of converting whole Python lists on every refit. The views
    are read-only, so no reader can change the history behind the machine's back."""

    def __init__(self) -> None:
        self.n = 0
        self._first = np.empty(16, dtype=np.int64)
        self._second = np.empty(16, dtype=np.int64)
        self._won = np.empty(16, dtype=bool)

    def append(self, first: int, second: int, won: bool) -> None:
        if self.n == self._first.shape[0]:  # full: copy into twice the room (old views keep the old rows)
            self._first = np.concatenate([self._first, np.empty_like(self._first)])
            self._second = np.concatenate([self._second, np.empty_like(self._second)])
            self._won = np.concatenate([self._won, np.empty_like(self._won)])
        self._first[self.n], self._second[self.n], self._won[self.n] = first, second, won
        self.n += 1

    def rows(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first, second, first_won) of rows [start, stop) (stop: all), as read-only views."""
        stop = self.n if stop is None else min(stop, self.n)
        views = (self._first[start:stop], self._second[start:stop], self._won[start:stop])
        for v in views:
            v.flags.writeable = False
        return views


def comparison_id(batch_id: str, seq: int) -> str:
    return f"{batch_id}#{seq}"


def _seq_of(batch_id: str, cid: str) -> int | None:
    prefix = batch_id + "#"
    tail = cid[len(prefix) :]
    if not cid.startswith(prefix) or not (tail.isascii() and tail.isdigit()):  # not '²'
        return None
    return int(tail)


class BatchMachine:
    TOP_UP_AT = 0.5  # top up when this share of the in-flight window is still out
    def __init__(self, batch_id: str):
        self.batch_id = batch_id
        self.phase = "collecting"
        self.result_sent = False  # the one result went out (set when _finish completes)
        self._taking_in: list[EssaySubmitted] = []  # early essays being taken in at the open
        self.opened: BatchOpened | None = None
        self.opened_at: datetime | None = None
        self.essays: list[Essay] = []
        self.early: list[EssaySubmitted] = []  # essays that arrived before their batch
        self.early_since: datetime | None = None  # when the first of them arrived
        self.last_error: str | None = None  # latest judge error, 'kind: detail'
        self.rejected = 0
        self.comps: list[Comparison] = []
        self.errors_by_kind: Counter[str] = Counter()
        self.usage: dict[tuple[str, str], list[float]] = {}
        self.strays = 0
        self.duplicates = 0
        self.last_at: datetime | None = None
        # When the event being handled happened (its own time, or a timer's due time): a
        # result decided without judgements is stamped with it, so a replay repeats it.
        self._event_at: datetime | None = None
        self.done_at: datetime | None = None
        self.stop: str | None = None
        self.valid_order: list[int] = []  # seqs of valid comparisons, in the order answered
        self.fit_n = 0  # the fit in use is over valid_order[:fit_n]: a function of history only
        self._fit: Fit | None = None
        self._fit_at = -1
        self._in_flight = 0
        self._n_error = 0
        self._n_lasting = 0  # of them, failed for a reason that does not pass (a bad key, a broken judge)
        self._issued: list[tuple[int, int]] | None = None  # pairs asked (not errored), derived
        # Derived, rebuilt on restore, kept as judgements arrive so no judgement rescans the
        # batch: valid comparisons as columns, in answer order; valid comparisons per essay,
        # and how many essays have fewer than min_per_essay of them; the seqs of the
        # comparisons in flight, ascending (the timer and the pairing's pending pairs).
        self._valid = _ValidColumns()
        self._counts: np.ndarray | None = None
        self._short = 0  # set with _counts
        self._flying: dict[int, None] = {}
        # Derived caches: what the open fixes (see _Fixed), the error cap for a number of
        # essays, and the fit's priors for the essays list (by identity) and its length.
        self._fixed_cache: _Fixed | None = None
        self._cap: tuple[_Fixed, int, int] | None = None
        self._priors_cache: tuple[list[Essay], int, dict[str, np.ndarray]] | None = None

    # ---- inputs -------------------------------------------------------------------------
    def handle(self, event: Inbound, now: datetime) -> list[Outbound]:
        self._event_at = event.occurred_at
        if isinstance(event, Judgement):
            return self._on_judgement(event, now)
        if isinstance(event, BatchOpened):
            return self._on_opened(event, now)
        return self._on_essay(event, now)

    def on_timer(self, now: datetime) -> list[Outbound]:
        """Expire stuck comparisons, a batch whose essays never all arrived, and essays
        whose batch was never opened (dead-lettered, so they are not held forever)."""
        if self.phase == "comparing":
            out: list[Outbound] = []
            ts = now.timestamp()
            due = [c.deadline for c in self.comps if c.state == FLIGHT and c.deadline <= ts]
            if due:
                self._event_at = datetime.fromtimestamp(max(due), UTC)
            for seq, c in enumerate(self.comps):
                if c.state == FLIGHT and c.deadline <= ts:
                    self.errors_by_kind[ErrorKind.DEADLINE.value] += 1
                    self.last_error = f"{ErrorKind.DEADLINE.value}: no judgement before the attempt's deadline"
                    out += self._retry_or_fail(seq, c, ErrorKind.DEADLINE, now)
            return out + self._advance(now)
        if self.phase == "collecting" and self.opened_at and now - self.opened_at >= COLLECT_TIMEOUT:
            self._event_at = self.opened_at + COLLECT_TIMEOUT
            return self._start(now)
        if self.opened is None and self.early_since and now - self.early_since >= COLLECT_TIMEOUT:
            early, self.early, self.early_since = self.early, [], None
            wait = int(COLLECT_TIMEOUT.total_seconds())
            return [self._dead(e, f"batch never opened: no batch.opened within {wait} s of its first essay")
                    for e in early]
        return []

    def next_timer(self) -> datetime | None:
        if self.phase == "comparing":
            pending = [self.comps[seq].deadline for seq in self._flying]
            return datetime.fromtimestamp(min(pending), UTC) if pending else None
        if self.phase == "collecting" and self.opened_at:
            return self.opened_at + COLLECT_TIMEOUT
        if self.opened is None and self.early_since:
            return self.early_since + COLLECT_TIMEOUT
        if self.phase == "done" and self.done_at:
            return self.done_at + TOMBSTONE_TTL
        return None

    def expired(self, now: datetime) -> bool:
        """A finished batch's tombstone (kept to count strays) may now be dropped."""
        return self.phase == "done" and self.done_at is not None and now >= self.done_at + TOMBSTONE_TTL

    @property
    def is_unknown(self) -> bool:
        return self.opened is None and not self.early and self.phase == "collecting"

    def _on_opened(self, ev: BatchOpened, now: datetime) -> list[Outbound]:
        if self.opened is not None or self.phase == "done":
            self.duplicates += 1
            return []
        if ev.expected_essays > MAX_BATCH_ESSAYS:
            return self._reject(ev, f"batch too large: {ev.expected_essays} essays, at most {MAX_BATCH_ESSAYS} "
                                    "(its result must fit one Kafka message); split it", now)
        try:
            self._scale(ev)
        except GradingError as exc:
            return self._reject(ev, f"invalid grade scale: {exc}", now)
        # The collect timeout runs from when this flow saw the batch open, not from the
        # producer's clock: a batch read late (consumer lag, a replay) still gets its hour.
        self.opened, self.opened_at = ev, now
        out: list[Outbound] = [ev]
        early, self.early, self.early_since = self.early, [], None
        self._taking_in = early  # what an error in the loop below must still pass on
        for essay in early:
            out += self._on_essay(essay, now)
        self._taking_in = []
        return out

    def _reject(self, ev: BatchOpened, reason: str, now: datetime) -> list[Outbound]:
        """A batch.opened the flow refuses still gets the batch's one result (failed,
        `rejected`, the reason in `last_error`), so whoever waits for it is told; the open
        is passed on for its row and dead-lettered with the reason, and essays that came
        before it are dead-lettered too. The batch id is then finished: send a corrected
        batch under a new id."""
        reason = reason[:600]
        out: list[Outbound] = [ev, self._dead(ev, reason)]
        out += [self._dead(e, f"batch rejected: {reason}"[:600]) for e in self.early]
        self.early, self.early_since = [], None
        self.last_error = reason
        out.append(self._bare_failure(reason, now, ev.correlation_id, ev.callback_topic, stop_reason="rejected"))
        return out

    def _on_essay(self, ev: EssaySubmitted, now: datetime) -> list[Outbound]:
        if self.phase == "done":
            return [self._dead(ev, "essay for a finished batch")]
        if self.opened is None:
            if len(self.early) >= MAX_EARLY_ESSAYS:
                return [self._dead(ev, "too many essays before the batch was opened")]
            self.early.append(ev)
            self.early_since = self.early_since or now
            return []
        if self.phase != "collecting":
            return [self._dead(ev, "essay after the batch started comparing")]
        reason = self._essay_problem(ev)
        if reason:
            if reason != "duplicate essay id":
                self.rejected += 1
            out: list[Outbound] = [self._dead(ev, reason)]
        else:
            self.essays.append(Essay(ev.essay_id, ev.text, ev.anchor_grade, ev.anchor_value, ev.anchor_value_se))
            out = [ev]
        if len(self.essays) + self.rejected >= self.opened.expected_essays:
            out += self._start(now)
        return out

    def _essay_problem(self, ev: EssaySubmitted) -> str | None:
        if any(e.essay_id == ev.essay_id for e in self.essays):
            return "duplicate essay id"
        if not ev.text.strip():
            return "empty essay text"
        if len(ev.text) > MAX_ESSAY_CHARS:
            return f"essay longer than {MAX_ESSAY_CHARS} characters"
        if ev.anchor_grade is not None:
            scale = self._scale(self.opened) if self.opened else None
            if scale is None:
                return "anchor grade given but the batch has no grade scale"
            try:
                validate_anchor_grades(scale, [ev.anchor_grade])
            except GradingError as exc:
                return f"unknown anchor grade: {exc}"
        return None

    def _on_judgement(self, j: Judgement, now: datetime) -> list[Outbound]:
        if self.phase == "done":
            self.strays += 1
            return []
        if self.opened is None:
            return [self._dead(j, "judgement for an unknown batch")]
        seq = _seq_of(self.batch_id, j.comparison_id)
        if seq is None or seq >= len(self.comps):
            return [self._dead(j, "judgement for an unknown comparison")]
        c = self.comps[seq]
        if c.state != FLIGHT:
            self.duplicates += 1
            return []
        if not j.is_valid and j.attempt < c.attempt:
            # An earlier attempt's error, late (that attempt already timed out and was
            # reissued): it says nothing about the live attempt, so it neither fails nor
            # reissues the comparison. Its usage was spent, and it is kept.
            self._add_usage(j)
            return [j]
        self.last_at = max(self.last_at, j.occurred_at) if self.last_at else j.occurred_at
        self._add_usage(j)
        out: list[Outbound] = [j]
        if j.is_valid:
            c.state, c.first_won = VALID, j.winner == "A"
            self._in_flight -= 1
            del self._flying[seq]
            self._record_valid(seq, c)
        else:
            kind = j.error_kind or ErrorKind.JUDGE_ERROR
            self.errors_by_kind[kind.value] += 1
            self.last_error = f"{kind.value}: {j.error_detail or 'no detail'}"[:600]
            out += self._retry_or_fail(seq, c, kind, now)
        return out + self._advance(now)

    # ---- scheduling -----------------------------------------------------------------------
    def _start(self, now: datetime) -> list[Outbound]:
        self.phase = "comparing"
        if len(self.essays) < 2:
            return self._finish("too_few_essays", now)
        return self._advance(now)

    def _retry_or_fail(self, seq: int, c: Comparison, kind: ErrorKind, now: datetime) -> list[Outbound]:
        assert self.opened is not None
        if kind in REISSUE_KINDS and c.attempt < self.opened.settings.max_attempts:
            c.attempt += 1
            return [self._request(seq, c, now)]
        c.state = ERROR
        del self._flying[seq]
        # A pair the judge refuses or rejects counts as asked, or an essay it always refuses
        # would be paired again and again (it has the widest posterior) until the budget is
        # gone; any other failure may be asked again.
        c.failed_kind = kind.value
        self._n_lasting += c.lasting
        self._issued = None
        self._in_flight -= 1
        self._n_error += 1
        return []

    def _advance(self, now: datetime) -> list[Outbound]:
        """Top up the comparisons in flight, then test the stopping rule."""
        assert self.opened is not None
        s = self.opened.settings
        n = len(self.essays)
        n_valid = len(self.valid_order)
        in_flight, n_error = self._in_flight, self._n_error
        want = min(s.in_flight - in_flight, s.budget - n_valid - in_flight)
        out: list[Outbound] = []
        pairs_left = True
        # Top up in chunks once half the window has drained: one pairing call per chunk
        # rather than per judgement, while the pipeline stays at least half full.
        if want > 0 and in_flight <= int(s.in_flight * self.TOP_UP_AT):
            fit = self.fit(fresh=False)  # refits only when enough new judgements arrived
            if self._issued is None:
                self._issued = [(c.first, c.second) for c in self.comps if c.state != ERROR or c.hard]
            issued = self._issued
            rng = np.random.default_rng([s.seed, len(self.comps)])
            pairs = select_pairs(
                n, want, issued, fit=fit, rng=rng, strategy=s.pairing,
                max_repeats=s.max_repeats, min_per_essay=min(3, s.min_per_essay),  # coverage floor
                pending=self._unfitted(),
            )
            pairs_left = len(pairs) > 0 or in_flight > 0  # answers still due may be informative
            for a, b in pairs:
                seq = len(self.comps)
                c = Comparison(int(a), int(b), 1, 0.0)
                self.comps.append(c)
                self._flying[seq] = None
                self._issued.append((c.first, c.second))
                out.append(self._request(seq, c, now))
                in_flight += 1
        self._in_flight = in_flight
        if n_error >= self._error_cap(n) or self._never_worked():
            return out + self._finish("too_many_errors", now)
        valid_per_essay = self._valid_per_essay()
        stale = self._current_fit()
        rule = self._rule()
        reason = stop_reason(rule, n, valid_per_essay, n_valid, stale, pairs_left)
        if self.fit_n != n_valid and (reason is not None or self._may_be_precise(stale)):
            # confirm a stop on a fresh fit, and look for one the stale fit cannot see yet
            reason = stop_reason(rule, n, valid_per_essay, n_valid, self.fit(fresh=True), pairs_left)
        if reason is None and in_flight == 0:
            reason = "no_informative_pairs"  # nothing in flight and nothing left to ask
        if reason is not None:
            return out + self._finish(str(reason), now)
        return out

    def _unfitted(self) -> np.ndarray:
        """Pairs asked but not in the fit in use (in flight, or answered since the fit):
        the pairing counts their information, so it does not keep picking one uncertain
        essay while its judgements are on their way."""
        flight = [(self.comps[seq].first, self.comps[seq].second) for seq in self._flying]  # in seq order
        first, second, _ = self._valid.rows(self.fit_n)
        fresh = np.column_stack([first, second])
        return np.concatenate([np.asarray(flight, dtype=np.int64).reshape(-1, 2), fresh])

    def _may_be_precise(self, stale: Fit | None) -> bool:
        """Whether the judgements since the stale fit may have met the precision target:
        its SEs shrunk by their expected information (a cheap forecast), with a small margin.
        Only then is a fresh fit worth its cost, and the result goes out on the deciding
        judgement rather than at the next scheduled refit."""
        rule = self._rule()
        if stale is None or (rule.max_mean_se is None and rule.min_ssr is None):
            return False
        # every essay has min_per_essay valid comparisons (the counts' minimum, kept as a tally)
        if self._valid_per_essay().shape[0] == 0 or self._short > 0:
            return False
        k, n = self.fit_n, stale.theta.shape[0]
        if len(self.valid_order) - k < self._forecast_wait(stale, rule):
            return False
        f, s, _ = self._valid.rows(k)
        p = 1.0 / (1.0 + np.exp(-(stale.theta[f] - stale.theta[s] + stale.delta)))
        w = p * (1.0 - p)
        info = np.bincount(f, weights=w, minlength=n) + np.bincount(s, weights=w, minlength=n)
        var = 1.0 / (1.0 / np.maximum(stale.se, 1e-12) ** 2 + info)
        if rule.max_mean_se is not None and not float(np.mean(np.sqrt(var))) <= rule.max_mean_se * 1.02:
            return False
        if rule.min_ssr is not None:
            spread = float(np.var(stale.theta))
            if spread <= 0 or not (spread - float(np.mean(var))) / spread >= rule.min_ssr - 0.01:
                return False
        return True

    def _forecast_wait(self, fit: Fit, rule: StopRule) -> int:
        """New judgements to wait for after `fit` before forecasting again: half of what the
        target still needs at the usual 1 / judgements rate of variance, and no more than the
        scheduled refit. Without it a fit just short of the target would be refitted on every
        judgement (a function of the history only, so a restored batch waits the same)."""
        k = self.fit_n
        short = 1.0
        if rule.max_mean_se is not None and rule.max_mean_se > 0:
            short = max(short, float(np.mean(fit.se)) ** 2 / rule.max_mean_se**2)
        if rule.min_ssr is not None:
            allowed = (1.0 - rule.min_ssr) * float(np.var(fit.theta))
            short = max(short, float(np.mean(fit.se**2)) / allowed if allowed > 0 else np.inf)
        wait = 0.5 * k * (short - 1.0)
        return int(min(wait, self._refit_every(k))) if np.isfinite(wait) else self._refit_every(k)

    def _never_worked(self) -> bool:
        """Nothing has worked and two windows in flight (at least 8 comparisons) failed for
        good for reasons that do not pass (a broken plug-in, a judge that cannot be built, a
        bad key): the judge does not work, and the batch stops within tens of calls rather
        than the budget times the attempts. Outages (rate limits, overload, 5xx, timeouts)
        do not count here; they wait for the usual cap."""
        assert self.opened is not None
        s = self.opened.settings
        return not self.valid_order and self._n_lasting >= min(s.budget, max(8, 2 * s.in_flight))

    def _error_cap(self, n: int) -> int:
        """Comparisons that may fail for good (after every retry) before the batch gives up:
        as many as it would ever need to succeed (its completion target, at least two windows
        in flight), within the budget."""
        fixed = self._fixed()
        if self._cap is None or self._cap[0] is not fixed or self._cap[1] != n:  # n is fixed once comparing
            s = fixed.opened.settings
            target = completion_target(n, fixed.rule) if n >= 2 else 0
            self._cap = (fixed, n, max(1, min(s.budget, max(target, 2 * s.in_flight))))
        return self._cap[2]

    def _request(self, seq: int, c: Comparison, now: datetime) -> ComparisonRequested:
        fixed = self._fixed()
        deadline = now + fixed.timeout
        c.deadline = deadline.timestamp()
        return ComparisonRequested.create(
            self.batch_id,
            comparison_id(self.batch_id, seq),
            c.attempt,
            essay_a=self.essays[c.first].presented(),
            essay_b=self.essays[c.second].presented(),
            deadline=deadline,
            occurred_at=now,
            **fixed.request,
        )

    # ---- model ------------------------------------------------------------------------------
    def _fixed(self) -> _Fixed:
        """What the open fixes (see `_Fixed`), derived again only for another open."""
        assert self.opened is not None
        if self._fixed_cache is None or self._fixed_cache.opened is not self.opened:
            self._fixed_cache = _Fixed.of(self.opened)
        return self._fixed_cache

    def _rule(self) -> StopRule:
        return self._fixed().rule

    def _record_valid(self, seq: int, c: Comparison) -> None:
        self.valid_order.append(seq)
        self._valid.append(c.first, c.second, c.first_won)
        if self._counts is not None:
            need = self._rule().min_per_essay
            for i in (c.first, c.second):
                self._counts[i] += 1
                self._short -= int(self._counts[i] == need)  # i just reached min_per_essay

    def _valid_arrays(self, upto: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first, second, first_won) of the valid comparisons in the order answered
        (read-only views)."""
        return self._valid.rows(0, upto)

    def _valid_per_essay(self) -> np.ndarray:
        if self._counts is None:
            first, second, _ = self._valid_arrays()
            n = len(self.essays)
            self._counts = np.bincount(first, minlength=n) + np.bincount(second, minlength=n)
            self._short = int(np.count_nonzero(self._counts < self._rule().min_per_essay))
        return self._counts

    def _refit_every(self, n_valid: int) -> int:
        """Refit on every judgement early on, then every few: a 1,000-essay fit costs ms.
        Above LARGE_BATCH essays a fit costs 0.15-8 s of the worker (the SEs' n^3
        factorisation), so it waits for at least n/10 new judgements: early fits of a
        large batch, during its coverage floor, would block the worker for minutes."""
        n = len(self.essays)
        every = max(1, min(n // 4, n_valid // 25))
        return max(every, n // 10) if n > LARGE_BATCH else every

    def fit(self, fresh: bool = True) -> Fit | None:
        """The BT fit over the first `fit_n` valid judgements, advanced to all of them when
        `fresh` or when enough new ones arrived. It depends only on the judgement history,
        so a batch resumed from a snapshot makes the same choices as the original run."""
        n = len(self.essays)
        if n < 2:
            return None
        n_valid = len(self.valid_order)
        if fresh or n_valid - self.fit_n >= self._refit_every(n_valid):
            self.fit_n = n_valid
        return self._current_fit()

    def _current_fit(self) -> Fit | None:
        """The fit over `valid_order[:fit_n]` without advancing it (recomputed after a restore)."""
        if len(self.essays) < 2:
            return None
        if self._fit is None or self._fit_at != self.fit_n:
            self._fit = fit_bt(len(self.essays), *self._valid_arrays(self.fit_n), initial=self._fit, **self._priors())
            self._fit_at = self.fit_n
        return self._fit

    def _priors(self) -> dict[str, np.ndarray]:
        """Per-essay priors when anchors carry banked values: each such anchor sits at its
        value within its SE, which puts the batch on the bank's scale, and the other essays
        keep the usual prior around their own cohort's mean, fitted with them (a class's
        mean is not the bank's)."""
        cached = self._priors_cache  # essays are only appended to (or replaced), never edited
        if cached is not None and cached[0] is self.essays and cached[1] == len(self.essays):
            return cached[2]
        banked = np.array([e.anchor_value is not None for e in self.essays], dtype=bool)
        priors: dict[str, np.ndarray] = {}
        if banked.any():
            mean = np.zeros(len(self.essays))
            sd = np.full(len(self.essays), DEFAULT_PRIOR_SD)
            for i in np.flatnonzero(banked):
                e = self.essays[i]
                mean[i], sd[i] = e.anchor_value, e.anchor_value_se
            priors = {"prior_mean": mean, "prior_sd": sd, "cohort": ~banked}
            for v in priors.values():
                v.flags.writeable = False  # handed to every fit: no fit may change them
        self._priors_cache = (self.essays, len(self.essays), priors)
        return priors

    # ---- result -----------------------------------------------------------------------------
    def _finish(self, reason: str, now: datetime) -> list[Outbound]:
        assert self.opened is not None
        self.phase, self.stop = "done", reason
        at = self.last_at or self._event_at or now
        self.done_at = now
        fit = self.fit(fresh=True)
        n = len(self.essays)
        first, second, won = self._valid_arrays()
        n_valid = len(first)
        n_err = self._n_error
        essays: list[EssayResult] = []
        cuts_list: list[float] | None = None
        grading_error: str | None = None
        scale = self._scale(self.opened)
        if fit is not None and n:
            counts = np.bincount(first, minlength=n) + np.bincount(second, minlength=n)
            wins = np.bincount(first[won], minlength=n) + np.bincount(second[~won], minlength=n)
            projections = None
            anchors = [i for i, e in enumerate(self.essays) if e.anchor_grade]
            banked = [i for i in anchors if self.essays[i].anchor_value is not None]
            if scale is not None and anchors:
                # Banked anchors place the cut points by their values (anchors without one
                # are then compared as essays); otherwise the anchors' fit places them.
                try:
                    if banked:
                        cuts = fit_cut_points(
                            scale,
                            np.array([self.essays[i].anchor_value for i in banked], dtype=float),
                            [self.essays[i].anchor_grade for i in banked],  # type: ignore[misc]
                            anchor_se=np.array([self.essays[i].anchor_value_se for i in banked], dtype=float),
                            n_items=n, fixed=np.ones(len(banked), dtype=bool),
                        )
                    else:
                        # An anchor never judged sits at its prior: it says nothing about
                        # where its grade lies, so it places no cut point.
                        placed = [i for i in anchors if counts[i] > 0]
                        try:
                            cuts = fit_cut_points(
                                scale, fit.theta[placed], [self.essays[i].anchor_grade for i in placed],  # type: ignore[misc]
                                anchor_se=fit.se[placed], prior_sd=DEFAULT_PRIOR_SD, n_items=n,
                            )
                        except GradingError as exc:
                            if len(placed) == len(anchors):
                                raise
                            raise GradingError(
                                f"{exc} (only {len(placed)} of {len(anchors)} anchors have a valid comparison)"
                            ) from None
                    projections = project_grades(cuts, fit.theta, fit.se)
                    cuts_list = [float(x) for x in cuts.cuts]
                except GradingError as exc:
                    projections, grading_error = None, str(exc)[:600]
            elif scale is not None:
                grading_error = "no anchor essays in the batch: grades need anchors of at least 2 grades"
            # by the score as published (6 decimals), ties by input order: a batch restored
            # from a snapshot fits by another path and may differ below that
            order = np.lexsort((np.arange(n), -np.round(fit.theta, 6)))
            rank = np.empty(n, dtype=int)
            rank[order] = np.arange(1, n + 1)
            for i in order:
                e = self.essays[i]
                # an essay with no valid comparison has only its prior: no grade to project
                p = projections[i] if projections and counts[i] > 0 else None
                essays.append(
                    EssayResult(
                        essay_id=e.essay_id,
                        rank=int(rank[i]),
                        score=round(float(fit.theta[i]), 6),
                        se=round(float(fit.se[i]), 6),
                        infit=_finite(fit.infit[i]),
                        outfit=_finite(fit.outfit[i]),
                        comparisons=int(counts[i]),
                        wins=int(wins[i]),
                        is_anchor=e.anchor_grade is not None,
                        anchor_grade=e.anchor_grade,
                        projected_grade=p.grade if p else None,
                        grade_probabilities={k: round(v, 6) for k, v in p.probabilities.items()} if p else None,
                    )
                )
        missing = self.opened.expected_essays - len(self.essays)
        unjudged = any(e.comparisons == 0 for e in essays)  # e.g. the judge refused every pair with it
        if n_valid == 0 or n < 2:
            status = BatchStatus.FAILED
        elif missing > 0 or reason in ("too_many_errors", "internal_error") or unjudged:
            status = BatchStatus.PARTIAL
        else:
            status = BatchStatus.COMPLETED
        usage = self._usage_list()
        cost = round(sum(u.cost_usd for u in usage), 8)
        duration = max(0.0, (at - self.opened.occurred_at).total_seconds())
        base = dict(batch_id=self.batch_id, correlation_id=self.opened.correlation_id, occurred_at=at)
        result = AssessmentResult(
            event_id=AssessmentResult.id_for(self.batch_id),
            status=status,
            stop_reason=reason,
            essays=essays,
            grade_scale=scale.name if scale else None,
            grade_cut_points=cuts_list,
            reliability_ssr=_finite(fit.ssr) if fit is not None and n_valid else None,
            position_effect=_finite(fit.delta) if fit is not None and n_valid else None,
            position_effect_se=_finite(fit.delta_se) if fit is not None and n_valid else None,
            comparisons_valid=n_valid,
            comparisons_errored=n_err,
            errors_by_kind=dict(sorted(self.errors_by_kind.items())),
            last_error=self.last_error,
            grading_error=grading_error,
            completion_target=completion_target(n, self._rule()) if n >= 2 else 0,
            duration_s=round(duration, 6),
            cost_usd=cost,
            usage=usage,
            strays=self.strays,
            duplicates=self.duplicates,
            callback_topic=self.opened.callback_topic,
            **base,  # type: ignore[arg-type]
        )
        out: list[Outbound] = [result]
        if usage:
            out.append(ResourceUsage(event_id=ResourceUsage.id_for(self.batch_id), usage=usage, **base))  # type: ignore[arg-type]
        # the tombstone only counts strays (the open, with its assignment, is not kept either)
        self.result_sent = True
        self.opened = None
        self._drop_working_state()
        return out

    def _drop_working_state(self) -> None:
        """Forget what only a running batch needs, derived caches included: the caches hold
        the essays (texts) and the open event (its assignment), which a 7-day tombstone must
        not keep in memory."""
        self.essays, self.comps, self._fit, self._issued = [], [], None, None
        self.valid_order, self._valid, self._counts, self._flying = [], _ValidColumns(), None, {}
        self._fixed_cache = self._cap = self._priors_cache = None

    def _usage_list(self) -> list[ModelUsage]:
        return [
            ModelUsage(
                provider=p, model=m, calls=int(u[0]),
                tokens=TokenUsage(input=int(u[1]), output=int(u[2]), cache_read=int(u[3]), cache_write=int(u[4])),
                cost_usd=round(u[5], 8),
            )
            for (p, m), u in sorted(self.usage.items())
        ]

    def _add_usage(self, j: Judgement) -> None:
        u = self.usage.setdefault((j.provider, j.model), [0, 0, 0, 0, 0, 0.0])
        t = j.tokens
        u[0] += 1
        u[1] += t.input
        u[2] += t.output
        u[3] += t.cache_read
        u[4] += t.cache_write
        u[5] += j.cost_usd

    def _scale(self, opened: BatchOpened | None) -> GradeScale | None:
        spec = opened.grade_scale if opened else None
        if spec is None:
            return None
        if isinstance(spec, GradeScaleSpec):
            return custom_scale(spec.name, spec.grades, spec.below_lowest, spec.priors)
        return get_scale(spec)

    def crashed(self, exc: BaseException, event: Inbound | None, now: datetime) -> list[Outbound]:
        """The machine raised on `event` (or on a timer): a bug or an input the checks let
        through. Dead-letter the event with the error, and end an open batch as failed with
        what it has (else a restart would replay the event and crash again, and the batch
        would never get its one result); essays of a batch not yet open are dead-lettered too."""
        error = f"internal error: {type(exc).__name__}: {exc}"[:600]
        out: list[Outbound] = [self._dead(event, error)] if event is not None else []
        if self._accepted(event):
            out.insert(0, event)  # taken in before the error: its row is what the result's refer to
            if isinstance(event, BatchOpened):  # and the early essays it took in with it
                out[1:1] = [e for e in self._taking_in if self._accepted(e)]
        self._taking_in = []
        if self.opened is None:
            out += [self._dead(e, error) for e in self.early if e is not event]
            self.early, self.early_since = [], None
            return out
        if self.result_sent:
            return out
        self.last_error = error
        try:
            done = self._finish("internal_error", now)
        except Exception:  # noqa: BLE001 - the state itself is broken: report what cannot fail
            self._drop_working_state()
            done = [self._bare_failure(error, now, self.opened.correlation_id, self.opened.callback_topic)]
        return out + done

    def _accepted(self, event: Inbound | None) -> bool:
        if isinstance(event, BatchOpened):
            return self.opened is event
        if isinstance(event, EssaySubmitted):
            return any(e.essay_id == event.essay_id and e.text == event.text for e in self.essays)
        return False

    def _bare_failure(
        self, error: str, now: datetime, correlation_id: str | None, callback_topic: str | None,
        stop_reason: str = "internal_error",
    ) -> AssessmentResult:
        """The batch's one result when its state cannot give more: failed, no essays."""
        self.phase, self.stop, self.done_at, self.result_sent = "done", stop_reason, now, True
        return AssessmentResult(
            event_id=AssessmentResult.id_for(self.batch_id), batch_id=self.batch_id,
            correlation_id=correlation_id, status=BatchStatus.FAILED, stop_reason=stop_reason,
            essays=[], last_error=error, completion_target=0, duration_s=0.0, comparisons_valid=0,
            comparisons_errored=0, occurred_at=self._event_at or now, callback_topic=callback_topic,
        )

    @classmethod
    def unreadable(cls, snap: dict, exc: Exception, now: datetime) -> tuple[BatchMachine, list[Outbound]]:
        """A snapshot this version cannot restore (written by an older one whose schema let
        in what this one refuses): the batch ends now, failed, with its one result, and its
        early essays are dead-lettered with their original bytes, instead of the flow (every
        batch) failing to start."""
        m = cls(str(snap.get("batch_id") or ""))
        error = f"internal error: the batch's saved state could not be read: {type(exc).__name__}: {exc}"[:600]
        out: list[Outbound] = [
            DeadLetter.create(m.batch_id, error, source="assessment", original=str(raw).encode(),
                              original_event_type="essay.submitted")
            for raw in snap.get("early") or ()
        ]
        if snap.get("opened") and snap.get("phase") != "done":
            try:
                opened = json.loads(snap["opened"])
                correlation = opened.get("correlation_id")
            except (TypeError, ValueError, AttributeError):
                correlation = None
            if not (isinstance(correlation, str) and 0 < len(correlation) <= 200):
                correlation = None
            m.last_error = error
            m._event_at = _saved_time(snap)  # not the restart's: a replay repeats the result
            out.append(m._bare_failure(error, now, correlation, None))
        return m, out

    def _dead(self, ev: Inbound, reason: str) -> DeadLetter:
        return DeadLetter.create(
            self.batch_id, reason, source="assessment", original=ev.to_json(),
            original_event_type=ev.event_type, occurred_at=ev.occurred_at,
        )

    # ---- snapshot -----------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Everything needed to resume, nothing derivable (the fit is recomputed)."""
        done = self.phase == "done"
        return {
            "v": SNAPSHOT_VERSION,
            "batch_id": self.batch_id,
            "phase": self.phase,
            "opened": None if done or self.opened is None else self.opened.model_dump_json(),
            "essays": [] if done else [
                (e.essay_id, e.text, e.anchor_grade, e.anchor_value, e.anchor_value_se) for e in self.essays
            ],
            "early": [e.model_dump_json() for e in self.early],
            "early_since": self.early_since.isoformat() if self.early_since else None,
            "last_error": self.last_error,
            "rejected": self.rejected,
            "comps": [] if done else [
                (c.first, c.second, c.attempt, c.deadline, c.state, c.first_won, c.failed_kind)
                for c in self.comps
            ],
            "order": [] if done else self.valid_order,
            "fit_n": self.fit_n,
            "errors": dict(self.errors_by_kind),
            "usage": [[p, m, *u] for (p, m), u in self.usage.items()],
            "strays": self.strays,
            "duplicates": self.duplicates,
            "last_at": self.last_at.isoformat() if self.last_at else None,
            "opened_at": self.opened_at.isoformat() if self.opened_at and not done else None,
            "done_at": self.done_at.isoformat() if self.done_at else None,
            "stop": self.stop,
        }

    @classmethod
    def restore(cls, snap: dict) -> BatchMachine:
        if snap.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported batch snapshot version {snap.get('v')!r}")
        m = cls(snap["batch_id"])
        m.phase = snap["phase"]
        if snap["opened"]:
            m.opened = BatchOpened.model_validate_json(snap["opened"])
            # Snapshots from before it was kept: the producer's time, as it was then.
            at = snap.get("opened_at")
            m.opened_at = datetime.fromisoformat(at) if at else m.opened.occurred_at
        m.essays = [Essay(*e) for e in snap["essays"]]
        m.early = [EssaySubmitted.model_validate_json(e) for e in snap["early"]]
        since = snap.get("early_since")  # absent in snapshots before it was kept
        if since:
            m.early_since = datetime.fromisoformat(since)
        elif m.early:  # a snapshot from before the wait was kept: it starts at the restore
            m.early_since = datetime.now(UTC)
        m.last_error = snap.get("last_error")
        m.rejected = snap["rejected"]
        m.comps = [Comparison(*c) for c in snap["comps"]]
        for seq in snap["order"]:
            m._record_valid(seq, m.comps[seq])
        m.fit_n = snap["fit_n"]
        m._flying = dict.fromkeys(seq for seq, c in enumerate(m.comps) if c.state == FLIGHT)
        m._in_flight = len(m._flying)
        m._n_error = sum(1 for c in m.comps if c.state == ERROR)
        m._n_lasting = sum(1 for c in m.comps if c.lasting)
        m.errors_by_kind = Counter(snap["errors"])
        m.usage = {(u[0], u[1]): list(u[2:]) for u in snap["usage"]}
        m.strays, m.duplicates = snap["strays"], snap["duplicates"]
        m.last_at = datetime.fromisoformat(snap["last_at"]) if snap["last_at"] else None
        m.done_at = datetime.fromisoformat(snap["done_at"]) if snap["done_at"] else None
        m.stop = snap["stop"]
        m.result_sent = m.phase == "done"
        return m


def _saved_time(snap: dict) -> datetime | None:
    """The latest time an unreadable snapshot still tells (its last judgement, else when
    the batch was seen to open), if any can be read."""
    for key in ("last_at", "opened_at"):
        try:
            at = datetime.fromisoformat(snap[key])
        except (KeyError, TypeError, ValueError):
            continue
        if at.tzinfo is not None:
            return at
    return None


def _finite(x: float) -> float | None:
    x = float(x)
    return round(x, 6) if np.isfinite(x) else None
