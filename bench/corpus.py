"""The benchmark corpus: documentation that installed packages ship, chosen deterministically.

Candidates are the md/html/txt/rst/pdf files under the venv's site-packages, /usr/share and
/usr/lib/python3*, in sorted path order, without licence boilerplate, files under 200 bytes
or over 2 MB, and byte-identical duplicates. Each type is sampled at evenly spaced positions
up to its cap, so the picks spread over many packages. The machine ships few PDFs, so PDFs
are also generated (fpdf2, fixed creation date: the same bytes every time) from the text of
other picked files. `write_big_markdown` makes the single large file, also reproducibly.
"""

import glob
import hashlib
import os
import random
import re
import shutil
import sysconfig
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

ROOTS = (sysconfig.get_paths()["purelib"], "/usr/share", *sorted(glob.glob("/usr/lib/python3*")))
KINDS = {
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".txt": "txt",
    ".rst": "rst",
    ".pdf": "pdf",
}
CAPS = {"md": 150, "html": 150, "txt": 150, "rst": 100, "pdf": 20}
GENERATED_PDFS = 40
MIN_BYTES, MAX_BYTES = 200, 2 * 1024 * 1024
_BOILERPLATE = re.compile(r"^(licen[cs]e|copying|copyright|authors|notice|third.party)", re.I)
_UNSAFE = re.compile(r"[^\w.-]+")
_PDF_DATE = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Corpus:
    root: Path
    files: int
    by_type: dict[str, int]
    generated_pdfs: int
    total_bytes: int
    manifest_sha256: str  # of every (name, content sha256): equal digests, equal corpora

    @property
    def megabytes(self) -> float:
        return self.total_bytes / 1e6


def _candidates() -> Iterator[tuple[str, Path]]:
    seen: set[Path] = set()
    for root in ROOTS:
        for directory, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                kind = KINDS.get(os.path.splitext(name)[1].lower())
                if kind is None or _BOILERPLATE.match(name):
                    continue
                path = Path(directory, name)
                real = path.resolve()
                if real in seen or path.is_symlink() or not path.is_file():
                    continue
                seen.add(real)
                if MIN_BYTES <= path.stat().st_size <= MAX_BYTES:
                    yield kind, path


def _spread(items: list[Path], cap: int) -> list[Path]:
    """Up to `cap` items at evenly spaced positions (deterministic, spans the whole list)."""
    if len(items) <= cap:
        return items
    return [items[i * len(items) // cap] for i in range(cap)]


def _pick() -> dict[str, list[Path]]:
    by_kind: dict[str, list[Path]] = {kind: [] for kind in CAPS}
    digests: set[str] = set()
    for kind, path in _candidates():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in digests:
            digests.add(digest)
            by_kind[kind].append(path)
    return {kind: _spread(paths, CAPS[kind]) for kind, paths in by_kind.items()}


def _latin1(text: str) -> str:
    text = text.replace("\t", "    ").encode("latin-1", "replace").decode("latin-1")
    return "".join(c for c in text if c == "\n" or c >= " ")


def pdf_bytes(title: str, text: str) -> bytes:
    """A multi-page PDF (Helvetica, so latin-1 text) that is byte-identical run after run."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(_PDF_DATE)
    pdf.set_font("Helvetica", size=10)
    pdf.add_page()
    pdf.multi_cell(0, 5, _latin1(f"{title}\n\n{text}"))
    return bytes(pdf.output())


def _generate_pdfs(sources: list[Path], count: int, out: Path) -> int:
    """`count` PDFs of 60-150k characters (about 40 pages) each, built from consecutive
    source texts: enough pages that a PDF ingest measures pages, not one run's fixed cost."""
    out.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        parts: list[str] = []
        index = n * 7
        while sum(map(len, parts)) < 60_000:
            parts.append(sources[index % len(sources)].read_text(errors="replace"))
            index += 1
        text = "\n\n".join(parts)[:150_000]
        (out / f"generated-{n:02d}.pdf").write_bytes(pdf_bytes(f"Generated document {n}", text))
    return count


def build(root: Path) -> Corpus:
    """Copy the picks into `root/<type>/` and add the generated PDFs; `root` must not exist."""
    picks = _pick()
    for kind, paths in picks.items():
        (root / kind).mkdir(parents=True)
        for i, path in enumerate(paths):
            slug = _UNSAFE.sub("-", f"{path.parent.name}-{path.name}")[-90:]
            shutil.copyfile(path, root / kind / f"{i:03d}-{slug}")
    text_sources = picks["txt"] + picks["md"]
    generated = _generate_pdfs(text_sources, GENERATED_PDFS, root / "pdf")
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    manifest = hashlib.sha256()
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest.update(f"{path.relative_to(root)}\0{digest}\n".encode())
    return Corpus(
        root=root,
        files=len(files),
        by_type=dict(sorted(Counter(p.parent.name for p in files).items())),
        generated_pdfs=generated,
        total_bytes=sum(p.stat().st_size for p in files),
        manifest_sha256=manifest.hexdigest(),
    )


def write_big_markdown(path: Path, vocabulary_from: Path, target_bytes: int, seed: int = 50) -> int:
    """A markdown file of about `target_bytes`: headings and paragraphs of words drawn
    (seeded) from the corpus's markdown, so nearly every chunk is distinct text."""
    text = " ".join(p.read_text(errors="replace") for p in sorted(vocabulary_from.rglob("*.*")))
    words = sorted(set(re.findall(r"[A-Za-z]{3,14}", text)))
    rng = random.Random(seed)
    written = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        paragraph = 0
        while written < target_bytes:
            block = ""
            if paragraph % 400 == 0:
                block += f"# Part {paragraph // 400 + 1}\n\n"
            if paragraph % 25 == 0:
                block += f"## {' '.join(rng.choices(words, k=4)).title()}\n\n"
            block += " ".join(rng.choices(words, k=rng.randint(40, 140))).capitalize() + ".\n\n"
            out.write(block)
            written += len(block.encode())
            paragraph += 1
    return written
