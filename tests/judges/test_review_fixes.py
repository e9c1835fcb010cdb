"""Review fixes: prices of models whose names extend another's, a 429 whose Retry-After is
neither seconds nor a date, and a 429 that says the account is out of quota. The real SDK
clients against the fake provider, with two extra faults injected by a subclass of it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from judge_helpers import judge_all, make_judge, request, run

from bench.fake_provider import FakeConfig, FakeProvider
from judges import prices
from judges.errors import retry_after_s
from judges.prices import DEFAULT_PRICES, cost_usd, price_for
from schemas import ErrorKind, TokenUsage
from telemetry.metrics import LLM_RETRIES

PROVIDERS = ["anthropic", "openai"]
MODEL = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5.1"}


class _OddFake(FakeProvider):
    """The fake provider plus faults it does not have: `[fault=429soon]` is a 429 with
    `Retry-After: soon`; `[fault=quota]` is OpenAI's 429 insufficient_quota (for Anthropic,
    its 429 with a spend-limit error code); `[fault=billing]` is Anthropic's 402 billing_error."""

    def _inject(self, flavour: str, fault: str, headers: dict[str, str] | None = None) -> tuple[int, dict, Any]:
        if fault not in ("429soon", "quota", "billing"):
            return super()._inject(flavour, fault, headers)
        self.stats.injected[fault] = self.stats.injected.get(fault, 0) + 1
        if fault == "429soon":
            if flavour == "openai":
                error = {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
                return 429, {"retry-after": "soon"}, {"error": error}
            return (
                429,
                {"retry-after": "soon"},
                {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
            )
        if fault == "quota":
            message = "You exceeded your current quota, please check your plan and billing details."
            if flavour == "openai":
                error = {"message": message, "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}
                return 429, {"retry-after": "1"}, {"error": error}
            error = {
                "type": "rate_limit_error",
                "message": message,
                "details": {"error_code": "enforced_spend_limit_reached"},
            }
            return 429, {"retry-after": "1"}, {"type": "error", "error": error}
        error = {"type": "billing_error", "message": "Your credit balance is too low."}
        return 402, {}, {"type": "error", "error": error}


    def _sync_answer(self, flavour: str, body: dict) -> tuple[int, Any]:
        """Batch items: `quota` and `billing` fail as the providers' batch results report it."""
        from bench.fake_provider import _prompt_of

        fault = self._fault_for(_prompt_of(flavour, body)[1])
        if fault == "quota" and flavour == "openai":
            return 429, {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                         "param": None, "code": "insufficient_quota"}
        if fault == "billing" and flavour == "anthropic":
            return 402, {"type": "billing_error", "message": "Your credit balance is too low."}
        return super()._sync_answer(flavour, body)


@pytest.fixture
def odd_fake() -> Iterator[_OddFake]:
    server = _OddFake(FakeConfig(batch_delay_s=0.2)).start()
    yield server
    server.stop()


# ---- prices -----------------------------------------------------------------------------------
def test_a_longer_model_name_is_not_priced_as_its_prefix(caplog):
    nano = price_for("gpt-4.1-nano")
    assert nano is not None and nano != DEFAULT_PRICES["gpt-4.1"]
    assert nano.input < DEFAULT_PRICES["gpt-4.1"].input / 10
    for other in ("gpt-5-pro", "gpt-5.1-codex-mini", "claude-haiku-4-5-turbo"):
        prices._warned.discard(other)
        with caplog.at_level(logging.WARNING, logger="judges.prices"):
            assert price_for(other) is None
        assert f"no price for model {other!r}" in caplog.text  # the missing-price path
        assert cost_usd(other, TokenUsage(input=1000, output=1000)) == 0.0


def test_a_dated_snapshot_gets_its_base_models_price():
    assert price_for("gpt-4.1-2025-04-14") == DEFAULT_PRICES["gpt-4.1"]
    assert price_for("gpt-4.1-nano-2025-04-14") == DEFAULT_PRICES["gpt-4.1-nano"]
    assert price_for("gpt-5-mini-2025-08-07") == DEFAULT_PRICES["gpt-5-mini"]
    assert price_for("claude-haiku-4-5-20251001") == DEFAULT_PRICES["claude-haiku-4-5"]
    assert price_for("claude-sonnet-4-5-20250929") == DEFAULT_PRICES["claude-sonnet-4-5"]
    assert price_for("claude-3-5-haiku-20241022") == DEFAULT_PRICES["claude-3-5-haiku-latest"]
    assert price_for("gpt-5-pro-2025-10-06") is None  # a snapshot of an unpriced model


def test_a_judgement_on_gpt_4_1_nano_costs_what_nano_costs(fake):
    judge = make_judge(fake, "openai", model="gpt-4.1-nano")
    (j,) = run(judge_all(judge, [request(0, "[q=3]", "[q=8]")]))
    assert j.winner == "B" and j.model == "gpt-4.1-nano"
    nano, full = DEFAULT_PRICES["gpt-4.1-nano"], DEFAULT_PRICES["gpt-4.1"]
    t = j.tokens
    expected = (t.input * nano.input + t.output * nano.output + t.cache_read * nano.cache_read) / 1e6
    as_full = (t.input * full.input + t.output * full.output + t.cache_read * full.cache_read) / 1e6
    assert j.cost_usd == pytest.approx(expected) and j.cost_usd < as_full / 10


# ---- Retry-After that is neither seconds nor a date -----------------------------------------
def test_an_unreadable_retry_after_counts_as_absent():
    for value in ("soon", "inf", "nan", "Wed, 32 Oct 2015 07:28:00 GMT", "1 2 3"):
        assert retry_after_s({"retry-after": value}) is None, value
    assert retry_after_s({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date, past


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_429_with_retry_after_soon_is_retried_and_then_succeeds(odd_fake, provider):
    before = LLM_RETRIES.labels(provider, MODEL[provider], "rate_limited")._value.get()
    judge = make_judge(odd_fake, provider)
    limiter = judge.inner.inner.limiter
    (j,) = run(judge_all(judge, [request(0, "[q=1] [fault=429soon:2]", "[q=2]")]))
    assert j.winner == "B" and j.error_kind is None, j.error_detail
    assert odd_fake.stats.injected == {"429soon": 2}
    assert odd_fake.stats.requests == 3  # two 429s, then the answer
    assert LLM_RETRIES.labels(provider, MODEL[provider], "rate_limited")._value.get() - before == 2
    assert limiter._paused_until > 0  # the limiter held calls back (its default pause)


# ---- out of quota -----------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_429_out_of_quota_is_one_auth_error_after_one_call(odd_fake, provider):
    judge = make_judge(odd_fake, provider)
    limiter = judge.inner.inner.limiter
    started = time.monotonic()
    (j,) = run(judge_all(judge, [request(0, "[q=1] [fault=quota]", "[q=2]")]))
    assert j.winner == "error" and j.error_kind == ErrorKind.AUTH
    quota = "insufficient_quota" if provider == "openai" else "enforced_spend_limit_reached"
    assert j.error_detail.startswith(f"HTTP 429 {quota}: the account is out of quota")
    assert odd_fake.stats.requests == 1  # not retried
    assert limiter._paused_until <= time.monotonic()  # and nobody else held back
    assert time.monotonic() - started < 1.0  # no Retry-After wait


def test_an_anthropic_billing_error_is_the_same_auth_error(odd_fake):
    judge = make_judge(odd_fake, "anthropic")
    (j,) = run(judge_all(judge, [request(0, "[q=1] [fault=billing]", "[q=2]")]))
    assert j.winner == "error" and j.error_kind == ErrorKind.AUTH
    assert j.error_detail.startswith("HTTP 402 billing_error: the account is out of quota")
    assert odd_fake.stats.requests == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_out_of_quota_batch_item_is_the_same_auth_error(odd_fake, provider):
    """Through the providers' batch APIs too: not retried as a rate limit or server error."""
    fault = "quota" if provider == "openai" else "billing"
    judge = make_judge(odd_fake, provider, mode="batch", batch_window_s=0.1, batch_poll_s=0.1, backoff_base_s=0.01)
    (j,) = run(judge_all(judge, [request(0, f"[q=1] [fault={fault}]", "[q=2]")]))
    assert j.error_kind == ErrorKind.AUTH and "out of quota" in (j.error_detail or "")
    assert odd_fake.stats.batches == 1  # one batch: the item was not resubmitted


def test_chat_latest_models_keep_their_price():
    assert price_for("gpt-5-chat-latest") == DEFAULT_PRICES["gpt-5"]
    assert price_for("gpt-5.1-chat-latest") == DEFAULT_PRICES["gpt-5.1"]
