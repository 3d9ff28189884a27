"""Rate limits and quotas per (agent, user, capability): fixed windows, counted atomically.

Two counters per triple: calls in the current clock minute (``Capability.rate_limit_per_minute``) and in
the current UTC day (``Capability.daily_quota``).  A call is counted only when it passes both, so refused
calls consume nothing; at a window's boundary exactly ``limit`` concurrent calls pass, whatever the number
of processes.  A refusal carries ``retry_after``: whole seconds until the full window ends (fixed windows
let up to twice the limit through around a boundary, the documented price of one round trip per call).

With ``GATEHOUSE_RATE_LIMIT_REDIS_URL`` (default: ``REDIS_URL``), both counters are checked and counted by
one Lua script, atomic in Redis, with a short socket timeout; a Redis that does not answer raises
:class:`LimiterUnavailable` (the decision is then ``unavailable``: fail closed).  Without it (the default
run) Django's cache counts with ``incr``, atomic inside one process only: several processes on local
memory each count alone.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
from django.core.cache import cache
from redis.backoff import NoBackoff
from redis.retry import Retry

from governance.conf import gatehouse_settings

log = logging.getLogger(__name__)

MINUTE = 60
DAY = 86400
KEY_PREFIX = "gh:limit:"

# KEYS: minute counter, day counter.  ARGV: minute limit, minute ttl (ms), day limit, day ttl (ms); a limit
# of -1 means none.  Answers {0, 0} when counted, {1, 0} when the minute is full, {2, 0} when the day is.
_SCRIPT = """
local minute_limit, day_limit = tonumber(ARGV[1]), tonumber(ARGV[3])
if minute_limit >= 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= minute_limit then
  return {1, 0}
end
if day_limit >= 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= day_limit then
  return {2, 0}
end
if minute_limit >= 0 then
  redis.call('SET', KEYS[1], 0, 'PX', ARGV[2], 'NX')
  redis.call('INCR', KEYS[1])
end
if day_limit >= 0 then
  redis.call('SET', KEYS[2], 0, 'PX', ARGV[4], 'NX')
  redis.call('INCR', KEYS[2])
end
return {0, 0}
"""


class LimiterUnavailable(Exception):
    """The counters could not be read or written in bounded time."""


@dataclass(frozen=True)
class Limited:
    """A refused call: ``reason`` is ``rate_limited`` or ``quota_exceeded``; ``retry_after`` in seconds."""

    reason: str
    retry_after: int


@dataclass(frozen=True)
class Windows:
    """The current minute and day windows at ``now`` and their keys for one (agent, user, capability)."""

    minute_key: str
    day_key: str
    minute_left: float
    day_left: float

    @classmethod
    def at(cls, now: float, *, agent_id: int, user_id: int | None, capability_id: int) -> Windows:
        base = f"{KEY_PREFIX}{agent_id}:{user_id or 0}:{capability_id}"
        minute, day = int(now // MINUTE), int(now // DAY)
        return cls(
            minute_key=f"{base}:m{minute}",
            day_key=f"{base}:d{day}",
            minute_left=(minute + 1) * MINUTE - now,
            day_left=(day + 1) * DAY - now,
        )

    def refusal(self, which: int) -> Limited:
        if which == 1:
            return Limited("rate_limited", max(1, math.ceil(self.minute_left)))
        return Limited("quota_exceeded", max(1, math.ceil(self.day_left)))


_clients: dict[tuple[str, float], redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_client(url: str, timeout: float) -> redis.Redis:
    """One client (and connection pool) per URL and timeout; no retries, so a timeout is one timeout."""
    key = (url, timeout)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    retry=Retry(NoBackoff(), 0),
                    health_check_interval=0,
                )
                client.gatehouse_script = client.register_script(_SCRIPT)
                _clients[key] = client
    return client


def count_in_redis(
    client: redis.Redis, windows: Windows, *, per_minute: int | None, per_day: int | None
) -> Limited | None:
    """Check and count one call in Redis (one round trip); raise :class:`LimiterUnavailable` on failure."""
    args = [
        -1 if per_minute is None else per_minute,
        int((windows.minute_left + 5) * 1000),
        -1 if per_day is None else per_day,
        int((windows.day_left + 5) * 1000),
    ]
    try:
        which, _ = client.gatehouse_script(keys=[windows.minute_key, windows.day_key], args=args)
    except redis.RedisError as exc:
        log.warning("rate-limit store unavailable (%s); call refused", type(exc).__name__)
        raise LimiterUnavailable from None
    return None if which == 0 else windows.refusal(int(which))


def _count_in_cache(windows: Windows, *, per_minute: int | None, per_day: int | None) -> Limited | None:
    counted: list[str] = []
    for which, key, limit, ttl in (
        (1, windows.minute_key, per_minute, windows.minute_left),
        (2, windows.day_key, per_day, windows.day_left),
    ):
        if limit is None:
            continue
        cache.add(key, 0, timeout=math.ceil(ttl) + 5)
        try:
            value = cache.incr(key)
        except ValueError:  # expired between add and incr: a new window
            cache.add(key, 0, timeout=math.ceil(ttl) + 5)
            value = cache.incr(key)
        counted.append(key)
        if value > limit:
            for done in counted:
                cache.decr(done)
            return windows.refusal(which)
    return None


def consume(*, agent_id: int, user_id: int | None, capability, now: float | None = None) -> Limited | None:
    """Count one call of ``capability`` by the agent for the user; a :class:`Limited` when over a limit."""
    per_minute, per_day = capability.rate_limit_per_minute, capability.daily_quota
    if per_minute is None and per_day is None:
        return None
    windows = Windows.at(
        time.time() if now is None else now,
        agent_id=agent_id,
        user_id=user_id,
        capability_id=capability.pk,
    )
    url = gatehouse_settings.RATE_LIMIT_REDIS_URL
    if url:
        client = redis_client(url, gatehouse_settings.DECISION_STORE_TIMEOUT_SECONDS)
        return count_in_redis(client, windows, per_minute=per_minute, per_day=per_day)
    return _count_in_cache(windows, per_minute=per_minute, per_day=per_day)
