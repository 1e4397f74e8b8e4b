"""One upload read, hashed and parsed, as a worker process does it.

The result is a plain value, never a store row: the workers' fork server then imports no
database code (`worker_preload`), and the stage turns it into rows (`stages.parse`).
"""

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tvdb_assets.lib.errors import BudgetExceeded, DocumentError, ServiceError, is_passing
from tvdb_assets.lib.ids import shown_path
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing.base import Parser, char_limit, storable
from tvdb_assets.lib.uploads import UploadStore


@dataclass(frozen=True, slots=True)
class Parsed:
    document: ParsedDocument
    sha256: str  # of the bytes actually parsed: the upload may have changed since listed
    bytes: int
    seconds: float
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Failed:
    stage: str  # "read" or "parse"
    reason: str
    seconds: float
    transient: bool = False  # a passing cause (`errors.is_passing`): worth trying again


def parse_upload(
    uploads: UploadStore,
    parser: Parser,
    path: str,
    known: Mapping[str, ParsedDocument] | None = None,
) -> Parsed | Failed:
    """Read `path` and parse it, unless `known` holds the result for exactly these bytes
    (by sha256); a file that cannot be read or parsed is a `Failed`, with the reason."""
    started = time.perf_counter()
    try:
        data = uploads.read(path)
    except OSError as exc:
        reason = f"cannot read upload ({exc.strerror})"
        return Failed("read", reason, time.perf_counter() - started)
    sha = hashlib.sha256(data).hexdigest()
    cached = known.get(sha) if known else None
    try:
        parsed = cached if cached is not None else storable(parser.parse(shown_path(path), data))
    except DocumentError as exc:
        return Failed(exc.stage, exc.reason, time.perf_counter() - started)
    except (ServiceError, BudgetExceeded) as exc:
        # Real mode: the service could not parse it now; this document fails, not the batch.
        seconds = time.perf_counter() - started
        return Failed("parse", str(exc), seconds, transient=is_passing(exc))
    if len(parsed.markdown) > char_limit(len(data)):
        # Checked for every parser, the paid ones too: such text would cost a fortune to embed.
        reason = (
            f"text far larger than the file ({len(parsed.markdown):,} characters from "
            f"{len(data):,} bytes): a compression bomb?"
        )
        return Failed("parse", reason, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    return Parsed(parsed, sha, len(data), seconds, cached=parsed is cached)
