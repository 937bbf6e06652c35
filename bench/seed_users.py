"""Load N users (default 1,000,000) into the default app with COPY, for the admin search bench.

    .venv/bin/python -m bench.seed_users [--count N] [--database-url URL]

Rows look like real users: names from common first/last names, e-mails on a hundred domains,
a third with usernames, a fifth with phones, 95% with a verified e-mail, one admin in 100,000,
1% banned (half of those expired), 0.5% soft-deleted, created over two years. Re-running adds
users up to N, it never duplicates.
"""

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from app import db as database
from app.ids import Prefix, new_id
from bench.common import bench_db

FIRST = """james mary robert patricia john jennifer michael linda david elizabeth william barbara
richard susan joseph jessica thomas sarah charles karen christopher lisa daniel nancy matthew
betty anthony margaret mark sandra donald ashley steven kimberly paul emily andrew donna joshua
michelle kenneth carol kevin amanda brian dorothy george melissa timothy deborah ada grace alan
linus guido margaret barbara katherine edsger donald""".split()
LAST = """smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez
gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris
sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill
flores green adams nelson baker hall rivera campbell mitchell carter roberts lovelace hopper
turing torvalds rossum""".split()
COLUMNS = [
    "id",
    "app_id",
    "env_id",
    "email",
    "email_verified",
    "name",
    "username",
    "display_username",
    "phone",
    "role",
    "password_hash",
    "banned",
    "ban_reason",
    "ban_expires",
    "created_at",
    "updated_at",
    "deleted_at",
]
# A fixed, valid argon2id hash of a random password: nobody signs in as a seeded user.
HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$c2VlZGVkc2VlZGVkc2VlZA"
    "$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
)


def rows(start: int, count: int, app_id: str, env_id: str, rng: random.Random):
    now = datetime.now(UTC)
    for i in range(start, start + count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        created = now - timedelta(seconds=rng.randrange(2 * 365 * 86400))
        username = f"{first}.{last}{i}" if i % 3 == 0 else None
        banned = i % 100 == 7
        ban_expires = (now - timedelta(days=1) if i % 200 == 7 else None) if banned else None
        yield (
            new_id(Prefix.USER),
            app_id,
            env_id,
            f"{first}.{last}{i}@example{i % 100}.com",
            i % 20 != 0,
            f"{first.title()} {last.title()}",
            username,
            username,
            f"+1415{i:07d}" if i % 5 == 0 else None,
            "admin" if i % 100_000 == 1 else "user",
            HASH,
            banned,
            "spam" if banned else None,
            ban_expires,
            created,
            created,
            created + timedelta(days=1) if i % 200 == 3 else None,
        )


async def seed(url: str, count: int) -> None:
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        app_id, env_id = await conn.fetchrow(
            "SELECT a.id, e.id FROM apps a JOIN environments e ON e.app_id = a.id AND e.is_default "
            "WHERE a.slug = 'default'"
        )
        have = await conn.fetchval("SELECT count(*) FROM users WHERE app_id = $1", app_id)
        if have >= count:
            print(f"{have:,} users already there")
            return
        # GIN trigram indexes are far faster to build once than to grow row by row.
        gin = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'users' "
            "AND indexdef ILIKE '%gin%'"
        )
        for index in gin:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
        # One counter upsert per copied row would double the load time; recount at the end.
        await conn.execute("ALTER TABLE users DISABLE TRIGGER users_count_insert_delete")
        await conn.execute("ALTER TABLE users DISABLE TRIGGER users_stats_insert_delete")
        started = time.monotonic()
        rng = random.Random(have)
        batch = 100_000
        for start in range(have, count, batch):
            n = min(batch, count - start)
            await conn.copy_records_to_table(
                "users", records=rows(start, n, app_id, env_id, rng), columns=COLUMNS
            )
            print(f"  {start + n:,} users ({time.monotonic() - started:.0f} s)", flush=True)
        for index in gin:
            await conn.execute(index["indexdef"])
        await conn.execute("ALTER TABLE users ENABLE TRIGGER users_count_insert_delete")
        await conn.execute("ALTER TABLE users ENABLE TRIGGER users_stats_insert_delete")
        async with conn.transaction():
            await conn.execute("LOCK TABLE users IN SHARE MODE")
            await conn.execute("DELETE FROM user_counts")
            await conn.execute(
                "INSERT INTO user_counts (app_id, env_id, live, deleted) "
                "SELECT app_id, env_id, count(*) FILTER (WHERE deleted_at IS NULL), "
                "count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM users GROUP BY 1, 2"
            )
            # The counters of GET /v1/admin/stats (migration 0015), likewise.
            await conn.execute("DELETE FROM user_stat_counts")
            await conn.execute(
                "INSERT INTO user_stat_counts (app_id, env_id, verified) "
                "SELECT app_id, env_id, count(*) FROM users "
                "WHERE email_verified AND deleted_at IS NULL GROUP BY 1, 2"
            )
            await conn.execute("DELETE FROM user_signup_days")
            await conn.execute(
                "INSERT INTO user_signup_days (app_id, env_id, day, signups) "
                "SELECT app_id, env_id, (created_at AT TIME ZONE 'UTC')::date, count(*) "
                "FROM users GROUP BY 1, 2, 3"
            )
        await conn.execute("VACUUM ANALYZE users")
        print(f"seeded {count - have:,} users in {time.monotonic() - started:.0f} s")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with bench_db(args.database_url) as url:
        asyncio.run(seed(url, args.count))


if __name__ == "__main__":
    main()
