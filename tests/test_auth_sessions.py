"""Tokens and sessions: what works, what stops working, and when."""

import asyncio
from datetime import datetime, timedelta

import pytest

from app import clock
from app.ids import Prefix, new_id
from tests.helpers import PASSWORD, bearer, signup


async def _signin(client, email):
    response = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer ukst_" + "A" * 43},
    ],
    ids=["missing", "empty", "garbage", "basic", "unknown"],
)
async def test_no_valid_token_is_401(client, headers):
    response = await client.get("/v1/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["type"] == "authentication_required"
    assert response.json()["code"] == 401


async def test_expired_session_token_is_401_and_refresh_still_works(client):
    data = await signup(client)
    clock.advance(timedelta(hours=1, seconds=1))
    response = await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    assert response.status_code == 401 and response.json()["type"] == "session_expired"
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
    assert refreshed.status_code == 200
    me = await client.get("/v1/auth/me", headers=bearer(refreshed.json()["session_token"]))
    assert me.status_code == 200


async def test_expired_refresh_token_is_401(client):
    data = await signup(client)
    clock.advance(timedelta(days=30, seconds=1))
    response = await client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
    assert response.status_code == 401 and response.json()["type"] == "session_expired"


async def test_refresh_rotates_both_tokens(client):
    data = await signup(client)
    response = await client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    new = response.json()
    assert new["session_token"] != data["session_token"]
    assert new["refresh_token"] != data["refresh_token"]
    old_me = await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    assert old_me.status_code == 401
    assert (
        await client.get("/v1/auth/me", headers=bearer(new["session_token"]))
    ).status_code == 200


async def test_refresh_replay_revokes_the_whole_family(client, pg):
    data = await signup(client)
    other = await _signin(client, data["user"]["email"])  # a second, unrelated family
    first = (
        await client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
    ).json()
    second = (
        await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    ).json()
    replay = await client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
    assert replay.status_code == 401 and replay.json()["type"] == "session_expired"
    # Every descendant of the replayed token is dead, tokens and refresh tokens alike.
    assert (
        await client.get("/v1/auth/me", headers=bearer(second["session_token"]))
    ).status_code == 401
    again = await client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert again.status_code == 401
    # The other sign-in is untouched.
    assert (
        await client.get("/v1/auth/me", headers=bearer(other["session_token"]))
    ).status_code == 200
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'session.refresh_reuse'"
        )
        == 1
    )


async def test_concurrent_refresh_with_one_token_has_one_winner(client):
    data = await signup(client)
    responses = await asyncio.gather(
        *(
            client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401, 401]


@pytest.mark.parametrize("token", ["", "x" * 257])
async def test_refresh_token_shape_is_validated(client, token):
    response = await client.post("/v1/auth/refresh", json={"refresh_token": token})
    assert response.status_code == 422


async def test_unknown_refresh_token_is_401(client):
    response = await client.post("/v1/auth/refresh", json={"refresh_token": "ukrt_nope"})
    assert response.status_code == 401


async def test_signout_kills_the_session_and_its_refresh_token(client):
    data = await signup(client)
    other = await _signin(client, data["user"]["email"])
    response = await client.post("/v1/auth/signout", headers=bearer(data["session_token"]))
    assert response.status_code == 200 and response.json() == {"status": "signed out"}
    assert (
        await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    ).status_code == 401
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": data["refresh_token"]})
    assert refreshed.status_code == 401
    assert (
        await client.get("/v1/auth/me", headers=bearer(other["session_token"]))
    ).status_code == 200


async def test_sessions_list_marks_current_and_hides_dead_ones(client):
    data = await signup(client)
    second = await _signin(client, data["user"]["email"])
    third = await _signin(client, data["user"]["email"])
    await client.post("/v1/auth/signout", headers=bearer(third["session_token"]))
    response = await client.get("/v1/auth/sessions", headers=bearer(second["session_token"]))
    assert response.status_code == 200
    listed = response.json()["sessions"]
    assert len(listed) == 2
    assert [s["current"] for s in listed].count(True) == 1
    current = next(s for s in listed if s["current"])
    assert current["ip"] == "203.0.113.7"
    assert all("token" not in key for s in listed for key in s)


async def test_revoke_own_session(client):
    data = await signup(client)
    second = await _signin(client, data["user"]["email"])
    listed = (await client.get("/v1/auth/sessions", headers=bearer(data["session_token"]))).json()
    target = next(s["id"] for s in listed["sessions"] if not s["current"])
    response = await client.delete(
        f"/v1/auth/sessions/{target}", headers=bearer(data["session_token"])
    )
    assert response.status_code == 200 and response.json() == {"status": "revoked"}
    assert (
        await client.get("/v1/auth/me", headers=bearer(second["session_token"]))
    ).status_code == 401
    again = await client.delete(
        f"/v1/auth/sessions/{target}", headers=bearer(data["session_token"])
    )
    assert again.status_code == 404


async def test_another_users_session_is_404(client):
    alice = await signup(client)
    bob = await signup(client)
    bobs = (await client.get("/v1/auth/sessions", headers=bearer(bob["session_token"]))).json()
    response = await client.delete(
        f"/v1/auth/sessions/{bobs['sessions'][0]['id']}", headers=bearer(alice["session_token"])
    )
    assert response.status_code == 404 and response.json()["type"] == "not_found"
    assert (
        await client.get("/v1/auth/me", headers=bearer(bob["session_token"]))
    ).status_code == 200


@pytest.mark.parametrize(
    "session_id",
    [
        "nope",
        new_id(Prefix.USER),
        "ases_01jdk3v7m6e8x9q2w4r5t6y7u",
        "ases_zzzzzzzzzzzzzzzzzzzzzzzzzz",
    ],
    ids=["garbage", "wrong-prefix", "short", "bad-suffix"],
)
async def test_malformed_session_id_is_422(client, session_id):
    data = await signup(client)
    response = await client.delete(
        f"/v1/auth/sessions/{session_id}", headers=bearer(data["session_token"])
    )
    assert response.status_code == 422 and response.json()["type"] == "validation_error"


async def test_unknown_session_id_is_404(client):
    data = await signup(client)
    response = await client.delete(
        f"/v1/auth/sessions/{new_id(Prefix.SESSION)}", headers=bearer(data["session_token"])
    )
    assert response.status_code == 404


async def test_last_used_is_written_at_most_once_a_minute(client, pg):
    data = await signup(client)
    token = data["session_token"]
    first = await pg.fetchval("SELECT last_used_at FROM sessions")
    for _ in range(3):
        await client.get("/v1/auth/me", headers=bearer(token))
    assert await pg.fetchval("SELECT last_used_at FROM sessions") == first
    clock.advance(timedelta(seconds=61))
    await client.get("/v1/auth/me", headers=bearer(token))
    assert await pg.fetchval("SELECT last_used_at FROM sessions") > first


async def test_refreshing_never_extends_a_sign_in_past_its_family_lifetime(client):
    """REFRESH_FAMILY_TTL (90 days): a pair refreshed every 29 days still ends 90 days after
    the sign-in, not 30 days after its last refresh."""
    data = await signup(client)
    signed_in = clock.now()
    pair = data
    for _ in range(3):  # days 29, 58 and 87
        clock.advance(timedelta(days=29))
        response = await client.post(
            "/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert response.status_code == 200, response.text
        pair = response.json()
    listed = await client.get("/v1/auth/sessions", headers=bearer(pair["session_token"]))
    (session,) = listed.json()["sessions"]
    family_end = signed_in + timedelta(days=90)
    assert abs(datetime.fromisoformat(session["refresh_expires_at"]) - family_end) < timedelta(
        seconds=5
    )
    clock.advance(timedelta(days=3, seconds=5))  # day 90
    response = await client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 401 and response.json()["type"] == "session_expired"


async def test_every_token_pair_says_when_its_refresh_token_expires(client):
    """refresh_expires_at: 30 days from sign-up, sign-in or refresh, as the session row holds it
    (and never past the sign-in's family end, as the test above shows)."""
    signed_up = await signup(client)
    signed_in = await _signin(client, signed_up["user"]["email"])
    response = await client.post(
        "/v1/auth/refresh", json={"refresh_token": signed_in["refresh_token"]}
    )
    assert response.status_code == 200, response.text
    refreshed = response.json()
    for pair in (signed_up, signed_in, refreshed):
        expires = datetime.fromisoformat(pair["refresh_expires_at"])
        assert pair["refresh_expires_at"].endswith("Z")
        assert abs(expires - (clock.now() + timedelta(days=30))) < timedelta(seconds=5)
        assert expires > datetime.fromisoformat(pair["expires_at"])
    # The sign-in's session was rotated away by the refresh; the other two are live.
    listed = await client.get("/v1/auth/sessions", headers=bearer(refreshed["session_token"]))
    held = {s["refresh_expires_at"] for s in listed.json()["sessions"]}
    assert held == {signed_up["refresh_expires_at"], refreshed["refresh_expires_at"]}
