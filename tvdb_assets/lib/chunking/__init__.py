"""Split a document's markdown into token-bounded chunks that follow its structure.

How a document becomes chunks:

1. **Sections.** ATX headings (`#` .. `######`) and setext headings (a single-line paragraph
   underlined with `===` or `---`) start sections; `#` lines inside fenced code blocks do
   not. Text before the first heading is a section with an empty heading path. Each
   section's `heading_path` is the titles from the top level down, e.g.
   `("Guide", "Install", "Linux")`.
2. **Heading-only sections fold forward.** A heading with no body of its own (`# Guide`
   directly followed by `## Install`) is joined to the start of the next section, which
   keeps its own path: the chunk reads "# Guide / ## Install / ..." with path
   `("Guide", "Install")` instead of a chunk holding one heading line.
3. **Tiny sections merge; others do not.** Consecutive sections that are each tiny (at most
   `max_tokens // 8` tokens) and lie under the same parent heading are merged into one
   chunk while it stays within `max_tokens`; its path is the members' common prefix (their
   parent), which is true of every line in it. Anything bigger stays its own chunk, so a
   chunk's path never hides a sibling's title.
4. **Big sections split** at the best boundary inside each window of `max_tokens` tokens:
   a blank line (paragraph), then a line break, then a sentence end, then a space, then any
   token boundary that is also a character boundary. The cut is the last such boundary in
   the window, but not in the first quarter of it, so a short paragraph followed by a huge
   one does not become a near-empty chunk. Consecutive pieces of a section overlap by up
   to `overlap_tokens` tokens (at least half of that when a boundary allows), starting at
   the best boundary in that range.

A section is encoded once; windows are cut on its token array and byte offsets, and each
emitted piece's count is exact, `Chunk.tokens == count_tokens(Chunk.text)` (re-tokenising a
cut piece can differ by a token or two from the slice; a piece over the limit is cut
shorter). The count is read off the section's tokens between two positions where any
encoding must cut, and only the few characters outside them are encoded again. Chunk
texts are verbatim spans of the markdown with leading blank lines and trailing whitespace
trimmed, so `page_starts` offsets map straight onto them.
"""

from tvdb_assets.lib.chunking.chunker import MIN_MAX_TOKENS, chunk_markdown
from tvdb_assets.lib.chunking.sections import BLOCK_CHARS
from tvdb_assets.lib.chunking.windows import warm

__all__ = ["BLOCK_CHARS", "MIN_MAX_TOKENS", "chunk_markdown", "warm"]
