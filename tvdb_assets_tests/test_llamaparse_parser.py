"""Real and hybrid parsing against a loopback LlamaParse: the real SDK, cache and ledger."""

import logging
import shutil
from pathlib import Path

import dagster as dg
import pytest

from tvdb_assets import runner
from tvdb_assets.definitions import build_defs
from tvdb_assets.defs.resources import LlamaCloudCredentials, ParserResource
from tvdb_assets.lib import services
from tvdb_assets.lib.parsing.llamaparse import LlamaParseParser
from tvdb_assets.lib.parsing.tiers import DEFAULT_TIER
from tvdb_assets_tests.conftest import Project
from tvdb_assets_tests.corpus import write_pdf
from tvdb_assets_tests.events import every_logged_line
from tvdb_assets_tests.fakes.faults import Fault
from tvdb_assets_tests.fakes.llamaparse_fake import FakeLlamaParse


@pytest.fixture
def llama_env(project: Project, fake_llamaparse: FakeLlamaParse, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("LLAMA_CLOUD_API_KEY", fake_llamaparse.api_key)
    monkeypatch.setenv("LLAMA_CLOUD_BASE_URL", fake_llamaparse.base_url)
    services.reset()
    yield build_defs()
    services.reset()


def parser_config(mode: str, **config: object) -> dict:
    return {"resources": {"parser": {"config": {"mode": mode, "poll_seconds": 0, **config}}}}


def ingest(defs, instance, source: Path, mode: str, **config: object) -> runner.IngestSummary:
    return runner.ingest(
        [source], instance, defs, batch_size=200, run_config=parser_config(mode, **config)
    )


def billed(project: Project) -> tuple[int, int]:
    with project.connect() as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(units), 0) FROM cost_ledger "
            "WHERE service = 'llamaparse' AND status = 'billed'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def write_reports(root: Path) -> Path:
    root.mkdir(parents=True)
    write_pdf(root / "survey.pdf", ["Glacier survey, first page.", "Moraine samples on page two."])
    (root / "notes.md").write_text("# Field notes\n\nCrevasse depths were logged by hand.\n")
    return root


def test_real_parsing_bills_pages_once_and_caches_by_content(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    summary = ingest(llama_env, instance, write_reports(tmp_path / "reports"), "real")

    assert summary.errors == [] and summary.ingested == 2
    assert fake_llamaparse.billed_pages == 3  # two PDF pages and one markdown page
    assert billed(project) == (2, fake_llamaparse.billed_pages)
    with project.connect() as conn:
        pdf = conn.execute(
            "SELECT parser, pages, page_starts, markdown, fallback FROM documents "
            "WHERE path = 'reports/survey.pdf'"
        ).fetchone()
    assert pdf[0] == "llamaparse" and pdf[1] == 2 and len(pdf[2]) == 2 and pdf[4] is False
    assert "Glacier survey" in pdf[3] and "Moraine samples" in pdf[3]

    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(tmp_path / "reports" / "survey.pdf", copy / "renamed.pdf")
    uploads_before = fake_llamaparse.uploads
    again = ingest(llama_env, instance, copy, "real")

    assert again.errors == [] and again.ingested == 1
    assert fake_llamaparse.uploads == uploads_before  # served from the parse cache
    assert billed(project) == (2, 3)
    assert "Moraine samples" in str(
        project.scalar("SELECT markdown FROM documents WHERE path = 'copy/renamed.pdf'")
    )


def test_a_failed_job_is_a_clear_document_error(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    fake_llamaparse.fail_next_jobs(1, error="The file could not be read.")
    source = tmp_path / "one"
    source.mkdir()
    (source / "broken.md").write_text("# Broken\n\nThis one fails at the service.\n")

    summary = ingest(llama_env, instance, source, "real")

    (error,) = summary.errors
    assert error.path == "one/broken.md"
    assert "LlamaParse could not parse it (The file could not be read.)" in error.reason
    assert billed(project) == (0, 0)  # a failed job is not billed, and not in the ledger


def test_upload_429_is_retried_after_the_time_the_service_asked(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    fake_llamaparse.script([Fault(status=429, retry_after=0.5), Fault(status=503)])
    source = tmp_path / "one"
    source.mkdir()
    (source / "page.md").write_text("# Page\n\nRetry me.\n")

    summary = ingest(llama_env, instance, source, "real")

    assert summary.errors == [] and summary.ingested == 1
    assert fake_llamaparse.uploads == 3  # two refused, then accepted: no retries on top
    upload_times = [r.time for r in fake_llamaparse.requests if r.method == "POST"]
    assert upload_times[1] - upload_times[0] >= 0.5
    assert billed(project) == (1, fake_llamaparse.billed_pages)


def test_hybrid_falls_back_to_local_parsing_on_an_outage(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    fake_llamaparse.outage(503)

    summary = ingest(
        llama_env, instance, write_reports(tmp_path / "reports"), "hybrid", max_attempts=1
    )

    assert summary.errors == [] and summary.ingested == 2
    with project.connect() as conn:
        rows = conn.execute("SELECT parser, fallback FROM documents ORDER BY path").fetchall()
    assert rows == [("local/markdown", True), ("local/pdf", True)]
    assert billed(project) == (0, 0)
    # Said once for the batch, with the count and the service's answer; each document
    # names the parser that wrote it and why.
    warnings = [
        r.message
        for r in instance.all_logs(summary.runs[0])
        if r.level == logging.WARNING and "hybrid fallback" in r.message
    ]
    assert len(warnings) == 1 and "2 document(s) parsed by the local stand-in" in warnings[0]
    assert "503" in warnings[0]
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("parsed_documents")), limit=1
    ).records
    facts = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert facts["parser"].startswith("local/") and "503" in str(facts["fallback_reason"])


def test_real_mode_without_a_key_fails_each_document_with_one_line(
    project, instance, tmp_path, monkeypatch
):
    monkeypatch.delenv("LLAMA_CLOUD_API_KEY", raising=False)
    source = tmp_path / "one"
    source.mkdir()
    (source / "page.md").write_text("# Page\n\nNo key.\n")

    summary = ingest(build_defs(), instance, source, "real")

    # The document fails, not the run: one line says why, and a later run tries again.
    assert summary.failed_runs == [] and summary.ingested == 0
    [error] = summary.errors
    assert (error.stage, error.reason) == (
        "parse",
        "llamaparse: no key (LLAMA_CLOUD_API_KEY is not set)",
    )
    assert error.transient
    messages = [r.message for r in instance.all_logs(summary.runs[0])]
    assert any(
        m.endswith("parse failed: llamaparse: no key (LLAMA_CLOUD_API_KEY is not set)")
        for m in messages
    )
    assert not any("Traceback" in m for m in messages)


def test_nuls_and_lone_surrogates_from_the_service_are_stored_cleaned_and_paid_once(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    fake_llamaparse.page_suffix = "\n\nend\x00of\ud800page"
    summary = ingest(llama_env, instance, write_reports(tmp_path / "reports"), "real")

    assert summary.errors == [] and summary.ingested == 2
    with project.connect() as conn:
        stored = [m for (m,) in conn.execute("SELECT markdown FROM documents").fetchall()]
        cached = conn.execute("SELECT count(*) FROM parse_cache").fetchone()
    assert len(stored) == 2 and all("end\ufffdof\ufffdpage" in m for m in stored)
    assert cached == (2,)  # both paid results kept, each as it arrived
    billed_before = billed(project)

    shutil.copytree(tmp_path / "reports", tmp_path / "again")
    again = ingest(llama_env, instance, tmp_path / "again", "real")
    assert again.ingested == 2 and billed(project) == billed_before  # same content: free


def test_a_malformed_result_fails_each_document_alone(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    fake_llamaparse.malformed_results = True
    summary = ingest(llama_env, instance, write_reports(tmp_path / "reports"), "real")

    assert summary.failed_runs == [] and len(summary.errors) == 2
    assert all(e.stage == "parse" and "llamaparse" in e.reason for e in summary.errors)
    assert project.scalar("SELECT count(*) FROM documents") == 0
    assert project.scalar("SELECT count(*) FROM parse_cache") == 0  # nothing bad is kept


# --- parse tiers ---------------------------------------------------------------------


def same_bill(ledger: dict[str, tuple[int, float]], invoice: dict[str, tuple[int, float]]):
    assert ledger.keys() == invoice.keys()
    for tier, (pages, usd) in invoice.items():
        assert ledger[tier][0] == pages and ledger[tier][1] == pytest.approx(usd, abs=1e-8)


def test_the_run_config_tier_is_requested_and_booked_under_that_tier(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    summary = ingest(
        llama_env, instance, write_reports(tmp_path / "reports"), "real", tier="agentic"
    )

    assert summary.errors == [] and summary.ingested == 2
    assert [job.tier for job in fake_llamaparse.jobs] == ["agentic", "agentic"]
    assert all(job.version == "latest" for job in fake_llamaparse.jobs)
    # Three pages at 10 credits, $1.25 per 1,000: the service's bill, and the ledger's.
    assert fake_llamaparse.bill() == {"agentic": (3, pytest.approx(3 * 10 * 1.25 / 1000))}
    same_bill(project.billed("llamaparse"), fake_llamaparse.bill())
    with project.connect() as conn:
        parsers = {p for (p,) in conn.execute("SELECT parser FROM documents").fetchall()}
        cached = {p for (p,) in conn.execute("SELECT parser FROM parse_cache").fetchall()}
    assert parsers == cached == {"llamaparse/agentic"}


def test_each_tier_is_cached_and_billed_apart(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    reports = write_reports(tmp_path / "reports")
    first = ingest(llama_env, instance, reports, "real")  # the default tier
    shutil.copytree(reports, tmp_path / "fast")
    again = ingest(llama_env, instance, tmp_path / "fast", "real", tier="fast")
    uploads = fake_llamaparse.uploads
    shutil.copytree(reports, tmp_path / "copy")
    cached = ingest(llama_env, instance, tmp_path / "copy", "real", tier="fast")

    assert first.errors == again.errors == cached.errors == []
    assert [job.tier for job in fake_llamaparse.jobs] == ["cost_effective"] * 2 + ["fast"] * 2
    assert fake_llamaparse.uploads == uploads  # the fast results were cached as fast ones
    invoice = fake_llamaparse.bill()
    assert invoice["cost_effective"][0] == invoice["fast"][0] == 3
    same_bill(project.billed("llamaparse"), invoice)
    # The fast tier writes text, not markdown: the text is stored all the same.
    survey = project.scalar(
        "SELECT markdown FROM documents WHERE path = 'copy/survey.pdf' "
        "AND parser = 'llamaparse/fast'"
    )
    assert "Moraine samples" in str(survey)


def test_a_tier_the_budget_cannot_pay_is_refused_before_anything_is_sent(
    project, instance, llama_env, fake_llamaparse, tmp_path, monkeypatch
):
    # Three pages cost $0.01125 at cost_effective, $0.16875 at agentic_plus.
    monkeypatch.setenv("TVDB_DAILY_BUDGET_USD", "0.05")
    reports = write_reports(tmp_path / "reports")

    refused = ingest(llama_env, instance, reports, "real", tier="agentic_plus")

    assert refused.ingested == 0 and len(refused.errors) == 2
    assert all("budget" in e.reason for e in refused.errors)
    assert fake_llamaparse.requests == [] and project.billed("llamaparse") == {}

    shutil.copytree(reports, tmp_path / "hybrid")
    fell_back = ingest(llama_env, instance, tmp_path / "hybrid", "hybrid", tier="agentic_plus")
    assert fell_back.errors == [] and fell_back.ingested == 2
    assert fake_llamaparse.requests == []
    assert project.scalar("SELECT bool_and(fallback) FROM documents") is True

    shutil.copytree(reports, tmp_path / "cheaper")
    paid = ingest(llama_env, instance, tmp_path / "cheaper", "real", tier="cost_effective")
    assert paid.errors == [] and paid.ingested == 2
    same_bill(project.billed("llamaparse"), fake_llamaparse.bill())


def test_failed_reads_are_retried_but_a_job_is_never_started_twice(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    fake_llamaparse.script([Fault(status=503)], route="parse")  # refused: no job yet
    fake_llamaparse.script([Fault(status=500)], route="status")
    fake_llamaparse.script([Fault(status=502)], route="result")
    source = tmp_path / "one"
    source.mkdir()
    (source / "page.md").write_text("# Page\n\nRead me twice.\n")

    summary = ingest(llama_env, instance, source, "real")

    assert summary.errors == [] and summary.ingested == 1
    assert len(fake_llamaparse.jobs) == 1
    statuses = {
        route: [r.status for r in fake_llamaparse.requests if r.route == route]
        for route in ("upload", "parse", "status", "result")
    }
    assert statuses == {
        "upload": [200],
        "parse": [503, 200],
        "status": [500, 200],
        "result": [502, 200],
    }
    same_bill(project.billed("llamaparse"), fake_llamaparse.bill())


def test_a_job_start_that_timed_out_is_not_retried_and_is_booked_as_billed(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    fake_llamaparse.script([Fault(delay=2.5)], route="parse")
    source = tmp_path / "one"
    source.mkdir()
    write_pdf(source / "slow.pdf", ["A slow first page.", "A slow second page."])

    summary = ingest(llama_env, instance, source, "real", timeout_seconds=1.0)

    [error] = summary.errors
    assert error.reason == "llamaparse: parse request timed out" and error.transient
    assert fake_llamaparse.wait_idle(10)
    # The service started the job after the client gave up, and will bill it: so does
    # the ledger, and no second job was started.
    assert [job.status for job in fake_llamaparse.jobs] == ["PENDING"]
    assert billed(project) == (1, fake_llamaparse.billable_pages) == (1, 2)


def test_the_tier_a_resource_is_configured_with_reaches_the_parser(project):
    assert ParserResource(credentials=LlamaCloudCredentials()).settings().tier == DEFAULT_TIER
    resource = ParserResource(
        credentials=LlamaCloudCredentials(api_key="llx-x"), mode="real", tier="agentic_plus"
    )
    with resource.client() as parser:
        assert isinstance(parser, LlamaParseParser)
        assert (parser.name, parser.tier) == ("llamaparse/agentic_plus", "agentic_plus")
    with pytest.raises(ValueError, match="'fast', 'cost_effective', 'agentic' or 'agentic_plus'"):
        ParserResource(credentials=LlamaCloudCredentials(), tier="premium")  # type: ignore[arg-type]


def test_the_circuit_opens_on_an_outage_and_then_nothing_is_sent(
    project, instance, llama_env, fake_llamaparse, tmp_path
):
    fake_llamaparse.outage(503)
    source = tmp_path / "four"
    source.mkdir()
    for n in range(4):
        (source / f"note-{n}.md").write_text(f"# Note {n}\n\nSent while the service is down.\n")

    summary = ingest(
        llama_env, instance, source, "hybrid", tier="agentic",
        max_attempts=1, circuit_failures=2, concurrency=1,
    )  # fmt: skip

    assert summary.errors == [] and summary.ingested == 4
    assert fake_llamaparse.uploads == 2  # two failures open the circuit: the rest never go
    with project.connect() as conn:
        fallbacks = conn.execute("SELECT count(*) FROM documents WHERE fallback").fetchone()
    assert fallbacks == (4,)
    assert project.billed("llamaparse") == {}


def test_no_key_reaches_logs_rows_or_errors_on_any_path(
    project, instance, llama_env, fake_llamaparse, tmp_path, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    fake_llamaparse.script([Fault(status=429, retry_after=0.1)], route="parse")
    fake_llamaparse.script([Fault(status=401)], route="status")  # the job's key refused late
    ingest(llama_env, instance, write_reports(tmp_path / "reports"), "real", concurrency=1)
    fake_llamaparse.fail_next_jobs(1, error="The file could not be read.")
    shutil.copytree(tmp_path / "reports", tmp_path / "again")
    ingest(llama_env, instance, tmp_path / "again", "real", tier="fast")

    assert len(fake_llamaparse.jobs) >= 3 and fake_llamaparse.billed_pages > 0
    captured = capsys.readouterr()
    events = every_logged_line(instance)
    with project.connect() as conn:
        stored = [
            str(row)
            for table in ("cost_ledger", "ingest_errors", "documents", "parse_cache")
            for row in conn.execute(f"SELECT * FROM {table}").fetchall()
        ]
    haystack = "\n".join([caplog.text, captured.out, captured.err, *events, *stored])
    assert "authentication failed (check LLAMA_CLOUD_API_KEY)" in haystack
    assert "The file could not be read." in haystack
    assert fake_llamaparse.api_key not in haystack
