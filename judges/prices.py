"""Prices per model (US dollars per million tokens: input, output, cache read, cache write)
and the cost of a call. Override or extend the table with `CJFLOW_PRICES_FILE` (JSON:
{"model": {"input": 1.0, "output": 5.0, "cache_read": 0.1, "cache_write": 1.25}}).
"""

from __future__ import annotations

import json
import logging
import os
import re
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas import TokenUsage

log = logging.getLogger(__name__)
BATCH_DISCOUNT = 0.5  # both providers' batch APIs cost half


class Price(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float = Field(default=0.0, ge=0)
    cache_write: float = Field(default=0.0, ge=0)


# List prices (per million tokens) as published by the providers; check before relying on them.
DEFAULT_PRICES: dict[str, Price] = {
    "claude-haiku-4-5": Price(input=1.00, output=5.00, cache_read=0.10, cache_write=1.25),
    "claude-sonnet-4-5": Price(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75),
    "claude-opus-4-5": Price(input=5.00, output=25.00, cache_read=0.50, cache_write=6.25),
    "claude-3-5-haiku-latest": Price(input=0.80, output=4.00, cache_read=0.08, cache_write=1.00),
    "gpt-5.1": Price(input=1.25, output=10.00, cache_read=0.125, cache_write=0.0),
    "gpt-5": Price(input=1.25, output=10.00, cache_read=0.125, cache_write=0.0),
    # ChatGPT's model behind the API, priced as the model it tracks
    "gpt-5-chat-latest": Price(input=1.25, output=10.00, cache_read=0.125, cache_write=0.0),
    "gpt-5.1-chat-latest": Price(input=1.25, output=10.00, cache_read=0.125, cache_write=0.0),
    "gpt-5-mini": Price(input=0.25, output=2.00, cache_read=0.025, cache_write=0.0),
    "gpt-5-nano": Price(input=0.05, output=0.40, cache_read=0.005, cache_write=0.0),
    "gpt-4.1": Price(input=2.00, output=8.00, cache_read=0.50, cache_write=0.0),
    "gpt-4.1-mini": Price(input=0.40, output=1.60, cache_read=0.10, cache_write=0.0),
    "gpt-4.1-nano": Price(input=0.10, output=0.40, cache_read=0.025, cache_write=0.0),
    "gpt-4o-mini": Price(input=0.15, output=0.60, cache_read=0.075, cache_write=0.0),
}


@lru_cache(maxsize=1)
def price_table() -> dict[str, Price]:
    table = dict(DEFAULT_PRICES)
    path = os.environ.get("CJFLOW_PRICES_FILE")
    if path:
        raw = json.loads(Path(path).read_text())
        table.update({model: Price.model_validate(p) for model, p in raw.items()})
    return table


_warned: set[str] = set()


# A snapshot suffix: Anthropic's "-20251001", OpenAI's "-2025-04-14", or a "-latest" alias.
# Only these fall back to the base name: "gpt-4.1-nano" or "gpt-5-pro" are other models.
_SNAPSHOT = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest)$")


def price_for(model: str) -> Price | None:
    """The model's price. A dated snapshot falls back to its alias ("claude-haiku-4-5-20251001"
    to "claude-haiku-4-5", "gpt-4.1-2025-04-14" to "gpt-4.1"), or to the alias's "-latest"
    name ("claude-3-5-haiku-20241022" to "claude-3-5-haiku-latest"); any other unknown name
    has no price (a warning, and a cost of 0)."""
    table = price_table()
    if model in table:
        return table[model]
    snapshot = _SNAPSHOT.search(model)
    if snapshot:
        base = model[: snapshot.start()]
        for name in (base, base + "-latest"):
            if name in table and name != model:
                return table[name]
    if model not in _warned:
        _warned.add(model)
        log.warning("no price for model %r: its cost is recorded as 0 (set CJFLOW_PRICES_FILE)", model)
    return None


def cost_usd(model: str, tokens: TokenUsage, batch: bool = False) -> float:
    """Cost of `tokens` on `model`; `input` counts uncached input tokens only."""
    price = price_for(model)
    if price is None:
        return 0.0
    total = (
        tokens.input * price.input
        + tokens.output * price.output
        + tokens.cache_read * price.cache_read
        + tokens.cache_write * price.cache_write
    ) / 1_000_000
    return round(total * (BATCH_DISCOUNT if batch else 1.0), 8)
