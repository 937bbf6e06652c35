"""Sign-up and sign-in: field rules, uniqueness, races, the ban gate, and what never leaks."""

import asyncio
from datetime import timedelta

import pytest

from app import clock
from tests.helpers import PASSWORD, bearer, signup, unique_email


async def test_signup_returns_user_and_tokens_and_stores_only_hashes(client, pg):
    response = await client.post(
        "/v1/auth/signup",
        json={
            "email": "  Ada@Example.com ",
            "password": PASSWORD,
            "name": "Ada",
            "username": "Ada.L",
            "phone": "+14155550123",
            "metadata": {"plan": "pro"},
        },
    )
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    data = response.json()
    user = data["user"]
    assert user["id"].startswith("ausr_")
    # trimmed and normalised: the domain lower-cased, the local part keeps its casing
    assert user["email"] == "Ada@example.com"
    assert user["username"] == "ada.l" and user["display_username"] == "Ada.L"
    assert user["banned"] is False and user["role"] == "user"
    assert user["metadata"] == {"plan": "pro"}
    assert data["session_token"] != data["refresh_token"]
    # 256-bit secrets: 43 url-safe characters after the prefix.
    assert len(data["session_token"].split("_", 1)[1]) >= 43

    row = await pg.fetchrow("SELECT * FROM users WHERE id = $1", user["id"])
    assert row["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    session = await pg.fetchrow("SELECT * FROM sessions WHERE user_id = $1", user["id"])
    import hashlib

    assert bytes(session["token_hash"]) == hashlib.sha256(data["session_token"].encode()).digest()
    assert data["session_token"] not in str(dict(session))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-email"),
        ("email", "a@"),
        ("email", ""),
        ("username", "ab"),
        ("username", "x" * 33),
        ("username", "has space"),
        ("username", "admin"),
        ("username", "Root"),
        ("phone", "4155550123"),
        ("phone", "+1"),
        ("image", "javascript:alert(1)"),
        ("metadata", {"k": "v" * 1025}),
        ("metadata", {f"k{i}": "v" for i in range(51)}),
        ("metadata", {"k": 5}),
        ("metadata", ["not", "an", "object"]),
    ],
)
async def test_signup_field_rules(client, field, value):
    body = {"email": unique_email(), "password": PASSWORD, field: value}
    response = await client.post("/v1/auth/signup", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["type"] == "validation_error" and error["code"] == 422
    assert error["details"][0]["field"].split(".")[0] == field


@pytest.mark.parametrize("password", ["short1", "password", "12345678", "iloveyou", "x" * 129])
async def test_signup_refuses_short_long_and_common_passwords(client, pg, password):
    response = await client.post(
        "/v1/auth/signup", json={"email": unique_email(), "password": password}
    )
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "password"
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


async def test_unknown_field_is_422(client):
    response = await client.post(
        "/v1/auth/signup",
        json={"email": unique_email(), "password": PASSWORD, "role": "admin"},
    )
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "role"


async def test_same_email_other_case_is_409(client):
    await signup(client, email="grace@example.com")
    response = await client.post(
        "/v1/auth/signup", json={"email": "GRACE@Example.COM", "password": PASSWORD}
    )
    assert response.status_code == 409
    assert response.json() == {
        "error": "e-mail address is already in use",
        "code": 409,
        "type": "email_taken",
    }


async def test_duplicate_username_is_409_case_insensitively(client):
    await signup(client, username="grace")
    response = await client.post(
        "/v1/auth/signup",
        json={"email": unique_email(), "password": PASSWORD, "username": "GRACE"},
    )
    assert response.status_code == 409
    assert response.json()["type"] == "username_taken"


async def test_twenty_concurrent_signups_one_winner(client, pg):
    body = {"email": "race@example.com", "password": PASSWORD}
    responses = await asyncio.gather(
        *(client.post("/v1/auth/signup", json=body) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19
    assert {r.json()["type"] for r in responses if r.status_code == 409} == {"email_taken"}
    assert await pg.fetchval("SELECT count(*) FROM users") == 1


async def test_signup_unknown_app_is_404(client):
    response = await client.post(
        "/v1/auth/signup",
        json={"email": unique_email(), "password": PASSWORD, "app_id": "nope"},
    )
    assert response.status_code == 404 and response.json()["type"] == "not_found"


async def test_same_email_in_another_app_is_allowed(client, pg):
    app_id = "aapp_01jdk3v7m6e8x9q2w4r5t6y7u8"
    await pg.execute("INSERT INTO apps (id, slug, name) VALUES ($1, 'shop', 'Shop')", app_id)
    await pg.execute(
        "INSERT INTO environments (id, app_id, slug, name, is_default) "
        "VALUES ('aenv_01jdk3v7m6e8x9q2w4r5t6y7u9', $1, 'production', 'P', true)",
        app_id,
    )
    first = await signup(client, email="both@example.com")
    other = await client.post(
        "/v1/auth/signup",
        json={"email": "both@example.com", "password": PASSWORD},
        headers={"X-App-ID": "shop"},
    )
    assert other.status_code == 201, other.text
    assert other.json()["user"]["app_id"] == app_id != first["user"]["app_id"]
    # Sign-in is per app too: the default app's password works only there.
    signin = await client.post(
        "/v1/auth/signin",
        json={"email": "both@example.com", "password": PASSWORD, "app_id": "shop"},
    )
    assert signin.json()["user"]["id"] == other.json()["user"]["id"]


async def test_signin_by_email_any_case_and_by_username(client):
    data = await signup(client, email="Lin@Example.com", username="Lin_1")
    by_email = await client.post(
        "/v1/auth/signin", json={"email": "lin@example.COM", "password": PASSWORD}
    )
    assert by_email.status_code == 200
    assert by_email.json()["user"]["id"] == data["user"]["id"]
    by_username = await client.post(
        "/v1/auth/signin", json={"username": "LIN_1", "password": PASSWORD}
    )
    assert by_username.status_code == 200
    me = await client.get("/v1/auth/me", headers=bearer(by_username.json()["session_token"]))
    assert me.json()["id"] == data["user"]["id"]


@pytest.mark.parametrize(
    "body",
    [
        {"password": PASSWORD},
        {"email": "a@example.com", "username": "abc", "password": PASSWORD},
        {"email": "a@example.com"},
    ],
)
async def test_signin_needs_exactly_one_identifier_and_a_password(client, body):
    response = await client.post("/v1/auth/signin", json=body)
    assert response.status_code == 422


async def test_unknown_email_and_wrong_password_look_the_same(client, pg):
    data = await signup(client)
    wrong = await client.post(
        "/v1/auth/signin", json={"email": data["user"]["email"], "password": "wrong-password-1"}
    )
    unknown = await client.post(
        "/v1/auth/signin", json={"email": "nobody@example.com", "password": "wrong-password-1"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {"error": "invalid credentials", "code": 401, "type": "invalid_credentials"}
    )
    failures = await pg.fetch(
        "SELECT metadata::text AS m FROM audit_events WHERE action = 'user.signin_failed'"
    )
    assert len(failures) == 2
    assert all("wrong-password-1" not in row["m"] for row in failures)


async def test_bcrypt_hash_verifies_and_is_upgraded_on_signin(client, pg):
    import bcrypt

    data = await signup(client)
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    await pg.execute(
        "UPDATE users SET password_hash = $1 WHERE id = $2", legacy, data["user"]["id"]
    )
    response = await client.post(
        "/v1/auth/signin", json={"email": data["user"]["email"], "password": PASSWORD}
    )
    assert response.status_code == 200
    stored = await pg.fetchval("SELECT password_hash FROM users WHERE id = $1", data["user"]["id"])
    assert stored.startswith("$argon2id$")


async def _ban(pg, user_id, expires=None):
    await pg.execute(
        "UPDATE users SET banned = true, ban_reason = 'spam', ban_expires = $2 WHERE id = $1",
        user_id,
        expires,
    )


async def test_banned_user_cannot_sign_in_refresh_or_use_sessions(client, pg):
    data = await signup(client)
    user_id, email = data["user"]["id"], data["user"]["email"]
    expires = clock.now() + timedelta(hours=1)
    await _ban(pg, user_id, expires)

    me = await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    assert me.status_code == 403
    assert me.json()["type"] == "user_banned"
    assert me.json()["ban_expires"].startswith(expires.isoformat()[:19])

    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
    assert refreshed.status_code == 403

    # The password is checked before the ban is revealed.
    wrong = await client.post("/v1/auth/signin", json={"email": email, "password": "nope-nope-1"})
    assert wrong.status_code == 401 and wrong.json()["type"] == "invalid_credentials"
    right = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert right.status_code == 403 and right.json()["type"] == "user_banned"


async def test_permanent_ban_has_no_expiry_in_the_error(client, pg):
    data = await signup(client)
    await _ban(pg, data["user"]["id"])
    response = await client.post(
        "/v1/auth/signin", json={"email": data["user"]["email"], "password": PASSWORD}
    )
    assert response.json() == {"error": "user is banned", "code": 403, "type": "user_banned"}


async def test_expired_ban_reads_as_not_banned_and_is_cleared_on_next_write(client, pg):
    data = await signup(client)
    user_id = data["user"]["id"]
    await _ban(pg, user_id, clock.now() + timedelta(minutes=10))
    clock.advance(timedelta(minutes=11))
    signin = await client.post(
        "/v1/auth/signin", json={"email": data["user"]["email"], "password": PASSWORD}
    )
    assert signin.status_code == 200
    me = await client.get("/v1/auth/me", headers=bearer(signin.json()["session_token"]))
    assert me.json()["banned"] is False and me.json()["ban_expires"] is None
    assert await pg.fetchval("SELECT banned FROM users WHERE id = $1", user_id) is True
    await client.patch(
        "/v1/auth/me", json={"name": "x"}, headers=bearer(signin.json()["session_token"])
    )
    row = await pg.fetchrow(
        "SELECT banned, ban_reason, ban_expires FROM users WHERE id = $1", user_id
    )
    assert tuple(row) == (False, None, None)


async def test_nfc_and_nfd_spellings_are_one_mailbox(client):
    """`josé@exämple.com` typed with precomposed or combining accents is one address: one
    account, found by either spelling."""
    import unicodedata

    nfc = unicodedata.normalize("NFC", "josé@exämple.com")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    created = await client.post("/v1/auth/signup", json={"email": nfd, "password": PASSWORD})
    assert created.status_code == 201, created.text
    assert created.json()["user"]["email"] == nfc
    again = await client.post("/v1/auth/signup", json={"email": nfc, "password": PASSWORD})
    assert again.status_code == 409 and again.json()["type"] == "email_taken"
    for spelling in (nfc, nfd):
        signin = await client.post(
            "/v1/auth/signin", json={"email": spelling, "password": PASSWORD}
        )
        assert signin.status_code == 200, signin.text
