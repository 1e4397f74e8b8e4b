"""HTML -> markdown that keeps structure (headings, lists, code, tables) and drops page chrome."""

import re

from bs4 import BeautifulSoup, Tag
from markdownify import ATX, MarkdownConverter

from tvdb_assets.lib.errors import DocumentError

# Elements that carry no document text: code, styling, widgets and site chrome.
_NOISE_TAGS = {
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "aside",
    "footer",
    "form",
    "button",
    "select",
    "textarea",
    "input",
    "iframe",
    "object",
    "embed",
    "svg",
    "canvas",
    "head",
}
_NOISE_ROLES = {"navigation", "banner", "contentinfo", "search", "menu", "menubar"}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.I)
_LANGUAGE_CLASS = re.compile(r"^(?:language|lang)-([\w+#.-]+)$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SCHEME = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*):")
_LINK_SCHEMES = {"http", "https", "mailto", "ftp"}


def declared_charset(data: bytes) -> str | None:
    """The charset a page declares in a <meta> tag near its top, if any."""
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


def html_to_markdown(path: str, html: str) -> str:
    """Convert an HTML document to markdown; raises DocumentError if it has no text."""
    soup = BeautifulSoup(html, "html.parser")
    title = _title(soup)
    has_h1 = _drop_noise(soup)
    try:
        markdown = _converter().convert_soup(soup)
    except RecursionError:
        # markdownify recurses per element; pathological nesting must fail this file only.
        raise DocumentError(path, "HTML nested too deeply") from None
    markdown = _tidy(markdown)
    if not markdown.strip():
        raise DocumentError(path, "HTML has no text content")
    if title and not has_h1:
        markdown = f"# {title}\n\n{markdown}"
    return markdown + "\n"


def _title(soup: BeautifulSoup) -> str:
    tag = soup.find("title")
    return " ".join(tag.get_text().split()) if tag is not None else ""


def _drop_noise(soup: BeautifulSoup) -> bool:
    """Remove non-content elements in one walk; returns whether an <h1> is left."""
    has_h1 = False
    fake_links: list[Tag] = []
    stack: list[Tag] = [soup]
    while stack:
        for child in list(stack.pop().children):
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in _NOISE_TAGS or _is_chrome(child):
                child.decompose()
                continue
            if name == "img":
                # Image URLs (often multi-KB data: URIs) are noise for search; alt text is not.
                alt = " ".join(str(child.get("alt") or "").split())
                if alt:
                    child.replace_with(f"[image: {alt}]")
                else:
                    child.decompose()
                continue
            if name == "h1":
                has_h1 = True
            elif name == "a":
                scheme = _SCHEME.match(str(child.get("href") or ""))
                if scheme and scheme.group(1).lower() not in _LINK_SCHEMES:  # javascript:...
                    fake_links.append(child)
            stack.append(child)
    for link in fake_links:
        link.unwrap()
    return has_h1


def _is_chrome(tag: Tag) -> bool:
    return tag.get("role") in _NOISE_ROLES or tag.get("aria-hidden") == "true"


def _tidy(markdown: str) -> str:
    """Strip trailing spaces and collapse blank-line runs, leaving code blocks untouched."""
    lines: list[str] = []
    in_code = False
    blank_run = 0
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
        elif in_code:
            lines.append(line)
            continue
        line = line.rstrip()
        blank_run = blank_run + 1 if not line else 0
        if blank_run <= 1:
            lines.append(line)
    return "\n".join(lines).strip("\n")


def _converter() -> MarkdownConverter:
    return MarkdownConverter(
        heading_style=ATX,
        bullets="-",
        # The text feeds chunking and embeddings: literal snake_case and 2*3 beat escapes.
        escape_underscores=False,
        escape_asterisks=False,
        code_language_callback=_code_language,
    )


def _code_language(el: Tag) -> str | None:
    for tag in (el, el.find("code")):
        if isinstance(tag, Tag):
            for cls in tag.get("class") or []:
                match = _LANGUAGE_CLASS.match(cls)
                if match:
                    return match.group(1)
    return None
