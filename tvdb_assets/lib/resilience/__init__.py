"""Resilience primitives for the real API clients: rate limit, retries, circuit breaker.

Pure Python (no Dagster, no network), with injectable clocks and sleeps for tests. A real
client composes them per logical call, outermost first:

    with breaker.guard():                      # refuse at once while the service is down
        result = call_with_retries(            # the only retry layer (SDK retries off)
            lambda: (limiter.acquire(tokens), send())[1],  # each attempt waits its turn
        )

so every attempt, retries included, is counted by the rate limiter, and the breaker sees
one outcome per logical call.
"""

from tvdb_assets.lib.resilience.circuit import CircuitBreaker, outcome_of
from tvdb_assets.lib.resilience.ratelimit import RateLimiter
from tvdb_assets.lib.resilience.retry import (
    call_with_retries,
    classify_http,
    is_retryable,
    parse_retry_after,
)

__all__ = [
    "CircuitBreaker",
    "RateLimiter",
    "call_with_retries",
    "classify_http",
    "is_retryable",
    "outcome_of",
    "parse_retry_after",
]
