"""POST /v1/auth/introspect (RFC 7662): an app's API key asks whether a session token is live."""

import asyncio
from datetime import timedelta

import pytest

from app import clock
from app.security import tokens
from tests.admin_support import (
    audit_rows,
    auth,
    default_app,
    make_admin,
    make_app,
    make_key,
    make_session,
    make_user,
)
from tests.helpers import bearer, signup
from tests.jwt_support import node

PATH = "/v1/auth/introspect"
INACTIVE = {"active": False}


async def _ask(client, key: str, token: str):
    return await client.post(PATH, json={"token": token}, headers=auth(key))


async def test_a_live_token_of_the_keys_app_is_active_with_its_claims(client, pg):
    user = await signup(client)
    key, _ = await make_key(pg, user["user"]["app_id"])
    response = await _ask(client, key, user["session_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    session = await pg.fetchrow(
        "SELECT * FROM sessions WHERE token_hash = $1", tokens.digest(user["session_token"])
    )
    assert response.json() == {
        "active": True,
        "sub": user["user"]["id"],
        "app_id": user["user"]["app_id"],
        "env_id": user["user"]["env_id"],
        "sid": session["id"],
        "role": "user",
        "email": user["user"]["email"],
        "email_verified": False,
        "exp": int(session["expires_at"].timestamp()),
        "iat": int(session["created_at"].timestamp()),
    }
    assert await audit_rows(pg, action="token.introspection_failed") == []


async def test_the_rfc_token_type_hint_is_accepted(client, pg):
    user = await signup(client)
    key, _ = await make_key(pg, user["user"]["app_id"])
    response = await client.post(
        PATH,
        json={"token": user["session_token"], "token_type_hint": "access_token"},
        headers=auth(key),
    )
    assert response.json()["active"] is True


async def test_another_apps_token_is_inactive_and_audited(client, pg):
    acme = await make_app(pg, "acme")
    globex_key, globex_key_id = await make_key(pg, (await make_app(pg, "globex"))[0])
    token, _ = await make_session(pg, await make_user(pg, acme))
    response = await _ask(client, globex_key, token)
    assert response.status_code == 200 and response.json() == INACTIVE
    (row,) = await audit_rows(pg, action="token.introspection_failed")
    assert (row["actor_type"], row["actor_id"]) == ("api_key", globex_key_id)
    assert row["app_id"] != acme[0] and row["metadata"] == {"reason": "other_app"}
    assert row["target_user_id"] is None  # nothing of the other app's user leaks into it


async def test_even_the_default_apps_key_sees_another_apps_token_inactive(client, pg):
    root_key, _ = await make_key(pg, (await default_app(pg))[0])
    token, _ = await make_session(pg, await make_user(pg, await make_app(pg, "acme")))
    assert (await _ask(client, root_key, token)).json() == INACTIVE


async def test_an_unknown_token_is_inactive_and_audited_once_a_minute(client, pg):
    key, key_id = await make_key(pg, (await default_app(pg))[0])
    for garbage in ("ukst_" + "A" * 43, "not a token", "ukrt_" + "B" * 43):
        response = await _ask(client, key, garbage)
        assert response.status_code == 200 and response.json() == INACTIVE
    (row,) = await audit_rows(pg, action="token.introspection_failed")
    assert row["actor_id"] == key_id and row["metadata"] == {"reason": "unknown_token"}
    assert "A" * 43 not in str(row)  # the token presented is not written down
    clock.advance(timedelta(seconds=61))
    await _ask(client, key, "ukst_" + "C" * 43)
    assert len(await audit_rows(pg, action="token.introspection_failed")) == 2


async def test_twenty_concurrent_unknown_tokens_write_one_audit_row(client, pg):
    key, _ = await make_key(pg, (await default_app(pg))[0])
    answers = await asyncio.gather(*(_ask(client, key, f"ukst_unknown{i}") for i in range(20)))
    assert all(a.json() == INACTIVE for a in answers)
    assert len(await audit_rows(pg, action="token.introspection_failed")) == 1


async def test_a_refresh_token_is_not_a_session_token(client, pg):
    user = await signup(client)
    key, _ = await make_key(pg, user["user"]["app_id"])
    assert (await _ask(client, key, user["refresh_token"])).json() == INACTIVE


async def _sign_out(client, pg, user):
    await client.post("/v1/auth/signout", headers=bearer(user["session_token"]))


async def _ban(client, pg, user):
    root = auth(await make_admin(pg, await default_app(pg)))
    response = await client.post(f"/v1/admin/users/{user['user']['id']}/ban", json={}, headers=root)
    assert response.status_code == 200, response.text


async def _delete(client, pg, user):
    response = await client.delete("/v1/auth/me", headers=bearer(user["session_token"]))
    assert response.status_code == 200


async def _expire(client, pg, user):
    clock.advance(timedelta(hours=1, seconds=1))


async def _revoke_all(client, pg, user):
    root = auth(await make_admin(pg, await default_app(pg)))
    response = await client.delete(f"/v1/admin/users/{user['user']['id']}/sessions", headers=root)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "end", [_sign_out, _ban, _delete, _expire, _revoke_all], ids=lambda f: f.__name__[1:]
)
async def test_a_dead_session_is_inactive_on_the_very_next_call(client, pg, end):
    user = await signup(client)
    key, _ = await make_key(pg, user["user"]["app_id"])
    assert (await _ask(client, key, user["session_token"])).json()["active"] is True
    await end(client, pg, user)
    response = await _ask(client, key, user["session_token"])
    assert response.status_code == 200 and response.json() == INACTIVE
    # Routine ends are audited where they happen, not again here.
    assert await audit_rows(pg, action="token.introspection_failed") == []


async def test_an_expired_ban_makes_the_session_active_again(client, pg):
    user = await signup(client)
    key, _ = await make_key(pg, user["user"]["app_id"])
    await pg.execute(
        "UPDATE users SET banned = true, ban_expires = $2 WHERE id = $1",
        user["user"]["id"],
        clock.now() + timedelta(minutes=5),
    )
    assert (await _ask(client, key, user["session_token"])).json() == INACTIVE
    clock.advance(timedelta(minutes=5, seconds=1))
    assert (await _ask(client, key, user["session_token"])).json()["active"] is True


# ---- who may ask ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer ask_" + "A" * 43}, {"Authorization": "Bearer garbage"}],
    ids=["none", "unknown-key", "garbage"],
)
async def test_no_valid_credential_is_401(client, headers):
    response = await client.post(PATH, json={"token": "ukst_x"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["type"] == "authentication_required"


async def test_a_revoked_api_key_is_401(client, pg):
    user = await signup(client)
    key, _ = await make_key(pg, user["user"]["app_id"], revoked=True)
    response = await _ask(client, key, user["session_token"])
    assert response.status_code == 401


async def test_a_users_session_token_is_403_even_for_its_own_token(client):
    user = await signup(client)
    response = await client.post(
        PATH, json={"token": user["session_token"]}, headers=bearer(user["session_token"])
    )
    assert response.status_code == 403 and response.json()["type"] == "forbidden"


async def test_an_admins_session_token_is_403(client, pg):
    admin = await make_admin(pg, await default_app(pg))
    response = await client.post(PATH, json={"token": admin}, headers=auth(admin))
    assert response.status_code == 403 and response.json()["type"] == "forbidden"


async def test_a_banned_users_session_is_the_ban_403(client, pg):
    user = await signup(client)
    await pg.execute("UPDATE users SET banned = true WHERE id = $1", user["user"]["id"])
    response = await client.post(
        PATH, json={"token": user["session_token"]}, headers=bearer(user["session_token"])
    )
    assert response.status_code == 403 and response.json()["type"] == "user_banned"


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [{}, {"token": ""}, {"token": "x" * 4097}, {"token": 42}, {"token": "x", "extra": 1}],
    ids=["missing", "empty", "too-long", "number", "unknown-field"],
)
async def test_bad_bodies_are_422(client, pg, body):
    key, _ = await make_key(pg, (await default_app(pg))[0])
    response = await client.post(PATH, json=body, headers=auth(key))
    assert response.status_code == 422 and response.json()["type"] == "validation_error"


async def test_an_rfc_form_body_is_answered_like_json(client, pg):
    # RFC 7662 section 2.1: the resource server posts application/x-www-form-urlencoded.
    user = await signup(client)
    key, _ = await make_key(pg, user["user"]["app_id"])
    form = {"token": user["session_token"], "token_type_hint": "access_token"}
    by_form = await client.post(PATH, data=form, headers=auth(key))
    by_json = await _ask(client, key, user["session_token"])
    assert by_form.status_code == 200, by_form.text
    assert by_form.json() == by_json.json() and by_form.json()["active"] is True


async def test_a_form_of_a_dead_token_is_inactive(client, pg):
    user = await signup(client)
    key, _ = await make_key(pg, user["user"]["app_id"])
    await client.post("/v1/auth/signout", headers=bearer(user["session_token"]))
    response = await client.post(PATH, data={"token": user["session_token"]}, headers=auth(key))
    assert response.status_code == 200 and response.json() == INACTIVE


@pytest.mark.parametrize(
    "content",
    ["", "token=", "token=a&token=b", "token=x&extra=1", "token=%ff", "token=\xe9"],
    ids=["empty", "empty-token", "twice", "unknown-field", "not-utf8", "not-ascii"],
)
async def test_bad_forms_are_a_clear_4xx(client, pg, content):
    key, _ = await make_key(pg, (await default_app(pg))[0])
    headers = auth(key) | {"Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post(PATH, content=content.encode("latin-1"), headers=headers)
    assert response.status_code in (400, 422), response.text
    assert response.json()["type"] in ("bad_request", "validation_error")


@pytest.mark.parametrize("media", ["text/plain", "multipart/form-data; boundary=x", None])
async def test_another_media_type_is_415(client, pg, media):
    key, _ = await make_key(pg, (await default_app(pg))[0])
    headers = auth(key) | ({"Content-Type": media} if media else {})
    response = await client.post(PATH, content=b'{"token": "ukst_x"}', headers=headers)
    assert response.status_code == 415 and response.json()["type"] == "unsupported_media_type"


async def test_bad_json_is_400(client, pg):
    key, _ = await make_key(pg, (await default_app(pg))[0])
    headers = auth(key) | {"Content-Type": "application/json"}
    response = await client.post(PATH, content=b'{"token": ', headers=headers)
    assert response.status_code == 400 and response.json()["type"] == "bad_request"


async def test_a_bad_key_is_401_whatever_the_body(client):
    response = await client.post(PATH, json={"token": "ukst_x"}, headers=auth("ask_" + "x" * 43))
    assert response.status_code == 401 and response.json()["type"] == "authentication_required"


# ---- the rate limit -------------------------------------------------------------------------


async def test_introspection_is_rate_limited_per_ip(database_url, pg):
    now = clock.now()  # one second into an hour: the calls share the window
    clock.advance(
        now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, seconds=1) - now
    )
    limits = {"rate_limits": "on", "rate_limit_introspect_ip": "3/3600"}
    async with node(database_url, **limits) as client:
        user = await signup(client)
        key, _ = await make_key(pg, user["user"]["app_id"])
        answers = [await _ask(client, key, user["session_token"]) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[-1].json()["type"] == "rate_limited"
        assert int(answers[-1].headers["Retry-After"]) > 0
        # Another API key from the same address shares the address's budget.
        other, _ = await make_key(pg, user["user"]["app_id"])
        assert (await _ask(client, other, user["session_token"])).status_code == 429
