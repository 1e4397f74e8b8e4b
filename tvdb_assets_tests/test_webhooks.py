"""Signed webhooks: `tvdb webhook serve` as a real process and the receiver under a real
uvicorn, receiving signed, tampered, stale, replayed, unsigned and malformed deliveries;
and a real-mode parse whose jobs report their end by webhook from the loopback fake."""

import hashlib
import hmac
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tvdb_assets import runner
from tvdb_assets.definitions import build_defs
from tvdb_assets.lib import services, store
from tvdb_assets.lib.store import webhook_events
from tvdb_assets.lib.webhooks import receiver, signatures
from tvdb_assets.lib.webhooks.signatures import SignatureError
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.corpus import write_pdf
from tvdb_assets_tests.fakes.llamaparse_fake import FakeLlamaParse
from tvdb_assets_tests.notices import (
    LLAMA_SECRET,
    SECRET,
    encode,
    lc_signed,
    receiver_thread,
    signed,
)

ETAG = '"9b2cf535f27731c974343645a3985328"'
NOTICE = {"event": "created", "bucket": "docs", "key": "reports/q1.pdf", "etag": ETAG}


def rows(project: Project) -> list[tuple]:
    with project.connect() as conn:
        return conn.execute(
            "SELECT source, event, bucket, key, etag, job_id, consumed_at IS NOT NULL "
            "FROM webhook_events ORDER BY id"
        ).fetchall()


# --- signatures ----------------------------------------------------------------------


def test_an_upload_signature_is_the_hmac_of_the_time_dot_body():
    body = encode(NOTICE)
    header = signatures.sign_upload(SECRET, body, 1_700_000_000)
    digest = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={digest}"
    assert signatures.verify_upload(SECRET, header, body, now=1_700_000_299) == 1_700_000_000
    # A sender rotating its secret signs with both: one match is enough.
    rotating = f"t=1700000000,v1={'0' * 64},v1={digest}"
    assert signatures.verify_upload(SECRET, rotating, body, now=1_700_000_000) == 1_700_000_000


@pytest.mark.parametrize(
    ("header", "now", "reason"),
    [
        (None, 0, "missing X-TVDB-Signature"),
        ("", 0, "missing X-TVDB-Signature"),
        ("v1=" + "a" * 64, 0, "malformed"),
        ("t=1700000000", 0, "malformed"),
        ("t=１７,v1=" + "a" * 64, 0, "malformed"),  # fullwidth digits
        ("t=1700000000,v1=xyz", 0, "malformed"),
        ("t=1700000000,t=1700000001,v1=" + "a" * 64, 0, "malformed"),
        ("t=1700000000,v1=" + "a" * 64 + "," * 2000, 0, "malformed"),
        ("t=1700000000,v1=" + "a" * 64, 1_700_000_000, "does not match"),
    ],
)
def test_malformed_or_wrong_upload_signatures_are_refused(header, now, reason):
    with pytest.raises(SignatureError, match=reason):
        signatures.verify_upload(SECRET, header, b"{}", now=now)


def test_a_genuine_signature_outside_the_tolerance_is_refused_either_way():
    body = encode(NOTICE)
    header = signatures.sign_upload(SECRET, body, 1_700_000_000)
    for now in (1_700_000_301, 1_699_999_699):
        with pytest.raises(SignatureError, match="5-minute tolerance"):
            signatures.verify_upload(SECRET, header, body, now=now)


def test_llamacloud_signatures_are_the_hmac_of_the_raw_body():
    body = b'{"event_type": "parse.success"}'
    header = signatures.sign_llamacloud(LLAMA_SECRET, body)
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", header)
    signatures.verify_llamacloud(LLAMA_SECRET, header, body)
    signatures.verify_llamacloud(LLAMA_SECRET, header.upper().replace("SHA256", "sha256"), body)
    for bad in (None, "", "sha1=" + "a" * 64, "sha256=" + "a" * 63, header.replace("=", ":")):
        with pytest.raises(SignatureError):
            signatures.verify_llamacloud(LLAMA_SECRET, bad, body)
    with pytest.raises(SignatureError, match="does not match"):
        signatures.verify_llamacloud(LLAMA_SECRET, header, body + b" ")


# --- the store -----------------------------------------------------------------------


def test_pending_uploads_by_bucket_and_prefix_until_consumed(pipeline_url):
    with store.connect(pipeline_url, autocommit=True) as conn:
        ids = [
            webhook_events.record_upload(conn, f"d{n}", event, bucket, key, etag, 1_700_000_000)
            for n, (event, bucket, key, etag) in enumerate(
                [
                    ("created", "docs", "reports/q1.pdf", "e1"),
                    ("created", "docs", "notes/a.md", "e2"),
                    ("deleted", "docs", "reports/old.pdf", None),
                    ("created", "other", "reports/q1.pdf", "e3"),
                ]
            )
        ]
        assert None not in ids
        assert webhook_events.record_upload(conn, "d0", "created", "x", "y", None, 0) is None

        pending = webhook_events.pending_uploads(conn, "docs", "reports/")
        assert [(e.event, e.key, e.etag) for e in pending] == [
            ("created", "reports/q1.pdf", "e1"),
            ("deleted", "reports/old.pdf", None),
        ]
        assert len(webhook_events.pending_uploads(conn, "docs")) == 3
        # A prefix is a prefix, not a LIKE pattern.
        assert webhook_events.pending_uploads(conn, "docs", "reports%") == []
        assert webhook_events.mark_consumed(conn, [e.id for e in pending]) == 2
        assert webhook_events.mark_consumed(conn, [e.id for e in pending]) == 0
        assert [e.key for e in webhook_events.pending_uploads(conn, "docs")] == ["notes/a.md"]

        # Consumed long enough ago, an event goes; pending ones stay whatever their age.
        conn.execute("UPDATE webhook_events SET received_at = now() - interval '90 days'")
        conn.execute(
            "UPDATE webhook_events SET consumed_at = now() - interval '31 days' "
            "WHERE consumed_at IS NOT NULL"
        )
        assert webhook_events.prune(conn, 30) == 2
        assert conn.execute("SELECT count(*) FROM webhook_events").fetchone() == (2,)


# --- a real `tvdb webhook serve` -------------------------------------------------------


@contextmanager
def serve_process(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """`tvdb webhook serve --port 0` and its base URL, stopped by SIGTERM afterwards."""
    command = [sys.executable, "-m", "tvdb_assets.cli", "webhook", "serve", "--port", "0"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else ""
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, f"no address in {line!r}"
        base = found.group(0)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TVDB_WEBHOOK_SECRET", None)
    env.pop("TVDB_LLAMA_WEBHOOK_SECRET", None)
    env.update(extra)
    return env


def test_serve_refuses_to_start_without_a_secret(project):
    for secret in (None, "tiny-s3cr"):
        env = serve_env(**({"TVDB_WEBHOOK_SECRET": secret} if secret else {}))
        done = subprocess.run(
            [sys.executable, "-m", "tvdb_assets.cli", "webhook", "serve", "--port", "0"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("tvdb webhook serve: TVDB_WEBHOOK_SECRET is")
        assert "tiny-s3cr" not in line


def test_upload_notices_signed_tampered_stale_replayed_unsigned_and_malformed(project):
    env = serve_env(TVDB_WEBHOOK_SECRET=SECRET)
    with serve_process(env) as (base, process):
        url = f"{base}/webhooks/uploads"

        def post(body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
            return httpx.post(url, content=body, headers=headers or {}, timeout=10)

        body = encode(NOTICE)
        headers = signed(body)
        first = post(body, headers)
        assert first.status_code == 202 and first.json()["status"] == "accepted"
        replay = post(body, headers)
        assert (replay.status_code, replay.json()) == (409, {"error": "delivery already received"})
        # The sender's retry, signed anew, is a delivery of its own.
        assert post(body, signed(body, at=time.time() - 30)).status_code == 202

        tampered = encode({**NOTICE, "key": "reports/evil.pdf"})
        assert post(tampered, headers).json() == {"error": "signature does not match"}
        assert post(tampered, headers).status_code == 401
        assert post(body, signed(body, secret="another-secret-0123456789")).status_code == 401
        stale = post(body, signed(body, at=time.time() - 360))
        assert stale.status_code == 401 and "tolerance" in stale.json()["error"]
        # A minute past the tolerance either way (its edge is tested above, on a fixed clock):
        # a loaded machine may take a second or more to deliver.
        assert post(body, signed(body, at=time.time() + 360)).status_code == 401
        assert post(body).json() == {"error": "missing X-TVDB-Signature header"}
        assert post(body, {"X-TVDB-Signature": "sha256=abc"}).status_code == 401

        def refused(raw: bytes) -> str:
            answer = post(raw, signed(raw))
            assert answer.status_code == 400, (raw[:60], answer.text)
            return str(answer.json()["error"])

        assert refused(b"not json") == "body is not valid JSON"
        assert refused(b"\xff\xfe{}") == "body is not UTF-8"
        assert refused(b"[" * 10_000 + b"]" * 10_000) == "body is nested too deeply"
        assert refused(b"[1, 2]") == "body must be a JSON object"
        assert refused(encode({**NOTICE, "event": "renamed"})).startswith("event must be one of")
        assert refused(encode({k: v for k, v in NOTICE.items() if k != "key"})) == (
            "key must be a non-empty string"
        )
        assert refused(encode({**NOTICE, "bucket": 7})) == "bucket must be a non-empty string"
        surrogate = b'{"event": "created", "bucket": "docs", "key": "a\\ud800b"}'
        assert "lone surrogate" in refused(surrogate)
        assert "NUL" in refused(encode({**NOTICE, "key": "a\x00b"}))
        assert "longer than 1024 bytes" in refused(encode({**NOTICE, "key": "k" * 1025}))

        huge = b" " * (receiver.MAX_UPLOAD_BODY + 1)
        assert post(huge, signed(huge)).status_code == 413
        assert httpx.get(url, timeout=5).status_code == 405

        # Keys as buckets hold them: spaces, unicode, deep prefixes; and every event.
        odd = "inbox/2026/Q1/Über Bericht – final (v2).pdf"
        for event, key, etag in (
            ("updated", odd, '"abc-2"'),
            ("deleted", "a/b/c/d/e/f/g/h/i.txt", None),
        ):
            raw = encode({"event": event, "bucket": "docs", "key": key, "etag": etag})
            assert post(raw, signed(raw)).status_code == 202
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # still up
        # LlamaParse events are off without their own secret.
        assert httpx.post(f"{base}/webhooks/llamaparse", content=b"{}").status_code == 404

    assert process.returncode == 0  # SIGTERM: a clean stop
    assert rows(project) == [
        ("uploads", "created", "docs", "reports/q1.pdf", NOTICE["etag"], None, False),
        ("uploads", "created", "docs", "reports/q1.pdf", NOTICE["etag"], None, False),
        ("uploads", "updated", "docs", odd, '"abc-2"', None, False),
        ("uploads", "deleted", "docs", "a/b/c/d/e/f/g/h/i.txt", None, None, False),
    ]
    with project.connect() as conn:
        pending = webhook_events.pending_uploads(conn, "docs", "inbox/2026/")
    assert [(e.event, e.key) for e in pending] == [("updated", odd)]
    log_text = (Path(os.environ["TVDB_HOME"]) / "logs" / "tvdb.log").read_text()
    assert "refused: 401 signature does not match" in log_text
    assert SECRET not in log_text and "evil" not in log_text


def test_llamaparse_events_are_verified_as_llamacloud_signs_them(project):
    env = serve_env(TVDB_WEBHOOK_SECRET=SECRET, TVDB_LLAMA_WEBHOOK_SECRET=LLAMA_SECRET)
    with serve_process(env) as (base, _):
        url = f"{base}/webhooks/llamaparse"

        def post(body: bytes, headers: dict[str, str] | None = None) -> int:
            return httpx.post(url, content=body, headers=headers or {}, timeout=10).status_code

        event = {"event_type": "parse.success", "data": {"job_id": "pjb-1", "status": "COMPLETED"}}
        body = encode(event)
        assert post(body, lc_signed(body)) == 202
        assert post(body, lc_signed(body)) == 409  # the same outcome of the same job
        # The service's default output format: the payload as a JSON string.
        failed = json.dumps(json.dumps({"event_type": "parse.error", "job_id": "pjb-2"})).encode()
        assert post(failed, lc_signed(failed)) == 202
        assert post(body, lc_signed(body, secret=SECRET)) == 401  # the uploads' secret
        assert post(body) == 401
        assert post(body, signed(body)) == 401  # an upload signature is not LlamaCloud's
        other = encode({**event, "data": {"job_id": "pjb-3"}})
        assert post(other, lc_signed(body)) == 401  # tampered
        bad = encode({"event_type": "parse.success"})
        assert post(bad, lc_signed(bad)) == 400
        bad = encode({"event_type": "<script>", "job_id": "pjb-4"})
        assert post(bad, lc_signed(bad)) == 400

    assert rows(project) == [
        ("llamaparse", "parse.success", None, None, None, "pjb-1", False),
        ("llamaparse", "parse.error", None, None, None, "pjb-2", False),
    ]


def test_a_delivery_the_database_cannot_take_is_answered_503_to_be_retried(pipeline_url):
    gone = pipeline_url.replace("/tvdb_p", "/no_such_database_")
    with receiver_thread(gone, pool_wait=0.5) as base:
        body = encode(NOTICE)
        answer = httpx.post(f"{base}/webhooks/uploads", content=body, headers=signed(body))
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert answer.json() == {"error": "database unavailable; try again later"}
        unsigned = httpx.post(f"{base}/webhooks/uploads", content=body)
        assert unsigned.status_code == 401  # refused before the database is asked


def test_a_port_in_use_is_one_clear_line(project):
    with receiver_thread(project.database_url) as base:
        port = base.rsplit(":", 1)[1]
        done = subprocess.run(
            [sys.executable, "-m", "tvdb_assets.cli", "webhook", "serve", "--port", port],
            env=serve_env(TVDB_WEBHOOK_SECRET=SECRET), capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"tvdb webhook serve: cannot listen on 127.0.0.1:{port} (Address already in use)"
    )


# --- parsing by webhook --------------------------------------------------------------


@pytest.fixture
def webhook_parsing(project, fake_llamaparse, monkeypatch) -> Iterator[FakeLlamaParse]:
    with receiver_thread(project.database_url) as base:
        monkeypatch.setenv("LLAMA_CLOUD_API_KEY", fake_llamaparse.api_key)
        monkeypatch.setenv("LLAMA_CLOUD_BASE_URL", fake_llamaparse.base_url)
        monkeypatch.setenv("TVDB_LLAMAPARSE_WEBHOOK_URL", f"{base}/webhooks/llamaparse")
        monkeypatch.setenv("TVDB_LLAMA_WEBHOOK_SECRET", LLAMA_SECRET)
        services.reset()
        yield fake_llamaparse
        services.reset()


def ingest(instance, source: Path, **config: object) -> runner.IngestSummary:
    run_config = {
        "resources": {"parser": {"config": {"mode": "real", "poll_seconds": 0, **config}}}
    }
    return runner.ingest([source], instance, build_defs(), batch_size=200, run_config=run_config)


def test_real_parsing_completes_by_webhook_and_the_ledger_equals_the_bill(
    project, instance, webhook_parsing, tmp_path, caplog
):
    fake = webhook_parsing
    caplog.set_level(logging.DEBUG)
    source = tmp_path / "reports"
    source.mkdir()
    write_pdf(source / "survey.pdf", ["Glacier survey, first page.", "Moraine samples."])
    (source / "notes.md").write_text("# Field notes\n\nCrevasse depths were logged by hand.\n")

    summary = ingest(instance, source)

    assert summary.errors == [] and summary.ingested == 2
    # Each job reported its end by webhook: the service was never asked how a job goes,
    # only for each finished job's result.
    assert [r.route for r in fake.requests if r.route in ("status", "result")] == ["result"] * 2
    assert fake.wait_webhooks(2)
    assert sorted((d.event, d.status) for d in fake.webhooks) == [("parse.success", 202)] * 2
    for job in fake.jobs:
        [config] = job.request["webhook_configurations"]
        assert config["webhook_url"].endswith("/webhooks/llamaparse")
    bill = fake.bill()
    assert bill["cost_effective"][0] == 3
    assert project.billed("llamaparse") == {
        tier: (pages, pytest.approx(usd, abs=1e-8)) for tier, (pages, usd) in bill.items()
    }
    assert [(source, event, consumed) for source, event, *_, consumed in rows(project)] == [
        ("llamaparse", "parse.success", True)
    ] * 2
    assert LLAMA_SECRET not in caplog.text  # the SDK logs each request's options at DEBUG


def test_a_failed_job_reported_by_webhook_is_a_clear_document_error(
    project, instance, webhook_parsing, tmp_path
):
    fake = webhook_parsing
    fake.fail_next_jobs(1, error="The file could not be read.")
    source = tmp_path / "one"
    source.mkdir()
    (source / "broken.md").write_text("# Broken\n\nThis one fails at the service.\n")

    summary = ingest(instance, source)

    [error] = summary.errors
    assert "LlamaParse could not parse it (The file could not be read.)" in error.reason
    assert fake.wait_webhooks(1) and [d.event for d in fake.webhooks] == ["parse.error"]
    assert project.billed("llamaparse") == {}


def test_a_lost_delivery_costs_one_status_read(project, instance, webhook_parsing, tmp_path):
    fake = webhook_parsing
    fake.drop_webhooks = True
    source = tmp_path / "one"
    source.mkdir()
    (source / "page.md").write_text("# Page\n\nNo webhook came for this one.\n")

    summary = ingest(instance, source, timeout_seconds=1.0)

    assert summary.errors == [] and summary.ingested == 1
    assert [r.route for r in fake.requests if r.route in ("status", "result")] == [
        "status",
        "result",
    ]
    assert fake.webhooks == []
    assert project.billed("llamaparse") == {"cost_effective": (1, pytest.approx(3 * 1.25 / 1000))}
