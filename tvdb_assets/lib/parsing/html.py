"""HTML -> markdown through the compiled `html-to-markdown` converter (Rust, html5ever).

It keeps headings, lists, tables, links' text and code blocks with their language; we drop
what carries no document text: site chrome (navigation, banners, footers, forms) and
elements hidden from readers. Scripts and styles never reach its output.
"""

import html
import re

from html_to_markdown import ConversionOptions, PreprocessingOptions, WarningKind, convert

from tvdb_assets.lib.errors import DocumentError

_CHROME = (
    "nav",
    "aside",
    "footer",
    "form",
    "button",
    "select",
    "textarea",
    "iframe",
    "object",
    "embed",
    "[role=navigation]",
    "[role=banner]",
    "[role=contentinfo]",
    "[role=search]",
    "[role=menu]",
    "[role=menubar]",
    '[aria-hidden="true"]',
)
_OPTIONS = ConversionOptions(
    heading_style="atx",
    bullets="-",
    # The text feeds chunking and embeddings: literal snake_case and 2*3 beat escapes, a
    # table's padding is whitespace to embed, and a data: URI is kilobytes of noise.
    escape_asterisks=False,
    escape_underscores=False,
    compact_tables=True,
    autolinks=False,
    inline_data_media="alt_text_only",
    extract_metadata=False,  # it would prepend the <head> as YAML front matter
    exclude_selectors=list(_CHROME),
    preprocessing=PreprocessingOptions(enabled=True, preset="standard"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.I)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_H1 = re.compile(r"<h1[\s>]", re.I)
# A link whose target runs script keeps its text only; nested parentheses one level deep
# cover `javascript:void(0)`.
_SCRIPT_LINK = re.compile(
    r"\[([^\]]*)\]\(\s*<?(?:javascript|vbscript|data):(?:[^()\s]|\([^()]*\))*>?\s*\)", re.I
)
_BLANK_RUNS = re.compile(r"\n{3,}")
_FENCE = re.compile(r"^(```|~~~)", re.M)
# Where to look for a <title>: the head of any real page, without scanning a huge body.
_HEAD_CHARS = 65_536


def declared_charset(data: bytes) -> str | None:
    """The charset a page declares in a <meta> tag near its top, if any."""
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


def html_to_markdown(path: str, page: str) -> str:
    """Convert an HTML document to markdown; raises DocumentError if it has no text."""
    result = convert(page, _OPTIONS)
    if any(w.kind == WarningKind.DEPTH_LIMIT_EXCEEDED for w in result.warnings):
        # The converter skips what lies deeper than its limit: fail rather than lose text.
        raise DocumentError(path, "HTML nested too deeply (over 1,024 levels)")
    markdown = _tidy(_SCRIPT_LINK.sub(r"\1", result.content or ""))
    if not markdown:
        raise DocumentError(path, "HTML has no text content")
    title = _title(page)
    if title and not _H1.search(page):
        markdown = f"# {title}\n\n{markdown}"
    return markdown + "\n"


def _title(page: str) -> str:
    match = _TITLE.search(page, 0, _HEAD_CHARS)
    return " ".join(html.unescape(match.group(1)).split()) if match else ""


def _tidy(markdown: str) -> str:
    """Collapse blank-line runs outside code blocks, which keep their own blank lines."""
    pieces = _FENCE.split(markdown)
    # split() with one group: text, fence, text, fence, ... so code sits at 4k + 2.
    for k in range(0, len(pieces), 4):
        pieces[k] = _BLANK_RUNS.sub("\n\n", pieces[k])
    return "".join(pieces).strip("\n")
