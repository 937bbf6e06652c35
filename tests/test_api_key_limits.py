"""What an API key may not do: make an admin, or act on an admin's account. And a key does not
outlive the admin standing of the person who made it.

The review's path: a key created an admin user with a password, signed in as it, and minted a
key — which keys themselves may not. Each step of that path is closed here, for a key of the
user's own app and for a key of the default app (which reaches every app)."""

from typing import Any

import asyncpg
import httpx
import pytest

from tests.admin_support import (
    audit_rows,
    auth,
    default_app,
    make_admin,
    make_app,
    make_key,
    make_user,
)
from tests.helpers import PASSWORD, bearer, signup

USERS = "/v1/admin/users"


@pytest.fixture(params=["own-app key", "default-app key"])
async def key(request: pytest.FixtureRequest, pg: asyncpg.Connection) -> dict[str, Any]:
    """A key, and an app it reaches with an admin and a plain user in it."""
    acme = await make_app(pg, "acme")
    owner = acme[0] if request.param == "own-app key" else (await default_app(pg))[0]
    secret, _ = await make_key(pg, owner)
    return {
        "headers": auth(secret),
        "app": acme,
        "admin": await make_user(pg, acme, role="admin", password_hash="$argon2id$unchanged"),
        "user": await make_user(pg, acme),
    }


def assert_forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["type"] == "forbidden"


async def test_a_key_cannot_create_an_admin(client, pg, key):
    body = {"email": "new-admin@example.com", "password": PASSWORD, "role": "admin",
            "app_id": key["app"][0]}  # fmt: skip
    assert_forbidden(await client.post(USERS, json=body, headers=key["headers"]))
    assert await pg.fetchval("SELECT count(*) FROM users WHERE role = 'admin'") == 1
    # The sign-in the review made with that password has nothing to sign in to.
    signin = await client.post(
        "/v1/auth/signin",
        json={
            "email": "new-admin@example.com",
            "password": PASSWORD,
            "app_id": key["app"][0],
        },
    )
    assert signin.status_code == 401


@pytest.mark.parametrize("role", ["admin", "user"])
async def test_a_key_cannot_grant_or_remove_the_admin_role(client, pg, key, role):
    target = key["user"] if role == "admin" else key["admin"]
    response = await client.patch(f"{USERS}/{target}", json={"role": role}, headers=key["headers"])
    assert_forbidden(response)
    stored = await pg.fetchval("SELECT role FROM users WHERE id = $1", target)
    assert stored == ("user" if role == "admin" else "admin")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/password", {"password": "a-new-passphrase-1"}),
        ("PATCH", "", {"email": "taken-over@example.com"}),
        ("PATCH", "", {"email_verified": False}),
        ("POST", "/ban", {}),
        ("POST", "/unban", None),
        ("DELETE", "", None),
    ],
    ids=["password", "email", "email_verified", "ban", "unban", "delete"],
)
async def test_a_key_cannot_change_an_admins_account(client, pg, key, method, path, body):
    before = await pg.fetchrow("SELECT * FROM users WHERE id = $1", key["admin"])
    response = await client.request(
        method, f"{USERS}/{key['admin']}{path}", json=body, headers=key["headers"]
    )
    assert_forbidden(response)
    after = await pg.fetchrow("SELECT * FROM users WHERE id = $1", key["admin"])
    assert dict(after) == dict(before)


async def test_a_key_cannot_restore_or_purge_a_deleted_admin(client, pg, key):
    await pg.execute("UPDATE users SET deleted_at = now() WHERE id = $1", key["admin"])
    for action in ("restore", "purge"):
        response = await client.post(f"{USERS}/{key['admin']}/{action}", headers=key["headers"])
        assert_forbidden(response)
    assert await pg.fetchval("SELECT deleted_at IS NOT NULL FROM users WHERE id = $1", key["admin"])


async def test_a_key_still_manages_plain_users(client, key):
    target, headers = key["user"], key["headers"]
    response = await client.put(
        f"{USERS}/{target}/password", json={"password": "a-new-passphrase-1"}, headers=headers
    )
    assert response.status_code == 200, response.text
    response = await client.patch(f"{USERS}/{target}", json={"name": "Renamed"}, headers=headers)
    assert response.status_code == 200, response.text
    assert (await client.post(f"{USERS}/{target}/ban", json={}, headers=headers)).status_code == 200


async def test_an_admin_session_still_grants_the_role(client, pg):
    acme = await make_app(pg, "acme")
    headers = auth(await make_admin(pg, acme))
    target = await make_user(pg, acme)
    response = await client.patch(f"{USERS}/{target}", json={"role": "admin"}, headers=headers)
    assert response.status_code == 200 and response.json()["role"] == "admin"


# ---- a key's life ends with its creator's admin standing -----------------------------------


async def _admin_with_a_key(client: httpx.AsyncClient, pg: asyncpg.Connection) -> dict[str, Any]:
    """An admin (who can sign in) of the default app and a key that admin made."""
    tenant = await default_app(pg)
    data = await signup(client)
    await pg.execute("UPDATE users SET role = 'admin' WHERE id = $1", data["user"]["id"])
    created = await client.post(
        "/v1/admin/api-keys", json={"name": "ci"}, headers=bearer(data["session_token"])
    )
    assert created.status_code == 201, created.text
    other_admin = auth(await make_admin(pg, tenant))
    return {**data, "key": auth(created.json()["secret"]), "other_admin": other_admin}


async def _key_works(client: httpx.AsyncClient, headers: dict[str, str]) -> bool:
    response = await client.get(USERS, headers=headers)
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "reason"),
    [
        ("PATCH", "", {"role": "user"}, "creator_demoted"),
        ("POST", "/ban", {}, "creator_banned"),
        ("DELETE", "", None, "creator_deleted"),
    ],
    ids=["demoted", "banned", "deleted"],
)
async def test_a_key_is_revoked_when_its_creator_stops_being_an_admin(
    client, pg, method, path, body, reason
):
    admin = await _admin_with_a_key(client, pg)
    assert await _key_works(client, admin["key"])
    response = await client.request(
        method, f"{USERS}/{admin['user']['id']}{path}", json=body, headers=admin["other_admin"]
    )
    assert response.status_code == 200, response.text
    assert not await _key_works(client, admin["key"])
    (revoked,) = await audit_rows(pg, action="api_key.revoked")
    assert revoked["metadata"]["reason"] == reason
    assert revoked["target_user_id"] == admin["user"]["id"]


async def test_a_key_is_revoked_when_its_creator_deletes_their_account(client, pg):
    admin = await _admin_with_a_key(client, pg)
    deleted = await client.delete("/v1/auth/me", headers=bearer(admin["session_token"]))
    assert deleted.status_code == 200
    assert not await _key_works(client, admin["key"])


async def test_other_admins_keys_and_cli_keys_stay(client, pg):
    admin = await _admin_with_a_key(client, pg)
    cli_secret, _ = await make_key(pg, (await default_app(pg))[0])  # created_by NULL
    response = await client.patch(
        f"{USERS}/{admin['user']['id']}", json={"role": "user"}, headers=admin["other_admin"]
    )
    assert response.status_code == 200
    assert await _key_works(client, auth(cli_secret))
    assert await _key_works(client, admin["other_admin"])
