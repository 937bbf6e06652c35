"""Webhooks under faults: a receiver that is down, a burst of concurrent changes, and HTTPS
(the certificate checked against the host name sent in SNI, never a request in clear)."""

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import ValidationError

from app.main import create_app
from tests.admin_support import auth, default_app, make_admin
from tests.conftest import make_settings
from tests.helpers import PASSWORD, unique_email
from tests.process_support import free_port
from tests.smtp_support import make_tls_files
from tests.test_webhooks import _create, _deliveries, _verify
from tests.webhook_support import receiver, worker

# A name only this process's resolver knows (see `hosts`): the guard resolves it like any other.
NAME = "hooks.userkeep.test"


@pytest.fixture
async def root(pg) -> dict[str, str]:
    return auth(await make_admin(pg, await default_app(pg)))


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """NAME resolves to 127.0.0.1 (an /etc/hosts line for this process): the event loop's
    getaddrinfo, which the SSRF guard calls, looks socket.getaddrinfo up at each call."""
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == NAME else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


async def _due_now(pg) -> None:
    """The retries' backoff has passed: pgqueuer schedules them in the database's time (its
    `execute_after`), which the app's clock does not move."""
    await pg.execute("UPDATE pgqueuer SET execute_after = now() WHERE status = 'queued'")


async def signup_ok(client: AsyncClient) -> dict[str, Any]:
    response = await client.post(
        "/v1/auth/signup", json={"email": unique_email("down"), "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    found: dict[str, Any] = response.json()
    return found


# ---- a receiver down, then up --------------------------------------------------------------


async def test_events_raised_while_the_receiver_is_down_arrive_when_it_is_up(
    client, app, database_url, pg, root
):
    port = free_port()  # nothing listens there yet: connection refused
    created = await _create(client, root, f"http://127.0.0.1:{port}/hooks", ["user.created"])
    async with worker(app, database_url):
        users = [await signup_ok(client) for _ in range(3)]
        failed = await _deliveries(client, root, created["id"], 3)
        async with receiver(port=port) as hook:
            await _due_now(pg)
            requests = await hook.wait_for(3)
            rows = await _deliveries(client, root, created["id"], 6)
    for row in failed:
        assert (row["status"], row["http_status"], row["attempt"]) == ("failed", None, 1)
        assert "ConnectError" in row["error"] and row["next_retry_at"] is not None
    failed_ids = {row["event_id"] for row in failed}
    assert len(failed_ids) == 3
    # Every event arrives, under the id its failed attempt was recorded with.
    assert sorted(r.headers["webhook-id"] for r in requests) == sorted(failed_ids)
    bodies = [_verify(created["secret"], r) for r in requests]
    assert {b["data"]["id"] for b in bodies} == {u["user"]["id"] for u in users}
    jobs = await pg.fetch("SELECT status, attempts FROM jobs WHERE kind = 'webhook.deliver'")
    assert sorted(tuple(row) for row in jobs) == [("succeeded", 2)] * 3
    succeeded = [row for row in rows if row["status"] == "succeeded"]
    assert {(row["event_id"], row["attempt"]) for row in succeeded} == {
        (event_id, 2) for event_id in failed_ids
    }


# ---- 1,000 sign-ups from 20 clients at once ------------------------------------------------

CLIENTS = 20
SIGNUPS = 1000


@pytest.fixture
async def cheap_app(database_url: str) -> AsyncIterator[FastAPI]:
    """The suite's database with the cheapest argon2 the settings allow: this test is about
    events, and 1,000 default hashes would take most of a minute on a small machine."""
    application = create_app(
        make_settings(database_url, argon2_time_cost=1, argon2_memory_kib=8, hash_queue_max=2000)
    )
    async with application.router.lifespan_context(application):
        yield application


async def test_a_thousand_concurrent_signups_deliver_a_thousand_distinct_events(
    client, cheap_app, database_url, pg, root
):
    async with receiver() as hook:
        created = await _create(client, root, hook.url, ["user.created"])
        transport = ASGITransport(app=cheap_app, client=("203.0.113.8", 4712))

        async def sign_up_many(n: int) -> list[str]:
            async with AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
                return [(await signup_ok(c))["user"]["id"] for _ in range(n)]

        async with worker(cheap_app, database_url):
            made = await asyncio.gather(*(sign_up_many(SIGNUPS // CLIENTS) for _ in range(CLIENTS)))
            requests = await hook.wait_for(SIGNUPS, seconds=90)
            # Anything late (a duplicate) would come now; the jobs' table says when all is done.
            await _all_jobs_done(pg)
    user_ids = {user_id for batch in made for user_id in batch}
    assert len(user_ids) == SIGNUPS
    ids = Counter(r.headers["webhook-id"] for r in requests)
    duplicates = sum(count - 1 for count in ids.values())
    assert (len(ids), duplicates) == (SIGNUPS, 0)
    bodies = [_verify(created["secret"], r) for r in requests]
    assert {b["type"] for b in bodies} == {"user.created"}
    assert {b["data"]["id"] for b in bodies} == user_ids
    # Each webhook-id is the audit event of that user's sign-up.
    signups = await pg.fetch(
        "SELECT id, target_user_id FROM audit_events WHERE action = 'user.signup'"
    )
    by_event = {row["id"]: row["target_user_id"] for row in signups}
    assert {
        r.headers["webhook-id"]: b["data"]["id"] for r, b in zip(requests, bodies, strict=True)
    } == by_event
    assert (
        await pg.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'")
        == SIGNUPS
    )
    # Each job ran once: concurrent deliveries to one endpoint once deadlocked on its row
    # (the delivery's foreign key lock, then FOR UPDATE), and the loser was sent again later.
    attempts = await pg.fetch(
        "SELECT kind, status, attempts, count(*) AS n FROM jobs WHERE kind LIKE 'webhook.%' "
        "GROUP BY 1, 2, 3 ORDER BY 1"
    )
    assert [tuple(row) for row in attempts] == [
        ("webhook.deliver", "succeeded", 1, SIGNUPS),
        ("webhook.fanout", "succeeded", 1, SIGNUPS),
    ]


async def _all_jobs_done(pg, seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while await pg.fetchval("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"):
        assert asyncio.get_running_loop().time() < deadline, "jobs still queued or running"
        await asyncio.sleep(0.05)


# ---- HTTPS ---------------------------------------------------------------------------------


async def test_https_is_delivered_with_sni_and_a_verified_certificate(
    client, app, database_url, root, hosts, tmp_path: Path
):
    tls = make_tls_files(tmp_path, NAME)
    async with receiver(tls=tls.server_context(), host=NAME) as hook:
        created = await _create(client, root, hook.url, ["user.created"])
        assert created["url"].startswith(f"https://{NAME}:")
        async with worker(app, database_url, webhook_tls_ca_file=tls.ca_file):
            user = await signup_ok(client)
            (request,) = await hook.wait_for(1)
            (row,) = await _deliveries(client, root, created["id"], 1)
    assert hook.server_names == [NAME]
    assert request.headers["host"] == f"{NAME}:{hook.port}"
    assert _verify(created["secret"], request)["data"]["id"] == user["user"]["id"]
    assert (row["status"], row["http_status"]) == ("succeeded", 200)


async def test_a_certificate_for_another_name_fails_and_is_retried(
    client, app, database_url, pg, root, hosts, tmp_path: Path
):
    tls = make_tls_files(
        tmp_path, "other.userkeep.test"
    )  # its own CA is trusted: only the name is wrong
    async with receiver(tls=tls.server_context(), host=NAME) as hook:
        created = await _create(client, root, hook.url, ["user.created"])
        async with worker(app, database_url, webhook_tls_ca_file=tls.ca_file):
            await signup_ok(client)
            await _deliveries(client, root, created["id"], 1)
            await _due_now(pg)
            second, first = await _deliveries(client, root, created["id"], 2)
    for attempt, found in ((1, first), (2, second)):
        assert (found["status"], found["http_status"], found["attempt"]) == (
            "failed",
            None,
            attempt,
        )
        assert "CERTIFICATE_VERIFY_FAILED" in found["error"], found["error"]
        assert found["next_retry_at"] is not None
    assert NAME in first["error"] or "Hostname mismatch" in first["error"], first["error"]
    assert hook.server_names == [NAME, NAME]  # the client spoke TLS, asking for NAME
    assert hook.requests == []  # and sent no request


async def test_a_certificate_of_an_unknown_ca_fails(
    client, app, database_url, root, hosts, tmp_path: Path
):
    tls = make_tls_files(tmp_path, NAME)
    async with receiver(tls=tls.server_context(), host=NAME) as hook:
        created = await _create(client, root, hook.url, ["user.created"])
        async with worker(app, database_url):  # no WEBHOOK_TLS_CA_FILE: the system's CAs only
            await signup_ok(client)
            (row,) = await _deliveries(client, root, created["id"], 1)
    assert row["status"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in row["error"]
    assert hook.requests == []


async def test_https_to_a_plain_http_server_sends_nothing_in_clear(
    client, app, database_url, root, hosts
):
    """A receiver that does not speak TLS on an https:// URL sees a TLS hello, never the
    request: the body and its signature do not leave in clear."""
    seen = bytearray()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.extend(await reader.read(65536))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        created = await _create(client, root, f"https://{NAME}:{port}/hooks", ["user.created"])
        async with worker(app, database_url):
            user = await signup_ok(client)
            (row,) = await _deliveries(client, root, created["id"], 1)
    finally:
        server.close()
        await server.wait_closed()
    assert row["status"] == "failed" and row["http_status"] is None
    assert seen[:1] == b"\x16"  # a TLS handshake record
    for secret in (
        b"POST",
        b"webhook-",
        user["user"]["id"].encode(),
        user["user"]["email"].encode(),
    ):
        assert secret not in seen


def test_an_unreadable_ca_file_stops_the_start(tmp_path: Path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    for value in (bad, tmp_path / "missing.pem"):
        with pytest.raises(ValidationError, match=r"webhook_tls_ca_file[\s\S]*PEM CA bundle"):
            make_settings("postgresql+asyncpg://x@127.0.0.1/x", webhook_tls_ca_file=value)
    assert (
        make_settings(
            "postgresql+asyncpg://x@127.0.0.1/x", webhook_tls_ca_file=""
        ).webhook_tls_ca_file
        is None
    )
