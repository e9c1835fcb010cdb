"""The real SDK clients (anthropic, openai) against the fake provider: success, retries,
no-retry errors, invalid output, max_tokens, bundles, batch APIs, keys and base URLs."""

from __future__ import annotations

import logging
import time

import pytest
from judge_helpers import TEST_KEY, base_url, judge_all, make_judge, request, run
from prometheus_client import generate_latest

from judges.prices import cost_usd
from judges.registry import build_judge
from schemas import ErrorKind
from telemetry.metrics import LLM_CALLS, LLM_RETRIES

PROVIDERS = ["anthropic", "openai"]
MODEL = {"anthropic": "claude-haiku-4-5", "openai": "gpt-5.1"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_success_follows_the_hidden_quality_and_is_priced(fake, provider):
    judge = make_judge(fake, provider)
    reqs = [request(0, "[q=3] short", "[q=8] long"), request(1, "[q=9] one", "[q=2] two")]
    j0, j1 = run(judge_all(judge, reqs))
    assert (j0.winner, j1.winner) == ("B", "A")
    assert (j0.essay_a_id, j0.essay_b_id) == ("a0", "b0")
    assert j0.provider == provider and j0.model == MODEL[provider]
    assert j0.tokens.input + j0.tokens.cache_read > 0 and j0.tokens.output > 0
    assert j0.cost_usd == pytest.approx(cost_usd(MODEL[provider], j0.tokens))
    assert j0.cost_usd > 0 and j0.latency_ms > 0
    assert len(j0.prompt_sha256) == 64 and j0.prompt_sha256 != j1.prompt_sha256
    assert 0 <= j0.confidence <= 1 and j0.justification
    assert fake.stats.requests == 2


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault,reason", [("529", "overloaded"), ("500", "server_error"), ("429", "rate_limited")])
def test_retryable_faults_are_retried(fake, provider, fault, reason):
    before = LLM_RETRIES.labels(provider, MODEL[provider], reason)._value.get()
    judge = make_judge(fake, provider)
    started = time.monotonic()
    (j,) = run(judge_all(judge, [request(0, f"[q=1] [fault={fault}:2]", "[q=2]")]))
    assert j.winner == "B", j.error_detail
    assert fake.stats.requests == 3  # two faults, then success: our retries only (SDK retries are off)
    assert LLM_RETRIES.labels(provider, MODEL[provider], reason)._value.get() - before == 2
    if fault == "429":  # the fake says Retry-After: 1, and we honour it
        assert time.monotonic() - started >= 2.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timeouts_and_connection_errors_are_retried(fake, provider):
    fake.config.hang_s = 3.0
    judge = make_judge(fake, provider, timeout_s=0.3)
    (j,) = run(judge_all(judge, [request(0, "[q=5] [fault=timeout:1]", "[q=2]")]))
    assert j.winner == "A", j.error_detail
    assert fake.stats.requests == 2
    # nothing listening: connection errors, retried, then an error judgement of that kind
    dead = make_judge(
        fake, provider, base_url="http://127.0.0.1:9" + ("/v1" if provider == "openai" else ""), max_attempts=3
    )
    (e,) = run(judge_all(dead, [request(1)]))
    assert e.winner == "error" and e.error_kind == ErrorKind.CONNECTION


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "fault,kind", [("400", ErrorKind.BAD_REQUEST), ("401", ErrorKind.AUTH), ("404", ErrorKind.NOT_FOUND)]
)
def test_client_errors_are_not_retried(fake, provider, fault, kind):
    before = LLM_CALLS.labels(provider, MODEL[provider], kind.value)._value.get()
    judge = make_judge(fake, provider)
    (j,) = run(judge_all(judge, [request(0, f"[q=1] [fault={fault}]", "[q=2]")]))
    assert j.winner == "error" and j.error_kind == kind
    assert fake.stats.requests == 1
    assert LLM_CALLS.labels(provider, MODEL[provider], kind.value)._value.get() - before == 1  # counted


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_output_gets_one_retry_then_an_error(fake, provider):
    judge = make_judge(fake, provider)
    once, always = run(
        judge_all(
            judge, [request(0, "[q=9] [fault=malformed:1]", "[q=1]"), request(1, "[q=9] [fault=malformed]", "[q=1]")]
        )
    )
    assert once.winner == "A"
    assert always.winner == "error" and always.error_kind == ErrorKind.INVALID_OUTPUT
    assert fake.stats.requests == 4  # 2 + 2: exactly one retry each
    assert always.tokens.output > 0 and always.cost_usd > 0  # failed attempts still cost


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_tokens_stop_and_refusal_are_error_kinds(fake, provider):
    judge = make_judge(fake, provider)
    cut, refused = run(
        judge_all(
            judge, [request(0, "[q=9] [fault=max_tokens]", "[q=1]"), request(1, "[q=9] [fault=refusal]", "[q=1]")]
        )
    )
    assert cut.winner == "error" and cut.error_kind == ErrorKind.MAX_TOKENS
    assert refused.winner == "error" and refused.error_kind == ErrorKind.REFUSED
    assert fake.stats.requests == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bundle_partial_failure_fails_only_the_bad_item(fake, provider):
    judge = make_judge(fake, provider, mode="bundle", bundle_size=4, bundle_window_ms=200, invalid_output_retries=0)
    reqs = [request(i, f"[q={i}]", "[q=1.5]") for i in range(3)] + [request(3, "[q=9] [fault=item_malformed]", "[q=1]")]
    results = run(judge_all(judge, reqs))
    assert [r.winner for r in results[:3]] == ["B", "B", "A"]
    assert results[3].winner == "error" and results[3].error_kind == ErrorKind.INVALID_OUTPUT
    assert fake.stats.requests == 1  # one call for all four
    body = fake.recent[-1]
    text = str(body)
    assert all(f"<<<COMPARISON {n}>>>" in text for n in "1234")
    # tokens are shared out among the items
    assert all(r.tokens.output > 0 for r in results[:3])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bundle_bad_item_is_retried_alone(fake, provider):
    judge = make_judge(fake, provider, mode="bundle", bundle_size=4, bundle_window_ms=200)
    reqs = [request(i, f"[q={i}]", "[q=1.5]") for i in range(3)] + [request(3, "[q=9] [fault=item_malformed]", "[q=1]")]
    results = run(judge_all(judge, reqs))
    assert [r.winner for r in results] == ["B", "B", "A", "A"]
    assert fake.stats.requests == 2  # the bundle, then the bad item on its own


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batch_api_round_trip_at_half_price(fake, provider):
    judge = make_judge(fake, provider, mode="batch", batch_window_s=0.1, batch_poll_s=0.1)
    reqs = [request(i, f"[q={i}]", "[q=2.5]") for i in range(5)]
    results = run(judge_all(judge, reqs))
    assert [r.winner for r in results] == ["B", "B", "B", "A", "A"]
    assert fake.stats.batches == 1 and fake.stats.requests == 0  # no synchronous calls
    r = results[0]
    assert r.cost_usd == pytest.approx(cost_usd(MODEL[provider], r.tokens) / 2)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batch_api_errored_item_is_resubmitted(fake, provider):
    judge = make_judge(fake, provider, mode="batch", batch_window_s=0.1, batch_poll_s=0.1, backoff_base_s=0.01)
    results = run(judge_all(judge, [request(0, "[q=1] [fault=500:1]", "[q=2]"), request(1, "[q=3]", "[q=2]")]))
    assert [r.winner for r in results] == ["B", "A"]
    assert fake.stats.batches == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_api_key_in_logs_output_or_events(fake, provider, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    fake.config.api_key = "some-other-key"  # every call is refused: 401
    judge = make_judge(fake, provider)
    (j,) = run(judge_all(judge, [request(0)]))
    assert j.error_kind == ErrorKind.AUTH
    fake.config.api_key = None
    judge = make_judge(fake, provider)
    ok, bad = run(judge_all(judge, [request(1), request(2, "[fault=400]")]))
    assert ok.is_valid and bad.error_kind == ErrorKind.BAD_REQUEST
    logging.getLogger("test").info("judge %r", judge)
    out, err = capsys.readouterr()
    assert caplog.text  # the SDKs did log at debug level
    metrics = generate_latest().decode()
    texts = (
        caplog.text,
        out,
        err,
        j.model_dump_json(),
        ok.model_dump_json(),
        bad.model_dump_json(),
        repr(judge),
        metrics,
    )
    for text in texts:
        assert TEST_KEY not in text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_missing_key_is_a_readable_error(monkeypatch, provider):
    env = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}[provider]
    monkeypatch.delenv(env, raising=False)
    monkeypatch.delenv(env + "_FILE", raising=False)
    with pytest.raises(ValueError, match=f"no API key.*{env}"):
        build_judge(provider)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_key_file_and_sdk_base_url_env(fake, provider, monkeypatch, tmp_path):
    env = {"anthropic": "ANTHROPIC", "openai": "OPENAI"}[provider]
    key_file = tmp_path / "key"
    key_file.write_text(TEST_KEY + "\n")
    monkeypatch.delenv(f"{env}_API_KEY", raising=False)
    monkeypatch.setenv(f"{env}_API_KEY_FILE", str(key_file))
    monkeypatch.setenv(f"{env}_BASE_URL", base_url(fake, provider))  # the SDK's own variable
    monkeypatch.setenv(f"CJFLOW_{env}_MODEL", "my-model")
    fake.config.api_key = TEST_KEY
    judge = build_judge(provider)
    (j,) = run(judge_all(judge, [request(0)]))
    assert j.winner == "B" and j.model == "my-model"
    assert fake.recent[-1]["model"] == "my-model"
