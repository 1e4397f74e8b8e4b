"""What each asset writes to Postgres, as the catalog shows it: table name and columns.

A test compares these columns with the migrated tables, so they cannot drift apart.
"""

from typing import Any

import dagster as dg

Column = tuple[str, str, str]

TABLES: dict[str, list[Column]] = {
    "documents": [
        ("partition_key", "text", "the document's partition"),
        ("path", "text", "its path in the inbox"),
        ("sha256", "text", "hash of the bytes parsed"),
        ("bytes", "bigint", ""),
        ("mime", "text", ""),
        ("parser", "text", "which parser wrote the markdown"),
        ("pages", "integer", "PDF pages, else null"),
        ("page_starts", "integer[]", "offset in markdown where each page begins"),
        ("markdown", "text", ""),
        ("run_id", "text", "the run that parsed it"),
        ("parsed_at", "timestamp with time zone", ""),
        ("fallback", "boolean", "hybrid: parsed locally while the service could not answer"),
        ("chunked_sha256", "text", "the content its chunks were cut from"),
        (
            "indexed_at",
            "timestamp with time zone",
            "when its chunks had their vectors, or a reason why not",
        ),
        ("chunk_max_tokens", "integer", "the chunker settings it was cut with"),
        ("chunk_overlap_tokens", "integer", ""),
    ],
    "chunks": [
        ("id", "uuid", "from (document, position, text hash)"),
        ("partition_key", "text", ""),
        ("ord", "integer", "position in the document"),
        ("heading_path", "text[]", "the headings it sits under"),
        ("text", "text", ""),
        ("text_sha256", "text", ""),
        ("tokens", "integer", ""),
        ("page_start", "integer", ""),
        ("page_end", "integer", ""),
        ("superseded", "boolean", "an older cut, serving until the new one has its vectors"),
    ],
    "embeddings": [
        ("chunk_id", "uuid", "one vector per chunk"),
        ("partition_key", "text", ""),
        ("model", "text", "the model that wrote it"),
        ("dims", "integer", ""),
        ("embedding", "vector", "pgvector; HNSW index per (model, dims)"),
        ("fallback", "boolean", "hybrid: the mock's stand-in, to be healed"),
        ("embedded_at", "timestamp with time zone", ""),
    ],
}


def table_metadata(table: str) -> dict[str, Any]:
    columns = [
        dg.TableColumn(name, kind, description or None) for name, kind, description in TABLES[table]
    ]
    return {
        "dagster/table_name": f"public.{table}",
        "dagster/column_schema": dg.TableSchema(columns=columns),
    }
