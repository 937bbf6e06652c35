"""The token lookup behind GET /v1/auth/me, without HTTP: what each layer costs per call.

    .venv/bin/python -m bench.auth_path [--seconds 5] [--concurrency 16] [--tokens 1000]

In one process on uvloop (as one uvicorn worker), `concurrency` tasks call each variant in a
loop for `seconds`, with tokens of the bench sessions (run `python -m bench.run` once first):

- app: `sessions.authenticate` as the app calls it: a prepared statement on the plain asyncpg
  pool of `db.LookupPool`, the User filled from the row;
- ORM, AUTOCOMMIT: an ORM select of Session and User on a `db.read_session_factory` session
  (one round trip; how the app looked tokens up before the lookup pool);
- ORM in a transaction: the same in `db.begin()` (BEGIN, SELECT, COMMIT: the first version);
- core, autocommit: a Core select of the columns the answer needs, rows not ORM objects;
- pooled driver: that raw query on the asyncpg connection under a connection checked out of
  the app's own SQLAlchemy pool (`get_raw_connection().driver_connection`);
- asyncpg: the raw query of bench/ref_minimal.py on an asyncpg pool.

Prints calls/s and the mean latency of each. Lookups only: no HTTP, no JSON.
"""

import argparse
import asyncio
import time

import asyncpg
from sqlalchemy import bindparam, select

from app import db as database
from app.models import Session, User
from app.security import tokens
from app.services import sessions
from bench import fixtures
from bench.common import bench_db, settings_for
from bench.ref_minimal import QUERY, connect_args
from bench.run import freshen

USER_COLUMNS = [
    c
    for c in User.__table__.columns  # type: ignore[attr-defined]
    if c.name not in {"password_hash"} and not c.name.endswith("_counter")
]


async def _loop(call, token_list: list[str], seconds: float, concurrency: int) -> tuple[int, float]:
    count = 0
    busy = 0.0
    stop_at = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal count, busy
        i = offset
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call(token_list[i % len(token_list)])
            busy += time.perf_counter() - started
            count += 1
            i += concurrency

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return count, busy


async def run(
    url: str, seconds: float, concurrency: int, n_tokens: int, only: str | None = None
) -> None:
    indexes = list(range(n_tokens))
    await freshen(url, indexes)
    token_list = [fixtures.session_token(i) for i in indexes]
    settings = settings_for(url)
    engine = database.create_engine(url, settings)
    factory = database.session_factory(engine)
    auto_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    auto_factory = database.read_session_factory(engine)
    pool = await asyncpg.create_pool(**connect_args(url), min_size=10, max_size=20)
    sessions_t = Session.__table__  # type: ignore[attr-defined]
    users_t = User.__table__  # type: ignore[attr-defined]
    core = (
        select(sessions_t.c.expires_at, sessions_t.c.revoked_at, *USER_COLUMNS)
        .select_from(sessions_t.join(users_t, users_t.c.id == sessions_t.c.user_id))
        .where(sessions_t.c.token_hash == bindparam("digest"))
    )

    lookups = database.LookupPool(url, settings)
    await lookups.open()
    orm = select(Session, User).join(User, User.id == Session.user_id)  # type: ignore[arg-type]

    async def app_path(token: str) -> None:
        await sessions.authenticate(lookups, token)

    async def orm_autocommit(token: str) -> None:
        async with auto_factory() as reads:
            statement = orm.where(Session.token_hash == tokens.digest(token))  # type: ignore[arg-type]
            assert (await reads.execute(statement)).first() is not None

    async def in_transaction(token: str) -> None:
        async with factory() as db, db.begin():
            statement = orm.where(Session.token_hash == tokens.digest(token))  # type: ignore[arg-type]
            assert (await db.execute(statement)).first() is not None

    async def core_autocommit(token: str) -> None:
        async with auto_engine.connect() as conn:
            row = (await conn.execute(core, {"digest": tokens.digest(token)})).first()
            assert row is not None

    async def pooled_driver(token: str) -> None:
        async with auto_engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            row = await driver.fetchrow(QUERY, tokens.digest(token))  # type: ignore[union-attr]
            assert row is not None

    async def raw(token: str) -> None:
        row = await pool.fetchrow(QUERY, tokens.digest(token))
        assert row is not None

    variants = [
        ("app: sessions.authenticate on the asyncpg lookup pool", app_path),
        ("ORM select of Session and User, AUTOCOMMIT session", orm_autocommit),
        ("the same ORM select in a transaction (BEGIN, SELECT, COMMIT)", in_transaction),
        ("Core select of the needed columns, AUTOCOMMIT", core_autocommit),
        ("asyncpg fetchrow on a connection of the app's SQLAlchemy pool", pooled_driver),
        ("raw asyncpg fetchrow on an asyncpg pool (bench/ref_minimal.py)", raw),
    ]
    print(f"\n{concurrency} concurrent callers, {seconds:g} s each, {n_tokens:,} tokens\n")
    print("| variant | calls/s | mean ms |\n|---|---:|---:|")
    try:
        for label, call in variants:
            if only and call.__name__ != only:
                continue
            await _loop(call, token_list, min(1.0, seconds), concurrency)  # warm-up
            count, busy = await _loop(call, token_list, seconds, concurrency)
            print(f"| {label} | {count / seconds:,.0f} | {1000 * busy / max(count, 1):.2f} |")
    finally:
        await pool.close()
        await lookups.close()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument(
        "--only",
        choices=[
            "app_path",
            "orm_autocommit",
            "in_transaction",
            "core_autocommit",
            "pooled_driver",
            "raw",
        ],
        help="one variant",
    )
    args = parser.parse_args()
    import uvloop

    with bench_db(None) as url:
        uvloop.run(run(url, args.seconds, args.concurrency, args.tokens, args.only))


if __name__ == "__main__":
    main()
