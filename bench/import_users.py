"""Time `python -m app import-users` on N users with bcrypt hashes (issue "Admin power tools":
200,000 in at most 60 s on the embedded PostgreSQL).

    .venv/bin/python -m bench.import_users [--count 200000] [--database-url URL]

Writes a JSON Lines file of N users (distinct e-mails, a name, metadata, and ONE bcrypt hash at
cost 10 reused: the bench measures the import, not bcrypt), imports it into a fresh app of the
bench database as an operator would, then imports it again (every row skipped). Prints the
figures and the command, and writes bench/results/import.md.
"""

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import bcrypt

from app import db as database
from app.ids import Prefix, new_id
from bench.common import ROOT, bench_db

RESULTS = ROOT / "bench" / "results" / "import.md"


def write_file(path: Path, count: int) -> None:
    hash_ = bcrypt.hashpw(b"bench-password-1", bcrypt.gensalt(10)).decode()
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            row = {
                "email": f"imported{i}@example{i % 97}.com",
                "password_hash": hash_,
                "name": f"Imported User {i}",
                "email_verified": i % 10 != 0,
                "metadata": {"source": "bench", "n": str(i)},
                "created_at": "2021-03-04T05:06:07Z",
            }
            out.write(json.dumps(row) + "\n")


async def make_app(url: str, slug: str) -> None:
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        app_id = new_id(Prefix.APP)
        await conn.execute(
            "INSERT INTO apps (id, slug, name) VALUES ($1, $2, $3)", app_id, slug, slug
        )
        await conn.execute(
            "INSERT INTO environments (id, app_id, slug, name, is_default) "
            "VALUES ($1, $2, 'production', 'Production', true)",
            new_id(Prefix.ENV),
            app_id,
        )
    finally:
        await conn.close()


def run_import(url: str, path: Path, slug: str) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "app", "import-users", str(path), "--app", slug],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, "JOBS_IN_SERVE": "false"},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"import failed ({result.returncode}): {result.stderr[-2000:]}")
    return seconds, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()
    import asyncio

    with tempfile.TemporaryDirectory() as tmp, bench_db(args.database_url) as url:
        path = Path(tmp) / "users.jsonl"
        write_file(path, args.count)
        slug = f"import-bench-{secrets.token_hex(4)}"
        asyncio.run(make_app(url, slug))
        load = os.getloadavg()
        first, summary = run_import(url, path, slug)
        again, summary_again = run_import(url, path, slug)
    command = f".venv/bin/python -m bench.import_users --count {args.count}"
    rate = args.count / first
    report = "\n".join(
        [
            "# Bulk import: `python -m app import-users`",
            "",
            f"`{command}` (embedded PostgreSQL unless BENCH_DATABASE_URL; load average before "
            f"the run {load[0]:.2f} on {os.cpu_count()} cores, shared with other work).",
            "",
            "| run | wall time (process start to exit) | rows/s | the command's summary |",
            "|---|---|---|---|",
            f"| first (all created) | {first:.1f} s | {rate:,.0f} | {summary} |",
            f"| second (all skipped) | {again:.1f} s | {args.count / again:,.0f} "
            f"| {summary_again} |",
            "",
            f"{args.count:,} users with one bcrypt hash (cost 10) reused, a name, two metadata "
            "keys, created_at and email_verified; each created user's `user.created` audit row "
            "is written in the same transaction as its batch (1,000 rows).",
            "",
        ]
    )
    RESULTS.write_text(report, encoding="utf-8")
    print(report)
    if not re.search(r"created \d+", summary):
        raise SystemExit("no summary")


if __name__ == "__main__":
    main()
