"""Bundles that fail as a whole for a reason about one pair (a refusal, a 400, max_tokens, an
answer unreadable as a whole): the items are judged one by one, so that only the guilty pair
carries the error (the batch machine counts such a failure against the pair, for good).
Other failures (rate limits, 5xx, auth) still apply to every item."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest
from judge_helpers import judge_all, make_judge, request, run

from judges.bundle import BundlingJudge
from judges.errors import ProviderError
from judges.prices import cost_usd
from judges.retry import add_usage
from schemas import ErrorKind, Judgement, TokenUsage

PROVIDERS = ["anthropic", "openai"]
FAULTS = {"refusal": ErrorKind.REFUSED, "400": ErrorKind.BAD_REQUEST, "max_tokens": ErrorKind.MAX_TOKENS}


def _layers(judge):
    """(BundlingJudge, LimitedJudge, provider client) of a bundle-mode provider judge."""
    bundling = judge.inner.inner
    assert isinstance(bundling, BundlingJudge)
    return bundling, bundling.inner, bundling.inner.inner


def _spy(judge) -> tuple[list[int], list[TokenUsage]]:
    """Count the limiter's admissions and record every call's usage (failed ones too)."""
    _, limited, client = _layers(judge)
    slots: list[int] = []
    usages: list[TokenUsage] = []
    slot = limited.limiter.slot

    @asynccontextmanager
    async def counting_slot(estimate):
        slots.append(estimate)
        async with slot(estimate) as permit:
            yield permit

    parse = client.parse_response

    def recording_parse(response):
        try:
            output, usage = parse(response)
        except ProviderError as exc:
            if exc.usage:
                usages.append(exc.usage)
            raise
        usages.append(usage)
        return output, usage

    limited.limiter.slot = counting_slot
    client.parse_response = recording_parse
    return slots, usages


def _total(usages) -> TokenUsage:
    total = TokenUsage()
    for u in usages:
        total = add_usage(total, u)
    return total


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_one_bad_pair_fails_alone(fake, provider, fault):
    judge = make_judge(fake, provider, mode="bundle", bundle_size=8, bundle_window_ms=200)
    slots, usages = _spy(judge)
    reqs = [request(i, f"[q={i}]", "[q=2.5]") for i in range(7)]
    reqs.append(request(7, f"[q=1] [fault={fault}]", "[q=2]"))
    results = run(judge_all(judge, reqs))
    assert [r.winner for r in results[:7]] == ["B", "B", "B", "A", "A", "A", "A"]
    guilty = results[7]
    assert guilty.winner == "error" and guilty.error_kind == FAULTS[fault]
    assert sum(not r.is_valid for r in results) == 1
    # the bundle, then each comparison on its own: every call admitted by the limiter
    assert fake.stats.requests == 9
    assert len(slots) == 9
    # every token the provider reported is on exactly one judgement, and priced
    assert _total(r.tokens for r in results) == _total(usages)
    for r in results:
        assert r.cost_usd == pytest.approx(cost_usd(r.model, r.tokens))
    if fault != "400":  # a refused or cut bundle answer still used tokens: shared out
        assert all(r.cost_usd for r in results)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_answer_unreadable_as_a_whole_fails_only_its_cause(fake, provider):
    judge = make_judge(fake, provider, mode="bundle", bundle_size=4, bundle_window_ms=200, invalid_output_retries=0)
    _, usages = _spy(judge)
    reqs = [request(i, f"[q={i}]", "[q=1.5]") for i in range(3)] + [request(3, "[q=9] [fault=malformed]", "[q=1]")]
    results = run(judge_all(judge, reqs))
    assert [r.winner for r in results[:3]] == ["B", "B", "A"]
    assert results[3].winner == "error" and results[3].error_kind == ErrorKind.INVALID_OUTPUT
    assert fake.stats.requests == 5
    assert _total(r.tokens for r in results) == _total(usages)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_failures_not_about_a_pair_still_apply_to_all(fake, provider):
    judge = make_judge(fake, provider, mode="bundle", bundle_size=4, bundle_window_ms=200)
    reqs = [request(i, f"[q={i}]", "[q=1.5]") for i in range(3)] + [request(3, "[q=9] [fault=401]", "[q=1]")]
    results = run(judge_all(judge, reqs))
    assert [r.error_kind for r in results] == [ErrorKind.AUTH] * 4
    assert fake.stats.requests == 1  # nothing judged again one by one


# ---- the bundler alone, with a scripted inner judge ------------------------------------------


class Scripted:
    provider, model = "stub", "stub-model"

    def __init__(self, bundle_error: ProviderError, bad: str = "cmp-2"):
        self.bundle_error, self.bad = bundle_error, bad
        self.single: list[str] = []
        self.many = 0

    async def judge(self, request):
        self.single.append(request.comparison_id)
        if request.comparison_id == self.bad:
            raise ProviderError(ErrorKind.REFUSED, "no", usage=TokenUsage(input=10, output=1))
        return Judgement.for_request(
            request, winner="A", confidence=0.9, provider=self.provider, model=self.model,
            tokens=TokenUsage(input=10, output=5),
        )  # fmt: skip

    async def judge_many(self, requests):
        self.many += 1
        raise self.bundle_error

    async def aclose(self):
        pass


async def _outcomes(bundler, requests):
    return await asyncio.gather(*(bundler.judge(r) for r in requests), return_exceptions=True)


def test_rejudged_items_carry_their_share_of_the_failed_bundle():
    inner = Scripted(ProviderError(ErrorKind.REFUSED, "refused", usage=TokenUsage(input=80, output=8, cache_read=4)))
    bundler = BundlingJudge(inner, size=4, window_s=10)
    reqs = [request(i) for i in range(4)]
    out = run(_outcomes(bundler, reqs))
    assert inner.many == 1 and sorted(inner.single) == ["cmp-0", "cmp-1", "cmp-2", "cmp-3"]
    share = TokenUsage(input=20, output=2, cache_read=1)
    for i in (0, 1, 3):
        assert isinstance(out[i], Judgement) and out[i].winner == "A"
        assert out[i].tokens == add_usage(TokenUsage(input=10, output=5), share)
    assert isinstance(out[2], ProviderError) and out[2].kind == ErrorKind.REFUSED
    assert out[2].usage == add_usage(TokenUsage(input=10, output=1), share)


@pytest.mark.parametrize("kind", [ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR, ErrorKind.AUTH, ErrorKind.TIMEOUT])
def test_other_kinds_are_copied_to_every_item(kind):
    inner = Scripted(ProviderError(kind, "busy", 2.0, usage=TokenUsage(input=8)))
    bundler = BundlingJudge(inner, size=4, window_s=10)
    out = run(_outcomes(bundler, [request(i) for i in range(4)]))
    assert inner.single == []
    assert all(isinstance(e, ProviderError) and e.kind == kind and e.retry_after == 2.0 for e in out)
    assert [e.usage for e in out] == [TokenUsage(input=2)] * 4


def test_items_whose_callers_are_gone_are_not_rejudged():
    """Callers cancelled as overdue while the bundle was out: re-judging them would be paid
    for and thrown away."""

    class Slow(Scripted):
        async def judge_many(self, requests):
            self.many += 1
            await asyncio.sleep(0.2)
            raise self.bundle_error

    async def scenario(inner):
        bundler = BundlingJudge(inner, size=4, window_s=10)
        tasks = [asyncio.create_task(bundler.judge(request(i))) for i in range(4)]
        await asyncio.sleep(0.05)  # the full bundle is out
        for t in tasks[:3]:
            t.cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    inner = Slow(ProviderError(ErrorKind.BAD_REQUEST, "bad", usage=TokenUsage(input=8)), bad="none")
    out = run(scenario(inner))
    assert inner.many == 1 and inner.single == ["cmp-3"]
    assert isinstance(out[3], Judgement) and all(isinstance(o, asyncio.CancelledError) for o in out[:3])
