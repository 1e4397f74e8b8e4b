"""The batch stages give the same results whether they run in one process or several."""

from pathlib import Path

import pytest

from tvdb_assets.lib import stages, workers
from tvdb_assets.lib.parsing import LocalParser
from tvdb_assets.lib.store.registry import InboxFile
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
