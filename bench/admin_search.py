"""Latency of the admin user list/search on the seeded store, through HTTP.

    .venv/bin/python -m bench.seed_users            # once: 1,000,000 users (a few minutes)
    .venv/bin/python -m bench.admin_search [--runs 50] [--database-url URL]

Starts `python -m app serve` on the bench database, signs in as an admin (a session made in
SQL), and times each representative query `--runs` times, one at a time, printing p50/p95/p99.
"""

import argparse
import asyncio
import hashlib
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from app import db as database
from app.ids import Prefix, new_id
from bench.common import bench_db, percentile, start_server

YEAR_AGO = (datetime.now(UTC) - timedelta(days=365)).isoformat()
QUERIES = [
    ("newest first (default list)", {}),
    ("search e-mail fragment 'lovelace12'", {"search": "lovelace12"}),
    ("search name 'grace hopper'", {"search": "grace hopper"}),
    ("search rare 'torvalds99'", {"search": "torvalds99"}),
    # Broad terms and filters: the page is quick; the total stops at ADMIN_COUNT_LIMIT
    # (1,000) unless count=exact asks for every match to be counted.
    ("search common surname 'smith' (~2% match)", {"search": "smith"}),
    ("search domain 'example7' (~11% match)", {"search": "example7"}),
    ("search 'smith', count=exact", {"search": "smith", "count": "exact"}),
    ("search 'example7', count=exact", {"search": "example7", "count": "exact"}),
    ("role=admin (1 in 100,000)", {"role": "admin"}),
    ("email_verified=false (5%)", {"email_verified": "false"}),
    ("email_verified=true (95%)", {"email_verified": "true"}),
    ("email_verified=true, count=exact", {"email_verified": "true", "count": "exact"}),
    ("created in the last year (~50%)", {"created_after": YEAR_AGO}),
    ("email filter 'guido.rossum'", {"email": "guido.rossum"}),
    ("username filter 'ada.turing'", {"username": "ada.turing"}),
    ("phone filter '+1415000'", {"phone": "+1415000"}),
    ("sort by email asc", {"sort_by": "email", "sort_order": "asc"}),
    ("sort by name desc", {"sort_by": "name"}),
    ("banned=true", {"banned": "true"}),
    (
        "created in one week",
        {"created_after": "2026-01-01T00:00:00Z", "created_before": "2026-01-08T00:00:00Z"},
    ),
    ("offset 10,000", {"offset": "10000"}),
]


async def admin_token(url: str) -> str:
    """An admin user and a live session for it, written directly (the bench skips hashing)."""
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        app_id, env_id = await conn.fetchrow(
            "SELECT a.id, e.id FROM apps a JOIN environments e ON e.app_id = a.id AND e.is_default "
            "WHERE a.slug = 'default'"
        )
        user_id = await conn.fetchval(
            "SELECT id FROM users WHERE email = 'bench-admin@example.com' AND deleted_at IS NULL"
        )
        if user_id is None:
            user_id = new_id(Prefix.USER)
            await conn.execute(
                "INSERT INTO users (id, app_id, env_id, email, role) "
                "VALUES ($1, $2, $3, 'bench-admin@example.com', 'admin')",
                user_id,
                app_id,
                env_id,
            )
        token = "ukst_" + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        await conn.execute(
            "INSERT INTO sessions (id, family_id, user_id, token_hash, refresh_token_hash, "
            "expires_at, refresh_expires_at, family_expires_at, last_used_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7)",
            new_id(Prefix.SESSION),
            new_id(Prefix.FAMILY),
            user_id,
            hashlib.sha256(token.encode()).digest(),
            secrets.token_bytes(32),
            now + timedelta(hours=2),
            now,
        )
        return token
    finally:
        await conn.close()


def shown(page: dict[str, Any]) -> str:
    """The total as an admin reads it: '1,000+' when the count stopped at the limit."""
    return f"{page['total']:,}" + ("" if page["total_exact"] else "+")


def run(base: str, token: str, runs: int) -> list[tuple[str, str, float, float, float]]:
    results = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for label, params in QUERIES:
            query = {"limit": "20", **params}
            first = client.get("/v1/admin/users", params=query)
            first.raise_for_status()
            total = shown(first.json())
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                response = client.get("/v1/admin/users", params=query)
                samples.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            results.append(
                (
                    label,
                    total,
                    percentile(samples, 50),
                    percentile(samples, 95),
                    percentile(samples, 99),
                )
            )
        # Keyset paging: page 2 via the cursor of page 1.
        page1 = client.get("/v1/admin/users", params={"limit": "20"}).json()
        cursor = page1["next_cursor"]
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            client.get(
                "/v1/admin/users", params={"limit": "20", "cursor": cursor}
            ).raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
        results.append(
            (
                "next page by cursor",
                shown(page1),
                percentile(samples, 50),
                percentile(samples, 95),
                percentile(samples, 99),
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with bench_db(args.database_url) as url:
        users = asyncio.run(_count(url))
        token = asyncio.run(admin_token(url))
        # 22 queries, runs + 1 times each, passes the admin rate limit (600/min per IP).
        server, base = start_server(url, RATE_LIMITS="off")
        try:
            results = run(base, token, args.runs)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"\nGET /v1/admin/users?limit=20 on {users:,} users, {args.runs} runs each, "
        "one request at a time (ms)\n"
    )
    print("| query | total | p50 | p95 | p99 |\n|---|---:|---:|---:|---:|")
    for label, total, p50, p95, p99 in results:
        print(f"| {label} | {total} | {p50:.1f} | {p95:.1f} | {p99:.1f} |")
    print(
        "\ncommand: .venv/bin/python -m bench.admin_search "
        f"--runs {args.runs}" + (" --database-url …" if args.database_url else "")
    )


async def _count(url: str) -> int:
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM users"))
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
