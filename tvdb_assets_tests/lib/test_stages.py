"""The batch stages give the same results whether they run in one process or several."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tvdb_assets.lib import ahead, stages, store, workers
from tvdb_assets.lib.chunking.rows import chunk_fields
from tvdb_assets.lib.embedding import MockEmbedder
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing import LocalParser, Parser
from tvdb_assets.lib.stages.chunk import cut
from tvdb_assets.lib.store.chunks import ChunkRow
from tvdb_assets.lib.store.inbox_files import InboxFile
from tvdb_assets.lib.uploads import LocalInbox
from tvdb_assets_tests.corpus import write_pdf


@pytest.fixture
def inbox(tmp_path: Path) -> tuple[LocalInbox, list[InboxFile]]:
    for i in range(40):  # enough that the pool really starts two workers
        body = " ".join(f"Paragraph {j} of note {i} about tide pools and kelp." for j in range(60))
        (tmp_path / f"note-{i}.md").write_text(f"# Note {i}\n\n## Part\n\n{body}\n")
    for i in range(6):
        write_pdf(tmp_path / f"report-{i}.pdf", [f"Report {i} page one.", f"Page two of {i}."])
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not a pdf")
    uploads = LocalInbox(tmp_path)
    files = [
        InboxFile(info.path, info.path, info.bytes, info.mtime_ns, uploads.sha256(info.path))
        for info in sorted(uploads.list(), key=lambda i: i.path)
    ]
    return uploads, files


def run(monkeypatch, workers: str, uploads, files):
    monkeypatch.setenv("TVDB_WORKERS", workers)
    outcomes = stages.parse_batch(uploads, LocalParser(), files)
    documents = [o.document for o in outcomes if o.document]
    chunks = stages.chunk_batch(stages.ChunkSettings(max_tokens=128, overlap_tokens=16), documents)
    return [(o.document, o.error) for o in outcomes], chunks


def test_process_pool_changes_no_result(monkeypatch, inbox):
    uploads, files = inbox
    assert len(files) >= 2 * workers.MIN_ITEMS_FOR_POOL
    serial = run(monkeypatch, "1", uploads, files)
    parallel = run(monkeypatch, "2", uploads, files)
    assert parallel == serial
    outcomes, chunks = serial
    assert [e.reason for _, e in outcomes if e] == ["corrupt PDF (EOF marker not found)"]
    assert sum(len(c) for c in chunks) > len(files)


class SlowServiceParser(Parser):
    """A stand-in for a paid parser: records how many documents it is parsing at once."""

    name = "slow-service"
    cacheable = True

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def parse(self, path: str, data: bytes) -> ParsedDocument:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return ParsedDocument(data.decode(), self.name, "text/plain")


def test_a_paid_parser_works_on_several_documents_within_its_limit(project, tmp_path):
    for i in range(12):
        (tmp_path / f"doc{i}.txt").write_text(f"document {i}")
    uploads = LocalInbox(tmp_path)
    files = [
        InboxFile(info.path, info.path, info.bytes, info.mtime_ns, uploads.sha256(info.path))
        for info in uploads.list()
    ]
    parser = SlowServiceParser(concurrency=3)
    with store.connect() as conn:
        outcomes = stages.parse_batch(uploads, parser, files, conn)
        again = stages.parse_batch(uploads, SlowServiceParser(concurrency=3), files, conn)

    assert parser.peak == 3
    assert all(o.document is not None and not o.cached for o in outcomes)
    assert all(o.cached for o in again)  # the second time, every result came from the cache


def test_work_done_ahead_is_exactly_what_the_stages_would_compute(inbox) -> None:
    uploads, files = inbox
    docs = [o.document for o in stages.parse_batch(uploads, LocalParser(), files) if o.document]
    settings = stages.ChunkSettings(max_tokens=128, overlap_tokens=16)
    computed = stages.chunk_batch(settings, docs)

    stages.work_ahead(docs, stages.ChunkSettings(max_tokens=64), 256)  # other settings
    assert stages.chunk_batch(settings, docs) == computed  # not taken: computed again

    stages.work_ahead(docs, settings, 256)
    assert stages.chunk_batch(settings, docs) == computed
    rows = [row for doc_rows in computed for row in doc_rows]
    keys = [(r.id, r.text_sha256) for r in rows]
    kept = ahead.take_kept(("vectors", MockEmbedder.model, 256), keys)
    assert list(kept) == keys
    expected = MockEmbedder(dims=256).embed([r.text for r in rows])
    np.testing.assert_array_equal(np.vstack([kept[k] for k in keys]), expected)
    assert ahead.take_kept(("vectors", MockEmbedder.model, 256), keys) == {}  # taken once


def test_the_next_batch_parsed_ahead_is_what_parsing_it_gives(inbox, tmp_path: Path) -> None:
    uploads, files = inbox
    first, following = files[10:30], files[:10] + files[30:]  # broken.pdf is files[0]
    settings = stages.ChunkSettings(max_tokens=128, overlap_tokens=16)
    parser = LocalParser()
    docs = [o.document for o in stages.parse_batch(uploads, parser, first) if o.document]
    expected = [(o.document, o.error) for o in stages.parse_batch(uploads, parser, following)]

    stages.work_ahead(docs, settings, 256, stages.NextBatch(uploads, parser, following))
    stages.chunk_batch(settings, docs)
    _wait_for_work_ahead()
    # Both edited after being parsed ahead; the registry has seen the first edit only, so
    # the second document is still what was parsed ahead, as if parsed before the edit.
    seen, unseen = following[1], following[2]
    for file in (seen, unseen):
        (tmp_path / file.path).write_text("# Edited\n\nNew words.\n")
    now = InboxFile(seen.path, seen.partition_key, 26, 1, uploads.sha256(seen.path))
    outcomes = stages.parse_batch(uploads, LocalParser(), [following[0], now, *following[2:]])

    assert outcomes[1].document is not None and "New words." in outcomes[1].document.markdown
    assert [(o.document, o.error) for o in outcomes[2:]] == expected[2:]
    assert outcomes[0].error is not None and outcomes[0].error.path == "broken.pdf"
    parsed = [o.document for o in outcomes if o.document]
    one_by_one = [[ChunkRow(*f) for f in chunk_fields(cut(settings, d))] for d in parsed]
    assert stages.chunk_batch(settings, parsed) == one_by_one


def test_a_head_start_is_what_the_first_run_takes(inbox, tmp_path: Path) -> None:
    """`tvdb ingest` starts on its first batch before the run exists: the run takes those
    parse results, chunks and vectors, exactly as it would have computed them."""
    uploads, files = inbox
    settings = stages.ChunkSettings(max_tokens=128, overlap_tokens=16)
    expected = [(o.document, o.error) for o in stages.parse_batch(uploads, LocalParser(), files)]
    docs = [document for document, _ in expected if document]
    chunks = stages.chunk_batch(settings, docs)

    stages.HeadStart(uploads, LocalParser(), settings, 256).begin(files)
    _wait_for_work_ahead()
    # Edited after the head start, unknown to the registry: the run takes what was parsed
    # from the registered content, as a run that had parsed it then would hold.
    (tmp_path / files[1].path).write_text("# Edited\n\nNew words.\n")
    outcomes = stages.parse_batch(uploads, LocalParser(), files)
    assert [(o.document, o.error) for o in outcomes] == expected
    assert stages.chunk_batch(settings, docs) == chunks
    rows = [row for doc_rows in chunks for row in doc_rows]
    keys = [(r.id, r.text_sha256) for r in rows]
    kept = ahead.take_kept(("vectors", MockEmbedder.model, 256), keys)
    expected_vectors = MockEmbedder(dims=256).embed([r.text for r in rows])
    np.testing.assert_array_equal(np.vstack([kept[k] for k in keys]), expected_vectors)


def _wait_for_work_ahead() -> None:
    """Jobs run one after another: once an empty one has run, the earlier ones have."""
    done = threading.Event()
    ahead.Job().start(done.set)
    assert done.wait(30)
