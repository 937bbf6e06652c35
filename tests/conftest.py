"""A real PostgreSQL for the suite: TEST_DATABASE_URL's server when set, else an embedded one.

Either way the suite gets a database of its own (created, migrated, dropped at the end), and
every test starts from empty tables, so tests are independent of order.
"""

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app import clock
from app import db as database
from app.embedded import EmbeddedPostgres
from app.main import create_app
from app.settings import Settings

# The SMTP server fixtures (smtp_server, tls_files) for the mailer's and the mail flows' tests.
pytest_plugins = ["tests.smtp_support"]


def _asyncpg(url: str, dbname: str | None = None) -> dict[str, object]:
    return database._asyncpg_args(url, database=dbname)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    external = os.environ.get("TEST_DATABASE_URL")
    embedded = None
    if external:
        server_url = external
    else:
        tmp = Path(tempfile.mkdtemp(prefix="userkeep-test-"))
        tmp.chmod(0o755)
        embedded = EmbeddedPostgres(tmp / "pg", delete_on_stop=True)
        server_url = embedded.url("postgres")
    name = f"userkeep_test_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)

    async def create() -> None:
        conn = await asyncpg.connect(**_asyncpg(server_url, "postgres"))
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(**_asyncpg(server_url, "postgres"))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(create())
    try:
        database.migrate(url)
        yield url
    finally:
        asyncio.run(drop())
        if embedded is not None:
            embedded.stop()


# The key tests/faroe_support.py signs with (FAROE_SECRET needs at least 32 bytes).
FAROE_SECRET = "test-faroe-secret-of-at-least-32-bytes"
SECRET_KEY = "test-secret-key-of-at-least-32-bytes-long"


def make_settings(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "migrate_on_start": False,
        # The concurrency tests send bursts of sign-ups; the overload test builds its own.
        "hash_queue_max": 1000,
        # The Faroe endpoint refuses to serve without a key (tests/test_faroe_*.py sign with it).
        "faroe_secret": FAROE_SECRET,
        # Most tests send many sign-ins from one address; tests/test_rate_limits.py turns
        # the limits on with small numbers.
        "rate_limits": "off",
        # Job workers run only where a test starts them (tests/test_jobs.py).
        "jobs_in_serve": False,
        # The file mailer, whatever MAIL_URL the developer's shell has: tests send no real mail.
        "mail_url": None,
        # A fixed key: no generated DATA_DIR/secret_key file, no warning at start.
        "secret_key": SECRET_KEY,
        # The webhook receiver of tests/test_webhooks.py listens on 127.0.0.1.
        "webhook_allow_private": True,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type,call-arg,unused-ignore]


@pytest.fixture(scope="session")
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
        yield c


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection, to assert on the rows themselves."""
    conn = await asyncpg.connect(**_asyncpg(database_url))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
async def clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    clock.reset()
    if "database_url" not in request.fixturenames:
        return
    url = request.getfixturevalue("database_url")
    conn = await asyncpg.connect(**_asyncpg(url))
    try:
        await conn.execute(
            "TRUNCATE audit_events, email_codes, sessions, users, api_keys, rate_limits, "
            "user_counts, jobs, pgqueuer, pgqueuer_log, pgqueuer_statistics, "
            "webhook_endpoints, webhook_deliveries, signing_keys, mfa_enrollments, "
            "mfa_recovery_codes, mfa_tokens"
        )
        await conn.execute("DELETE FROM apps WHERE slug <> 'default'")
        await conn.execute(
            "UPDATE apps SET mail_from = NULL, link_base_url = NULL, "
            "require_email_verification = NULL"
        )
    finally:
        await conn.close()
    if "app" in request.fixturenames:
        # The shared app's copy of the signing keys would name keys the TRUNCATE removed.
        request.getfixturevalue("app").state.signing_keys.forget()
