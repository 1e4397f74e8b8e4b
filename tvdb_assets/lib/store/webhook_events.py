"""`webhook_events`: the signed deliveries `tvdb webhook serve` accepted, kept until a
consumer has acted on them.

A delivery's id is unique, so recording one seen before records nothing: that is how a
replay is told. Upload notices wait for the bucket sensor (`pending_uploads`, then
`mark_consumed`); a LlamaParse job's events wait for the parser that started the job
(`job_event`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

UPLOADS = "uploads"
LLAMAPARSE = "llamaparse"


@dataclass(frozen=True, slots=True)
class UploadEvent:
    id: int
    event: str  # created | updated | deleted
    bucket: str
    key: str
    etag: str | None
    sent_at: datetime  # the sender's signed timestamp
    received_at: datetime


def record_upload(
    conn: psycopg.Connection,
    delivery_id: str,
    event: str,
    bucket: str,
    key: str,
    etag: str | None,
    sent_at: int,
) -> int | None:
    """The new row's id; None: this delivery was recorded before (a replay)."""
    row = conn.execute(
        """INSERT INTO webhook_events (delivery_id, source, event, bucket, key, etag, sent_at)
           VALUES (%s, %s, %s, %s, %s, %s, to_timestamp(%s))
           ON CONFLICT (delivery_id) DO NOTHING RETURNING id""",
        (delivery_id, UPLOADS, event, bucket, key, etag, sent_at),
    ).fetchone()
    return int(row[0]) if row else None


def record_job_event(
    conn: psycopg.Connection, delivery_id: str, event: str, job_id: str
) -> int | None:
    """The new row's id; None: this delivery was recorded before (a replay)."""
    row = conn.execute(
        """INSERT INTO webhook_events (delivery_id, source, event, job_id)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (delivery_id) DO NOTHING RETURNING id""",
        (delivery_id, LLAMAPARSE, event, job_id),
    ).fetchone()
    return int(row[0]) if row else None


def pending_uploads(
    conn: psycopg.Connection, bucket: str, prefix: str = "", limit: int = 1000
) -> list[UploadEvent]:
    """Upload notices not consumed yet, for objects of `bucket` whose key starts with
    `prefix`, in the order they arrived (several of one key: the last one stands)."""
    rows = conn.execute(
        """SELECT id, event, bucket, key, etag, sent_at, received_at
             FROM webhook_events
            WHERE source = %s AND consumed_at IS NULL AND bucket = %s
              AND starts_with(key, %s)
            ORDER BY id LIMIT %s""",
        (UPLOADS, bucket, prefix, limit),
    ).fetchall()
    return [UploadEvent(*row) for row in rows]


def job_event(
    conn: psycopg.Connection, job_id: str, events: Sequence[str]
) -> tuple[int, str] | None:
    """The first event of `events` recorded for a job and not consumed yet: (id, event)."""
    row = conn.execute(
        """SELECT id, event FROM webhook_events
            WHERE source = %s AND job_id = %s AND event = ANY(%s) AND consumed_at IS NULL
            ORDER BY id LIMIT 1""",
        (LLAMAPARSE, job_id, list(events)),
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def mark_consumed(conn: psycopg.Connection, ids: Sequence[int]) -> int:
    """Mark events acted upon; the count of those that were still pending."""
    cur = conn.execute(
        "UPDATE webhook_events SET consumed_at = now() WHERE id = ANY(%s) AND consumed_at IS NULL",
        (list(ids),),
    )
    return cur.rowcount


def prune(conn: psycopg.Connection, older_than_days: float) -> int:
    """Delete events consumed more than `older_than_days` ago; the count deleted. Their
    ids are forgotten, which is safe: a replayed upload notice that old is outside the
    signature's tolerance, and a job's event names a job no parser waits for any more."""
    cur = conn.execute(
        "DELETE FROM webhook_events WHERE consumed_at < now() - %s * interval '1 day'",
        (older_than_days,),
    )
    return cur.rowcount
