"""The pipeline's stages, free of Dagster: each is one function that reads its input rows,
computes, writes its rows and error rows in one transaction, and returns a report for its
caller (a Dagster asset) to show.

- `parse.parse_documents`: uploads to markdown (`documents`);
- `chunk.chunk_documents`: markdown to chunks (`chunks`);
- `embed.embed_documents`: chunks to vectors (`embeddings`);
- `early`: what the worker pool makes before a stage asks for it (`work_ahead`).

Each takes a whole batch, so a run does one transaction and one COPY per stage, and
embedding requests are packed across documents.
"""

from tvdb_assets.lib.stages.chunk import (
    ChunkReport,
    ChunkSettings,
    chunk_batch,
    chunk_documents,
)
from tvdb_assets.lib.stages.early import HeadStart, NextBatch, after_parse, work_ahead
from tvdb_assets.lib.stages.embed import EmbedReport, embed_batch, embed_documents
from tvdb_assets.lib.stages.parse import ParseOutcome, ParseReport, parse_batch, parse_documents

__all__ = [
    "ChunkReport",
    "ChunkSettings",
    "EmbedReport",
    "HeadStart",
    "NextBatch",
    "ParseOutcome",
    "ParseReport",
    "after_parse",
    "chunk_batch",
    "chunk_documents",
    "embed_batch",
    "embed_documents",
    "parse_batch",
    "parse_documents",
    "work_ahead",
]
