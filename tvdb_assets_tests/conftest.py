"""Fixtures: one embedded Postgres per test session, a fresh pair of databases per test.

Each test gets its own pipeline database and Dagster storage database (cloned from
migrated templates, which is fast), an empty DAGSTER_HOME and an empty inbox: pointing the
project at those through the environment is all it needs.
"""

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from tvdb_assets import dagster_env
from tvdb_assets.lib import database, services, store
from tvdb_assets_tests.fakes.fixtures import fake_llamaparse, fake_openai  # noqa: F401
from tvdb_assets_tests.fakes.openai_fake import FakeOpenAI
from tvdb_assets_tests.fakes.s3_server import fake_s3, s3_server  # noqa: F401

_ENV = (
    "TVDB_DATABASE_URL",
    "TVDB_DAGSTER_PG_URL",
    "DAGSTER_HOME",
    "TVDB_UPLOADS_DIR",
    "TVDB_HOME",
    "TVDB_BATCH_SIZE",
    "TVDB_WORKERS",
)
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The root URI of a session-wide embedded Postgres (stopped and deleted at the end)."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
    yield str(server.get_uri("postgres"))
    server.cleanup()


def _create(root: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(root, autocommit=True) as conn:
        clause = f" TEMPLATE {template}" if template else ""
        conn.execute(f"CREATE DATABASE {name}{clause}")
    return database.with_database(root, name)


@pytest.fixture(scope="session")
def templates(pg_root: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Migrated template databases for the pipeline and for Dagster's storage."""
    pipeline = _create(pg_root, "tvdb_template")
    with store.connect(pipeline):
        pass
    storage = database.with_database(
        _create(pg_root, "dagster_template"), "dagster_template", scheme="postgresql+psycopg2"
    )
    home = tmp_path_factory.mktemp("dagster_home_template")
    (home / "dagster.yaml").write_text(dagster_env.INSTANCE_TEMPLATE.read_text())
    old = os.environ.get("TVDB_DAGSTER_PG_URL")
    os.environ["TVDB_DAGSTER_PG_URL"] = storage
    try:
        with dg.DagsterInstance.from_config(str(home)):
            pass  # creating the instance runs Dagster's storage migrations
    finally:
        if old is None:
            os.environ.pop("TVDB_DAGSTER_PG_URL", None)
        else:
            os.environ["TVDB_DAGSTER_PG_URL"] = old
    # Templates cannot be cloned while anyone is connected to them.
    store.connection._migrated.discard(pipeline)
    with psycopg.connect(pg_root, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname IN ('tvdb_template', 'dagster_template') AND pid <> pg_backend_pid()"
        )
    return "tvdb_template", "dagster_template"


@pytest.fixture
def pipeline_url(pg_root: str, templates: tuple[str, str]) -> str:
    """A fresh, migrated pipeline database of its own (no Dagster, no inbox)."""
    return _create(pg_root, f"tvdb_p{next(_counter)}", templates[0])


@dataclass
class Project:
    """One test's view of the project: its databases, inbox and Dagster home."""

    database_url: str
    dagster_url: str
    inbox: Path
    home: Path

    def write(self, relative: str, content: str | bytes) -> Path:
        path = self.inbox / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url)

    def scalar(self, query: str, *params: object) -> object:
        with self.connect() as conn:
            row = conn.execute(query, params or None).fetchone()
        return row[0] if row else None

    def billed(self, service: str) -> dict[str, tuple[int, float]]:
        """Units and USD the ledger holds as billed for a service, per model (a tier)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT model, sum(units), sum(usd) FROM cost_ledger "
                "WHERE service = %s AND status = 'billed' GROUP BY model",
                (service,),
            ).fetchall()
        return {model: (int(units), float(usd)) for model, units, usd in rows}


@pytest.fixture
def project(
    pg_root: str,
    templates: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Project:
    n = next(_counter)
    pipeline_template, storage_template = templates
    db_url = _create(pg_root, f"tvdb_t{n}", pipeline_template)
    dagster_url = database.with_database(
        _create(pg_root, f"dagster_t{n}", storage_template),
        f"dagster_t{n}",
        scheme="postgresql+psycopg2",
    )
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("TVDB_DATABASE_URL", db_url)
    monkeypatch.setenv("TVDB_DAGSTER_PG_URL", dagster_url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("TVDB_UPLOADS_DIR", str(inbox))
    monkeypatch.setenv("TVDB_HOME", str(tmp_path / "tvdb_home"))
    # The pool only pays off on big batches; tests stay in one process unless they ask.
    monkeypatch.setenv("TVDB_WORKERS", "1")
    for name, value in dagster_env.PERFORMANCE_ENV.items():
        monkeypatch.setenv(name, value)
    home = dagster_env.prepare()
    return Project(db_url, dagster_url, inbox, home)


@pytest.fixture
def instance(project: Project) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.get() as instance:
        yield instance


@pytest.fixture
def openai_loopback(
    project: Project,
    fake_openai: FakeOpenAI,  # noqa: F811 - the fixture imported above, by name
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FakeOpenAI]:
    """The OpenAI SDK pointed at the loopback fake, with fresh handles on the shared guards."""
    monkeypatch.setenv("OPENAI_API_KEY", fake_openai.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    services.reset()
    yield fake_openai
    services.reset()
