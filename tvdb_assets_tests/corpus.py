"""Build small test corpora on disk: PDFs, bad files and text in legacy encodings."""

import codecs
import io
import random
from pathlib import Path

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

PathLike = str | Path


def pdf_bytes(pages: list[str]) -> bytes:
    """A PDF with one page per string (Helvetica: latin-1 text only)."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=False)
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def write_pdf(path: PathLike, pages: list[str]) -> Path:
    """Write a PDF with one page per string; returns its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(pdf_bytes(pages))
    return out


def write_bad_files(directory: PathLike) -> dict[str, str]:
    """Write files that must each fail to parse; returns {file name: expected reason part}."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    good = pdf_bytes(["A perfectly fine first page.", "And a second one."])
    files: dict[str, tuple[bytes, str]] = {
        # Header intact, the rest garbage: pypdf cannot find an xref, trailer or EOF marker.
        "corrupt.pdf": (b"%PDF-1.7\n" + _random_bytes(2048, seed=1), "corrupt PDF"),
        # An upload cut short.
        "truncated.pdf": (good[: len(good) // 2], "corrupt PDF (EOF marker not found)"),
        "encrypted.pdf": (encrypted_pdf(good, "s3cret"), "encrypted PDF (needs a password)"),
        # Pages with drawings but no text layer, like a scan.
        "scanned.pdf": (_textless_pdf(), "no extractable text"),
        "empty.txt": (b"", "empty file"),
        "blank.md": (b"  \n\t\n \r\n", "empty file"),
        "junk.txt": (_random_bytes(4096, seed=2), "binary content"),
        "image.png": (b"\x89PNG\r\n\x1a\n" + _random_bytes(256, seed=3), "unsupported file type"),
    }
    for name, (data, _) in files.items():
        (root / name).write_bytes(data)
    return {name: reason for name, (_, reason) in files.items()}


def write_encoded_files(directory: PathLike) -> dict[str, str]:
    """Write text in non-UTF-8 encodings; returns {file name: text the parse must contain}."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    french = "Le café crème du matin, très apprécié à la française.\nDéjà vu, naïve façade.\n"
    quotes = "Our “house blend” — a customer’s favourite — costs €12.\n"
    html = (
        '<html><head><meta charset="iso-8859-1"><title>Grüße</title></head>'
        "<body><h1>Schöne Grüße aus München</h1><p>Größe: groß.</p></body></html>"
    )
    files: dict[str, tuple[bytes, str]] = {
        "latin1.txt": (french.encode("latin-1"), "café crème"),
        "cp1252.txt": (quotes.encode("cp1252"), "“house blend” — a customer’s"),
        "utf16-bom.txt": (french.encode("utf-16"), "naïve façade"),
        "utf16le-nobom.md": (("# Thé vert\n\n" + french).encode("utf-16-le"), "# Thé vert"),
        "utf8-bom.md": (codecs.BOM_UTF8 + "# Oolong\n\nRésumé.\n".encode(), "Résumé"),
        "latin1.html": (html.encode("latin-1"), "Schöne Grüße aus München"),
    }
    for name, (data, _) in files.items():
        (root / name).write_bytes(data)
    return {name: text for name, (_, text) in files.items()}


def _random_bytes(n: int, seed: int) -> bytes:
    # Seeded so a failure reproduces; always contains NULs and control bytes.
    return random.Random(seed).randbytes(n)


def encrypted_pdf(pdf: bytes, user_password: str, algorithm: str = "RC4-128") -> bytes:
    """`pdf` encrypted; an empty user password only restricts what a reader may do."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password="0wner", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _textless_pdf() -> bytes:
    pdf = FPDF(format="A4")
    for _ in range(2):
        pdf.add_page()
        pdf.set_fill_color(120, 120, 120)
        pdf.rect(20, 20, 170, 250, style="F")
    return bytes(pdf.output())
