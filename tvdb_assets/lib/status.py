"""`tvdb status`: what the pipeline holds, as tables a person reads."""

import pandas as pd

from tvdb_assets.lib import store
from tvdb_assets.lib.store import dead_letters

TABLES = ("inbox_files", "documents", "chunks", "embeddings", "embedding_cache", "ingest_errors")


def table_counts() -> pd.DataFrame:
    with store.connect() as conn:
        counts = [
            (table, conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in TABLES
        ]
    return pd.DataFrame(counts, columns=["table", "rows"])


def open_errors() -> pd.DataFrame:
    with store.connect() as conn:
        errors = dead_letters.open_errors(conn)
    return pd.DataFrame(
        [(e.at, e.path, e.stage, e.reason) for e in errors],
        columns=["at", "path", "stage", "reason"],
    )


def render() -> str:
    counts = table_counts().to_string(index=False)
    errors = open_errors()
    if errors.empty:
        return f"{counts}\n\nno open ingest errors"
    return f"{counts}\n\nopen ingest errors ({len(errors)}):\n{errors.to_string(index=False)}"
