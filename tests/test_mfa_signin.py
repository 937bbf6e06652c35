"""The second step of a sign-in: `mfa_required` after the right password only, the challenge
with a TOTP or recovery code, drift, replay, the mfa_token's life and tries, races, and every
other way into a session (username, e-mail verification, password reset, refresh)."""

import asyncio
from datetime import timedelta

import pytest

from app import clock
from app.models import User
from app.services import email_codes
from app.services.email_codes import Purpose
from tests.admin_support import audit_rows
from tests.faroe_support import app_with
from tests.helpers import PASSWORD, bearer, signup
from tests.mfa_support import (
    align_to_step,
    challenge,
    code_at,
    enroll,
    mfa_token,
    next_step,
    step_now,
)

NEW_PASSWORD = "a-new-long-passphrase-9"


async def _sessions(pg, user_id: str) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", user_id))


async def test_enroll_sign_in_challenge_life(client, pg):
    user = await enroll(client)
    me = await client.get("/v1/auth/me", headers=bearer(user.session_token))
    assert me.json()["mfa_enabled"] is True
    before = await _sessions(pg, user.user["id"])
    answer = await client.post("/v1/auth/signin", json={"email": user.email, "password": PASSWORD})
    assert answer.status_code == 401
    body = answer.json()
    assert body["type"] == "mfa_required" and body["code"] == 401
    assert body["methods"] == ["totp", "recovery_code"]
    assert body["mfa_token"].startswith("ukmt_")
    assert await _sessions(pg, user.user["id"]) == before  # no session before the factor
    stored = await pg.fetchval("SELECT token_hash FROM mfa_tokens")
    assert body["mfa_token"].encode() not in stored  # only its digest is kept
    done = await challenge(client, body["mfa_token"], code=user.code())
    assert done.status_code == 200, done.text
    pair = done.json()
    assert pair["user"]["mfa_enabled"] is True
    assert (
        await client.get("/v1/auth/me", headers=bearer(pair["session_token"]))
    ).status_code == 200
    assert await _sessions(pg, user.user["id"]) == before + 1
    assert await pg.fetchval("SELECT count(*) FROM mfa_tokens") == 0  # used up
    actions = [row["action"] for row in await audit_rows(pg, target_user_id=user.user["id"])]
    assert actions[-2:] == ["user.signin_mfa_required", "user.signin"]
    last = (await audit_rows(pg, action="user.signin"))[-1]
    assert last["metadata"] == {"mfa": "totp"}


async def test_username_sign_in_needs_the_factor_too(client):
    user = await enroll(client, username="grace")
    answer = await client.post("/v1/auth/signin", json={"username": "GRACE", "password": PASSWORD})
    assert answer.status_code == 401 and answer.json()["type"] == "mfa_required"
    done = await challenge(client, answer.json()["mfa_token"], code=user.code())
    assert done.status_code == 200 and done.json()["user"]["username"] == "grace"


async def test_a_wrong_password_keeps_the_plain_answer(client):
    user = await enroll(client)
    wrong = await client.post(
        "/v1/auth/signin", json={"email": user.email, "password": "nope-nope-1"}
    )
    unknown = await client.post(
        "/v1/auth/signin", json={"email": "nobody@example.com", "password": "nope-nope-1"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "error": "invalid credentials",
            "code": 401,
            "type": "invalid_credentials",
        }
    )


async def test_a_totp_code_is_accepted_once(client, pg):
    user = await enroll(client)
    code = user.code()
    assert (
        await challenge(client, await mfa_token(client, user.email), code=code)
    ).status_code == 200
    replay = await challenge(client, await mfa_token(client, user.email), code=code)
    assert replay.status_code == 400 and replay.json()["type"] == "invalid_code"
    # The code of the step confirmed at enrollment is spent as well.
    assert (
        await challenge(
            client, await mfa_token(client, user.email), code=code_at(user.secret, step_now() - 1)
        )
    ).status_code == 400


@pytest.mark.parametrize("drift", [-1, 0, 1])
async def test_one_step_of_drift_is_accepted(client, drift):
    user = await enroll(client)
    clock.advance(timedelta(minutes=10))  # well past the step used at enrollment
    align_to_step()
    token = await mfa_token(client, user.email)
    answer = await challenge(client, token, code=code_at(user.secret, step_now() + drift))
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("drift", [-2, 2])
async def test_two_steps_of_drift_are_refused(client, pg, drift):
    user = await enroll(client)
    clock.advance(timedelta(minutes=10))
    align_to_step()
    token = await mfa_token(client, user.email)
    answer = await challenge(client, token, code=code_at(user.secret, step_now() + drift))
    assert answer.status_code == 400 and answer.json()["type"] == "invalid_code"
    assert await pg.fetchval("SELECT attempts FROM mfa_tokens") == 1
    failed = await audit_rows(pg, action="user.mfa_challenge_failed")
    assert [row["metadata"] for row in failed] == [{"route": "challenge", "method": "totp"}]


async def test_a_code_after_a_later_one_is_refused(client):
    """The last used step only moves forward: the code of the step before it is dead too."""
    user = await enroll(client)
    step = next_step()
    ahead = code_at(user.secret, step + 1)
    assert (
        await challenge(client, await mfa_token(client, user.email), code=ahead)
    ).status_code == 200
    now_code = code_at(user.secret, step)
    late = await challenge(client, await mfa_token(client, user.email), code=now_code)
    assert late.status_code == 400


async def test_a_recovery_code_works_once_and_the_count_goes_down(client, pg):
    user = await enroll(client)
    code = user.recovery_codes[0]
    typed = code.upper().replace("-", " ")  # case, dashes and spaces do not count
    answer = await challenge(client, await mfa_token(client, user.email), recovery_code=typed)
    assert answer.status_code == 200, answer.text
    status = await client.get("/v1/auth/mfa", headers=bearer(answer.json()["session_token"]))
    assert status.json()["recovery_codes_left"] == 9
    again = await challenge(client, await mfa_token(client, user.email), recovery_code=code)
    assert again.status_code == 400 and again.json()["type"] == "invalid_code"
    used = await audit_rows(pg, action="user.mfa_recovery_code_used")
    assert [row["metadata"] for row in used] == [{"route": "challenge", "recovery_codes_left": 9}]
    assert (await audit_rows(pg, action="user.signin"))[-1]["metadata"] == {"mfa": "recovery_code"}


async def test_another_users_recovery_code_is_wrong(client):
    ada, bob = await enroll(client), await enroll(client)
    answer = await challenge(
        client, await mfa_token(client, ada.email), recovery_code=bob.recovery_codes[0]
    )
    assert answer.status_code == 400
    # and bob's code still works for bob
    mine = await challenge(
        client, await mfa_token(client, bob.email), recovery_code=bob.recovery_codes[0]
    )
    assert mine.status_code == 200


async def test_anothers_token_with_my_code_is_a_wrong_code_for_them(client, pg):
    ada, bob = await enroll(client), await enroll(client)
    bobs_token = await mfa_token(client, bob.email)
    answer = await challenge(client, bobs_token, code=ada.code())
    assert answer.status_code == 400 and answer.json()["type"] == "invalid_code"
    assert (
        await pg.fetchval("SELECT attempts FROM mfa_tokens WHERE user_id = $1", bob.user["id"]) == 1
    )


async def test_the_mfa_token_lives_five_minutes(client):
    user = await enroll(client)
    token = await mfa_token(client, user.email)
    clock.advance(timedelta(minutes=5, seconds=1))
    align_to_step()
    answer = await challenge(client, token, code=code_at(user.secret, step_now()))
    assert answer.status_code == 401 and answer.json()["type"] == "authentication_required"


async def test_the_mfa_token_allows_five_wrong_codes(client, pg):
    user = await enroll(client)
    token = await mfa_token(client, user.email)
    for _ in range(5):
        wrong = await challenge(client, token, code="000000")
        assert wrong.status_code == 400 and wrong.json()["type"] == "invalid_code"
    assert await pg.fetchval("SELECT count(*) FROM mfa_tokens") == 0
    dead = await challenge(client, token, code=user.code())
    assert dead.status_code == 401 and "sign in again" in dead.json()["error"]
    assert len(await audit_rows(pg, action="user.mfa_challenge_failed")) == 5
    # A new sign-in gives a new token, and the right code works with it.
    assert (
        await challenge(client, await mfa_token(client, user.email), code=user.code())
    ).status_code == 200


async def test_the_mfa_token_is_single_use(client):
    user = await enroll(client)
    token = await mfa_token(client, user.email)
    assert (await challenge(client, token, code=user.code())).status_code == 200
    again = await challenge(client, token, recovery_code=user.recovery_codes[0])
    assert again.status_code == 401


@pytest.mark.parametrize("token", ["ukmt_" + "A" * 43, "garbage"])
async def test_an_unknown_token_is_401(client, token):
    answer = await challenge(client, token, code="123456")
    assert answer.status_code == 401 and answer.json()["type"] == "authentication_required"


async def test_twenty_challenges_with_one_token_make_one_session(client, pg):
    user = await enroll(client)
    token = await mfa_token(client, user.email)
    before = await _sessions(pg, user.user["id"])
    code = user.code()
    answers = await asyncio.gather(*(challenge(client, token, code=code) for _ in range(20)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 400, 401}
    assert await _sessions(pg, user.user["id"]) == before + 1


async def test_one_code_on_two_tokens_at_once_makes_one_session(client, pg):
    user = await enroll(client)
    tokens = [await mfa_token(client, user.email) for _ in range(10)]
    before = await _sessions(pg, user.user["id"])
    code = user.code()
    answers = await asyncio.gather(*(challenge(client, token, code=code) for token in tokens))
    assert sorted(a.status_code for a in answers) == [200] + [400] * 9
    assert await _sessions(pg, user.user["id"]) == before + 1


async def test_one_recovery_code_on_two_tokens_at_once_makes_one_session(client):
    user = await enroll(client)
    tokens = [await mfa_token(client, user.email) for _ in range(10)]
    code = user.recovery_codes[3]
    answers = await asyncio.gather(*(challenge(client, t, recovery_code=code) for t in tokens))
    assert sorted(a.status_code for a in answers) == [200] + [400] * 9


async def test_a_pending_enrollment_does_not_gate_sign_in(client):
    signed = await signup(client)
    started = await client.post(
        "/v1/auth/mfa/totp", json={"password": PASSWORD}, headers=bearer(signed["session_token"])
    )
    assert started.status_code == 200
    answer = await client.post(
        "/v1/auth/signin", json={"email": signed["user"]["email"], "password": PASSWORD}
    )
    assert answer.status_code == 200 and answer.json()["user"]["mfa_enabled"] is False


async def test_a_ban_after_the_password_stops_the_challenge(client, pg):
    user = await enroll(client)
    token = await mfa_token(client, user.email)
    await pg.execute("UPDATE users SET banned = true WHERE id = $1", user.user["id"])
    answer = await challenge(client, token, code=user.code())
    assert answer.status_code == 403 and answer.json()["type"] == "user_banned"


async def test_mfa_turned_off_meanwhile_kills_the_token(client, pg):
    user = await enroll(client)
    token = await mfa_token(client, user.email)
    off = await client.request(
        "DELETE",
        "/v1/auth/mfa/totp",
        json={"password": PASSWORD, "code": user.code()},
        headers=bearer(user.session_token),
    )
    assert off.status_code == 200, off.text
    answer = await challenge(client, token, recovery_code=user.recovery_codes[0])
    assert answer.status_code == 401


async def test_sessions_after_the_factor_refresh_normally(client):
    user = await enroll(client)
    pair = (await challenge(client, await mfa_token(client, user.email), code=user.code())).json()
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.json()["user"]["mfa_enabled"] is True


# ---- the e-mail flows that could sign in ------------------------------------------------------


async def _issue(app, user_id: str, purpose: Purpose) -> email_codes.Issued:
    """What the mail worker does for a mail (services/email_flows.prepare), without the mail."""
    async with app.state.sessions() as db, db.begin():
        user = await db.get(User, user_id)
        return await email_codes.issue(db, user, purpose)


async def test_a_password_reset_is_no_way_around_the_factor(app, client, pg):
    user = await enroll(client)
    issued = await _issue(app, user.user["id"], Purpose.RESET_PASSWORD)
    reset = await client.post(
        "/v1/auth/reset-password", json={"token": issued.token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 200 and reset.json() == {"status": "password reset"}
    # No tokens in the answer, every session ended, MFA still on.
    assert (await client.get("/v1/auth/me", headers=bearer(user.session_token))).status_code == 401
    assert await pg.fetchval("SELECT mfa_enabled FROM users WHERE id = $1", user.user["id"])
    token = await mfa_token(client, user.email, NEW_PASSWORD)
    assert (await challenge(client, token, code=user.code())).status_code == 200


async def test_verifying_the_address_does_not_sign_an_mfa_user_in(app, client, pg):
    user = await enroll(client)
    await pg.execute("UPDATE users SET email_verified = false WHERE id = $1", user.user["id"])
    await pg.execute("UPDATE apps SET require_email_verification = true WHERE slug = 'default'")
    issued = await _issue(app, user.user["id"], Purpose.VERIFY_EMAIL)
    answer = await client.post("/v1/auth/verify-email", json={"token": issued.token})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "email verified" and "session_token" not in body
    # Signing in is the password, then the factor.
    token = await mfa_token(client, user.email)
    assert (await challenge(client, token, code=user.code())).status_code == 200


async def test_the_challenge_keeps_the_verification_rule(client, pg):
    user = await enroll(client)
    token = await mfa_token(client, user.email)
    await pg.execute("UPDATE users SET email_verified = false WHERE id = $1", user.user["id"])
    await pg.execute("UPDATE apps SET require_email_verification = true WHERE slug = 'default'")
    answer = await challenge(client, token, code=user.code())
    assert answer.status_code == 403 and answer.json()["type"] == "email_not_verified"


# ---- rate limits ------------------------------------------------------------------------------


async def test_wrong_codes_are_limited_per_account_across_tokens(database_url):
    limits = {"rate_limits": "on", "rate_limit_mfa_account": "3/300", "rate_limit_mfa_ip": "100/60"}
    async with app_with(database_url, **limits) as client:
        user = await enroll(client)
        # Just past the start of a 300 s window: the fresh code below moves the clock on by up
        # to a TOTP step, which must not carry the fourth try into the next window (the test
        # failed whenever the clock stood in the last 30 s of one).
        clock.advance(timedelta(seconds=300 - clock.now().timestamp() % 300 + 1))
        for _ in range(3):
            token = await mfa_token(client, user.email)
            assert (await challenge(client, token, code="000000")).status_code == 400
        token = await mfa_token(client, user.email)
        limited = await challenge(client, token, code=user.code())
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        # A right code gives nothing back, and the budget is the account's, not the token's.
        clock.advance(timedelta(minutes=5))
        assert (
            await challenge(client, await mfa_token(client, user.email), code=user.code())
        ).status_code == 200


async def test_codes_are_limited_per_ip(database_url):
    limits = {"rate_limits": "on", "rate_limit_mfa_ip": "3/60"}
    async with app_with(database_url, **limits) as client:
        for _ in range(3):
            assert (await challenge(client, "ukmt_unknown", code="123456")).status_code == 401
        assert (await challenge(client, "ukmt_unknown", code="123456")).status_code == 429
