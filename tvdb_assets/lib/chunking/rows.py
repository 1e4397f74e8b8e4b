"""A document's chunks with their ids and text hashes, as a worker process makes them, and
in mock mode their vectors too.

Plain values, never store rows: the workers' fork server then imports no database code
(`worker_preload`), and the stages build the rows (`stages.chunk`, `stages.early`).
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tvdb_assets.lib.chunking.chunker import chunk_markdown
from tvdb_assets.lib.embedding.mock import MockEmbedder
from tvdb_assets.lib.ids import chunk_id, sha256_text

# The fields of a `chunks` row, in its order: id, partition key, ord, heading path, text,
# text sha256, tokens, first page, last page.
ChunkFields = tuple[uuid.UUID, str, int, tuple[str, ...], str, str, int, int | None, int | None]


@dataclass(frozen=True, slots=True)
class Cut:
    """How to cut one document: what a worker is sent."""

    partition_key: str
    markdown: str
    page_starts: Sequence[int]
    max_tokens: int
    overlap_tokens: int


def chunk_fields(cut: Cut) -> list[ChunkFields]:
    pieces = chunk_markdown(
        cut.markdown,
        page_starts=cut.page_starts,
        max_tokens=cut.max_tokens,
        overlap_tokens=cut.overlap_tokens,
    )
    rows = []
    for piece in pieces:
        text_hash = sha256_text(piece.text)
        rows.append(
            (
                chunk_id(cut.partition_key, piece.ord, text_hash),
                cut.partition_key,
                piece.ord,
                piece.heading_path,
                piece.text,
                text_hash,
                piece.tokens,
                piece.page_start,
                piece.page_end,
            )  # fmt: skip
        )
    return rows


def prepare(
    item: tuple[Cut, int | None],
) -> tuple[str, list[ChunkFields], npt.NDArray[np.float32] | None]:
    """The markdown's sha256 (which content was cut), its chunks, and with mock dims the
    chunks' mock vectors (None without)."""
    cut, mock_dims = item
    rows = chunk_fields(cut)
    vectors = None
    if mock_dims is not None and rows:
        vectors = MockEmbedder(mock_dims).embed([r[4] for r in rows], [r[6] for r in rows])
    return sha256_text(cut.markdown), rows, vectors
