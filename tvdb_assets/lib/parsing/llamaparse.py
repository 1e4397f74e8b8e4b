"""LlamaParse through its maintained SDK (`llama-cloud` 2.x), behind the circuit breaker,
one retry layer and the budget.

A document takes three steps: upload the file (`files.create`), start a parse job at the
configured tier (`parsing.create`), wait for it (`parsing.wait_for_completion`) and read
its pages (`parsing.get`). With a webhook set (TVDB_LLAMAPARSE_WEBHOOK_URL and
TVDB_LLAMA_WEBHOOK_SECRET), the job posts its end to `tvdb webhook serve` instead, and the
wait reads the event it recorded (`webhooks/parse_events.py`): the service is asked about
the job once at most, when no event came in time.

The SDK runs with `max_retries=0`; each step goes through `call_with_retries`, so attempts
never multiply. Once the service has accepted a job it bills it, so a job is never started
twice: a job start that timed out is not retried, and whatever fails after the start fails
the document as "maybe billed" (the ledger keeps the estimate). Polls and the result fetch
only read, and are retried.

The SDK is imported when the first document is sent: it takes a second or more to import,
and mock mode never needs it.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from tvdb_assets.lib.costs import prices
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.costs.ledger import Ledger
from tvdb_assets.lib.errors import REDACTED, DocumentError, ServiceError
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing.base import Parser
from tvdb_assets.lib.parsing.detect import Kind, detect_kind
from tvdb_assets.lib.parsing.local import DEFAULT_MAX_BYTES
from tvdb_assets.lib.parsing.pdf import count_pages
from tvdb_assets.lib.parsing.tiers import DEFAULT_TIER, SERVICE, Tier, parser_name
from tvdb_assets.lib.resilience import CircuitBreaker, call_with_retries, classify_http
from tvdb_assets.lib.services import ServiceClient
from tvdb_assets.lib.webhooks.parse_events import SUCCEEDED, ParseEvents, WebhookTarget

if TYPE_CHECKING:
    from llama_cloud import LlamaCloud

T = TypeVar("T")

# "latest" is the tier's current parser; a dated version would pin it.
VERSION = "latest"
CORRELATION_HEADER = "X-Correlation-Id"
PAGE_SEPARATOR = "\n\n"
MAX_POLL_SECONDS = 5.0  # polls slow down by a second each, up to this
# The SDK logs each request's options at DEBUG: a job's webhook signing secret among them.
_SDK_REQUEST_LOGGER = "llama_cloud._base_client"
_MIME = {
    Kind.PDF: "application/pdf",
    Kind.HTML: "text/html",
    Kind.MARKDOWN: "text/markdown",
    Kind.TEXT: "text/plain",
}
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A finished job's pages, in order, and the credits the service billed (None: not
    counted yet)."""

    pages: list[str]
    credits: float | None


class LlamaParseParser(ServiceClient, Parser):
    cacheable = True  # results are worth keeping by content hash: they cost money

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        breaker: CircuitBreaker,
        ledger: Ledger | None,
        call: CallContext | None = None,
        tier: Tier = DEFAULT_TIER,
        attempts: int = 5,
        timeout: float = 300.0,
        check_interval: float = 1.0,
        concurrency: int = 4,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sleep: Callable[[float], None] = time.sleep,
        webhook: WebhookTarget | None = None,
        events: ParseEvents | None = None,
    ) -> None:
        """`webhook`: where jobs post their end (None: jobs are polled); `events`: where the
        parser reads it (default: the pipeline database's `webhook_events`)."""
        super().__init__(breaker=breaker, ledger=ledger, call=call, attempts=attempts, sleep=sleep)
        self.api_key = api_key
        self.base_url = base_url
        self.tier = tier
        self.name = parser_name(tier)
        self.timeout = timeout
        self.check_interval = check_interval
        self.concurrency = concurrency
        self.max_bytes = max_bytes
        self._sdk: LlamaCloud | None = None
        self._sdk_lock = threading.Lock()
        self.webhook = webhook
        self._events = events or (ParseEvents() if self.webhook is not None else None)
        self._withheld = _Withheld(self.webhook.secret) if self.webhook is not None else None

    def parse(self, path: str, data: bytes) -> ParsedDocument:
        kind = detect_kind(path, data)
        if not data:
            raise DocumentError(path, "empty file")
        if len(data) > self.max_bytes:
            raise DocumentError(path, f"file too large (limit {self.max_bytes} bytes)")
        estimate = prices.price(SERVICE, self.tier, _page_count(path, data, kind))
        call = self.call.child()
        with self.breaker.guard():
            result = self._paid(
                estimate, call, lambda: self._job(path, data, kind, call), self._billed
            )
        pages = result.pages
        if not any(p.strip() for p in pages):
            raise DocumentError(path, "LlamaParse returned no text")
        starts, offset = [], 0
        for page in pages:
            starts.append(offset)
            offset += len(page) + len(PAGE_SEPARATOR)
        paginated = kind is Kind.PDF
        return ParsedDocument(
            markdown=PAGE_SEPARATOR.join(pages),
            parser=self.name,
            mime=_MIME[kind],
            pages=len(pages) if paginated else None,
            page_starts=tuple(starts) if paginated else (),
        )

    def close(self) -> None:
        with self._sdk_lock:
            if self._sdk is not None:
                self._sdk.close()
                self._sdk = None
            if self._withheld is not None:
                logging.getLogger(_SDK_REQUEST_LOGGER).removeFilter(self._withheld)
        if self._events is not None:
            self._events.close()
        super().close()

    def _client(self) -> "LlamaCloud":
        # One client for the parser's threads: the SDK's sync client (httpx) is thread-safe.
        with self._sdk_lock:
            if self._sdk is None:
                from llama_cloud import LlamaCloud

                self._sdk = LlamaCloud(
                    api_key=self.api_key,
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=0,
                )
                if self._withheld is not None:
                    logging.getLogger(_SDK_REQUEST_LOGGER).addFilter(self._withheld)
            return self._sdk

    def _billed(self, result: _Parsed) -> prices.Charge:
        return prices.llamaparse_billed(self.tier, len(result.pages), result.credits)

    def _job(self, path: str, data: bytes, kind: Kind, call: CallContext) -> _Parsed:
        client = self._client()
        headers = {CORRELATION_HEADER: call.correlation_id}
        name = path.rsplit("/", 1)[-1]
        upload = self._step(
            "upload",
            path,
            call,
            lambda: client.files.create(
                file=(name, data, _MIME[kind]), purpose="parse", extra_headers=headers
            ),
        )
        # Only the first webhook configuration is used, the service says.
        webhook: dict[str, Any] = (
            {"webhook_configurations": [self.webhook.configuration()]} if self.webhook else {}
        )
        job = self._step(
            "parse request",
            path,
            call,
            lambda: client.parsing.create(
                tier=self.tier,
                version=VERSION,
                file_id=upload.id,
                extra_headers=headers,
                **webhook,
            ),
            starts_job=True,
        )
        if self._events is not None:
            self._await_event(self._events, client, job.id, path, call)
        else:
            self._wait(client, job.id, path, call)
        # The fast tier gives text only; the others give markdown.
        content = "text" if self.tier == "fast" else "markdown"
        answer = self._step(
            "result",
            path,
            call,
            lambda: client.parsing.get(job.id, expand=[content, "usage"], extra_headers=headers),
            billed=True,
        )
        return _read(answer, content)

    def _wait(self, client: "LlamaCloud", job_id: str, path: str, call: CallContext) -> None:
        from llama_cloud import PollingError, PollingTimeoutError

        headers = {CORRELATION_HEADER: call.correlation_id}
        try:
            self._step(
                "status poll",
                path,
                call,
                lambda: client.parsing.wait_for_completion(
                    job_id,
                    polling_interval=self.check_interval,
                    max_interval=max(MAX_POLL_SECONDS, self.check_interval),
                    timeout=self.timeout,
                    extra_headers=headers,
                ),
                billed=True,
            )
        except PollingTimeoutError:
            raise ServiceError(
                SERVICE,
                f"job {job_id} gave no result within {self.timeout:.0f} s",
                retryable=False,
                maybe_billed=True,
            ) from None
        except PollingError:
            # Its message is the SDK's own sentence; the job itself says why it failed.
            raise _failed(self._status(client, job_id, path, call), path) from None

    def _await_event(
        self, events: ParseEvents, client: "LlamaCloud", job_id: str, path: str, call: CallContext
    ) -> None:
        """Wait for the job's end as its webhook reported it. Without a report in time (the
        receiver down, a delivery lost) one status read decides, as a poll would have."""
        try:
            event = events.wait(job_id, self.timeout, self.check_interval)
        except psycopg.Error as exc:
            # The events are out of reach, not the job: ask the service, as without a webhook.
            log.warning(
                "[%s] reading webhook events failed (%s); polling job %s instead",
                call.correlation_id, type(exc).__name__, job_id,
            )  # fmt: skip
            self._wait(client, job_id, path, call)
            return
        if event in SUCCEEDED:
            return
        # A failure or a silence: the job itself says why, or how it stands.
        job = self._status(client, job_id, path, call)
        if job.status == "COMPLETED":
            return
        if event is None and job.status in ("PENDING", "RUNNING"):
            raise ServiceError(
                SERVICE,
                f"job {job_id} gave no result within {self.timeout:.0f} s",
                retryable=False,
                maybe_billed=True,
            )
        raise _failed(job, path)

    def _status(self, client: "LlamaCloud", job_id: str, path: str, call: CallContext) -> Any:
        """The job as the service has it now (one read, retried)."""
        headers = {CORRELATION_HEADER: call.correlation_id}
        return self._step(
            "status poll",
            path,
            call,
            lambda: client.parsing.get(job_id, extra_headers=headers),
            billed=True,
        ).job

    def _step(
        self,
        what: str,
        path: str,
        call: CallContext,
        request: Callable[[], T],
        *,
        starts_job: bool = False,
        billed: bool = False,
    ) -> T:
        """One SDK call, retried where that cannot start a second job.

        `starts_job`: the call starts a billed job, so a timeout (the service may have
        started it) is not retried. `billed`: a job was started, so any failure may have
        been billed.
        """

        def attempt() -> T:
            try:
                return request()
            except Exception as exc:
                translated = _translated(what, exc, starts_job=starts_job, billed=billed)
                if translated is None:
                    raise
                raise translated from None

        def on_retry(number: int, error: BaseException, wait: float) -> None:
            log.warning(
                "[%s] %s %s attempt %d for %s failed (%s); retrying in %.1f s",
                call.correlation_id, SERVICE, what, number, path, error, wait,
            )  # fmt: skip

        return call_with_retries(
            attempt, attempts=self.attempts, sleep=self._sleep, on_retry=on_retry
        )


def _failed(job: Any, path: str) -> DocumentError:
    """A job that ended FAILED or CANCELLED, as the document's error."""
    reason = job.error_message or f"job {str(job.status).lower()}"
    return DocumentError(path, f"LlamaParse could not parse it ({reason})")


class _Withheld(logging.Filter):
    """Keeps a secret out of the records of the logger it is added to."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._secret in message:
            record.msg, record.args = message.replace(self._secret, REDACTED), ()
        return True


def _translated(what: str, exc: Exception, *, starts_job: bool, billed: bool) -> Exception | None:
    """The SDK's error as our ServiceError (None: not the SDK's, let it through).

    Nothing of the SDK's exception is kept: its text can quote the request.
    """
    from llama_cloud import APIConnectionError, APIStatusError, APITimeoutError

    if isinstance(exc, APITimeoutError):
        if starts_job or billed:
            # The service may have started (and will bill) the job: never start another.
            return ServiceError(
                SERVICE, f"{what} timed out", retryable=not starts_job, maybe_billed=True
            )
        return classify_http(SERVICE, None, f"{what} timed out", None, timeout=True)
    if isinstance(exc, APIConnectionError):
        return classify_http(
            SERVICE, None, f"{what} connection failed", None, connection=True, maybe_billed=billed
        )
    if isinstance(exc, APIStatusError):
        status = exc.status_code
        message = f"{what} refused (HTTP {status})"
        if status in (401, 403):
            message += ": authentication failed (check LLAMA_CLOUD_API_KEY)"
        elif detail := _detail(exc.body):
            message += f": {detail}"
        headers = dict(exc.response.headers)
        return classify_http(SERVICE, status, message, headers, maybe_billed=billed)
    if isinstance(exc, ValueError | TypeError | AttributeError):
        # An answer the SDK could not read (cut short, not the shape it expects).
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return ServiceError(
            SERVICE, f"{what}: unreadable answer ({reason})", retryable=False, maybe_billed=billed
        )
    return None


def _detail(body: object) -> str | None:
    """The service's own words from an error body ({"detail": ...})."""
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail[:200]
    return None


def _read(answer: Any, content: str) -> _Parsed:
    """A finished job's pages (a page the service failed is empty, so the others keep
    their numbers) and its billed credits."""
    try:
        section = getattr(answer, content)
        by_number = {}
        for page in section.pages if section is not None else []:
            ok = getattr(page, "success", True)
            by_number[page.page_number] = getattr(page, content) if ok else ""
        usage = answer.job.usage
        credits = usage.credits if usage is not None else None
    except (AttributeError, TypeError, ValueError) as exc:
        raise ServiceError(
            SERVICE, f"result: unreadable answer ({type(exc).__name__})", retryable=False,
            maybe_billed=True,
        ) from None  # fmt: skip
    return _Parsed([by_number[n] for n in sorted(by_number)], credits)


def _page_count(path: str, data: bytes, kind: Kind) -> int:
    """Pages LlamaParse will bill: checked locally first, so a corrupt PDF costs nothing."""
    if kind is not Kind.PDF:
        return 1
    return max(1, count_pages(path, data))
