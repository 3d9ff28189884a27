"""Password sign-in attempts: throttled per account and per address, and audited.

The counters live in Django's cache (Redis when ``REDIS_URL`` is set, so every web process shares them): a
fixed window of ``GATEHOUSE_SIGN_IN_WINDOW_SECONDS`` starts at an account's (or address's) first attempt.
Every attempt is counted *before* the password is checked (an atomic increment, so parallel requests cannot
slip past the limit); a success gives its own count back.  Past either limit, sign-in for that account (or
from that address) is refused without looking at the password until the window ends.  Unknown usernames
are counted exactly like known ones, so a lockout says nothing about whether an account exists.  A success
clears the account's counter, never the address's earlier failures (one valid account must not reset a
spray from that address).  When the cache cannot answer, sign-in is refused (closed).

Each function records one audit event: ``sign_in.succeeded``, ``sign_in.failed`` and
``sign_in.locked_out`` (once per lock, not per refused attempt, so a locked door cannot flood the log).
The password is never recorded; the attempted username is bounded and stripped of control and
formatting characters (bidi overrides, zero-width) before it is stored.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from audit import services as audit
from audit.actions import Action, ActorType, Result
from audit.services import Actor
from governance.errors import NotPermitted
from governance.models import User

logger = logging.getLogger(__name__)

USERNAME_LIMIT = 150  # the username column's length
ANONYMOUS = Actor(type=ActorType.ANONYMOUS, label="anonymous")
_PREFIX = "gatehouse:sign-in"
# Unicode categories never kept in a stored username: controls, formatting (bidi, zero-width), surrogates,
# private use, unassigned, line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class SignInLocked(NotPermitted):
    """Too many failed sign-ins for this account or from this address; try again later."""

    code = "sign_in_locked"


def window_seconds() -> int:
    return int(settings.GATEHOUSE_SIGN_IN_WINDOW_SECONDS)


def max_failures_per_account() -> int:
    return int(settings.GATEHOUSE_SIGN_IN_MAX_FAILURES_PER_ACCOUNT)


def max_failures_per_address() -> int:
    return int(settings.GATEHOUSE_SIGN_IN_MAX_FAILURES_PER_ADDRESS)


def attempted_username(raw: str) -> str:
    """The attempted username as it may be stored: unsafe characters replaced, at most USERNAME_LIMIT long."""
    bounded = str(raw)[:USERNAME_LIMIT]
    return "".join("\ufffd" if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in bounded)


def account_key(username: str) -> str:
    """Cache key of an account's counter: a digest of the case-folded name (no usernames in the cache)."""
    folded = unicodedata.normalize("NFKC", str(username)).casefold()
    return f"{_PREFIX}:account:{hashlib.sha256(folded.encode('utf-8', 'replace')).hexdigest()}"


def address_key(address: str) -> str:
    return f"{_PREFIX}:address:{address}"


def _keys(username: str, address: str | None) -> list[tuple[str, str, int]]:
    keys = [("account", account_key(username), max_failures_per_account())]
    if address:
        keys.append(("address", address_key(address), max_failures_per_address()))
    return keys


def notice_key(counter_key: str) -> str:
    """Set while a lock's ``sign_in.locked_out`` has been recorded (once per lock)."""
    return f"{counter_key}:noticed"


def _count(key: str) -> int:
    """Add one to a counter and return it.  The window starts with the first attempt: ``add`` sets the key
    only when absent, and ``incr`` (atomic in Redis) keeps its expiry."""
    cache.add(key, 0, timeout=window_seconds())
    try:
        return cache.incr(key)
    except ValueError:  # expired between the two calls: this attempt opens a new window
        cache.add(key, 1, timeout=window_seconds())
        return 1


def _reserve(username: str, address: str | None) -> tuple[str, str] | None:
    """Count this attempt before the password is looked at; (which, counter key) when over a limit.

    Counting first makes the limit exact under parallel requests: each attempt gets its own number, so
    no more than the limit can ever reach the password check in one window.
    """
    for which, key, limit in _keys(username, address):
        if _count(key) > limit:
            return which, key
    return None


def lookup(username: str) -> User | None:
    """The account a sign-in names, or None.  A name no account can have (NUL, which PostgreSQL refuses in
    text, or longer than the column) is not looked up at all."""
    if not isinstance(username, str) or "\x00" in username or len(username) > USERNAME_LIMIT:
        return None
    return User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()


def sign_in_check(*, username: str, address: str | None, via: str) -> None:
    """Count the attempt; raise :class:`SignInLocked` when the account or the address is over its limit in
    this window (or the cache cannot say).  Call before checking the password.

    The first refusal of a lock records ``sign_in.locked_out``; later ones in the same window record nothing.
    """
    try:
        locked = _reserve(username, address)
    except Exception:  # the cache is down: refuse (closed), and record each refusal
        logger.warning("sign-in refused: the throttle cache did not answer", exc_info=True)
        which, first = "unavailable", True
    else:
        if locked is None:
            return
        which, counter = locked
        try:
            first = cache.add(notice_key(counter), 1, timeout=window_seconds())
        except Exception:
            first = True
    if first:
        target = lookup(username)
        with transaction.atomic():
            audit.record(
                action=Action.SIGN_IN_LOCKED_OUT,
                actor=ANONYMOUS,
                result=Result.DENIED,
                target=target,
                organization=getattr(target, "organization_id", None),
                parameters={
                    "username": attempted_username(username),
                    "locked": which,
                    "via": via,
                    "window_seconds": window_seconds(),
                },
            )
    raise SignInLocked("Too many failed sign-ins. Wait a while, then try again.")


def sign_in_failed(*, username: str, address: str | None, user: User | None, via: str) -> None:
    """A wrong password (or an unknown or inactive account), already counted by :func:`sign_in_check`."""
    with transaction.atomic():
        audit.record(
            action=Action.SIGN_IN_FAILED,
            actor=ANONYMOUS,
            result=Result.FAILURE,
            target=user,
            organization=getattr(user, "organization_id", None),
            parameters={"username": attempted_username(username), "via": via},
        )


def sign_in_succeeded(*, user: User, address: str | None, via: str) -> None:
    """The password was right: the account's failures are forgotten, and this attempt no longer counts
    against the address (its earlier failures still do); recorded with the person as actor."""
    try:
        cache.delete(account_key(user.get_username()))
        if address:
            cache.decr(address_key(address))
    except ValueError:  # the address window ended meanwhile: nothing to give back
        pass
    except Exception:
        logger.warning("sign-in failures not cleared: the throttle cache did not answer", exc_info=True)
    with transaction.atomic():
        audit.record(
            action=Action.SIGN_IN_SUCCEEDED,
            actor=user,
            target=user,
            parameters={"via": via},
        )
