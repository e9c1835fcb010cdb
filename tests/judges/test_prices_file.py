"""CJFLOW_PRICES_FILE: a JSON file of prices per million tokens that adds models to the
built-in table or overrides their prices; costs (also of real calls) come from it."""

from __future__ import annotations

import json

import pydantic
import pytest
from judge_helpers import judge_all, make_judge, request, run

from judges import prices
from judges.prices import DEFAULT_PRICES, Price, cost_usd, price_for
from schemas import TokenUsage

MILLION = TokenUsage(input=1_000_000, output=1_000_000, cache_read=1_000_000, cache_write=1_000_000)


@pytest.fixture
def prices_file(tmp_path, monkeypatch):
    """Write a prices file and point CJFLOW_PRICES_FILE at it; price_table is cached, so it
    is cleared before (the file is read) and after (no other test sees it)."""
    path = tmp_path / "prices.json"

    def use(table: dict) -> None:
        path.write_text(json.dumps(table))
        monkeypatch.setenv("CJFLOW_PRICES_FILE", str(path))
        prices.price_table.cache_clear()

    yield use
    monkeypatch.delenv("CJFLOW_PRICES_FILE", raising=False)
    prices.price_table.cache_clear()


def test_a_prices_file_adds_and_overrides_models(prices_file):
    prices._warned.discard("my-local-model")
    assert price_for("my-local-model") is None  # not priced without the file
    prices_file({
        "my-local-model": {"input": 2.0, "output": 3.0, "cache_read": 0.5, "cache_write": 4.0},
        "gpt-4.1": {"input": 20.0, "output": 80.0},
    })
    assert price_for("my-local-model") == Price(input=2.0, output=3.0, cache_read=0.5, cache_write=4.0)
    assert cost_usd("my-local-model", MILLION) == pytest.approx(2.0 + 3.0 + 0.5 + 4.0)
    assert cost_usd("my-local-model", MILLION, batch=True) == pytest.approx((2.0 + 3.0 + 0.5 + 4.0) / 2)
    # overridden: the file's price (cache prices default to 0), also for its dated snapshots
    assert cost_usd("gpt-4.1", TokenUsage(input=1_000_000, output=500_000)) == pytest.approx(20.0 + 40.0)
    assert price_for("gpt-4.1-2025-04-14") == Price(input=20.0, output=80.0)
    # the rest of the table is untouched
    assert price_for("claude-haiku-4-5") == DEFAULT_PRICES["claude-haiku-4-5"]


def test_a_prices_file_with_a_bad_price_is_refused(prices_file):
    prices_file({"my-local-model": {"input": -1.0, "output": 3.0}})
    with pytest.raises(pydantic.ValidationError):
        price_for("my-local-model")
    prices_file({"my-local-model": {"input": 1.0, "output": 3.0, "per_request": 0.01}})
    with pytest.raises(pydantic.ValidationError):
        price_for("my-local-model")


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_calls_cost_comes_from_the_prices_file(fake, provider, prices_file):
    prices_file({"my-local-model": {"input": 7.0, "output": 11.0, "cache_read": 1.0, "cache_write": 9.0}})
    judge = make_judge(fake, provider, model="my-local-model")
    (j,) = run(judge_all(judge, [request(0)]))
    assert j.is_valid and j.model == "my-local-model"
    t = j.tokens
    expected = (t.input * 7.0 + t.output * 11.0 + t.cache_read * 1.0 + t.cache_write * 9.0) / 1_000_000
    assert j.cost_usd > 0 and j.cost_usd == pytest.approx(expected)
