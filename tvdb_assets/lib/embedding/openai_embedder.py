"""OpenAI embeddings through the official SDK, behind our rate limit, breaker and budget.

The SDK runs with `max_retries=0`: `call_with_retries` is the one retry layer (honouring
Retry-After), so attempts never multiply.
"""

import logging
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import openai

from tvdb_assets.lib.costs import prices
from tvdb_assets.lib.costs.calls import CallContext
from tvdb_assets.lib.costs.ledger import Ledger
from tvdb_assets.lib.embedding.base import Embedder, InputRejected
from tvdb_assets.lib.errors import ServiceError
from tvdb_assets.lib.resilience import CircuitBreaker, RateLimiter, call_with_retries
from tvdb_assets.lib.resilience.retry import classify_http
from tvdb_assets.lib.services import ServiceClient
from tvdb_assets.lib.tokens import count_tokens

SERVICE = "openai"
CORRELATION_HEADER = "X-Correlation-Id"
log = logging.getLogger(__name__)

# Dimensions each model returns when not asked for fewer.
NATIVE_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}


class OpenAIEmbedder(ServiceClient, Embedder):
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "text-embedding-3-small",
        dims: int = 1536,
        timeout: float = 30.0,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
        ledger: Ledger | None,
        call: CallContext | None = None,
        attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        ServiceClient.__init__(
            self, breaker=breaker, ledger=ledger, call=call, attempts=attempts, sleep=sleep
        )
        Embedder.__init__(self)
        self.model = model
        self.dims = dims
        self.limiter = limiter
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout
        )
        # Keep requests under the TPM limit, or the limiter could never let one through.
        if limiter.tokens_per_minute is not None:
            self.max_tokens_per_request = min(
                self.max_tokens_per_request, limiter.tokens_per_minute
            )

    def _embed_batch(self, texts: list[str]) -> npt.NDArray[np.floating]:
        tokens = sum(count_tokens(t, self.encoding) for t in texts)
        call = self.call.child()
        with self.breaker.guard():
            response = self._send(texts, tokens, call)
        ordered = sorted(response.data, key=lambda item: item.index)
        return np.asarray([item.embedding for item in ordered], dtype=np.float32)

    def _send(
        self, texts: list[str], tokens: int, call: CallContext
    ) -> openai.types.CreateEmbeddingResponse:
        estimate = prices.price(SERVICE, self.model, tokens)

        def attempt() -> openai.types.CreateEmbeddingResponse:
            # Every HTTP attempt is a billable call of its own.
            with self.limiter.hold(tokens):
                return self._paid(estimate, call, lambda: self._request(texts, call), self._billed)

        def on_retry(number: int, error: BaseException, wait: float) -> None:
            log.warning(
                "[%s] %s attempt %d failed (%s); retrying in %.1f s",
                call.correlation_id, SERVICE, number, error, wait,
            )  # fmt: skip

        return call_with_retries(
            attempt, attempts=self.attempts, sleep=self._sleep, on_retry=on_retry
        )

    def _billed(self, response: openai.types.CreateEmbeddingResponse) -> prices.Charge:
        return prices.price(SERVICE, self.model, response.usage.prompt_tokens)

    def _request(self, texts: list[str], call: CallContext) -> openai.types.CreateEmbeddingResponse:
        extra = {"dimensions": self.dims} if self.dims != NATIVE_DIMS.get(self.model) else {}
        try:
            return self._client.embeddings.create(
                model=self.model,
                input=texts,
                extra_headers={CORRELATION_HEADER: call.correlation_id},
                **extra,  # type: ignore[arg-type]
            )
        except openai.APITimeoutError:
            # The service may well have done (and billed) the work after we stopped waiting.
            raise classify_http(
                SERVICE, None, "request timed out", None, timeout=True, maybe_billed=True
            ) from None
        except openai.APIConnectionError:
            raise classify_http(SERVICE, None, "connection failed", None, connection=True) from None
        except openai.APIStatusError as exc:
            message = _message(exc)
            if exc.status_code == 400:
                raise InputRejected(SERVICE, message) from None
            raise _classified(exc, message) from None


def _message(exc: openai.APIStatusError) -> str:
    """The service's own words, without anything that could echo a credential."""
    if exc.status_code in (401, 403):
        # OpenAI's message quotes part of the key it was given.
        return f"HTTP {exc.status_code}: authentication failed (check OPENAI_API_KEY)"
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    text = error.get("message") if isinstance(error, dict) else None
    return f"HTTP {exc.status_code}: {text or exc.__class__.__name__}"


def _classified(exc: openai.APIStatusError, message: str) -> ServiceError:
    return classify_http(SERVICE, exc.status_code, message, dict(exc.response.headers))
