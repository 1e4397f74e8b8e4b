"""A loopback HTTP server base for the fakes: stdlib only, one daemon thread, port 0.

Subclasses implement `handle(request) -> Response | None`; None drops the connection without
an answer (the client sees a protocol error). Everything binds 127.0.0.1, so no test traffic
can leave the machine.
"""

import json
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from tvdb_assets_tests.fakes.faults import Fault, FaultPlan

HOST = "127.0.0.1"
# Bounds: an idle keep-alive connection is dropped after this long, and a chunked body may
# not have more chunks than this, so no handler thread can loop or block forever.
_IDLE_TIMEOUT_S = 30.0
_MAX_CHUNKS = 1_000_000
_STOP_JOIN_S = 5.0


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    time: float  # wall clock when the request arrived
    raw_query: str = ""  # as sent: `query` keeps one value of a repeated name

    def query_values(self, name: str) -> list[str]:
        """Every value of a query parameter repeated (`a=1&a=2`) or comma-joined (`a=1,2`)."""
        pairs = parse_qsl(self.raw_query, keep_blank_values=True)
        return [part for key, value in pairs if key == name for part in value.split(",") if part]

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def recorded_headers(self) -> dict[str, str]:
        """Headers worth keeping in a record: all of them except the credential."""
        return {k: v for k, v in self.headers.items() if k != "authorization"}


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Self:
        body = json.dumps(payload).encode("utf-8")
        return cls(status, body, "application/json", dict(headers or {}))

    @classmethod
    def of_text(cls, status: int, text: str, headers: dict[str, str] | None = None) -> Self:
        return cls(status, text.encode("utf-8"), "text/plain; charset=utf-8", dict(headers or {}))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Don't join handler threads on close: a client may hold a keep-alive connection open.
    block_on_close = False
    fake: "FakeServer"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping its keep-alive connection (or timing out) is normal in tests;
        # socketserver would print a traceback for it.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs
    timeout = _IDLE_TIMEOUT_S
    server: _HTTPServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests assert on records, not on stderr noise

    def _dispatch(self) -> None:
        fake = self.server.fake
        fake._begin()
        try:
            self._serve(fake)
        finally:
            fake._end()

    def _serve(self, fake: "FakeServer") -> None:
        arrived = time.time()
        try:
            body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        url = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = Request(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers=headers,
            body=body,
            time=arrived,
            raw_query=url.query,
        )
        try:
            response = fake.handle(request)
        except Exception as exc:  # a bug in the fake must show up as a 500, not a hang
            response = Response.of_json(500, {"error": {"message": f"fake crashed: {exc!r}"}})
        if response is None:
            self.close_connection = True
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. timed out during a delay fault): nothing to answer.
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            for _ in range(_MAX_CHUNKS):
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()  # blank line after the last chunk (no trailers)
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            raise ValueError("too many chunks")
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


class FakeServer(ABC):
    """Run `handle` behind a loopback HTTP server; use as a context manager."""

    def __init__(self) -> None:
        self.faults = FaultPlan()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    def handle(self, request: Request) -> Response | None:
        """Answer one request (called on a handler thread)."""

    def outage(
        self, status: int = 503, *, retry_after: float | None = None, message: str | None = None
    ) -> None:
        """Fail every request (on every route) with `status` until `recover()`."""
        self.faults.outage(Fault(status=status, retry_after=retry_after, message=message))

    def recover(self) -> None:
        self.faults.recover()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        """http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._stopping.clear()
        httpd = _HTTPServer((HOST, 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a delay fault
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(_STOP_JOIN_S)
        self._httpd = None
        self._thread = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is being handled; False if still busy after `timeout`.

        A client that timed out does not stop the fake: the handler finishes (and bills)
        later, as the real service would. Call this before asserting on records.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def _begin(self) -> None:
        with self._idle:
            self._in_flight += 1

    def _end(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def sleep(self, seconds: float) -> None:
        """Sleep on a handler thread, cut short when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
