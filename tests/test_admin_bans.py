"""Bans: with expiry (moved by the test clock, no sleeping), revocation of every session, the
effective state on every route and in the `banned` filter, unban, and the refusals."""

from datetime import UTC, datetime, timedelta

import pytest

from app import clock
from tests.admin_support import audit_rows, auth, make_admin, make_session
from tests.helpers import PASSWORD, bearer, signup

USERS = "/v1/admin/users"


async def _setup(client, pg) -> tuple[dict[str, str], str, dict]:
    """An admin of the default app (headers, id) and a signed-up user."""
    data = await signup(client, email="ada@example.com")
    tenant = (data["user"]["app_id"], data["user"]["env_id"])
    await make_admin(pg, tenant, email="root@example.com")
    admin_id = await pg.fetchval("SELECT id FROM users WHERE email = 'root@example.com'")
    token, _ = await make_session(pg, admin_id)
    return auth(token), admin_id, data


async def _signin(client) -> tuple[int, dict]:
    response = await client.post(
        "/v1/auth/signin", json={"email": "ada@example.com", "password": PASSWORD}
    )
    return response.status_code, response.json()


async def _banned_ids(client, headers, banned: str) -> set[str]:
    response = await client.get(USERS, params={"banned": banned}, headers=headers)
    return {user["id"] for user in response.json()["users"]}


async def test_ban_with_expiry_lifts_itself(client, pg):
    headers, admin_id, data = await _setup(client, pg)
    user_id = data["user"]["id"]
    response = await client.post(
        f"{USERS}/{user_id}/ban", json={"reason": "spam", "expires_in": 3600}, headers=headers
    )
    assert response.status_code == 200, response.text
    user = response.json()
    assert user["banned"] is True and user["ban_reason"] == "spam"
    expires = datetime.fromisoformat(user["ban_expires"])
    assert timedelta(minutes=59) < expires - clock.now() <= timedelta(hours=1)

    # Every session stops at once; signing in tells the ban and when it ends.
    me = await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    assert me.status_code == 401
    status, body = await _signin(client)
    assert status == 403 and body["type"] == "user_banned" and body["ban_expires"]
    assert await _banned_ids(client, headers, "true") == {user_id}
    assert user_id not in await _banned_ids(client, headers, "false")

    clock.advance(timedelta(minutes=61))
    headers = auth((await make_session(pg, admin_id))[0])  # the admin's first one expired
    # Still stored as banned, but it reads as not banned everywhere, the filter included.
    assert await pg.fetchval("SELECT banned FROM users WHERE id = $1", user_id) is True
    got = (await client.get(f"{USERS}/{user_id}", headers=headers)).json()
    assert (got["banned"], got["ban_reason"], got["ban_expires"]) == (False, None, None)
    assert await _banned_ids(client, headers, "true") == set()
    assert user_id in await _banned_ids(client, headers, "false")
    status, _ = await _signin(client)
    assert status == 200
    # The next write of the row catches storage up.
    await client.patch(f"{USERS}/{user_id}", json={"name": "Ada"}, headers=headers)
    stored = await pg.fetchrow(
        "SELECT banned, ban_reason, ban_expires FROM users WHERE id = $1", user_id
    )
    assert tuple(stored) == (False, None, None)


async def test_ban_until_a_time_and_forever(client, pg):
    headers, admin_id, data = await _setup(client, pg)
    user_id = data["user"]["id"]
    until = (clock.now() + timedelta(days=2)).replace(microsecond=0)
    response = await client.post(
        f"{USERS}/{user_id}/ban", json={"expires_at": until.isoformat()}, headers=headers
    )
    assert datetime.fromisoformat(response.json()["ban_expires"]) == until
    forever = await client.post(f"{USERS}/{user_id}/ban", json={}, headers=headers)
    assert forever.json()["ban_expires"] is None and forever.json()["banned"] is True
    clock.advance(timedelta(days=400))
    headers = auth((await make_session(pg, admin_id))[0])
    assert (await client.get(f"{USERS}/{user_id}", headers=headers)).json()["banned"] is True
    status, _ = await _signin(client)
    assert status == 403


async def test_unban_and_counters_and_audit(client, pg):
    headers, admin_id, data = await _setup(client, pg)
    user_id = data["user"]["id"]
    await client.post(f"{USERS}/{user_id}/ban", json={"reason": "abuse"}, headers=headers)
    response = await client.post(f"{USERS}/{user_id}/unban", headers=headers)
    assert response.status_code == 200 and response.json()["banned"] is False
    status, _ = await _signin(client)
    assert status == 200
    counters = await pg.fetchrow(
        "SELECT disabled_counter, sessions_counter FROM users WHERE id = $1", user_id
    )
    assert tuple(counters) == (2, 1)  # ban + unban; the ban's revoke-all
    banned, unbanned = await audit_rows(pg, actor_id=admin_id)
    assert banned["action"] == "user.banned" and banned["target_user_id"] == user_id
    assert banned["metadata"] == {"reason": "abuse", "expires_at": None, "sessions_revoked": 1}
    assert unbanned["action"] == "user.unbanned"
    assert unbanned["metadata"] == {"was_banned": True}
    assert banned["actor_type"] == unbanned["actor_type"] == "admin"


async def test_banning_yourself_is_refused(client, pg):
    headers, admin_id, _ = await _setup(client, pg)
    response = await client.post(f"{USERS}/{admin_id}/ban", json={}, headers=headers)
    assert response.status_code == 403 and response.json()["type"] == "forbidden"
    assert await pg.fetchval("SELECT banned FROM users WHERE id = $1", admin_id) is False
    assert (await client.get(USERS, headers=headers)).status_code == 200
    assert await audit_rows(pg, action="user.banned") == []


async def test_banning_a_deleted_user_is_404(client, pg):
    headers, _, data = await _setup(client, pg)
    user_id = data["user"]["id"]
    await client.delete(f"{USERS}/{user_id}", headers=headers)
    response = await client.post(f"{USERS}/{user_id}/ban", json={}, headers=headers)
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2999-01-01T00:00:00"}, "expires_at"),  # no time zone
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "9999-12-31T23:59:59-10:00"}, "expires_at"),  # past UTC's end
        ({"reason": "nul\x00"}, "reason"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": -5}, "expires_in"),
        ({"expires_in": 10**12}, "expires_in"),
        ({"expires_at": "2999-01-01T00:00:00Z", "expires_in": 60}, "expires_at"),
        ({"reason": "x" * 513}, "reason"),
        ({"until": "2999-01-01T00:00:00Z"}, "until"),
    ],
)
async def test_bad_ban_input_is_422(client, pg, body, field):
    headers, _, data = await _setup(client, pg)
    user_id = data["user"]["id"]
    response = await client.post(f"{USERS}/{user_id}/ban", json=body, headers=headers)
    payload = response.json()
    assert response.status_code == 422, payload
    assert payload["type"] == "validation_error" and payload["code"] == 422
    assert field in {d["field"] for d in payload["details"]}
    assert await pg.fetchval("SELECT banned FROM users WHERE id = $1", user_id) is False
    me = await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    assert me.status_code == 200


async def test_expires_at_must_be_in_the_future_of_the_service_clock(client, pg):
    headers, admin_id, data = await _setup(client, pg)
    soon = datetime.now(UTC) + timedelta(hours=1)
    clock.advance(timedelta(hours=2))
    headers = auth((await make_session(pg, admin_id))[0])
    response = await client.post(
        f"{USERS}/{data['user']['id']}/ban", json={"expires_at": soon.isoformat()}, headers=headers
    )
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "expires_at"
