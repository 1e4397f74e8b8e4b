"""LlamaParse through its SDK, behind the circuit breaker, one retry layer and the budget.

The SDK would turn a failed job into an empty result (`ignore_errors=True`) and check PyPI
for updates; both are switched off. Its own upload retries ignore Retry-After, so every
attempt here is one SDK call inside `call_with_retries`.
"""

import io
import logging
import time
from collections.abc import Callable

import httpx
from llama_cloud_services import LlamaParse
from pypdf import PdfReader

from tvdb_assets.lib import costs
from tvdb_assets.lib.billing import Ledger
from tvdb_assets.lib.errors import DocumentError, ServiceError
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing.base import Parser
from tvdb_assets.lib.parsing.detect import Kind, detect_kind
from tvdb_assets.lib.parsing.local import DEFAULT_MAX_BYTES
from tvdb_assets.lib.resilience import CircuitBreaker, call_with_retries, classify_http
from tvdb_assets.lib.store.ledger import CallContext

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


class LlamaParseParser(Parser):
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
        check_interval: float = 1.0,
        concurrency: int = 4,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.breaker = breaker
        self.ledger = ledger
        self.call = call or CallContext()
        self.attempts = attempts
        self.timeout = timeout
        self.check_interval = check_interval
        self.concurrency = concurrency
        self.max_bytes = max_bytes
        self._sleep = sleep

    def parse(self, path: str, data: bytes) -> ParsedDocument:
        kind = detect_kind(path, data)
        if not data:
            raise DocumentError(path, "empty file")
        if len(data) > self.max_bytes:
            raise DocumentError(path, f"file too large (limit {self.max_bytes} bytes)")
        estimate = costs.price(SERVICE, MODEL, _page_count(path, data, kind))
        call = self.call.child()
        with self.breaker.guard():
            if self.ledger is None:
                result = self._send(path, data, call)
            else:
                with self.ledger.charge(estimate, call) as bill:
                    result = self._send(path, data, call)
                    billed = result.job_metadata.job_pages or len(result.pages)
                    bill.actual = costs.price(SERVICE, MODEL, billed)
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
        except httpx.HTTPStatusError as exc:
            message = f"HTTP {exc.response.status_code} from LlamaParse"
            raise classify_http(
                SERVICE, exc.response.status_code, message, dict(exc.response.headers)
            ) from None
        except httpx.TimeoutException:
            raise classify_http(SERVICE, None, "request timed out", None, timeout=True) from None
        except httpx.TransportError:
            raise classify_http(SERVICE, None, "connection failed", None, connection=True) from None
        except ServiceError:
            raise
        except Exception as exc:  # the SDK raises a bare Exception for a failed job
            raise DocumentError(path, f"LlamaParse job failed ({_clean(exc)})") from None


def _page_count(path: str, data: bytes, kind: Kind) -> int:
    """Pages LlamaParse will bill: checked locally first, so a corrupt PDF costs nothing."""
    if kind is not Kind.PDF:
        return 1
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError(path, "encrypted PDF")
        return max(1, len(reader.pages))
    except DocumentError:
        raise
    except Exception as exc:
        raise DocumentError(path, f"corrupt PDF ({type(exc).__name__})") from None


def _clean(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
