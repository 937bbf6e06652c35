"""Latency of GET /v1/admin/stats on the seeded store, through HTTP, and what each of its
figures costs in SQL next to the plain query it replaces.

    .venv/bin/python -m bench.seed_users            # once: 1,000,000 users (a few minutes)
    .venv/bin/python -m bench.admin_stats [--runs 200] [--active-share 0.3] [--database-url URL]

Gives a share of the live users (default 30%) an activity day in the last 30 days, as session
use would have (user_activity, once), starts `python -m app serve`, signs in as an admin (a
session made in SQL) and times the route `--runs` times, one request at a time: p50/p95/p99.
Then times each statement of services/stats and the full-scan alternatives directly in SQL.
"""

import argparse
import asyncio
import time
from datetime import UTC, datetime

import asyncpg
import httpx

from app import db as database
from bench.admin_search import admin_token
from bench.common import bench_db, percentile, start_server


async def seed_activity(url: str, share: float) -> int:
    """Activity rows for `share` of the live users, spread over the last 30 days; kept between
    runs (a re-run with another share starts over)."""
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        live = await conn.fetchval("SELECT count(*) FROM users WHERE deleted_at IS NULL")
        have = await conn.fetchval("SELECT count(*) FROM user_activity")
        if abs(have - live * share) > live * 0.01:
            # One counter upsert per row would take minutes: count the days once at the end.
            await conn.execute("TRUNCATE user_activity, user_active_days")
            await conn.execute("ALTER TABLE user_activity DISABLE TRIGGER user_activity_count")
            # hashtext spreads users evenly and the same way on every run.
            await conn.execute(
                "INSERT INTO user_activity (user_id, app_id, env_id, last_active_at) "
                "SELECT id, app_id, env_id, now() - (abs(hashtext(id)) % 2592000) * interval '1 s' "
                "FROM users WHERE deleted_at IS NULL AND abs(hashtext(id || 'a')) % 1000 < $1",
                int(share * 1000),
            )
            await conn.execute("ALTER TABLE user_activity ENABLE TRIGGER user_activity_count")
            await conn.execute(
                "INSERT INTO user_active_days (app_id, env_id, day, shard, users) "
                "SELECT app_id, env_id, (last_active_at AT TIME ZONE 'UTC')::date, "
                "hashtext(user_id) & 15, count(*) FROM user_activity GROUP BY 1, 2, 3, 4"
            )
            await conn.execute("VACUUM ANALYZE user_activity")
            await conn.execute("VACUUM ANALYZE user_active_days")
        return int(await conn.fetchval("SELECT count(*) FROM user_activity"))
    finally:
        await conn.close()


def run(base: str, token: str, runs: int) -> tuple[dict, list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        first = client.get("/v1/admin/stats")
        first.raise_for_status()
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get("/v1/admin/stats")
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return first.json(), samples


# (label, SQL): $1 app, $2 env, $3 now. The first of each pair is what services/stats runs.
_SQL = [
    (
        "totals: counters + banned on ix_users_banned_live",
        "SELECT (SELECT live FROM user_counts WHERE app_id = $1 AND env_id = $2),"
        " (SELECT verified FROM user_stat_counts WHERE app_id = $1 AND env_id = $2),"
        " (SELECT count(*) FROM users WHERE app_id = $1 AND env_id = $2 AND banned"
        "  AND deleted_at IS NULL AND (ban_expires IS NULL OR ban_expires > $3))",
    ),
    (
        "  vs. totals by counting users",
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL),"
        " count(*) FILTER (WHERE deleted_at IS NULL AND email_verified),"
        " count(*) FILTER (WHERE deleted_at IS NULL AND banned"
        "  AND (ban_expires IS NULL OR ban_expires > $3))"
        " FROM users WHERE app_id = $1 AND env_id = $2",
    ),
    (
        "sign-ups per day: user_signup_days",
        "SELECT day, signups FROM user_signup_days WHERE app_id = $1 AND env_id = $2"
        " AND day >= ($3::timestamptz AT TIME ZONE 'UTC')::date - 29",
    ),
    (
        "  vs. range of ix_users_app_env_created, by day",
        "SELECT (created_at AT TIME ZONE 'UTC')::date, count(*) FROM users"
        " WHERE app_id = $1 AND env_id = $2"
        " AND created_at >= date_trunc('day', $3::timestamptz AT TIME ZONE 'UTC')"
        " AT TIME ZONE 'UTC' - interval '29 days' GROUP BY 1",
    ),
    (
        "active users: user_active_days",
        "SELECT sum(users) FILTER (WHERE day >= ($3::timestamptz AT TIME ZONE 'UTC')::date),"
        " sum(users) FILTER (WHERE day >= ($3::timestamptz AT TIME ZONE 'UTC')::date - 6),"
        " sum(users) FROM user_active_days WHERE app_id = $1 AND env_id = $2"
        " AND day >= ($3::timestamptz AT TIME ZONE 'UTC')::date - 29",
    ),
    (
        "  vs. counting user_activity (no index on the day)",
        "SELECT count(*) FILTER (WHERE last_active_at >= $3::timestamptz - interval '1 day'),"
        " count(*) FILTER (WHERE last_active_at >= $3::timestamptz - interval '7 days'),"
        " count(*) FROM user_activity WHERE app_id = $1 AND env_id = $2"
        " AND last_active_at >= $3::timestamptz - interval '30 days'",
    ),
]


async def time_sql(url: str, runs: int) -> list[tuple[str, float, float]]:
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        app_id, env_id = await conn.fetchrow(
            "SELECT a.id, e.id FROM apps a JOIN environments e ON e.app_id = a.id AND e.is_default "
            "WHERE a.slug = 'default'"
        )
        now = datetime.now(UTC)
        results = []
        for label, sql in _SQL:
            await conn.fetch(sql, app_id, env_id, now)  # warm
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                await conn.fetch(sql, app_id, env_id, now)
                samples.append((time.perf_counter() - started) * 1000)
            results.append((label, percentile(samples, 50), percentile(samples, 95)))
        return results
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--active-share", type=float, default=0.3)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with bench_db(args.database_url) as url:
        active = asyncio.run(seed_activity(url, args.active_share))
        token = asyncio.run(admin_token(url))
        server, base = start_server(url, RATE_LIMITS="off")
        try:
            answer, samples = run(base, token, args.runs)
        finally:
            server.terminate()
            server.wait(timeout=30)
        sql = asyncio.run(time_sql(url, max(10, args.runs // 10)))
    users = answer["users"]
    print(
        f"\nGET /v1/admin/stats on {users['total'] + users['deleted']:,} users "
        f"({active:,} active in 30 days), {args.runs} runs, one request at a time (ms)\n"
    )
    print("| p50 | p95 | p99 |\n|---:|---:|---:|")
    print(
        f"| {percentile(samples, 50):.1f} | {percentile(samples, 95):.1f} "
        f"| {percentile(samples, 99):.1f} |"
    )
    print(f"\nusers {users}, active {answer['active_users']}")
    print(f"sign-ups in 30 days: {sum(day['count'] for day in answer['signups_per_day']):,}")
    print("\n| statement (SQL alone) | p50 | p95 |\n|---|---:|---:|")
    for label, p50, p95 in sql:
        print(f"| {label} | {p50:.1f} | {p95:.1f} |")
    print(
        "\ncommand: .venv/bin/python -m bench.admin_stats "
        f"--runs {args.runs} --active-share {args.active_share}"
        + (" --database-url …" if args.database_url else "")
    )


if __name__ == "__main__":
    main()
