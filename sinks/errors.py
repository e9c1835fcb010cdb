"""Sort database errors into transient (retry), permanent (the record is bad: dead-letter
it) and fatal (configuration or bug: stop the flow, recovery replays later)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import exc as sa_exc


class Severity(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    FATAL = "fatal"


@dataclass(frozen=True)
class Classified:
    severity: Severity
    kind: str  # metric label: connection | serialization | deadlock | unavailable | constraint | data | fatal
    sqlstate: str | None
    message: str  # the driver's message (no SQL, no parameters)


# SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_TRANSIENT_STATES = {
    "40001": "serialization",  # serialization_failure
    "40P01": "deadlock",  # deadlock_detected
    "40003": "connection",  # statement_completion_unknown
    "57P01": "connection",  # admin_shutdown (server stopped or restarted)
    "57P02": "connection",  # crash_shutdown
    "57P03": "unavailable",  # cannot_connect_now (starting up, recovery)
    "57014": "unavailable",  # query_canceled (statement timeout, pg_cancel_backend)
    "55P03": "unavailable",  # lock_not_available
    "53300": "unavailable",  # too_many_connections
    "53400": "unavailable",  # configuration_limit_exceeded
    "53200": "unavailable",  # out_of_memory
    "58000": "unavailable",  # system_error
    "58030": "unavailable",  # io_error
}
_TRANSIENT_CLASSES = {"08": "connection", "40": "serialization", "53": "unavailable"}
_PERMANENT_CLASSES = {"22": "data", "23": "constraint", "21": "constraint"}


def _driver_error(exc: BaseException) -> BaseException:
    return getattr(exc, "orig", None) or exc


def _message(err: BaseException) -> str:
    text = str(err).strip() or err.__class__.__name__
    # psycopg appends the server's DETAIL on later lines; keep it, drop trailing noise
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines)[:1500]


def classify(exc: BaseException, dialect: str = "postgresql") -> Classified:
    """How to handle `exc`, raised while writing rows."""
    err = _driver_error(exc)
    state = getattr(err, "sqlstate", None)
    msg = _message(err)
    if state:
        if state in _TRANSIENT_STATES:
            return Classified(Severity.TRANSIENT, _TRANSIENT_STATES[state], state, msg)
        if state[:2] in _TRANSIENT_CLASSES:
            return Classified(Severity.TRANSIENT, _TRANSIENT_CLASSES[state[:2]], state, msg)
        if state[:2] in _PERMANENT_CLASSES:
            return Classified(Severity.PERMANENT, _PERMANENT_CLASSES[state[:2]], state, msg)
        return Classified(Severity.FATAL, "fatal", state, msg)
    # no SQLSTATE: client-side errors (connection refused, closed connection, bad values)
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return Classified(Severity.TRANSIENT, "connection", None, msg)
    if isinstance(exc, (sa_exc.IntegrityError,)):
        return Classified(Severity.PERMANENT, "constraint", None, msg)
    if isinstance(exc, sa_exc.DataError):
        return Classified(Severity.PERMANENT, "data", None, msg)
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        if dialect == "sqlite":
            low = msg.lower()
            if "locked" in low or "busy" in low:
                return Classified(Severity.TRANSIENT, "unavailable", None, msg)
            return Classified(Severity.FATAL, "fatal", None, msg)
        return Classified(Severity.TRANSIENT, "connection", None, msg)
    if isinstance(exc, sa_exc.DisconnectionError):
        return Classified(Severity.TRANSIENT, "connection", None, msg)
    try:  # psycopg errors raised outside SQLAlchemy's wrapping
        import psycopg

        if isinstance(err, (psycopg.OperationalError, psycopg.InterfaceError)):
            return Classified(Severity.TRANSIENT, "connection", None, msg)
        if isinstance(err, psycopg.IntegrityError):
            return Classified(Severity.PERMANENT, "constraint", None, msg)
        if isinstance(err, psycopg.DataError):
            return Classified(Severity.PERMANENT, "data", None, msg)
    except ImportError:  # pragma: no cover
        pass
    return Classified(Severity.FATAL, "fatal", None, msg)
