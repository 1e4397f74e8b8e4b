"""Bytes -> str for text-like documents, in whatever encoding they came in."""

import codecs
import re

import charset_normalizer

from tvdb_assets.lib.errors import DocumentError

# Longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Control characters no text editor writes (tab, newlines, form feed and ESC for coloured logs
# are allowed), C1 controls (bytes 0x80-0x9f decoded as latin-1: a wrong-codec sign) and the
# replacement character from undecodable bytes.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd]")
_MAX_BAD_SHARE = 0.02
# Enough to judge a file; scanning more of a huge one only costs time.
_SAMPLE_CHARS = 1 << 20
# Bytes looked at to recognise BOM-less UTF-16/32 by where the NULs of ASCII characters fall.
_NUL_SAMPLE_BYTES = 1 << 16

# The legacy Western code page is by far the commonest non-UTF-8 text, but charset-normalizer
# often ranks a Baltic or Central European sibling first on short French/German text; prefer
# cp1252 (a superset of latin-1's printable range) when it scores almost as well.
_PREFERRED_LEGACY = "cp1252"
_PREFERENCE_MARGIN = 0.15

_MIN_WIDE_GUESS_BYTES = 64
_WIDE = ("utf_16", "utf_32")

_BINARY = "binary content, not text"


def decode_text(path: str, data: bytes, declared_encoding: str | None = None) -> str:
    """Decode a text document to str with '\\n' newlines.

    Order: byte order mark; BOM-less UTF-16/32 if there are NULs; strict UTF-8;
    `declared_encoding` (e.g. from an HTML meta tag); then charset-normalizer's guess.
    Raises DocumentError for empty or whitespace-only files and for binary content.
    """
    if not data:
        raise DocumentError(path, "empty file")
    text = _decode(path, data, declared_encoding)
    if "\x00" in text or _bad_share(text) > _MAX_BAD_SHARE:
        raise DocumentError(path, _BINARY)
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DocumentError(path, "empty file")
    return text


def _decode(path: str, data: bytes, declared_encoding: str | None) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError:
                reason = f"invalid {encoding} text after its byte order mark"
                raise DocumentError(path, reason) from None
    if b"\x00" in data:
        # UTF-8 would decode NULs fine, but real UTF-8 or 8-bit text has none: they mean
        # UTF-16/32 without a BOM, or binary.
        wide = _wide_unicode_encoding(data) or _guess_encoding(data, wide_only=True)
        if wide is None:
            raise DocumentError(path, _BINARY)
        try:
            return data.decode(wide)
        except UnicodeDecodeError:
            raise DocumentError(path, _BINARY) from None
    text = _try_utf8(data)
    if text is not None:
        return text
    if declared_encoding:
        declared = _try_codec(data, declared_encoding)
        if declared is not None:
            return declared
    guessed = _guess_encoding(data)
    if guessed is None:
        raise DocumentError(path, _BINARY)
    # Errors become U+FFFD, which the binary check then counts against the file.
    return data.decode(guessed, errors="replace")


def _try_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A file cut mid-character (a truncated upload, a head -c sample) is still UTF-8.
        if exc.reason == "unexpected end of data" and exc.start >= len(data) - 3:
            return data[: exc.start].decode("utf-8", errors="strict")
        return None


def _try_codec(data: bytes, encoding: str) -> str | None:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return None
    # Browsers read a declared latin-1 as cp1252 (WHATWG encoding spec); pages rely on it.
    if name in ("latin-1", "iso8859-1", "ascii"):
        name = "cp1252"
    try:
        return data.decode(name)
    except UnicodeDecodeError:
        return None


def _wide_unicode_encoding(data: bytes) -> str | None:
    """UTF-16/32 byte order from where NULs fall: ASCII characters put them in fixed lanes.

    Cheap and sure for Latin-script text; other scripts are left to charset-normalizer.
    """
    sample = data[:_NUL_SAMPLE_BYTES]
    if len(sample) % 4 == 0 and len(sample) >= 4:
        # Every BMP character has two zero high bytes in UTF-32.
        quarter = len(sample) // 4
        lanes = [sample[i::4].count(0) / quarter for i in range(4)]
        if lanes[2] > 0.95 and lanes[3] > 0.95 and lanes[0] < 0.05:
            return "utf-32-le"
        if lanes[0] > 0.95 and lanes[1] > 0.95 and lanes[3] < 0.05:
            return "utf-32-be"
    if len(sample) % 2 == 0 and len(sample) >= 2:
        half = len(sample) // 2
        even, odd = sample[0::2].count(0) / half, sample[1::2].count(0) / half
        if odd > 0.3 and even < 0.05:
            return "utf-16-le"
        if even > 0.3 and odd < 0.05:
            return "utf-16-be"
    return None


def _guess_encoding(data: bytes, wide_only: bool = False) -> str | None:
    matches = list(charset_normalizer.from_bytes(data))
    if wide_only:
        return next((m.encoding for m in matches if m.encoding.startswith(_WIDE)), None)
    if len(data) < _MIN_WIDE_GUESS_BYTES:
        # On a few bytes a UTF-16 guess is noise: latin-1 'caf\xe9' comes back as two CJK
        # characters. (BOM-less UTF-16 of non-Latin text may have no NULs and get here.)
        matches = [m for m in matches if not m.encoding.startswith(_WIDE)]
    if not matches:
        return None
    best = min(match.chaos for match in matches)
    for match in matches:
        if match.chaos <= best + _PREFERENCE_MARGIN and (
            _PREFERRED_LEGACY in match.could_be_from_charset
        ):
            return _PREFERRED_LEGACY
    return matches[0].encoding


def _bad_share(text: str) -> float:
    sample = text[:_SAMPLE_CHARS]
    if not sample:
        return 0.0
    return len(_BAD_CHARS.findall(sample)) / len(sample)
