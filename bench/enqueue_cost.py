"""PostgreSQL's share of a forgot-password request: the server's CPU per statement, one client.

    .venv/bin/python -m bench.enqueue_cost [--count 3000] [--database-url URL]

On one asyncpg connection, one after the other: `SELECT 1` (a round trip and nothing more),
the app/environment lookup of tenancy.resolve_ids, and the request's write, a `mail.account`
job enqueued the way jobs.enqueue does it (pgqueuer's INSERT into pgqueuer and pgqueuer_log,
the trigger's row in `jobs`, its NOTIFY) in BEGIN … COMMIT. For each: the CPU the whole
PostgreSQL server spent per call (bench.common.tree_cpu, so WAL writer and autovacuum count)
and the wall time per call. The jobs are purged afterwards. Needs PostgreSQL on this machine.
"""

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

from app import db as database
from app.services import jobs
from app.services.email_flows import MAIL_JOB
from bench import fixtures
from bench.common import bench_db, postmaster_pid, purge_queued_jobs, tree_cpu


async def main(url: str, count: int) -> None:
    postmaster = await postmaster_pid(url)
    if postmaster is None:
        raise SystemExit("PostgreSQL is not on this machine (or psutil is missing)")
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        queries = Queries(AsyncpgDriver(conn))
        app_id, env_id = await fixtures.default_env(conn)
        payload = json.dumps(
            {"mail": "reset_password", "ip": "127.0.0.1", "user_agent": "userkeep-bench"}
            | {"actor_type": "user", "actor_id": None, "env_id": env_id}
            | {"email": "nobody@example.com"},
            separators=(",", ":"),
        ).encode()
        headers = {jobs.APP_HEADER: app_id, jobs.SUMMARY_HEADER: '{"mail": "reset_password"}'}

        async def round_trip() -> None:
            await conn.fetchval("SELECT 1")

        async def resolve() -> None:
            await conn.fetchrow(
                "SELECT a.id, e.id FROM apps a LEFT JOIN environments e "
                "ON e.app_id = a.id AND e.is_default WHERE a.slug = $1",
                "default",
            )

        async def enqueue() -> None:
            async with conn.transaction():
                await queries.enqueue(MAIL_JOB, payload, headers=headers)

        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("SELECT 1", round_trip),
            ("app/environment lookup (resolve_ids)", resolve),
            ("enqueue a mail job (BEGIN, INSERT, COMMIT)", enqueue),
        ]
        print(f"\n{count:,} calls each, one client\n")
        print("| statement | PostgreSQL CPU ms/call | wall ms/call |")
        print("|---|---:|---:|")
        for name, step in steps:
            for _ in range(200):  # warm-up: plans, caches
                await step()
            cpu, started = tree_cpu(postmaster), time.perf_counter()
            for _ in range(count):
                await step()
            wall, spent = time.perf_counter() - started, tree_cpu(postmaster)
            assert cpu is not None and spent is not None
            print(f"| {name} | {1000 * (spent - cpu) / count:.3f} | {1000 * wall / count:.3f} |")
    finally:
        await conn.close()
    purged = await purge_queued_jobs(url)
    print(f"\n{purged:,} queued jobs purged")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with bench_db(args.database_url) as url:
        asyncio.run(main(url, args.count))
    print(f"command: .venv/bin/python -m bench.enqueue_cost --count {args.count}")
