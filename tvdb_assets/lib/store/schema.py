"""The pipeline's tables, created and migrated idempotently, with the version recorded."""

import re
from collections.abc import Sequence

import psycopg
from psycopg import sql

# Append only: each entry moves the schema from the previous version to its own.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE EXTENSION IF NOT EXISTS vector;

        -- What the inbox held when last looked at.
        CREATE TABLE inbox_files (
            partition_key    text PRIMARY KEY,
            path             text NOT NULL UNIQUE,
            bytes            bigint NOT NULL,
            mtime_ns         bigint NOT NULL,
            sha256           text NOT NULL,
            requested_sha256 text,
            seen_at          timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE documents (
            partition_key text PRIMARY KEY,
            path          text NOT NULL,
            sha256        text NOT NULL,
            bytes         bigint NOT NULL,
            mime          text NOT NULL,
            parser        text NOT NULL,
            pages         integer,
            page_starts   integer[] NOT NULL DEFAULT '{}',
            markdown      text NOT NULL,
            run_id        text,
            parsed_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX documents_sha256_idx ON documents (sha256);

        CREATE TABLE chunks (
            id            uuid PRIMARY KEY,
            partition_key text NOT NULL,
            ord           integer NOT NULL,
            heading_path  text[] NOT NULL,
            text          text NOT NULL,
            text_sha256   text NOT NULL,
            tokens        integer NOT NULL,
            page_start    integer,
            page_end      integer
        );
        CREATE INDEX chunks_partition_idx ON chunks (partition_key, ord);

        -- One vector per chunk; HNSW indexes are partial per (model, dims), see vector_index.
        CREATE TABLE embeddings (
            chunk_id      uuid PRIMARY KEY REFERENCES chunks (id) ON DELETE CASCADE,
            partition_key text NOT NULL,
            model         text NOT NULL,
            dims          integer NOT NULL,
            embedding     vector NOT NULL,
            fallback      boolean NOT NULL DEFAULT false,
            embedded_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX embeddings_partition_idx ON embeddings (partition_key);

        -- Text already embedded is never embedded again, whichever document it is in.
        CREATE TABLE embedding_cache (
            model       text NOT NULL,
            dims        integer NOT NULL,
            text_sha256 text NOT NULL,
            embedding   vector NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (model, dims, text_sha256)
        );

        -- The dead-letter table: one row per document that could not be ingested.
        CREATE TABLE ingest_errors (
            id            bigserial PRIMARY KEY,
            at            timestamptz NOT NULL DEFAULT now(),
            run_id        text,
            partition_key text,
            path          text NOT NULL,
            sha256        text,
            stage         text NOT NULL,
            reason        text NOT NULL,
            resolved_at   timestamptz
        );
        CREATE INDEX ingest_errors_open_idx ON ingest_errors (partition_key)
            WHERE resolved_at IS NULL;
        """,
    ),
    (
        2,
        """
        -- One row per billable call. A row is written as 'reserved' (the estimate) before
        -- the call under the budget lock, then 'billed' (what the service reported) or
        -- 'released' (the call failed and cost nothing).
        CREATE TABLE cost_ledger (
            id             bigserial PRIMARY KEY,
            at             timestamptz NOT NULL DEFAULT now(),
            run_id         text,
            partition_keys text[] NOT NULL DEFAULT '{}',
            service        text NOT NULL,
            model          text NOT NULL,
            unit           text NOT NULL,
            units          bigint NOT NULL,
            usd            numeric(14, 8) NOT NULL,
            status         text NOT NULL,
            correlation_id text NOT NULL
        );
        CREATE INDEX cost_ledger_at_idx ON cost_ledger (at);

        -- Parsed markdown by file content and parser: a renamed or copied file is never
        -- paid for twice.
        CREATE TABLE parse_cache (
            sha256      text NOT NULL,
            parser      text NOT NULL,
            mime        text NOT NULL,
            pages       integer,
            page_starts integer[] NOT NULL DEFAULT '{}',
            markdown    text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (sha256, parser)
        );

        ALTER TABLE documents ADD COLUMN fallback boolean NOT NULL DEFAULT false;

        -- Last known circuit state per external service, for metadata and `tvdb status`.
        CREATE TABLE service_health (
            service              text PRIMARY KEY,
            state                text NOT NULL,
            consecutive_failures integer NOT NULL,
            retry_in_seconds     real NOT NULL DEFAULT 0,
            updated_at           timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        3,
        """
        -- A document is ingested when its row has the inbox file's hash, its chunks were
        -- cut from that content (chunked_sha256 = sha256) and the last asset set
        -- indexed_at in the transaction that wrote their vectors. A new parse writes a new
        -- row, so both start empty again.
        ALTER TABLE documents ADD COLUMN chunked_sha256 text;
        ALTER TABLE documents ADD COLUMN indexed_at timestamptz;
        UPDATE documents d SET chunked_sha256 = sha256, indexed_at = parsed_at
         WHERE EXISTS (SELECT 1 FROM chunks c WHERE c.partition_key = d.partition_key)
           AND NOT EXISTS (SELECT 1 FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id
                            WHERE c.partition_key = d.partition_key AND e.chunk_id IS NULL);
        -- A marker of what was once asked for, which is not what was stored.
        ALTER TABLE inbox_files DROP COLUMN requested_sha256;

        -- Who is ingesting what right now. An owner is a process holding the session
        -- advisory lock (OWNER_LOCK_CLASS, owner) for as long as it lives, so a claim of a
        -- killed process, or of any process once the database restarted, is plainly dead.
        CREATE TABLE claims (
            partition_key text PRIMARY KEY,
            sha256        text NOT NULL,
            owner         integer NOT NULL,
            claimed_at    timestamptz NOT NULL DEFAULT now()
        );

        -- Dagster runs an owner executes in its own process: a dead owner's runs are
        -- orphans to mark failed, so they never hold a slot of the run queue.
        CREATE TABLE owned_runs (
            run_id     text PRIMARY KEY,
            owner      integer NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        4,
        """
        -- A file's name as the file system holds it (not always UTF-8); `path` is the name
        -- as shown, with such bytes escaped, and two names may show alike.
        ALTER TABLE inbox_files ADD COLUMN raw_path bytea;
        UPDATE inbox_files SET raw_path = convert_to(path, 'UTF8');
        ALTER TABLE inbox_files ALTER COLUMN raw_path SET NOT NULL;
        ALTER TABLE inbox_files DROP CONSTRAINT inbox_files_path_key;
        ALTER TABLE inbox_files ADD CONSTRAINT inbox_files_raw_path_key UNIQUE (raw_path);
        """,
    ),
    (
        5,
        """
        -- What the health check shows of a service's last calls.
        ALTER TABLE service_health ADD COLUMN last_call_seconds real NOT NULL DEFAULT 0;
        ALTER TABLE service_health ADD COLUMN last_error text NOT NULL DEFAULT '';
        """,
    ),
    (
        6,
        """
        -- The circuit breakers themselves, one per service for every process of the
        -- deployment: when the circuit opened, when it lets a trial call through, and
        -- when that trial went. Its state is read off these times, not stored.
        ALTER TABLE service_health ADD COLUMN opened_at timestamptz;
        ALTER TABLE service_health ADD COLUMN retry_at timestamptz;
        ALTER TABLE service_health ADD COLUMN trial_started_at timestamptz;
        UPDATE service_health
           SET opened_at = updated_at,
               retry_at = updated_at + retry_in_seconds * interval '1 second'
         WHERE state <> 'closed';
        ALTER TABLE service_health DROP COLUMN state;
        ALTER TABLE service_health DROP COLUMN retry_in_seconds;
        ALTER TABLE service_health ALTER COLUMN consecutive_failures SET DEFAULT 0;

        -- Requests granted per service within the last rate-limit window, for every
        -- process of the deployment: `at` is when the request was granted, moved to when
        -- it completed (epoch seconds).
        CREATE TABLE service_requests (
            id      bigserial PRIMARY KEY,
            service text NOT NULL,
            at      double precision NOT NULL,
            tokens  integer NOT NULL
        );
        CREATE INDEX service_requests_service_at_idx ON service_requests (service, at);
        """,
    ),
    (
        7,
        """
        -- Why a document failed, for `retry_failed`: a passing cause (a service, the
        -- budget) is tried again, with a growing pause, a bad file is not; `attempt`
        -- counts the failed tries of the same content at the same stage.
        ALTER TABLE ingest_errors ADD COLUMN transient boolean NOT NULL DEFAULT false;
        ALTER TABLE ingest_errors ADD COLUMN attempt integer NOT NULL DEFAULT 1;

        -- The chunker settings a document's chunks were cut with, for
        -- `reembed_on_model_change` (NULL: cut before they were recorded).
        ALTER TABLE documents ADD COLUMN chunk_max_tokens integer;
        ALTER TABLE documents ADD COLUMN chunk_overlap_tokens integer;
        """,
    ),
    (
        8,
        """
        -- A document cut anew keeps its old chunks, and their vectors, serving search
        -- (`superseded`) until `embeddings` has written the new chunks' vectors; it deletes
        -- the old ones in that same transaction.
        ALTER TABLE chunks ADD COLUMN superseded boolean NOT NULL DEFAULT false;
        """,
    ),
    (
        9,
        """
        -- Signed deliveries `tvdb webhook serve` accepted, kept until acted upon: upload
        -- notices (bucket, key, etag) for the bucket sensor, LlamaParse job events (job_id)
        -- for the parser that started the job. A delivery id is unique, so a replay is
        -- refused rather than recorded twice.
        CREATE TABLE webhook_events (
            id          bigserial PRIMARY KEY,
            delivery_id text NOT NULL UNIQUE,
            source      text NOT NULL,
            event       text NOT NULL,
            bucket      text,
            key         text,
            etag        text,
            job_id      text,
            sent_at     timestamptz,
            received_at timestamptz NOT NULL DEFAULT now(),
            consumed_at timestamptz
        );
        CREATE INDEX webhook_events_pending_idx ON webhook_events (source, bucket, id)
            WHERE consumed_at IS NULL;
        CREATE INDEX webhook_events_job_idx ON webhook_events (job_id)
            WHERE job_id IS NOT NULL;
        """,
    ),
    (
        10,
        """
        -- A document's markdown is stored as it is, not compressed: storing 19 MB of it took
        -- Postgres 0.6 s of CPU compressed and 0.25 s as it is, and reading it back for
        -- chunking or a check paid again, to save 12 MB next to its chunks' own copy of the
        -- text and their vectors, some ten times that. Rows written before keep theirs.
        ALTER TABLE documents ALTER COLUMN markdown SET STORAGE EXTERNAL;
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection) -> int:
    """Bring the schema to LATEST_VERSION; safe to call from many processes at once."""
    with conn.transaction():
        # Serialises concurrent start-ups (webserver, daemon, run workers, CLI).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('tvdb_assets.migrate'))")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                   version    integer PRIMARY KEY,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = row[0] if row else 0
        for version, statements in MIGRATIONS:
            if version > current:
                conn.execute(statements.encode())
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return LATEST_VERSION


# pgvector's HNSW indexes `vector` of up to 2,000 dims (this pgvector, 0.6, has no halfvec).
HNSW_MAX_DIMS = 2000
HNSW_BUILD_MEMORY = "512MB"


def vector_cast(dims: int) -> str:
    """The expression type of the (model, dims) HNSW index, which queries must use too."""
    return f"vector({dims})"


def index_name(model: str, dims: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")[:40]
    return f"embeddings_hnsw_{slug}_{dims}"


def has_vector_index(conn: psycopg.Connection, model: str, dims: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_indexes WHERE tablename = 'embeddings' AND indexname = %s",
        (index_name(model, dims),),
    ).fetchone()
    return row is not None


def create_vector_index(conn: psycopg.Connection, model: str, dims: int) -> str:
    """A partial HNSW (cosine) index for one model and dims: HNSW needs fixed dimensions.

    pgvector builds the graph in memory while it fits `maintenance_work_mem`, and many times
    slower on disk once it does not (64 MB by default: ~10k vectors of 1,536 dims).
    """
    name = index_name(model, dims)
    conn.execute(f"SET LOCAL maintenance_work_mem = '{HNSW_BUILD_MEMORY}'")
    conn.execute(
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {name} ON embeddings USING hnsw "
            "((embedding::{cast}) vector_cosine_ops) WHERE model = {model} AND dims = {dims}"
        ).format(
            name=sql.Identifier(name),
            cast=sql.SQL(vector_cast(dims)),
            model=sql.Literal(model),
            dims=sql.Literal(dims),
        )
    )
    return name


def drop_vector_index(conn: psycopg.Connection, model: str, dims: int) -> None:
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index_name(model, dims))))


def row_counts(conn: psycopg.Connection, tables: Sequence[str]) -> dict[str, int]:
    """Rows in each of these tables."""
    counts = {}
    for table in tables:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        row = conn.execute(query).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts
