"""The plain pieces every system but ours uses: stdlib and numpy only, no project code.

The bare limit and the peers (pgai, CocoIndex, LangChain, each in a venv of its own) load
this file by path, so they read HTML, cut text and embed it the same way, and the project
is measured against work it did not write. `embed` costs about what the project's mock
embedder costs: hashed word features, one numpy pass per text.
"""

import re
import zlib
from html.parser import HTMLParser

import numpy as np

DIMS = 1536
# The project's chunks are at most 512 tokens with 64 of overlap; the benchmark corpus
# (package documentation, much of it code) averages 3.1 characters a token.
CHUNK_CHARS = 1600
OVERLAP_CHARS = 200
TEXT_SUFFIXES = (".md", ".markdown", ".html", ".htm", ".txt", ".rst")
_WORD = re.compile(r"\w+")
_SKIP = {"script", "style", "head", "nav", "noscript", "template"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.skipping += tag in _SKIP

    def handle_endtag(self, tag: str) -> None:
        self.skipping -= tag in _SKIP and self.skipping > 0

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return re.sub(r"\n\s*\n+", "\n\n", "".join(parser.parts)).strip()


def read_text(path: str) -> str:
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace").replace("\x00", "")
    return html_to_text(text) if path.lower().endswith((".html", ".htm")) else text


def split(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """Fixed-size windows of `size` characters, each starting `size - overlap` further on."""
    step = size - overlap
    return [text[i : i + size] for i in range(0, max(len(text) - overlap, 1), step)]


def embed(texts: list[str], dims: int = DIMS) -> np.ndarray:
    """Unit vectors of hashed word counts: deterministic, free, and texts sharing words
    share dimensions."""
    out = np.zeros((len(texts), dims), dtype=np.float32)
    for row, text in enumerate(texts):
        words = _WORD.findall(text.lower())
        if words:
            hashes = np.fromiter((zlib.crc32(w.encode()) for w in words), np.uint32, len(words))
            np.add.at(out[row], hashes % dims, 1.0)
        else:
            out[row, 0] = 1.0
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out
