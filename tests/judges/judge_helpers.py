"""Helpers for the judge tests: requests, judges, a fake provider in a thread or a process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bench.fake_provider import FakeConfig, FakeProvider
from bench.judge_throughput import spawn_fake
from judges.providers import build_provider_judge
from schemas import ComparisonRequested, utc_now
from schemas.events import PresentedEssay

ROOT = Path(__file__).resolve().parents[2]
TEST_KEY = "sk-test-9f8e7d6c5b4a39281706"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    server = FakeProvider(FakeConfig(batch_delay_s=0.2)).start()
    yield server
    server.stop()


def base_url(fake: FakeProvider, provider: str) -> str:
    return fake.url if provider == "anthropic" else fake.openai_url


def make_judge(fake: FakeProvider, provider: str, **overrides: object):
    settings: dict[str, object] = {
        "base_url": base_url(fake, provider),
        "backoff_base_s": 0.05,
        "timeout_s": 5.0,
        "max_concurrency": 64,
    }
    settings.update(overrides)
    return build_provider_judge(provider, api_key=TEST_KEY, **settings)


def request(i: int = 0, a: str = "Essay A [q=3]", b: str = "Essay B [q=7]", **kw: object) -> ComparisonRequested:
    return ComparisonRequested.create(
        "batch-1",
        f"cmp-{i}",
        1,
        essay_a=PresentedEssay(essay_id=f"a{i}", text=a),
        essay_b=PresentedEssay(essay_id=f"b{i}", text=b),
        assignment="Write about your favourite season.",
        deadline=utc_now() + timedelta(minutes=5),
        **kw,
    )


def run(coro):
    return asyncio.run(coro)


async def judge_all(judge, requests):
    try:
        return await asyncio.gather(*(judge.judge(r) for r in requests))
    finally:
        await judge.aclose()


@pytest.fixture
def fake_process() -> Iterator[str]:
    """A fake provider in its own process (its CPU apart from the client's): base URL."""
    try:
        proc, url = spawn_fake(["--latency-ms", "2000"])
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield url
    proc.terminate()
    proc.wait(5)
