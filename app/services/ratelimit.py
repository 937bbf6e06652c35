"""Rate limits shared by every node: fixed-window counters in PostgreSQL, or Redis if configured.

A limit is `count` events per `window` seconds for one key (rule + identifier). Counting is one
atomic statement per event in either store, so concurrent requests on several nodes can never
both take the last slot. Fixed windows let a client spend up to 2x a limit across a window
boundary; every rule pairs a short burst window with a long one to bound that.

The rules and their defaults live in Settings (RATE_LIMIT_*); `RATE_LIMITS=off` turns them all
off and must be asked for by name.

The same stores also remember one-time values (`first_use`: the Faroe endpoint's seen request
signatures). That is a security check, not a limit, so `RATE_LIMITS=off` leaves it on.
"""

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import clock
from app.db import LookupPool
from app.errors import InvalidCode, InvalidCredentials, RateLimited, ServiceUnavailable
from app.limits import Limit, parse_limits
from app.settings import Settings


class Store(Protocol):
    async def incr(self, key: str, window: int, now: float) -> int:
        """Count one event for `key` in the window holding `now`; the count so far."""

    async def decr(self, key: str, window: int, now: float) -> None:
        """Take back one event counted in the window holding `now` (never below zero)."""

    async def first_use(self, key: str, ttl: int, now: float) -> bool:
        """True exactly once for `key` until `ttl` seconds after `now`, on every node at once."""

    async def close(self) -> None: ...


def window_start(window: int, now: float) -> int:
    return int(now // window * window)


class PostgresStore:
    """One row per key, reset in place when a new window starts (an UNLOGGED table: counters
    are cheap to lose in a crash). Expired rows are pruned every `PRUNE_EVERY` writes."""

    PRUNE_EVERY = 1000

    def __init__(self, engine: AsyncEngine, lookups: LookupPool) -> None:
        self.engine = engine
        # first_use is one statement on the Faroe read path (every signed call): a prepared
        # statement on the plain asyncpg pool, like the bearer lookup, outside any transaction.
        self.lookups = lookups
        self._since_prune = 0

    async def incr(self, key: str, window: int, now: float) -> int:
        start = window_start(window, now)
        async with self.engine.begin() as conn:
            count = (
                await conn.execute(
                    text(
                        "INSERT INTO rate_limits (key, window_start, expires_at, count) "
                        "VALUES (:k, :w, :e, 1) "
                        "ON CONFLICT (key) DO UPDATE SET count = CASE "
                        "WHEN rate_limits.window_start = EXCLUDED.window_start "
                        "THEN rate_limits.count + 1 ELSE 1 END, "
                        "window_start = EXCLUDED.window_start, expires_at = EXCLUDED.expires_at "
                        "RETURNING count"
                    ),
                    {"k": key, "w": start, "e": start + window},
                )
            ).scalar_one()
            await self._prune_now_and_then(conn, now)
        return int(count)

    async def decr(self, key: str, window: int, now: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE rate_limits SET count = count - 1 "
                    "WHERE key = :k AND window_start = :w AND count > 0"
                ),
                {"k": key, "w": window_start(window, now)},
            )

    @staticmethod
    def first_use_sql(first: int = 1) -> str:
        """The replay guard's statement, its three parameters (`first_use_args`) numbered from
        `first`: it returns a row only the first time. One atomic statement: a concurrent
        duplicate waits on the row the winner inserts, then finds it unexpired and returns
        nothing. An expired leftover (not yet pruned) is reused. window_start records when the
        key was first used; count is unused. services/faroe runs it inside its read."""
        key, now, expires = (f"${first + i}" for i in range(3))
        return (
            "INSERT INTO rate_limits (key, window_start, expires_at, count) "  # noqa: S608
            f"VALUES ({key}, {now}, {expires}, 1) "
            "ON CONFLICT (key) DO UPDATE SET window_start = EXCLUDED.window_start, "
            "expires_at = EXCLUDED.expires_at, count = 1 "
            f"WHERE rate_limits.expires_at <= {now} "
            "RETURNING 1"
        )

    @staticmethod
    def first_use_args(key: str, ttl: int, now: float) -> tuple[str, int, int]:
        return f"once:{key}", int(now), math.ceil(now + ttl)

    async def first_use(self, key: str, ttl: int, now: float) -> bool:
        async with self.lookups.connection() as conn:
            row = await conn.fetchrow(_FIRST_USE, *self.first_use_args(key, ttl, now))
        await self.count_first_use(now)
        return row is not None

    async def count_first_use(self, now: float) -> None:
        """Count one first use, pruning every PRUNE_EVERY: the keys differ per request and no
        later one reuses them, so first uses must prune too (with RATE_LIMITS=off incr never
        runs)."""
        if self._prune_due():
            async with self.engine.begin() as pruning:
                await self._prune(pruning, now)

    def _prune_due(self) -> bool:
        """True once every PRUNE_EVERY writes."""
        self._since_prune += 1
        if self._since_prune < self.PRUNE_EVERY:
            return False
        self._since_prune = 0
        return True

    async def _prune_now_and_then(self, conn: AsyncConnection, now: float) -> None:
        if self._prune_due():
            await self._prune(conn, now)

    @staticmethod
    async def _prune(conn: AsyncConnection, now: float) -> None:
        await conn.execute(
            text("DELETE FROM rate_limits WHERE expires_at < :now"), {"now": int(now)}
        )

    async def close(self) -> None:
        """The engine belongs to the app."""


_FIRST_USE = PostgresStore.first_use_sql()


class RedisStore:
    """INCR + EXPIRE on one key per window. Redis unreachable means 503, not unlimited: a limit
    that silently stops holding would be worse than a short outage of the limited routes."""

    def __init__(self, url: str, prefix: str = "userkeep") -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix

    def _key(self, key: str, window: int, now: float) -> str:
        return f"{self.prefix}:rl:{key}:{window_start(window, now)}"

    async def incr(self, key: str, window: int, now: float) -> int:
        from redis.exceptions import RedisError

        name = self._key(key, window, now)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, window + 1)
                count, _ = await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable("rate-limit store unavailable") from exc
        return int(count)

    # DECR alone would bring an expired key back as -1 with no expiry.
    _DECR_EXISTING = (
        "if redis.call('get', KEYS[1]) and tonumber(redis.call('get', KEYS[1])) > 0 "
        "then redis.call('decr', KEYS[1]) end"
    )

    async def decr(self, key: str, window: int, now: float) -> None:
        from redis.exceptions import RedisError

        try:
            await self.redis.eval(self._DECR_EXISTING, 1, self._key(key, window, now))
        except RedisError as exc:
            raise ServiceUnavailable("rate-limit store unavailable") from exc

    async def first_use(self, key: str, ttl: int, now: float) -> bool:
        from redis.exceptions import RedisError

        try:
            created = await self.redis.set(f"{self.prefix}:once:{key}", 1, nx=True, ex=max(1, ttl))
        except RedisError as exc:
            raise ServiceUnavailable("rate-limit store unavailable") from exc
        return bool(created)

    async def close(self) -> None:
        await self.redis.aclose()


class RateLimiter:
    def __init__(self, store: Store, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled

    @staticmethod
    def _retry_after(limit: Limit, now: float) -> int:
        return max(1, math.ceil(window_start(limit.window, now) + limit.window - now))

    async def hit(self, key: str, *limits: Limit) -> None:
        """Count one event against each limit; 429 when any is exceeded."""
        if not self.enabled:
            return
        now = clock.now().timestamp()
        for limit in limits:
            if await self.store.incr(f"{key}:{limit.window}", limit.window, now) > limit.count:
                raise RateLimited(self._retry_after(limit, now))

    async def give_back(self, key: str, *limits: Limit) -> None:
        """Undo one `hit` of `key` (in the windows holding now)."""
        if not self.enabled:
            return
        now = clock.now().timestamp()
        for limit in limits:
            await self.store.decr(f"{key}:{limit.window}", limit.window, now)


class PasswordAttempt:
    """One password check in Rules.password_attempt; `succeeded()` when the password was right."""

    def __init__(self) -> None:
        self.ok = False

    def succeeded(self) -> None:
        self.ok = True


class Rules:
    """The named rules of Settings, applied to one request's identifiers. Routers call the
    per-IP rules; services call the per-account ones, which count failures only."""

    def __init__(self, limiter: RateLimiter, settings: Settings) -> None:
        self.limiter = limiter
        self.by_name = {
            "signin": parse_limits(settings.rate_limit_signin_ip),
            "signup": parse_limits(settings.rate_limit_signup_ip),
            "refresh": parse_limits(settings.rate_limit_refresh_ip),
            "admin": parse_limits(settings.rate_limit_admin_ip),
            "faroe": parse_limits(settings.rate_limit_faroe_ip),
            "mail": parse_limits(settings.rate_limit_mail_ip),
            "code": parse_limits(settings.rate_limit_code_ip),
            "introspect": parse_limits(settings.rate_limit_introspect_ip),
            "mfa": parse_limits(settings.rate_limit_mfa_ip),
        }
        self.account_failures = parse_limits(settings.rate_limit_account_failures)
        self.mfa_failures = parse_limits(settings.rate_limit_mfa_account)
        self.mail_address = parse_limits(settings.rate_limit_mail_address)

    async def per_ip(self, rule: str, ip: str | None) -> None:
        await self.limiter.hit(f"{rule}:ip:{ip or '-'}", *self.by_name[rule])

    async def once_per(self, key: str, seconds: int) -> bool:
        """True for the first call with `key` in `seconds`, on every node: a throttle for
        side effects (an audit row), not a limit, so RATE_LIMITS=off leaves it on."""
        return await self.limiter.store.first_use(key, seconds, clock.now().timestamp())

    async def mail_to(self, env_id: str, address: str) -> None:
        """One mail asked for `address` in the environment, whether or not an account has it:
        the same count, and the same 429, for both."""
        await self.limiter.hit(f"mail:addr:{env_id}:{address.lower()}", *self.mail_address)

    @asynccontextmanager
    async def password_attempt(self, account: str) -> AsyncIterator[PasswordAttempt]:
        """Around one password check of `account` (a user id, or the identifier of an
        unknown one): counted against its failure budget *before* the check, in one atomic
        step, so concurrent guesses cannot all pass a budget that none of them has counted
        yet; 429 when it is spent. The count is given back when the check succeeds, or ends
        in anything but a wrong password (e.g. hashing overloaded): only failures stay."""
        async with self._failure_budget(
            f"fail:acct:{account}", self.account_failures, InvalidCredentials
        ) as attempt:
            yield attempt

    @asynccontextmanager
    async def mfa_attempt(self, user_id: str) -> AsyncIterator[PasswordAttempt]:
        """Around one second-factor check of a user, as `password_attempt` around a password:
        only wrong codes (InvalidCode) stay counted, whichever mfa_token or route they came
        by, so fresh tokens (each bought with the password) buy no extra guesses."""
        async with self._failure_budget(
            f"fail:mfa:{user_id}", self.mfa_failures, InvalidCode
        ) as attempt:
            yield attempt

    @asynccontextmanager
    async def _failure_budget(
        self, key: str, limits: tuple[Limit, ...], failure: type[Exception]
    ) -> AsyncIterator[PasswordAttempt]:
        await self.limiter.hit(key, *limits)
        attempt = PasswordAttempt()
        failed = True
        try:
            yield attempt
            failed = not attempt.ok
        except failure:
            raise
        except BaseException:
            failed = False
            raise
        finally:
            if not failed:
                await self.limiter.give_back(key, *limits)


def build(settings: Settings, engine: AsyncEngine, lookups: LookupPool) -> Rules:
    store: Store = (
        RedisStore(settings.redis_url, settings.redis_prefix)
        if settings.redis_url
        else PostgresStore(engine, lookups)
    )
    return Rules(RateLimiter(store, enabled=settings.rate_limits == "on"), settings)
