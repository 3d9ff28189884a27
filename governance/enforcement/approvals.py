"""The approvals seam of the user check: which calls need people to agree first, and the single-use token an
approval yields.

* :func:`approval_needed` is the one place that decides "this call waits for approval" (today: the
  capability says so).  The approvals work turns an ``approval_required`` denial into a request.
* Once approved, the agent receives a token whose ``authorization_details`` (RFC 9396) hold the approved
  call as the approvals app writes it (docs/approvals.md): ``{"type": KEY, <parameter>: <value>, ...}``,
  ``type`` the capability key and every other member a parameter.  :func:`approved_entry` finds the entry
  matching this exact call (same capability, the same parameters and no others, equal as JSON values,
  type-strict), and :func:`consume` lets each entry pass once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import redis
from django.core.cache import cache
from django.utils.module_loading import import_string

from governance.conf import gatehouse_settings
from governance.enforcement.limits import LimiterUnavailable, redis_client

log = logging.getLogger(__name__)

MAX_ENTRIES = 16


def approval_needed(capability: Any, parameters: dict[str, Any]) -> bool:
    """Whether this call of ``capability`` must be approved by people before it runs."""
    return bool(capability.requires_approval)


def _canonical(value: Any) -> str:
    # sort_keys and no NaN: two JSON values are equal exactly when these strings are; True != 1 here.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def approved_entry(claims: dict[str, Any], *, capability_key: str, parameters: dict) -> int | None:
    """Index of the token's ``authorization_details`` entry that approves exactly this call, or None."""
    details = claims.get("authorization_details")
    if not isinstance(details, list):
        return None
    wanted = _canonical(parameters)
    for index, entry in enumerate(details[:MAX_ENTRIES]):
        if not isinstance(entry, dict) or entry.get("type") != capability_key:
            continue
        approved = {name: value for name, value in entry.items() if name != "type"}
        if _canonical(approved) == wanted:
            return index
    return None


@lru_cache(maxsize=4)
def _use_hook(path: str) -> Callable[..., bool | None]:
    return import_string(path)


def mark_request_used(*, jti: str, agent: Any) -> bool | None:
    """Use up the approved request behind token ``jti`` through the ``GATEHOUSE_APPROVAL_USE_HOOK`` callable
    (the approvals app's ``action_request_mark_used``: durable, audited, race-safe).  None when no hook is
    set or no request stands behind this token (then :func:`consume` counts the entry)."""
    path = gatehouse_settings.APPROVAL_USE_HOOK
    if not path:
        return None
    return _use_hook(path)(jti=jti, agent=agent)


def consume(*, jti: str, index: int, expires_at: float, now: float) -> bool:
    """Mark entry ``index`` of token ``jti`` used; False when it was used before.  Kept until the token
    expires (it cannot be presented after).  Raises :class:`LimiterUnavailable` when the store is down."""
    key = "gh:approved-call:" + hashlib.sha256(f"{jti}\x00{index}".encode()).hexdigest()
    ttl = max(1, math.ceil(expires_at - now) + 5)
    url = gatehouse_settings.RATE_LIMIT_REDIS_URL
    if not url:
        return cache.add(key, 1, timeout=ttl)
    client = redis_client(url, gatehouse_settings.DECISION_STORE_TIMEOUT_SECONDS)
    try:
        return bool(client.set(key, 1, nx=True, ex=ttl))
    except redis.RedisError as exc:
        log.warning("approved-call store unavailable (%s); call refused", type(exc).__name__)
        raise LimiterUnavailable from None
