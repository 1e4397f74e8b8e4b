"""How a delivery proves who sent it: an HMAC-SHA256 under a shared secret, compared in
constant time (`hmac.compare_digest`).

- Upload notices (our contract): `X-TVDB-Signature: t=<unix seconds>,v1=<hex>`, the HMAC
  of `"<t>.<raw body>"`, accepted within 5 minutes of `t` either way. Several `v1` entries
  may come (a sender rotating its secret signs with both); one match is enough.
- LlamaCloud's job events, as its SDK documents `webhook_signing_secret` (llama-cloud
  2.19, `WebhookConfiguration`): `LC-Signature: sha256=<hex>`, the HMAC of the raw body.
  Nothing else is signed: no timestamp, no delivery id, so staleness cannot be told from
  the signature (see receiver.py for how replays are refused all the same).
"""

import hashlib
import hmac
import re

UPLOAD_HEADER = "X-TVDB-Signature"
LLAMACLOUD_HEADER = "LC-Signature"
TOLERANCE_SECONDS = 300
MIN_SECRET_CHARS = 16

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MAX_HEADER_CHARS = 1024  # a handful of signatures; anything longer is not one
_MAX_TIMESTAMP_DIGITS = 12


class SignatureError(Exception):
    """A delivery not signed as it must be. The message says what is wrong with it, never
    what was expected."""


def sign_upload(secret: str, body: bytes, timestamp: int) -> str:
    """The `X-TVDB-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_hex_hmac(secret, _upload_message(timestamp, body))}"


def verify_upload(secret: str, header: str | None, body: bytes, now: float) -> int:
    """The signed timestamp of a genuine upload notice sent within the tolerance of `now`.

    The signature is checked before the time: a forged notice is told it is forged, not
    that it is late.
    """
    if not header:
        raise SignatureError(f"missing {UPLOAD_HEADER} header")
    timestamp, signatures = _parse_upload_header(header)
    expected = _hex_hmac(secret, _upload_message(timestamp, body))
    # Every entry is compared, a match or not, so the time taken says nothing of which.
    matches = [hmac.compare_digest(expected, given) for given in signatures]
    if not any(matches):
        raise SignatureError("signature does not match")
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError(f"timestamp outside the {TOLERANCE_SECONDS // 60}-minute tolerance")
    return timestamp


def sign_llamacloud(secret: str, body: bytes) -> str:
    """The `LC-Signature` value LlamaCloud sends with `body`."""
    return f"sha256={_hex_hmac(secret, body)}"


def verify_llamacloud(secret: str, header: str | None, body: bytes) -> None:
    """Raise SignatureError unless `header` is LlamaCloud's signature of `body`."""
    if not header:
        raise SignatureError(f"missing {LLAMACLOUD_HEADER} header")
    scheme, sep, given = header.strip().partition("=")
    if sep != "=" or scheme.lower() != "sha256" or not _HEX_SHA256.fullmatch(given):
        raise SignatureError(f"malformed {LLAMACLOUD_HEADER} header (want sha256=<hex>)")
    if not hmac.compare_digest(_hex_hmac(secret, body), given.lower()):
        raise SignatureError("signature does not match")


def weak_secret(variable: str, value: str | None) -> str | None:
    """Why a signing secret will not do (None: it will)."""
    if not value:
        return f"{variable} is not set"
    if len(value) < MIN_SECRET_CHARS:
        return f"{variable} is too short (at least {MIN_SECRET_CHARS} characters)"
    return None


def _upload_message(timestamp: int, body: bytes) -> bytes:
    return b"%d." % timestamp + body


def _hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _parse_upload_header(header: str) -> tuple[int, list[str]]:
    malformed = SignatureError(
        f"malformed {UPLOAD_HEADER} header (want t=<unix seconds>,v1=<hex HMAC-SHA256>)"
    )
    if len(header) > _MAX_HEADER_CHARS:
        raise malformed
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep != "=":
            raise malformed
        if name == "t":
            # ASCII digits only: str.isdigit() also takes other scripts' digits.
            digits = value.isascii() and value.isdigit()
            if timestamp is not None or not digits or len(value) > _MAX_TIMESTAMP_DIGITS:
                raise malformed
            timestamp = int(value)
        elif name == "v1":
            if not _HEX_SHA256.fullmatch(value):
                raise malformed
            signatures.append(value.lower())
        # Other schemes a newer sender may add beside v1 are left alone.
    if timestamp is None or not signatures:
        raise malformed
    return timestamp, signatures
