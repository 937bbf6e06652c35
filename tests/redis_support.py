"""Redis for the tests of the Redis-backed stores: used when it answers on 127.0.0.1:6379 (db 15,
or REDIS_URL), skipped otherwise. Each test run writes under a key prefix of its own
(REDIS_PREFIX), so two runs on one machine (CI beside a developer's suite) never clear or count
each other's keys."""

import os
import socket
import uuid

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
REDIS_PREFIX = f"userkeep-test-{uuid.uuid4().hex[:12]}"


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


async def clear_redis() -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)
    async for name in redis.scan_iter(f"{REDIS_PREFIX}:*"):
        await redis.delete(name)
    await redis.aclose()
