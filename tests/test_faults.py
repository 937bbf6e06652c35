"""Faults: the database stopped, stalled and restarted under traffic, and the server killed with
SIGKILL in the middle of 200 sign-ups. (Bodies that are not JSON: tests/test_http_errors.py.)

The database tests run on an embedded PostgreSQL of this module's own, which they stop, freeze
and start again; the suite's server is never touched.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app import db as database
from app.embedded import EmbeddedPostgres
from app.main import create_app
from app.security import tokens
from tests.conftest import make_settings
from tests.helpers import PASSWORD, bearer, unique_email
from tests.process_support import wait_ready

ROOT = Path(__file__).resolve().parent.parent
# "Never a hang": every request must be answered within this, whatever the database does.
CLIENT_TIMEOUT = 10.0


class OwnPostgres:
    """An embedded PostgreSQL that a test may stop, freeze and start again on the same data."""

    def __init__(self, root: Path) -> None:
        self.pgdata = root / "pg"
        self.server: EmbeddedPostgres | None = EmbeddedPostgres(self.pgdata)
        self.url = self.server.url()
        self.frozen: list[int] = []

    def start(self) -> None:
        if self.server is None:
            self.server = EmbeddedPostgres(self.pgdata)
            assert self.server.url() == self.url  # same socket, same data

    def stop(self) -> None:
        self.thaw()
        if self.server is not None:
            self.server.stop()
            self.server = None

    def postmaster(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every backend: a server that neither answers nor closes
        anything, like one behind a network partition."""
        postmaster = self.postmaster()
        self.frozen = [postmaster, *_children(postmaster)]
        for pid in self.frozen:
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen = []

    def database_url(self, name: str) -> str:
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)


def _children(parent: int) -> list[int]:
    """The pids whose parent is `parent` (PostgreSQL's backends each run in their own session,
    so no process group reaches them all)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs Linux /proc to find the PostgreSQL processes")
    root = Path(tempfile.mkdtemp(prefix="userkeep-faults-"))
    root.chmod(0o755)  # the embedded server runs as another user when we are root
    server = None
    try:
        server = OwnPostgres(root)
        asyncio.run(database.ensure_database(server.url))
        database.migrate(server.url)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def running_pg(own_pg: OwnPostgres) -> Iterator[OwnPostgres]:
    """The module's server, running, and running again after the test whatever happened."""
    own_pg.start()
    try:
        yield own_pg
    finally:
        own_pg.thaw()
        own_pg.start()


@asynccontextmanager
async def _serving(url: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app on `url` and a client of it. Rate limits are on (their counters live in the
    same PostgreSQL, so their failure path runs too), with room for the traffic below."""
    settings = make_settings(
        url,
        rate_limits="on",
        rate_limit_signin_ip="100000/60",
        rate_limit_signup_ip="100000/60",
        rate_limit_account_failures="100000/60",
        rate_limit_mail_ip="100000/60",
        rate_limit_mail_address="100000/60",
        **overrides,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        # raise_app_exceptions=False: a client sees a 500 as a 500, not as an exception.
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
            yield application, c


@pytest.fixture
async def served(running_pg: OwnPostgres) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with the default database timeouts: a stopped server is refused at once."""
    async with _serving(running_pg.url) as both:
        yield both


@pytest.fixture
def fault_app(served: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return served[0]


@pytest.fixture
def fault_client(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


@dataclass
class Account:
    email: str
    token: str


async def _account(client: httpx.AsyncClient) -> Account:
    email = unique_email("fault")
    response = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return Account(email, response.json()["session_token"])


Call = Callable[[], Awaitable[httpx.Response]]


def _calls(client: httpx.AsyncClient, account: Account) -> dict[str, tuple[int, Call]]:
    """The requests under test, by name: (the status when the database is up, the call)."""
    return {
        "me": (200, lambda: client.get("/v1/auth/me", headers=bearer(account.token))),
        "signin": (
            200,
            lambda: client.post(
                "/v1/auth/signin", json={"email": account.email, "password": PASSWORD}
            ),
        ),
        "signup": (
            201,
            lambda: client.post(
                "/v1/auth/signup", json={"email": unique_email("fault"), "password": PASSWORD}
            ),
        ),
        # A write of no change: its job is group-committed with its neighbours' (job_batches).
        "forgot": (
            200,
            lambda: client.post("/v1/auth/forgot-password", json={"email": account.email}),
        ),
        "ready": (200, lambda: client.get("/v1/ready")),
    }


async def _outcome(ok: int, call: Call) -> str:
    """'ok', '503' (a well-formed service_unavailable), or what went wrong."""
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            response = await call()
    except TimeoutError:
        return "hang"
    if response.status_code == ok:
        return "ok"
    if response.status_code == 503:
        body = response.json()
        assert body == {
            "error": body["error"],
            "code": 503,
            "type": "service_unavailable",
        }, body
        assert int(response.headers["retry-after"]) >= 1
        return "503"
    return f"{response.status_code} {response.text[:200]}"


async def _each(calls: dict[str, tuple[int, Call]]) -> dict[str, str]:
    results = await asyncio.gather(*(_outcome(ok, call) for ok, call in calls.values()))
    return dict(zip(calls, results, strict=True))


async def test_database_restart_with_an_idle_pool_costs_no_request(
    fault_app, fault_client, running_pg
):
    """Every pooled connection died with the server; none of them reaches a request."""
    account = await _account(fault_client)
    calls = _calls(fault_client, account)
    await asyncio.gather(*(calls["me"][1]() for _ in range(8)))  # several pooled connections
    assert fault_app.state.engine.pool.checkedin() >= 1

    await asyncio.to_thread(running_pg.stop)
    await asyncio.to_thread(running_pg.start)

    for _ in range(3):
        assert await _each(calls) == dict.fromkeys(calls, "ok")


async def test_database_stopped_under_traffic_is_503_then_recovers(fault_client, running_pg):
    account = await _account(fault_client)
    calls = _calls(fault_client, account)
    phase = "up"
    seen: dict[str, Counter[str]] = {"up": Counter(), "stopping": Counter(), "down": Counter()}
    running = True
    # Each phase lasts until every kind of request has been answered in it at least once.
    answered: dict[str, set[str]] = {"up": set(), "down": set()}
    phase_done = {"up": asyncio.Event(), "down": asyncio.Event()}

    async def traffic(name: str) -> None:
        ok, call = calls[name]
        while running:
            started = phase
            outcome = await _outcome(ok, call)
            # A request that saw the stop begin is counted with those "in flight".
            counted = started if started == phase else "stopping"
            seen[counted][outcome] += 1
            if counted in answered:
                answered[counted].add(name)
                if answered[counted] == set(calls):
                    phase_done[counted].set()
            # Failing fast can mean failing without a real await in-process (a refused
            # connection): let the other tasks, and the test itself, run.
            await asyncio.sleep(0.005)

    workers = [asyncio.create_task(traffic(name)) for name in calls for _ in range(3)]
    try:
        await asyncio.wait_for(phase_done["up"].wait(), 60)
        phase = "stopping"  # PostgreSQL's fast shutdown: in-flight work is cut off
        await asyncio.to_thread(running_pg.stop)
        phase = "down"
        await asyncio.wait_for(phase_done["down"].wait(), 60)
    finally:
        running = False
        await asyncio.gather(*workers)

    assert seen["up"]["ok"] > 0 and set(seen["up"]) == {"ok"}, seen
    # While it stops and after: answered, and either done or a clean 503. Never a 500.
    assert set(seen["stopping"]) <= {"ok", "503"}, seen
    assert set(seen["down"]) == {"503"}, seen
    assert await _each(calls) == dict.fromkeys(calls, "503")

    await asyncio.to_thread(running_pg.start)
    # Back without restarting the app: the same token, new sign-ups, readiness.
    assert await _each(calls) == dict.fromkeys(calls, "ok")
    me = await fault_client.get("/v1/auth/me", headers=bearer(account.token))
    assert me.status_code == 200 and me.json()["email"] == account.email
    await _assert_no_half_written_signups(running_pg.url)


async def test_database_shutting_down_is_503_then_recovers(fault_app, fault_client, running_pg):
    """A smart shutdown (SIGTERM) waits for its last client session to end; meanwhile every new
    connection is refused with SQLSTATE 57P03, "the database system is shutting down"."""
    account = await _account(fault_client)
    calls = _calls(fault_client, account)
    last_client = await asyncpg.connect(**database._asyncpg_args(running_pg.url))
    try:
        await fault_app.state.engine.dispose()  # so that every request needs a new connection
        postmaster = running_pg.postmaster()
        os.kill(postmaster, signal.SIGTERM)
        async with asyncio.timeout(10):
            while True:
                try:
                    await (await asyncpg.connect(**database._asyncpg_args(running_pg.url))).close()
                except asyncpg.CannotConnectNowError:
                    break
                await asyncio.sleep(0.02)
        assert await _each(calls) == dict.fromkeys(calls, "503")
    finally:
        await last_client.close()
    await asyncio.to_thread(_wait_gone, postmaster)
    await asyncio.to_thread(running_pg.stop)
    await asyncio.to_thread(running_pg.start)
    assert await _each(calls) == dict.fromkeys(calls, "ok")


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still running")


async def test_database_frozen_is_503_within_the_timeouts_then_recovers(running_pg):
    """A server that accepts connections but never answers (SIGSTOP): pooled connections hit
    DB_COMMAND_TIMEOUT, new ones DB_CONNECT_TIMEOUT, waiters DB_POOL_TIMEOUT — each a 503
    well within the client's patience. Short timeouts keep the test quick."""
    timeouts = {"db_connect_timeout": 1, "db_pool_timeout": 1, "db_command_timeout": 2}
    async with _serving(running_pg.url, db_pool_size=4, db_max_overflow=2, **timeouts) as (
        app,
        client,
    ):
        account = await _account(client)
        calls = _calls(client, account)
        await asyncio.gather(*(calls["me"][1]() for _ in range(4)))

        running_pg.freeze()
        try:
            # More requests than the pool has connections: every kind of wait is exercised.
            burst = [name for name in calls for _ in range(4)]
            outcomes = await asyncio.gather(*(_outcome(*calls[name]) for name in burst))
        finally:
            running_pg.thaw()
        assert set(outcomes) == {"503"}, Counter(outcomes)

        for _ in range(2):
            assert await _each(calls) == dict.fromkeys(calls, "ok")
        assert app.state.engine.pool.checkedout() == 0


# --- the server killed mid-flight --------------------------------------------------------------

SIGNUPS = 200
KILL_AFTER = 40  # successful sign-ups before the SIGKILL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    database_url: str
    log: Path


@pytest.fixture
def server(running_pg: OwnPostgres, tmp_path: Path) -> Iterator[Server]:
    """`python -m app serve` on a fresh database of the module's PostgreSQL."""
    name = f"userkeep_kill_{uuid.uuid4().hex[:8]}"
    url = running_pg.database_url(name)
    asyncio.run(database.ensure_database(url))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    env.update(
        DATABASE_URL=url,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="1",
        LOG_LEVEL="warning",
        # Sign-ups wait for a hashing slot rather than being refused: all 200 are in flight.
        HASH_QUEUE_MAX="1000",
        RATE_LIMIT_SIGNUP_IP="100000/60",
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, for the SIGKILL
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process, log.read_text)
        yield Server(process, base_url, url, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        asyncio.run(_drop_database(running_pg.url, name))


async def _drop_database(url: str, name: str) -> None:
    conn = await asyncpg.connect(**database._asyncpg_args(url, database="postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_sigkill_during_signups_leaves_no_half_written_user(server):
    created: dict[str, dict[str, Any]] = {}  # e-mail -> the 201 body
    failed: Counter[str] = Counter()
    enough = asyncio.Event()

    async def one(client: httpx.AsyncClient, email: str) -> None:
        try:
            response = await client.post(
                "/v1/auth/signup", json={"email": email, "password": PASSWORD}
            )
        except httpx.TransportError as exc:  # the server died mid-request
            failed[type(exc).__name__] += 1
            return
        assert response.status_code == 201, response.text
        created[email] = response.json()
        if len(created) >= KILL_AFTER:
            enough.set()

    limits = httpx.Limits(max_connections=SIGNUPS, max_keepalive_connections=0)
    timeout = httpx.Timeout(60, connect=10)
    emails = [unique_email("kill") for _ in range(SIGNUPS)]
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=timeout) as c:
        everything = asyncio.gather(*(one(c, email) for email in emails))
        waiter = asyncio.ensure_future(enough.wait())
        # Until enough sign-ups succeeded, or all ended (a failed assertion in one()).
        either: list[asyncio.Future[Any]] = [waiter, everything]
        await asyncio.wait(either, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        os.killpg(server.process.pid, signal.SIGKILL)
        await everything
    assert await asyncio.to_thread(server.process.wait, 30) == -signal.SIGKILL

    assert len(created) >= KILL_AFTER
    assert len(created) < SIGNUPS and failed, "the kill came after every sign-up had finished"
    await _assert_no_half_written_signups(server.database_url, created)

    # Every 201 holds after the crash: the account signs in on a fresh app, and the session
    # token it was given still works.
    application = create_app(make_settings(server.database_url))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:

            async def check(email: str, body: dict[str, Any]) -> None:
                me = await c.get("/v1/auth/me", headers=bearer(body["session_token"]))
                assert me.status_code == 200 and me.json()["id"] == body["user"]["id"], me.text
                signin = await c.post(
                    "/v1/auth/signin", json={"email": email, "password": PASSWORD}
                )
                assert signin.status_code == 200, signin.text

            await asyncio.gather(*(check(email, body) for email, body in created.items()))


async def _assert_no_half_written_signups(
    url: str, created: dict[str, dict[str, Any]] | None = None
) -> None:
    """One sign-up is one transaction: the user row (and its user_counts tally), its first
    session, and its `user.signup` audit event. Each user has all of them or does not exist;
    nothing refers to a user that does not exist. `created`: the 201 answers, whose users must
    all be there with the very tokens they were given."""
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        users = {
            row["id"]: row
            for row in await conn.fetch("SELECT id, email, app_id, env_id FROM users")
        }
        signups = await conn.fetch(
            "SELECT actor_id, target_user_id, app_id, env_id FROM audit_events "
            "WHERE action = 'user.signup'"
        )
        by_user = Counter(row["target_user_id"] for row in signups)
        assert set(by_user) == set(users) and set(by_user.values()) == {1}, "signup events"
        for row in signups:
            user = users[row["target_user_id"]]
            assert row["actor_id"] == user["id"]
            assert (row["app_id"], row["env_id"]) == (user["app_id"], user["env_id"])
        first_sessions = await conn.fetch(
            "SELECT DISTINCT ON (user_id) user_id, token_hash, refresh_token_hash "
            "FROM sessions ORDER BY user_id, created_at"
        )
        first = {row["user_id"]: row for row in first_sessions}
        assert set(first) == set(users), "a user without its first session, or the reverse"
        orphans = await conn.fetchval(
            "SELECT count(*) FROM audit_events a WHERE "
            "(a.target_user_id IS NOT NULL AND a.target_user_id NOT IN (SELECT id FROM users)) "
            "OR (a.actor_type = 'user' AND a.actor_id IS NOT NULL "
            "AND a.actor_id NOT IN (SELECT id FROM users))"
        )
        assert orphans == 0, "audit events of users that do not exist"
        tally = await conn.fetchval("SELECT coalesce(sum(live), 0) FROM user_counts")
        assert tally == len(users), "user_counts out of step with users"
    finally:
        await conn.close()
    for email, body in (created or {}).items():
        user_id = body["user"]["id"]
        assert users[user_id]["email"] == email
        assert first[user_id]["token_hash"] == tokens.digest(body["session_token"])
        assert first[user_id]["refresh_token_hash"] == tokens.digest(body["refresh_token"])
