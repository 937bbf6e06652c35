"""Impersonation: an admin's 1-hour session as a user — who may start one, on whom, what it may
do, how it shows to the user and in the audit trail, and what ends it."""

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from app import clock
from app.security import tokens
from app.services import impersonation
from tests.admin_support import (
    audit_rows,
    auth,
    default_app,
    make_app,
    make_key,
    make_session,
    make_user,
)
from tests.helpers import PASSWORD

USERS = "/v1/admin/users"
REASON = "ticket #4711: the dashboard is blank"


@dataclass
class Scene:
    tenant: tuple[str, str]
    admin: dict[str, str]
    admin_id: str
    user_id: str
    user: dict[str, str]  # the user's own session
    user_session: str


async def _scene(pg) -> Scene:
    """An admin and a user of the app acme; the user has a session of their own."""
    tenant = await make_app(pg, "acme")
    admin_id = await make_user(pg, tenant, role="admin")
    admin_token, _ = await make_session(pg, admin_id)
    user_id = await make_user(pg, tenant, name="Ada")
    user_token, user_session = await make_session(pg, user_id)
    return Scene(tenant, auth(admin_token), admin_id, user_id, auth(user_token), user_session)


async def _impersonate(client, scene: Scene, reason: str = REASON) -> dict:
    response = await client.post(
        f"{USERS}/{scene.user_id}/impersonate", json={"reason": reason}, headers=scene.admin
    )
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


async def _session_row(pg, token: str):
    return await pg.fetchrow("SELECT * FROM sessions WHERE token_hash = $1", tokens.digest(token))


# ---- starting one ---------------------------------------------------------------------------


async def test_an_admin_gets_a_one_hour_session_of_the_user(client, pg):
    scene = await _scene(pg)
    started = clock.now()
    body = await _impersonate(client, scene)
    assert set(body) == {"session_token", "expires_at"}
    assert body["session_token"].startswith(tokens.SESSION_PREFIX)
    expires = datetime.fromisoformat(body["expires_at"])
    assert started + timedelta(minutes=59) < expires <= clock.now() + timedelta(hours=1)
    me = await client.get("/v1/auth/me", headers=auth(body["session_token"]))
    assert me.status_code == 200 and me.json()["id"] == scene.user_id
    row = await _session_row(pg, body["session_token"])
    assert row["user_id"] == scene.user_id and row["impersonated_by"] == scene.admin_id
    assert row["expires_at"] == row["refresh_expires_at"] == row["family_expires_at"] == expires


async def test_the_start_is_audited_with_admin_user_reason_and_session(client, pg):
    scene = await _scene(pg)
    body = await _impersonate(client, scene)
    session_id = (await _session_row(pg, body["session_token"]))["id"]
    [row] = await audit_rows(pg, action="user.impersonation_started")
    assert row["actor_type"] == "admin" and row["actor_id"] == scene.admin_id
    assert row["target_user_id"] == scene.user_id and row["app_id"] == scene.tenant[0]
    assert row["metadata"]["reason"] == REASON
    assert row["metadata"]["session_id"] == session_id


async def test_the_reason_is_kept_trimmed(client, pg):
    scene = await _scene(pg)
    await _impersonate(client, scene, reason="  looking into a bug \n")
    [row] = await audit_rows(pg, action="user.impersonation_started")
    assert row["metadata"]["reason"] == "looking into a bug"


async def test_a_root_admin_impersonates_a_user_of_another_app(client, pg):
    scene = await _scene(pg)
    root_id = await make_user(pg, await default_app(pg), role="admin")
    root_token, _ = await make_session(pg, root_id)
    response = await client.post(
        f"{USERS}/{scene.user_id}/impersonate", json={"reason": REASON}, headers=auth(root_token)
    )
    assert response.status_code == 200, response.text
    row = await _session_row(pg, response.json()["session_token"])
    assert row["impersonated_by"] == root_id


# ---- who may, on whom -----------------------------------------------------------------------


async def _refused(client, pg, user_id: str, headers: dict[str, str], status: int) -> dict:
    response = await client.post(
        f"{USERS}/{user_id}/impersonate", json={"reason": REASON}, headers=headers
    )
    assert response.status_code == status, response.text
    assert await pg.fetchval("SELECT count(*) FROM sessions WHERE impersonated_by IS NOT NULL") == 0
    assert await audit_rows(pg, action="user.impersonation_started") == []
    body: dict = response.json()
    return body


async def test_an_admin_cannot_be_impersonated(client, pg):
    scene = await _scene(pg)
    other_admin = await make_user(pg, scene.tenant, role="admin")
    body = await _refused(client, pg, other_admin, scene.admin, 403)
    assert body == {"error": impersonation.ADMINS_CANNOT_BE, "code": 403, "type": "forbidden"}


async def test_an_admin_cannot_impersonate_themselves(client, pg):
    scene = await _scene(pg)
    body = await _refused(client, pg, scene.admin_id, scene.admin, 403)
    assert body["error"] == impersonation.ADMINS_CANNOT_BE


async def test_an_api_key_cannot_impersonate(client, pg):
    scene = await _scene(pg)
    secret, _ = await make_key(pg, scene.tenant[0])
    body = await _refused(client, pg, scene.user_id, auth(secret), 403)
    assert body == {"error": impersonation.KEYS_CANNOT, "code": 403, "type": "forbidden"}


async def test_a_plain_user_cannot_impersonate(client, pg):
    scene = await _scene(pg)
    victim = await make_user(pg, scene.tenant)
    body = await _refused(client, pg, victim, scene.user, 403)
    assert body["error"] == "admin role required"


async def test_a_user_of_another_app_is_not_found(client, pg):
    scene = await _scene(pg)
    stranger = await make_user(pg, await make_app(pg, "globex"))
    body = await _refused(client, pg, stranger, scene.admin, 404)
    assert body == {"error": "user not found", "code": 404, "type": "not_found"}


async def test_a_deleted_user_is_not_found(client, pg):
    scene = await _scene(pg)
    gone = await make_user(pg, scene.tenant, deleted_at=clock.now())
    await _refused(client, pg, gone, scene.admin, 404)


async def test_an_unknown_user_is_not_found(client, pg):
    scene = await _scene(pg)
    await _refused(client, pg, "ausr_01jh8x3k2ffq8s4y7h3b2n1m0p", scene.admin, 404)


async def test_a_banned_user_cannot_be_impersonated(client, pg):
    scene = await _scene(pg)
    banned = await make_user(pg, scene.tenant, banned=True)
    body = await _refused(client, pg, banned, scene.admin, 403)
    assert body["error"] == impersonation.BANNED_CANNOT_BE


async def test_a_user_whose_ban_expired_can_be_impersonated(client, pg):
    scene = await _scene(pg)
    scene.user_id = await make_user(
        pg, scene.tenant, banned=True, ban_expires=clock.now() - timedelta(minutes=1)
    )
    await _impersonate(client, scene)


@pytest.mark.parametrize(
    "body",
    [{}, {"reason": ""}, {"reason": "   \t"}, {"reason": "x" * 501}, {"reason": "a\x00b"}],
    ids=["missing", "empty", "blank", "too-long", "nul"],
)
async def test_a_reason_is_required(client, pg, body):
    scene = await _scene(pg)
    response = await client.post(
        f"{USERS}/{scene.user_id}/impersonate", json=body, headers=scene.admin
    )
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["type"] == "validation_error" and error["details"][0]["field"] == "reason"
    assert await pg.fetchval("SELECT count(*) FROM sessions WHERE impersonated_by IS NOT NULL") == 0


async def test_a_malformed_user_id_is_422(client, pg):
    scene = await _scene(pg)
    response = await client.post(
        f"{USERS}/akey_01jh8x3k2ffq8s4y7h3b2n1m0p/impersonate",
        json={"reason": REASON},
        headers=scene.admin,
    )
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "user_id"


# ---- the session ----------------------------------------------------------------------------


async def test_it_has_no_refresh_token_and_refresh_refuses_it(client, pg):
    scene = await _scene(pg)
    body = await _impersonate(client, scene)
    assert "refresh_token" not in body
    # Even were its (never handed out) refresh digest matched, the session is not refreshed.
    refresh = tokens.new_token(tokens.REFRESH_PREFIX)
    await pg.execute(
        "UPDATE sessions SET refresh_token_hash = $1 WHERE token_hash = $2",
        tokens.digest(refresh),
        tokens.digest(body["session_token"]),
    )
    response = await client.post("/v1/auth/refresh", json={"refresh_token": refresh})
    assert response.status_code == 401 and response.json()["type"] == "authentication_required"
    assert await pg.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", scene.user_id) == 2


async def test_it_expires_after_one_hour(client, pg):
    scene = await _scene(pg)
    body = await _impersonate(client, scene)
    clock.advance(timedelta(minutes=59))
    assert (await client.get("/v1/auth/me", headers=auth(body["session_token"]))).status_code == 200
    clock.advance(timedelta(minutes=1, seconds=1))
    me = await client.get("/v1/auth/me", headers=auth(body["session_token"]))
    assert me.status_code == 401 and me.json()["type"] == "session_expired"


async def test_the_user_sees_it_in_their_sessions(client, pg):
    scene = await _scene(pg)
    body = await _impersonate(client, scene)
    impersonated_id = (await _session_row(pg, body["session_token"]))["id"]
    listed = (await client.get("/v1/auth/sessions", headers=scene.user)).json()["sessions"]
    flags = {session["id"]: session["impersonated_by"] for session in listed}
    assert flags == {scene.user_session: None, impersonated_id: scene.admin_id}
    # Gone from the list when it expires (the user's own session lives on by refresh).
    clock.advance(timedelta(hours=1, seconds=1))
    token, _ = await make_session(pg, scene.user_id)
    listed = (await client.get("/v1/auth/sessions", headers=auth(token))).json()["sessions"]
    assert impersonated_id not in {session["id"] for session in listed}
    assert scene.user_session in {session["id"] for session in listed}


async def test_the_export_lists_it(client, pg):
    scene = await _scene(pg)
    body = await _impersonate(client, scene)
    impersonated_id = (await _session_row(pg, body["session_token"]))["id"]
    export = (await client.get("/v1/auth/me/export", headers=scene.user)).json()
    flags = {session["id"]: session["impersonated_by"] for session in export["sessions"]}
    assert flags == {scene.user_session: None, impersonated_id: scene.admin_id}
    started = [e for e in export["audit_events"] if e["action"] == "user.impersonation_started"]
    assert len(started) == 1 and started[0]["actor_type"] == "admin"


async def test_it_cannot_use_the_admin_api_when_its_user_becomes_an_admin(client, pg):
    scene = await _scene(pg)
    body = await _impersonate(client, scene)
    await pg.execute("UPDATE users SET role = 'admin' WHERE id = $1", scene.user_id)
    response = await client.get(USERS, headers=auth(body["session_token"]))
    assert response.status_code == 403
    assert response.json()["error"] == "an impersonation session cannot use the admin API"


# ---- what it may do, and the audit of it ----------------------------------------------------


async def test_a_write_is_audited_naming_the_admin_and_the_user(client, pg):
    scene = await _scene(pg)
    body = await _impersonate(client, scene)
    session_id = (await _session_row(pg, body["session_token"]))["id"]
    response = await client.patch(
        "/v1/auth/me", json={"name": "Ada L."}, headers=auth(body["session_token"])
    )
    assert response.status_code == 200 and response.json()["name"] == "Ada L."
    [row] = await audit_rows(pg, action="user.updated")
    assert row["actor_type"] == "admin" and row["actor_id"] == scene.admin_id
    assert row["target_user_id"] == scene.user_id
    assert row["metadata"] == {
        "fields": ["name"],
        "impersonated_by": scene.admin_id,
        "impersonation_session_id": session_id,
    }


async def test_the_users_own_requests_after_it_are_not_stamped(client, pg):
    scene = await _scene(pg)
    body = await _impersonate(client, scene)
    await client.patch(
        "/v1/auth/me", json={"name": "By admin"}, headers=auth(body["session_token"])
    )
    response = await client.patch("/v1/auth/me", json={"name": "By Ada"}, headers=scene.user)
    assert response.status_code == 200
    first, second = await audit_rows(pg, action="user.updated")
    assert first["actor_id"] == scene.admin_id
    assert second["actor_type"] == "user" and second["actor_id"] == scene.user_id
    assert second["metadata"] == {"fields": ["name"]}


async def test_revoking_a_session_with_it_is_audited_naming_both(client, pg):
    scene = await _scene(pg)
    body = await _impersonate(client, scene)
    response = await client.delete(
        f"/v1/auth/sessions/{scene.user_session}", headers=auth(body["session_token"])
    )
    assert response.status_code == 200
    [row] = await audit_rows(pg, action="session.revoked")
    assert row["actor_id"] == scene.admin_id and row["target_user_id"] == scene.user_id
    assert row["metadata"]["impersonated_by"] == scene.admin_id


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/v1/auth/change-password",
            {"current_password": PASSWORD, "new_password": "x" * 12},
        ),
        ("POST", "/v1/auth/change-email", {"new_email": "new@example.com", "password": PASSWORD}),
        ("DELETE", "/v1/auth/me", None),
        ("POST", "/v1/auth/mfa/totp", {"password": PASSWORD}),
        ("POST", "/v1/auth/mfa/totp/confirm", {"code": "123456"}),
        ("DELETE", "/v1/auth/mfa/totp", {"password": PASSWORD, "code": "123456"}),
        ("POST", "/v1/auth/mfa/recovery-codes", {"password": PASSWORD, "code": "123456"}),
        ("POST", "/v1/auth/token", None),
    ],
    ids=[
        "change-password",
        "change-email",
        "delete-account",
        "mfa-enroll",
        "mfa-confirm",
        "mfa-disable",
        "mfa-recovery-codes",
        "jwt",
    ],
)
async def test_what_only_the_user_may_do_is_refused(client, pg, method, path, body):
    scene = await _scene(pg)
    token = (await _impersonate(client, scene))["session_token"]
    before = await pg.fetchrow("SELECT * FROM users WHERE id = $1", scene.user_id)
    response = await client.request(method, path, json=body, headers=auth(token))
    assert response.status_code == 403, response.text
    assert response.json() == {
        "error": impersonation.ONLY_THE_USER,
        "code": 403,
        "type": "forbidden",
    }
    assert await pg.fetchrow("SELECT * FROM users WHERE id = $1", scene.user_id) == before
    assert await pg.fetchval("SELECT count(*) FROM email_codes") == 0
    assert await pg.fetchval("SELECT count(*) FROM mfa_enrollments") == 0
    assert await pg.fetchval("SELECT count(*) FROM signing_keys") == 0
    assert [row["action"] for row in await audit_rows(pg)] == ["user.impersonation_started"]
    # The user themselves still may.
    if path == "/v1/auth/me":
        assert (await client.delete(path, headers=scene.user)).status_code == 200


# ---- what ends it ---------------------------------------------------------------------------


async def test_signing_out_ends_it_and_only_it(client, pg):
    scene = await _scene(pg)
    token = (await _impersonate(client, scene))["session_token"]
    response = await client.post("/v1/auth/signout", headers=auth(token))
    assert response.status_code == 200
    me = await client.get("/v1/auth/me", headers=auth(token))
    assert me.status_code == 401 and me.json()["type"] == "session_expired"
    assert (await client.get("/v1/auth/me", headers=scene.user)).status_code == 200
    [row] = await audit_rows(pg, action="user.impersonation_ended")
    assert row["actor_id"] == scene.admin_id and row["target_user_id"] == scene.user_id
    assert await audit_rows(pg, action="user.signout") == []


async def test_the_admins_revoke_of_the_users_sessions_ends_it(client, pg):
    scene = await _scene(pg)
    token = (await _impersonate(client, scene))["session_token"]
    response = await client.delete(f"{USERS}/{scene.user_id}/sessions", headers=scene.admin)
    assert response.status_code == 200, response.text
    assert (await client.get("/v1/auth/me", headers=auth(token))).status_code == 401


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE users SET role = 'user' WHERE id = $1",
        "UPDATE users SET banned = true WHERE id = $1",
        "UPDATE users SET deleted_at = now() WHERE id = $1",
        "DELETE FROM users WHERE id = $1",
    ],
    ids=["demoted", "banned", "deleted", "purged"],
)
async def test_an_admin_who_stops_being_one_loses_their_impersonations(client, pg, change):
    scene = await _scene(pg)
    token = (await _impersonate(client, scene))["session_token"]
    other_user = await make_user(pg, scene.tenant)
    other_token, _ = await make_session(pg, other_user)
    await pg.execute(change, scene.admin_id)
    me = await client.get("/v1/auth/me", headers=auth(token))
    assert me.status_code == 401 and me.json()["type"] == "session_expired"
    assert (await client.get("/v1/auth/me", headers=scene.user)).status_code == 200
    assert (await client.get("/v1/auth/me", headers=auth(other_token))).status_code == 200


async def test_an_admins_other_changes_leave_their_impersonations(client, pg):
    scene = await _scene(pg)
    token = (await _impersonate(client, scene))["session_token"]
    await pg.execute("UPDATE users SET name = 'Renamed' WHERE id = $1", scene.admin_id)
    assert (await client.get("/v1/auth/me", headers=auth(token))).status_code == 200


async def test_a_ban_racing_the_start_leaves_no_live_impersonation(client, pg):
    scene = await _scene(pg)
    impersonate, ban = await asyncio.gather(
        client.post(
            f"{USERS}/{scene.user_id}/impersonate", json={"reason": REASON}, headers=scene.admin
        ),
        client.post(f"{USERS}/{scene.user_id}/ban", json={"reason": "spam"}, headers=scene.admin),
    )
    assert ban.status_code == 200
    assert impersonate.status_code in (200, 403), impersonate.text
    live = await pg.fetchval(
        "SELECT count(*) FROM sessions WHERE impersonated_by IS NOT NULL AND revoked_at IS NULL"
    )
    assert live == 0
    if impersonate.status_code == 200:
        me = await client.get("/v1/auth/me", headers=auth(impersonate.json()["session_token"]))
        assert me.status_code == 401


async def test_twenty_concurrent_starts_make_twenty_audited_sessions(client, pg):
    scene = await _scene(pg)
    responses = await asyncio.gather(
        *(
            client.post(
                f"{USERS}/{scene.user_id}/impersonate", json={"reason": REASON}, headers=scene.admin
            )
            for _ in range(20)
        )
    )
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["session_token"] for r in responses}) == 20
    assert len(await audit_rows(pg, action="user.impersonation_started")) == 20
