"""The project's exceptions: each says what went wrong in words a user can act on.

Text that came from a service (error bodies, job messages) goes through `redact` here, in
the exceptions' constructors, so no configured secret reaches a log, a row or a screen.
"""

import re

from tvdb_assets.lib import settings

REDACTED = "[redacted]"
# Credentials a proxy may echo back even when they are not ours to know.
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}|\bsk-[A-Za-z0-9_-]{16,}")


def redact(text: str) -> str:
    """`text` without any configured secret or anything shaped like a bearer token."""
    for secret in settings.secret_values():
        text = text.replace(secret, REDACTED)
    return _CREDENTIALS.sub(lambda m: f"{m.group(1)} {REDACTED}" if m.group(1) else REDACTED, text)


class TvdbError(Exception):
    """Base class of every error raised on purpose by tvdb-assets."""


class ConfigError(TvdbError):
    """A client cannot be built as configured (a mode without its key, say)."""


class DocumentError(TvdbError):
    """One document cannot be ingested; the message names the file and the reason.

    It never stops other documents: the pipeline records it in `ingest_errors` and moves on.
    """

    def __init__(self, path: str, reason: str, stage: str = "parse") -> None:
        reason = redact(reason)
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.stage = stage


class ServiceError(TvdbError):
    """A call to an external service (OpenAI, LlamaParse, S3) failed.

    `retryable` says whether the same call may succeed later (429, 5xx, timeouts, lost
    connections) or never will (validation errors, bad credentials). `retry_after` is the
    wait the service asked for, in seconds, when it said so. `maybe_billed`: the service
    may have done (and billed) the work although the call failed, as after a timeout.
    """

    def __init__(
        self,
        service: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_billed: bool = False,
    ) -> None:
        message = redact(message)
        super().__init__(f"{service}: {message}")
        self.service = service
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.maybe_billed = maybe_billed


class CircuitOpenError(ServiceError):
    """The service failed too often lately; calls are refused until it may have recovered."""

    def __init__(self, service: str, retry_in: float) -> None:
        super().__init__(service, f"circuit open, next try in {retry_in:.0f} s", retryable=False)
        self.retry_in = retry_in


class BudgetExceeded(TvdbError):
    """A billable call would cross the daily spend or hourly request budget; it was not made."""


def is_passing(exc: BaseException) -> bool:
    """Whether a document failed for a cause that may pass by itself, so that trying it
    again later is worth it: a service down or refusing calls, a spent budget, an open
    circuit, a key someone will fix; not a file the service refused or could not read."""
    if isinstance(exc, BudgetExceeded):
        return True
    if isinstance(exc, ServiceError):
        return exc.retryable or exc.status is None or exc.status in (401, 403)
    return False


class DatabaseLost(TvdbError):
    """The database went away (stopped, restarted, unreachable) in the middle of work.

    Nothing is recorded as done before it is committed, so running the command again
    resumes where this one stopped.
    """

    def __init__(self, location: str, run_id: str | None = None) -> None:
        during = f" during run {run_id}" if run_id else ""
        super().__init__(f"the database at {location} went away{during}")
        self.location = location
        self.run_id = run_id


# Connection-level failures, by the driver that raised them: psycopg 3 (our tables),
# psycopg2 behind SQLAlchemy (Dagster's storage). Matched by name, so neither is imported.
_LOST = {
    ("psycopg", "OperationalError"),
    ("psycopg2", "OperationalError"),
    ("sqlalchemy", "OperationalError"),
    ("psycopg", "InterfaceError"),
    ("psycopg2", "InterfaceError"),
    # psycopg2 raises its base class, exactly, for "server closed the connection
    # unexpectedly" on a pooled connection (Dagster's storage) when the server dies.
    ("psycopg2", "DatabaseError"),
}


def is_lost_database(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it came from, says the connection to Postgres broke."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseLost):
            return True
        package = type(current).__module__.split(".")[0]
        if (package, type(current).__name__) in _LOST:
            return True
        current = current.__cause__ or current.__context__
    return False
