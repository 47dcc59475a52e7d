"""One rate limit (requests and tokens per minute) shared by every worker.

:class:`RateLimiter` is a reservation token bucket: a caller reserves one
request and an estimate of its tokens and is told how long to wait before
sending; the bucket may go negative, so callers queue fairly in arrival order
instead of polling. Requests are paced without a burst (``request_burst=1``),
so any window of T seconds holds at most ``1 + T * rpm / 60`` requests; the
token bucket holds one second's worth of tokens (a request may be large).
After the reply, :meth:`settle` corrects the token estimate with the usage the
API reported.

On Ray, one limiter lives in an actor (:func:`limiter_actor`) and each worker
calls it before *every* HTTP attempt, retries included.
"""

import threading
import time
from typing import Callable, Dict, Optional


class _Bucket:
    def __init__(self, per_minute: float, capacity: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, capacity)
        self.level = self.capacity
        self.stamp = now

    def reserve(self, amount: float, now: float) -> float:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        # A single request larger than the burst must still be allowed through.
        self.level -= min(amount, self.capacity)
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def refund(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits; ``None`` means unlimited."""

    def __init__(
        self,
        rpm: Optional[float] = None,
        tpm: Optional[float] = None,
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        request_burst: int = 1,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None (unlimited); got {value}")
        self._clock = clock
        now = clock()
        self._requests = _Bucket(rpm, request_burst, now) if rpm else None
        self._tokens = _Bucket(tpm, tpm / 60.0 * burst_seconds, now) if tpm else None
        self._request_burst = request_burst
        self._lock = threading.Lock()
        self.reserved_requests = 0
        self.reserved_tokens = 0.0

    def configure(
        self, rpm: Optional[float], tpm: Optional[float], burst_seconds: float = 1.0
    ) -> None:
        """Start over with new limits (a pooled limiter serving a new run)."""
        self.__init__(
            rpm=rpm,
            tpm=tpm,
            burst_seconds=burst_seconds,
            clock=self._clock,
            request_burst=self._request_burst,
        )

    def reserve(self, tokens: float = 0.0) -> float:
        """Reserve one request of ``tokens`` tokens; RETURNS the seconds to wait before sending."""
        with self._lock:
            now = self._clock()
            wait = 0.0
            if self._requests is not None:
                wait = max(wait, self._requests.reserve(1.0, now))
            if self._tokens is not None and tokens > 0:
                wait = max(wait, self._tokens.reserve(tokens, now))
            self.reserved_requests += 1
            self.reserved_tokens += tokens
            return wait

    def settle(self, estimated: float, actual: float) -> None:
        """Correct a reservation of ``estimated`` tokens with the ``actual`` usage."""
        if self._tokens is None:
            return
        with self._lock:
            now = self._clock()
            difference = actual - estimated
            if difference > 0:
                self._tokens.reserve(difference, now)
            elif difference < 0:
                self._tokens.refund(-difference)
            self.reserved_tokens += difference

    def snapshot(self) -> Dict[str, float]:
        return {"requests": self.reserved_requests, "tokens": self.reserved_tokens}


def limiter_actor(rpm: Optional[float], tpm: Optional[float], burst_seconds: float = 1.0):
    """A Ray actor holding the one :class:`RateLimiter` of a run."""
    import ray

    actor_class = ray.remote(num_cpus=0, max_concurrency=64)(RateLimiter)
    return actor_class.remote(rpm=rpm, tpm=tpm, burst_seconds=burst_seconds)
