"""Hostile content beside good documents: every bad one is one error row naming it, within
its time and memory bounds, and costs nothing; every good one ingests."""

import re

import pytest

from tvdb_assets.cli import main
from tvdb_assets_tests.bombs import pdf_bomb
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.corpus import pdf_bytes, write_bad_files

MIB = 1024 * 1024


def reasons(project: Project) -> dict[str, str]:
    with project.connect() as conn:
        rows = conn.execute(
            "SELECT path, reason FROM ingest_errors WHERE resolved_at IS NULL"
        ).fetchall()
    return dict(rows)


def good_documents(source) -> int:
    (source / "good.md").write_text("# Tides\n\nThe moon pulls the sea.\n")
    (source / "good.pdf").write_bytes(pdf_bytes(["Harbour charts, page one.", "Page two."]))
    return 2


def test_bombs_and_odd_files_fail_alone_and_cost_nothing(
    project: Project, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TVDB_PARSE_TIMEOUT_S", "4")
    source = tmp_path / "hostile"
    source.mkdir()
    good = good_documents(source)
    (source / "bomb.pdf").write_bytes(pdf_bomb(3 * MIB))  # 11 KB unpacking to 3 MB of text
    (source / "slow-bomb.pdf").write_bytes(pdf_bomb(10 * MIB, pages=30))  # 300 MB of text
    (source / "empty.pdf").write_bytes(b"")
    (source / "cut.pdf").write_bytes(pdf_bytes(["Cut short."])[:200])
    (source / "nested.html").write_text("<div>" * 50_000 + "deep text" + "</div>" * 10)
    (source / "one-line.txt").write_bytes(b"x" * (101 * MIB))  # over max_file_mb
    bad = write_bad_files(source)  # corrupt, truncated, encrypted, scanned, junk, png...

    assert main(["ingest", str(source)]) == 1
    out = capsys.readouterr().out

    assert f"{good} ingested" in out or f"{good + 1} ingested" in out  # nested HTML may parse
    failed = reasons(project)
    assert "a compression bomb?" in failed["hostile/bomb.pdf"]
    # Megabytes of text per page: PDFium needs over 1 GB for one; a limit stops it.
    assert re.match(
        r"(took longer than 4 s|needed more than 1024 MB) to parse \(limits: ",
        failed["hostile/slow-bomb.pdf"],
    ), failed["hostile/slow-bomb.pdf"]
    assert failed["hostile/empty.pdf"] == "empty file"
    assert "corrupt PDF" in failed["hostile/cut.pdf"]
    assert "file too large" in failed["hostile/one-line.txt"]
    for name, reason in bad.items():
        assert reason in failed[f"hostile/{name}"]
    for path in failed:
        assert f"failed: {path}: " in out
    with project.connect() as conn:
        bombs = conn.execute(
            "SELECT count(*) FROM chunks WHERE partition_key LIKE 'hostile-%bomb%'"
        ).fetchone()
        stored = conn.execute("SELECT count(*) FROM documents").fetchone()
    assert bombs == (0,)  # nothing to embed, nothing to pay for
    assert stored is not None and stored[0] >= good


@pytest.mark.parametrize("memory_mb", [48])
def test_a_document_over_its_memory_limit_fails_alone(
    project: Project, tmp_path, capsys, monkeypatch, memory_mb
):
    monkeypatch.setenv("TVDB_PARSE_MEMORY_MB", str(memory_mb))
    source = tmp_path / "memory"
    source.mkdir()
    good = good_documents(source)
    (source / "big-bomb.pdf").write_bytes(pdf_bomb(40 * MIB))

    assert main(["ingest", str(source)]) == 1
    out = capsys.readouterr().out

    assert f"{good} ingested" in out
    reason = reasons(project)["memory/big-bomb.pdf"]
    assert f"needed more than {memory_mb} MB to parse" in reason, reason
