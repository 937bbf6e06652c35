"""Shared bench plumbing: a database to bench against, a server process, percentiles."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app import db as database
from app.embedded import EmbeddedPostgres
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def bench_database(url: str | None) -> tuple[str, EmbeddedPostgres | None]:
    """The URL of the bench database: given, or `userkeep_bench` on an embedded server whose
    data lives in .data/bench (kept between runs, so a seeded million users is reused)."""
    if url:
        return url, None
    pgdata = ROOT / ".data" / "bench" / "postgres"
    embedded = EmbeddedPostgres(pgdata)
    if _tune(embedded):
        embedded.stop()  # shared_buffers takes effect at the next start
        embedded = EmbeddedPostgres(pgdata)
    url = embedded.url("userkeep_bench")
    return url, embedded


# A million users are ~340 MB of heap: with the embedded default of 128 MB, broad searches
# read most pages from the OS cache. 1 GB is what an operator would give PostgreSQL for this
# data on a machine with a few GB of RAM (BENCH_SHARED_BUFFERS to change; an external
# BENCH_DATABASE_URL server keeps its own settings).
SHARED_BUFFERS = os.environ.get("BENCH_SHARED_BUFFERS", "1GB")


def _tune(embedded: EmbeddedPostgres) -> bool:
    """Set the bench server's shared_buffers; True when a restart is needed for it."""
    import asyncio

    import asyncpg

    async def tune() -> bool:
        conn = await asyncpg.connect(**database._asyncpg_args(embedded.url("postgres")))
        try:
            current = await conn.fetchval(
                "SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers'"
            )
            target = await conn.fetchval("SELECT pg_size_bytes($1)", SHARED_BUFFERS)
            if current == target:
                return False
            await conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
            return True
        finally:
            await conn.close()

    return asyncio.run(tune())


def prepare(url: str) -> None:
    """Create, migrate and give the database its default app, as a first `serve` would."""
    import asyncio

    from app.services import tenancy

    async def default_app() -> None:
        engine = database.create_engine(url, settings_for(url))
        async with database.session_factory(engine)() as db:
            await tenancy.ensure_default_app(db)
        await engine.dispose()

    asyncio.run(database.ensure_database(url))
    database.migrate(url)
    asyncio.run(default_app())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Where the file mailer of a bench server writes, should anything send: under the bench's own
# data, never the developer's .data/mail.
BENCH_DATA = ROOT / ".data" / "bench"


def start_server(url: str, workers: int = 1, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m app serve` on `url`. The benches measure requests, so no job worker runs in
    the server (JOBS_IN_SERVE=false: it would take CPU from the requests being measured, and
    send mail); a bench that queues mail purges it (`purge_queued_jobs`). MAIL_URL is not
    inherited: a worker a bench asks for (JOBS_IN_SERVE=true in `env`) writes .eml files
    under DATA_DIR, never to the developer's SMTP server."""
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if k != "MAIL_URL"},
        "DATABASE_URL": url,
        "PORT": str(port),
        "WORKERS": str(workers),
        "LOG_LEVEL": "warning",
        "JOBS_IN_SERVE": "false",
        "DATA_DIR": str(BENCH_DATA),
        **env,
    }
    # Warnings and errors of the server under test, for a look after a run with errors.
    log = open(ROOT / ".data" / "bench" / "server.log", "ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=log,
    )
    log.close()  # the child holds its own descriptor
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/v1/ready", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("server did not start")


async def purge_queued_jobs(url: str, kind: str = "mail.account") -> int:
    """Delete the jobs of `kind` still queued (those a bench's requests added while no worker
    ran), with their log and admin-view rows, so no later server or worker sends them and the
    bench database does not grow by a row per request. Returns how many there were."""
    import asyncpg

    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        purged: int = await conn.fetchval(
            """
            WITH gone AS (
                DELETE FROM pgqueuer WHERE entrypoint = $1 AND status = 'queued' RETURNING id
            ), logs AS (
                DELETE FROM pgqueuer_log WHERE job_id IN (SELECT id FROM gone)
            ), views AS (
                DELETE FROM jobs WHERE id IN (SELECT id FROM gone)
            )
            SELECT count(*) FROM gone
            """,
            kind,
        )
    finally:
        await conn.close()
    return purged


def tree_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a process and all its descendants so far: the live ones,
    and the ended ones it has waited for (its children_* times), so a uvicorn worker or a
    PostgreSQL backend that came and went still counts. None without psutil or the process."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        main = psutil.Process(pid)
        times = main.cpu_times()
        total = float(times.user + times.system + times.children_user + times.children_system)
        for child in main.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.Error:
                continue  # ended meanwhile: its parent's children_* times count it later
            total += child_times.user + child_times.system
        return total
    except psutil.Error:
        return None


async def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server's main process when it runs on this machine (the parent of our
    backend), for `tree_cpu`; None without psutil or for a server elsewhere."""
    import asyncpg

    try:
        import psutil
    except ImportError:
        return None
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        # Asked while the backend lives: it ends with the connection.
        return int(psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")).ppid())
    except psutil.Error:
        return None
    finally:
        await conn.close()


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def settings_for(url: str) -> Settings:
    return Settings(_env_file=None, database_url=url)  # type: ignore[call-arg,unused-ignore]


@contextmanager
def bench_db(url: str | None) -> Iterator[str]:
    """A prepared bench database for the duration of the block (embedded server stopped after)."""
    url, embedded = bench_database(url)
    try:
        prepare(url)
        yield url
    finally:
        if embedded is not None:
            embedded.stop()
