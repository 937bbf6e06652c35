"""Apps and environments, API keys, the audit-event list, and the operator CLI
(create-api-key, purge)."""

import hashlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from app import clock
from app.services import admin_cli
from app.services.admin_cli import UserError
from tests.admin_support import (
    audit_rows,
    auth,
    default_app,
    make_admin,
    make_app,
    make_session,
    make_user,
)
from tests.conftest import make_settings
from tests.helpers import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


async def _root(pg) -> tuple[dict[str, str], str]:
    """Headers and id of an admin of the default app."""
    admin_id = await make_user(pg, await default_app(pg), role="admin")
    token, _ = await make_session(pg, admin_id)
    return auth(token), admin_id


# ---- apps and environments -----------------------------------------------------------------


async def test_create_app_with_default_environment(client, pg):
    headers, admin_id = await _root(pg)
    response = await client.post(
        "/v1/admin/apps", json={"slug": "acme", "name": "Acme Inc."}, headers=headers
    )
    assert response.status_code == 201, response.text
    app = response.json()
    assert app["id"].startswith("aapp_") and app["slug"] == "acme"
    (env,) = app["environments"]
    assert (env["slug"], env["is_default"], env["app_id"]) == ("production", True, app["id"])
    (row,) = await audit_rows(pg, action="app.created")
    assert (row["app_id"], row["actor_id"]) == (app["id"], admin_id)

    # The new tenant works at once: a sign-up lands in its production environment.
    signup = await client.post(
        "/v1/auth/signup",
        json={"email": "a@example.com", "password": PASSWORD},
        headers={"X-App-ID": "acme"},
    )
    assert signup.json()["user"]["env_id"] == env["id"]

    duplicate = await client.post(
        "/v1/admin/apps", json={"slug": "acme", "name": "Again"}, headers=headers
    )
    assert duplicate.status_code == 409 and duplicate.json()["type"] == "conflict"
    listed = (await client.get("/v1/admin/apps", headers=headers)).json()["apps"]
    assert [a["slug"] for a in listed] == ["default", "acme"]


@pytest.mark.parametrize("slug", ["a", "-acme", "Acme", "ac_me", "ac me", "x" * 64, "ünï"])
async def test_bad_slugs_are_422(client, pg, slug):
    headers, _ = await _root(pg)
    response = await client.post(
        "/v1/admin/apps", json={"slug": slug, "name": "X"}, headers=headers
    )
    assert response.status_code == 422 and response.json()["details"][0]["field"] == "slug"
    env = await client.post(
        "/v1/admin/apps/default/environments", json={"slug": slug, "name": "X"}, headers=headers
    )
    assert env.status_code == 422


async def test_environments_create_list_and_move_default(client, pg):
    headers, _ = await _root(pg)
    acme = await make_app(pg, "acme")
    staging = await client.post(
        f"/v1/admin/apps/{acme[0]}/environments",
        json={"slug": "staging", "name": "Staging"},
        headers=headers,
    )
    assert staging.status_code == 201 and staging.json()["is_default"] is False
    again = await client.post(
        "/v1/admin/apps/acme/environments", json={"slug": "staging", "name": "S"}, headers=headers
    )
    assert again.status_code == 409
    moved = await client.post(
        "/v1/admin/apps/acme/environments",
        json={"slug": "live", "name": "Live", "is_default": True},
        headers=headers,
    )
    assert moved.status_code == 201
    envs = (await client.get("/v1/admin/apps/acme/environments", headers=headers)).json()
    defaults = {e["slug"]: e["is_default"] for e in envs["environments"]}
    assert defaults == {"production": False, "staging": False, "live": True}
    unknown = await client.get("/v1/admin/apps/nope/environments", headers=headers)
    assert unknown.status_code == 404


async def test_app_admin_manages_own_environments_only(client, pg):
    acme = await make_app(pg, "acme")
    await make_app(pg, "globex")
    headers = auth(await make_admin(pg, acme))
    own = await client.post(
        "/v1/admin/apps/acme/environments", json={"slug": "qa", "name": "QA"}, headers=headers
    )
    assert own.status_code == 201
    other = await client.post(
        "/v1/admin/apps/globex/environments", json={"slug": "qa", "name": "QA"}, headers=headers
    )
    assert other.status_code == 404
    create = await client.post(
        "/v1/admin/apps", json={"slug": "mine", "name": "Mine"}, headers=headers
    )
    assert create.status_code == 403 and create.json()["type"] == "forbidden"


# ---- API keys ------------------------------------------------------------------------------


async def test_api_key_shown_once_stored_hashed_and_revocable(client, pg):
    headers, admin_id = await _root(pg)
    created = await client.post("/v1/admin/api-keys", json={"name": "billing"}, headers=headers)
    assert created.status_code == 201, created.text
    key = created.json()
    secret = key["secret"]
    assert secret.startswith("ask_") and len(secret) >= 4 + 43  # 256 bits, base64url
    assert key["prefix"] == secret[:8] and key["last4"] == secret[-4:]
    assert key["created_by"] == admin_id

    row = await pg.fetchrow("SELECT * FROM api_keys WHERE id = $1", key["id"])
    assert bytes(row["key_hash"]) == hashlib.sha256(secret.encode()).digest()
    assert all(secret not in str(value) for value in row.values())
    assert secret not in str(await audit_rows(pg))

    listed = await client.get("/v1/admin/api-keys", headers=headers)
    assert secret not in listed.text and "key_hash" not in listed.text
    assert [k["id"] for k in listed.json()["api_keys"]] == [key["id"]]
    assert "secret" not in listed.json()["api_keys"][0]

    used = await client.get("/v1/admin/users", headers=auth(secret))
    assert used.status_code == 200
    assert await pg.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key["id"])
    acting = await client.post(
        "/v1/admin/users", json={"email": "k@example.com"}, headers=auth(secret)
    )
    (row,) = await audit_rows(pg, action="user.created")
    assert (row["actor_type"], row["actor_id"]) == ("api_key", key["id"])
    assert acting.status_code == 201

    revoked = await client.delete(f"/v1/admin/api-keys/{key['id']}", headers=headers)
    assert revoked.status_code == 200
    refused = await client.get("/v1/admin/users", headers=auth(secret))
    assert refused.status_code == 401 and refused.json()["type"] == "authentication_required"
    twice = await client.delete(f"/v1/admin/api-keys/{key['id']}", headers=headers)
    assert twice.status_code == 404
    listed = (await client.get("/v1/admin/api-keys", headers=headers)).json()["api_keys"]
    assert listed[0]["revoked_at"] is not None
    actions = [r["action"] for r in await audit_rows(pg, actor_id=admin_id)]
    assert actions == ["api_key.created", "api_key.revoked"]


def _forge(secret: str) -> str:
    """The same key with its last character changed (to one it certainly is not)."""
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


async def test_api_key_of_an_app_stays_in_it(client, pg):
    headers, _ = await _root(pg)
    acme = await make_app(pg, "acme")
    await make_app(pg, "globex")
    created = await client.post(
        "/v1/admin/api-keys", json={"name": "acme ci", "app_id": "acme"}, headers=headers
    )
    secret = created.json()["secret"]
    assert created.json()["app_id"] == acme[0]
    acme_user = await make_user(pg, acme)
    listed = (await client.get("/v1/admin/users", headers=auth(secret))).json()["users"]
    assert [u["id"] for u in listed] == [acme_user]
    other = await client.get("/v1/admin/users", params={"app_id": "globex"}, headers=auth(secret))
    assert other.status_code == 404
    forged = await client.get("/v1/admin/users", headers=auth(_forge(secret)))
    assert forged.status_code == 401


# ---- the audit trail -----------------------------------------------------------------------


async def test_audit_events_filters_and_cursor(client, pg):
    headers, admin_id = await _root(pg)
    tenant = await default_app(pg)
    targets = [await make_user(pg, tenant) for _ in range(3)]
    for target in targets:
        await client.post(f"/v1/admin/users/{target}/ban", json={}, headers=headers)
    clock.advance(timedelta(minutes=30))
    later = clock.now()
    for target in targets:
        await client.post(f"/v1/admin/users/{target}/unban", headers=headers)

    async def events(**params) -> list[dict]:
        response = await client.get("/v1/admin/audit-events", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["audit_events"]

    assert [e["action"] for e in await events(target_user_id=targets[0])] == [
        "user.unbanned",
        "user.banned",
    ]
    assert len(await events(action="user.banned")) == 3
    assert len(await events(actor_id=admin_id)) == 6
    assert len(await events(actor_type="admin")) == 6
    assert {e["action"] for e in await events(created_after=later.isoformat())} == {"user.unbanned"}
    assert {e["action"] for e in await events(created_before=later.isoformat())} == {"user.banned"}
    first = await events(limit=1)
    assert first[0]["ip"] == "203.0.113.7" and first[0]["actor_type"] == "admin"

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/admin/audit-events", params=params, headers=headers)).json()
        seen += [e["id"] for e in page["audit_events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6 and seen == sorted(seen, reverse=True)


@pytest.mark.parametrize(
    "params",
    [
        {"target_user_id": "nope"},
        {"actor_id": "aapp_01jdk3v7m6e8x9q2w4r5t6y7z8"},
        {"action": "DROP TABLE"},
        {"actor_type": "robot"},
        {"limit": 0},
        {"limit": 101},
        {"cursor": "e30"},  # {} : no id
        {"created_after": "2026-01-01"},
    ],
)
async def test_bad_audit_query_is_422(client, pg, params):
    headers, _ = await _root(pg)
    response = await client.get("/v1/admin/audit-events", params=params, headers=headers)
    assert response.status_code == 422 and response.json()["type"] == "validation_error"


# ---- the CLI -------------------------------------------------------------------------------


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_cli_create_api_key_prints_the_secret_once(client, pg, database_url):
    result = _cli(database_url, "create-api-key", "--app", "default", "--name", "deploy bot")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("ask_") and "\n" not in secret
    assert "akey_" in result.stderr and secret not in result.stderr
    row = await pg.fetchrow("SELECT name, key_hash FROM api_keys")
    assert row["name"] == "deploy bot"
    assert bytes(row["key_hash"]) == hashlib.sha256(secret.encode()).digest()
    assert (await client.get("/v1/admin/apps", headers=auth(secret))).status_code == 200
    (event,) = await audit_rows(pg, action="api_key.created")
    assert event["actor_type"] == "system"

    bad = _cli(database_url, "create-api-key", "--app", "nope", "--name", "x")
    assert bad.returncode == 2 and "app not found" in bad.stderr
    assert "Traceback" not in bad.stderr


async def test_cli_purge(pg, database_url):
    tenant = await default_app(pg)
    acme = await make_app(pg, "acme")
    now = clock.now()
    old = await make_user(pg, tenant, deleted_at=now - timedelta(days=40))
    acme_old = await make_user(pg, acme, deleted_at=now - timedelta(days=40))
    recent = await make_user(pg, tenant, deleted_at=now - timedelta(days=1))
    live = await make_user(pg, tenant)

    result = _cli(database_url, "purge")
    assert result.returncode == 0, result.stderr
    assert "purged 2" in result.stdout
    left = {r[0] for r in await pg.fetch("SELECT id FROM users")}
    assert left == {recent, live}
    rows = await audit_rows(pg, action="user.purged")
    assert {r["target_user_id"] for r in rows} == {old, acme_old}
    assert {r["actor_type"] for r in rows} == {"system"}

    refused = _cli(database_url, "purge", "--user-id", live)
    assert refused.returncode == 2 and "deleted" in refused.stderr
    assert "Traceback" not in refused.stderr

    # The same operator function in-process (no second interpreter start-up).
    settings = make_settings(database_url)
    with pytest.raises(UserError, match="ausr_"):
        await admin_cli.purge(database_url, settings, "bob")
    assert await admin_cli.purge(database_url, settings, recent) == f"purged {recent}"
    assert {r[0] for r in await pg.fetch("SELECT id FROM users")} == {live}
