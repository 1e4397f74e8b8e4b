"""An S3-compatible bucket as the uploads store (`real` mode): AWS S3, Supabase Storage's S3
endpoint, MinIO.

boto3 is imported when a bucket is first asked for something, never by mock mode. The
client is made per process and dropped when the store is pickled, so the parse workers
(which receive the store with each job) build their own.
"""

import errno
import hashlib
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tvdb_assets.lib.errors import ServiceError
from tvdb_assets.lib.uploads.base import Listing, Span, UploadInfo, UploadStore
from tvdb_assets.lib.uploads.local import skipped_on_purpose

# Objects in these storage classes must be restored before they can be read.
ARCHIVED = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# SigV4 signs links for at most seven days.
MAX_LINK_SECONDS = 7 * 24 * 3600
# Keys a sensor tick lists (ten requests of 1,000): a larger bucket is swept over ticks.
KEYS_PER_PAGE = 10_000
# HEAD requests in flight at once when objects are looked at one by one (`S3Bucket.look`).
LOOKS_AT_ONCE = 16
_READ_CHUNK = 1024 * 1024
# Answers that the same request will get again: configuration to fix, not a passing fault.
_PERMANENT = frozenset(
    {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)


@dataclass(frozen=True)
class S3Location:
    """Which bucket, under which prefix, at which endpoint (None: AWS itself)."""

    bucket: str
    prefix: str = ""  # "" or a folder: ends with "/"
    endpoint_url: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", folder(self.prefix))

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, path: str) -> str:
        return self.prefix + path

    def relative(self, url: str) -> str:
        """The path in this store that an s3:// URL names ("" for all of it)."""
        bucket, key = parse_url(url)
        key = key.strip("/")
        if bucket != self.bucket or not f"{key}/".startswith(self.prefix):
            raise ValueError(f"{url} is not in the uploads bucket {self.url}")
        return key[len(self.prefix) :]


@dataclass(frozen=True)
class S3Credentials:
    """From AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) only; unset:
    boto3's own chain (an instance or task role on AWS)."""

    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


def folder(prefix: str) -> str:
    """A prefix as a folder: `inbox` and `/inbox/` both mean `inbox/`; "" is the bucket."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url}: not an s3:// URL")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{url}: no bucket named")
    return bucket, prefix


def stamp(etag: str) -> int:
    """The ETag as a number for the registry's change stamp (a signed 64-bit column): a new
    ETag, new content perhaps, so the object is hashed again; the same ETag, no download."""
    return int.from_bytes(hashlib.sha256(etag.encode()).digest()[:8], "big") >> 1


def odd_key(path: str) -> str | None:
    """Why an object key cannot be taken as an upload path, or None."""
    if any(part in ("", ".", "..") for part in path.split("/")):
        # Servers, proxies and link checkers resolve such keys differently.
        return "object key with an empty, '.' or '..' part, not read"
    return None


class S3Bucket(UploadStore):
    """Objects under a prefix of a bucket; an object's path is its key without the prefix."""

    gives_links = True

    def __init__(
        self,
        location: S3Location,
        credentials: S3Credentials | None = None,
        keys_per_page: int = KEYS_PER_PAGE,
    ) -> None:
        self.location = location
        self.credentials = credentials or S3Credentials()
        self.keys_per_page = keys_per_page
        self._client: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # A boto3 client cannot be pickled: each process makes its own from the settings.
        # The keys travel with them (over a pipe to this machine's workers), so a worker,
        # forked from a server started before the environment was set, needs none of it.
        return {**self.__dict__, "_client": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.location.url

    def _s3(self) -> Any:
        with self._lock:  # a boto3 client is thread-safe once made; making one is not
            if self._client is None:
                self._client = _client(self.location, self.credentials)
            return self._client

    # -- listing --------------------------------------------------------------------------

    def list(self) -> Iterator[UploadInfo]:
        after: str | None = None
        while True:
            page = self.list_page(after)
            yield from page.uploads
            if page.next_after is None:
                return
            after = page.next_after

    def list_page(self, after: str | None = None, limit: int | None = None) -> Listing:
        """Up to about `limit` keys after `after`, whole pages of 1,000, in key order (which
        is the order of the paths: a prefix is shared, and UTF-8 sorts like code points)."""
        limit = limit or self.keys_per_page
        where = self.location
        arguments: dict[str, Any] = {"Bucket": where.bucket, "Prefix": where.prefix}
        if after is not None:
            arguments["StartAfter"] = where.key(after)
        uploads: list[UploadInfo] = []
        seen = 0
        last: str | None = None
        try:
            paginator = self._s3().get_paginator("list_objects_v2")
            pages = paginator.paginate(**arguments, PaginationConfig={"PageSize": min(limit, 1000)})
            for page in pages:
                for item in page.get("Contents", []):
                    last = item["Key"][len(where.prefix) :]
                    seen += 1
                    info = _info(last, item)
                    if info is not None:
                        uploads.append(info)
                if seen >= limit and page.get("IsTruncated"):
                    return Listing(uploads, Span(after, last))
        except Exception as exc:
            raise _service_error(exc, f"cannot list {where.url}") from exc
        return Listing(uploads, Span(after, None))

    def look(self, paths: Iterable[str]) -> Listing:
        """A HEAD request per path, several at once: what the objects are now, whatever a
        notice said of them. A key with no object is not listed."""
        wanted = Span.of(paths)
        with ThreadPoolExecutor(min(LOOKS_AT_ONCE, len(wanted.only or ()) or 1)) as threads:
            found = threads.map(self._look_at, sorted(wanted.only or ()))
            return Listing([info for info in found if info is not None], wanted)

    def _look_at(self, path: str) -> UploadInfo | None:
        if (reason := odd_key(path)) is not None:
            # Not requested: servers and proxies resolve such keys differently.
            return UploadInfo(path, 0, 0, refused=reason)
        key = self.location.key(path)
        try:
            head = self._s3().head_object(Bucket=self.location.bucket, Key=key)
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _service_error(exc, f"cannot look at s3://{self.location.bucket}/{key}") from exc
        item = {
            "Size": head.get("ContentLength", 0),
            "ETag": head.get("ETag", ""),
            "StorageClass": head.get("StorageClass", "STANDARD"),
        }
        return _info(path, item)

    def notice_address(self) -> tuple[str, str]:
        return self.location.bucket, self.location.prefix

    # -- reading --------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        try:
            return self._s3().get_object(Bucket=self.location.bucket, Key=self.location.key(path))
        except Exception as exc:
            raise _os_error(exc, path) from exc

    def read(self, path: str) -> bytes:
        response = self._get(path)
        try:
            return response["Body"].read()
        except Exception as exc:
            raise _os_error(exc, path) from exc

    def head(self, path: str, size: int = 1024) -> bytes:
        try:
            response = self._s3().get_object(
                Bucket=self.location.bucket,
                Key=self.location.key(path),
                Range=f"bytes=0-{size - 1}",
            )
            return response["Body"].read()[:size]
        except Exception as exc:
            if _error_code(exc) == "InvalidRange":
                return b""  # an empty object has no first byte to ask for
            raise _os_error(exc, path) from exc

    def sha256(self, path: str) -> str:
        digest = hashlib.sha256()
        body = self._get(path)["Body"]
        try:
            for chunk in body.iter_chunks(_READ_CHUNK):
                digest.update(chunk)
        except Exception as exc:
            raise _os_error(exc, path) from exc
        finally:
            body.close()
        return digest.hexdigest()

    def link(self, path: str, expires_seconds: int) -> str:
        """A presigned GET of the object: whoever holds it may download the object until it
        expires (sooner if the credentials that signed it are temporary and expire first)."""
        if not 1 <= expires_seconds <= MAX_LINK_SECONDS:
            raise ValueError(f"a link may last 1 to {MAX_LINK_SECONDS} seconds (7 days)")
        try:
            url: str = self._s3().generate_presigned_url(
                "get_object",
                Params={"Bucket": self.location.bucket, "Key": self.location.key(path)},
                ExpiresIn=expires_seconds,
            )
        except Exception as exc:
            raise _service_error(exc, f"cannot sign a link to {self.location.key(path)}") from exc
        return url


def _info(path: str, item: dict[str, Any]) -> UploadInfo | None:
    """A listed object as an upload; None for what is skipped on purpose, as in the inbox
    (hidden and temporary names, folder markers)."""
    size = int(item.get("Size", 0))
    if path == "" or (path.endswith("/") and size == 0):
        return None  # the "folder" objects consoles create
    reason = odd_key(path)
    if reason is None:
        if any(skipped_on_purpose(part) for part in path.split("/")):
            return None
        storage = item.get("StorageClass", "STANDARD")
        if storage in ARCHIVED:
            reason = f"archived ({storage}): restore the object to ingest it"
    return UploadInfo(path, size, stamp(str(item.get("ETag", ""))), refused=reason)


def _client(location: S3Location, credentials: S3Credentials) -> Any:
    import boto3
    from botocore.config import Config

    custom = location.endpoint_url is not None
    config = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        # Supabase Storage and MinIO serve buckets by path, not by host name.
        s3={"addressing_style": "path" if custom else "auto"},
        # botocore >= 1.36 adds checksum headers that some S3-compatible servers reject.
        request_checksum_calculation="when_required" if custom else "when_supported",
        response_checksum_validation="when_required" if custom else "when_supported",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=location.endpoint_url,
        region_name=location.region,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        config=config,
    )


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _os_error(exc: Exception, path: str) -> OSError:
    """A failed read as the OSError a file's would be: the document fails with the reason,
    the others go on."""
    if isinstance(exc, OSError):
        return exc
    code = _error_code(exc)
    if code in ("NoSuchKey", "404", "NotFound"):
        return FileNotFoundError(errno.ENOENT, "the object is gone", path)
    if code in ("AccessDenied", "403", "InvalidObjectState"):
        return PermissionError(errno.EACCES, f"not allowed to read the object ({code})", path)
    return OSError(errno.EIO, f"the bucket did not answer ({code or type(exc).__name__})", path)


def _service_error(exc: Exception, doing: str) -> ServiceError:
    retryable = _error_code(exc) not in _PERMANENT
    return ServiceError("s3", f"{doing}: {exc}", retryable=retryable)
