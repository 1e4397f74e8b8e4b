"""Fault injection shared by the fake servers.

A `Fault` describes one misbehaving answer. `FaultPlan` holds what a fake should do next: a
FIFO script of faults (one consumed per matching request) and an optional outage that fails
every request until `recover()`. Handler threads and the test thread touch it concurrently,
so every access goes through one lock.
"""

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected misbehaviour, applied to a single request.

    status:         HTTP status to answer with; None answers normally (after `delay`).
    retry_after:    seconds for a `Retry-After` header (floats allowed; the openai SDK reads them).
    retry_after_ms: milliseconds for a `retry-after-ms` header (openai SDK prefers it).
    delay:          seconds to sleep before answering: longer than the client timeout means the
                    client sees a timeout, whatever `status` says.
    message:        error message in the body; a per-status default otherwise.
    code:           error code in the body (e.g. "insufficient_quota"); a default otherwise.
    headers:        extra response headers (e.g. {"x-should-retry": "false"}).
    disconnect:     close the connection without answering (client sees a protocol error).
    """

    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    delay: float = 0.0
    message: str | None = None
    code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    disconnect: bool = False

    def response_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if self.retry_after is not None:
            out["Retry-After"] = _seconds(self.retry_after)
        if self.retry_after_ms is not None:
            out["retry-after-ms"] = str(self.retry_after_ms)
        return out


def _seconds(value: float) -> str:
    # "2" rather than "2.0" for whole seconds: that is what real servers send.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class FaultPlan:
    """Scripted faults per route plus an outage switch; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Fault]] = {}
        self._outage: Fault | None = None

    def script(self, faults: Iterable[Fault], route: str = "default") -> None:
        """Queue `faults` (appended to anything still queued) for requests on `route`."""
        items = list(faults)
        for fault in items:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault, got {type(fault).__name__}")
        with self._lock:
            self._scripts.setdefault(route, deque()).extend(items)

    def next_scripted(self, route: str = "default") -> Fault | None:
        """Pop the next scripted fault for `route`, if any."""
        with self._lock:
            queue = self._scripts.get(route)
            return queue.popleft() if queue else None

    def pending(self, route: str | None = None) -> int:
        """Scripted faults not yet consumed (on `route`, or on all routes)."""
        with self._lock:
            if route is not None:
                return len(self._scripts.get(route, ()))
            return sum(len(queue) for queue in self._scripts.values())

    def clear(self) -> None:
        """Drop every scripted fault and end any outage."""
        with self._lock:
            self._scripts.clear()
            self._outage = None

    def outage(self, fault: Fault) -> None:
        with self._lock:
            self._outage = fault

    def recover(self) -> None:
        with self._lock:
            self._outage = None

    def current_outage(self) -> Fault | None:
        with self._lock:
            return self._outage
