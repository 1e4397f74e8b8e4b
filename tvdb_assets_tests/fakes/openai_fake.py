"""FakeOpenAI: the embeddings endpoint as the official `openai` SDK calls it.

`POST {base_url}/embeddings` with base_url "http://127.0.0.1:PORT/v1". The SDK sends
`encoding_format: "base64"` unless the caller picks one and decodes little-endian float32, so
both formats are served. The real API's limits are enforced (2048 inputs, 8192 tokens per
input, 300,000 tokens per request, no empty strings) and every request is recorded, so tests
can assert that a cost ledger equals what this fake billed, to the token.

Vectors are deterministic: a hash of (model, text) seeds a normal draw of the model's native
width, truncated to `dimensions` and normalised (how text-embedding-3 shortening works).
`vector_for()` gives tests the exact float32 values the SDK will return.
"""

import base64
import hashlib
import math
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tvdb_assets.lib.tokens import count_tokens, get_encoding
from tvdb_assets_tests.fakes.faults import Fault
from tvdb_assets_tests.fakes.server import FakeServer, Request, Response

DEFAULT_API_KEY = "sk-fake-test-key"
DEFAULT_MODEL = "text-embedding-3-small"
# Native output widths; only text-embedding-3 models accept `dimensions`.
MODEL_DIMS: Mapping[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_SHORTENABLE = frozenset({"text-embedding-3-small", "text-embedding-3-large"})
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
EMBEDDINGS_PATH = "/v1/embeddings"

# type, code, message used when a Fault gives none; mirrors what the real API sends.
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request (injected fault)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", None, "Not found."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (injected fault)."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """One request the fake received (whatever its outcome)."""

    time: float  # wall clock at arrival
    status: int  # what the fake answered (200 even if the client timed out first)
    outcome: str  # ok | fault | outage | auth | invalid | rejected | rate_limited | not_found
    model: str | None
    dims: int | None  # output width served (None unless parsed)
    n_inputs: int
    tokens: int  # prompt tokens counted; billed only when status == 200
    encoding_format: str | None
    headers: dict[str, str]  # request headers, lower-cased, minus authorization
    request_id: str  # the x-request-id the fake answered with
    error: str | None
    inputs: tuple[str | tuple[int, ...], ...]

    @property
    def billed_tokens(self) -> int:
        return self.tokens if self.status == 200 else 0


class _Invalid(Exception):
    """A request the real API answers with 400/404."""

    def __init__(
        self, message: str, *, status: int = 400, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


@dataclass(frozen=True, slots=True)
class _Parsed:
    model: str
    dims: int
    native: int
    encoding_format: str
    inputs: list[str | tuple[int, ...]]
    texts: list[str]  # inputs as text (token arrays decoded), used to seed vectors
    tokens: list[int]


def embedding_vector(model: str, text: str, dims: int, native: int) -> np.ndarray:
    """The fake's float32 vector for `text` (unit length)."""
    digest = hashlib.blake2b(f"{model}\0{text}".encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    vec = rng.standard_normal(native)[:dims]
    return (vec / np.linalg.norm(vec)).astype(np.float32)


class FakeOpenAI(FakeServer):
    """Loopback stand-in for the OpenAI embeddings API.

    tpm_limit / rpm_limit: optional server-side rate limits over a sliding window of
    `window_seconds` (60 like the real API; shorten it in tests) counting successful requests.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        tpm_limit: int | None = None,
        rpm_limit: int | None = None,
        window_seconds: float = 60.0,
        models: Mapping[str, int] = MODEL_DIMS,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.tpm_limit = tpm_limit
        self.rpm_limit = rpm_limit
        self.window_seconds = window_seconds
        self.models = dict(models)
        self._lock = threading.Lock()
        self._records: list[EmbeddingRequest] = []
        self._window: deque[tuple[float, int]] = deque()  # (time, tokens) of successes
        self._over_limit = 0
        self._rejections: set[str] = set()

    # --- what tests read -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Pass as `openai.OpenAI(base_url=...)`."""
        return f"{self.root_url}/v1"

    def env(self) -> dict[str, str]:
        """Environment variables that point the openai SDK here."""
        return {"OPENAI_API_KEY": self.api_key, "OPENAI_BASE_URL": self.base_url}

    @property
    def requests(self) -> list[EmbeddingRequest]:
        with self._lock:
            return list(self._records)

    @property
    def successful_requests(self) -> list[EmbeddingRequest]:
        return [r for r in self.requests if r.status == 200]

    @property
    def billed_tokens(self) -> int:
        """Sum of usage.prompt_tokens over the 200 answers."""
        return sum(r.billed_tokens for r in self.requests)

    @property
    def over_limit_requests(self) -> int:
        """Requests refused with 429 by the tpm/rpm limits."""
        with self._lock:
            return self._over_limit

    @property
    def pending_faults(self) -> int:
        return self.faults.pending()

    def vector_for(
        self, text: str, model: str = DEFAULT_MODEL, dimensions: int | None = None
    ) -> list[float]:
        """Exactly the floats the SDK returns for `text` (either encoding format)."""
        native = self.models[model]
        return embedding_vector(model, text, dimensions or native, native).tolist()

    # --- fault injection -------------------------------------------------------------

    def script(self, faults: Iterable[Fault]) -> None:
        """Queue faults, one consumed per request before normal handling."""
        self.faults.script(faults)

    def reject_inputs_containing(self, substring: str) -> None:
        """Answer 400 to any request with an input containing `substring`."""
        with self._lock:
            self._rejections.add(substring)

    def clear_faults(self) -> None:
        """Drop scripted faults, the outage and input rejections."""
        self.faults.clear()
        with self._lock:
            self._rejections.clear()

    # --- serving ---------------------------------------------------------------------

    def handle(self, request: Request) -> Response | None:
        request_id = f"req_{uuid.uuid4().hex}"
        headers = {"x-request-id": request_id}
        if "x-client-request-id" in request.headers:
            headers["x-client-request-id"] = request.headers["x-client-request-id"]
        record = _RecordBuilder(request, request_id)

        fault = self.faults.next_scripted()
        if fault is not None:
            self.sleep(fault.delay)
            if fault.disconnect:
                self._append(record.done(0, "fault", "disconnected"))
                return None
            if fault.status is not None:
                return self._fault_response(record, fault, headers, "fault")
        outage = self.faults.current_outage()
        if outage is not None:
            return self._fault_response(record, outage, headers, "outage")

        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(
                record,
                headers,
                401,
                "auth",
                "Incorrect API key provided.",
                code="invalid_api_key",
            )
        if request.path.rstrip("/") != EMBEDDINGS_PATH or request.method != "POST":
            message = f"Invalid URL ({request.method} {request.path})"
            return self._error(record, headers, 404, "not_found", message)

        try:
            parsed = self._parse(request)
            record.parsed(parsed)
            self._check_rejections(parsed)
        except _Invalid as exc:
            return self._error(
                record,
                headers,
                exc.status,
                "invalid",
                str(exc),
                code=exc.code,
                param=exc.param,
            )
        except _Rejected as exc:
            return self._error(
                record, headers, 400, "rejected", str(exc), code="invalid_input", param="input"
            )

        total = sum(parsed.tokens)
        refusal = self._admit(request.time, total, parsed.model, headers)
        if refusal is not None:
            self._append(record.done(429, "rate_limited", refusal.message))
            return refusal.response

        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encode(
                    embedding_vector(parsed.model, text, parsed.dims, parsed.native),
                    parsed.encoding_format,
                ),
            }
            for i, text in enumerate(parsed.texts)
        ]
        self._append(record.done(200, "ok", None))
        headers["openai-model"] = parsed.model
        payload = {
            "object": "list",
            "data": data,
            "model": parsed.model,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }
        return Response.of_json(200, payload, headers)

    def _append(self, record: EmbeddingRequest) -> None:
        with self._lock:
            self._records.append(record)

    def _fault_response(
        self, record: "_RecordBuilder", fault: Fault, headers: dict[str, str], outcome: str
    ) -> Response:
        assert fault.status is not None
        headers = {**headers, **fault.response_headers()}
        _, code, message = _ERROR_DEFAULTS.get(fault.status, ("server_error", None, "Error."))
        return self._error(
            record,
            headers,
            fault.status,
            outcome,
            fault.message or message,
            code=fault.code or code,
        )

    def _error(
        self,
        record: "_RecordBuilder",
        headers: dict[str, str],
        status: int,
        outcome: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> Response:
        self._append(record.done(status, outcome, message))
        kind = _ERROR_DEFAULTS.get(status, ("server_error", None, ""))[0]
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return Response.of_json(status, body, headers)

    def _parse(self, request: Request) -> _Parsed:
        try:
            body = request.json()
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Invalid(f"We could not parse the JSON body of your request: {exc}") from exc
        if not isinstance(body, dict):
            raise _Invalid("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Invalid("you must provide a model parameter", param="model")
        native = self.models.get(model)
        if native is None:
            raise _Invalid(
                f"The model `{model}` does not exist or you do not have access to it.",
                status=404,
                code="model_not_found",
            )
        dims = body.get("dimensions")
        if dims is None:
            dims = native
        elif model not in _SHORTENABLE:
            raise _Invalid("This model does not support specifying dimensions.", param="dimensions")
        elif not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= native:
            raise _Invalid(
                f"Invalid value for 'dimensions' = {dims}. Must be between 1 and {native}.",
                param="dimensions",
            )
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise _Invalid(
                f"'{encoding_format}' is not one of ['float', 'base64'] - 'encoding_format'",
                param="encoding_format",
            )
        inputs = _split_inputs(body.get("input"))
        if len(inputs) > MAX_INPUTS:
            raise _Invalid(
                f"Too many inputs: {len(inputs)}. The maximum is {MAX_INPUTS} inputs per request.",
                param="input",
            )
        texts, tokens = _texts_and_tokens(inputs)
        for n in tokens:
            if n > MAX_INPUT_TOKENS:
                raise _Invalid(
                    f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however "
                    f"you requested {n} tokens ({n} in your prompt; 0 for the completion). "
                    "Please reduce your prompt; or completion length.",
                    param="input",
                )
        total = sum(tokens)
        if total > MAX_REQUEST_TOKENS:
            raise _Invalid(
                f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
                code="max_tokens_per_request",
                param="input",
            )
        return _Parsed(model, dims, native, encoding_format, inputs, texts, tokens)

    def _check_rejections(self, parsed: _Parsed) -> None:
        with self._lock:
            rejections = sorted(self._rejections)
        for i, text in enumerate(parsed.texts):
            for needle in rejections:
                if needle in text:
                    raise _Rejected(f"Input {i} was rejected: it contains {needle!r}.")

    def _admit(
        self, now: float, tokens: int, model: str, headers: dict[str, str]
    ) -> "_Refusal | None":
        """Reserve room in the rate-limit window, or build the 429 answer."""
        if self.tpm_limit is None and self.rpm_limit is None:
            return None
        with self._lock:
            horizon = now - self.window_seconds
            while self._window and self._window[0][0] <= horizon:
                self._window.popleft()
            wait, kind, limit, used = self._wait_needed(now, tokens)
            if wait is None:
                self._window.append((now, tokens))
                self._rate_headers(headers)
                return None
            self._over_limit += 1
        retry_headers = {
            **headers,
            "retry-after": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        }
        message = (
            f"Rate limit reached for {model} in organization org-fake on {kind}: "
            f"Limit {limit}, Used {used}, Requested {tokens if 'tokens' in kind else 1}. "
            f"Please try again in {wait:.3f}s."
        )
        body = {
            "error": {
                "message": message,
                "type": "tokens" if "tokens" in kind else "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
        return _Refusal(message, Response.of_json(429, body, retry_headers))

    def _wait_needed(self, now: float, tokens: int) -> tuple[float | None, str, int, int]:
        """Seconds until this request fits the window (None: fits now). Caller holds lock."""
        entries = list(self._window)
        if self.rpm_limit is not None and len(entries) + 1 > self.rpm_limit:
            if self.rpm_limit <= 0:
                return self.window_seconds, "requests per min (RPM)", self.rpm_limit, len(entries)
            # The (len - rpm)-th oldest success must expire before one more fits.
            wait = entries[len(entries) - self.rpm_limit][0] + self.window_seconds - now
            return wait, "requests per min (RPM)", self.rpm_limit, len(entries)
        if self.tpm_limit is not None:
            used = sum(tok for _, tok in entries)
            if used + tokens > self.tpm_limit:
                if tokens > self.tpm_limit:
                    # Never fits; the real API says "Request too large". Wait a full window.
                    return self.window_seconds, "tokens per min (TPM)", self.tpm_limit, used
                remaining = used
                wait = self.window_seconds
                for t, tok in entries:
                    remaining -= tok
                    if remaining + tokens <= self.tpm_limit:
                        wait = t + self.window_seconds - now
                        break
                return wait, "tokens per min (TPM)", self.tpm_limit, used
        return None, "", 0, 0

    def _rate_headers(self, headers: dict[str, str]) -> None:
        # Caller holds the lock; the window already includes the admitted request.
        if self.rpm_limit is not None:
            headers["x-ratelimit-limit-requests"] = str(self.rpm_limit)
            headers["x-ratelimit-remaining-requests"] = str(self.rpm_limit - len(self._window))
        if self.tpm_limit is not None:
            used = sum(tok for _, tok in self._window)
            headers["x-ratelimit-limit-tokens"] = str(self.tpm_limit)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, self.tpm_limit - used))


class _Rejected(Exception):
    """An input matched reject_inputs_containing()."""


@dataclass(frozen=True, slots=True)
class _Refusal:
    message: str
    response: Response


class _RecordBuilder:
    """Collects what is known about a request as handling proceeds."""

    def __init__(self, request: Request, request_id: str) -> None:
        self._request = request
        self._request_id = request_id
        self._parsed: _Parsed | None = None

    def parsed(self, parsed: _Parsed) -> None:
        self._parsed = parsed

    def done(self, status: int, outcome: str, error: str | None) -> EmbeddingRequest:
        p = self._parsed or _peek(self._request)
        return EmbeddingRequest(
            time=self._request.time,
            status=status,
            outcome=outcome,
            model=p.model if p else None,
            dims=p.dims if p else None,
            n_inputs=len(p.inputs) if p else 0,
            tokens=sum(p.tokens) if p else 0,
            encoding_format=p.encoding_format if p else None,
            headers=self._request.recorded_headers(),
            request_id=self._request_id,
            error=error,
            inputs=tuple(p.inputs) if p else (),
        )


def _peek(request: Request) -> _Parsed | None:
    """Best-effort parse of a request that was refused before validation (for the record)."""
    try:
        body = request.json()
        model = str(body.get("model"))
        inputs = _split_inputs(body.get("input"))
        texts, tokens = _texts_and_tokens(inputs)
        dims = body.get("dimensions")
        native = MODEL_DIMS.get(model, 0)
        fmt = body.get("encoding_format") or "float"
        return _Parsed(model, dims or native, native, fmt, inputs, texts, tokens)
    except Exception:
        return None


def _split_inputs(raw: Any) -> list[str | tuple[int, ...]]:
    """`input` as a list of strings or token arrays, validated like the real API."""
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw:
        if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
            items = [tuple(raw)]  # one token array
        else:
            items = raw
    else:
        raise _Invalid(
            "'$.input' is invalid: expected a string or a non-empty array.", param="input"
        )
    out: list[str | tuple[int, ...]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise _Invalid(
                    f"'$.input[{i}]' is invalid: the input cannot be an empty string.",
                    param="input",
                )
            out.append(item)
        elif (
            isinstance(item, list | tuple)
            and item
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in item)
        ):
            out.append(tuple(item))
        else:
            raise _Invalid(f"'$.input[{i}]' is invalid.", param="input")
    return out


def _texts_and_tokens(inputs: list[str | tuple[int, ...]]) -> tuple[list[str], list[int]]:
    texts: list[str] = []
    tokens: list[int] = []
    enc = get_encoding()
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            texts.append(item)
            tokens.append(count_tokens(item))
            continue
        try:
            # Decoding makes a token array embed exactly like the text it encodes.
            texts.append(enc.decode(list(item)))
        except (KeyError, ValueError, OverflowError) as exc:
            raise _Invalid(f"'$.input[{i}]' contains an invalid token id.", param="input") from exc
        tokens.append(len(item))
    return texts, tokens


def _encode(vec: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vec]
