"""Stable identifiers: partition keys for uploads and UUIDv5 ids for chunks."""

import hashlib
import re
import unicodedata
import uuid

CHUNK_NAMESPACE = uuid.UUID("6f0f1c55-7d1e-5b8e-9a4e-2d6c1f0b7a10")
_MAX_SLUG = 80
# Dagster reserves "," "|" "[" "]" and "..." in partition keys; keeping only word characters,
# "." and "-" (and folding runs of dots) leaves none of them and stays readable.
_UNSAFE = re.compile(r"[^\w.-]+")
_DOTS = re.compile(r"\.{2,}")
_DASHES = re.compile(r"-{2,}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def path_bytes(path: str) -> bytes:
    """The name as the file system holds it: bytes that are not UTF-8 come back as they were.

    Python keeps such bytes in a `str` as lone surrogates (surrogate escapes).
    """
    return path.encode("utf-8", "surrogateescape")


def shown_path(path: str) -> str:
    """A path as a person should see it, and as Postgres can store it.

    Bytes that are not UTF-8 show as `\\xe9`, control characters (a newline in a name) as
    `\\n`; every other character is shown as it is.
    """
    text = path_bytes(path).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def partition_key_for(path: str) -> str:
    """A readable, valid and unique partition key for an upload's relative path.

    The same path always gives the same key. The short hash is of the name's exact bytes,
    so distinct files always get distinct keys, even when their names look alike (`café`
    in NFC and NFD, `x\\y.md` beside `x/y.md`) or fold to the same slug.
    """
    readable = unicodedata.normalize("NFC", shown_path(path).replace("\\", "/")).strip("/")
    slug = _UNSAFE.sub("-", readable.replace("/", "-")).lower()
    slug = _DASHES.sub("-", _DOTS.sub(".", slug)).strip(".-_")[:_MAX_SLUG].rstrip(".-_")
    digest = hashlib.sha1(path_bytes(path)).hexdigest()[:10]
    return f"{slug or 'document'}-{digest}"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_id(partition_key: str, ord: int, text_sha256: str) -> uuid.UUID:
    """UUIDv5 of (document, position, text hash): unchanged chunks keep their id across runs."""
    return uuid.uuid5(CHUNK_NAMESPACE, f"{partition_key}\x1f{ord}\x1f{text_sha256}")
