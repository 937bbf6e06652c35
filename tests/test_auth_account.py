"""The caller's own account: profile edits, password change, delete, export."""

import pytest

from tests.helpers import PASSWORD, bearer, signup, unique_email


async def test_patch_me_changes_only_given_fields(client, pg):
    data = await signup(client, name="Ada", phone="+14155550123", metadata={"a": "1"})
    token = data["session_token"]
    response = await client.patch(
        "/v1/auth/me", json={"username": "Countess", "metadata": {"b": "2"}}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    user = response.json()
    assert user["name"] == "Ada" and user["phone"] == "+14155550123"
    assert user["username"] == "countess" and user["display_username"] == "Countess"
    assert user["metadata"] == {"b": "2"}
    assert user["updated_at"] > data["user"]["updated_at"]
    cleared = await client.patch("/v1/auth/me", json={"name": None}, headers=bearer(token))
    assert cleared.json()["name"] is None
    assert await pg.fetchval("SELECT count(*) FROM audit_events WHERE action = 'user.updated'") == 2


async def test_display_username_must_match_username(client):
    data = await signup(client, username="lovelace")
    token = data["session_token"]
    ok = await client.patch(
        "/v1/auth/me", json={"display_username": "LoveLace"}, headers=bearer(token)
    )
    assert ok.status_code == 200 and ok.json()["display_username"] == "LoveLace"
    bad = await client.patch(
        "/v1/auth/me", json={"display_username": "other"}, headers=bearer(token)
    )
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "display_username"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "new@example.com"},
        {"role": "admin"},
        {"banned": False},
        {"username": "x"},
        {"phone": "12"},
        {"metadata": {"k": 1}},
    ],
)
async def test_patch_me_refuses_unknown_and_invalid_fields(client, body):
    data = await signup(client)
    response = await client.patch("/v1/auth/me", json=body, headers=bearer(data["session_token"]))
    assert response.status_code == 422 and response.json()["type"] == "validation_error"


async def test_patch_me_username_taken_is_409(client):
    await signup(client, username="taken")
    data = await signup(client)
    response = await client.patch(
        "/v1/auth/me", json={"username": "TAKEN"}, headers=bearer(data["session_token"])
    )
    assert response.status_code == 409 and response.json()["type"] == "username_taken"


async def test_change_password_revokes_other_sessions(client, pg):
    data = await signup(client)
    email = data["user"]["email"]
    other = (
        await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    ).json()
    counter = await pg.fetchval("SELECT password_hash_counter FROM users")
    response = await client.post(
        "/v1/auth/change-password",
        json={"current_password": PASSWORD, "new_password": "brand-new-passphrase"},
        headers=bearer(data["session_token"]),
    )
    assert response.status_code == 200
    assert (
        await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    ).status_code == 200
    assert (
        await client.get("/v1/auth/me", headers=bearer(other["session_token"]))
    ).status_code == 401
    old = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    new = await client.post(
        "/v1/auth/signin", json={"email": email, "password": "brand-new-passphrase"}
    )
    assert new.status_code == 200
    assert await pg.fetchval("SELECT password_hash_counter FROM users") == counter + 1
    assert new.json()["user"]["password_changed_at"] > data["user"]["password_changed_at"]


@pytest.mark.parametrize(
    ("current", "new", "status", "field"),
    [
        ("wrong-password-9", "brand-new-passphrase", 401, None),
        (PASSWORD, "short", 422, "new_password"),
        (PASSWORD, "password1", 422, "new_password"),
    ],
)
async def test_change_password_failures_change_nothing(client, pg, current, new, status, field):
    data = await signup(client)
    before = await pg.fetchval("SELECT password_hash FROM users")
    response = await client.post(
        "/v1/auth/change-password",
        json={"current_password": current, "new_password": new},
        headers=bearer(data["session_token"]),
    )
    assert response.status_code == status
    if field:
        assert response.json()["details"][0]["field"] == field
    assert await pg.fetchval("SELECT password_hash FROM users") == before


async def test_delete_me_frees_email_and_kills_every_token(client, pg):
    data = await signup(client, email="gone@example.com", username="gone")
    other = (
        await client.post(
            "/v1/auth/signin", json={"email": "gone@example.com", "password": PASSWORD}
        )
    ).json()
    response = await client.delete("/v1/auth/me", headers=bearer(data["session_token"]))
    assert response.status_code == 200 and response.json() == {"status": "account deleted"}
    for token in (data["session_token"], other["session_token"]):
        assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 401
    for token in (data["refresh_token"], other["refresh_token"]):
        refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": token})
        assert refreshed.status_code == 401
    # Invisible to sign-in, and the e-mail and username are free at once.
    signin = await client.post(
        "/v1/auth/signin", json={"email": "gone@example.com", "password": PASSWORD}
    )
    assert signin.status_code == 401
    again = await signup(client, email="GONE@example.com", username="gone")
    assert again["user"]["id"] != data["user"]["id"]
    row = await pg.fetchrow("SELECT deleted_at FROM users WHERE id = $1", data["user"]["id"])
    assert row["deleted_at"] is not None
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
            data["user"]["id"],
        )
        == 0
    )


async def test_export_has_everything_but_no_secret(client):
    data = await signup(client, name="Exporter")
    await client.post(
        "/v1/auth/signin", json={"email": data["user"]["email"], "password": "wrong-pass-1"}
    )
    response = await client.get("/v1/auth/me/export", headers=bearer(data["session_token"]))
    assert response.status_code == 200
    export = response.json()
    assert set(export) == {
        "user",
        "sessions",
        "devices",
        "organizations",
        "mfa_enrollments",
        "audit_events",
    }
    assert export["user"]["id"] == data["user"]["id"]
    assert len(export["sessions"]) == 1 and export["sessions"][0]["current"] is True
    actions = [e["action"] for e in export["audit_events"]]
    assert actions == ["user.signup", "user.signin_failed"]
    text = response.text
    for secret in (
        data["session_token"],
        data["refresh_token"],
        "password_hash",
        "$argon2",
        "token_hash",
        "wrong-pass-1",
    ):
        assert secret not in text


async def test_no_response_ever_carries_a_hash(client):
    """Walk every /v1/auth route once and look for hash material in the raw text."""
    data = await signup(client, username="walker")
    token = data["session_token"]
    email = data["user"]["email"]
    texts = [
        (await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})).text,
        (await client.post("/v1/auth/signin", json={"email": email, "password": "x" * 9})).text,
        (await client.get("/v1/auth/me", headers=bearer(token))).text,
        (await client.patch("/v1/auth/me", json={"name": "W"}, headers=bearer(token))).text,
        (await client.get("/v1/auth/me/export", headers=bearer(token))).text,
        (await client.get("/v1/auth/sessions", headers=bearer(token))).text,
        (await client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})).text,
        (await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})).text,
        (
            await client.post(
                "/v1/auth/signup", json={"email": unique_email(), "password": "password"}
            )
        ).text,
    ]
    for text in texts:
        assert "password_hash" not in text and "$argon2" not in text and "$2b$" not in text
