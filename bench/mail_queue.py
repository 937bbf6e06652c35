"""Mail queue throughput: password-reset mails per second from the queue to an SMTP server.

    make bench-mail                     # or: .venv/bin/python -m bench.mail_queue
    .venv/bin/python -m bench.mail_queue [--jobs 10000] [--runs 1x4,1x16] [--database-url URL]
    .venv/bin/python -m bench.mail_queue --jobs 3000 --runs 1x4 --profile   # py-spy, no table

For each run (PROCESSES x JOBS_CONCURRENCY): `--jobs` mail jobs are queued first, exactly as
POST /v1/auth/forgot-password queues them (email_flows' own enqueue, one transaction, for as
many distinct live users of the bench database) — the enqueue is not what is measured. Then
PROCESSES `python -m app worker` processes start with MAIL_URL pointing at a local SMTP sink
(aiosmtpd in a thread of this process: it counts the messages and drops them), and the bench
waits until no job of the run is queued or running. Each job does the whole work of a real
one: finds the user by address, issues a code (an upsert into email_codes), writes an audit
row, renders the three templates, and sends over a new SMTP connection.

Reported: mails/s from the first message the sink received to the last (the steady rate;
worker start-up is left out and shown separately), the end-to-end time from the workers' start,
and the CPU each part spent per mail: the workers (their rusage), PostgreSQL (the server's
processes, when it runs on this machine, seen through psutil) and the sink (this process).
The table goes to stdout and to bench/results/mail-queue.md. After each run the bench deletes
what it made (the jobs' rows, their log, audit rows, codes) and vacuums, so runs start alike.

`--profile` records the (single) worker with py-spy instead (bench/results/profile-mail-worker.txt
and a summary by package and function, as bench.profile_me); its throughput is not reported,
the profiler takes CPU of its own.
"""

import argparse
import asyncio
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from app import db as database
from app.services import email_flows, tenancy
from app.services.audit import Origin
from bench import fixtures, seed_users
from bench.common import (
    BENCH_DATA,
    ROOT,
    bench_db,
    free_port,
    postmaster_pid,
    purge_queued_jobs,
    settings_for,
    tree_cpu,
)

RESULTS = ROOT / "bench" / "results"
# The audit rows (and so the codes) of the bench's own jobs carry this user agent: the cleanup
# after a run finds them by it.
AGENT = "userkeep-bench-mail-queue"


# ---- the SMTP sink -------------------------------------------------------------------------


class Sink:
    """aiosmtpd handler: accepts every message, keeps only a count and the first and last
    arrival times."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.count = 0
            self.first: float | None = None
            self.last: float | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.monotonic()
        with self.lock:
            self.count += 1
            if self.first is None:
                self.first = now
            self.last = now
        return "250 OK"


# ---- CPU accounting ------------------------------------------------------------------------


def children_cpu() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    """CPU seconds of this process: the sink's thread, and the polling."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of the whole PostgreSQL server so far (None when it is not on this
    machine)."""
    return tree_cpu(postmaster) if postmaster is not None else None


# ---- one run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    processes: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.processes}x{self.concurrency}"


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**database._asyncpg_args(url))


async def enqueue(url: str, addresses: list[str]) -> tuple[int, float]:
    """Queue one reset mail per address as forgot-password does, in one transaction. Returns
    the highest job id before them (every job of the run has a greater one) and the seconds
    the enqueue took."""
    engine = database.create_engine(url, settings_for(url))
    conn = await _connect(url)
    try:
        before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM jobs")
        by = email_flows.Requester(Origin("127.0.0.1", AGENT))
        started = time.perf_counter()
        async with database.session_factory(engine)() as db:
            async with db.begin():
                env = await tenancy.resolve(db, None, None)
            async with db.begin():
                for address in addresses:
                    await email_flows._enqueue(
                        db, env.app_id, email_flows.Mail.RESET, by, env_id=env.id, email=address
                    )
        took = time.perf_counter() - started
        # As autovacuum would soon: the dequeue query plans on the queue as it now is. And a
        # checkpoint, so the enqueue's writes are not flushed during the run.
        await conn.execute("VACUUM ANALYZE pgqueuer")
        await _checkpoint(conn)
    finally:
        await conn.close()
        await engine.dispose()
    return before, took


async def _checkpoint(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        pass  # an external server as a non-superuser: measure without it


async def statuses(url: str, after: int) -> dict[str, int]:
    conn = await _connect(url)
    try:
        rows = await conn.fetch(
            "SELECT status, count(*) FROM jobs WHERE id > $1 GROUP BY status", after
        )
    finally:
        await conn.close()
    return {row[0]: row[1] for row in rows}


async def clean(url: str, after: int) -> None:
    """Remove what a run left: its jobs (admin view and pgqueuer's log), the audit rows of its
    mails and the codes they issued; then vacuum, so the next run starts on the same tables."""
    conn = await _connect(url)
    try:
        await purge_queued_jobs(url)  # none, unless a run ended early
        await conn.execute("DELETE FROM pgqueuer_log WHERE job_id > $1", after)
        await conn.execute("DELETE FROM jobs WHERE id > $1", after)
        await conn.execute(
            """
            WITH mails AS (
                DELETE FROM audit_events WHERE action = 'user.password_reset_mail_sent'
                AND user_agent = $1 RETURNING target_user_id
            )
            DELETE FROM email_codes WHERE purpose = 'reset_password'
            AND user_id IN (SELECT target_user_id FROM mails)
            """,
            AGENT,
        )
        for table in ("pgqueuer", "pgqueuer_log", "jobs", "audit_events", "email_codes"):
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()


def start_workers(url: str, smtp_port: int, run: Run) -> list[subprocess.Popen[bytes]]:
    env = {
        # Never the developer's MAIL_URL: the sink is the only place these mails may go.
        **{k: v for k, v in os.environ.items() if k != "MAIL_URL"},
        "DATABASE_URL": url,
        "MAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "JOBS_CONCURRENCY": str(run.concurrency),
        "LOG_LEVEL": "warning",
        "DATA_DIR": str(BENCH_DATA),
    }
    log = open(BENCH_DATA / "worker.log", "ab")
    try:
        return [
            subprocess.Popen(
                [sys.executable, "-m", "app", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
            for _ in range(run.processes)
        ]
    finally:
        log.close()  # each child holds its own descriptor


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def measure(
    url: str,
    sink: Sink,
    smtp_port: int,
    run: Run,
    addresses: list[str],
    postmaster: int | None,
    timeout: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    jobs = len(addresses)
    after, enqueue_seconds = asyncio.run(enqueue(url, addresses))
    print(f"  {run.label}: {jobs:,} jobs queued in {enqueue_seconds:.1f} s", flush=True)
    sink.reset()
    cpu_children, cpu_self, cpu_pg = children_cpu(), own_cpu(), postgres_cpu(postmaster)
    spawned = time.monotonic()
    workers = start_workers(url, smtp_port, run)
    profiler = None
    if profile is not None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        profiler = subprocess.Popen(  # noqa: S603
            [
                *(py_spy, "record", "--pid", str(workers[0].pid), "--rate", "250", "--gil"),
                *("--format", "raw", "--output", str(profile)),
            ],
            stdout=subprocess.DEVNULL,
        )
    counts: dict[str, int] = {}
    timed_out = False
    try:
        next_report = spawned + 10
        while True:
            time.sleep(0.5)
            counts = asyncio.run(statuses(url, after))
            if not counts.get("queued") and not counts.get("running"):
                break
            dead = [w.returncode for w in workers if w.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited with {dead}: see {BENCH_DATA / 'worker.log'}")
            if time.monotonic() - spawned > timeout:
                timed_out = True
                break
            if time.monotonic() >= next_report:
                next_report += 10
                print(f"    {sink.count:,} mails, jobs {counts}", flush=True)
    finally:
        stop_workers(workers)
        if profiler is not None:
            profiler.wait(timeout=60)  # py-spy writes its file when the worker has exited
    # The workers' backends end with their connections; let the postmaster reap them.
    time.sleep(1)
    cpu = {
        "workers": children_cpu() - cpu_children,
        "sink": own_cpu() - cpu_self,
        "postgres": None,
    }
    pg_after = postgres_cpu(postmaster)
    if cpu_pg is not None and pg_after is not None:
        cpu["postgres"] = pg_after - cpu_pg
    with sink.lock:
        delivered, first, last = sink.count, sink.first, sink.last
    result: dict[str, Any] = {
        "run": run,
        "jobs": jobs,
        "delivered": delivered,
        "statuses": counts,
        "timed_out": timed_out,
        "enqueue_seconds": enqueue_seconds,
        "cpu": cpu,
    }
    if first is not None and last is not None and delivered > 1:
        result["startup"] = first - spawned
        result["window"] = last - first
        result["rate"] = (delivered - 1) / (last - first)
        result["end_to_end"] = last - spawned
    asyncio.run(clean(url, after))
    return result


# ---- the table -----------------------------------------------------------------------------


def per_mail(seconds: float | None, delivered: int) -> str:
    return "-" if seconds is None or not delivered else f"{1000 * seconds / delivered:.2f}"


def render(results: list[dict[str, Any]], facts: dict[str, Any], command: str) -> str:
    load = facts["load"]
    lines = [
        f"## Mail queue bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, PostgreSQL {facts['postgres']} (same machine); load "
        f"average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- command: `{command}`",
        f"- data: {facts['users']:,} users; each run queues {facts['jobs']:,} password-reset "
        "mails by address (forgot-password's job) for as many distinct live users",
        "- workers: `python -m app worker` (LOG_LEVEL=warning), MAIL_URL=smtp://127.0.0.1 "
        "(aiosmtpd sink in the bench process, no TLS, messages counted and dropped); one new "
        "SMTP connection per mail",
        "",
        "| workers x JOBS_CONCURRENCY | mails/s | delivered | start-up s | first→last s | "
        "end-to-end s | CPU ms/mail: worker | postgres | sink |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu, delivered = r["cpu"], r["delivered"]
        failed = r["statuses"].get("failed", 0)
        note = f" ({failed:,} failed)" if failed else ""
        note += " (timed out)" if r["timed_out"] else ""
        if "rate" not in r:
            lines.append(f"| {r['run'].label} | - | {delivered:,} of {r['jobs']:,}{note} | |||||")
            continue
        lines.append(
            f"| {r['run'].label} | {r['rate']:,.0f} | {delivered:,} of {r['jobs']:,}{note} | "
            f"{r['startup']:.1f} | {r['window']:.1f} | {r['end_to_end']:.1f} | "
            f"{per_mail(cpu['workers'], delivered)} | {per_mail(cpu['postgres'], delivered)} | "
            f"{per_mail(cpu['sink'], delivered)} |"
        )
    return "\n".join(lines) + "\n"


def parse_runs(text: str) -> list[Run]:
    runs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        processes, _, concurrency = part.partition("x")
        runs.append(Run(int(processes), int(concurrency)))
    return runs


async def facts_of(url: str, jobs: int) -> dict[str, Any]:
    conn = await _connect(url)
    try:
        return {
            "users": await conn.fetchval("SELECT count(*) FROM users"),
            "postgres": await conn.fetchval("SHOW server_version"),
            "addresses": await fixtures.sample_emails(conn, jobs),
        }
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument(
        "--runs",
        default="1x4,1x16",
        help="comma list of PROCESSESxJOBS_CONCURRENCY (default 1x4,1x16; 4 is the default "
        "JOBS_CONCURRENCY)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run at most")
    parser.add_argument("--database-url")
    parser.add_argument("--profile", action="store_true", help="py-spy on the first run's worker")
    args = parser.parse_args()
    runs = parse_runs(args.runs)
    if args.profile:
        runs = [Run(1, runs[0].concurrency)]
    load = os.getloadavg()
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    sink = Sink()
    smtp_port = free_port()
    # server_hostname: aiosmtpd would otherwise look up this host's name (DNS) per connection.
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port, server_hostname="sink")
    controller.start()
    results = []
    try:
        with bench_db(args.database_url) as url:
            asyncio.run(seed_users.seed(url, args.jobs))
            facts = asyncio.run(facts_of(url, args.jobs))
            addresses = facts.pop("addresses")
            if len(addresses) < args.jobs:
                sys.exit(f"only {len(addresses):,} live users to mail")
            facts |= {"load": load, "jobs": args.jobs}
            postmaster = asyncio.run(postmaster_pid(url))
            asyncio.run(clean(url, 2**62))  # a run cut short earlier left queued jobs
            profile = RESULTS / "profile-mail-worker.txt" if args.profile else None
            for run in runs:
                result = measure(
                    url, sink, smtp_port, run, addresses, postmaster, args.timeout, profile
                )
                results.append(result)
                if "rate" in result:
                    print(
                        f"    {result['rate']:.0f} mails/s, {result['delivered']:,} delivered, "
                        f"jobs {result['statuses']}",
                        flush=True,
                    )
    finally:
        controller.stop()
    if profile is not None:
        from bench.profile_me import summarize

        print(summarize(profile))
        print(f"\ncollapsed stacks: {profile.relative_to(ROOT)}")
        return
    command = " ".join([".venv/bin/python -m bench.mail_queue", *sys.argv[1:]])
    if os.environ.get("MAKELEVEL") and not sys.argv[1:]:
        command = "make bench-mail"
    table = render(results, facts, command)
    print("\n" + table)
    path = RESULTS / "mail-queue.md"
    path.write_text(table, "utf-8")
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
