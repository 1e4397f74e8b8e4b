"""LlamaParse through its SDK, behind the circuit breaker, one retry layer and the budget.

The SDK would turn a failed job into an empty result (`ignore_errors=True`) and check PyPI
for updates; both are switched off. It also retries uploads itself (5 attempts, ignoring
Retry-After): `_UploadGate` turns a failed upload into our ServiceError at once, which its
retry policy does not match, so `call_with_retries` is the one retry layer.
"""

import logging
import time
from collections.abc import Callable

import httpx
from llama_cloud_services import LlamaParse
from llama_cloud_services.parse.base import JobFailedException

from tvdb_assets.lib.costs import prices
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.costs.ledger import Ledger
from tvdb_assets.lib.errors import DocumentError, ServiceError
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing.base import Parser
from tvdb_assets.lib.parsing.detect import Kind, detect_kind
from tvdb_assets.lib.parsing.local import DEFAULT_MAX_BYTES
from tvdb_assets.lib.parsing.pdf import count_pages
from tvdb_assets.lib.resilience import CircuitBreaker, call_with_retries, classify_http
from tvdb_assets.lib.services import ServiceClient

SERVICE = "llamaparse"
MODEL = "default"
CORRELATION_HEADER = "X-Correlation-Id"
PAGE_SEPARATOR = "\n\n"
_MIME = {
    Kind.PDF: "application/pdf",
    Kind.HTML: "text/html",
    Kind.MARKDOWN: "text/markdown",
    Kind.TEXT: "text/plain",
}
log = logging.getLogger(__name__)


class LlamaParseParser(ServiceClient, Parser):
    name = "llamaparse"
    cacheable = True  # results are worth keeping by content hash: they cost money

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        breaker: CircuitBreaker,
        ledger: Ledger | None,
        call: CallContext | None = None,
        attempts: int = 5,
        timeout: float = 300.0,
        check_interval: int = 1,
        concurrency: int = 4,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(breaker=breaker, ledger=ledger, call=call, attempts=attempts, sleep=sleep)
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = timeout
        self.check_interval = check_interval
        self.concurrency = concurrency
        self.max_bytes = max_bytes

    def parse(self, path: str, data: bytes) -> ParsedDocument:
        kind = detect_kind(path, data)
        if not data:
            raise DocumentError(path, "empty file")
        if len(data) > self.max_bytes:
            raise DocumentError(path, f"file too large (limit {self.max_bytes} bytes)")
        estimate = prices.price(SERVICE, MODEL, _page_count(path, data, kind))
        call = self.call.child()
        with self.breaker.guard():
            result = self._paid(estimate, call, lambda: self._send(path, data, call), _billed)
        pages = [page.md or page.text or "" for page in result.pages]
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

    def _send(self, path: str, data: bytes, call: CallContext):  # type: ignore[no-untyped-def]
        def on_retry(number: int, error: BaseException, wait: float) -> None:
            log.warning(
                "[%s] %s attempt %d for %s failed (%s); retrying in %.1f s",
                call.correlation_id, SERVICE, number, path, error, wait,
            )  # fmt: skip

        return call_with_retries(
            lambda: self._job(path, data, call),
            attempts=self.attempts,
            sleep=self._sleep,
            on_retry=on_retry,
        )

    def _job(self, path: str, data: bytes, call: CallContext):  # type: ignore[no-untyped-def]
        client = LlamaParse(
            api_key=self.api_key,
            base_url=self.base_url or "https://api.cloud.llamaindex.ai",
            result_type="markdown",
            ignore_errors=False,
            check_for_updates=False,
            verbose=False,
            show_progress=False,
            max_timeout=int(self.timeout),
            check_interval=self.check_interval,
            custom_client=httpx.AsyncClient(
                transport=_UploadGate(),
                timeout=self.timeout,
                headers={
                    "Authorization": f"Bearer {self.api_key}",
                    CORRELATION_HEADER: call.correlation_id,
                },
            ),
        )
        name = path.rsplit("/", 1)[-1]
        try:
            return client.parse(data, extra_info={"file_name": name})
        except ServiceError:
            raise
        except JobFailedException as exc:
            reason = exc.error_message or exc.error_code or "no reason given"
            raise DocumentError(path, f"LlamaParse could not parse it ({reason})") from None
        except Exception as exc:
            # The SDK's poll loop swallows HTTP errors and gives up at max_timeout with a bare
            # Exception. Not retried: the job may still finish, and a new upload would be a
            # second job billed.
            raise ServiceError(SERVICE, f"no result ({_clean(exc)})", retryable=False) from None


class _UploadGate(httpx.AsyncBaseTransport):
    """Surfaces a failed upload as our ServiceError before the SDK's own retries see it.

    Status polls and result fetches pass through untouched: the SDK polls until the job
    is done anyway.
    """

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        upload = request.method == "POST"
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            if not upload:
                raise
            timeout = isinstance(exc, httpx.TimeoutException)
            what = "upload timed out" if timeout else "upload connection failed"
            raise classify_http(
                SERVICE, None, what, None, timeout=timeout, connection=not timeout
            ) from None
        if upload and response.status_code >= 400:
            await response.aread()
            raise classify_http(
                SERVICE,
                response.status_code,
                f"upload refused (HTTP {response.status_code})",
                dict(response.headers),
            )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _billed(result) -> prices.Charge:  # type: ignore[no-untyped-def]  # the SDK's JobResult
    return prices.price(SERVICE, MODEL, result.job_metadata.job_pages or len(result.pages))


def _page_count(path: str, data: bytes, kind: Kind) -> int:
    """Pages LlamaParse will bill: checked locally first, so a corrupt PDF costs nothing."""
    if kind is not Kind.PDF:
        return 1
    return max(1, count_pages(path, data))


def _clean(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
