"""The parser, embedder and upload store for a mode: the one place that decides what mock,
real and hybrid mean.

The Dagster resources carry these settings and build their clients here; `tvdb search`
and `tvdb ingest` build theirs the same way, without Dagster. A real client is imported
only when asked for: each service's SDK takes a second or more to import.
"""

from dataclasses import dataclass, field

from tvdb_assets.lib import services, settings
from tvdb_assets.lib.costs import budget
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.costs.ledger import Ledger
from tvdb_assets.lib.embedding import Embedder, MockEmbedder
from tvdb_assets.lib.embedding.hybrid import HybridEmbedder
from tvdb_assets.lib.embedding.unavailable import UnavailableEmbedder
from tvdb_assets.lib.errors import ConfigError
from tvdb_assets.lib.parsing import LocalParser, Parser
from tvdb_assets.lib.parsing.hybrid import HybridParser, UnavailableParser
from tvdb_assets.lib.parsing.tiers import DEFAULT_TIER, Tier
from tvdb_assets.lib.resilience import CircuitBreaker
from tvdb_assets.lib.settings import Mode
from tvdb_assets.lib.uploads import LocalInbox, UploadStore
from tvdb_assets.lib.uploads.s3 import KEYS_PER_PAGE, S3Bucket, S3Credentials, S3Location

MB = 1024 * 1024
NO_KEY = "no key ({} is not set)"


@dataclass(frozen=True)
class ServiceSettings:
    """What every service client takes: a mode, a key, and how to call the service."""

    mode: Mode = "mock"
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None  # unset: the SDK's own variable, else its default
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    circuit_failures: int = 5
    circuit_reset_seconds: float = 60.0

    def breaker(self, service: str) -> CircuitBreaker:
        return services.breaker(service, self.circuit_failures, self.circuit_reset_seconds)


@dataclass(frozen=True)
class ParserSettings(ServiceSettings):
    timeout_seconds: float = 300.0
    max_file_mb: int = 100
    concurrency: int = 4
    poll_seconds: int = 1
    tier: Tier = DEFAULT_TIER  # LlamaParse's parse tier: its price per page, its results


@dataclass(frozen=True)
class EmbedderSettings(ServiceSettings):
    model: str = field(default_factory=lambda: settings.embedding()[0])
    dims: int = field(default_factory=lambda: settings.embedding()[1])
    # The account's limits, from the deployment's environment: every run shares them.
    requests_per_minute: int = field(default_factory=lambda: settings.openai_rate_limits()[0])
    tokens_per_minute: int = field(default_factory=lambda: settings.openai_rate_limits()[1])


def parser(config: ParserSettings, call: CallContext | None = None) -> Parser:
    """mock: local parsing of md/html/txt/pdf. real: LlamaParse. hybrid: LlamaParse first,
    the local parse (flagged fallback) where it cannot answer."""
    local = LocalParser(max_bytes=config.max_file_mb * MB)
    if config.mode == "mock":
        return local
    real = _llamaparse(config, call)
    return HybridParser(real, local) if config.mode == "hybrid" else real


def embedder(config: EmbedderSettings, call: CallContext | None = None) -> Embedder:
    """mock: feature-hashed word vectors. real: OpenAI. hybrid: OpenAI first, the mock's
    vectors (flagged fallback) where a call fails."""
    mock = MockEmbedder(dims=config.dims)
    if config.mode == "mock":
        return mock
    real = _openai(config, call)
    return HybridEmbedder(real, mock) if config.mode == "hybrid" else real


@dataclass(frozen=True)
class UploadSettings:
    """Where uploads are read from. Unset fields: the environment's (TVDB_UPLOADS_MODE,
    TVDB_UPLOADS_DIR, TVDB_S3_BUCKET, TVDB_S3_PREFIX); the keys only ever come from it."""

    mode: Mode | None = None
    directory: str | None = None  # mock: the inbox folder
    bucket: str | None = None  # real: the bucket, and a folder in it
    prefix: str | None = None
    keys_per_tick: int = KEYS_PER_PAGE  # real: keys a sensor tick lists (more: over ticks)


def upload_store(config: UploadSettings | None = None) -> UploadStore:
    """mock: the local inbox directory. real: an S3-compatible bucket (AWS S3, Supabase
    Storage, MinIO). hybrid: the bucket too, since a local folder cannot stand in for it
    (its paths would be other uploads)."""
    config = config or UploadSettings()
    mode = config.mode or settings.mode_from_env("TVDB_UPLOADS_MODE")
    if mode == "mock":
        return LocalInbox(config.directory or settings.uploads_dir())
    bucket, prefix, endpoint_url, region = settings.uploads_bucket()
    bucket = config.bucket or bucket
    if not bucket:
        raise ConfigError(
            f"uploads mode {mode!r} reads a bucket: set TVDB_S3_BUCKET (and TVDB_S3_PREFIX, "
            "TVDB_S3_ENDPOINT_URL unless it is AWS)"
        )
    location = S3Location(
        bucket, config.prefix if config.prefix is not None else prefix, endpoint_url, region
    )
    return S3Bucket(location, S3Credentials(*settings.aws_credentials()), config.keys_per_tick)


def _llamaparse(config: ParserSettings, call: CallContext | None) -> Parser:
    from tvdb_assets.lib.parsing.llamaparse import LlamaParseParser
    from tvdb_assets.lib.webhooks.parse_events import WebhookTarget

    if not config.api_key:  # real mode: each document fails saying so; hybrid: falls back
        return UnavailableParser("llamaparse", NO_KEY.format("LLAMA_CLOUD_API_KEY"))
    return LlamaParseParser(
        api_key=config.api_key,
        base_url=config.base_url or settings.base_url("LLAMA_CLOUD_BASE_URL"),
        breaker=config.breaker("llamaparse"),
        ledger=Ledger(budget.from_env()),
        call=call,
        tier=config.tier,
        attempts=config.max_attempts,
        timeout=config.timeout_seconds,
        check_interval=config.poll_seconds,
        concurrency=config.concurrency,
        max_bytes=config.max_file_mb * MB,
        # The deployment's receiver and secret, from its environment (never run config).
        webhook=WebhookTarget.from_env(),
    )


def _openai(config: EmbedderSettings, call: CallContext | None) -> Embedder:
    from tvdb_assets.lib.embedding.openai_embedder import OpenAIEmbedder

    if not config.api_key:  # real mode: each document fails saying so; hybrid: falls back
        return UnavailableEmbedder(
            "openai", config.model, config.dims, NO_KEY.format("OPENAI_API_KEY")
        )
    return OpenAIEmbedder(
        api_key=config.api_key,
        base_url=config.base_url or settings.base_url("OPENAI_BASE_URL"),
        model=config.model,
        dims=config.dims,
        timeout=config.timeout_seconds,
        limiter=services.limiter("openai", config.requests_per_minute, config.tokens_per_minute),
        breaker=config.breaker("openai"),
        ledger=Ledger(budget.from_env()),
        call=call,
        attempts=config.max_attempts,
    )
