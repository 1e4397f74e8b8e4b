"""Time-limited links to the original uploads, for `tvdb url` and `tvdb search` results."""

from collections.abc import Sequence

import psycopg

from tvdb_assets.lib.ids import partition_key_for
from tvdb_assets.lib.store import inbox_files
from tvdb_assets.lib.store.inbox_files import InboxFile
from tvdb_assets.lib.uploads.base import UploadStore
from tvdb_assets.lib.uploads.s3 import S3Bucket

DEFAULT_EXPIRES_SECONDS = 3600


def find(conn: psycopg.Connection, uploads: UploadStore, document: str) -> InboxFile | None:
    """The upload a person named: its partition key, its path in the store, or (for a
    bucket) its s3:// URL."""
    path = document
    if document.startswith("s3://") and isinstance(uploads, S3Bucket):
        try:
            path = uploads.location.relative(document)
        except ValueError:
            return None
    key = partition_key_for(path)
    found = inbox_files.load(conn, [document, key])
    return found.get(document) or found.get(key)


def for_documents(
    conn: psycopg.Connection,
    uploads: UploadStore,
    partition_keys: Sequence[str],
    expires_seconds: int = DEFAULT_EXPIRES_SECONDS,
) -> dict[str, str]:
    """A link per document whose upload the store can link to, by partition key; none at
    all from a local inbox."""
    files = inbox_files.load(conn, list(dict.fromkeys(partition_keys)))
    links = {key: uploads.link(f.path, expires_seconds) for key, f in files.items()}
    return {key: link for key, link in links.items() if link is not None}
