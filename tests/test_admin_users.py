"""User administration: create, read, edit, soft delete, restore, purge, password, sessions —
with the audit row and the Faroe counters each change leaves behind."""

from datetime import timedelta

import pytest

from app import clock
from tests.admin_support import audit_rows, auth, make_admin, make_app, make_session, make_user
from tests.helpers import PASSWORD, bearer, signup

USERS = "/v1/admin/users"


async def _admin(pg) -> tuple[dict[str, str], str]:
    """Headers of an admin of the default app, and its user id."""
    tenant = await pg.fetchrow(
        "SELECT a.id, e.id FROM apps a JOIN environments e ON e.app_id = a.id "
        "WHERE a.slug = 'default'"
    )
    headers = auth(await make_admin(pg, tuple(tenant), email="root@example.com"))
    admin_id = await pg.fetchval("SELECT id FROM users WHERE email = 'root@example.com'")
    return headers, admin_id


async def _me(client, token: str) -> int:
    return (await client.get("/v1/auth/me", headers=bearer(token))).status_code


async def test_create_with_password_signs_in_and_without_cannot(client, pg):
    headers, admin_id = await _admin(pg)
    created = await client.post(
        USERS,
        json={"email": "Grace@Example.com", "password": PASSWORD, "email_verified": True,
              "username": "Grace", "name": "Grace Hopper", "metadata": {"team": "navy"}},
        headers=headers,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["email"] == "Grace@example.com" and user["email_verified"] is True
    assert user["username"] == "grace" and user["display_username"] == "Grace"
    assert user["role"] == "user" and user["password_changed_at"] is not None
    assert "password_hash" not in user
    signin = await client.post(
        "/v1/auth/signin", json={"email": "grace@example.com", "password": PASSWORD}
    )
    assert signin.status_code == 200

    bare = await client.post(USERS, json={"email": "nopw@example.com"}, headers=headers)
    assert bare.status_code == 201 and bare.json()["password_changed_at"] is None
    assert (
        await pg.fetchval("SELECT password_hash FROM users WHERE id = $1", bare.json()["id"])
        is None
    )
    refused = await client.post(
        "/v1/auth/signin", json={"email": "nopw@example.com", "password": PASSWORD}
    )
    assert refused.status_code == 401 and refused.json()["type"] == "invalid_credentials"

    (row,) = await audit_rows(pg, target_user_id=user["id"], action="user.created")
    assert (row["actor_type"], row["actor_id"]) == ("admin", admin_id)
    assert row["metadata"]["fields"] == [
        "email", "email_verified", "metadata", "name", "username"
    ]  # fmt: skip


async def test_create_in_another_env_and_app(client, pg):
    headers, _ = await _admin(pg)
    acme = await make_app(pg, "acme")
    created = await client.post(
        USERS, json={"email": "w@example.com", "app_id": "acme", "env_id": "production"},
        headers=headers,
    )  # fmt: skip
    assert created.status_code == 201
    assert (created.json()["app_id"], created.json()["env_id"]) == acme
    unknown = await client.post(
        USERS, json={"email": "w@example.com", "app_id": "acme", "env_id": "qa"}, headers=headers
    )
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com", "password": "password123"}, "password"),
        ({"email": "a@example.com", "role": "Super Admin"}, "role"),
        ({"email": "a@example.com", "username": "root"}, "username"),
        ({"email": "a@example.com", "phone": "12"}, "phone"),
        ({"email": "a@example.com", "banned": True}, "banned"),
        ({"email": "a@example.com", "app_id": "aapp_bad"}, "app_id"),
        ({"email": "a@example.com", "phone_verified": True}, "phone_verified"),
        ({}, "email"),
    ],
)
async def test_create_bad_input_is_422(client, pg, body, field):
    headers, _ = await _admin(pg)
    response = await client.post(USERS, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert field in {d["field"] for d in response.json()["details"]}
    assert await pg.fetchval("SELECT count(*) FROM users") == 1


async def test_create_duplicate_email_or_username_is_409(client, pg):
    headers, _ = await _admin(pg)
    await client.post(USERS, json={"email": "dup@example.com", "username": "dup"}, headers=headers)
    email = await client.post(USERS, json={"email": "DUP@example.com"}, headers=headers)
    assert email.status_code == 409 and email.json()["type"] == "email_taken"
    name = await client.post(
        USERS, json={"email": "x@example.com", "username": "DUP"}, headers=headers
    )
    assert name.status_code == 409 and name.json()["type"] == "username_taken"


async def test_get_hides_deleted_unless_asked(client, pg):
    headers, _ = await _admin(pg)
    tenant = tuple(await pg.fetchrow("SELECT app_id, env_id FROM users LIMIT 1"))
    deleted = await make_user(pg, tenant, deleted_at=clock.now())
    assert (await client.get(f"{USERS}/{deleted}", headers=headers)).status_code == 404
    found = await client.get(
        f"{USERS}/{deleted}", params={"include_deleted": "true"}, headers=headers
    )
    assert found.status_code == 200 and found.json()["deleted_at"] is not None


async def test_patch_admin_fields_and_counters(client, pg):
    headers, admin_id = await _admin(pg)
    data = await signup(client, email="ada@example.com")
    user_id = data["user"]["id"]
    await pg.execute("UPDATE users SET email_verified = true WHERE id = $1", user_id)
    response = await client.patch(
        f"{USERS}/{user_id}",
        json={"email": "countess@example.com", "role": "admin", "phone": "+14155550123",
              "phone_verified": True, "metadata": {"tier": "gold"}, "name": "Ada"},
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    user = response.json()
    assert user["email"] == "countess@example.com" and user["email_verified"] is False
    assert user["role"] == "admin" and user["phone_verified"] is True
    assert user["metadata"] == {"tier": "gold"} and user["name"] == "Ada"
    assert user["updated_at"] > data["user"]["updated_at"]
    counters = await pg.fetchrow(
        "SELECT email_address_counter, password_hash_counter, disabled_counter, "
        "sessions_counter FROM users WHERE id = $1",
        user_id,
    )
    assert tuple(counters) == (1, 0, 0, 0)
    (row,) = await audit_rows(pg, target_user_id=user_id, action="user.updated")
    assert row["actor_id"] == admin_id
    assert row["metadata"]["fields"] == sorted(
        ["email", "role", "phone", "phone_verified", "metadata", "name"]
    )

    kept = await client.patch(
        f"{USERS}/{user_id}",
        json={"email": "ada@example.org", "email_verified": True},
        headers=headers,
    )
    assert kept.json()["email_verified"] is True
    assert await pg.fetchval("SELECT email_address_counter FROM users WHERE id = $1", user_id) == 2


@pytest.mark.parametrize(
    ("body", "status", "type_"),
    [
        ({"email": None}, 422, "validation_error"),
        ({"role": None}, 422, "validation_error"),
        ({"email": "taken@example.com"}, 409, "email_taken"),
        ({"username": "Taken"}, 409, "username_taken"),
        ({"display_username": "other"}, 422, "validation_error"),
        ({"password": PASSWORD}, 422, "validation_error"),
        ({"banned": True}, 422, "validation_error"),
        ({"name": "nul\x00"}, 422, "validation_error"),
        ({"metadata": {"k": "nul\x00"}}, 422, "validation_error"),
    ],
)
async def test_patch_refusals(client, pg, body, status, type_):
    headers, _ = await _admin(pg)
    tenant = tuple(await pg.fetchrow("SELECT app_id, env_id FROM users LIMIT 1"))
    await make_user(pg, tenant, email="taken@example.com", username="taken")
    user_id = await make_user(pg, tenant, username="mine")
    response = await client.patch(f"{USERS}/{user_id}", json=body, headers=headers)
    assert (response.status_code, response.json()["type"]) == (status, type_), response.text
    assert await audit_rows(pg) == []


async def test_delete_then_restore(client, pg):
    headers, admin_id = await _admin(pg)
    data = await signup(client, email="ada@example.com", username="ada")
    user_id, token = data["user"]["id"], data["session_token"]
    deleted = await client.delete(f"{USERS}/{user_id}", headers=headers)
    assert deleted.status_code == 200 and deleted.json() == {"status": "user deleted"}
    assert await _me(client, token) == 401
    assert (await client.delete(f"{USERS}/{user_id}", headers=headers)).status_code == 404
    assert await pg.fetchval("SELECT sessions_counter FROM users WHERE id = $1", user_id) == 1

    restored = await client.post(f"{USERS}/{user_id}/restore", headers=headers)
    assert restored.status_code == 200 and restored.json()["deleted_at"] is None
    assert await _me(client, token) == 401  # old sessions stay revoked
    signin = await client.post(
        "/v1/auth/signin", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert signin.status_code == 200
    again = await client.post(f"{USERS}/{user_id}/restore", headers=headers)
    assert again.status_code == 409 and again.json()["type"] == "conflict"
    actions = [r["action"] for r in await audit_rows(pg, actor_id=admin_id)]
    assert actions == ["user.deleted", "user.restored"]


@pytest.mark.parametrize(
    ("taken_by", "type_"),
    [({"email": "ADA@example.com"}, "email_taken"), ({"username": "Ada"}, "username_taken")],
)
async def test_restore_conflicts_when_taken_meanwhile(client, pg, taken_by, type_):
    headers, _ = await _admin(pg)
    data = await signup(client, email="ada@example.com", username="ada")
    user_id = data["user"]["id"]
    await client.delete(f"{USERS}/{user_id}", headers=headers)
    await signup(client, **{"email": "other@example.com", **taken_by})
    response = await client.post(f"{USERS}/{user_id}/restore", headers=headers)
    assert response.status_code == 409 and response.json()["type"] == type_
    assert await pg.fetchval("SELECT deleted_at FROM users WHERE id = $1", user_id) is not None
    assert await audit_rows(pg, action="user.restored") == []


async def test_restore_only_within_retention_window(client, pg):
    _, admin_id = await _admin(pg)
    tenant = tuple(await pg.fetchrow("SELECT app_id, env_id FROM users LIMIT 1"))
    user_id = await make_user(pg, tenant, deleted_at=clock.now())
    clock.advance(timedelta(days=30, minutes=1))
    headers = auth((await make_session(pg, admin_id))[0])  # the first one has expired
    response = await client.post(f"{USERS}/{user_id}/restore", headers=headers)
    assert response.status_code == 409 and "retention" in response.json()["error"]


async def test_purge_one_user_on_demand(client, pg):
    headers, admin_id = await _admin(pg)
    data = await signup(client, email="ada@example.com")
    user_id = data["user"]["id"]
    live = await client.post(f"{USERS}/{user_id}/purge", headers=headers)
    assert live.status_code == 409 and live.json()["type"] == "conflict"
    await client.delete(f"{USERS}/{user_id}", headers=headers)
    purged = await client.post(f"{USERS}/{user_id}/purge", headers=headers)
    assert purged.status_code == 200 and purged.json() == {"purged": 1}
    assert await pg.fetchval("SELECT count(*) FROM users WHERE id = $1", user_id) == 0
    assert await pg.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", user_id) == 0
    found = await client.get(
        f"{USERS}/{user_id}", params={"include_deleted": "true"}, headers=headers
    )
    assert found.status_code == 404
    (row,) = await audit_rows(pg, action="user.purged")
    assert (row["target_user_id"], row["actor_id"]) == (user_id, admin_id)
    assert row["metadata"] == {"reason": "on_demand"}
    # The trail of the user outlives it.
    assert len(await audit_rows(pg, target_user_id=user_id)) >= 3


async def test_purge_expired_follows_retention_and_app(client, pg):
    headers, admin_id = await _admin(pg)
    default = tuple(await pg.fetchrow("SELECT app_id, env_id FROM users LIMIT 1"))
    acme = await make_app(pg, "acme")
    now = clock.now()
    old = [await make_user(pg, default, deleted_at=now - timedelta(days=31)) for _ in range(3)]
    recent = await make_user(pg, default, deleted_at=now - timedelta(days=29))
    live = await make_user(pg, default)
    acme_old = await make_user(pg, acme, deleted_at=now - timedelta(days=90))
    await make_session(pg, old[0])

    response = await client.post(f"{USERS}/purge", headers=headers)
    assert response.status_code == 200 and response.json() == {"purged": 3}
    left = {r[0] for r in await pg.fetch("SELECT id FROM users")}
    assert {recent, live, acme_old} <= left and not set(old) & left
    rows = await audit_rows(pg, action="user.purged")
    assert {r["target_user_id"] for r in rows} == set(old)
    assert all(r["metadata"] == {"reason": "retention"} and r["actor_id"] == admin_id for r in rows)

    clock.advance(timedelta(days=2))
    headers = auth((await make_session(pg, admin_id))[0])
    other = await client.post(f"{USERS}/purge", json={"app_id": "acme"}, headers=headers)
    assert other.json() == {"purged": 1}
    assert (await client.post(f"{USERS}/purge", headers=headers)).json() == {"purged": 1}


async def test_set_password_revokes_sessions(client, pg):
    headers, admin_id = await _admin(pg)
    data = await signup(client, email="ada@example.com")
    user_id = data["user"]["id"]
    weak = await client.put(
        f"{USERS}/{user_id}/password", json={"password": "123"}, headers=headers
    )
    assert weak.status_code == 422 and weak.json()["details"][0]["field"] == "password"
    new_password = "a brand new passphrase"
    response = await client.put(
        f"{USERS}/{user_id}/password", json={"password": new_password}, headers=headers
    )
    assert response.status_code == 200
    assert response.json()["password_changed_at"] > data["user"]["password_changed_at"]
    assert await _me(client, data["session_token"]) == 401
    for password, status in ((PASSWORD, 401), (new_password, 200)):
        signin = await client.post(
            "/v1/auth/signin", json={"email": "ada@example.com", "password": password}
        )
        assert signin.status_code == status
    counters = await pg.fetchrow(
        "SELECT password_hash_counter, sessions_counter FROM users WHERE id = $1", user_id
    )
    assert tuple(counters) == (1, 1)
    (row,) = await audit_rows(pg, action="user.password_set")
    assert row["actor_id"] == admin_id and row["metadata"] == {"sessions_revoked": 1}


async def test_sessions_list_and_revoke(client, pg):
    headers, admin_id = await _admin(pg)
    first = await signup(client, email="ada@example.com")
    user_id = first["user"]["id"]
    second = await client.post(
        "/v1/auth/signin", json={"email": "ada@example.com", "password": PASSWORD}
    )
    second_token = second.json()["session_token"]
    listed = (await client.get(f"{USERS}/{user_id}/sessions", headers=headers)).json()
    assert len(listed["sessions"]) == 2 and not any(s["current"] for s in listed["sessions"])
    assert "token_hash" not in listed["sessions"][0]
    first_id = await pg.fetchval(
        "SELECT id FROM sessions WHERE user_id = $1 ORDER BY created_at LIMIT 1", user_id
    )

    one = await client.delete(f"{USERS}/{user_id}/sessions/{first_id}", headers=headers)
    assert one.status_code == 200 and one.json() == {"status": "revoked"}
    assert await _me(client, first["session_token"]) == 401
    assert await _me(client, second_token) == 200
    again = await client.delete(f"{USERS}/{user_id}/sessions/{first_id}", headers=headers)
    assert again.status_code == 404
    other = await signup(client)
    mismatch = await client.delete(
        f"{USERS}/{other['user']['id']}/sessions/{first_id}", headers=headers
    )
    assert mismatch.status_code == 404

    everything = await client.delete(f"{USERS}/{user_id}/sessions", headers=headers)
    assert everything.json() == {"status": "revoked", "revoked": 1}
    assert await _me(client, second_token) == 401
    assert (await client.get(f"{USERS}/{user_id}/sessions", headers=headers)).json() == {
        "sessions": []
    }
    assert await pg.fetchval("SELECT sessions_counter FROM users WHERE id = $1", user_id) == 1
    actions = [r["action"] for r in await audit_rows(pg, actor_id=admin_id)]
    assert actions == ["session.revoked", "session.revoked_all"]


async def test_admin_acting_on_own_sessions_sees_current(client, pg):
    headers, admin_id = await _admin(pg)
    listed = (await client.get(f"{USERS}/{admin_id}/sessions", headers=headers)).json()
    assert [s["current"] for s in listed["sessions"]] == [True]


async def test_export_shows_admin_actions_as_a_role_only(client, pg):
    """The user sees that an admin changed their account, not which admin, from where."""
    headers, admin_id = await _admin(pg)
    data = await signup(client)
    await client.patch(
        f"{USERS}/{data['user']['id']}",
        json={"name": "X"},
        headers={**headers, "User-Agent": "staff-console/1.0"},
    )
    export = (await client.get("/v1/auth/me/export", headers=bearer(data["session_token"]))).json()
    admin_events = [e for e in export["audit_events"] if e["actor_type"] == "admin"]
    assert [(e["action"], e["actor_id"], e["ip"], e["user_agent"]) for e in admin_events] == [
        ("user.updated", None, None, None)
    ]
    assert admin_id not in str(export) and "staff-console" not in str(export)
    # The user's own events keep where they came from.
    (signup_event,) = [e for e in export["audit_events"] if e["action"] == "user.signup"]
    assert signup_event["actor_id"] == data["user"]["id"] and signup_event["ip"] == "203.0.113.7"
