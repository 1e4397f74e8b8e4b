"""`tvdb backfill`: stored documents run again, for a reason, as a user runs it."""

from pathlib import Path

import dagster as dg

from tvdb_assets.cli import main
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.fakes.openai_fake import FakeOpenAI
from tvdb_assets_tests.guards import close_circuit, open_circuit

MODEL = "text-embedding-3-small"


def write_notes(root: Path, count: int, words: int = 400) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        body = " ".join(f"tide{i} reading{j} harbour" for j in range(words))
        (root / f"note{i}.md").write_text(f"# Note {i}\n\n{body}\n")
    return root


def reason_runs(instance: dg.DagsterInstance, reason: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"tvdb/reason": reason})))


def test_backfill_stale_recuts_what_the_old_chunker_cut(
    project: Project, instance, tmp_path, capsys, monkeypatch
):
    assert main(["ingest", str(write_notes(tmp_path / "notes", 3))]) == 0
    monkeypatch.setenv("TVDB_CHUNK_MAX_TOKENS", "128")
    monkeypatch.setenv("TVDB_CHUNK_OVERLAP_TOKENS", "16")
    with project.connect() as conn:  # as a backfill killed after parsing it leaves it
        conn.execute(
            "UPDATE documents SET indexed_at = NULL, chunk_max_tokens = NULL, "
            "chunk_overlap_tokens = NULL WHERE path = 'notes/note2.md'"
        )
    capsys.readouterr()

    assert main(["backfill", "--stale"]) == 0  # mock mode: free, so it asks nothing
    out = capsys.readouterr().out

    assert "3 document(s) were built with other chunker settings" in out
    assert (
        "notes/note0.md" in out and "3 document(s) run again: 3 stored, 0 failed; 1 run(s)" in out
    )
    with project.connect() as conn:
        settings = conn.execute(
            "SELECT DISTINCT chunk_max_tokens, chunk_overlap_tokens FROM documents"
        ).fetchall()
        longest, unvectored = conn.execute(
            "SELECT max(c.tokens), count(*) FILTER (WHERE e.chunk_id IS NULL) "
            "FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id"
        ).fetchone()
    assert settings == [(128, 16)] and longest <= 128 and unvectored == 0
    (run,) = reason_runs(instance, "backfill --stale")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert "dagster/asset_partition_range_start" in run.tags  # one ranged run, not three

    assert main(["backfill", "--stale"]) == 0
    assert "nothing to run again" in capsys.readouterr().out


def test_backfill_fallbacks_shows_the_cost_and_waits_for_yes(
    project: Project, instance, openai_loopback: FakeOpenAI, tmp_path, capsys
):
    open_circuit()
    source = write_notes(tmp_path / "notes", 2)
    assert main(["ingest", "--embedder-mode", "hybrid", str(source)]) == 0
    assert openai_loopback.requests == []  # the open circuit made no call: stand-ins instead
    close_circuit()
    capsys.readouterr()

    # Without a terminal and without --yes, nothing paid starts.
    assert main(["backfill", "--fallbacks", "--embedder-mode", "hybrid"]) == 1
    out = capsys.readouterr().out
    assert "2 document(s) hold hybrid mode's stand-in parses or vectors" in out
    assert "tokens_to_embed: " in out and "estimated_usd: " in out
    assert "not started" in out and openai_loopback.requests == []

    assert main(["backfill", "--fallbacks", "--embedder-mode", "hybrid", "--yes"]) == 0
    assert "2 stored, 0 failed" in capsys.readouterr().out
    with project.connect() as conn:
        fallback, real = conn.execute(
            "SELECT count(*) FILTER (WHERE fallback), count(*) FILTER (WHERE model = %s) "
            "FROM embeddings",
            (MODEL,),
        ).fetchone()
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        billed = conn.execute(
            "SELECT sum(units) FROM cost_ledger WHERE status = 'billed'"
        ).fetchone()[0]
    assert fallback == 0 and real == chunks > 0
    assert billed == openai_loopback.billed_tokens > 0
    assert main(["backfill", "--fallbacks"]) == 0
    assert "nothing to run again" in capsys.readouterr().out


def test_backfill_failed_retries_passing_failures_and_leaves_bad_files(
    project: Project, instance, openai_loopback: FakeOpenAI, tmp_path, capsys
):
    source = write_notes(tmp_path / "notes", 2)
    (source / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    open_circuit()
    assert main(["ingest", "--embedder-mode", "real", str(source)]) == 1
    with project.connect() as conn:
        failures = conn.execute(
            "SELECT path, stage, transient, attempt FROM ingest_errors "
            "WHERE resolved_at IS NULL ORDER BY path"
        ).fetchall()
    assert failures == [
        ("notes/broken.pdf", "parse", False, 1),
        ("notes/note0.md", "embed", True, 1),
        ("notes/note1.md", "embed", True, 1),
    ]
    capsys.readouterr()

    # Still open: the same documents fail again, one try more each.
    assert main(["backfill", "--failed", "--embedder-mode", "real", "--yes"]) == 1
    out = capsys.readouterr().out
    assert "2 document(s) failed for a passing cause" in out and "broken.pdf" not in out
    assert project.scalar(
        "SELECT array_agg(attempt ORDER BY path) FROM ingest_errors WHERE resolved_at IS NULL "
        "AND transient"
    ) == [2, 2]

    close_circuit()
    assert main(["backfill", "--failed", "--embedder-mode", "real", "--yes"]) == 0
    assert "2 stored, 0 failed" in capsys.readouterr().out
    with project.connect() as conn:
        still = conn.execute("SELECT path FROM ingest_errors WHERE resolved_at IS NULL").fetchall()
        real = conn.execute(
            "SELECT count(*) FROM embeddings WHERE model = %s AND NOT fallback", (MODEL,)
        ).fetchone()[0]
    assert still == [("notes/broken.pdf",)] and real > 0
    assert len(reason_runs(instance, "backfill --failed")) == 2
