"""FakeLlamaParse: LlamaCloud's file and parse (v2) API as the `llama-cloud` 2.x SDK calls it.

Routes (relative to base_url, the bare "http://127.0.0.1:PORT"), by the names faults and
records use:
  upload  POST /api/v1/beta/files          multipart: `file` + `purpose` -> the file {"id", ...}
  parse   POST /api/v2/parse               JSON: {"file_id", "tier", "version", ...} -> the job
          POST /api/v2/parse/upload        multipart: `file` + `configuration` (JSON) -> the job
  status  GET  /api/v2/parse/{id}          {"job": {...}}
  result  GET  /api/v2/parse/{id}?expand=  the job plus what `expand` names (markdown, text,
                                           markdown_full, text_full, usage, job_metadata)
Job statuses are the API's: PENDING when started, RUNNING for `pending_polls` reads, then
COMPLETED or FAILED (CANCELLED is never produced).

The upload is parsed for real (see documents.py) when its job starts. A COMPLETED job is
billed: its pages times its tier's credits a page (`CREDITS_PER_PAGE`, the service's price
list, not ours), reported as `job.usage.credits`. The fast tier writes no markdown, only text.

Webhooks: a job started with `webhook_configurations` (the first one counts, as the service
says) ends by itself `webhook_delay` seconds later, unless a read ended it first, and its
end is then posted to that `webhook_url`: with its `webhook_headers`, filtered by its
`webhook_events`, signed as the SDK documents `webhook_signing_secret` (`LC-Signature:
sha256=<hex HMAC-SHA256 of the raw body>`), as a JSON object (`webhook_output_format:
"json"`) or else a JSON-encoded string. The body's members are the fake's own guess, as the
service does not document them: `event_id`, `event_type`, `timestamp` and `data` (`job_id`,
`status`, `error_message`). `drop_webhooks` loses every delivery; `webhooks` lists them.
"""

import dataclasses
import hashlib
import hmac
import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tvdb_assets_tests.fakes.documents import (
    ParsedPage,
    ParseFailure,
    extract_pages,
    select_pages,
)
from tvdb_assets_tests.fakes.faults import Fault
from tvdb_assets_tests.fakes.multipart import FilePart, parse_form
from tvdb_assets_tests.fakes.server import FakeServer, Request, Response

DEFAULT_API_KEY = "llx-fake-test-key"
PROJECT_ID = "fake-project"
ROUTES = ("upload", "parse", "status", "result")
# What LlamaCloud charges, as its docs publish it: credits a page by tier, $1.25 per 1,000.
CREDITS_PER_PAGE = {"fast": 1, "cost_effective": 3, "agentic": 10, "agentic_plus": 45}
USD_PER_CREDIT = 1.25 / 1000
_VERSION = re.compile(r"^(latest|\d{4}-\d{2}-\d{2})$")

_FILES = re.compile(r"^/api/v1/beta/files/?$")
_PARSE = re.compile(r"^/api/v2/parse(?P<upload>/upload)?/?$")
_JOB = re.compile(r"^/api/v2/parse/(?P<job>[^/]+)/?$")
_WEBHOOK_EVENTS = {
    "COMPLETED": "parse.success",
    "FAILED": "parse.error",
    "CANCELLED": "parse.cancelled",
}
_WEBHOOK_TIMEOUT_S = 10.0
_DEFAULT_MESSAGES = {
    401: "Invalid authentication token",
    429: "Too many requests (injected fault).",
    500: "Internal Server Error (injected fault).",
    503: "Service Unavailable (injected fault).",
}


@dataclass(frozen=True, slots=True)
class HttpRecord:
    """One request the fake received, on any route."""

    time: float
    method: str
    path: str
    route: str  # upload | parse | status | result | unknown
    status: int  # 0 when the connection was dropped without an answer
    outcome: str  # ok | fault | outage | auth | invalid | not_found
    headers: dict[str, str]  # lower-cased, minus authorization
    query: dict[str, str]  # e.g. organization_id / project_id


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One job event the fake posted."""

    job_id: str
    event: str
    url: str
    status: int  # the receiver's answer; 0: none (refused, dropped, timed out)


@dataclass(frozen=True, slots=True)
class StoredFile:
    file_id: str
    name: str
    content_type: str | None
    purpose: str
    data: bytes = field(repr=False)


@dataclass(slots=True)
class ParseJob:
    """A job as the fake sees it; `jobs` hands out copies."""

    job_id: str
    file_id: str
    file_name: str
    content_type: str | None
    size: int  # bytes of the file parsed
    tier: str
    version: str
    pages: int  # pages parsed (and billed, once COMPLETED)
    status: str  # PENDING | RUNNING | COMPLETED | FAILED
    error_code: str | None  # the fake's own reason code (the API only sends error_message)
    error_message: str | None
    polls: int  # reads of the job answered
    created: float
    finished: float | None
    request: dict[str, Any]  # the job's configuration, as sent
    query: dict[str, str]
    headers: dict[str, str]  # job start request headers, lower-cased, minus authorization
    page_results: list[ParsedPage] = field(default_factory=list, repr=False)
    pending_left: int = field(default=0, repr=False)
    planned_failure: tuple[str, str] | None = field(default=None, repr=False)
    webhook: dict[str, Any] | None = field(default=None, repr=False)  # the one it posts to
    webhook_sent: bool = field(default=False, repr=False)

    @property
    def credits(self) -> int:
        return self.pages * CREDITS_PER_PAGE[self.tier]


class FakeLlamaParse(FakeServer):
    """Loopback stand-in for LlamaParse (LlamaCloud's v2 parse API)."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, pending_polls: int = 0) -> None:
        super().__init__()
        self.api_key = api_key
        # Reads a new job answers RUNNING before finishing; read when the job starts.
        self.pending_polls = pending_polls
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._jobs: dict[str, ParseJob] = {}
        self._records: list[HttpRecord] = []
        self._uploads = 0
        self._fail_next: list[tuple[str, str]] = []
        # Appended to every page's result: lets a test make the service send what no file
        # holds (NULs, unpaired surrogates).
        self.page_suffix = ""
        self.malformed_results = False  # results answered as JSON cut short
        self.webhook_delay = 0.05  # seconds a job with a webhook runs before it ends
        self.drop_webhooks = False  # jobs end, but no delivery is made (a lost one)
        self._deliveries: list[WebhookDelivery] = []
        self._delivered = threading.Condition(self._lock)

    # --- what tests read -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Pass as `LlamaCloud(base_url=...)`."""
        return self.root_url

    def env(self) -> dict[str, str]:
        """Environment variables that point the llama-cloud SDK here."""
        return {"LLAMA_CLOUD_API_KEY": self.api_key, "LLAMA_CLOUD_BASE_URL": self.base_url}

    @property
    def jobs(self) -> list[ParseJob]:
        """Copies of every started job, in start order."""
        with self._lock:
            return [dataclasses.replace(job) for job in self._jobs.values()]

    def job(self, job_id: str) -> ParseJob:
        with self._lock:
            return dataclasses.replace(self._jobs[job_id])

    @property
    def files(self) -> list[StoredFile]:
        """Every file accepted, in upload order."""
        with self._lock:
            return list(self._files.values())

    @property
    def billed_pages(self) -> int:
        """Pages of the jobs that COMPLETED."""
        with self._lock:
            return sum(job.pages for job in self._jobs.values() if job.status == "COMPLETED")

    @property
    def billable_pages(self) -> int:
        """What the real service would eventually charge: `billed_pages` plus the pages of
        started jobs still running that would succeed (e.g. ones a client abandoned after
        its request timed out: the server had started them anyway)."""
        with self._lock:
            return sum(
                job.pages
                for job in self._jobs.values()
                if job.status == "COMPLETED"
                or (job.status in ("PENDING", "RUNNING") and job.planned_failure is None)
            )

    def bill(self) -> dict[str, tuple[int, float]]:
        """The invoice so far: per tier, (pages, USD) of the jobs that COMPLETED."""
        out: dict[str, tuple[int, float]] = {}
        with self._lock:
            for job in self._jobs.values():
                if job.status == "COMPLETED":
                    pages, usd = out.get(job.tier, (0, 0.0))
                    out[job.tier] = (pages + job.pages, usd + job.credits * USD_PER_CREDIT)
        return out

    @property
    def webhooks(self) -> list[WebhookDelivery]:
        """Every job event posted, in the order the receivers answered."""
        with self._lock:
            return list(self._deliveries)

    def wait_webhooks(self, count: int, timeout: float = 10.0) -> bool:
        """Whether `count` deliveries were answered within `timeout` seconds."""
        with self._delivered:
            return self._delivered.wait_for(lambda: len(self._deliveries) >= count, timeout)

    @property
    def uploads(self) -> int:
        """File upload requests received, refused ones included (so retries show up)."""
        with self._lock:
            return self._uploads

    @property
    def requests(self) -> list[HttpRecord]:
        with self._lock:
            return list(self._records)

    @property
    def pending_faults(self) -> int:
        return self.faults.pending()

    # --- fault injection -------------------------------------------------------------

    def script(self, faults: Iterable[Fault], route: str = "upload") -> None:
        """Queue faults for requests on `route` (upload | parse | status | result), one per
        request."""
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
        self.faults.script(faults, route)

    def fail_next_jobs(
        self, n: int = 1, error: str = "Injected job failure.", code: str = "INJECTED_FAILURE"
    ) -> None:
        """The next `n` started jobs end FAILED (after their pending reads)."""
        with self._lock:
            self._fail_next.extend([(code, error)] * n)

    def clear_faults(self) -> None:
        self.faults.clear()
        with self._lock:
            self._fail_next.clear()

    # --- serving ---------------------------------------------------------------------

    def handle(self, request: Request) -> Response | None:
        route, job_id = _route(request)
        if route == "upload":
            with self._lock:
                self._uploads += 1

        fault = self.faults.next_scripted(route)
        if fault is not None:
            self.sleep(fault.delay)
            if fault.disconnect:
                self._record(request, route, 0, "fault")
                return None
            if fault.status is not None:
                return self._fault(request, route, fault, "fault")
        outage = self.faults.current_outage()
        if outage is not None:
            return self._fault(request, route, outage, "outage")
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._detail(request, route, 401, "auth", _DEFAULT_MESSAGES[401])

        if route == "unknown":
            return self._detail(request, route, 404, "not_found", "Not Found")
        expected = "GET" if route in ("status", "result") else "POST"
        if request.method != expected:
            return self._detail(request, route, 405, "invalid", "Method Not Allowed")
        if route == "upload":
            return self._upload(request)
        if route == "parse":
            return self._start(request)
        with self._lock:
            job = self._jobs.get(job_id or "")
            if job is None:
                return self._detail_locked(request, route, 404, "not_found", "Job not found")
            return self._read_locked(request, route, job)

    def _upload(self, request: Request) -> Response:
        try:
            form = parse_form(request.headers.get("content-type", ""), request.body)
        except ValueError as exc:
            return self._detail(request, "upload", 400, "invalid", str(exc))
        upload = form.files.get("file")
        if upload is None:
            return self._detail(request, "upload", 422, "invalid", "No file was uploaded.")
        purpose = form.fields.get("purpose")
        if not purpose:
            return self._detail(request, "upload", 422, "invalid", "purpose is required.")
        with self._lock:
            stored = self._store_locked(upload, purpose)
            self._record_locked(request, "upload", 200, "ok")
        return Response.of_json(200, _file_json(stored))

    def _start(self, request: Request) -> Response:
        """A job from a stored file (JSON) or from a file sent with it (multipart)."""
        upload: FilePart | None = None
        try:
            if request.path.rstrip("/").endswith("/upload"):
                form = parse_form(request.headers.get("content-type", ""), request.body)
                upload = form.files.get("file")
                config = json.loads(form.fields.get("configuration") or "{}")
            else:
                config = request.json()
        except ValueError as exc:
            return self._detail(request, "parse", 400, "invalid", f"Bad request: {exc}")
        if not isinstance(config, dict):
            return self._detail(request, "parse", 422, "invalid", "Expected a JSON object.")
        tier, version = config.get("tier"), config.get("version")
        if tier not in CREDITS_PER_PAGE:
            message = f"tier must be one of {', '.join(CREDITS_PER_PAGE)}, not {tier!r}."
            return self._detail(request, "parse", 422, "invalid", message)
        if not isinstance(version, str) or not _VERSION.match(version):
            message = f"version must be 'latest' or a date, not {version!r}."
            return self._detail(request, "parse", 422, "invalid", message)
        with self._lock:
            if upload is not None:
                stored = self._store_locked(upload, "parse")
            else:
                found = self._files.get(str(config.get("file_id")))
                if found is None:
                    return self._detail_locked(request, "parse", 404, "not_found", "No such file.")
                stored = found
        ranges = config.get("page_ranges") or {}
        failure: tuple[str, str] | None = None
        pages: list[ParsedPage] = []
        try:
            pages = select_pages(
                extract_pages(stored.data), ranges.get("target_pages"), ranges.get("max_pages")
            )
        except ParseFailure as exc:
            failure = (exc.code, str(exc))
        except ValueError as exc:
            return self._detail(request, "parse", 422, "invalid", f"Bad page selection: {exc}")
        if self.page_suffix:
            pages = [ParsedPage(p.number, p.text + self.page_suffix) for p in pages]
        with self._lock:
            if self._fail_next:
                failure = self._fail_next.pop(0)
            job = ParseJob(
                job_id=f"pjb-{uuid.uuid4().hex}",
                file_id=stored.file_id,
                file_name=stored.name,
                content_type=stored.content_type,
                size=len(stored.data),
                tier=tier,
                version=version,
                pages=len(pages),
                status="PENDING",
                error_code=None,
                error_message=None,
                polls=0,
                created=request.time,
                finished=None,
                request=config,
                query=dict(request.query),
                headers=request.recorded_headers(),
                page_results=pages,
                pending_left=max(0, self.pending_polls),
                planned_failure=failure,
                webhook=_first_webhook(config),
            )
            self._jobs[job.job_id] = job
            if job.webhook is not None:
                timer = threading.Timer(self.webhook_delay, self._run_to_end, (job.job_id,))
                timer.daemon = True
                timer.start()
            self._record_locked(request, "parse", 200, "ok")
            return Response.of_json(200, _job_json(job, usage=False))

    def _read_locked(self, request: Request, route: str, job: ParseJob) -> Response:
        """Every read of a job moves it on, as time would: RUNNING, then its end."""
        job.polls += 1
        if job.status in ("PENDING", "RUNNING"):
            if job.pending_left > 0:
                job.pending_left -= 1
                job.status = "RUNNING"
            else:
                self._end_locked(job, request.time)
                if job.webhook is not None:
                    threading.Thread(target=self._deliver, args=(job.job_id,), daemon=True).start()
        self._record_locked(request, route, 200, "ok")
        if route == "result" and self.malformed_results:
            return Response(200, b'{"job": {"id": "cut sho', "application/json", {})
        expand = set(request.query_values("expand"))
        body: dict[str, Any] = {"job": _job_json(job, usage="usage" in expand)}
        if job.status == "COMPLETED":
            body.update(_content(job, expand))
        return Response.of_json(200, body)

    @staticmethod
    def _end_locked(job: ParseJob, when: float) -> None:
        if job.planned_failure is not None:
            job.status = "FAILED"
            job.error_code, job.error_message = job.planned_failure
        else:
            job.status = "COMPLETED"  # billed from now on
        job.finished = when

    def _run_to_end(self, job_id: str) -> None:
        """A job with a webhook ends by itself, as on the service, and reports it."""
        with self._lock:
            job = self._jobs[job_id]
            if job.status in ("PENDING", "RUNNING"):
                self._end_locked(job, time.time())
        self._deliver(job_id)

    def _deliver(self, job_id: str) -> None:
        """Post an ended job's event to its webhook, once."""
        with self._lock:
            job = self._jobs[job_id]
            event = _WEBHOOK_EVENTS.get(job.status)
            if job.webhook is None or job.webhook_sent or event is None or self.drop_webhooks:
                return
            job.webhook_sent = True
            webhook = dict(job.webhook)
            payload = {
                "event_id": str(uuid.uuid4()),
                "event_type": event,
                "timestamp": datetime.now(UTC).isoformat(),
                "data": {
                    "job_id": job.job_id,
                    "status": job.status,
                    "error_message": job.error_message,
                },
            }
        wanted = webhook.get("webhook_events")
        if wanted and event not in wanted:
            return
        encoded = json.dumps(payload)
        if webhook.get("webhook_output_format") != "json":
            encoded = json.dumps(encoded)
        body = encoded.encode("utf-8")
        headers = {str(k): str(v) for k, v in (webhook.get("webhook_headers") or {}).items()}
        headers["Content-Type"] = "application/json"
        secret = webhook.get("webhook_signing_secret")
        if secret:
            digest = hmac.new(str(secret).encode("utf-8"), body, hashlib.sha256).hexdigest()
            headers["LC-Signature"] = f"sha256={digest}"
        url = str(webhook["webhook_url"])
        post = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(post, timeout=_WEBHOOK_TIMEOUT_S) as answer:
                status = answer.status
        except urllib.error.HTTPError as refused:
            status = refused.code
        except (OSError, ValueError):
            status = 0
        with self._delivered:
            self._deliveries.append(WebhookDelivery(job_id, event, url, status))
            self._delivered.notify_all()

    def _store_locked(self, upload: FilePart, purpose: str) -> StoredFile:
        stored = StoredFile(
            f"dfl-{uuid.uuid4().hex}", upload.filename, upload.content_type, purpose, upload.data
        )
        self._files[stored.file_id] = stored
        return stored

    def _fault(self, request: Request, route: str, fault: Fault, outcome: str) -> Response:
        assert fault.status is not None
        message = fault.message or _DEFAULT_MESSAGES.get(fault.status, "Injected fault.")
        response = self._detail(request, route, fault.status, outcome, message)
        response.headers.update(fault.response_headers())
        return response

    def _detail(
        self, request: Request, route: str, status: int, outcome: str, message: str
    ) -> Response:
        with self._lock:
            return self._detail_locked(request, route, status, outcome, message)

    def _detail_locked(
        self, request: Request, route: str, status: int, outcome: str, message: str
    ) -> Response:
        self._record_locked(request, route, status, outcome)
        return Response.of_json(status, {"detail": message})

    def _record(self, request: Request, route: str, status: int, outcome: str) -> None:
        with self._lock:
            self._record_locked(request, route, status, outcome)

    def _record_locked(self, request: Request, route: str, status: int, outcome: str) -> None:
        self._records.append(
            HttpRecord(
                time=request.time,
                method=request.method,
                path=request.path,
                route=route,
                status=status,
                outcome=outcome,
                headers=request.recorded_headers(),
                query=dict(request.query),
            )
        )


def _first_webhook(config: dict[str, Any]) -> dict[str, Any] | None:
    hooks = config.get("webhook_configurations")
    first = hooks[0] if isinstance(hooks, list) and hooks else None
    return dict(first) if isinstance(first, dict) and first.get("webhook_url") else None


def _route(request: Request) -> tuple[str, str | None]:
    """The route a request is on, and the job it names."""
    if _FILES.match(request.path):
        return "upload", None
    if _PARSE.match(request.path):
        return "parse", None
    match = _JOB.match(request.path)
    if match is None:
        return "unknown", None
    return ("result" if request.query_values("expand") else "status"), match["job"]


def _file_json(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.file_id,
        "name": stored.name,
        "project_id": PROJECT_ID,
        "file_type": stored.name.rsplit(".", 1)[-1] if "." in stored.name else None,
        "purpose": stored.purpose,
    }


def _job_json(job: ParseJob, *, usage: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.job_id,
        "project_id": PROJECT_ID,
        "status": job.status,
        "tier": job.tier,
        "error_message": job.error_message,
    }
    if usage:
        out["usage"] = {"credits": float(job.credits) if job.status == "COMPLETED" else None}
    return out


def _content(job: ParseJob, expand: set[str]) -> dict[str, Any]:
    """What `expand` asks of a COMPLETED job; the fast tier has no markdown to give."""
    out: dict[str, Any] = {}
    markdown = job.tier != "fast"
    if "markdown" in expand and markdown:
        out["markdown"] = {
            "pages": [
                {"page_number": p.number, "markdown": p.markdown, "success": True}
                for p in job.page_results
            ]
        }
    if "markdown_full" in expand and markdown:
        out["markdown_full"] = "\n\n".join(p.markdown for p in job.page_results)
    if "text" in expand:
        out["text"] = {
            "pages": [{"page_number": p.number, "text": p.text} for p in job.page_results]
        }
    if "text_full" in expand:
        out["text_full"] = "\n\n".join(p.text for p in job.page_results)
    if "job_metadata" in expand:
        out["job_metadata"] = {"job_pages": job.pages, "credits_used": float(job.credits)}
    return out
