"""Engine and sessions, creating the database, and running migrations (the embedded PostgreSQL
is app/embedded.py)."""

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.errors import ApiError
from app.settings import Settings

log = logging.getLogger("userkeep.db")

T = TypeVar("T")

DATABASE_NAME = "userkeep"
# Inside the package, so an installed wheel migrates from any directory.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


async def ensure_database(url: str) -> None:
    """Create the URL's database on its server when missing (the embedded server starts empty)."""
    parsed = make_url(url)
    dbname = parsed.database or DATABASE_NAME
    conn = await asyncpg.connect(**_asyncpg_args(url, database="postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()


def _asyncpg_args(url: str, database: str | None = None) -> dict[str, Any]:
    parsed = make_url(url)
    args: dict[str, Any] = {
        "user": parsed.username or "postgres",
        "password": parsed.password,
        "database": database or parsed.database,
        "host": parsed.host or parsed.query.get("host"),
        "port": parsed.port or parsed.query.get("port"),
    }
    return {k: v for k, v in args.items() if v is not None}


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Upgrade to head. Synchronous: Alembic's async env runs its own event loop."""
    command.upgrade(alembic_config(url), "head")


async def migrate_async(url: str) -> None:
    await asyncio.to_thread(migrate, url)


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # A dead or stalled server must fail fast into a 503, never hang a request: bounded
        # waits for a pool slot, for a new connection, and for any one statement.
        pool_timeout=settings.db_pool_timeout,
        # Bound values are password hashes and token digests: keep them out of error messages
        # (a logged traceback) and of any statement logging.
        hide_parameters=True,
        connect_args={
            "timeout": settings.db_connect_timeout,
            "command_timeout": settings.db_command_timeout,
        },
    )
    # Recovery after a database restart, without a round trip per checkout (pool_pre_ping
    # would cost one on every request): a connection the server closed is already known to be
    # closed locally, so it is swapped for a new one at checkout. One that died silently
    # (a network partition) fails its first statement; SQLAlchemy then sees a disconnect and
    # invalidates the whole pool, so only connections made after it are used again.
    event.listen(engine.sync_engine.pool, "checkout", _discard_closed)
    event.listen(engine.sync_engine, "handle_error", _drop_timed_out)
    return engine


def _asyncpg_connection(dbapi_connection: Any) -> Any:
    """The asyncpg connection under SQLAlchemy's adapter (None for another driver)."""
    return getattr(dbapi_connection, "_connection", None)


def _discard_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    raw = _asyncpg_connection(dbapi_connection)
    if raw is not None and raw.is_closed():
        # The pool retries the checkout with a fresh connection.
        raise DisconnectionError("connection closed by the server")


def _drop_timed_out(context: ExceptionContext) -> None:
    """A statement past DB_COMMAND_TIMEOUT leaves its connection mid-cancel, in a state nobody
    should reuse, and rolling it back or closing it politely would wait on the stalled server
    again. Drop that one connection at once (the rest of the pool stays: it may have been one
    slow query, not an outage)."""
    if not isinstance(context.original_exception, TimeoutError):
        return
    context.is_disconnect = True
    context.invalidate_pool_on_disconnect = False
    if context.connection is not None:
        raw = _asyncpg_connection(context.connection.connection.dbapi_connection)
        if raw is not None:
            raw.terminate()


# SQLSTATEs meaning "the database is not there, or not taking work, right now": connection
# exceptions (class 08, but not a protocol violation), insufficient resources (53: too many
# connections, disk full, out of memory), operator intervention (57P01 admin shutdown, 57P02
# crash shutdown, 57P03 starting up or shutting down, 57P04 database dropped, 57P05 idle
# session timeout; 57014 a statement cancelled, e.g. by statement_timeout), and a read-only
# transaction (25006: a failover left us on a standby).
_UNAVAILABLE_STATES = ("08", "53", "57P", "57014", "25006")


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` means the database is unreachable or refusing work right now (an
    outage: answer 503 and retry later), not that the code or the request is wrong.

    Follows the chain SQLAlchemy builds (its DBAPIError, the asyncpg adapter's error, then
    asyncpg's own exception), since the telling detail may sit at any level.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, IntegrityError):
            return False
        # OSError covers ConnectionError (refused, reset, broken pipe) and a missing socket.
        if isinstance(error, PoolTimeout | OSError | TimeoutError | DisconnectionError):
            return True
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str) and state != "08P01" and state.startswith(_UNAVAILABLE_STATES):
            return True
        if type(error).__name__ == "InterfaceError" and "connection is closed" in str(error):
            return True  # asyncpg, a call on a connection that is already gone
        for nested in (getattr(error, "orig", None), error.__cause__):
            if isinstance(nested, BaseException):
                todo.append(nested)
    return False


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def connect(url: str, settings: Settings) -> asyncpg.Connection:
    """One asyncpg connection of its own, with the engine's timeouts (a job worker's: it
    LISTENs for new jobs, which a pooled connection cannot)."""
    args = _asyncpg_args(url)
    ssl = make_url(url).query.get("ssl") or make_url(url).query.get("sslmode")
    if isinstance(ssl, str):
        args["ssl"] = ssl
    return await asyncpg.connect(
        **args, timeout=settings.db_connect_timeout, command_timeout=settings.db_command_timeout
    )


class LookupPool:
    """A plain asyncpg pool for the hot path (a bearer token to its session and user).

    Everything else goes through SQLAlchemy. For a one-row lookup SQLAlchemy's checkout,
    session and ORM loading cost more than the query (bench/auth_path.py, one process: about
    2,000 lookups/s through an ORM session, 10,000 on asyncpg). Same timeouts as the engine;
    connections open on demand, so it adds at most DB_POOL_SIZE connections per worker."""

    def __init__(self, url: str, settings: Settings) -> None:
        self._args = _asyncpg_args(url)
        ssl = make_url(url).query.get("ssl") or make_url(url).query.get("sslmode")
        if isinstance(ssl, str):
            self._args["ssl"] = ssl
        self._settings = settings
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            **self._args,
            min_size=0,
            max_size=self._settings.db_pool_size,
            timeout=self._settings.db_connect_timeout,
            command_timeout=self._settings.db_command_timeout,
            init=_decode_jsonb,
            reset=_no_reset,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection; one whose statement failed or timed out is dropped at once (handing
        it back would first wait for its cancellation, on a server that may be why it failed).
        An ApiError raised by the caller's own checks leaves the connection healthy."""
        assert self._pool is not None, "LookupPool.open() first"
        conn = await self._pool.acquire(timeout=self._settings.db_pool_timeout)
        try:
            yield conn
        except ApiError:
            raise
        except (asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            # A connection the server cut while it was in use ("another operation is in
            # progress", "connection has been released"): not a bug of ours, an outage.
            self._drop(conn)
            raise DisconnectionError("lookup connection broken by the server") from exc
        except BaseException:
            self._drop(conn)
            raise
        finally:
            try:
                await self._pool.release(conn)
            except Exception as exc:
                # The server went away while the connection was handed back; asyncpg has
                # already dropped it, and the answer of this request does not depend on it.
                log.info("lookup connection dropped on release: %s", type(exc).__name__)

    @staticmethod
    def _drop(conn: asyncpg.Connection) -> None:
        # A connection the server cut may have gone back to the pool by itself already.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Nothing to undo on a lookup connection (no SET, LISTEN, advisory lock or open
    transaction ever happens on one), so skip asyncpg's RESET ALL round trip per release."""


async def _decode_jsonb(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions in AUTOCOMMIT, for lookups of one statement (a bearer token, an API key): no
    BEGIN and COMMIT round trips around the read. Never for a change of several rows."""
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"),
        class_=AsyncSession,
        expire_on_commit=False,
    )


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: everything inside commits together or not at all."""
    async with factory() as db, db.begin():
        yield db


# Serialization failure and deadlock: PostgreSQL rolled one transaction back so another could
# go on, and asks for the loser to be run again.
_RETRY_STATES = frozenset({"40001", "40P01"})
RETRY_ATTEMPTS = 4


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE behind a SQLAlchemy or asyncpg error, if any."""
    for error in (getattr(exc, "orig", None), exc):
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and sqlstate(exc) in _RETRY_STATES


async def retrying(
    db: AsyncSession, work: Callable[[], Awaitable[T]], attempts: int = RETRY_ATTEMPTS
) -> T:
    """Run `work` in one transaction of `db`; when PostgreSQL aborts it as a deadlock victim or
    a serialization failure, run it again (after a short random pause, so two losers do not
    meet again). `work` must read what it changes inside itself: a retry starts afresh.

    Every change takes the user row before its sessions (users.lock), so deadlocks should not
    happen; this keeps a lock cycle someone adds later from becoming a 500 and a lost change."""
    for attempt in range(1, attempts + 1):
        try:
            async with db.begin():
                return await work()
        except DBAPIError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            log.info("transaction retried (sqlstate %s, attempt %d)", sqlstate(exc), attempt)
        await asyncio.sleep(random.uniform(0.001, 0.01) * attempt)  # noqa: S311
    raise AssertionError("unreachable")
