"""FakeLlamaParse: the LlamaParse job API as `llama_cloud_services.LlamaParse` calls it.

Routes (relative to base_url, which is the bare "http://127.0.0.1:PORT"; both the "/api" and
"/api/v1" prefixes are served because the SDK uses both):
  POST /api/parsing/upload                       multipart: `file` + form fields -> {"id", ...}
  GET  /api/parsing/job/{id}                     {"id", "status", "error_code", "error_message"}
  GET  /api/parsing/job/{id}/result/{type}       markdown | text | json
  GET  /api/v1/parsing/job/{id}/result/raw/{type}  plain markdown/text (JobResult.get_markdown)
Status values are the SDK's: PENDING, SUCCESS, ERROR (CANCELED is never produced).

The upload is parsed for real (see documents.py). A job answers PENDING for `pending_polls`
status polls, then SUCCESS (billed: `billed_pages` grows by its pages) or ERROR.
"""

import dataclasses
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tvdb_assets_tests.fakes.documents import (
    ParsedPage,
    ParseFailure,
    decorate,
    extract_pages,
    select_pages,
)
from tvdb_assets_tests.fakes.faults import Fault
from tvdb_assets_tests.fakes.multipart import parse_form
from tvdb_assets_tests.fakes.server import FakeServer, Request, Response

DEFAULT_API_KEY = "llx-fake-test-key"
DEFAULT_PAGE_SEPARATOR = "\n---\n"  # the server's default, and the SDK's split_by_page default
ROUTES = ("upload", "status", "result")

_ROUTE = re.compile(
    r"^/api(?:/v1)?/parsing/(?:(?P<upload>upload)"
    r"|job/(?P<job>[^/]+)(?:/result/(?P<raw>raw/)?(?P<kind>markdown|text|json))?)/?$"
)
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
    route: str  # upload | status | result | unknown
    status: int  # 0 when the connection was dropped without an answer
    outcome: str  # ok | fault | outage | auth | invalid | not_found
    headers: dict[str, str]  # lower-cased, minus authorization
    query: dict[str, str]  # e.g. organization_id / project_id


@dataclass(slots=True)
class ParseJob:
    """A job as the fake sees it; `jobs` hands out copies."""

    job_id: str
    file_name: str
    content_type: str | None
    size: int  # uploaded bytes
    pages: int  # pages parsed (and billed, once SUCCESS)
    status: str  # PENDING | SUCCESS | ERROR
    error_code: str | None
    error_message: str | None
    polls: int  # status polls answered
    created: float
    finished: float | None
    form: dict[str, str]  # the upload's form fields, as sent
    query: dict[str, str]
    headers: dict[str, str]  # upload request headers, lower-cased, minus authorization
    page_results: list[ParsedPage] = field(default_factory=list, repr=False)
    pending_left: int = field(default=0, repr=False)
    planned_failure: tuple[str, str] | None = field(default=None, repr=False)


class FakeLlamaParse(FakeServer):
    """Loopback stand-in for LlamaParse (LlamaCloud parsing API)."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, pending_polls: int = 0) -> None:
        super().__init__()
        self.api_key = api_key
        # Status polls a new job answers PENDING before finishing; read at upload time.
        self.pending_polls = pending_polls
        self._lock = threading.Lock()
        self._jobs: dict[str, ParseJob] = {}
        self._records: list[HttpRecord] = []
        self._uploads = 0
        self._fail_next: list[tuple[str, str]] = []
        # Appended to every page's result: lets a test make the service send what no file
        # holds (NULs, unpaired surrogates).
        self.page_suffix = ""
        self.malformed_results = False  # results answered as JSON cut short

    # --- what tests read -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Pass as `LlamaParse(base_url=...)`."""
        return self.root_url

    def env(self) -> dict[str, str]:
        """Environment variables that point the llama_cloud_services SDK here."""
        return {"LLAMA_CLOUD_API_KEY": self.api_key, "LLAMA_CLOUD_BASE_URL": self.base_url}

    @property
    def jobs(self) -> list[ParseJob]:
        """Copies of every accepted job, in upload order."""
        with self._lock:
            return [dataclasses.replace(job) for job in self._jobs.values()]

    def job(self, job_id: str) -> ParseJob:
        with self._lock:
            return dataclasses.replace(self._jobs[job_id])

    @property
    def billed_pages(self) -> int:
        """Pages of the jobs that finished SUCCESS."""
        with self._lock:
            return sum(job.pages for job in self._jobs.values() if job.status == "SUCCESS")

    @property
    def billable_pages(self) -> int:
        """What the real service would eventually charge: `billed_pages` plus the pages of
        accepted jobs still PENDING that would succeed (e.g. ones a client abandoned after
        its upload timed out: the server had accepted them anyway)."""
        with self._lock:
            return sum(
                job.pages
                for job in self._jobs.values()
                if job.status == "SUCCESS"
                or (job.status == "PENDING" and job.planned_failure is None)
            )

    @property
    def uploads(self) -> int:
        """Upload requests received, refused ones included (so SDK retries show up)."""
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
        """Queue faults for requests on `route` (upload | status | result), one per request."""
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {route!r}")
        self.faults.script(faults, route)

    def fail_next_jobs(
        self, n: int = 1, error: str = "Injected job failure.", code: str = "INJECTED_FAILURE"
    ) -> None:
        """The next `n` accepted uploads end with status ERROR (after their pending polls)."""
        with self._lock:
            self._fail_next.extend([(code, error)] * n)

    def clear_faults(self) -> None:
        self.faults.clear()
        with self._lock:
            self._fail_next.clear()

    # --- serving ---------------------------------------------------------------------

    def handle(self, request: Request) -> Response | None:
        match = _ROUTE.match(request.path)
        route = "unknown"
        if match is not None:
            route = "upload" if match["upload"] else "result" if match["kind"] else "status"
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

        if match is None:
            return self._detail(request, route, 404, "not_found", "Not Found")
        expected = "POST" if route == "upload" else "GET"
        if request.method != expected:
            return self._detail(request, route, 405, "invalid", "Method Not Allowed")
        if route == "upload":
            return self._upload(request)
        with self._lock:
            job = self._jobs.get(match["job"])
            if job is None:
                response = self._detail_locked(request, route, 404, "not_found", "Job not found")
            elif route == "status":
                response = self._status_locked(request, job)
            else:
                response = self._result_locked(request, job, match["kind"], bool(match["raw"]))
        return response

    def _upload(self, request: Request) -> Response:
        try:
            form = parse_form(request.headers.get("content-type", ""), request.body)
        except ValueError as exc:
            return self._detail(request, "upload", 400, "invalid", str(exc))
        upload = form.files.get("file")
        if upload is None:
            # input_url / input_s3_path uploads would need the fake to fetch: not supported.
            return self._detail(request, "upload", 400, "invalid", "No file was uploaded.")
        failure: tuple[str, str] | None = None
        pages: list[ParsedPage] = []
        try:
            pages = select_pages(
                extract_pages(upload.data),
                form.fields.get("target_pages"),
                form.fields.get("max_pages"),
            )
        except ParseFailure as exc:
            failure = (exc.code, str(exc))
        except ValueError as exc:
            return self._detail(request, "upload", 400, "invalid", f"Bad page selection: {exc}")
        if self.page_suffix:
            pages = [ParsedPage(p.number, p.text + self.page_suffix) for p in pages]
        with self._lock:
            if self._fail_next:
                failure = self._fail_next.pop(0)
            job = ParseJob(
                job_id=str(uuid.uuid4()),
                file_name=upload.filename,
                content_type=upload.content_type,
                size=len(upload.data),
                pages=len(pages),
                status="PENDING",
                error_code=None,
                error_message=None,
                polls=0,
                created=request.time,
                finished=None,
                form=dict(form.fields),
                query=dict(request.query),
                headers=request.recorded_headers(),
                page_results=pages,
                pending_left=max(0, self.pending_polls),
                planned_failure=failure,
            )
            self._jobs[job.job_id] = job
            self._record_locked(request, "upload", 200, "ok")
        return Response.of_json(200, _job_status(job))

    def _status_locked(self, request: Request, job: ParseJob) -> Response:
        job.polls += 1
        if job.status == "PENDING":
            if job.pending_left > 0:
                job.pending_left -= 1
            elif job.planned_failure is not None:
                job.status = "ERROR"
                job.error_code, job.error_message = job.planned_failure
                job.finished = request.time
            else:
                job.status = "SUCCESS"  # billed from now on
                job.finished = request.time
        self._record_locked(request, "status", 200, "ok")
        return Response.of_json(200, _job_status(job))

    def _result_locked(self, request: Request, job: ParseJob, kind: str, raw: bool) -> Response:
        if job.status != "SUCCESS":
            message = f"Job {job.job_id} has status {job.status}: no result."
            return self._detail_locked(request, "result", 400, "invalid", message)
        self._record_locked(request, "result", 200, "ok")
        if self.malformed_results:
            return Response(200, b'{"markdown": "cut sho', "application/json", {})
        if kind == "json":
            return Response.of_json(200, {"pages": _json_pages(job), **_metadata(job)})
        text = _joined(job, markdown=kind == "markdown")
        if raw:
            return Response.of_text(200, text)
        return Response.of_json(200, {kind: text, **_metadata(job)})

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


def _job_status(job: ParseJob) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "status": job.status,
        "error_code": job.error_code,
        "error_message": job.error_message,
    }


def _metadata(job: ParseJob) -> dict[str, Any]:
    return {
        "job_metadata": {
            "credits_used": float(job.pages),
            "job_credits_usage": job.pages,
            "job_pages": job.pages,
            "job_auto_mode_triggered_pages": 0,
            "job_is_cache_hit": False,
        }
    }


def _page_markdown(job: ParseJob, page: ParsedPage) -> str:
    prefix = decorate(job.form.get("page_prefix"), page)
    suffix = decorate(job.form.get("page_suffix"), page)
    return f"{prefix}{page.markdown}{suffix}"


def _joined(job: ParseJob, *, markdown: bool) -> str:
    """The whole document: pages joined with the upload's page_separator (or the default)."""
    out = ""
    for i, page in enumerate(job.page_results):
        if i:
            out += decorate(job.form.get("page_separator"), page, DEFAULT_PAGE_SEPARATOR)
        out += _page_markdown(job, page) if markdown else page.text
    return out


def _json_pages(job: ParseJob) -> list[dict[str, Any]]:
    # Keys as the SDK's `Page` model names them. No "job_id"/"file_name" at top level:
    # JobResult(**result) would then get them twice and raise TypeError.
    return [
        {
            "page": page.number,
            "text": page.text,
            "md": _page_markdown(job, page),
            "images": [],
            "charts": [],
            "tables": [],
            "layout": [],
            "items": [{"type": "text", "value": page.text, "md": page.markdown}],
            "status": "OK",
            "links": [],
            "triggeredAutoMode": False,
            "parsingMode": "fake",
            "noStructuredContent": True,
            "noTextContent": not page.text,
        }
        for page in job.page_results
    ]
