"""Minimal multipart/form-data parsing for the fakes.

The stdlib `cgi` module is gone in 3.13 and the email parser can mangle binary parts, so this
splits on the boundary itself. It only needs to understand what httpx sends.
"""

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class FilePart:
    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Form:
    fields: dict[str, str]
    files: dict[str, FilePart]


def parse_form(content_type: str, body: bytes) -> Form:
    """Parse a multipart/form-data body; raises ValueError when it is not one."""
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/form-data") or match is None:
        raise ValueError(f"not multipart/form-data: {content_type!r}")
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, FilePart] = {}
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break  # the closing delimiter
        head, sep, data = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("multipart part without headers")
        data = data.removesuffix(b"\r\n")
        headers = _headers(head)
        params = dict(_PARAM.findall(headers.get("content-disposition", "")))
        name = _unquote(params.get("name", ""))
        if "filename" in params:
            files[name] = FilePart(
                name, _unquote(params["filename"]), headers.get("content-type"), data
            )
        else:
            fields[name] = data.decode("utf-8", errors="replace")
    return Form(fields, files)


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.decode("utf-8", errors="replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _unquote(value: str) -> str:
    # httpx percent-escapes a double quote in a file name and backslash-escapes backslashes.
    return value.replace("%22", '"').replace("\\\\", "\\")
