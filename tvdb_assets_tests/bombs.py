"""Hostile documents made on the spot: PDFs whose text is far larger than the file."""

import zlib


def pdf_bomb(text_bytes: int, pages: int = 1) -> bytes:
    """A valid PDF whose one compressed content stream, shared by every page, unpacks to
    `text_bytes` of text-showing operators: a few KB of file, megabytes of text per page."""
    # Each line a step below the last: text drawn over itself is shown (and extracted) once.
    line = b"(" + b"A" * 1000 + b") Tj 0 -1 Td\n"
    text = b"BT /F1 1 Tf 72 720 Td\n" + line * (text_bytes // len(line)) + b"ET\n"
    stream = zlib.compress(text, 9)
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(pages))
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
        b"/Resources << /Font << /F1 4 0 R >> >> >>"
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        *[page] * pages,
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
