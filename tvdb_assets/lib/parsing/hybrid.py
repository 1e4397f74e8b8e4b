"""Hybrid parsing: the service first, the local parser where the service cannot answer."""

from dataclasses import replace

from tvdb_assets.lib.errors import BudgetExceeded, ServiceError
from tvdb_assets.lib.models import ParsedDocument
from tvdb_assets.lib.parsing.base import Parser
from tvdb_assets.lib.resilience import CircuitBreaker


class HybridParser(Parser):
    """Falls back (flagged) on an outage, open circuit, spent retries, budget or missing key.

    A document the service reads and rejects (a failed job) is not an outage: its error
    stands, as it would in real mode.
    """

    def __init__(self, real: Parser, local: Parser) -> None:
        self.real = real
        self.local = local
        self.name = real.name
        # Its service results are worth caching as the service's own; fallbacks never are.
        self.cacheable = real.cacheable
        self.concurrency = real.concurrency

    def circuit(self) -> CircuitBreaker | None:
        return self.real.circuit()

    def close(self) -> None:
        self.real.close()
        self.local.close()

    def parse(self, path: str, data: bytes) -> ParsedDocument:
        try:
            return self.real.parse(path, data)
        except (ServiceError, BudgetExceeded) as exc:
            return replace(self.local.parse(path, data), fallback=True, fallback_reason=str(exc))


class UnavailableParser(Parser):
    """Stands in for a service that cannot be reached at all (e.g. no API key)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def parse(self, path: str, data: bytes) -> ParsedDocument:
        raise ServiceError(self.name, self.reason, retryable=False)
