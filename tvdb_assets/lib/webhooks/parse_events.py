"""A LlamaParse job's outcome as its webhook reported it, for the parser that started the
job: LlamaCloud posts the job's end to `tvdb webhook serve`, which records it in
`webhook_events`; the parser reads that table, which is local and costs the service no
request, instead of asking the service about each job until it ends."""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from tvdb_assets.lib import settings
from tvdb_assets.lib.store import webhook_events
from tvdb_assets.lib.store.connection import open_connection

SUCCEEDED = ("parse.success", "parse.partial_success")  # partial: failed pages come empty
ENDED = (*SUCCEEDED, "parse.error", "parse.cancelled")
MIN_READ_INTERVAL_S = 0.1  # a local read; the service's poll interval may be 0 in tests

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookTarget:
    """Where LlamaCloud posts a job's end, and the secret it signs the delivery with."""

    url: str
    secret: str

    def __repr__(self) -> str:  # never the secret, in a traceback or a log line
        return f"WebhookTarget(url={self.url!r})"

    def configuration(self) -> dict[str, Any]:
        """The parse job's `webhook_configurations` entry (llama-cloud 2.19)."""
        return {
            "webhook_url": self.url,
            "webhook_events": list(ENDED),
            "webhook_signing_secret": self.secret,
            # The payload as a JSON object, not the default JSON-encoded string.
            "webhook_output_format": "json",
        }

    @classmethod
    def from_env(cls) -> "WebhookTarget | None":
        """TVDB_LLAMAPARSE_WEBHOOK_URL with TVDB_LLAMA_WEBHOOK_SECRET; None: jobs are polled."""
        url = settings.llamaparse_webhook_url()
        if url is None:
            return None
        secret = settings.llama_webhook_secret()
        if secret is None:
            log.warning(
                "TVDB_LLAMAPARSE_WEBHOOK_URL is set but TVDB_LLAMA_WEBHOOK_SECRET is not: "
                "parse jobs are polled (the receiver takes only signed events)"
            )
            return None
        return cls(url, secret)


class ParseEvents:
    """Reads of `webhook_events` for jobs' outcomes, on an autocommit connection of its
    own (reopened after a loss), shared by the parser's threads."""

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = url
        self._clock = clock
        self._sleep = sleep
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def wait(self, job_id: str, timeout: float, interval: float) -> str | None:
        """The event that ended the job (one of ENDED), consumed; None: none came within
        `timeout` seconds."""
        deadline = self._clock() + timeout
        interval = max(interval, MIN_READ_INTERVAL_S)
        while True:
            with self._lock:
                conn = self._connection()
                found = webhook_events.job_event(conn, job_id, ENDED)
                if found is not None:
                    webhook_events.mark_consumed(conn, [found[0]])
                    return found[1]
            left = deadline - self._clock()
            if left <= 0:
                return None
            self._sleep(min(interval, left))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = open_connection(self._url, autocommit=True)
        return self._conn
