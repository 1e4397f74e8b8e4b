"""Signed deliveries for the webhook receiver, and the receiver itself under a real uvicorn
in a thread of the test's process."""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from tvdb_assets.lib.webhooks import receiver, signatures

SECRET = "whsec-uploads-0123456789abcdef"
LLAMA_SECRET = "whsec-llama-fedcba9876543210"


def encode(payload: object) -> bytes:
    return json.dumps(payload).encode()


def signed(body: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    t = int(time.time() if at is None else at)
    return {signatures.UPLOAD_HEADER: signatures.sign_upload(secret, body, t)}


def lc_signed(body: bytes, secret: str = LLAMA_SECRET) -> dict[str, str]:
    return {signatures.LLAMACLOUD_HEADER: signatures.sign_llamacloud(secret, body)}


@contextmanager
def receiver_thread(database_url: str, pool_wait: float = 5.0) -> Iterator[str]:
    """The receiver's app under a real uvicorn on a free loopback port."""
    sock = receiver.bind("127.0.0.1", 0)
    secrets = receiver.Secrets(SECRET, LLAMA_SECRET)
    app = receiver.build_app(secrets, database_url, pool_wait=pool_wait)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
