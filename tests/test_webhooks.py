"""Webhooks end to end: a change over REST or Faroe, the job worker, a real HTTP receiver on
127.0.0.1, and each delivery verified with the `standardwebhooks` library as a receiver would."""

import asyncio
import ipaddress
import json
import os
import signal
import time
from datetime import timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app import clock
from app.services import jobs, webhooks
from tests.admin_support import auth, default_app, make_admin, make_app, make_key
from tests.conftest import SECRET_KEY
from tests.faroe_support import FaroeServerDouble
from tests.helpers import PASSWORD, signup, unique_email
from tests.test_jobs import wait_started, worker_process
from tests.webhook_support import Answer, receiver, worker

BASE = "/v1/admin/webhooks"


@pytest.fixture
async def root(pg) -> dict[str, str]:
    """An admin of the default app, where the REST and Faroe doors' users live."""
    return auth(await make_admin(pg, await default_app(pg)))


@pytest.fixture
async def hook() -> Any:
    async with receiver() as found:
        yield found


async def _create(client, headers, url: str, events: list[str], **fields: Any) -> dict[str, Any]:
    response = await client.post(
        BASE, json={"url": url, "events": events, **fields}, headers=headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _verify(secret: str, request) -> dict[str, Any]:
    body: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return body


async def _deliveries(client, headers, webhook_id: str, count: int, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while True:
        found = (await client.get(f"{BASE}/{webhook_id}/deliveries", headers=headers)).json()
        if len(found["deliveries"]) >= count:
            return found["deliveries"]
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)


async def _fanouts(pg) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM jobs WHERE kind = 'webhook.fanout'"))


# ---- the endpoints ---------------------------------------------------------------------------


async def test_the_secret_is_shown_at_creation_only(client, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    assert created["secret"].startswith("whsec_")
    assert len(Webhook(created["secret"])._whsecret) >= 24
    shown = await client.get(f"{BASE}/{created['id']}", headers=root)
    listed = await client.get(BASE, headers=root)
    assert "secret" not in shown.json()
    assert [w["id"] for w in listed.json()["webhooks"]] == [created["id"]]
    assert created["secret"] not in shown.text + listed.text


async def test_the_secret_is_stored_encrypted(client, pg, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    stored = await pg.fetchval("SELECT secret FROM webhook_endpoints WHERE id = $1", created["id"])
    assert stored.startswith("v1.") and created["secret"] not in stored


async def test_the_catalog_lists_each_event_with_an_example(client, root):
    answer = (await client.get(f"{BASE}/event-types", headers=root)).json()["event_types"]
    types = {event["type"]: event for event in answer}
    for name in ("user.created", "user.purged", "session.revoked_all", "webhook.test"):
        assert types[name]["example"]["type"] == name
    assert "password_hash" not in json.dumps(answer)


async def test_bad_inputs_are_422(client, root, hook):
    cases = [
        ({"url": "ftp://example.com/x", "events": ["user.created"]}, "url"),
        ({"url": "https://u:p@example.com/x", "events": ["user.created"]}, "credentials"),
        ({"url": "not a url", "events": ["user.created"]}, "url"),
        ({"url": hook.url, "events": ["user.exploded"]}, "user.exploded"),
        ({"url": hook.url, "events": []}, "events"),
        ({"url": hook.url, "events": ["webhook.test"]}, "webhook.test"),
    ]
    for body, named in cases:
        response = await client.post(BASE, json=body, headers=root)
        assert response.status_code == 422, (body, response.text)
        assert named in response.text, (body, response.text)
    created = await _create(client, root, hook.url, ["user.created"])
    patched = await client.patch(f"{BASE}/{created['id']}", json={"events": ["nope"]}, headers=root)
    assert patched.status_code == 422 and "nope" in patched.text
    assert (await client.get(f"{BASE}/awhk_nope", headers=root)).status_code == 422


async def test_another_apps_admin_gets_404_on_every_route(client, pg, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    other = auth(await make_admin(pg, await make_app(pg, "globex")))
    path = f"{BASE}/{created['id']}"
    delivery = "awdl_01jhmms5c2e6ksv1yq8tm4x0bz"
    for method, url in [
        ("GET", path),
        ("PATCH", path),
        ("DELETE", path),
        ("POST", f"{path}/rotate-secret"),
        ("POST", f"{path}/test"),
        ("GET", f"{path}/deliveries"),
        ("POST", f"{path}/deliveries/{delivery}/retry"),
    ]:
        body = {"enabled": False} if method == "PATCH" else None
        response = await client.request(method, url, json=body, headers=other)
        assert response.status_code == 404, (method, url, response.text)
    assert (await client.get(BASE, params={"app_id": "default"}, headers=other)).status_code == 404
    assert (await client.get(BASE, headers=other)).json()["webhooks"] == []


async def test_an_api_key_of_the_app_manages_its_webhooks(client, pg, hook):
    app_id, _ = await make_app(pg, "acme")
    key, _ = await make_key(pg, app_id)
    created = await _create(client, auth(key), hook.url, ["user.created"])
    assert created["app_id"] == app_id
    path = f"{BASE}/{created['id']}"
    patched = await client.patch(path, json={"description": "CRM"}, headers=auth(key))
    assert patched.json()["description"] == "CRM"
    rotated = await client.post(f"{path}/rotate-secret", headers=auth(key))
    assert rotated.json()["secret"] != created["secret"]
    assert (await client.delete(path, headers=auth(key))).status_code == 200
    actions = await pg.fetch(
        "SELECT action, actor_type FROM audit_events WHERE app_id = $1 ORDER BY id", app_id
    )
    assert [(r["action"], r["actor_type"]) for r in actions] == [
        ("webhook.created", "api_key"),
        ("webhook.updated", "api_key"),
        ("webhook.secret_rotated", "api_key"),
        ("webhook.deleted", "api_key"),
    ]


# ---- raising -------------------------------------------------------------------------------


async def test_a_signup_delivers_user_created(client, app, database_url, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    async with worker(app, database_url):
        user = await signup(client)
        (request,) = await hook.wait_for(1)
    body = _verify(created["secret"], request)
    assert body["type"] == "user.created"
    assert body["data"]["id"] == user["user"]["id"]
    assert body["data"]["email"] == user["user"]["email"]
    assert "password_hash" not in request.body.decode() and "argon2" not in request.body.decode()
    assert request.headers["webhook-id"].startswith("aevt_")
    assert request.headers["host"] == f"127.0.0.1:{hook.port}"


async def test_a_faroe_create_user_delivers_user_created(client, app, database_url, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    faroe = FaroeServerDouble(client)
    email = unique_email("faroe")
    async with worker(app, database_url):
        hash_, algorithm_id, salt = faroe.hash_password(PASSWORD, os.urandom(16))
        user = await faroe.create_user(email, hash_, algorithm_id, salt)
        (request,) = await hook.wait_for(1)
    body = _verify(created["secret"], request)
    assert (body["type"], body["data"]["id"], body["data"]["email"]) == (
        "user.created",
        user.id,
        email,
    )


async def test_a_faroe_email_update_delivers_user_email_changed(
    client, app, database_url, root, hook
):
    created = await _create(client, root, hook.url, ["user.email_changed"])
    faroe = FaroeServerDouble(client)
    hash_, algorithm_id, salt = faroe.hash_password(PASSWORD, os.urandom(16))
    user = await faroe.create_user(unique_email("faroe"), hash_, algorithm_id, salt)
    new_email = unique_email("moved")
    async with worker(app, database_url):
        await faroe.update_user_email_address(user.id, new_email, user.email_address_counter)
        (request,) = await hook.wait_for(1)
    body = _verify(created["secret"], request)
    assert (body["type"], body["data"]["email"]) == ("user.email_changed", new_email)


async def test_a_rolled_back_change_raises_nothing(client, pg, root, hook):
    await _create(client, root, hook.url, ["user.created"])
    taken = await signup(client)
    assert await _fanouts(pg) == 1
    again = await client.post(
        "/v1/auth/signup", json={"email": taken["user"]["email"], "password": PASSWORD}
    )
    assert again.status_code == 409
    assert await _fanouts(pg) == 1


async def test_an_app_without_subscribers_gets_no_job(client, pg, root, hook):
    await _create(client, root, hook.url, ["user.deleted"])
    await signup(client)
    assert await _fanouts(pg) == 0


async def test_unsubscribed_events_are_not_delivered(client, app, database_url, root, hook):
    await _create(client, root, hook.url, ["user.deleted"])
    other = await _create(client, root, hook.url + "?all", ["user.created"])
    async with worker(app, database_url):
        await signup(client)
        await _deliveries(client, root, other["id"], 1)
    assert [r.target for r in hook.requests] == ["/hooks?all"]


async def test_a_disabled_endpoint_gets_nothing(client, app, database_url, pg, root, hook):
    await _create(client, root, hook.url, ["user.created"], enabled=False)
    async with worker(app, database_url):
        await signup(client)
        await asyncio.sleep(0.5)
    assert hook.requests == []
    assert await _fanouts(pg) == 0


# ---- delivery ------------------------------------------------------------------------------


async def test_a_failure_is_retried_with_the_same_webhook_id(
    client, app, database_url, pg, root, hook
):
    created = await _create(client, root, hook.url, ["user.created"])
    hook.answer(Answer(500, b"down"), Answer(200))
    async with worker(app, database_url):
        await signup(client)
        await hook.wait_for(1)
        (failed,) = await _deliveries(client, root, created["id"], 1)
        assert (failed["status"], failed["http_status"], failed["attempt"]) == ("failed", 500, 1)
        assert failed["next_retry_at"] is not None and failed["response_body"] == "down"
        await pg.execute("UPDATE pgqueuer SET execute_after = now()")
        first, second = await hook.wait_for(2)
        rows = await _deliveries(client, root, created["id"], 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    _verify(created["secret"], second)
    assert [(r["status"], r["attempt"]) for r in rows] == [("succeeded", 2), ("failed", 1)]


async def test_a_redirect_is_a_failure_and_is_not_followed(client, app, database_url, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    hook.answer(Answer(302, b"", {"location": f"http://127.0.0.1:{hook.port}/elsewhere"}))
    async with worker(app, database_url):
        await signup(client)
        (row,) = await _deliveries(client, root, created["id"], 1)
    assert (row["status"], row["http_status"]) == ("failed", 302)
    assert [r.target for r in hook.requests] == ["/hooks"]


async def test_a_large_answer_is_cut_at_4_kib(client, app, database_url, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    hook.answer(Answer(200, b"x" * 100_000))
    async with worker(app, database_url):
        await signup(client)
        (row,) = await _deliveries(client, root, created["id"], 1)
    assert row["status"] == "succeeded"
    assert row["response_body"] == "x" * 4096


async def test_a_private_destination_is_refused(client, app, database_url, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    async with worker(app, database_url, webhook_allow_private=False):
        await signup(client)
        (row,) = await _deliveries(client, root, created["id"], 1)
    assert row["status"] == "failed" and row["http_status"] is None
    assert "127.0.0.1" in row["error"] and "WEBHOOK_ALLOW_PRIVATE" in row["error"]
    assert row["next_retry_at"] is None
    assert hook.requests == []


async def test_a_rotated_secret_signs_with_both_for_24_hours(client, app, database_url, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    path = f"{BASE}/{created['id']}"
    rotated = (await client.post(f"{path}/rotate-secret", headers=root)).json()
    assert rotated["previous_secret_expires_at"] is not None
    assert "secret" not in (await client.get(path, headers=root)).json()
    async with worker(app, database_url):
        await signup(client)
        (request,) = await hook.wait_for(1)
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        _verify(created["secret"], request)
        _verify(rotated["secret"], request)
        clock.advance(timedelta(hours=24, seconds=1))
        await signup(client)
        _, later = await hook.wait_for(2)
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    _verify(rotated["secret"], later)
    with pytest.raises(WebhookVerificationError):
        _verify(created["secret"], later)


async def test_five_days_of_failures_disable_the_endpoint(client, app, database_url, pg, hook):
    # An API key: an admin's session would expire in the five days.
    key, _ = await make_key(pg, (await default_app(pg))[0])
    root = auth(key)
    created = await _create(client, root, hook.url, ["user.created"])
    path = f"{BASE}/{created['id']}"
    hook.answer(Answer(503))
    async with worker(app, database_url):
        await signup(client)
        await _deliveries(client, root, created["id"], 1)
        assert (await client.get(path, headers=root)).json()["failing_since"] is not None
        clock.advance(timedelta(days=5, minutes=1))
        await signup(client)
        await _deliveries(client, root, created["id"], 2)
    shown = (await client.get(path, headers=root)).json()
    assert shown["enabled"] is False
    assert "failed since" in shown["disabled_reason"] and "HTTP 503" in shown["disabled_reason"]
    before = await _fanouts(pg)
    await signup(client)
    assert await _fanouts(pg) == before  # a disabled endpoint gets no new deliveries
    enabled = await client.patch(path, json={"enabled": True}, headers=root)
    assert enabled.json()["disabled_reason"] is None and enabled.json()["failing_since"] is None


async def test_a_success_ends_the_failure_streak(client, app, database_url, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    hook.answer(Answer(500), Answer(200))
    path = f"{BASE}/{created['id']}"
    async with worker(app, database_url):
        await signup(client)
        await _deliveries(client, root, created["id"], 1)
        assert (await client.get(path, headers=root)).json()["failing_since"] is not None
        await signup(client)
        await _deliveries(client, root, created["id"], 2)
    assert (await client.get(path, headers=root)).json()["failing_since"] is None


async def test_the_test_route_sends_a_test_event(client, app, database_url, root, hook):
    created = await _create(client, root, hook.url, ["user.deleted"])
    async with worker(app, database_url):
        queued = await client.post(f"{BASE}/{created['id']}/test", headers=root)
        assert queued.status_code == 202, queued.text
        (request,) = await hook.wait_for(1)
    body = _verify(created["secret"], request)
    assert body["type"] == "webhook.test" and body["data"]["webhook_id"] == created["id"]
    assert request.headers["webhook-id"] == queued.json()["event_id"]


async def test_a_delivery_is_retried_by_hand(client, app, database_url, root, hook):
    created = await _create(client, root, hook.url, ["user.created"])
    hook.answer(Answer(404), Answer(200))
    async with worker(app, database_url):
        await signup(client)
        (failed,) = await _deliveries(client, root, created["id"], 1)
        again = await client.post(
            f"{BASE}/{created['id']}/deliveries/{failed['id']}/retry", headers=root
        )
        assert again.status_code == 202 and again.json()["event_id"] == failed["event_id"]
        first, second = await hook.wait_for(2)
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    _verify(created["secret"], second)


async def test_a_deleted_user_is_delivered_with_its_view(client, app, database_url, pg, root, hook):
    created = await _create(client, root, hook.url, ["user.deleted"])
    user = await signup(client)
    async with worker(app, database_url):
        deleted = await client.delete(f"/v1/admin/users/{user['user']['id']}", headers=root)
        assert deleted.status_code == 200, deleted.text
        (request,) = await hook.wait_for(1)
    body = _verify(created["secret"], request)
    assert body["type"] == "user.deleted" and body["data"]["deleted_at"] is not None


async def test_a_purged_user_is_delivered_as_its_id_alone(
    client, app, database_url, pg, root, hook
):
    created = await _create(client, root, hook.url, ["user.purged"])
    user_id = (await signup(client))["user"]["id"]
    assert (await client.delete(f"/v1/admin/users/{user_id}", headers=root)).status_code == 200
    async with worker(app, database_url):
        purged = await client.post(f"/v1/admin/users/{user_id}/purge", headers=root)
        assert purged.status_code == 200, purged.text
        (request,) = await hook.wait_for(1)
    body = _verify(created["secret"], request)
    assert body == {"type": "user.purged", "timestamp": body["timestamp"], "data": {"id": user_id}}


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "0.0.0.0", "224.0.0.1",  # noqa: S104
     "100.64.0.1", "::1", "fe80::1", "::ffff:127.0.0.1", "fc00::1"],
)  # fmt: skip
async def test_the_guard_refuses_non_public_addresses(address):
    with pytest.raises(webhooks.Refused):
        await webhooks.resolve(address, 443, allow_private=False)
    allowed = await webhooks.resolve(address, 443, allow_private=True)
    assert ipaddress.ip_address(allowed) == ipaddress.ip_address(address)


async def test_the_guard_checks_what_a_name_resolves_to():
    with pytest.raises(webhooks.Refused, match="localhost resolves to"):
        await webhooks.resolve("localhost", 80, allow_private=False)
    assert await webhooks.resolve("93.184.215.14", 443, allow_private=False) == "93.184.215.14"


async def test_deliveries_to_one_destination_share_a_kept_alive_connection():
    """A client per delivery meant a TCP (and TLS) handshake per event; a kept-alive client
    per destination sends them down one connection, each still to the address checked at send
    time, and a refused address is refused before any client is used."""
    connections: list[int] = []
    requests = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                requests += 1
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for n in range(3):
            attempt = await webhooks.send(
                f"http://127.0.0.1:{port}/hooks", f"evt_{n}", "{}", [webhooks.new_secret()], True
            )
            assert attempt.status == "succeeded", attempt
        assert requests == 3 and len(connections) == 1
        refused = await webhooks.send(f"http://127.0.0.1:{port}/hooks", "evt_x", "{}",
                                      [webhooks.new_secret()], False)  # fmt: skip
        assert refused.refused and requests == 3
    finally:
        await webhooks.close_clients()
        server.close()
        await server.wait_closed()


async def test_kept_alive_clients_are_per_host_name_and_bounded(monkeypatch):
    """One client per host name (a TLS connection was verified for the name in its SNI, so
    two names on one address never share one), the most recent MAX_CLIENTS of them; an
    evicted client is closed once no delivery uses it."""
    monkeypatch.setattr(webhooks, "MAX_CLIENTS", 2)
    pool = webhooks._ClientPool()
    a = ("https", "a.example", 443, None)
    async with pool.lease(a) as first, pool.lease(a) as again:
        assert first is again
        async with pool.lease(("https", "b.example", 443, None)) as other:
            assert other is not first
        async with pool.lease(("https", "c.example", 443, None)):
            pass  # a.example is the oldest: evicted, but still in use here
        assert not first.is_closed
    assert first.is_closed
    async with pool.lease(a) as fresh:
        assert fresh is not first
    await pool.aclose()
    assert fresh.is_closed


async def test_a_worker_killed_mid_delivery_delivers_again_with_the_same_id(
    client, root, hook, database_url
):
    """SIGKILL while the receiver holds the request: after the heartbeat timeout another
    worker sends it again, with the same webhook-id (receivers drop the duplicate by it)."""
    created = await _create(client, root, hook.url, ["user.created"])
    hook.answer(Answer(200, delay=8), Answer(200))
    env = {
        "SECRET_KEY": SECRET_KEY,
        "WEBHOOK_ALLOW_PRIVATE": "true",
    }
    with worker_process(database_url, **env) as first:
        wait_started(first)
        await signup(client)
        await hook.wait_for(1, seconds=30)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    with worker_process(database_url, **env) as second:
        wait_started(second)
        first_request, *again = await hook.wait_for(2, seconds=30)
        rows = await _deliveries(client, root, created["id"], 1, seconds=30)
    # At least once: the run after the crash sends it again with the same webhook-id. (On a
    # loaded machine the one-second heartbeat of these workers can lapse once more, and the
    # delivery is sent a third time — still the same id, which is what receivers rely on.)
    assert again and {r.headers["webhook-id"] for r in again} == {
        first_request.headers["webhook-id"]
    }
    for request in again:
        _verify(created["secret"], request)
    # The killed run recorded nothing; a run taken over after the heartbeat timeout is not a
    # retry (pgqueuer counts retries), so its row says attempt 1.
    assert {(row["status"], row["attempt"]) for row in rows} == {("succeeded", 1)}


def test_deliveries_go_before_fan_outs() -> None:
    """With a backlog of fan-outs (a burst of changes), the deliveries they add run first:
    otherwise no event arrives until the last fan-out of the burst has run."""
    kinds = jobs.KINDS
    assert kinds[webhooks.DELIVER_JOB].priority > kinds[webhooks.FANOUT_JOB].priority
