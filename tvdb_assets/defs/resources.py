"""Thin resources that build the `lib/` clients; run config switches their mode per run.

Defaults for `mode` come from the environment in Python (`settings.mode_from_env`), since an
`EnvVar` cannot feed a `Literal` field; secrets will only ever arrive through `EnvVar`.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg

from tvdb_assets.lib import settings, store
from tvdb_assets.lib.embedding import Embedder, MockEmbedder
from tvdb_assets.lib.parsing import LocalParser, Parser
from tvdb_assets.lib.settings import Mode
from tvdb_assets.lib.uploads import LocalInbox, UploadStore


def _only_mock(resource: str, mode: Mode) -> None:
    if mode != "mock":
        raise dg.DagsterInvalidConfigError(
            f"{resource} mode {mode!r} is not available yet: this release ships the offline "
            "'mock' clients only",
            [],
            None,
        )


class ParserResource(dg.ConfigurableResource):
    """Turns an upload's bytes into markdown (mock: local parsing of md/html/txt/pdf)."""

    mode: Mode = "mock"
    max_file_mb: int = 100

    def client(self) -> Parser:
        _only_mock("parser", self.mode)
        return LocalParser(max_bytes=self.max_file_mb * 1024 * 1024)


class EmbedderResource(dg.ConfigurableResource):
    """Turns chunk text into vectors (mock: feature-hashed token vectors)."""

    mode: Mode = "mock"
    dims: int = 1536

    def client(self) -> Embedder:
        _only_mock("embedder", self.mode)
        return MockEmbedder(dims=self.dims)


class UploadsResource(dg.ConfigurableResource):
    """Where uploads are read from (mock: the local inbox directory)."""

    mode: Mode = "mock"
    directory: str | None = None  # unset: TVDB_UPLOADS_DIR, read when a run starts

    def client(self) -> UploadStore:
        _only_mock("uploads", self.mode)
        return LocalInbox(self.directory or settings.uploads_dir())


class PostgresResource(dg.ConfigurableResource):
    """The pipeline's tables: TVDB_DATABASE_URL, or the embedded server when unset."""

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with store.connect() as conn:
            yield conn


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "parser": ParserResource(mode=settings.mode_from_env("TVDB_PARSER_MODE")),
        "embedder": EmbedderResource(mode=settings.mode_from_env("TVDB_EMBEDDER_MODE")),
        "upload_store": UploadsResource(mode=settings.mode_from_env("TVDB_UPLOADS_MODE")),
        "database": PostgresResource(),
    }
