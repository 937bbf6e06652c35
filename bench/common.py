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


def start_server(url: str, workers: int = 1, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "PORT": str(port),
        "WORKERS": str(workers),
        "LOG_LEVEL": "warning",
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
