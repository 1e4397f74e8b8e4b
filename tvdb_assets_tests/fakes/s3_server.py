"""An S3 API server on loopback: moto's server mode, which boto3 talks to as to S3.

It is moto's own WSGI app served the way `moto.server.ThreadedMotoServer` serves it, on a
free port, with one rule of S3's that moto leaves out: a presigned link past its expiry
is refused (403, "Request has expired"), so a test can see a link stop working.

    from tvdb_assets_tests.fakes.s3_server import fake_s3, s3_server  # noqa: F401
"""

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs
from urllib.request import Request, urlopen

import pytest

ACCESS_KEY_ID = "AKIDLOOPBACKTESTKEY1"
SECRET_ACCESS_KEY = "loopback-test-secret-key-not-a-real-one"
REGION = "us-east-1"

_EXPIRED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)


class ExpiringLinks:
    """WSGI middleware: refuse a SigV4 presigned request whose X-Amz-Date + X-Amz-Expires
    has passed, as S3 does."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Any) -> Any:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if "X-Amz-Date" in query and "X-Amz-Expires" in query:
            signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
            until = signed.replace(tzinfo=UTC) + timedelta(seconds=int(query["X-Amz-Expires"][0]))
            if datetime.now(UTC) > until:
                start_response(
                    "403 Forbidden",
                    [("Content-Type", "application/xml"), ("Content-Length", str(len(_EXPIRED)))],
                )
                return [_EXPIRED]
        return self.app(environ, start_response)


@dataclass
class FakeS3:
    """A running server: `endpoint_url`, and a boto3 client to arrange a test's bucket."""

    endpoint_url: str

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def reset(self) -> None:
        """Forget every bucket (moto's own reset endpoint)."""
        with urlopen(Request(f"{self.endpoint_url}/moto-api/reset", method="POST")) as answer:
            answer.read()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[FakeS3]:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = ExpiringLinks(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="fake-s3", daemon=True)
    thread.start()
    try:
        yield FakeS3(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def fake_s3(s3_server: FakeS3) -> FakeS3:
    """The session's server, emptied for this test."""
    s3_server.reset()
    return s3_server
