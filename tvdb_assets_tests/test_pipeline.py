"""End to end in mock mode: uploads become documents, chunks and vectors in Postgres."""

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from tvdb_assets import runner
from tvdb_assets.definitions import defs
from tvdb_assets.lib import intake, stages, store
from tvdb_assets.lib.embedding import MockEmbedder
from tvdb_assets.lib.embedding.unavailable import UnavailableEmbedder
from tvdb_assets.lib.ids import partition_key_for
from tvdb_assets.lib.search import search
from tvdb_assets.lib.store import embeddings, schema
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.corpus import write_bad_files, write_encoded_files, write_pdf
from tvdb_assets_tests.events import check_evaluation, latest_metadata

GRINDING = " ".join(
    f"Grind the beans fine, like powdered sugar, right before brewing cup {i}." for i in range(8)
)
GUIDE = f"""# Espresso guide

## Grinding

{GRINDING}

## Tamping

Tamp with thirty pounds of pressure, level and firm. A tamper of the right diameter seals
the basket edge, so water cannot channel around the puck. Polish the surface with a twist.
Check that the puck sits level by looking across the rim; a tilted puck brews unevenly,
sour on one side and bitter on the other. Clean the rim before locking in the portafilter.
"""

HTML = """<html><head><title>Glacier trekking</title></head><body>
<h1>Glacier trekking</h1><p>Crampons and an ice axe are mandatory on the glacier.</p>
<ul><li>helmet</li><li>harness</li></ul>
<pre><code>rope --length 60m</code></pre>
</body></html>"""


def write_corpus(source: Path) -> None:
    (source / "guides").mkdir(parents=True)
    (source / "guides" / "espresso.md").write_text(GUIDE, encoding="utf-8")
    (source / "trek.html").write_text(HTML, encoding="utf-8")
    (source / "notes.txt").write_text(
        "Sourdough starter needs feeding twice a day with rye flour.\n", encoding="utf-8"
    )
    write_pdf(
        source / "manual.pdf",
        ["Volcano observatory manual. Seismographs record tremors.",
         "Page two describes lava sampling with heat suits."],
    )  # fmt: skip


def ingest(source: Path, instance: dg.DagsterInstance) -> runner.IngestSummary:
    return runner.ingest([source], instance, defs, batch_size=200)


def table_count(project: Project, table: str) -> int:
    return int(project.scalar(f"SELECT count(*) FROM {table}"))  # type: ignore[arg-type]


def batch_figures(instance: dg.DagsterInstance, asset: str) -> dict:
    """The figures of the asset's last batch: its one observation without a partition."""
    records = instance.fetch_observations(dg.AssetKey(asset), limit=10).records
    batch = [r.asset_observation for r in records if r.asset_observation.partition is None]
    assert batch, f"no batch observation of {asset}"
    return {k: v.value for k, v in batch[0].metadata.items()}


def test_corpus_ingests_with_one_vector_per_chunk(project: Project, instance, tmp_path):
    source = tmp_path / "kb"
    write_corpus(source)
    summary = ingest(source, instance)

    assert (summary.files, summary.new, summary.ingested, summary.errors) == (4, 4, 4, [])
    assert len(summary.runs) == 1  # one batch run for the whole corpus
    assert table_count(project, "documents") == 4
    chunks = table_count(project, "chunks")
    assert chunks >= 4 and summary.chunks == chunks
    with project.connect() as conn:
        per_chunk = conn.execute(
            "SELECT count(e.chunk_id), min(e.dims), max(vector_dims(e.embedding)) "
            "FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id GROUP BY c.id"
        ).fetchall()
        pdf = conn.execute(
            "SELECT pages, page_starts FROM documents WHERE path LIKE %s", ("%manual.pdf",)
        ).fetchone()
        pages = conn.execute(
            "SELECT min(page_start), max(page_end) FROM chunks c JOIN documents d "
            "USING (partition_key) WHERE d.path LIKE %s",
            ("%manual.pdf",),
        ).fetchone()
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    assert all(row == (1, 1536, 1536) for row in per_chunk)
    assert pdf[0] == 2 and len(pdf[1]) == 2
    assert pages == (1, 2)
    assert version == (schema.LATEST_VERSION,)

    html = search("crampons ice axe glacier", k=3)
    assert html[0].document == "kb/trek.html"
    assert search("seismographs record tremors volcano", k=1)[0].page_start == 1
    assert search("tamp pressure level firm", k=1)[0].heading_path[-1] == "Tamping"


def test_unchanged_reingest_launches_nothing(project: Project, instance, tmp_path):
    source = tmp_path / "kb"
    write_corpus(source)
    assert intake.would_copy([source])  # `tvdb ingest` starts its workers at once
    ingest(source, instance)
    before = {t: table_count(project, t) for t in ("documents", "chunks", "embeddings")}
    runs_before = len(instance.get_run_records())

    assert not intake.would_copy([source])  # and here starts none
    again = ingest(source, instance)

    assert again.runs == [] and again.unchanged == 4 and again.new == 0
    assert len(instance.get_run_records()) == runs_before
    assert {t: table_count(project, t) for t in before} == before


def test_rematerializing_a_partition_reuses_every_vector(project: Project, instance, tmp_path):
    source = tmp_path / "kb"
    write_corpus(source)
    ingest(source, instance)
    key = str(project.scalar("SELECT partition_key FROM documents WHERE path LIKE '%espresso%'"))
    chunk_ids = project.scalar("SELECT array_agg(id ORDER BY id) FROM chunks")

    result = defs.resolve_job_def("ingest").execute_in_process(instance=instance, partition_key=key)

    assert result.success
    batch = batch_figures(instance, "embeddings")
    assert batch["embedding_calls"] == 0 and batch["texts_embedded"] == 0
    assert "batch_embedding_calls" not in latest_metadata(instance, "embeddings", key)
    assert project.scalar("SELECT array_agg(id ORDER BY id) FROM chunks") == chunk_ids
    assert table_count(project, "embeddings") == len(chunk_ids)  # type: ignore[arg-type]


def test_editing_a_file_reembeds_only_changed_chunks(project: Project, instance, tmp_path):
    source = tmp_path / "kb"
    write_corpus(source)
    ingest(source, instance)
    edited = GUIDE.replace("thirty pounds", "fifteen kilograms")
    (source / "guides" / "espresso.md").write_text(edited, encoding="utf-8")

    summary = ingest(source, instance)

    assert (summary.changed, summary.new, len(summary.runs)) == (1, 0, 1)
    assert batch_figures(instance, "embeddings")["texts_embedded"] == 1  # the changed chunk
    # Mock vectors cost less to make than to store: never cached (real ones are, see
    # test_openai_embedder).
    assert table_count(project, "embedding_cache") == 0
    assert project.scalar("SELECT count(*) FROM chunks WHERE text LIKE '%fifteen kilograms%'") == 1
    assert project.scalar("SELECT count(*) FROM chunks WHERE text LIKE '%thirty pounds%'") == 0
    assert table_count(project, "embeddings") == table_count(project, "chunks")


def test_bad_files_land_in_ingest_errors_and_the_rest_ingests(project: Project, instance, tmp_path):
    source = tmp_path / "mixed"
    write_corpus(source)
    expected = write_bad_files(source)
    originals = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}

    summary = ingest(source, instance)

    assert summary.ingested == 4
    failed = {Path(e.path).name: e.reason for e in summary.errors}
    assert set(failed) == set(expected)
    for name, reason in expected.items():
        assert reason in failed[name]
    with project.connect() as conn:
        rows = conn.execute(
            "SELECT path, reason FROM ingest_errors WHERE resolved_at IS NULL"
        ).fetchall()
    assert {Path(p).name for p, _ in rows} == set(expected)
    assert table_count(project, "documents") == 4
    copies = {p.name: p.read_bytes() for p in (project.inbox / "mixed").iterdir() if p.is_file()}
    assert copies == originals  # uploads are never modified
    bad_key = str(project.scalar("SELECT partition_key FROM ingest_errors LIMIT 1"))
    parsed = latest_metadata(instance, "parsed_documents", bad_key)
    assert list(parsed)[:2] == ["status", "error"] and parsed["status"] == "failed"
    assert latest_metadata(instance, "chunks", bad_key)["status"] == "skipped"
    assert_failed_in_dagster(instance, summary.runs[0], expected)


def assert_failed_in_dagster(
    instance: dg.DagsterInstance, run_id: str, expected: dict[str, str]
) -> None:
    """Each failed document's partition of `document_ingested` is red with its stage and
    reason; the batch check lists them; the run's tags count them."""
    check = dg.AssetCheckKey(dg.AssetKey("embeddings"), "document_ingested")
    records = instance.event_log_storage.get_asset_check_execution_history(check, limit=1000)
    by_partition = {r.partition: r for r in records if r.run_id == run_id}
    failed = {
        key: r.event.dagster_event.asset_check_evaluation_data
        for key, r in by_partition.items()
        if r.status == AssetCheckExecutionRecordStatus.FAILED
    }
    reasons = {Path(str(e.metadata["error"].value).split(": ")[0]).name: e for e in failed.values()}
    assert set(reasons) == set(expected)
    for name, evaluation in reasons.items():
        assert expected[name] in (evaluation.description or "")
        assert evaluation.metadata["stage"].value == "parse"
        # Aimed at this run's materialization, so the UI counts the partition's result current.
        assert evaluation.target_materialization_data.run_id == run_id
    assert set(by_partition) == set(failed)  # a batch run reports the failed ones only
    _, table = check_evaluation(instance, run_id, "batch_documents_ingested")
    rows = table["failed_documents"].records  # type: ignore[attr-defined]
    assert {Path(r.data["path"]).name for r in rows} == set(expected)
    assert {r.data["stage"] for r in rows} == {"parse"}
    tags = instance.get_run_by_id(run_id).tags
    assert tags["tvdb/failed"] == str(len(expected))
    assert tags["tvdb/correlation_id"] == run_id.replace("-", "")[:16]


def test_other_encodings_are_decoded(project: Project, instance, tmp_path):
    source = tmp_path / "encodings"
    source.mkdir()
    expected = write_encoded_files(source)

    summary = ingest(source, instance)

    assert summary.errors == [] and summary.ingested == len(expected)
    for name, text in expected.items():
        markdown = project.scalar("SELECT markdown FROM documents WHERE path LIKE %s", f"%{name}")
        assert text in str(markdown)


ODD_NAMES = ["notes café.md", 'it\'s "quoted", [odd] | name.md', "x" * 240 + ".md"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_file_names_become_valid_partitions(project: Project, instance, tmp_path, name):
    source = tmp_path / "odd"
    source.mkdir()
    (source / name).write_text("# Odd\n\nA file with an odd name about narwhals.\n")

    summary = ingest(source, instance)

    assert summary.ingested == 1
    assert search("narwhals odd name", k=1)[0].document == f"odd/{name}"


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {name: passed for name, (passed, _) in check_evaluations(result).items()}


def check_metadata(result: dg.ExecuteInProcessResult, name: str) -> dict[str, object]:
    for e in result.all_events:
        data = e.event_specific_data
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION and data.check_name == name:
            return {k: v.value for k, v in data.metadata.items()}
    raise AssertionError(f"no evaluation of {name}")


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {
        e.asset_check_evaluation_data.check_name: (
            e.asset_check_evaluation_data.passed,
            e.asset_check_evaluation_data.severity.value,
        )
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def test_data_quality_checks_run_with_each_batch(project: Project, instance, tmp_path):
    source = tmp_path / "kb"
    write_corpus(source)
    ingest(source, instance)
    key = str(project.scalar("SELECT partition_key FROM documents LIMIT 1"))
    job = defs.resolve_job_def("ingest")

    healthy = job.execute_in_process(instance=instance, partition_key=key)
    assert check_results(healthy) == {
        "batch_documents_ingested": True,
        "every_chunk_has_one_vector": True,
        "documents_are_not_empty": True,
        "cost_within_budget": True,
        "services_healthy": True,
    }
    skipped = check_metadata(healthy, "services_healthy")["skipped"]
    assert skipped == "mock mode: no external service is called"

    # Launched from the asset's page (every check of the assets), each document covered
    # gets its result, a pass too.
    page = defs.resolve_implicit_global_asset_job_def()
    launched = page.execute_in_process(instance=instance, partition_key=key)
    assert check_results(launched)["document_ingested"] is True
    assert check_metadata(launched, "document_ingested")["status"] == "ingested"

    # A check reads the documents of its run: others' missing vectors are theirs to report
    # (and would cost a scan of every vector on every batch).
    with project.connect() as conn:
        conn.execute("DELETE FROM embeddings WHERE partition_key <> %s", (key,))
    elsewhere = job.execute_in_process(instance=instance, partition_key=key)
    assert check_results(elsewhere)["every_chunk_has_one_vector"] is True
    scope = check_metadata(elsewhere, "every_chunk_has_one_vector")["scope"]
    assert scope == "1 document(s) of this run"

    # A vector of the run's own document that lost its dims is caught.
    with project.connect() as conn:
        conn.execute(
            "UPDATE embeddings SET embedding = '[1,0,0]' WHERE chunk_id = "
            "(SELECT chunk_id FROM embeddings WHERE partition_key = %s LIMIT 1)",
            (key,),
        )
    broken = job.execute_in_process(instance=instance, partition_key=key)
    assert check_results(broken)["every_chunk_has_one_vector"] is False
    assert check_metadata(broken, "every_chunk_has_one_vector")["vectors_with_wrong_dims"] == 1

    # So is a zero vector, which no query can ever find.
    with project.connect() as conn:
        conn.execute("DELETE FROM embeddings WHERE vector_dims(embedding) <> dims")
        conn.execute(
            "UPDATE embeddings SET embedding = array_fill(0::real, ARRAY[dims])::vector "
            "WHERE chunk_id = (SELECT chunk_id FROM embeddings WHERE partition_key = %s LIMIT 1)",
            (key,),
        )
    zero = job.execute_in_process(instance=instance, partition_key=key)
    assert check_results(zero)["every_chunk_has_one_vector"] is False
    assert check_metadata(zero, "every_chunk_has_one_vector")["zero_vectors"] == 1

    # A stored document left without text is named (the check alone: a run would parse
    # the upload again).
    with project.connect() as conn:
        conn.execute("UPDATE documents SET markdown = ' ' WHERE partition_key = %s", (key,))
    path = str(project.scalar("SELECT path FROM documents WHERE partition_key = %s", key))
    check = dg.AssetCheckKey(dg.AssetKey("parsed_documents"), "documents_are_not_empty")
    alone = job.get_subset(asset_selection=set(), asset_check_selection={check})
    blank = alone.execute_in_process(instance=instance, partition_key=key)
    assert check_results(blank) == {"documents_are_not_empty": False}
    found = check_metadata(blank, "documents_are_not_empty")
    assert (found["empty_documents"], found["examples"]) == (1, path)
    # Blank however long; and text after a long blank start is text.
    with project.connect() as conn:
        for markdown, blank_ones in ((" " * 5000, [path]), (" " * 5000 + "x", [])):
            conn.execute(
                "UPDATE documents SET markdown = %s WHERE partition_key = %s", (markdown, key)
            )
            assert store.documents.empty_paths(conn, [key]) == blank_ones


def test_the_hnsw_index_is_built_at_the_threshold_and_used_by_search(
    project: Project, instance, tmp_path, monkeypatch
):
    source = tmp_path / "kb"
    write_corpus(source)
    monkeypatch.setenv("TVDB_HNSW_MIN_ROWS", "1000")
    ingest(source, instance)
    assert project.scalar("SELECT count(*) FROM pg_indexes WHERE indexname LIKE '%hnsw%'") == 0

    monkeypatch.setenv("TVDB_HNSW_MIN_ROWS", "1")
    more = tmp_path / "more"
    more.mkdir()
    (more / "owls.md").write_text("# Owls\n\nBarn owls hunt voles at dusk over meadows.\n")
    ingest(more, instance)

    name = "embeddings_hnsw_mock_feature_hash_2_1536"
    definition = str(project.scalar("SELECT indexdef FROM pg_indexes WHERE indexname = %s", name))
    assert "hnsw" in definition and "vector_cosine_ops" in definition
    assert "model = 'mock-feature-hash-2'" in definition
    with project.connect() as conn:
        conn.execute("SET enable_seqscan = off")  # tiny tables: make the planner show its hand
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT chunk_id FROM embeddings WHERE model = 'mock-feature-hash-2' "
                "AND dims = 1536 ORDER BY embedding::vector(1536) <=> "
                "(SELECT embedding FROM embeddings LIMIT 1)::vector(1536) LIMIT 3"
            ).fetchall()
        )
    assert name in plan
    assert search("barn owls voles dusk", k=1)[0].document == "more/owls.md"


@pytest.mark.parametrize(
    ("spent", "warn_share", "expected"),
    [
        (3.0, None, (True, "WARN")),
        (4.2, None, (False, "WARN")),
        (5.0, None, (False, "ERROR")),
        (3.0, "0.5", (False, "WARN")),
    ],
)
def test_the_cost_check_warns_at_its_share_and_fails_when_the_budget_is_used(
    project: Project, instance, tmp_path, monkeypatch, spent, warn_share, expected
):
    if warn_share is not None:
        monkeypatch.setenv("TVDB_BUDGET_WARN_SHARE", warn_share)
    source = tmp_path / "kb"
    write_corpus(source)
    ingest(source, instance)
    with project.connect() as conn:
        conn.execute(
            "INSERT INTO cost_ledger (service, model, unit, units, usd, status, correlation_id) "
            "VALUES ('openai', 'text-embedding-3-small', 'tokens', 1, %s, 'billed', 'c')",
            (spent,),
        )
    key = str(project.scalar("SELECT partition_key FROM documents LIMIT 1"))
    result = defs.resolve_job_def("ingest").execute_in_process(
        instance=instance, partition_key=key, raise_on_error=False
    )
    assert check_evaluations(result)["cost_within_budget"] == expected


def test_a_run_dagster_could_not_start_is_failed_and_its_documents_ingest_next_time(
    project: Project, instance, tmp_path, monkeypatch
):
    source = tmp_path / "kb"
    write_corpus(source)
    create_run = instance.create_run_for_job

    def create_then_break(*args, **kwargs):  # a fault inside Dagster, after the run row exists
        create_run(*args, **kwargs)
        raise RuntimeError("event log unavailable")

    monkeypatch.setattr(instance, "create_run_for_job", create_then_break)
    with pytest.raises(RuntimeError, match="event log unavailable"):
        ingest(source, instance)
    monkeypatch.setattr(instance, "create_run_for_job", create_run)

    (stuck,) = instance.get_runs()
    assert stuck.status == dg.DagsterRunStatus.FAILURE  # not NOT_STARTED for good
    summary = ingest(source, instance)
    assert summary.errors == [] and summary.ingested == summary.files > 0
    assert table_count(project, "embeddings") == table_count(project, "chunks") > 0


def test_a_batch_reads_the_stored_partition_keys_once(
    project: Project, instance, tmp_path, monkeypatch
):
    """However many documents a batch holds or the store has, a run does not load their
    keys again for each step and each document (Dagster would, three queries for every
    per-document metadata call: O(N^2) a batch). Fails if a Dagster upgrade goes around
    `partitions.cached_partition_lookups`."""
    source = tmp_path / "kb"
    source.mkdir()
    for i in range(500):
        (source / f"note-{i:03}.md").write_text(f"# Note {i}\n\nTide pools hold kelp {i}.\n")
    storage = type(instance.event_log_storage)
    queries: list[str] = []
    for method in ("get_dynamic_partitions", "has_dynamic_partition"):
        original = getattr(storage, method)

        def counted(self, *args, _original=original, _method=method):  # type: ignore[no-untyped-def]
            queries.append(_method)
            return _original(self, *args)

        monkeypatch.setattr(storage, method, counted)
    summary = runner.ingest([source], instance, defs, batch_size=500)
    assert (summary.ingested, len(summary.runs)) == (500, 1)
    # Laying out the batch once, then once for the run: not once per document or step.
    assert len(queries) <= 2, sorted(set(queries))

    more = tmp_path / "more"
    more.mkdir()
    for i in range(12):
        (more / f"more-{i:02}.md").write_text(f"# More {i}\n\nKelp forests {i}.\n")
    queries.clear()
    summary = runner.ingest([more], instance, defs, batch_size=4)
    assert (summary.ingested, len(summary.runs)) == (12, 3)
    assert len(queries) <= 1 + len(summary.runs)  # with 500 keys stored already


def test_a_document_cut_anew_serves_its_old_chunks_until_its_new_vectors_land(
    project: Project, instance, tmp_path
):
    source = tmp_path / "tides"
    source.mkdir()
    body = " ".join(f"High water at dock {i} came at {i % 12} o'clock." for i in range(120))
    (source / "log.md").write_text(f"# Tide log\n\n{body}\n")
    assert ingest(source, instance).errors == []
    keys = [partition_key_for("tides/log.md")]

    def served() -> set[str]:
        return {hit.text for hit in search("high water at the dock", k=100)}

    def current() -> embeddings.Coverage:
        with store.connect() as conn:
            return embeddings.coverage(conn, keys)

    old = served()
    with store.connect() as conn:
        report = stages.chunk_documents(conn, stages.ChunkSettings(48, 8), keys)
    assert report.added > 0 and report.superseded > 0
    assert served() == old  # cut anew, not yet embedded: the old chunks serve
    assert current().without_vector == report.added

    with store.connect() as conn:  # a call that may pass fails: no swap
        stages.embed_documents(
            conn, UnavailableEmbedder("mock", MockEmbedder.model, 1536, "outage"), keys, None
        )
    assert served() == old

    with store.connect() as conn:
        stages.embed_documents(conn, MockEmbedder(1536), keys, None)
    new = served()
    assert new.isdisjoint(old) and len(new) == current().chunks > len(old)
    assert current().without_vector == 0
    assert project.scalar("SELECT count(*) FROM chunks WHERE superseded") == 0
