"""The one `Definitions` loads, with exactly what users see in the UI: a change to an asset,
check, job, sensor or schedule name is a change for every deployment, and shows here."""

import dagster as dg

from tvdb_assets.definitions import build_defs
from tvdb_assets.defs.pools import EMBEDDER_POOL, PARSER_POOL, POOL_LIMIT, ensure_pools
from tvdb_assets_tests.conftest import Project


def test_the_definitions_load_with_the_names_users_know() -> None:
    defs = build_defs()
    repository = defs.get_repository_def()
    graph = repository.asset_graph

    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "uploads",
        "parsed_documents",
        "chunks",
        "embeddings",
    }
    assert {(check.asset_key.to_user_string(), check.name) for check in graph.asset_check_keys} == {
        ("parsed_documents", "documents_are_not_empty"),
        ("embeddings", "document_ingested"),
        ("embeddings", "batch_documents_ingested"),
        ("embeddings", "every_chunk_has_one_vector"),
        ("embeddings", "cost_within_budget"),
        ("embeddings", "services_healthy"),
    }
    jobs = {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")}
    assert jobs == {"ingest"}
    assert {sensor.name for sensor in repository.sensor_defs} == {"inbox_sensor"}
    assert {schedule.name for schedule in repository.schedule_defs} == {
        "retry_failed",
        "heal_fallbacks",
        "reembed_on_model_change",
        "reconcile_nightly",
    }
    assert set(defs.resources or {}) == {
        "parser",
        "embedder",
        "upload_store",
        "database",
        "io_manager",
    }


def test_each_asset_names_its_table_and_columns_as_postgres_has_them(project: Project) -> None:
    defs = build_defs()
    for asset, table in (
        ("parsed_documents", "documents"),
        ("chunks", "chunks"),
        ("embeddings", "embeddings"),
    ):
        metadata = defs.resolve_assets_def(asset).metadata_by_key[dg.AssetKey(asset)]
        assert metadata["dagster/table_name"] == f"public.{table}"
        declared = [(c.name, c.type) for c in metadata["dagster/column_schema"].columns]
        with project.connect() as conn:
            actual = conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum",
                (table,),
            ).fetchall()
        assert declared == actual, table


def test_the_catalog_shows_the_inbox_and_the_deployments_model(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TVDB_UPLOADS_DIR", str(tmp_path / "inbox"))
    defs = build_defs()
    uploads = defs.resolve_assets_def("uploads").metadata_by_key[dg.AssetKey("uploads")]
    assert uploads["inbox"] == str(tmp_path / "inbox")
    # In bucket mode, the bucket (no client is made for it: the catalog loads offline).
    monkeypatch.setenv("TVDB_UPLOADS_MODE", "real")
    monkeypatch.setenv("TVDB_S3_BUCKET", "team-docs")
    monkeypatch.setenv("TVDB_S3_PREFIX", "/inbox/reports")
    uploads = build_defs().resolve_assets_def("uploads").metadata_by_key[dg.AssetKey("uploads")]
    assert uploads["inbox"] == "s3://team-docs/inbox/reports/"
    embeddings = defs.resolve_assets_def("embeddings").metadata_by_key[dg.AssetKey("embeddings")]
    assert (embeddings["model"], embeddings["dims"]) == ("text-embedding-3-small", 1536)


def test_the_steps_that_call_a_paid_service_are_in_concurrency_pools() -> None:
    defs = build_defs()
    pools = {
        name: defs.resolve_assets_def(name).op.pool
        for name in ("parsed_documents", "chunks", "embeddings")
    }
    assert pools == {"parsed_documents": PARSER_POOL, "chunks": None, "embeddings": EMBEDDER_POOL}


def test_pool_limits_are_set_once_and_a_limit_someone_set_is_kept(
    instance: dg.DagsterInstance,
) -> None:
    storage = instance.event_log_storage
    storage.set_concurrency_slots(EMBEDDER_POOL, 5)  # an operator's choice, made first
    ensure_pools(instance)
    ensure_pools(instance)
    limits = {p.name: (p.limit, p.from_default) for p in storage.get_pool_limits()}
    assert limits == {PARSER_POOL: (POOL_LIMIT, False), EMBEDDER_POOL: (5, False)}
