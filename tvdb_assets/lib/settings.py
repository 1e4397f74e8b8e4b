"""The environment contract, read in one place (see README "Configuration")."""

import os
from pathlib import Path
from typing import Literal, cast

Mode = Literal["mock", "real", "hybrid"]
MODES: tuple[Mode, ...] = ("mock", "real", "hybrid")
Executor = Literal["in_process", "multiprocess"]
EXECUTORS: tuple[Executor, ...] = ("in_process", "multiprocess")
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


def home_dir() -> Path:
    """Where the embedded database and the default Dagster instance live."""
    return Path(os.environ.get("TVDB_HOME", ".tvdb")).resolve()


def database_url() -> str | None:
    """TVDB_DATABASE_URL: the pipeline's Postgres; None: the embedded server."""
    return os.environ.get("TVDB_DATABASE_URL") or None


def dagster_storage_url() -> str | None:
    """TVDB_DAGSTER_PG_URL: Dagster's storage; None: database `dagster` beside the pipeline's."""
    return os.environ.get("TVDB_DAGSTER_PG_URL") or None


def uploads_dir() -> Path:
    return Path(os.environ.get("TVDB_UPLOADS_DIR", "data/uploads")).resolve()


def uploads_bucket() -> tuple[str | None, str, str | None, str | None]:
    """The bucket `real` uploads come from: TVDB_S3_BUCKET, TVDB_S3_PREFIX (a folder in it),
    TVDB_S3_ENDPOINT_URL (unset for AWS; Supabase Storage, MinIO: theirs) and AWS_REGION."""
    return (
        os.environ.get("TVDB_S3_BUCKET") or None,
        os.environ.get("TVDB_S3_PREFIX", ""),
        os.environ.get("TVDB_S3_ENDPOINT_URL") or None,
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
    )


def sweep_seconds() -> int:
    """TVDB_S3_SWEEP_SECONDS: how often the sensor lists the whole bucket when upload notices
    arrive by webhook (README "The webhook receiver behind a proxy"); 0, the default: every
    tick."""
    return int(os.environ.get("TVDB_S3_SWEEP_SECONDS", "0") or 0)


def aws_credentials() -> tuple[str | None, str | None, str | None]:
    """AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN: the bucket's keys, from
    the environment only (never from a run's config). Unset: boto3's own chain (a role)."""
    return (
        os.environ.get("AWS_ACCESS_KEY_ID") or None,
        os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        os.environ.get("AWS_SESSION_TOKEN") or None,
    )


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or home_dir() / "dagster_home").resolve()


def mode_from_env(variable: str) -> Mode:
    """A resource's default mode; run config overrides it per run."""
    value = os.environ.get(variable, "mock").strip().lower() or "mock"
    if value not in MODES:
        raise ValueError(f"{variable}={value!r} is not one of {', '.join(MODES)}")
    return cast(Mode, value)


def batch_size() -> int:
    """Documents per run when the sensor, `tvdb ingest` or a backfill launches bulk work."""
    return int(os.environ.get("TVDB_BATCH_SIZE", "200"))


def executor() -> Executor:
    """How a run executes its steps (TVDB_EXECUTOR): all in the run's process, or each in a
    process of its own (README "Deploying": scaling out)."""
    value = os.environ.get("TVDB_EXECUTOR", "in_process").strip().lower() or "in_process"
    if value not in EXECUTORS:
        raise ValueError(f"TVDB_EXECUTOR={value!r} is not one of {', '.join(EXECUTORS)}")
    return cast(Executor, value)


def log_format() -> LogFormat:
    """How log lines are written (TVDB_LOG_FORMAT): `text`, or `json`, one object a line."""
    value = os.environ.get("TVDB_LOG_FORMAT", "text").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ValueError(f"TVDB_LOG_FORMAT={value!r} is not one of {', '.join(LOG_FORMATS)}")
    return cast(LogFormat, value)


def daily_budget_usd() -> float:
    """Spend limit per UTC day; set by the deployment, never by a run's config."""
    return float(os.environ.get("TVDB_DAILY_BUDGET_USD", "5.00"))


def hourly_request_cap() -> int:
    """Billable requests allowed in any sliding hour."""
    return int(os.environ.get("TVDB_HOURLY_REQUEST_CAP", "100"))


def chunking() -> tuple[int, int]:
    """The chunker's tokens per chunk and overlap (TVDB_CHUNK_MAX_TOKENS, _OVERLAP_TOKENS);
    run config overrides them per run, and `reembed_on_model_change` re-cuts what was cut
    otherwise."""
    max_tokens = int(os.environ.get("TVDB_CHUNK_MAX_TOKENS", "512"))
    overlap = int(os.environ.get("TVDB_CHUNK_OVERLAP_TOKENS", "64"))
    return max_tokens, overlap


def embedding() -> tuple[str, int]:
    """The embedding model and dims of real and hybrid modes (TVDB_EMBEDDING_MODEL,
    _DIMS); run config overrides them per run."""
    model = os.environ.get("TVDB_EMBEDDING_MODEL") or "text-embedding-3-small"
    return model, int(os.environ.get("TVDB_EMBEDDING_DIMS", "1536"))


def openai_rate_limits() -> tuple[int, int]:
    """The OpenAI account's requests and tokens per minute (TVDB_OPENAI_RPM, _TPM): one
    limit for the whole deployment, whose runs share one window (`lib.services`)."""
    rpm = int(os.environ.get("TVDB_OPENAI_RPM", "3000"))
    tpm = int(os.environ.get("TVDB_OPENAI_TPM", "1000000"))
    return rpm, tpm


def budget_warn_share() -> float:
    """Share of a budget used at which the cost check warns (TVDB_BUDGET_WARN_SHARE)."""
    return float(os.environ.get("TVDB_BUDGET_WARN_SHARE", "0.8"))


def parse_seconds() -> float:
    """Wall time one PDF or HTML document may take to parse locally."""
    return float(os.environ.get("TVDB_PARSE_TIMEOUT_S", "120"))


def parse_memory_mb() -> int:
    """Memory one PDF or HTML document may take to parse locally."""
    return int(os.environ.get("TVDB_PARSE_MEMORY_MB", "1024"))


def worker_processes() -> int:
    """Processes that parse and chunk (TVDB_WORKERS; unset or 0: one per CPU)."""
    return int(os.environ.get("TVDB_WORKERS", "0")) or (os.cpu_count() or 1)


def hnsw_min_rows() -> int:
    """Vectors of one model a table holds before its HNSW index is built."""
    return int(os.environ.get("TVDB_HNSW_MIN_ROWS", "100000"))


def base_url(variable: str) -> str | None:
    """A service's address from its SDK's own variable (OPENAI_BASE_URL,
    LLAMA_CLOUD_BASE_URL); None: the SDK's default."""
    return os.environ.get(variable) or None


def webhook_secret() -> str | None:
    """TVDB_WEBHOOK_SECRET: the key upload notices are signed with (`X-TVDB-Signature`)."""
    return os.environ.get("TVDB_WEBHOOK_SECRET", "").strip() or None


def llama_webhook_secret() -> str | None:
    """TVDB_LLAMA_WEBHOOK_SECRET: the secret each parse job hands LlamaCloud to sign its
    events with (`LC-Signature`). A secret of its own: this one is given to a third party."""
    return os.environ.get("TVDB_LLAMA_WEBHOOK_SECRET", "").strip() or None


def llamaparse_webhook_url() -> str | None:
    """TVDB_LLAMAPARSE_WEBHOOK_URL: where LlamaCloud posts parse job events, the public
    address of `tvdb webhook serve`'s /webhooks/llamaparse; None: jobs are polled."""
    return os.environ.get("TVDB_LLAMAPARSE_WEBHOOK_URL", "").strip() or None


def secret(variable: str) -> str | None:
    """An API key from the environment, for the CLI (Dagster runs read it through EnvVar)."""
    return os.environ.get(variable) or None


# Variables whose values are secrets: redacted from any text a service sends back, and
# from every log line (`lib/logs.py`).
SECRET_VARIABLES = (
    "OPENAI_API_KEY",
    "LLAMA_CLOUD_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "TVDB_WEBHOOK_SECRET",
    "TVDB_LLAMA_WEBHOOK_SECRET",
    "POSTGRES_PASSWORD",
)


def secret_values() -> list[str]:
    """The configured secrets, longest first (so a key that contains another goes whole)."""
    values = {os.environ.get(name, "").strip() for name in SECRET_VARIABLES}
    return sorted((v for v in values if len(v) >= 6), key=len, reverse=True)
