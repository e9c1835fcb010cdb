"""Provider failures by meaning: which error kinds are worth a retry, and the error a
provider client raises (a `JudgeError` with the HTTP status, rate-limit headers and any
tokens the failed attempt still used)."""

from __future__ import annotations

import email.utils
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


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms`, else `retry-after` (seconds or an HTTP date), in seconds."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def scrub(text: str, secret: str | None) -> str:
    """Error details end up in events: never let a key through."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "[redacted]")
    return text
