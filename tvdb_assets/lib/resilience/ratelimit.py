"""A client-side RPM/TPM limiter, so our own traffic never earns a 429.

Services such as OpenAI limit requests and tokens per minute. Retrying after a 429 works but
wastes calls and time, and repeated 429s can lengthen the penalty. Instead, each request
first asks this limiter for permission, which is granted only when the request fits under
both limits in every sliding 60-second window.

The accounting is exact: every granted request is kept (time, tokens) until it leaves the
window, and a request is granted at time `t` only if the requests granted in `(t - 60, t]`
plus this one stay within both limits. Any 60-second window's last request saw all the
others in that window when it was granted, so no window ever exceeds a limit. This also
keeps a token bucket of the same size (the other common server model) from running dry.

There is no safety margin beyond a millisecond per wait (to step past float rounding), so
steady traffic uses close to the whole limit. Servers that enforce the limit over shorter
periods (e.g. per second) can still refuse a burst; give such a service a lower limit.
"""

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

WINDOW_SECONDS = 60.0

# Added to every computed wait: sleeping exactly to the expiry instant can land a hair short
# of it after float rounding, and the re-check would then sleep again for nothing.
_EPSILON = 1e-3


class RateLimiter:
    """Blocks each request until it fits under requests- and tokens-per-minute limits.

    `None` for a limit means that limit is not enforced. `clock` and `sleep` are injected so
    tests can drive time by hand; `clock` must be monotonic (wall-clock jumps would either
    stall or burst the traffic). Safe to share between threads: the check-and-record step
    is under a lock, the sleeping is not.
    """

    def __init__(
        self,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        window: float = WINDOW_SECONDS,
    ) -> None:
        for name, limit in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if limit is not None and limit <= 0:
                raise ValueError(f"{name} must be positive or None, got {limit}")
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # [grant time, tokens], oldest grant first; `hold` may move a time later.
        self._granted: deque[list[float]] = deque()
        self._tokens_in_window = 0

    def acquire(self, tokens: int = 0) -> float:
        """Wait until a request of `tokens` may be sent, record it, return the seconds waited.

        Raises ValueError when `tokens` alone exceeds the TPM limit: no amount of waiting
        would let it through, so the caller has to split the request.
        """
        return self._grant(tokens)[0]

    @contextlib.contextmanager
    def hold(self, tokens: int = 0) -> Iterator[float]:
        """`acquire`, then count the request from when it completed, not when it was granted.

        A service stamps a request when it arrives, a little after our grant; counted from
        completion (later still), our window can only be stricter than the service's, so a
        request we let through is never over its limit there.
        """
        waited, grant = self._grant(tokens)
        try:
            yield waited
        finally:
            self._completed(grant)

    def _grant(self, tokens: int) -> tuple[float, object]:
        self._check_size(tokens)
        start = self._clock()
        while True:
            wait, grant = self._try_grant(tokens)
            if grant is not None:
                return max(0.0, self._clock() - start), grant
            # Sleep outside the lock so others can be granted or queue up; re-check
            # afterwards because another may have taken the room meanwhile.
            self._sleep(wait + _EPSILON)

    def _try_grant(self, tokens: int) -> tuple[float, object | None]:
        """Record a grant of `tokens` now, and return it; or the seconds to wait first."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            wait = self._wait(self._granted, now, tokens)
            if wait > 0:
                return wait, None
            grant = [now, float(tokens)]
            self._granted.append(grant)
            self._tokens_in_window += tokens
            return 0.0, grant

    def _completed(self, grant: object) -> None:
        assert isinstance(grant, list)
        with self._lock:
            # Only ever later: an entry now out of order just leaves the window later.
            grant[0] = max(grant[0], self._clock())

    def wait_time(self, tokens: int = 0) -> float:
        """Seconds until a request of `tokens` would be granted (0 = now), recording nothing."""
        self._check_size(tokens)
        with self._lock:
            now = self._clock()
            self._expire(now)
            return max(0.0, self._wait(self._granted, now, tokens))

    def usage(self) -> tuple[int, int]:
        """(requests, tokens) granted within the current window, e.g. for status metadata."""
        with self._lock:
            self._expire(self._clock())
            return len(self._granted), self._tokens_in_window

    def _check_size(self, tokens: int) -> None:
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        tpm = self.tokens_per_minute
        if tpm is not None and tokens > tpm:
            raise ValueError(
                f"a single request of {tokens} tokens exceeds the limit of {tpm} tokens per "
                f"minute; split it into requests of at most {tpm} tokens"
            )

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        while self._granted and self._granted[0][0] <= cutoff:
            _, old_tokens = self._granted.popleft()
            self._tokens_in_window -= int(old_tokens)

    def _wait(self, granted: Sequence[Sequence[float]], now: float, tokens: int) -> float:
        """Seconds until enough of the requests `granted` within the window (oldest first:
        time, tokens) leave it for one more of `tokens` (<= 0: none)."""
        wait = 0.0
        rpm = self.requests_per_minute
        if rpm is not None and len(granted) >= rpm:
            # The oldest (count - rpm + 1) requests must leave first.
            expiry = granted[len(granted) - rpm][0] + self.window
            wait = max(wait, expiry - now)
        tpm = self.tokens_per_minute
        if tpm is not None:
            excess = sum(t for _, t in granted) + tokens - tpm
            for granted_at, old_tokens in granted:
                if excess <= 0:
                    break
                excess -= old_tokens
                wait = max(wait, granted_at + self.window - now)
        return wait
