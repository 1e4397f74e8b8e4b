"""Thin resources that build the `lib/` clients; run config switches their mode per run.

Defaults for `mode` come from the environment in Python (`settings.mode_from_env`), since an
`EnvVar` cannot feed a `Literal` field; secrets will only ever arrive through `EnvVar`.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import psycopg

from tvdb_assets.lib import services, settings, stages, store
from tvdb_assets.lib.billing import Ledger
from tvdb_assets.lib.embedding import Embedder, MockEmbedder
from tvdb_assets.lib.embedding.unavailable import UnavailableEmbedder
from tvdb_assets.lib.parsing import LocalParser, Parser
from tvdb_assets.lib.parsing.hybrid import HybridParser, UnavailableParser
from tvdb_assets.lib.resilience import CircuitBreaker
from tvdb_assets.lib.settings import Mode
from tvdb_assets.lib.store.ledger import Budget, CallContext
from tvdb_assets.lib.uploads import LocalInbox, UploadStore


def _only_mock(resource: str, mode: Mode) -> None:
    if mode != "mock":
        raise dg.Failure(
            f"{resource} mode {mode!r} is not available yet: uploads come from the local "
            "inbox ('mock') only"
        )


class OpenAICredentials(dg.ConfigurableResource):
    """The OpenAI key, only ever `EnvVar("OPENAI_API_KEY")`.

    A resource of its own: run config that changes the embedder's mode replaces the
    embedder's whole config, and must not take the key with it.
    """

    api_key: str | None = None


class LlamaCloudCredentials(dg.ConfigurableResource):
    """The LlamaCloud key, only ever `EnvVar("LLAMA_CLOUD_API_KEY")` (see OpenAICredentials)."""

    api_key: str | None = None


class ServiceResource(dg.ConfigurableResource):
    """What the parser and the embedder share: a mode, and how they call their service."""

    mode: Mode = "mock"
    base_url: str | None = None  # unset: the SDK's own variable, else its default
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    circuit_failures: int = 5
    circuit_reset_seconds: float = 60.0

    def _breaker(self, service: str) -> CircuitBreaker:
        return services.breaker(service, self.circuit_failures, self.circuit_reset_seconds)

    def _key(self, api_key: str | None, variable: str, resource: str) -> str | None:
        """The key, or None in hybrid mode (which then falls back); real mode needs one."""
        if not api_key and self.mode == "real":
            raise dg.Failure(f"{resource} mode 'real' needs an API key: {variable} is not set")
        return api_key or None


class ParserResource(ServiceResource):
    """Turns an upload's bytes into markdown.

    mock: local parsing of md/html/txt/pdf. real: LlamaParse, results cached by content
    hash, several documents at a time. hybrid: LlamaParse first; where it cannot answer
    (outage, open circuit, budget, missing key) the local parse, flagged fallback.
    """

    credentials: LlamaCloudCredentials
    max_file_mb: int = 100
    concurrency: int = 4
    timeout_seconds: float = 300.0
    poll_seconds: int = 1

    def client(self, call: CallContext | None = None) -> Parser:
        local = LocalParser(max_bytes=self.max_file_mb * 1024 * 1024)
        if self.mode == "mock":
            return local
        real = self._real(call)
        return HybridParser(real, local) if self.mode == "hybrid" else real

    def _real(self, call: CallContext | None) -> Parser:
        # Imported here: the LlamaParse SDK takes about 2 s to import, which mock mode and
        # every process that never calls it must not pay.
        from tvdb_assets.lib.parsing.llamaparse import LlamaParseParser

        api_key = self._key(self.credentials.api_key, "LLAMA_CLOUD_API_KEY", "parser")
        if api_key is None:
            return UnavailableParser("llamaparse", "LLAMA_CLOUD_API_KEY is not set")
        return LlamaParseParser(
            api_key=api_key,
            base_url=self.base_url or os.environ.get("LLAMA_CLOUD_BASE_URL") or None,
            breaker=self._breaker("llamaparse"),
            ledger=Ledger(budget()),
            call=call,
            attempts=self.max_attempts,
            timeout=self.timeout_seconds,
            check_interval=self.poll_seconds,
            concurrency=self.concurrency,
            max_bytes=self.max_file_mb * 1024 * 1024,
        )


class EmbedderResource(ServiceResource):
    """Turns chunk text into vectors.

    mock: feature-hashed token vectors, offline and free. real: OpenAI, rate-limited,
    retried, behind a circuit breaker and the budget. hybrid: OpenAI first; where a call
    fails (outage, open circuit, budget, missing key) the mock's vector, flagged fallback.
    """

    credentials: OpenAICredentials
    model: str = "text-embedding-3-small"
    dims: int = 1536
    requests_per_minute: int = 3_000
    tokens_per_minute: int = 1_000_000

    def client(self, call: CallContext | None = None) -> Embedder:
        mock = MockEmbedder(dims=self.dims)
        if self.mode == "mock":
            return mock
        real = self._real(call)
        if self.mode == "hybrid":
            real.fallback = mock
        return real

    def _real(self, call: CallContext | None) -> Embedder:
        from tvdb_assets.lib.embedding.openai_embedder import OpenAIEmbedder  # as LlamaParse

        api_key = self._key(self.credentials.api_key, "OPENAI_API_KEY", "embedder")
        if api_key is None:
            return UnavailableEmbedder(self.model, self.dims, "OPENAI_API_KEY is not set")
        return OpenAIEmbedder(
            api_key=api_key,
            base_url=self.base_url or os.environ.get("OPENAI_BASE_URL") or None,
            model=self.model,
            dims=self.dims,
            timeout=self.timeout_seconds,
            limiter=services.limiter("openai", self.requests_per_minute, self.tokens_per_minute),
            breaker=services.breaker("openai", self.circuit_failures, self.circuit_reset_seconds),
            ledger=Ledger(budget()),
            call=call,
            attempts=self.max_attempts,
        )


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


def head_start(parser_mode: Mode, embedder_mode: Mode) -> stages.HeadStart | None:
    """What the runs of `tvdb ingest` (default resources, these modes as run config) will
    parse and embed with, for its workers to start on before the first run does; None when
    a service parses, which only a run may ask."""
    if parser_mode != "mock":
        return None
    parser = ParserResource(credentials=LlamaCloudCredentials(), mode=parser_mode)
    embedder = EmbedderResource(credentials=OpenAICredentials(), mode=embedder_mode)
    return stages.HeadStart(
        UploadsResource().client(),
        parser.client(),
        stages.ChunkSettings(),
        embedder.dims if embedder_mode == "mock" else None,
    )


def budget() -> Budget:
    """Spend limits come from the deployment's environment, never from a run's config."""
    return Budget(settings.daily_budget_usd(), settings.hourly_request_cap())


def _secret(name: str) -> Any:
    # An EnvVar naming an unset variable fails every run's config, mock runs included; the
    # key is then simply absent, and real/hybrid modes say so when they need it.
    return dg.EnvVar(name) if os.environ.get(name) else None


def default_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "parser": ParserResource(
            credentials=LlamaCloudCredentials(api_key=_secret("LLAMA_CLOUD_API_KEY")),
            mode=settings.mode_from_env("TVDB_PARSER_MODE"),
        ),
        "embedder": EmbedderResource(
            credentials=OpenAICredentials(api_key=_secret("OPENAI_API_KEY")),
            mode=settings.mode_from_env("TVDB_EMBEDDER_MODE"),
        ),
        "upload_store": UploadsResource(mode=settings.mode_from_env("TVDB_UPLOADS_MODE")),
        "database": PostgresResource(),
    }
