"""Run in separate processes by the rate-limit tests: count calls against one Redis window, report answers.

Imports only the limiter (no Django settings): each process has its own client and connection pool.
"""

from __future__ import annotations

from governance.enforcement.limits import Windows, count_in_redis, redis_client


def hammer(
    url: str, now: float, capability_id: int, calls: int, per_minute: int, per_day: int | None
) -> list:
    client = redis_client(url, 2.0)
    windows = Windows.at(now, agent_id=1, user_id=2, capability_id=capability_id)
    answers = []
    for _ in range(calls):
        limited = count_in_redis(client, windows, per_minute=per_minute, per_day=per_day)
        answers.append(None if limited is None else (limited.reason, limited.retry_after))
    return answers
