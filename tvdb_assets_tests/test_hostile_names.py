"""Hostile names and links beside good files: each is a document, skipped with a word, or
an error row naming it, and the rest of the batch always ingests."""

import json
import os
from pathlib import Path

from tvdb_assets.cli import main
from tvdb_assets.lib import store, sync
from tvdb_assets.lib.uploads import LocalInbox
from tvdb_assets_tests.conftest import Project

LATIN1 = os.fsdecode(b"caf\xe9 latin-1.md")  # a name from an old archive, not UTF-8
NFC, NFD = "caf\u00e9.md", "cafe\u0301.md"
LONG = "l" * 240 + ".md"  # near the 255-byte limit of a file name
ODD_NAMES = [
    LATIN1, NFC, NFD, "x\\y.md", "two\nlines.md", "-starts-with-dash.md", 'say "hi".md', LONG
]  # fmt: skip


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def source_with_hostile_entries(root: Path) -> Path:
    source = root / "archive"
    write(source / "good.md", "# Good\n\nOrdinary notes about sailing boats.\n")
    for i, name in enumerate(ODD_NAMES):
        write(source / name, f"# Odd {i}\n\nDocument number {i} about lighthouse keepers.\n")
    write(source / "y.md", "# y\n\nThe y document.\n")
    for name in ("..hidden.md", "report.md.part", "draft.md~"):
        write(source / name, "# skipped on purpose\n")
    secret = root / "elsewhere" / "secret.txt"
    write(secret, "DB_PASSWORD=hunter2-do-not-index\n")
    (source / "notes.txt").symlink_to(secret)
    (source / "dangling.md").symlink_to(root / "nowhere.md")
    (source / "same-as-good.md").symlink_to(source / "good.md")
    (source / "loop").symlink_to(source, target_is_directory=True)
    os.mkfifo(source / "pipe.md")
    return source


def test_odd_names_and_links_in_a_source_folder(project: Project, tmp_path, capsys):
    source = source_with_hostile_entries(tmp_path)
    assert main(["ingest", "--dry-run", str(source)]) == 0  # estimates, and lists them too
    assert "archive/caf\\xe9 latin-1.md" in capsys.readouterr().out

    code = main(["ingest", str(source)])
    out = capsys.readouterr().out

    assert code == 0, out
    good = 1 + len(ODD_NAMES) + 1 + 1  # good.md, the odd names, y.md, the link to good.md
    assert f"{good} files: {good} new" in out and f"{good} ingested" in out
    assert "7 skipped" in out
    for name, reason in [
        ("..hidden.md", "hidden"),
        ("report.md.part", "temporary file"),
        ("draft.md~", "temporary file"),
        ("notes.txt", "symlink to outside the folder, not followed"),
        ("dangling.md", "dangling symlink"),
        ("loop", "symlink to a folder, not followed"),
        ("pipe.md", "not a regular file"),
    ]:
        assert f"skipped: archive/{name}: {reason}" in out
    assert "Traceback" not in out

    with project.connect() as conn:
        paths = {p for (p,) in conn.execute("SELECT path FROM documents").fetchall()}
        keys = conn.execute("SELECT count(DISTINCT partition_key) FROM documents").fetchone()
        leaked = conn.execute("SELECT count(*) FROM chunks WHERE text LIKE '%hunter2%'").fetchone()
    assert keys == (good,)
    # Each name shown as it is, with bytes that are not UTF-8 and newlines escaped.
    assert "archive/caf\\xe9 latin-1.md" in paths and "archive/two\\nlines.md" in paths
    assert f"archive/{NFC}" in paths and f"archive/{NFD}" in paths  # two files, two documents
    assert "archive/x\\y.md" in paths and "archive/y.md" in paths
    assert leaked == (0,)

    assert main(["search", "DB_PASSWORD hunter2", "-k", "20"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert not any("hunter2" in hit["text"] for hit in hits)

    assert main(["ingest", str(source)]) == 0  # settled: nothing swaps back and forth
    again = capsys.readouterr().out
    assert f"0 new, 0 changed, {good} unchanged" in again and "0 run(s)" in again


def test_bad_entries_dropped_into_the_inbox_are_error_rows_and_stop_nothing(
    project: Project, tmp_path, capsys
):
    secret = tmp_path / "secret.txt"
    secret.write_text("DB_PASSWORD=hunter2\n")
    (project.inbox / "leak.md").symlink_to(secret)
    (project.inbox / "gone.md").symlink_to(tmp_path / "missing.md")
    os.mkfifo(project.inbox / "fifo.md")
    source = tmp_path / "fine"
    write(source / "a.md", "# A\n\nFine text.\n")

    assert main(["ingest", str(source)]) == 0
    out = capsys.readouterr().out
    assert "1 ingested" in out

    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "leak.md" in status and "symlink to outside the inbox, not followed" in status
    assert "gone.md" in status and "dangling symlink" in status
    assert "fifo.md" in status and "not a regular file" in status
    assert project.scalar("SELECT count(*) FROM chunks WHERE text LIKE '%hunter2%'") == 0

    # Seen again, they stay one open row each; gone, their rows close.
    uploads = LocalInbox(project.inbox)
    with store.connect() as conn:
        sync.refresh(conn, uploads, list(uploads.list()))
    assert project.scalar("SELECT count(*) FROM ingest_errors WHERE resolved_at IS NULL") == 3
    for name in ("leak.md", "gone.md", "fifo.md"):
        (project.inbox / name).unlink()
    with store.connect() as conn:
        sync.refresh(conn, uploads, list(uploads.list()))
    assert project.scalar("SELECT count(*) FROM ingest_errors WHERE resolved_at IS NULL") == 0


def test_a_folder_holding_the_inbox_never_ingests_the_inbox(
    project: Project, tmp_path, capsys, monkeypatch
):
    root = tmp_path / "project"
    write(root / "docs" / "guide.md", "# Guide\n\nHow to start.\n")
    monkeypatch.setenv("TVDB_UPLOADS_DIR", str(root / "data" / "uploads"))

    for _ in range(3):
        assert main(["ingest", str(root)]) == 0
    out = capsys.readouterr().out
    assert "skipped: project/data/uploads: the inbox itself" in out
    assert project.scalar("SELECT count(*) FROM documents") == 1
