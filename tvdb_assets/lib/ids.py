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


def partition_key_for(path: str) -> str:
    """A readable, valid and unique partition key for an upload's relative path.

    The same path always gives the same key; the short hash keeps keys unique when two
    paths fold to the same slug or a long name is cut.
    """
    normalized = unicodedata.normalize("NFC", path.replace("\\", "/")).strip("/")
    slug = _UNSAFE.sub("-", normalized.replace("/", "-")).lower()
    slug = _DASHES.sub("-", _DOTS.sub(".", slug)).strip(".-_")[:_MAX_SLUG].rstrip(".-_")
    digest = hashlib.sha1(normalized.encode("utf-8")).hexdigest()[:10]
    return f"{slug or 'document'}-{digest}"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_id(partition_key: str, ord: int, text_sha256: str) -> uuid.UUID:
    """UUIDv5 of (document, position, text hash): unchanged chunks keep their id across runs."""
    return uuid.uuid5(CHUNK_NAMESPACE, f"{partition_key}\x1f{ord}\x1f{text_sha256}")
