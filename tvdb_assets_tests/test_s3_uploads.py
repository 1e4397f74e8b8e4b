"""Uploads in an S3-compatible bucket (moto's server on loopback, through boto3): the sensor
and `tvdb ingest s3://...` treat objects exactly as files in the inbox, odd keys become
error rows naming them, and links to the uploads download until they expire."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

import dagster as dg
import httpx
import pytest

from tvdb_assets.cli import main
from tvdb_assets.definitions import build_defs
from tvdb_assets.defs.partitions import DOCUMENTS
from tvdb_assets.defs.resources import PostgresResource, UploadsResource
from tvdb_assets.lib import clients, sync
from tvdb_assets.lib import store as pipeline
from tvdb_assets.lib.errors import ConfigError
from tvdb_assets.lib.ids import partition_key_for
from tvdb_assets.lib.store import inbox_files, ingest_errors
from tvdb_assets.lib.uploads.s3 import S3Bucket, S3Credentials, S3Location
from tvdb_assets_tests import events
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.fakes.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, FakeS3
from tvdb_assets_tests.notices import encode, receiver_thread, signed

BUCKET = "team-docs"
PREFIX = "inbox/"
GOOD = {
    "plain.md": "# Plain\n\nA plain document about harbours and their cranes.\n",
    "with space/report 2024.md": "# Report\n\nThe yearly report on harbour traffic.\n",
    "unicode/café ☕/naïve résumé.md": "# Résumé\n\nA café by the harbour, naïvely described.\n",
    "deep/a/b/c/d/e/f/g/h/deep.md": "# Deep\n\nA document nine folders down, about tides.\n",
    # HTML is parsed in a worker process, which receives the store pickled.
    "site/harbour map.html": "<html><body><h1>Map</h1><p>The harbour, pier by pier.</p></body>",
}
# Keys S3 allows and a file system does not: each is one error row naming it.
ODD = ["notes/a//b.md", "notes/../escape.md", "./dot.md"]


@dataclass
class Bucket:
    s3: Any

    def put(self, path: str, text: str) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=PREFIX + path, Body=text.encode())

    def delete(self, path: str) -> None:
        self.s3.delete_object(Bucket=BUCKET, Key=PREFIX + path)


@pytest.fixture
def bucket(project: Project, fake_s3: FakeS3, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Bucket:
    """The project's uploads in a bucket of the loopback server (TVDB_UPLOADS_MODE=real)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    # Whatever ~/.aws holds on this machine plays no part.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("TVDB_UPLOADS_MODE", "real")
    monkeypatch.setenv("TVDB_S3_ENDPOINT_URL", fake_s3.endpoint_url)
    monkeypatch.setenv("TVDB_S3_BUCKET", BUCKET)
    monkeypatch.setenv("TVDB_S3_PREFIX", "inbox")
    s3 = fake_s3.client()
    s3.create_bucket(Bucket=BUCKET)
    return Bucket(s3)


def store_of(fake_s3: FakeS3, bucket: str = BUCKET, prefix: str = PREFIX) -> S3Bucket:
    location = S3Location(bucket, prefix, fake_s3.endpoint_url, REGION)
    return S3Bucket(location, S3Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY))


def test_a_bucket_lists_reads_and_hashes_as_an_inbox_does(fake_s3: FakeS3):
    s3 = fake_s3.client()
    s3.create_bucket(Bucket="docs")
    for path, text in GOOD.items():
        s3.put_object(Bucket="docs", Key=f"inbox/{path}", Body=text.encode())
    for path in ODD:
        s3.put_object(Bucket="docs", Key=f"inbox/{path}", Body=b"# odd\n")
    # Skipped as the inbox skips them: a console's folder marker, hidden and partial files.
    for path in ("folder/", ".hidden.md", "notes/.git/config", "draft.md.part"):
        s3.put_object(Bucket="docs", Key=f"inbox/{path}", Body=b"")
    s3.put_object(Bucket="docs", Key="elsewhere.md", Body=b"# outside the prefix\n")
    s3.put_object(Bucket="docs", Key="inbox/old/cold.md", Body=b"# 2009\n", StorageClass="GLACIER")
    store = store_of(fake_s3, "docs", "/inbox")  # a prefix is a folder, however written

    listed = {info.path: info for info in store.list()}

    assert {p for p, i in listed.items() if i.refused is None} == set(GOOD)
    assert {p for p, i in listed.items() if i.refused} == {*ODD, "old/cold.md"}
    assert listed["old/cold.md"].refused == "archived (GLACIER): restore the object to ingest it"
    for path, text in GOOD.items():
        data = text.encode()
        assert listed[path].bytes == len(data)
        assert store.read(path) == data and store.head(path, 6) == data[:6]
        assert store.sha256(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError):
        store.read("gone.md")
    # Looked at one by one (as upload notices name them), an object is what a listing
    # says of it, so a sweep after a notice hashes nothing again; a missing one is absent.
    named = [*GOOD, "old/cold.md", "gone.md", ".hidden.md"]
    looked = store.look([*named, ODD[1]])
    assert [i for i in looked.uploads if i.path != ODD[1]] == [
        listed[p] for p in sorted(named) if p in listed
    ]
    assert {i.path: i.refused for i in looked.uploads}[ODD[1]] == listed[ODD[1]].refused
    assert looked.span.holds("gone.md") and not looked.span.holds("elsewhere.md")

    # The ETag is the change stamp: new content moves it, the same content does not.
    s3.put_object(Bucket="docs", Key="inbox/plain.md", Body=GOOD["plain.md"].encode())
    again = {i.path: i for i in store.list()}
    assert again["plain.md"].mtime_ns == listed["plain.md"].mtime_ns
    s3.put_object(Bucket="docs", Key="inbox/plain.md", Body=b"# Plain\n\nNew.\n")
    assert {i.path: i for i in store.list()}["plain.md"].mtime_ns != listed["plain.md"].mtime_ns

    # The parse workers receive the store pickled; each builds its own client.
    copy = pickle.loads(pickle.dumps(store))
    assert copy.read("with space/report 2024.md") == GOOD["with space/report 2024.md"].encode()

    # Paged, as a sensor lists a large bucket: the pages cover the listing in order, and
    # each page's span holds exactly its own uploads.
    pages, after = [], None
    while True:
        page = store.list_page(after, limit=2)
        pages.append(page)
        after = page.next_after
        if after is None:
            break
    assert len(pages) >= 3
    assert [i.path for p in pages for i in p.uploads] == [i.path for i in store.list()]
    for page in pages:
        others = [i.path for p in pages if p is not page for i in p.uploads]
        assert not any(page.span.holds(path) for path in others)


def test_the_mode_picks_the_store(bucket: Bucket, monkeypatch: pytest.MonkeyPatch):
    real = clients.upload_store()
    assert isinstance(real, S3Bucket) and real.describe() == f"s3://{BUCKET}/{PREFIX}"
    # hybrid has no local stand-in for a bucket: it reads the bucket too.
    assert isinstance(clients.upload_store(clients.UploadSettings(mode="hybrid")), S3Bucket)
    monkeypatch.delenv("TVDB_S3_BUCKET")
    with pytest.raises(ConfigError, match="TVDB_S3_BUCKET"):
        clients.upload_store()
    assert not isinstance(clients.upload_store(clients.UploadSettings(mode="mock")), S3Bucket)


def test_an_object_gone_between_listing_and_hashing_stays_as_it_was(
    project: Project, bucket: Bucket
):
    """A read that fails while a listing is compared (the object deleted meanwhile, the
    bucket briefly unreachable) is an error row naming it, and retires nothing: the next
    listing decides."""
    uploads = clients.upload_store()
    bucket.put("a.md", "# A\n\nFirst.\n")
    with pipeline.connect() as conn:
        sync.refresh(conn, uploads, list(uploads.list()))
        bucket.put("a.md", "# A\n\nSecond.\n")
        listing = list(uploads.list())
        bucket.delete("a.md")

        changes = sync.refresh(conn, uploads, listing)

        assert (changes.changed, changes.removed) == ([], [])
        assert [f.path for f in inbox_files.load_all(conn).values()] == ["a.md"]
        [error] = ingest_errors.open_errors(conn)
        assert (error.path, error.reason) == ("a.md", "cannot read (the object is gone)")

        changes = sync.refresh(conn, uploads, list(uploads.list()))

        assert [f.path for f in changes.removed] == ["a.md"]
        assert ingest_errors.open_errors(conn) == []


def resources(**config: Any) -> dict[str, Any]:
    return {"upload_store": UploadsResource(mode="real", **config), "database": PostgresResource()}


@pytest.fixture
def defs(bucket: Bucket) -> dg.Definitions:
    """The definitions as the daemon loads them with the bucket's environment: the ingest
    job's uploads are the bucket (TVDB_UPLOADS_MODE=real)."""
    defs = build_defs()
    # Loaded now, while this test's instance is the current one: a sensor evaluation may
    # leave Dagster's current defs-state storage pointing at an instance that is gone.
    defs.resolve_job_def("ingest")
    return defs


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None, **config: Any):
    return events.tick(defs, instance, cursor, resources(**config))


def launch(defs: dg.Definitions, instance: dg.DagsterInstance, result) -> None:
    """What the daemon does with the tick's run requests, in this process."""
    job = defs.resolve_job_def("ingest")
    for run in result.run_requests:
        tags = dict(run.tags)
        if run.partition_key:
            tags["dagster/partition"] = run.partition_key
        assert job.execute_in_process(instance=instance, tags=tags).success


def test_the_sensor_ingests_a_bucket_as_it_ingests_the_inbox(
    project: Project, instance, bucket: Bucket, defs: dg.Definitions, monkeypatch
):
    monkeypatch.setenv("TVDB_BATCH_SIZE", "2")
    for path, text in GOOD.items():
        bucket.put(path, text)
    for path in ODD:
        bucket.put(path, "# odd\n")
    keys = [partition_key_for(p) for p in sorted(GOOD)]  # the inbox's keys for these paths

    first = tick(defs, instance, None)

    (added,) = first.dynamic_partitions_requests
    assert list(added.partition_keys) == keys
    assert len(first.run_requests) == 3  # batches of two, as for files
    launch(defs, instance, first)
    with project.connect() as conn:
        stored = dict(conn.execute("SELECT path, sha256 FROM documents").fetchall())
        errors = conn.execute(
            "SELECT path, stage, reason FROM ingest_errors WHERE resolved_at IS NULL"
        ).fetchall()
        indexed = conn.execute("SELECT count(*) FROM documents WHERE indexed_at IS NOT NULL")
        assert indexed.fetchone() == (len(GOOD),)
    assert stored == {p: hashlib.sha256(t.encode()).hexdigest() for p, t in GOOD.items()}
    assert sorted(path for path, _, _ in errors) == sorted(ODD)  # one row each, naming it
    assert {(stage, reason) for _, stage, reason in errors} == {
        ("read", "object key with an empty, '.' or '..' part, not read")
    }
    settled = tick(defs, instance, first.cursor)
    assert settled.run_requests == [] and settled.skip_message == "all stored"
    idle = tick(defs, instance, settled.cursor)
    assert idle.run_requests == [] and "inbox unchanged" in (idle.skip_message or "")

    plain, deep = "plain.md", "deep/a/b/c/d/e/f/g/h/deep.md"
    bucket.put(plain, "# Plain\n\nNow a document about lighthouses.\n")
    bucket.delete(deep)
    bucket.put("with space/report 2024.md", GOOD["with space/report 2024.md"])  # same bytes
    changed = tick(defs, instance, idle.cursor)

    (retired,) = changed.dynamic_partitions_requests
    assert isinstance(retired, dg.DeleteDynamicPartitionsRequest)
    assert list(retired.partition_keys) == [partition_key_for(deep)]
    (run,) = changed.run_requests
    assert run.partition_key == partition_key_for(plain)
    assert partition_key_for(deep) not in instance.get_dynamic_partitions(DOCUMENTS)
    for table in ("documents", "chunks", "inbox_files"):
        count = project.scalar(
            f"SELECT count(*) FROM {table} WHERE partition_key = %s", partition_key_for(deep)
        )
        assert count == 0, table
    launch(defs, instance, changed)
    text = project.scalar(
        "SELECT string_agg(text, ' ') FROM chunks WHERE partition_key = %s",
        partition_key_for(plain),
    )
    assert "lighthouses" in str(text)
    assert tick(defs, instance, changed.cursor).skip_message == "all stored"


def test_a_large_bucket_is_listed_a_page_a_tick(
    project: Project, instance, bucket: Bucket, defs: dg.Definitions
):
    paths = [f"doc-{i}.md" for i in range(5)]
    for path in paths:
        bucket.put(path, f"# {path}\n\nText of {path}.\n")

    cursor, registered = None, []
    for _ in range(3):
        result = tick(defs, instance, cursor, keys_per_tick=2)
        cursor = result.cursor
        registered.append(project.scalar("SELECT count(*) FROM inbox_files"))
    assert registered == [2, 4, 5]
    assert json.loads(cursor or "{}")["after"] is None  # the sweep came round

    # A deletion in the first stretch is seen when the sweep passes there again; the
    # pages in between retire nothing of another stretch.
    bucket.delete("doc-0.md")
    result = tick(defs, instance, cursor, keys_per_tick=2)
    (retired,) = result.dynamic_partitions_requests
    assert isinstance(retired, dg.DeleteDynamicPartitionsRequest)
    assert list(retired.partition_keys) == [partition_key_for("doc-0.md")]
    assert project.scalar("SELECT count(*) FROM inbox_files") == 4


def test_the_sensor_acts_on_upload_notices_and_a_sweep_finds_what_none_told(
    project: Project, instance, bucket: Bucket, defs: dg.Definitions
):
    hourly = {"sweep_seconds": 3600}
    for path in ("anchors.md", "buoys.md"):
        bucket.put(path, f"# {path}\n\nA document about {path[:-3]}.\n")
    first = tick(defs, instance, None, **hourly)  # no sweep yet: one now
    launch(defs, instance, first)
    assert tick(defs, instance, first.cursor, **hourly).skip_message == "all stored"

    bucket.put("told.md", "# Told\n\nA notice told of this one, about tides.\n")
    bucket.put("untold.md", "# Untold\n\nIts notice was lost on the way.\n")
    bucket.delete("anchors.md")
    notices = [
        ("created", "told.md"),
        ("deleted", "anchors.md"),
        ("deleted", "buoys.md"),  # a notice is no proof: the object is still there
        ("created", "../escape.md"),
    ]
    with receiver_thread(project.database_url) as base:
        for event, path in notices:
            body = encode({"event": event, "bucket": BUCKET, "key": PREFIX + path, "etag": None})
            answer = httpx.post(f"{base}/webhooks/uploads", content=body, headers=signed(body))
            assert answer.status_code == 202, answer.text
    noticed = tick(defs, instance, first.cursor, **hourly)

    (retired, added) = noticed.dynamic_partitions_requests
    assert list(retired.partition_keys) == [partition_key_for("anchors.md")]
    assert list(added.partition_keys) == [partition_key_for("told.md")]
    assert [r.partition_key for r in noticed.run_requests] == [partition_key_for("told.md")]
    with project.connect() as conn:
        registered = {path for (path,) in conn.execute("SELECT path FROM inbox_files")}
        assert registered == {"buoys.md", "told.md"}  # not the untold one: nothing listed
        (odd,) = ingest_errors.open_errors(conn)
        assert (odd.path, odd.reason) == (
            "../escape.md",
            "object key with an empty, '.' or '..' part, not read",
        )
    assert project.scalar("SELECT count(*) FROM webhook_events WHERE consumed_at IS NULL") == 0
    launch(defs, instance, noticed)
    idle = tick(defs, instance, noticed.cursor, **hourly)
    assert idle.run_requests == [] and idle.skip_message == "all stored"

    # An hour on, the sweep lists the bucket: the untold upload is found.
    an_hour_on = {**json.loads(noticed.cursor or "{}"), "swept_at": time.time() - 3600}
    swept = tick(defs, instance, json.dumps(an_hour_on), **hourly)
    assert [r.partition_key for r in swept.run_requests] == [partition_key_for("untold.md")]
    assert json.loads(swept.cursor or "{}")["swept_at"] > an_hour_on["swept_at"]
    launch(defs, instance, swept)
    # Sweeps of an unchanged bucket: the first settles on its listing, the next skips; each
    # moves the time of the last sweep on, so the one after waits its hour again.
    cursor = swept.cursor
    for outcome in ("all stored", "inbox unchanged and stored (3 files)"):
        due = {**json.loads(cursor or "{}"), "swept_at": time.time() - 3600}
        result = tick(defs, instance, json.dumps(due), **hourly)
        assert result.run_requests == [] and result.skip_message == outcome
        cursor = result.cursor
        assert json.loads(cursor or "{}")["swept_at"] > due["swept_at"]
    assert "listed again in" in (tick(defs, instance, cursor, **hourly).skip_message or "")


def test_ingest_from_a_bucket_and_links_that_download_then_expire(
    project: Project, bucket: Bucket, capsys
):
    for path, text in GOOD.items():
        bucket.put(path, text)
    bucket.put(ODD[0], "# odd\n")

    # A dry run reads and estimates the objects where they are, and stores nothing.
    assert main(["ingest", "--dry-run", f"s3://{BUCKET}/inbox/"]) == 0
    planned = capsys.readouterr().out
    assert all(path in planned for path in GOOD) and ODD[0] not in planned
    assert f"to_ingest: {len(GOOD)}" in planned
    assert project.scalar("SELECT count(*) FROM inbox_files") == 0

    code = main(["ingest", f"s3://{BUCKET}/inbox/"])
    out = capsys.readouterr().out

    assert code == 0, out
    assert f"{len(GOOD)} files: {len(GOOD)} new" in out and f"{len(GOOD)} ingested" in out
    assert f"skipped: {ODD[0]}: object key with an empty" in out
    assert project.scalar("SELECT count(*) FROM documents WHERE indexed_at IS NOT NULL") == 5
    assert project.scalar("SELECT count(*) FROM ingest_errors WHERE path = %s", ODD[0]) == 1

    # A narrower URL takes the objects under it only, and only what changed is run.
    cafe = "unicode/café ☕/naïve résumé.md"
    bucket.put(cafe, "# Résumé\n\nThe café closed; the harbour stayed.\n")
    assert main(["ingest", f"s3://{BUCKET}/inbox/unicode"]) == 0
    assert "1 files: 0 new, 1 changed" in capsys.readouterr().out

    # Search results carry a link to each hit's original upload, which downloads it.
    assert main(["search", "harbour", "-k", "3"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    endpoint = str(bucket.s3.meta.endpoint_url).rstrip("/")
    assert hits and all(h["link"].startswith(f"{endpoint}/{BUCKET}/{PREFIX}") for h in hits)
    for hit in hits:
        with urlopen(hit["link"]) as answer:
            assert answer.read().decode() == open_text(bucket, hit["document"])

    # `tvdb url` by partition key, by path and by s3:// URL.
    assert main(["url", partition_key_for("plain.md")]) == 0
    with urlopen(capsys.readouterr().out.strip()) as answer:
        assert answer.read() == GOOD["plain.md"].encode()
    assert main(["url", f"s3://{BUCKET}/inbox/{cafe}"]) == 0
    with urlopen(capsys.readouterr().out.strip()) as answer:
        assert "closed" in answer.read().decode()

    assert main(["url", "with space/report 2024.md", "--expires", "3"]) == 0
    link = capsys.readouterr().out.strip()
    with urlopen(link) as answer:
        assert answer.read() == GOOD["with space/report 2024.md"].encode()
    time.sleep(4.5)
    with pytest.raises(HTTPError) as refused:
        urlopen(link)
    assert refused.value.code == 403 and b"Request has expired" in refused.value.read()


def open_text(bucket: Bucket, path: str) -> str:
    body = bucket.s3.get_object(Bucket=BUCKET, Key=PREFIX + path)["Body"]
    return body.read().decode()


def test_what_a_bucket_ingest_refuses(project: Project, bucket: Bucket, tmp_path, capsys):
    assert main(["ingest", "s3://another-bucket/inbox"]) == 2
    assert f"not in the uploads bucket s3://{BUCKET}/{PREFIX}" in capsys.readouterr().err
    assert main(["ingest", f"s3://{BUCKET}/elsewhere"]) == 2
    capsys.readouterr()
    # Files copied to a local inbox while the runs read the bucket would never be read.
    local = tmp_path / "a.md"
    local.write_text("# a\n")
    assert main(["ingest", str(local)]) == 2
    assert "uploads come from a bucket" in capsys.readouterr().err
    assert main(["url", "no-such-document"]) == 1
    with pytest.raises(SystemExit):  # a link lasts 1 s to 7 days
        main(["url", "plain.md", "--expires", "0"])
    capsys.readouterr()


def test_mock_mode_never_imports_boto3(project: Project):
    check = (
        "import sys\n"
        "from tvdb_assets.definitions import defs\n"
        "from tvdb_assets.lib import clients, intake, search\n"
        "clients.upload_store()\n"
        "assert not {'boto3', 'botocore'} & set(sys.modules)\n"
    )
    env = {**os.environ, "TVDB_UPLOADS_MODE": "mock"}
    subprocess.run([sys.executable, "-c", check], env=env, check=True)
