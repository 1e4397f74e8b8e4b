"""What a signed delivery says, read from bytes that are checked before they are trusted:
an upload notice or a LlamaParse job event. Anything else is a BadPayload whose message
says what is wrong, without quoting what was sent."""

import json
import re
from dataclasses import dataclass

UPLOAD_EVENTS = ("created", "updated", "deleted")
# S3's own limit on an object key; bucket names are shorter everywhere (AWS: 63).
MAX_KEY_BYTES = 1024
MAX_BUCKET_BYTES = 255
MAX_ETAG_BYTES = 256
_EVENT_TYPE = re.compile(r"[a-z][a-z_]{0,30}\.[a-z][a-z_]{0,30}")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


class BadPayload(Exception):
    """A signed body that is not the shape its route takes."""


@dataclass(frozen=True, slots=True)
class UploadNotice:
    event: str  # created | updated | deleted
    bucket: str
    key: str
    etag: str | None  # a deleted object may have none


@dataclass(frozen=True, slots=True)
class ParseEvent:
    event: str  # parse.success, parse.error, ...
    job_id: str


def upload_notice(body: bytes) -> UploadNotice:
    """`{"event": "created"|"updated"|"deleted", "bucket": ..., "key": ..., "etag": ...}`;
    other members are ignored, so a sender may add some."""
    data = _json(body)
    if not isinstance(data, dict):
        raise BadPayload("body must be a JSON object")
    event = data.get("event")
    if event not in UPLOAD_EVENTS:
        raise BadPayload(f"event must be one of {', '.join(UPLOAD_EVENTS)}")
    etag = data.get("etag")
    return UploadNotice(
        event=event,
        bucket=_text("bucket", data.get("bucket"), MAX_BUCKET_BYTES),
        key=_text("key", data.get("key"), MAX_KEY_BYTES),
        etag=None if etag is None else _text("etag", etag, MAX_ETAG_BYTES),
    )


def parse_event(body: bytes) -> ParseEvent:
    """A LlamaCloud job event: its type and the job it is about.

    The SDK documents the events (`parse.success`, `parse.error`, `parse.partial_success`,
    `parse.pending`, `parse.running`, `parse.cancelled`) but not the body's members, so the
    type is read from `event_type` (or `event`) and the job from `data.job_id`, `job_id`
    or `data.id`. With `webhook_output_format: "string"` (the service's default) the body
    is the payload encoded as a JSON string; it is decoded once more.
    """
    data = _json(body)
    if isinstance(data, str):
        data = _json(_utf8("body", data))
    if not isinstance(data, dict):
        raise BadPayload("body must be a JSON object")
    inner = data.get("data")
    inner = inner if isinstance(inner, dict) else {}
    event = _first(data.get("event_type"), data.get("event"))
    if not isinstance(event, str) or not _EVENT_TYPE.fullmatch(event):
        raise BadPayload("event_type must name an event such as parse.success")
    job_id = _first(inner.get("job_id"), data.get("job_id"), inner.get("id"))
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise BadPayload("no job id (data.job_id)")
    return ParseEvent(event, job_id)


def _json(body: bytes) -> object:
    try:
        text = body.decode("utf-8")  # JSON between systems is UTF-8 (RFC 8259)
    except UnicodeDecodeError:
        raise BadPayload("body is not UTF-8") from None
    try:
        return json.loads(text)
    except RecursionError:  # nesting deeper than the parser's stack
        raise BadPayload("body is nested too deeply") from None
    except ValueError:
        raise BadPayload("body is not valid JSON") from None


def _text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise BadPayload(f"{name} must be a non-empty string")
    if len(_utf8(name, value)) > limit:
        raise BadPayload(f"{name} is longer than {limit} bytes")
    if "\x00" in value:
        raise BadPayload(f"{name} contains a NUL character")
    return value


def _utf8(name: str, value: str) -> bytes:
    """JSON's \\ud800-style escapes can spell lone surrogates, which no UTF-8 (and no
    Postgres text) can hold."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPayload(f"{name} is not valid Unicode (a lone surrogate)") from None


def _first(*values: object) -> object:
    return next((v for v in values if v is not None), None)
