"""Provider failures by meaning: which error kinds are worth a retry, and the error a
provider client raises (a `JudgeError` with the HTTP status, rate-limit headers and any
tokens the failed attempt still used)."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

from judges.base import JudgeError
from schemas import ErrorKind, TokenUsage

RETRYABLE = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT, ErrorKind.CONNECTION}
)
# Retried a bounded number of times of their own (a fresh sample may follow the contract).
RETRY_ONCE = frozenset({ErrorKind.INVALID_OUTPUT})
# Refused at the provider's door: the attempt used none of the quota.
NOT_ADMITTED = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED})

# Codes saying the account may not spend more: out of quota or credit, a spend limit
# reached (OpenAI's `insufficient_quota` comes as a 429, as do two of Anthropic's spend
# limits). Waiting does not help, someone has to act on the account: so not `rate_limited`
# (retried, pausing every call) but `auth`, which nothing retries or reissues.
OUT_OF_QUOTA = frozenset(
    {
        "insufficient_quota",  # OpenAI: error.code and error.type, HTTP 429
        "billing_error",  # Anthropic: error.type, HTTP 402
        "contract_spend_limit_reached",  # Anthropic: error.details.error_code, HTTP 429
        "enforced_spend_limit_reached",  # Anthropic: the same, HTTP 429
        "linked_organization_spend_limit_reached",  # Anthropic: the same, HTTP 402
    }
)


class ProviderError(JudgeError):
    def __init__(
        self,
        kind: ErrorKind,
        detail: str = "",
        retry_after: float | None = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        usage: TokenUsage | None = None,
    ):
        super().__init__(kind, detail, retry_after)
        self.status = status
        self.headers = dict(headers or {})
        self.usage = usage


def kind_for_status(status: int) -> ErrorKind:
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status == 529:
        return ErrorKind.OVERLOADED
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 404:
        return ErrorKind.NOT_FOUND
    if status == 408:
        return ErrorKind.TIMEOUT
    if status == 409 or status >= 500:
        return ErrorKind.SERVER_ERROR
    return ErrorKind.BAD_REQUEST


def out_of_quota(*codes: object) -> str | None:
    """The first of a provider error's codes that says the account is out of quota."""
    return next((c for c in codes if isinstance(c, str) and c in OUT_OF_QUOTA), None)


def quota_error(code: str, status: int, message: str, headers: Mapping[str, str]) -> ProviderError:
    """The account is out of quota (`code`): an `auth` error, never retried."""
    return ProviderError(
        ErrorKind.AUTH,
        f"HTTP {status} {code}: the account is out of quota or credit (not retried; add credit"
        f" or raise its spend limit, then submit the batch again under a new batch id): {message}"[:400],
        status=status,
        headers=headers,
    )


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms`, else `retry-after` (seconds or an HTTP date), in seconds; a value
    that is neither (say "soon", or "inf") counts as absent: the default backoff applies."""
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        wait = parsed.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(0.0, wait) if math.isfinite(wait) else None


def _seconds(value: str | None) -> float | None:
    """A non-negative finite number of a header, else None."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None


def scrub(text: str, secret: str | None) -> str:
    """Error details end up in events: never let a key through."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "[redacted]")
    return text
