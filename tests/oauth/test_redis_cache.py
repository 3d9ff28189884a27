"""The Redis cache backend (the jti replay cache): one redis-py client per pool, same answers as Django's."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache

from config.redis_cache import RedisCache

REDIS = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/11"


@pytest.fixture
def caches():
    ours, stock = RedisCache(REDIS, {}), DjangoRedisCache(REDIS, {})
    yield ours, stock
    ours.close()


def test_one_client_serves_every_call(caches):
    ours, stock = caches
    assert ours._cache.get_client(write=True) is ours._cache.get_client(write=True)
    assert ours._cache.get_client() is ours._cache.get_client(write=True)  # one server: one pool
    assert stock._cache.get_client(write=True) is not stock._cache.get_client(write=True)


def test_add_is_first_come_as_with_djangos_backend(caches):
    for cache in caches:
        key = f"gh:test:{uuid.uuid4().hex}"
        assert cache.add(key, 1, timeout=30) is True
        assert cache.add(key, 1, timeout=30) is False  # a replayed jti is refused
        assert cache.get(key) == 1
        cache.delete(key)
        assert cache.add(key, 1, timeout=30) is True
        cache.delete(key)


def test_the_shared_client_is_safe_across_threads(caches):
    ours, _ = caches
    contested = f"gh:test:{uuid.uuid4().hex}"
    keys = [f"gh:test:{uuid.uuid4().hex}" for _ in range(200)]
    with ThreadPoolExecutor(8) as pool:
        fresh = list(pool.map(lambda key: ours.add(key, 1, timeout=30), keys))
        claims = list(pool.map(lambda _: ours.add(contested, 1, timeout=30), range(64)))
    assert all(fresh)
    assert claims.count(True) == 1  # exactly one of the concurrent claims wins
    ours.delete_many([*keys, contested])


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (.ci/run sets it)")
def test_a_redis_that_never_answers_fails_the_call_instead_of_stalling_it():
    """A server that accepts and stays silent: the configured socket timeout ends the wait with an error."""
    import socket
    import time

    import redis

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        silent = RedisCache(f"redis://127.0.0.1:{port}/0", {"OPTIONS": settings.CACHES["default"]["OPTIONS"]})
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            silent.add("gh:jti:probe", 1, timeout=60)
        assert time.monotonic() - started < 30
    finally:
        listener.close()
