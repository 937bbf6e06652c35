"""Time `python -m app import-users` on N users with bcrypt hashes (issue "Admin power tools":
200,000 in at most 60 s on the embedded PostgreSQL).

    .venv/bin/python -m bench.import_users [--count 200000] [--database-url URL]

Writes a JSON Lines file of N users (distinct e-mails, a name, metadata, and ONE bcrypt hash at
cost 10 reused: the bench measures the import, not bcrypt), imports it into a fresh app of the
bench database as an operator would, then imports it again (every row skipped). Prints the
figures and the command, and writes bench/results/import.md.
"""

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import bcrypt

from app import db as database
from app.ids import Prefix, new_id
from bench.common import ROOT, bench_db, postmaster_pid, tree_cpu

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


@dataclass(frozen=True)
class Run:
    seconds: float
    summary: str
    app_cpu: float  # the import-users process, user + system
    db_cpu: float | None  # every PostgreSQL process meanwhile (None: server elsewhere)


def run_import(url: str, path: Path, slug: str, postmaster: int | None) -> Run:
    db_before = tree_cpu(postmaster) if postmaster else None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    db_after = tree_cpu(postmaster) if postmaster else None
    if result.returncode != 0:
        raise SystemExit(f"import failed ({result.returncode}): {result.stderr[-2000:]}")
    app_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    db_cpu = db_after - db_before if db_after is not None and db_before is not None else None
    return Run(seconds, result.stdout.strip(), app_cpu, db_cpu)


def _row(name: str, run: Run, count: int) -> str:
    db = f"{run.db_cpu:.1f} s" if run.db_cpu is not None else "?"
    # Two cores to itself: the app and PostgreSQL each on one, or both sharing both.
    floor = max(run.app_cpu, run.db_cpu or 0.0, (run.app_cpu + (run.db_cpu or 0.0)) / 2)
    return (
        f"| {name} | {run.seconds:.1f} s | {count / run.seconds:,.0f} | {run.app_cpu:.1f} s "
        f"| {db} | {floor:.1f} s | {run.summary} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, bench_db(args.database_url) as url:
        path = Path(tmp) / "users.jsonl"
        write_file(path, args.count)
        slug = f"import-bench-{secrets.token_hex(4)}"
        asyncio.run(make_app(url, slug))
        postmaster = asyncio.run(postmaster_pid(url))
        load = os.getloadavg()
        first = run_import(url, path, slug, postmaster)
        again = run_import(url, path, slug, postmaster)
        load_after = os.getloadavg()
    command = f".venv/bin/python -m bench.import_users --count {args.count}"
    report = "\n".join(
        [
            "# Bulk import: `python -m app import-users`",
            "",
            f"`{command}` (the embedded bench PostgreSQL unless BENCH_DATABASE_URL).",
            "",
            "| run | wall time | rows/s | import CPU | PostgreSQL CPU | CPU floor on 2 idle cores "
            "| the command's summary |",
            "|---|---|---|---|---|---|---|",
            _row("first (all created)", first, args.count),
            _row("second (all skipped)", again, args.count),
            "",
            f"Load average {load[0]:.2f} before, {load_after[0]:.2f} after, on "
            f"{os.cpu_count()} cores shared with other work. Wall time is from process start to "
            "exit (migrations checked, the file read and checked, every batch committed). The "
            "floor is the least wall time the measured CPU allows on two cores of its own: "
            "max(import, PostgreSQL, (import + PostgreSQL) / 2).",
            "",
            f"{args.count:,} users with one bcrypt hash (cost 10) reused, a name, two metadata "
            "keys, created_at and email_verified; each created user's `user.created` audit row "
            "is written in the same transaction as its batch (1,000 rows).",
            "",
        ]
    )
    RESULTS.write_text(report, encoding="utf-8")
    print(report)
    if not re.search(r"created \d+", first.summary):
        raise SystemExit("no summary")


if __name__ == "__main__":
    main()
