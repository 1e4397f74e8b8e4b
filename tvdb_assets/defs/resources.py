"""Thin resources: run config in, `lib/` clients out (`lib.clients` builds them).

Defaults for `mode` come from the environment in Python (`settings.mode_from_env`), since an
`EnvVar` cannot feed a `Literal` field; secrets will only ever arrive through `EnvVar`.
Each `client()` is a context manager: what a client opens (a ledger's connection) is
closed when the step that used it is done.
"""

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dagster as dg
import psycopg

from tvdb_assets.lib import clients, settings, store
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.embedding import Embedder
from tvdb_assets.lib.errors import ConfigError
from tvdb_assets.lib.parsing import Parser
from tvdb_assets.lib.parsing.tiers import Tier
from tvdb_assets.lib.settings import Mode
from tvdb_assets.lib.uploads import UploadStore
from tvdb_assets.lib.uploads.s3 import KEYS_PER_PAGE

C = TypeVar("C", Parser, Embedder)
S = TypeVar("S", bound=clients.ServiceSettings)

# The defaults are the `lib` settings' own, so that a resource and the CLI agree.
_SERVICE = clients.ServiceSettings()
_PARSER = clients.ParserSettings()
_EMBEDDER = clients.EmbedderSettings()


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
    timeout_seconds: float = _SERVICE.timeout_seconds
    max_attempts: int = _SERVICE.max_attempts
    circuit_failures: int = _SERVICE.circuit_failures
    circuit_reset_seconds: float = _SERVICE.circuit_reset_seconds


class ParserResource(ServiceResource):
    """Turns an upload's bytes into markdown.

    mock: local parsing of md/html/txt/pdf. real: LlamaParse at the run's `tier`, results
    cached by content hash (per tier), several documents at a time, pages and USD booked
    under the tier. hybrid: LlamaParse first; where it cannot answer (outage, open circuit,
    budget, missing key) the local parse, flagged fallback.
    """

    credentials: LlamaCloudCredentials
    max_file_mb: int = _PARSER.max_file_mb
    concurrency: int = _PARSER.concurrency
    timeout_seconds: float = _PARSER.timeout_seconds
    poll_seconds: int = _PARSER.poll_seconds
    tier: Tier = _PARSER.tier

    def settings(self) -> clients.ParserSettings:
        return _settings(clients.ParserSettings, self, self.credentials.api_key)

    @contextmanager
    def client(self, call: CallContext | None = None) -> Iterator[Parser]:
        with _opened(lambda: clients.parser(self.settings(), call)) as parser:
            yield parser


class EmbedderResource(ServiceResource):
    """Turns chunk text into vectors.

    mock: feature-hashed word vectors, offline and free. real: OpenAI, rate-limited,
    retried, behind a circuit breaker and the budget. hybrid: OpenAI first; where a call
    fails (outage, open circuit, budget, missing key) the mock's vector, flagged fallback.
    """

    credentials: OpenAICredentials
    # Unset: the mode's own model (mock: the mock's; real, hybrid: TVDB_EMBEDDING_MODEL).
    model: str | None = None
    dims: int = _EMBEDDER.dims

    def settings(self) -> clients.EmbedderSettings:
        return _settings(clients.EmbedderSettings, self, self.credentials.api_key)

    @contextmanager
    def client(self, call: CallContext | None = None) -> Iterator[Embedder]:
        with _opened(lambda: clients.embedder(self.settings(), call)) as embedder:
            yield embedder


class UploadsResource(dg.ConfigurableResource):
    """Where uploads are read from.

    mock: the local inbox directory. real: an S3-compatible bucket (AWS S3, Supabase
    Storage, MinIO) at TVDB_S3_ENDPOINT_URL, with the keys of AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, which come from the environment only. hybrid: the bucket too (a
    local folder cannot stand in for it). Unset fields are read when a run or tick starts.
    """

    mode: Mode = "mock"
    directory: str | None = None  # mock; unset: TVDB_UPLOADS_DIR
    bucket: str | None = None  # real; unset: TVDB_S3_BUCKET
    prefix: str | None = None  # real, a folder in the bucket; unset: TVDB_S3_PREFIX
    # real: keys the sensor lists a tick; a larger bucket is listed over several ticks.
    keys_per_tick: int = KEYS_PER_PAGE
    # real: seconds between listings of the whole bucket when upload notices come by
    # webhook (the sensor acts on them each tick); unset: TVDB_S3_SWEEP_SECONDS, 0: every tick.
    sweep_seconds: int | None = None

    def sweep_every(self) -> int:
        return settings.sweep_seconds() if self.sweep_seconds is None else self.sweep_seconds

    def client(self) -> UploadStore:
        config = clients.UploadSettings(
            self.mode, self.directory, self.bucket, self.prefix, self.keys_per_tick
        )
        try:
            return clients.upload_store(config)
        except ConfigError as exc:
            raise dg.Failure(str(exc)) from None


def _settings(kind: type[S], resource: dg.ConfigurableResource, api_key: str | None) -> S:
    """The resource's config as the `lib` settings it stands for (the same field names);
    what a run's config does not hold (the deployment's rate limits) is the settings' own."""
    names = {f.name for f in dataclasses.fields(kind)} - {"api_key"}
    given = {name: getattr(resource, name) for name in names if hasattr(resource, name)}
    given = {name: value for name, value in given.items() if value is not None}
    return kind(api_key=api_key, **given)


@contextmanager
def _opened(build: Callable[[], C]) -> Iterator[C]:
    try:
        client = build()
    except ConfigError as exc:  # shown on the step as the reason it failed
        raise dg.Failure(str(exc)) from None
    try:
        yield client
    finally:
        client.close()


class PostgresTables(dg.ConfigurableIOManager):
    """Nothing to store: each asset writes its own rows to Postgres (`documents`, `chunks`,
    `embeddings`) and no value passes between steps, so nothing is pickled anywhere."""

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        return None

    def load_input(self, context: dg.InputContext) -> object:
        raise NotImplementedError("the assets read their inputs from Postgres themselves")


class PostgresResource(dg.ConfigurableResource):
    """The pipeline's tables: TVDB_DATABASE_URL, or the embedded server when unset."""

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with store.connect() as conn:
            yield conn


def _secret(name: str) -> Any:
    # An EnvVar naming an unset variable fails every run's config, mock runs included; the
    # key is then simply absent, and real/hybrid modes say so when they need it.
    return dg.EnvVar(name) if settings.secret(name) else None


def default_resources() -> dict[str, dg.ConfigurableResource | dg.ConfigurableIOManager]:
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
        "io_manager": PostgresTables(),
    }
