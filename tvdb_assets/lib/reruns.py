"""Which stored documents to run again, and why: the selections behind the schedules and
`tvdb backfill`.

- `failed`: the last try failed for a passing cause (a service, the budget; see
  `errors.is_passing`), never for a bad file. A schedule retries a document only when it
  is due: after a pause that doubles with each failed try, and not after `RETRY_ATTEMPTS`.
- `fallbacks`: parsed or embedded by hybrid mode's local stand-in while a service could
  not answer; a run in real or hybrid mode replaces them.
- `stale`: built with other chunker settings, or another embedding model or dims, than
  the deployment's now.
- `all`: every upload in the inbox.

A re-run goes through the same assets as a first ingest: each stage replaces the
document's rows in one transaction, and unchanged chunk text keeps its vector for free.
"""

from dataclasses import dataclass
from typing import Literal

import psycopg

from tvdb_assets.lib import settings
from tvdb_assets.lib.embedding import MockEmbedder
from tvdb_assets.lib.settings import Mode
from tvdb_assets.lib.store import inbox_files
from tvdb_assets.lib.store.inbox_files import InboxFile

Reason = Literal["failed", "fallbacks", "stale", "all"]

# A document that failed for a passing cause is tried again 10 minutes later, then after
# 20, 40, ... minutes; after 6 failed tries (about 10 hours) the schedule gives up on it,
# and only `tvdb backfill --failed` or a new upload runs it again.
RETRY_FIRST_PAUSE_SECONDS = 600.0
RETRY_ATTEMPTS = 6


@dataclass(frozen=True)
class BuildSettings:
    """What a document is built with now: the deployment's chunker and embedding model."""

    max_tokens: int
    overlap_tokens: int
    model: str
    dims: int

    @classmethod
    def configured(cls, embedder_mode: Mode) -> "BuildSettings":
        """The deployment's settings, for runs whose embedder is in `embedder_mode` (a
        mock embedder's vectors are the mock model's)."""
        model, dims = settings.embedding()
        if embedder_mode == "mock":
            model = MockEmbedder.model
        return cls(*settings.chunking(), model, dims)


def select(
    conn: psycopg.Connection, reason: Reason, built: BuildSettings, due_only: bool = False
) -> list[InboxFile]:
    """The uploads to run again for `reason`, in path order, for runs that build with
    `built`. `due_only` (the schedule): of the failed ones, those whose pause is over and
    whose tries are not spent."""
    if reason == "failed":
        attempts = RETRY_ATTEMPTS if due_only else None
        return inbox_files.with_passing_failures(conn, attempts, RETRY_FIRST_PAUSE_SECONDS)
    if reason == "fallbacks":
        return inbox_files.with_fallbacks(conn)
    if reason == "stale":
        return inbox_files.built_otherwise(
            conn, built.max_tokens, built.overlap_tokens, built.model, built.dims
        )
    return inbox_files.everything(conn)
