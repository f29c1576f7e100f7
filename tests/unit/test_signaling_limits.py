"""The token bucket behind the message rate limit, and the limits' option checks."""

import pytest

from sfu.config import Config, ConfigError
from sfu.signaling.limits import TokenBucket


def test_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket.full(rate_per_s=4, burst=5, now_s=100.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(100.125) is False  # half a token
    assert bucket.take(100.25) is True
    assert [bucket.take(200.0) for _ in range(6)] == [True] * 5 + [False], "never more than the burst saved up"


def test_bucket_ignores_a_clock_that_goes_back():
    bucket = TokenBucket.full(rate_per_s=1, burst=1, now_s=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert bucket.take(11.0)


@pytest.mark.parametrize(
    "options",
    [
        {"max_connections": 0},
        {"max_connections_per_address": 0},
        {"join_timeout_s": 0},
        {"messages_per_s": 0},
        {"message_burst": 0},
        {"max_queued_bytes": 1000},
    ],
)
def test_limits_must_be_sensible(options):
    with pytest.raises(ConfigError):
        Config(**options).validate()
