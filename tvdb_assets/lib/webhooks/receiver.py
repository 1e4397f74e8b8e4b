"""`tvdb webhook serve`: an HTTP receiver for signed deliveries (Starlette under uvicorn).

    POST /webhooks/uploads     upload notices, X-TVDB-Signature (TVDB_WEBHOOK_SECRET)
    POST /webhooks/llamaparse  LlamaParse job events, LC-Signature (TVDB_LLAMA_WEBHOOK_SECRET;
                               without it the route does not exist)
    GET  /healthz              200: the receiver is up

A delivery is checked in this order, and answered at the first check it fails: its size
(413), its signature and, for upload notices, the signed time (401), its body (400),
whether it was recorded before (409). Then it is recorded in `webhook_events` and
answered 202; 503 when the database cannot take it (the sender tries again later).
Nothing of a body is parsed before its signature holds, and no answer or log line
repeats what was sent.

Replays: an upload notice's id is the hash of its signed message (time and body), so the
same delivery sent twice is refused while a sender's retry, signed anew, is not. LlamaCloud
signs no time or id, so its events are told apart by job and event type: a job reports
each outcome once, and the parser waiting for it reads it once.
"""

import hashlib
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tvdb_assets.lib.store import webhook_events
from tvdb_assets.lib.webhooks import payloads, signatures

UPLOADS_PATH = "/webhooks/uploads"
LLAMAPARSE_PATH = "/webhooks/llamaparse"
HEALTH_PATH = "/healthz"
# An upload notice is a few hundred bytes; a job event carries no parsed text (the parser
# fetches results itself), but leave it room for what the service may add.
MAX_UPLOAD_BODY = 64 * 1024
MAX_LLAMAPARSE_BODY = 1024 * 1024
KEEP_CONSUMED_DAYS = 30  # consumed events are deleted at start-up after this long
_RETRY_AFTER_S = "5"
T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Secrets:
    uploads: str
    llamaparse: str | None = None  # None: LlamaParse events are not received

    def __repr__(self) -> str:  # a traceback's locals never show them
        return "Secrets(...)"


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def build_app(
    secrets: Secrets,
    database_url: str,
    clock: Callable[[], float] = time.time,
    pool_wait: float = 5.0,
) -> Starlette:
    """The receiver as an ASGI app, writing to `database_url` (migrated already); a
    delivery waits up to `pool_wait` seconds for a database connection, then gets 503."""
    pool = ConnectionPool(
        database_url,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True},
        open=False,
        name="webhooks",
        # A connection the database dropped (a restart) is replaced before a delivery
        # would meet it: a round trip per delivery, which their rate affords.
        check=ConnectionPool.check_connection,
    )

    def record(write: Callable[[psycopg.Connection], int | None]) -> int | None:
        try:
            with pool.connection(timeout=pool_wait) as conn:
                return write(conn)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.error("webhook not recorded: database unavailable (%s)", type(exc).__name__)
            raise _Refused(503, "database unavailable; try again later") from None

    async def uploads(request: Request) -> Response:
        body = await _body(request, MAX_UPLOAD_BODY)
        header = request.headers.get(signatures.UPLOAD_HEADER)
        try:
            sent_at = signatures.verify_upload(secrets.uploads, header, body, clock())
        except signatures.SignatureError as exc:
            raise _Refused(401, str(exc)) from None
        notice = _read(payloads.upload_notice, body)
        delivery = "uploads:" + hashlib.sha256(b"%d." % sent_at + body).hexdigest()
        row = await run_in_threadpool(
            record,
            lambda conn: webhook_events.record_upload(
                conn, delivery, notice.event, notice.bucket, notice.key, notice.etag, sent_at
            ),
        )
        return _accepted(row)

    async def llamaparse(request: Request) -> Response:
        assert secrets.llamaparse is not None
        body = await _body(request, MAX_LLAMAPARSE_BODY)
        header = request.headers.get(signatures.LLAMACLOUD_HEADER)
        try:
            signatures.verify_llamacloud(secrets.llamaparse, header, body)
        except signatures.SignatureError as exc:
            raise _Refused(401, str(exc)) from None
        event = _read(payloads.parse_event, body)
        delivery = f"llamaparse:{event.job_id}:{event.event}"
        row = await run_in_threadpool(
            record,
            lambda conn: webhook_events.record_job_event(conn, delivery, event.event, event.job_id),
        )
        return _accepted(row)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(pool.open)
        try:
            yield
        finally:
            await run_in_threadpool(pool.close)

    routes = [
        Route(UPLOADS_PATH, _guarded(uploads), methods=["POST"]),
        Route(HEALTH_PATH, health, methods=["GET"]),
    ]
    if secrets.llamaparse is not None:
        routes.append(Route(LLAMAPARSE_PATH, _guarded(llamaparse), methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan)


def bind(host: str, port: int) -> socket.socket:
    """The listening address, bound now so that a port in use is one clear error (OSError)
    and port 0 is a free one, whose number `getsockname` tells."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def serve(sock: socket.socket, secrets: Secrets, database_url: str) -> None:
    """Answer deliveries on `sock` until SIGINT or SIGTERM."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        build_app(secrets, database_url),
        host=host,
        port=port,
        log_config=None,  # its records go to the command's log handlers, masked
        server_header=False,
        # Behind a proxy on this host, the client's address is the one it forwards.
        proxy_headers=True,
        timeout_keep_alive=5,
        limit_concurrency=64,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again under
    # the handler it found (0.54, `Server.capture_signals`): with these, that ends in a
    # plain return, so the command exits 0 and its log handlers flush.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: object) -> None:
    log.info("webhook receiver stopped by signal %d", signum)


def _guarded(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Answer a refused delivery with its status and reason, and log it without a byte of
    what was sent."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except _Refused as refused:
            client = request.client.host if request.client else "?"
            log.warning(
                "webhook %s from %s refused: %d %s",
                request.url.path, client, refused.status, refused.reason,
            )  # fmt: skip
            headers = {"Retry-After": _RETRY_AFTER_S} if refused.status == 503 else None
            return JSONResponse({"error": refused.reason}, refused.status, headers=headers)

    return guarded


async def _body(request: Request, limit: int) -> bytes:
    """The raw body, read no further than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _read(parse: Callable[[bytes], T], body: bytes) -> T:
    try:
        return parse(body)
    except payloads.BadPayload as exc:
        raise _Refused(400, str(exc)) from None


def _accepted(row: int | None) -> Response:
    if row is None:
        raise _Refused(409, "delivery already received")
    return JSONResponse({"status": "accepted", "id": row}, 202)
