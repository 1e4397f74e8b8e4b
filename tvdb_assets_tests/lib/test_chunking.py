import random
import re

import pytest

from tvdb_assets.lib import chunking
from tvdb_assets.lib.chunking import chunk_markdown
from tvdb_assets.lib.models import Chunk
from tvdb_assets.lib.tokens import count_tokens


def body(tag: str, words: int = 80) -> str:
    """A paragraph of unique words, so each chunk's text can be found in the document."""
    return " ".join(f"{tag}{i}" for i in range(words)) + "."


def spans(markdown: str, chunks: list[Chunk]) -> list[tuple[int, int]]:
    """Char span of each chunk in the document; chunks are verbatim and in order."""
    out = []
    at = 0
    for chunk in chunks:
        start = markdown.find(chunk.text, at)
        assert start >= 0, f"chunk {chunk.ord} is not a span of the document"
        out.append((start, start + len(chunk.text)))
        at = start + 1
    return out


def assert_well_formed(markdown: str, chunks: list[Chunk], max_tokens: int) -> None:
    assert [c.ord for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text.strip(), "empty chunk"
        assert chunk.tokens == count_tokens(chunk.text)
        assert chunk.tokens <= max_tokens
        assert "\ufffd" not in chunk.text or "\ufffd" in markdown
    # Nothing is lost: every non-space character lies in some chunk.
    covered = bytearray(len(markdown))
    for start, end in spans(markdown, chunks):
        covered[start:end] = b"\x01" * (end - start)
    missing = [i for i, ch in enumerate(markdown) if not ch.isspace() and not covered[i]]
    assert not missing, f"text not in any chunk near {markdown[missing[0] : missing[0] + 40]!r}"


def long_document(seed: int = 7, sections: int = 60) -> str:
    rng = random.Random(seed)
    parts = ["Preamble before any heading. " + body("pre", 30), ""]
    for s in range(sections):
        parts.append("#" * rng.randint(1, 4) + f" Section {s}")
        parts.append("")
        for p in range(rng.randint(0, 8)):
            parts.append(body(f"s{s}p{p}w", rng.randint(5, 400)))
            parts.append("")
        if rng.random() < 0.2:
            parts += ["```python", "# a comment, not a heading", "x = 1", "```", ""]
    return "\n".join(parts)


def test_small_document_is_one_chunk() -> None:
    md = "# Title\n\nHello world, this is a short document.\n"
    chunks = chunk_markdown(md)
    assert chunks == [
        Chunk(
            ord=0,
            text="# Title\n\nHello world, this is a short document.",
            tokens=count_tokens("# Title\n\nHello world, this is a short document."),
            heading_path=("Title",),
        )
    ]


def test_empty_and_blank_documents_have_no_chunks() -> None:
    assert chunk_markdown("") == []
    assert chunk_markdown(" \n\n\t\n") == []


def test_heading_paths_follow_nesting() -> None:
    md = "\n\n".join(
        [
            body("intro"),
            "# Guide",
            body("guide"),
            "## Install",
            body("install"),
            "### Linux",
            body("linux"),
            "## Usage ##",
            body("usage"),
            "# Other",
            body("other"),
        ]
    )
    chunks = chunk_markdown(md)
    assert [c.heading_path for c in chunks] == [
        (),
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Install", "Linux"),
        ("Guide", "Usage"),
        ("Other",),
    ]
    assert chunks[3].text.startswith("### Linux\n\nlinux0")
    assert_well_formed(md, chunks, 512)


def test_hashes_in_fenced_code_are_not_headings() -> None:
    md = (
        "# Script\n\n"
        + body("a")
        + "\n\n```bash\n# install it\n## still code\n```\n\n"
        + "~~~~\n# tilde fence\n~~~\n# still inside: a shorter fence does not close\n~~~~\n\n"
        + body("b")
        + "\n\n# After\n\n"
        + body("c")
    )
    chunks = chunk_markdown(md)
    assert [c.heading_path for c in chunks] == [("Script",), ("After",)]
    assert "# install it" in chunks[0].text
    assert "# still inside" in chunks[0].text


def test_setext_headings_and_thematic_breaks() -> None:
    md = (
        "Manual\n======\n\n"
        + body("a")
        + "\n\nSetup\n-----\n\n"
        + body("b")
        + "\n\n---\n\n"  # a thematic break after a blank line, not a heading
        + body("c")
    )
    chunks = chunk_markdown(md)
    assert [c.heading_path for c in chunks] == [("Manual",), ("Manual", "Setup")]
    assert "---\n\nc0" in chunks[1].text


def test_crlf_line_endings() -> None:
    md = f"# One\n\n{body('a')}\n\n## Two ##\n\n{body('b')}\n\nSetext\n===\n\n{body('c')}\n"
    chunks = chunk_markdown(md.replace("\n", "\r\n"))
    assert [c.heading_path for c in chunks] == [("One",), ("One", "Two"), ("Setext",)]


def test_heading_without_body_folds_into_next_section() -> None:
    md = "# Guide\n\n## Install\n\n" + body("install")
    chunks = chunk_markdown(md)
    assert len(chunks) == 1
    assert chunks[0].heading_path == ("Guide", "Install")
    assert chunks[0].text.startswith("# Guide\n\n## Install\n\ninstall0")


def test_tiny_sibling_sections_merge_under_their_parent() -> None:
    faq = "\n\n".join(f"## Question {i}\n\nShort answer {i}." for i in range(5))
    md = "# FAQ\n\n" + body("faq") + "\n\n" + faq + "\n\n# Next\n\n" + body("next")
    chunks = chunk_markdown(md, max_tokens=512)
    assert [c.heading_path for c in chunks] == [("FAQ",), ("FAQ",), ("Next",)]
    assert all(f"Short answer {i}." in chunks[1].text for i in range(5))
    assert chunks[1].text.startswith("## Question 0")


def test_sections_that_are_not_tiny_stay_apart() -> None:
    md = "# A\n\n" + body("a", 70) + "\n\n# B\n\n" + body("b", 70)
    assert [c.heading_path for c in chunk_markdown(md, max_tokens=512)] == [("A",), ("B",)]


@pytest.mark.parametrize(("max_tokens", "overlap"), [(512, 64), (128, 16), (64, 0), (40, 39)])
def test_long_document_respects_bounds(max_tokens: int, overlap: int) -> None:
    md = long_document()
    chunks = chunk_markdown(md, max_tokens=max_tokens, overlap_tokens=overlap)
    assert len(chunks) > 10
    assert_well_formed(md, chunks, max_tokens)


def test_big_sections_split_at_paragraphs_first() -> None:
    paragraphs = [body(f"p{i}w", 60) for i in range(12)]
    md = "# Big\n\n" + "\n\n".join(paragraphs)
    chunks = chunk_markdown(md, max_tokens=300, overlap_tokens=0)
    assert len(chunks) > 1
    assert all(c.heading_path == ("Big",) for c in chunks)
    for chunk in chunks:
        # Each piece holds whole paragraphs: it ends where one ends.
        assert chunk.text.endswith(".")
    assert_well_formed(md, chunks, 300)


def test_consecutive_pieces_overlap() -> None:
    md = "# Long\n\n" + body("w", 3000)
    chunks = chunk_markdown(md, max_tokens=200, overlap_tokens=40)
    assert len(chunks) > 5
    places = spans(md, chunks)
    for (_, end), (next_start, _) in zip(places, places[1:], strict=False):
        assert next_start < end
        shared = count_tokens(md[next_start:end])
        assert 10 <= shared <= 44

    without = spans(md, chunk_markdown(md, max_tokens=200, overlap_tokens=0))
    for (_, end), (next_start, _) in zip(without, without[1:], strict=False):
        assert next_start >= end


def test_text_without_boundaries_is_cut_into_token_windows() -> None:
    rng = random.Random(3)
    blob = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(40_000))
    cjk = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(6_000))
    emoji = "".join(chr(rng.randint(0x1F300, 0x1F64F)) for _ in range(3_000))
    for md in (blob, cjk, emoji, cjk + emoji + blob):
        chunks = chunk_markdown(md, max_tokens=100, overlap_tokens=10)
        assert_well_formed(md, chunks, 100)


def test_page_ranges_from_page_starts() -> None:
    pages = [body(f"page{p}w", 150) for p in range(4)]
    md = ""
    starts = []
    for text in pages:
        starts.append(len(md))
        md += text + "\n\n"
    chunks = chunk_markdown(md, page_starts=starts, max_tokens=128, overlap_tokens=16)
    assert_well_formed(md, chunks, 128)

    for chunk, (start, end) in zip(chunks, spans(md, chunks), strict=True):
        first = max(p for p, s in enumerate(starts, 1) if s <= start)
        last = max(p for p, s in enumerate(starts, 1) if s <= end - 1)
        assert (chunk.page_start, chunk.page_end) == (first, last)
        words = set(re.findall(r"page(\d)w", chunk.text))
        assert words == {str(p - 1) for p in range(first, last + 1)}
    assert chunks[0].page_start == 1
    assert chunks[-1].page_end == 4
    assert any(c.page_start != c.page_end for c in chunks)


def test_pages_are_none_without_page_starts() -> None:
    chunks = chunk_markdown(long_document(sections=5))
    assert all(c.page_start is None and c.page_end is None for c in chunks)


def test_deterministic() -> None:
    md = long_document(seed=11)
    assert chunk_markdown(md, max_tokens=200) == chunk_markdown(md, max_tokens=200)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 100, "overlap_tokens": 100}, "overlap_tokens"),
        ({"max_tokens": 100, "overlap_tokens": 150}, "overlap_tokens"),
        ({"overlap_tokens": -1}, "overlap_tokens"),
        ({"max_tokens": 2, "overlap_tokens": 0}, "max_tokens"),
        ({"page_starts": [0, 50, 10]}, "page_starts"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chunk_markdown("# A\n\ntext", **kwargs)  # type: ignore[arg-type]


def test_lone_surrogates_do_not_break_chunking() -> None:
    md = "# Bad bytes\n\nbefore \udcff after " + body("x")
    chunks = chunk_markdown(md)
    assert len(chunks) == 1
    assert "before \ufffd after" in chunks[0].text
    assert chunks[0].tokens == count_tokens(chunks[0].text)


def test_special_token_strings_are_plain_text() -> None:
    md = "# Tokens\n\nThe literal <|endoftext|> appears in this document."
    chunks = chunk_markdown(md)
    assert "<|endoftext|>" in chunks[0].text


def test_large_document_stays_within_bounds_and_in_order() -> None:
    rng = random.Random(5)
    words = [
        "the",
        "pipeline",
        "turns",
        "uploaded",
        "documents",
        "into",
        "markdown",
        "chunks",
        "and",
        "vectors",
    ]
    parts = []
    size = 0
    while size < 2_000_000:
        if rng.random() < 0.03:
            part = f"## Heading {size}\n\n"
        else:
            part = " ".join(rng.choice(words) for _ in range(rng.randint(5, 400))) + ".\n\n"
        parts.append(part)
        size += len(part)
    md = "".join(parts)
    chunks = chunk_markdown(md)
    assert all(0 < c.tokens <= 512 for c in chunks)
    assert [c.ord for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].text.rstrip() == md.rstrip()[-len(chunks[-1].text.rstrip()) :]


def test_a_huge_section_is_chunked_in_blocks_with_the_same_bounds() -> None:
    paragraph = " ".join(f"lemma{i % 997}" for i in range(300)) + ".\n\n"
    md = "# Corpus\n\n" + paragraph * (2 * chunking.BLOCK_CHARS // len(paragraph) + 3)
    chunks = chunk_markdown(md, max_tokens=256, overlap_tokens=32)
    assert len(md) > 2 * chunking.BLOCK_CHARS
    assert all(0 < c.tokens <= 256 for c in chunks)
    assert {c.heading_path for c in chunks} == {("Corpus",)}
    covered = "".join(c.text for c in chunks)
    assert covered.count("lemma996") >= md.count("lemma996")  # nothing lost at block edges


PATHOLOGICAL = {
    "spaces": "x" + " " * 100_000 + "y",
    "hashes": "#" * 100_000,
    "nested brackets": "[" * 50_000 + "]" * 50_000,
    "heading of spaces": "# a" + " " * 100_000 + "b\n\n" + body("after"),
    "heading closing run": "# a" + " #" * 50_000 + "\n\n" + body("after"),
    "setext underline": "title\n" + "=" * 100_000 + "x",
    "backticks": "`" * 100_000,
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_lines_are_chunked_within_bounds(name: str) -> None:
    """Lines that made a backtracking regex quadratic (a 100k-space heading took minutes);
    their time is measured in `make bench` (pathological_lines), their outcome here."""
    md = PATHOLOGICAL[name]
    chunks = chunk_markdown(md, max_tokens=512, overlap_tokens=64)
    assert chunks and all(count_tokens(c.text) == c.tokens <= 512 for c in chunks)
    # Runs of one character repeat, so chunks cannot be located by search: count instead.
    assert sum(len("".join(c.text.split())) for c in chunks) >= len("".join(md.split()))


def test_closing_sequences_and_bare_hashes_in_atx_titles() -> None:
    md = "\n\n".join(
        ["# A #", body("a"), "## B # c ##", body("b"), "### ###", body("c"), "#\r", body("d")]
    )
    paths = [c.heading_path for c in chunk_markdown(md)]
    assert ("A",) in paths and ("A", "B # c") in paths


TRICKY = [
    "word", "Word", " ", "  ", "\t", "\n", "\n\n", "\r\n", ".\n", "!\n\n", "\u3000", "\n\u3000\n",
    "12345678", "'s", "'LL", "é", "日本語", "😀", "--", "...", "  indented", "\n    code()",
    "x=1;", "(a)", "\x0b", "\x0c",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_token_counts_are_exact_where_pieces_reuse_the_sections_tokens(seed: int) -> None:
    # Pieces count their tokens from the section's own where a pre-token boundary is
    # certain; text built from what moves those boundaries must still count exactly.
    rng = random.Random(seed)
    md = "".join(rng.choice(TRICKY) + rng.choice(["", " "]) for _ in range(3000))
    for max_tokens, overlap in ((16, 4), (40, 8), (120, 0)):
        chunks = chunk_markdown(md, max_tokens=max_tokens, overlap_tokens=overlap)
        assert len(chunks) > len(md) // (8 * max_tokens)
        for chunk in chunks:
            assert chunk.tokens == count_tokens(chunk.text) <= max_tokens
            assert chunk.text in md
