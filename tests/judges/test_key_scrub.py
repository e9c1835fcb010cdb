"""The API key never leaves the judge: some proxies echo the key a request presented in
their error message (the fake provider's `[fault=echo_key]`). Such an error must reach no
judgement, log record or error detail with the key in it (judges.errors.scrub)."""

from __future__ import annotations

import logging

import pytest
from judge_helpers import TEST_KEY, judge_all, make_judge, request, run

from judges.batch_api import BatchApiJudge
from schemas import ErrorKind

PROVIDERS = ["anthropic", "openai"]


def _texts_of(records: list[logging.LogRecord]) -> list[str]:
    """Everything a handler could write: the message, its arguments, the traceback."""
    out = []
    for r in records:
        out.append(r.getMessage())
        out.append(repr(r.args))
        if r.exc_info and r.exc_info[1] is not None:
            out.append(logging.Formatter().formatException(r.exc_info))
        if r.exc_text:
            out.append(r.exc_text)
    return out


def _assert_no_key(judgements, records) -> None:
    for j in judgements:
        assert TEST_KEY not in j.model_dump_json(), "the API key is in a judgement"
    leaks = [t for t in _texts_of(records) if TEST_KEY in t]
    assert not leaks, f"the API key is in a log record: {leaks[0][:300]}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_provider_error_that_echoes_the_key_is_scrubbed(fake, provider, caplog):
    judge = make_judge(fake, provider)
    with caplog.at_level(logging.DEBUG):
        (bad, good) = run(judge_all(judge, [request(0, "[q=1] [fault=echo_key]", "[q=2]"), request(1)]))
    assert fake.stats.injected.get("echo_key", 0) >= 1  # the provider did echo the key
    assert bad.error_kind == ErrorKind.BAD_REQUEST and not bad.is_valid
    assert "[redacted]" in (bad.error_detail or ""), bad.error_detail  # the echo got as far as the detail
    assert good.is_valid
    _assert_no_key([bad, good], caplog.records)


def _batch_with_echo(fake, provider, caplog):
    """Batch mode: polling the provider batch fails with the echo (a lasting 400), then so
    does cancelling it; both are logged, and the group's requests fail with that error."""
    fake.config.batch_delay_s = 30.0  # still running when given up on: cancelled
    judge = make_judge(fake, provider, mode="batch", batch_window_s=0.1, batch_poll_s=0.1, backoff_base_s=0.01)
    assert isinstance(judge.inner.inner, BatchApiJudge)
    with caplog.at_level(logging.DEBUG):
        results = run(judge_all(judge, [request(0, "[q=1] [fault=echo_key]", "[q=2]"), request(1)]))
    assert fake.stats.injected.get("echo_key", 0) >= 2  # the poll and the cancel
    assert all(not r.is_valid for r in results)
    return results


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_batch_error_that_echoes_the_key_is_scrubbed_in_the_logs(fake, provider, caplog):
    _batch_with_echo(fake, provider, caplog)
    logged = "\n".join(_texts_of(caplog.records))
    assert "giving up on provider batch" in logged and "could not cancel provider batch" in logged
    assert "[redacted]" in logged
    _assert_no_key([], caplog.records)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_batch_error_that_echoes_the_key_is_scrubbed_in_the_judgements(fake, provider, caplog):
    results = _batch_with_echo(fake, provider, caplog)
    _assert_no_key(results, [])
