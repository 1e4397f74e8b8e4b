"""Real mode against a loopback OpenAI: the real SDK, our resilience, the cost ledger."""

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from tvdb_assets import runner
from tvdb_assets.cli import main
from tvdb_assets.definitions import build_defs
from tvdb_assets.lib import services
from tvdb_assets.lib.store import service_health
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.events import check_evaluation, every_logged_line, latest_metadata
from tvdb_assets_tests.fakes.faults import Fault
from tvdb_assets_tests.fakes.openai_fake import FakeOpenAI

MODEL = "text-embedding-3-small"


@pytest.fixture
def openai_env(project: Project, fake_openai: FakeOpenAI, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    services.reset()  # a fresh circuit breaker and rate limiter for each test
    yield build_defs()
    services.reset()


def embedder_config(mode: str, **config: object) -> dict:
    return {"resources": {"embedder": {"config": {"mode": mode, **config}}}}


def write_docs(root: Path, count: int, words: int = 40) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = " ".join(f"{root.name}topic{i} detail{j}" for j in range(words))
        (root / f"doc{i}.md").write_text(f"# Document {i}\n\n{body}\n")
    return root


def ingest(defs, instance, source: Path, run_config: dict) -> runner.IngestSummary:
    return runner.ingest([source], instance, defs, batch_size=200, run_config=run_config)


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def table_count(project: Project, table: str) -> int:
    with project.connect() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def ledger(project: Project) -> tuple[int, int, float]:
    """(billed rows, billed tokens, USD) in cost_ledger."""
    with project.connect() as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(units), 0), coalesce(sum(usd), 0) FROM cost_ledger "
            "WHERE status = 'billed'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), float(row[2])


def test_run_config_switches_mock_real_and_hybrid(
    project, instance, openai_env, fake_openai, tmp_path
):
    mock = ingest(openai_env, instance, write_docs(tmp_path / "a", 2), embedder_config("mock"))
    assert mock.errors == [] and fake_openai.requests == []

    real = ingest(openai_env, instance, write_docs(tmp_path / "b", 2), embedder_config("real"))
    assert real.errors == [] and len(fake_openai.successful_requests) == 1
    healthy, seen = check_evaluation(instance, real.runs[0], "services_healthy")
    assert healthy and seen["openai_failures"] == 0 and seen["openai_last_call_seconds"] > 0

    fake_openai.outage(503)
    hybrid = ingest(
        openai_env,
        instance,
        write_docs(tmp_path / "c", 2),
        embedder_config("hybrid", max_attempts=1),
    )
    assert hybrid.errors == []
    with project.connect() as conn:
        rows = conn.execute(
            "SELECT d.path LIKE 'b/%', d.path LIKE 'c/%', e.model, e.fallback, e.dims "
            "FROM embeddings e JOIN documents d USING (partition_key) WHERE d.path NOT LIKE 'a/%'"
        ).fetchall()
    assert {(r[2], r[3], r[4]) for r in rows if r[0]} == {(MODEL, False, 1536)}
    assert {(r[2], r[3], r[4]) for r in rows if r[1]} == {("mock-feature-hash-2", True, 1536)}
    stand_ins = sum(1 for r in rows if r[1])
    # Flagged stand-ins are what hybrid mode promises: counted per model, not failed.
    passed, metadata = check_evaluation(instance, hybrid.runs[0], "every_chunk_has_one_vector")
    assert passed
    assert metadata["vectors_by_model"] == f"mock-feature-hash-2/1536 (fallback): {stand_ins}"
    # The run says so once, with the reason and the count, and each document names the
    # model that wrote its vectors, not the configured one.
    warnings = [
        r.message
        for r in instance.all_logs(hybrid.runs[0])
        if r.level == logging.WARNING and "hybrid fallback" in r.message
    ]
    assert len(warnings) == 1
    assert "2 document(s) embedded by the local stand-in" in warnings[0] and "503" in warnings[0]
    key = str(project.scalar("SELECT partition_key FROM documents WHERE path LIKE 'c/%' LIMIT 1"))
    facts = latest_metadata(instance, "embeddings", key)
    assert facts["model"] == "mock-feature-hash-2 (fallback)"
    assert "503" in str(facts["fallback_reason"])
    assert list(facts)[:1] == ["status"]


def test_real_mode_without_a_key_fails_the_documents_in_one_line(
    project, instance, tmp_path, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    summary = ingest(
        build_defs(), instance, write_docs(tmp_path / "nokey", 2), embedder_config("real")
    )

    # The documents fail, not the run; the old vectors, if any, would keep serving.
    assert summary.failed_runs == [] and summary.ingested == 0
    assert {(e.stage, e.transient) for e in summary.errors} == {("embed", True)}
    assert all(
        e.reason.endswith("openai: no key (OPENAI_API_KEY is not set)") for e in summary.errors
    )
    assert table_count(project, "embeddings") == 0
    healthy, seen = check_evaluation(instance, summary.runs[0], "services_healthy")
    assert not healthy and seen["services"] == "openai: no key"
    failed, _ = check_evaluation(instance, summary.runs[0], "document_ingested")
    assert not failed


def test_requests_stay_within_the_api_limits(project, instance, openai_env, fake_openai, tmp_path):
    source = tmp_path / "big"
    source.mkdir()
    words = " ".join(f"w{i}" for i in range(40_000))
    (source / "long.md").write_text(f"# Long\n\n{words}\n")
    config = embedder_config("real")
    config["ops"] = {"chunks": {"config": {"max_tokens": 16, "overlap_tokens": 0}}}

    summary = ingest(openai_env, instance, source, config)

    assert summary.errors == [] and summary.chunks > 2048
    sent = fake_openai.successful_requests
    assert len(sent) == -(-summary.chunks // 2048)  # packed: full requests of 2,048 inputs
    assert [r.n_inputs for r in sent[:-1]] == [2048] * (len(sent) - 1)
    assert all(r.tokens <= 300_000 for r in sent)
    assert sum(r.n_inputs for r in sent) == summary.chunks
    assert ledger(project)[1] == fake_openai.billed_tokens


def test_text_already_embedded_is_never_paid_for_again(
    project, instance, openai_env, fake_openai, tmp_path
):
    first = write_docs(tmp_path / "first", 3)
    ingest(openai_env, instance, first, embedder_config("real"))
    paid = fake_openai.billed_tokens
    assert table_count(project, "embedding_cache") == 3

    # The same texts under other names, and one edited: only the edit is sent.
    copies = tmp_path / "copies"
    copies.mkdir()
    for n, doc in enumerate(sorted(first.iterdir())):
        text = doc.read_text()
        edited = text.replace("detail0 ", "changed ") if n == 1 else text
        (copies / f"copy{n}.md").write_text(edited)
    summary = ingest(openai_env, instance, copies, embedder_config("real"))

    assert summary.errors == [] and summary.ingested == 3
    assert [r.n_inputs for r in fake_openai.successful_requests[1:]] == [1]
    assert table_count(project, "embedding_cache") == 4
    assert ledger(project)[1] == fake_openai.billed_tokens > paid
    with project.connect() as conn:
        unvectored = conn.execute(
            "SELECT count(*) FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id "
            "WHERE e.chunk_id IS NULL"
        ).fetchone()
    assert unvectored == (0,)


def test_429_500_and_timeouts_are_retried_until_they_succeed(
    project, instance, openai_env, fake_openai, tmp_path
):
    fake_openai.script([Fault(status=429, retry_after=0.3), Fault(status=500), Fault(delay=3.0)])
    summary = ingest(
        openai_env,
        instance,
        write_docs(tmp_path / "docs", 3),
        embedder_config("real", timeout_seconds=1.0, max_attempts=5),
    )

    assert summary.errors == []
    # The timed-out request finishes (and is billed) after the client gave up on it.
    assert wait_until(lambda: len(fake_openai.requests) == 4)
    statuses = [r.status for r in fake_openai.requests]
    assert statuses[:2] == [429, 500] and statuses[-1] == 200 and len(statuses) == 4
    assert (
        project.scalar("SELECT count(*) FROM embeddings WHERE model = %s", MODEL) == summary.chunks
    )
    # The ledger equals what the fake billed, to the token: the success and the timed-out
    # attempt (the service charges for work it finished after the client gave up).
    assert ledger(project)[:2] == (2, fake_openai.billed_tokens)
    gap = fake_openai.requests[1].time - fake_openai.requests[0].time
    assert gap >= 0.3  # Retry-After was honoured


def test_an_outage_opens_the_circuit_and_hybrid_falls_back(
    project, instance, openai_env, fake_openai, tmp_path
):
    fake_openai.outage(503)
    for i in range(5):
        ingest(
            openai_env,
            instance,
            write_docs(tmp_path / f"r{i}", 1),
            embedder_config("real", max_attempts=1),
        )
    assert len(fake_openai.requests) == 5
    assert services.breaker("openai", 5, 60.0).state == "open"

    # The next run is in another process (this one's handles on the guards dropped): the
    # circuit it starts with is the one the outage left, in Postgres.
    services.reset()
    summary = ingest(
        openai_env,
        instance,
        write_docs(tmp_path / "h", 2),
        embedder_config("hybrid", max_attempts=1),
    )

    assert len(fake_openai.requests) == 5  # the open circuit made no call
    assert summary.errors == []
    with project.connect() as conn:
        flagged = conn.execute(
            "SELECT count(*) FILTER (WHERE e.fallback), count(*) FROM embeddings e "
            "JOIN documents d USING (partition_key) WHERE d.path LIKE 'h/%'"
        ).fetchone()
        health = {h.service: h.state for h in service_health.load(conn)}
        failed = conn.execute(
            "SELECT count(DISTINCT partition_key) FROM ingest_errors "
            "WHERE stage = 'embed' AND resolved_at IS NULL"
        ).fetchone()
    assert flagged[0] == flagged[1] > 0
    assert health == {"openai": "open"}
    healthy, seen = check_evaluation(instance, summary.runs[0], "services_healthy")
    assert not healthy and seen["unhealthy"] == "openai: open"
    assert "503" in str(seen["openai_last_error"]) and seen["openai_failures"] == 5
    assert failed == (5,)  # the real-mode documents failed per document, with a reason


def test_the_budget_stops_calls_before_it_is_crossed(
    project, instance, openai_env, fake_openai, tmp_path, monkeypatch
):
    # Each request of 2,048 chunks of ~16 tokens costs about $0.00066: two fit, a third not.
    monkeypatch.setenv("TVDB_DAILY_BUDGET_USD", "0.0015")
    source = tmp_path / "big"
    source.mkdir()
    words = " ".join(f"w{i}" for i in range(80_000))
    (source / "long.md").write_text(f"# Long\n\n{words}\n")
    config = embedder_config("real")
    config["ops"] = {"chunks": {"config": {"max_tokens": 16, "overlap_tokens": 0}}}
    budget_defs = build_defs()

    summary = ingest(budget_defs, instance, source, config)

    rows, tokens, usd = ledger(project)
    assert rows == len(fake_openai.successful_requests) >= 1
    assert tokens == fake_openai.billed_tokens
    assert usd <= 0.0015
    assert summary.chunks > sum(r.n_inputs for r in fake_openai.successful_requests)
    (error,) = summary.errors  # the document failed, and says why
    assert "budget" in error.reason
    assert project.scalar("SELECT count(*) FROM cost_ledger WHERE status = 'reserved'") == 0


def test_no_key_appears_in_logs_events_or_ledger(
    project,
    instance,
    openai_env,
    fake_openai,
    fake_llamaparse,
    tmp_path,
    caplog,
    capsys,
    monkeypatch,
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LLAMA_CLOUD_API_KEY", fake_llamaparse.api_key)
    monkeypatch.setenv("LLAMA_CLOUD_BASE_URL", fake_llamaparse.base_url)
    defs = build_defs()
    fake_openai.script([Fault(status=401), Fault(status=429, retry_after=0.1)])
    fake_llamaparse.script([Fault(status=401)])
    both_real = embedder_config("real", max_attempts=2)
    both_real["resources"]["parser"] = {"config": {"mode": "real", "poll_seconds": 0}}
    ingest(defs, instance, write_docs(tmp_path / "k", 2), both_real)
    ingest(defs, instance, write_docs(tmp_path / "l", 2), both_real)

    captured = capsys.readouterr()
    events = every_logged_line(instance)
    with project.connect() as conn:
        stored = [str(r) for r in conn.execute("SELECT * FROM cost_ledger").fetchall()]
        stored += [str(r) for r in conn.execute("SELECT * FROM ingest_errors").fetchall()]
    runs = [str(r.dagster_run.run_config) for r in instance.get_run_records()]
    haystack = "\n".join([caplog.text, captured.out, captured.err, *events, *stored, *runs])
    assert "authentication failed" in haystack  # the 401s were reported ...
    assert "upload refused (HTTP 401)" in haystack
    for key in (fake_openai.api_key, fake_llamaparse.api_key):
        assert key not in haystack  # ... without the keys


def test_correlation_ids_join_run_logs_and_ledger_rows(
    project, instance, openai_env, fake_openai, tmp_path
):
    fake_openai.script([Fault(status=500)])
    summary = ingest(openai_env, instance, write_docs(tmp_path / "c", 2), embedder_config("real"))

    (run_id,) = summary.runs
    messages = [entry.message for entry in instance.all_logs(run_id)]
    with project.connect() as conn:
        (correlation, ledger_run) = conn.execute(
            "SELECT correlation_id, run_id FROM cost_ledger WHERE status = 'billed'"
        ).fetchone()
    batch_id = correlation.split(".")[0]
    assert ledger_run == run_id
    assert any(f"[{batch_id}] embedding" in m for m in messages)  # the asset's own line
    assert any(f"[{correlation}] openai attempt 1 failed" in m for m in messages)  # the retry
    sent = [r.headers.get("x-correlation-id") for r in fake_openai.requests]
    assert sent == [correlation, correlation]  # and the service saw it on both attempts


def test_a_rejected_chunk_gets_no_vector_and_the_rest_of_its_document_does(
    project, instance, openai_env, fake_openai, tmp_path
):
    fake_openai.reject_inputs_containing("POISON")
    source = tmp_path / "mixed"
    source.mkdir()
    sections = [
        f"## Part {i}\n\n" + " ".join(f"clean{i} text{j}" for j in range(120)) for i in range(6)
    ]
    sections[3] = "## Part 3\n\n" + " ".join(f"POISON text{j}" for j in range(120))
    (source / "doc.md").write_text("# Doc\n\n" + "\n\n".join(sections) + "\n")

    summary = ingest(openai_env, instance, source, embedder_config("real"))

    (error,) = summary.errors
    assert error.stage == "embed" and "1 chunk(s) without a vector" in error.reason
    with project.connect() as conn:
        missing = conn.execute(
            "SELECT c.text FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id "
            "WHERE e.chunk_id IS NULL"
        ).fetchall()
        zero = conn.execute(
            "SELECT count(*) FROM embeddings WHERE vector_norm(embedding) = 0"
        ).fetchone()
    assert len(missing) == 1 and "POISON" in missing[0][0]
    assert zero == (0,)
    assert project.scalar("SELECT count(*) FROM embeddings") == summary.chunks - 1


@pytest.mark.parametrize("why", ["budget", "missing key"])
def test_hybrid_falls_back_without_a_call_when_real_cannot_be_used(
    project, instance, fake_openai, tmp_path, monkeypatch, why
):
    services.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    if why == "budget":
        monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
        monkeypatch.setenv("TVDB_DAILY_BUDGET_USD", "0")
    else:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    summary = ingest(
        build_defs(), instance, write_docs(tmp_path / "h", 2), embedder_config("hybrid")
    )

    assert summary.errors == [] and fake_openai.requests == []
    with project.connect() as conn:
        rows = conn.execute("SELECT DISTINCT model, fallback FROM embeddings").fetchall()
    assert rows == [("mock-feature-hash-2", True)]
    assert ledger(project) == (0, 0, 0.0)


def test_search_embeds_the_query_with_the_model_the_documents_used(
    project, instance, openai_env, fake_openai, tmp_path, capsys
):
    source = tmp_path / "kb"
    source.mkdir()
    (source / "bees.md").write_text("# Bees\n\nA hive holds one queen and many workers.\n")
    (source / "ships.md").write_text("# Ships\n\nClipper ships carried tea across oceans.\n")
    ingest(openai_env, instance, source, embedder_config("real"))
    capsys.readouterr()

    # The fake's vectors are hashes of the text: the same text is the only near match.
    query = str(project.scalar("SELECT text FROM chunks WHERE text LIKE '%hive%'"))
    assert main(["search", query, "--embedder-mode", "real"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert hits[0]["document"] == "kb/bees.md" and hits[0]["score"] > 0.99  # same model
    assert fake_openai.successful_requests[-1].inputs == (query,)


def test_a_key_echoed_in_an_error_body_is_redacted_everywhere(
    project, instance, openai_env, fake_openai, tmp_path, caplog
):
    """A gateway that echoes the Authorization header in a 400 body (some proxies do)."""
    key = fake_openai.api_key
    echo = Fault(status=400, message=f"bad request; you sent Authorization: Bearer {key}")
    fake_openai.script([echo])

    with caplog.at_level(logging.DEBUG):
        summary = ingest(
            openai_env, instance, write_docs(tmp_path / "echo", 1), embedder_config("real")
        )

    (error,) = summary.errors  # the document fails, and says why
    assert error.path == "echo/doc0.md" and "HTTP 400" in error.reason
    assert "[redacted]" in error.reason and key not in error.reason
    with project.connect() as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM ingest_errors").fetchall()]
    assert reasons and all(key not in r and "[redacted]" in r for r in reasons)
    (run,) = instance.get_runs()
    events = [r.event_log_entry.to_json() for r in instance.get_records_for_run(run.run_id).records]
    assert events and all(key not in e for e in events)  # run logs and asset metadata
    assert all(key not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("mode", ["real", "mock"])
def test_search_with_the_service_down_is_one_line_and_a_non_zero_exit(
    project, openai_env, fake_openai, capsys, mode
):
    fake_openai.outage(503)
    code = main(["search", "tidal energy", "--embedder-mode", mode])
    out = capsys.readouterr()
    if mode == "mock":  # mock mode never calls the service
        assert code == 0 and out.err == ""
        return
    assert code == 2 and out.out == ""
    (line,) = out.err.strip().splitlines()
    assert line.startswith("tvdb search: ") and "cannot embed the query" in line
    assert "HTTP 503" in line and fake_openai.api_key not in line
