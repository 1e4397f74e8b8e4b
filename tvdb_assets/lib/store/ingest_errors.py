"""`ingest_errors`, the dead-letter table: what could not be ingested, and why."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from tvdb_assets.lib.errors import redact


@dataclass(frozen=True, slots=True)
class IngestError:
    partition_key: str | None
    path: str
    stage: str
    reason: str
    sha256: str | None = None
    run_id: str | None = None
    at: datetime | None = None
    transient: bool = False  # a passing cause (`errors.is_passing`): worth trying again
    attempt: int = 1  # tries of the same content that failed at this stage, this one too

    def __post_init__(self) -> None:
        # Reasons often quote a service; what is shown, logged or stored never holds a key.
        object.__setattr__(self, "reason", redact(self.reason))


def record(conn: psycopg.Connection, errors: Iterable[IngestError]) -> None:
    """Add errors; an open error of the same partition and stage is superseded, and a
    failure of the same content again counts one attempt more."""
    errors = list(errors)
    if not errors:
        return
    with conn.cursor() as cur:
        cur.executemany(
            """WITH superseded AS (
                   UPDATE ingest_errors SET resolved_at = now()
                    WHERE partition_key = %(key)s AND stage = %(stage)s AND resolved_at IS NULL
                   RETURNING sha256, attempt)
               INSERT INTO ingest_errors (run_id, partition_key, path, sha256, stage, reason,
                                          transient, attempt)
               SELECT %(run_id)s, %(key)s, %(path)s, %(sha256)s, %(stage)s, %(reason)s,
                      %(transient)s,
                      coalesce((SELECT max(attempt) FROM superseded
                                 WHERE sha256 IS NOT DISTINCT FROM %(sha256)s), 0) + 1""",
            # The last guard before a reason is stored: no configured secret gets in.
            [
                {
                    "run_id": e.run_id,
                    "key": e.partition_key,
                    "path": e.path,
                    "sha256": e.sha256,
                    "stage": e.stage,
                    "reason": redact(e.reason),
                    "transient": e.transient,
                }
                for e in errors
            ],  # fmt: skip
        )


def resolve(conn: psycopg.Connection, partition_keys: Sequence[str], stages: Sequence[str]) -> None:
    """Close the open errors of documents that have now passed these stages."""
    conn.execute(
        "UPDATE ingest_errors SET resolved_at = now() "
        "WHERE partition_key = ANY(%s) AND stage = ANY(%s) AND resolved_at IS NULL",
        (list(partition_keys), list(stages)),
    )


def open_errors(
    conn: psycopg.Connection, partition_keys: Sequence[str] | None = None
) -> list[IngestError]:
    query = (
        "SELECT partition_key, path, stage, reason, sha256, run_id, at, transient, attempt "
        "FROM ingest_errors WHERE resolved_at IS NULL"
    )
    params: tuple[object, ...] = ()
    if partition_keys is not None:
        query += " AND partition_key = ANY(%s)"
        params = (list(partition_keys),)
    rows = conn.execute(query + " ORDER BY at, id", params).fetchall()
    return [IngestError(*row) for row in rows]


def resolve_readable(conn: psycopg.Connection, still_refused: Sequence[str]) -> None:
    """Close the read errors of inbox entries no longer refused (fixed, or gone), but for
    the partition keys `still_refused`."""
    conn.execute(
        "UPDATE ingest_errors SET resolved_at = now() WHERE resolved_at IS NULL "
        "AND stage = 'read' AND sha256 IS NULL AND NOT (partition_key = ANY(%s))",
        (list(still_refused),),
    )


def failed(
    conn: psycopg.Connection, partition_keys: Sequence[str], stages: Sequence[str]
) -> dict[str, str]:
    """Of these documents, those with an open error at one of these stages (those before
    the caller's: a stage tries again what failed at itself): partition key -> what failed."""
    return {
        e.partition_key: f"{e.stage} failed: {e.reason}"
        for e in open_errors(conn, partition_keys)
        if e.partition_key and e.stage in stages
    }
