"""The local parser: what users get out of each kind of document, and how bad input fails."""

import codecs
from pathlib import Path

import pytest

from tvdb_assets.lib.errors import DocumentError
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing import Kind, LocalParser, Parser, decode_text, detect_kind
from tvdb_assets_tests.corpus import (
    encrypted_pdf,
    pdf_bytes,
    write_bad_files,
    write_encoded_files,
    write_pdf,
)

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"

PARSER = LocalParser()

HTML_PAGE = """<!DOCTYPE html>
<html><head><title>Brewing  Oolong</title>
<style>body { color: red }</style><script>trackVisitor("secret-tracker")</script></head>
<body>
<nav><a href="/">Home</a> <a href="/shop">Shop menu item</a></nav>
<h2>Water</h2>
<p>Use <b>filtered</b> water at 95 °C; see <a href="javascript:void(0)">this</a>.</p>



<ul><li>Rinse the leaves</li><li>Steep 30 seconds<ul><li>add 5 s per infusion</li></ul></li></ul>
<pre><code class="language-python">def steep(seconds):


    return seconds + 5
</code></pre>
<table>
  <thead><tr><th>Tea</th><th>Temperature</th></tr></thead>
  <tbody><tr><td>Oolong</td><td>95 °C</td></tr><tr><td>Sencha</td><td>75 °C</td></tr></tbody>
</table>
<footer>Copyright footer text</footer>
</body></html>
"""


def parse(path: str, data: bytes) -> ParsedDocument:
    return PARSER.parse(path, data)


def test_local_parser_is_a_parser() -> None:
    assert isinstance(PARSER, Parser)
    assert PARSER.name == "local"


@pytest.mark.parametrize(
    ("path", "data", "kind"),
    [
        ("notes.md", b"# hi", Kind.MARKDOWN),
        ("docs/NOTES.MARKDOWN", b"# hi", Kind.MARKDOWN),
        ("a.txt", b"hi", Kind.TEXT),
        ("a.text", b"hi", Kind.TEXT),
        ("guide.rst", b"Title\n=====", Kind.TEXT),
        ("page.html", b"<p>hi</p>", Kind.HTML),
        ("page.HTM", b"<p>hi</p>", Kind.HTML),
        ("report.pdf", b"%PDF-1.7 ...", Kind.PDF),
        # Misnamed PDFs and files without an extension are recognised by content.
        ("report.txt", b"%PDF-1.4 ...", Kind.PDF),
        ("README", b"plain words", Kind.TEXT),
        ("scan", b"%PDF-1.4 ...", Kind.PDF),
        ("index", b"\xef\xbb\xbf  <!DOCTYPE html><html>", Kind.HTML),
        (".notes", b"dotfile words", Kind.TEXT),
    ],
)
def test_detect_kind(path: str, data: bytes, kind: Kind) -> None:
    assert detect_kind(path, data) is kind


@pytest.mark.parametrize("name", ["photo.png", "report.docx", "archive.zip", "setup.EXE"])
def test_unsupported_types_are_rejected_by_extension(name: str) -> None:
    ext = name[name.rindex(".") :].lower()
    with pytest.raises(DocumentError) as caught:
        parse(f"uploads/{name}", b"anything at all")
    assert str(caught.value) == f"uploads/{name}: unsupported file type '{ext}'"
    assert caught.value.path == f"uploads/{name}"


@pytest.mark.parametrize(
    ("path", "parser", "mime"),
    [
        ("notes.md", "local/markdown", "text/markdown"),
        ("notes.markdown", "local/markdown", "text/markdown"),
        ("notes.txt", "local/text", "text/plain"),
        ("notes.rst", "local/text", "text/plain"),
        ("NOTES", "local/text", "text/plain"),
    ],
)
def test_markdown_and_text_pass_through_with_newlines_normalised(
    path: str, parser: str, mime: str
) -> None:
    doc = parse(path, "# Thé\r\n\r\nLine one\rLine two\n".encode())
    assert doc == ParsedDocument(markdown="# Thé\n\nLine one\nLine two\n", parser=parser, mime=mime)


def test_html_keeps_structure_and_drops_noise() -> None:
    doc = parse("guide.html", HTML_PAGE.encode())
    md = doc.markdown
    assert (doc.parser, doc.mime, doc.pages, doc.page_starts) == (
        "local/html",
        "text/html",
        None,
        (),
    )
    assert md.startswith("# Brewing Oolong\n\n## Water\n")  # <title> stands in for a missing h1
    assert "Use **filtered** water at 95 °C; see this." in md
    assert "- Rinse the leaves\n- Steep 30 seconds\n  - add 5 s per infusion" in md
    assert "```python\ndef steep(seconds):\n\n\n    return seconds + 5\n```" in md
    assert "| Tea | Temperature |\n| --- | --- |\n| Oolong | 95 °C |\n| Sencha | 75 °C |" in md
    for noise in ("secret-tracker", "color: red", "Shop menu item", "Copyright footer", "<"):
        assert noise not in md
    before_code, _, after_code = md.split("```")
    assert "\n\n\n" not in before_code and "\n\n\n" not in after_code


def test_html_drops_hidden_and_role_chrome_and_script_links() -> None:
    html = (
        b'<div role="navigation">Jump to menu</div><div aria-hidden="true">decor</div>'
        b'<p>Read <a href="https://example.com/tea">the guide</a> or '
        b'<a href="javascript:open(1)">click</a>; <img src="data:image/png;base64,iVBORw0K" '
        b'alt="A teapot"></p><pre><code class="lang-rust">fn main() {}</code></pre>'
    )
    md = parse("page.html", html).markdown
    assert "Read [the guide](https://example.com/tea) or click; A teapot" in md
    assert "```rust\nfn main() {}\n```" in md
    for noise in ("Jump to menu", "decor", "javascript", "base64"):
        assert noise not in md


def test_html_with_unclosed_definition_lists_like_a_generated_manual() -> None:
    # man2html and texinfo pages (the bash manual among them) leave <dt>/<dd>/<p> open by
    # the thousand; a parser that nests each inside the last runs out of depth.
    entries = "".join(f"<DT><B>option{n}</B><DD><P>Sets option {n}.\n" for n in range(3000))
    html = f"<HTML><HEAD><TITLE>BASH(1)</TITLE></HEAD><BODY><DL COMPACT>{entries}</DL>"
    md = parse("bash.html", html.encode()).markdown
    assert md.startswith("# BASH(1)\n")
    assert all(f"Sets option {n}." in md for n in (0, 1500, 2999))


def test_html_nested_past_the_converters_depth_fails_instead_of_losing_text() -> None:
    html = "<div>" * 5000 + "deep text" + "</div>" * 5000
    with pytest.raises(DocumentError, match=r"^deep\.html: HTML nested too deeply"):
        parse("deep.html", html.encode())


def test_html_title_is_not_added_when_the_body_has_an_h1() -> None:
    html = b"<html><head><title>Site | Page</title></head><body><h1>Real</h1><p>x</p></body></html>"
    assert parse("p.htm", html).markdown == "# Real\n\nx\n"


@pytest.mark.parametrize(
    "html",
    [
        b"<html><head><title>Only a title</title></head><body></body></html>",
        b"<script>x()</script>",
    ],
)
def test_html_without_text_fails(html: bytes) -> None:
    with pytest.raises(DocumentError, match=r"^empty\.html: HTML has no text content$"):
        parse("empty.html", html)


def test_pdf_pages_and_page_starts(tmp_path: Path) -> None:
    pages = ["First page about sencha.", "", "Third page: oolong\nsecond line.", "Fourth page."]
    path = write_pdf(tmp_path / "guide.pdf", pages)
    doc = parse("guide.pdf", path.read_bytes())
    assert (doc.parser, doc.mime, doc.pages) == ("local/pdf", "application/pdf", 4)
    assert len(doc.page_starts) == 4
    assert doc.page_starts[0] == 0
    assert list(doc.page_starts) == sorted(doc.page_starts)
    for start, text in zip(doc.page_starts, pages, strict=True):
        assert doc.markdown[start : start + len(text)] == text
    assert doc.markdown == "\n\n".join(pages)


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_pdf_encrypted_with_an_empty_user_password_opens(algorithm: str) -> None:
    data = encrypted_pdf(pdf_bytes(["Printing is restricted.", "Page two."]), "", algorithm)
    doc = parse("restricted.pdf", data)
    assert (doc.markdown, doc.pages) == ("Printing is restricted.\n\nPage two.", 2)


def test_pdf_encrypted_with_a_password_fails_with_the_reason() -> None:
    data = encrypted_pdf(pdf_bytes(["Secret."]), "s3cret", "AES-256")
    with pytest.raises(DocumentError, match=r"^locked\.pdf: encrypted PDF \(needs a password\)$"):
        parse("locked.pdf", data)


def test_pdf_with_a_text_extension_is_parsed_as_pdf() -> None:
    doc = parse("misnamed.txt", pdf_bytes(["Hello from a PDF."]))
    assert (doc.parser, doc.markdown, doc.pages) == ("local/pdf", "Hello from a PDF.", 1)


def test_encoded_text_is_decoded(tmp_path: Path) -> None:
    expected = write_encoded_files(tmp_path)
    assert {"latin1.txt", "cp1252.txt", "utf16-bom.txt", "utf16le-nobom.md"} <= expected.keys()
    for name, text in expected.items():
        doc = parse(name, (tmp_path / name).read_bytes())
        assert text in doc.markdown, name
        assert "\ufeff" not in doc.markdown and "\x00" not in doc.markdown, name


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Привет, мир! Это простой текст на русском языке для проверки.\n", "cp1251"),
        ("Привет, мир! Это простой текст на русском языке для проверки.\n", "utf-16-be"),
        ("Καλημέρα κόσμε! Αυτό είναι ένα απλό ελληνικό κείμενο για δοκιμή.\n", "cp1253"),
        ("日本語のテキストです。これはテストです。\n", "shift_jis"),
        ("Größe und Übermaß: schöne Grüße.\n", "latin-1"),
        ("plain ascii in utf-32\n", "utf-32-le"),
        ("with a BOM: naïve\n", "utf-32"),
        ("with a BOM: naïve\n", "utf-8-sig"),
    ],
)
def test_decode_text_detects_encodings(text: str, encoding: str) -> None:
    assert decode_text("x.txt", text.encode(encoding)) == text


def test_utf8_cut_mid_character_still_decodes_as_utf8() -> None:
    data = "Tea: 10 €".encode()[:-1]
    assert decode_text("cut.txt", data) == "Tea: 10 "


def test_html_declared_charset_is_used() -> None:
    html = '<meta charset="windows-1252"><p>“Quoted” tea — 5 €</p>'.encode("cp1252")
    assert parse("q.html", html).markdown == "“Quoted” tea — 5 €\n"


def test_bad_files_fail_with_the_file_name_and_reason(tmp_path: Path) -> None:
    expected = write_bad_files(tmp_path)
    assert {"corrupt.pdf", "encrypted.pdf", "empty.txt", "image.png"} <= expected.keys()
    for name, reason in expected.items():
        with pytest.raises(DocumentError) as caught:
            parse(name, (tmp_path / name).read_bytes())
        message = str(caught.value)
        assert message.startswith(f"{name}: "), message
        assert reason in message, message
        assert caught.value.path == name
        assert caught.value.stage == "parse"


@pytest.mark.parametrize(
    ("path", "data", "reason"),
    [
        ("notes", bytes(range(256)) * 4, "binary content, not text"),
        ("controls.txt", b"\x01\x02\x03\x04 abc \x05\x06\x07\x08" * 20, "binary content, not text"),
        ("nul.md", b"# Title\x00\x00\x00 with NULs", "binary content, not text"),
        ("empty.pdf", b"", "empty file"),
        ("empty.html", b"", "empty file"),
        ("space.txt", "\n \u3000\t\r\n".encode(), "empty file"),
        ("fake.pdf", b"<html>404 not found</html>", "corrupt PDF (no %PDF- header)"),
        ("half.pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog", "corrupt PDF"),
    ],
)
def test_bad_input_reasons(path: str, data: bytes, reason: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse(path, data)
    assert str(caught.value).startswith(f"{path}: {reason}")


def test_empty_pdf_page_set_is_not_text() -> None:
    with pytest.raises(DocumentError, match="no extractable text"):
        parse("blank.pdf", pdf_bytes(["", ""]))


def test_max_bytes() -> None:
    parser = LocalParser(max_bytes=1024)
    assert parser.parse("ok.txt", b"x" * 1024).markdown == "x" * 1024
    with pytest.raises(
        DocumentError, match=r"^big\.txt: file too large \(1025 bytes, limit 1024 bytes\)$"
    ):
        parser.parse("big.txt", b"x" * 1025)
    with pytest.raises(DocumentError, match=r"\(150\.5 MB, limit 100 MB\)"):
        LocalParser().parse("huge.md", b"x" * (150 * 2**20 + 2**19))
    with pytest.raises(ValueError):
        LocalParser(max_bytes=0)


def test_ansi_coloured_log_is_text() -> None:
    log = "\x1b[32mINFO\x1b[0m brewed 3 pots\n" * 10
    assert parse("brew.txt", log.encode()).markdown == log


def test_crlf_inside_utf16() -> None:
    data = codecs.BOM_UTF16_LE + "a\r\nb\r\n".encode("utf-16-le")
    assert decode_text("w.txt", data) == "a\nb\n"


SAMPLE_FILES = sorted(p for p in SAMPLES.iterdir() if p.is_file()) if SAMPLES.is_dir() else []


def test_samples_cover_every_kind() -> None:
    suffixes = {p.suffix for p in SAMPLE_FILES}
    assert {".md", ".html", ".txt", ".pdf"} <= suffixes
    assert 8 <= len(SAMPLE_FILES) <= 12
    assert sum(p.stat().st_size for p in SAMPLE_FILES) < 200 * 1024


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_sample_parses(sample: Path) -> None:
    doc = parse(sample.name, sample.read_bytes())
    assert len(doc.markdown) > 500
    if sample.suffix == ".pdf":
        assert doc.pages is not None and 2 <= doc.pages <= 4
        assert len(doc.page_starts) == doc.pages
    elif sample.suffix in (".md", ".markdown", ".html"):
        assert doc.markdown.lstrip().startswith("# ")
        assert "\n## " in doc.markdown
