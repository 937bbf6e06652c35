"""The rate-limit counters and one-time keys themselves, on PostgreSQL and on Redis: exact under
concurrency."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from app import clock
from app.db import LookupPool, create_engine
from app.errors import RateLimited
from app.limits import Limit
from app.services.ratelimit import PostgresStore, RateLimiter, RedisStore
from tests.conftest import make_settings
from tests.redis_support import REDIS_PREFIX, REDIS_URL, redis_up


@asynccontextmanager
async def _postgres_store(database_url: str) -> AsyncIterator[PostgresStore]:
    settings = make_settings(database_url)
    engine = create_engine(database_url, settings)
    lookups = LookupPool(database_url, settings)
    await lookups.open()
    try:
        yield PostgresStore(engine, lookups)
    finally:
        await lookups.close()
        await engine.dispose()


@pytest.fixture(params=["postgres", "redis"])
async def limiter(request, database_url):
    if request.param == "postgres":
        async with _postgres_store(database_url) as postgres:
            yield RateLimiter(postgres)
    else:
        if not redis_up():
            pytest.skip("no Redis on 127.0.0.1:6379")
        store = RedisStore(REDIS_URL, REDIS_PREFIX)
        yield RateLimiter(store)
        for pattern in ("userkeep:rl:test:*", "userkeep:once:test:*"):
            async for name in store.redis.scan_iter(pattern):
                await store.redis.delete(name)
        await store.redis.aclose()


def key() -> str:
    return f"test:{uuid.uuid4().hex}"


async def test_limit_parse():
    assert Limit.parse("100/3600") == Limit(100, 3600)


async def test_allows_up_to_the_limit_then_429_with_retry_after(limiter):
    k = key()
    for _ in range(3):
        await limiter.hit(k, Limit(3, 60))
    with pytest.raises(RateLimited) as raised:
        await limiter.hit(k, Limit(3, 60))
    retry = int(raised.value.headers["Retry-After"])
    assert 1 <= retry <= 60


async def test_the_next_window_starts_fresh(limiter):
    k = key()
    for _ in range(2):
        await limiter.hit(k, Limit(2, 60))
    with pytest.raises(RateLimited):
        await limiter.hit(k, Limit(2, 60))
    clock.advance(timedelta(seconds=61))
    await limiter.hit(k, Limit(2, 60))


async def test_give_back_returns_one_slot(limiter):
    k = key()
    await limiter.hit(k, Limit(1, 60))
    await limiter.give_back(k, Limit(1, 60))
    await limiter.hit(k, Limit(1, 60))
    with pytest.raises(RateLimited):
        await limiter.hit(k, Limit(1, 60))


async def test_give_back_never_goes_below_zero(limiter):
    k = key()
    for _ in range(3):
        await limiter.give_back(k, Limit(1, 60))
    await limiter.hit(k, Limit(1, 60))
    with pytest.raises(RateLimited):
        await limiter.hit(k, Limit(1, 60))


async def test_concurrent_hits_have_exactly_limit_winners(limiter):
    k = key()

    async def attempt() -> bool:
        try:
            await limiter.hit(k, Limit(10, 60))
            return True
        except RateLimited:
            return False

    results = await asyncio.gather(*(attempt() for _ in range(50)))
    assert results.count(True) == 10


async def test_first_use_is_true_exactly_once_under_concurrency(limiter):
    k, now = key(), clock.now().timestamp()

    results = await asyncio.gather(*(limiter.store.first_use(k, 60, now) for _ in range(20)))

    assert results.count(True) == 1


async def test_an_expired_first_use_key_is_reused(database_url):
    async with _postgres_store(database_url) as store:
        k, now = key(), clock.now().timestamp()
        assert await store.first_use(k, 60, now) is True
        assert await store.first_use(k, 60, now + 59) is False

        assert await store.first_use(k, 60, now + 61) is True


async def test_expired_first_use_keys_are_pruned_without_any_counting(database_url, pg):
    # With RATE_LIMITS=off nothing is ever counted, yet every signed Faroe request leaves a key.
    async with _postgres_store(database_url) as store:
        store.PRUNE_EVERY = 3
        now = clock.now().timestamp()
        for _ in range(2):
            assert await store.first_use(key(), 60, now) is True
        later = key()

        assert await store.first_use(later, 60, now + 120) is True  # the third call prunes

        rows = await pg.fetch("SELECT key FROM rate_limits WHERE key LIKE 'once:test:%'")
        assert [row["key"] for row in rows] == [f"once:{later}"]
