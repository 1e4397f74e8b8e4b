"""The one `Definitions` loads, with exactly what users see in the UI: a change to an asset,
check, job, sensor or schedule name is a change for every deployment, and shows here."""

from tvdb_assets.definitions import build_defs


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
        ("embeddings", "every_chunk_has_one_vector"),
        ("embeddings", "cost_within_budget"),
        ("embeddings", "services_healthy"),
    }
    jobs = {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")}
    assert jobs == {"ingest"}
    assert {sensor.name for sensor in repository.sensor_defs} == {"inbox_sensor"}
    assert {schedule.name for schedule in repository.schedule_defs} == set()
    assert set(defs.resources or {}) == {"parser", "embedder", "upload_store", "database"}
