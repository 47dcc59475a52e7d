import pytest

from spacy_uniner.teacher.limiter import RateLimiter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def simulate(limiter, clock, n, tokens=0.0):
    """Each caller sleeps what it is told; RETURNS send times."""
    sends = []
    for _ in range(n):
        wait = limiter.reserve(tokens)
        sends.append(clock.now + wait)
    return sends


def test_requests_per_minute_is_held():
    clock = Clock()
    limiter = RateLimiter(rpm=600, clock=clock)  # 10 per second, no burst
    sends = simulate(limiter, clock, 101)
    # 101 requests at once: the first goes now, the rest 0.1 s apart.
    assert sends[0] == 0 and sends[1] == pytest.approx(0.1)
    assert sends[-1] == pytest.approx(10.0)
    for start in range(len(sends)):
        window = [t for t in sends if sends[start] <= t < sends[start] + 5.0]
        assert len(window) <= 1 + 50
    bursty = RateLimiter(rpm=600, clock=clock, request_burst=5)
    assert simulate(bursty, clock, 6)[4] == 0


def test_tokens_per_minute_is_held_and_settled():
    clock = Clock()
    limiter = RateLimiter(tpm=6000, clock=clock)  # 100 tokens/s, burst 100
    assert limiter.reserve(100) == 0
    assert limiter.reserve(100) == pytest.approx(1.0)
    limiter.settle(estimated=100, actual=0)  # the reply used nothing: refund
    assert limiter.reserve(50) == pytest.approx(0.5)


def test_unlimited_and_validation():
    assert RateLimiter().reserve(10_000) == 0
    with pytest.raises(ValueError, match="rpm"):
        RateLimiter(rpm=0)
