"""MFA enrollment and its management: start with the password, confirm with a first code, the
recovery codes, turning it off, the status, the admin's removal, the export and deletion, the
Faroe view, and the 503 of a missing or changed key."""

import pytest
from standardwebhooks.webhooks import Webhook

from app.security import secret_box
from app.security.secret_box import SecretBox
from app.services import admin_cli
from app.settings import unsafe_modes
from tests.admin_support import (
    audit_rows,
    auth,
    default_app,
    make_admin,
    make_app,
    make_key,
    make_session,
    make_user,
    make_webhook,
)
from tests.conftest import SECRET_KEY, make_settings
from tests.faroe_support import FaroeServerDouble, app_with
from tests.helpers import PASSWORD, bearer, signup
from tests.mfa_support import align_to_step, challenge, code_at, enroll, mfa_token, step_now
from tests.webhook_support import receiver, worker

TOTP = "/v1/auth/mfa/totp"
CONFIRM = "/v1/auth/mfa/totp/confirm"
RECOVERY = "/v1/auth/mfa/recovery-codes"


async def _start(client, token: str, password: str = PASSWORD):
    return await client.post(TOTP, json={"password": password}, headers=bearer(token))


async def _disable(client, token: str, **body):
    return await client.request("DELETE", TOTP, json=body, headers=bearer(token))


# ---- enrollment -------------------------------------------------------------------------------


async def test_start_shows_the_secret_once_and_stores_it_sealed(app, client, pg):
    signed = await signup(client)
    answer = await _start(client, signed["session_token"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"].startswith("amfa_") and len(body["secret"]) == 32
    assert body["otpauth_uri"].startswith("otpauth://totp/Default%20app:")
    assert f"secret={body['secret']}" in body["otpauth_uri"]
    assert (
        body["qr_svg"].startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in body["qr_svg"]
    )
    row = await pg.fetchrow("SELECT * FROM mfa_enrollments WHERE id = $1", body["id"])
    assert row["secret"].startswith("v1.") and body["secret"] not in row["secret"]
    assert row["confirmed_at"] is None and row["type"] == "totp"
    box = secret_box.box(app.state.settings)
    assert box.decrypt("totp-secret", row["secret"], body["id"]) == body["secret"]
    me = await client.get("/v1/auth/me", headers=bearer(signed["session_token"]))
    assert me.json()["mfa_enabled"] is False  # pending
    status = (await client.get("/v1/auth/mfa", headers=bearer(signed["session_token"]))).json()
    assert status == {
        "enabled": False,
        "methods": [],
        "pending": True,
        "recovery_codes_left": 0,
        "created_at": None,
        "last_used_at": None,
    }


async def test_start_needs_the_password(client, pg):
    signed = await signup(client)
    answer = await _start(client, signed["session_token"], "wrong-password-1")
    assert answer.status_code == 401 and answer.json()["error"] == "password is wrong"
    assert await pg.fetchval("SELECT count(*) FROM mfa_enrollments") == 0


async def test_starting_again_replaces_a_pending_secret(client, pg):
    signed = await signup(client)
    first = (await _start(client, signed["session_token"])).json()
    second = (await _start(client, signed["session_token"])).json()
    assert first["secret"] != second["secret"]
    assert await pg.fetchval("SELECT id FROM mfa_enrollments") == second["id"]
    align_to_step()
    old = await client.post(
        CONFIRM,
        json={"code": code_at(first["secret"], step_now())},
        headers=bearer(signed["session_token"]),
    )
    assert old.status_code == 400 and old.json()["type"] == "invalid_code"


async def test_confirm_turns_mfa_on_with_ten_recovery_codes(client, pg):
    user = await enroll(client)
    assert len(user.recovery_codes) == len(set(user.recovery_codes)) == 10
    for code in user.recovery_codes:
        assert len(code) == 11 and code[5] == "-"
    row = await pg.fetchrow("SELECT * FROM users WHERE id = $1", user.user["id"])
    assert row["mfa_enabled"] is True and row["disabled_counter"] == 1
    hashes = await pg.fetch("SELECT code_hash FROM mfa_recovery_codes")
    assert len(hashes) == 10 and all(len(h["code_hash"]) == 32 for h in hashes)
    status = (await client.get("/v1/auth/mfa", headers=bearer(user.session_token))).json()
    assert status["enabled"] is True and status["recovery_codes_left"] == 10
    assert status["methods"] == ["totp", "recovery_code"] and status["created_at"]
    # The session that enrolled goes on working.
    assert (await client.get("/v1/auth/me", headers=bearer(user.session_token))).status_code == 200
    events = await audit_rows(pg, action="user.mfa_enabled")
    assert len(events) == 1 and events[0]["actor_id"] == user.user["id"]


async def test_a_wrong_first_code_leaves_it_pending(client, pg):
    signed = await signup(client)
    await _start(client, signed["session_token"])
    wrong = await client.post(
        CONFIRM, json={"code": "000000"}, headers=bearer(signed["session_token"])
    )
    assert wrong.status_code == 400 and wrong.json()["type"] == "invalid_code"
    assert await pg.fetchval("SELECT confirmed_at FROM mfa_enrollments") is None
    assert not await pg.fetchval("SELECT mfa_enabled FROM users")
    failed = await audit_rows(pg, action="user.mfa_challenge_failed")
    assert [row["metadata"] for row in failed] == [{"route": "confirm", "method": "totp"}]


async def test_confirm_without_a_pending_enrollment_is_409(client):
    signed = await signup(client)
    answer = await client.post(
        CONFIRM, json={"code": "123456"}, headers=bearer(signed["session_token"])
    )
    assert answer.status_code == 409 and "POST /v1/auth/mfa/totp" in answer.json()["error"]


async def test_start_or_confirm_when_on_is_409(client):
    user = await enroll(client)
    assert (await _start(client, user.session_token)).status_code == 409
    again = await client.post(
        CONFIRM, json={"code": user.code()}, headers=bearer(user.session_token)
    )
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (CONFIRM, {"code": "12345"}, "code"),
        (CONFIRM, {"code": "12345a"}, "code"),
        (CONFIRM, {}, "code"),
        (CONFIRM, {"code": "123456", "extra": 1}, "extra"),
        (TOTP, {}, "password"),
        ("/v1/auth/mfa/challenge", {"mfa_token": "ukmt_x"}, "body"),
        (
            "/v1/auth/mfa/challenge",
            {"mfa_token": "ukmt_x", "code": "123456", "recovery_code": "a"},
            "body",
        ),
        ("/v1/auth/mfa/challenge", {"code": "123456"}, "mfa_token"),
        (RECOVERY, {"password": PASSWORD}, "body"),
    ],
)
async def test_bad_input_is_422(client, path, body, field):
    signed = await signup(client)
    answer = await client.post(path, json=body, headers=bearer(signed["session_token"]))
    assert answer.status_code == 422, answer.text
    assert answer.json()["details"][0]["field"].split(".")[0] == field


async def test_an_api_key_is_no_session_for_mfa_routes(client, pg):
    app_id, _ = await default_app(pg)
    secret, _ = await make_key(pg, app_id)
    for method, path in (("GET", "/v1/auth/mfa"), ("POST", TOTP)):
        answer = await client.request(
            method, path, json={"password": PASSWORD}, headers=auth(secret)
        )
        assert answer.status_code == 401, (method, path)


# ---- turning it off, new recovery codes -------------------------------------------------------


async def test_turning_it_off_takes_the_password_and_a_code(client, pg):
    user = await enroll(client)
    wrong_password = await _disable(
        client, user.session_token, password="nope-nope-1", code=user.code()
    )
    assert wrong_password.status_code == 401
    wrong_code = await _disable(client, user.session_token, password=PASSWORD, code="000000")
    assert wrong_code.status_code == 400 and wrong_code.json()["type"] == "invalid_code"
    assert await pg.fetchval("SELECT mfa_enabled FROM users")
    off = await _disable(client, user.session_token, password=PASSWORD, code=user.code())
    assert off.status_code == 200 and off.json()["mfa_enabled"] is False
    for table in ("mfa_enrollments", "mfa_recovery_codes", "mfa_tokens"):
        assert await pg.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    row = await pg.fetchrow("SELECT mfa_enabled, disabled_counter FROM users")
    assert (row["mfa_enabled"], row["disabled_counter"]) == (False, 2)
    # Sign-in is the password alone again; the user's own sessions stayed.
    plain = await client.post("/v1/auth/signin", json={"email": user.email, "password": PASSWORD})
    assert plain.status_code == 200
    assert (await client.get("/v1/auth/me", headers=bearer(user.session_token))).status_code == 200
    events = await audit_rows(pg, action="user.mfa_disabled")
    assert [e["metadata"] for e in events] == [{"by": "user"}]
    again = await _disable(client, user.session_token, password=PASSWORD, code=user.code())
    assert again.status_code == 409


async def test_a_recovery_code_turns_it_off_too(client):
    user = await enroll(client)
    off = await _disable(
        client, user.session_token, password=PASSWORD, recovery_code=user.recovery_codes[1]
    )
    assert off.status_code == 200 and off.json()["mfa_enabled"] is False


async def test_new_recovery_codes_replace_the_old_set(client, pg):
    user = await enroll(client)
    answer = await client.post(
        RECOVERY,
        json={"password": PASSWORD, "code": user.code()},
        headers=bearer(user.session_token),
    )
    assert answer.status_code == 200, answer.text
    fresh = answer.json()["recovery_codes"]
    assert len(fresh) == 10 and not set(fresh) & set(user.recovery_codes)
    old = await challenge(
        client, await mfa_token(client, user.email), recovery_code=user.recovery_codes[0]
    )
    assert old.status_code == 400
    new = await challenge(client, await mfa_token(client, user.email), recovery_code=fresh[0])
    assert new.status_code == 200
    assert len(await audit_rows(pg, action="user.mfa_recovery_codes_regenerated")) == 1


async def test_new_recovery_codes_need_the_password_and_mfa_on(client):
    user = await enroll(client)
    wrong = await client.post(
        RECOVERY,
        json={"password": "nope-nope-1", "code": user.code()},
        headers=bearer(user.session_token),
    )
    assert wrong.status_code == 401
    signed = await signup(client)
    off = await client.post(
        RECOVERY,
        json={"password": PASSWORD, "code": "123456"},
        headers=bearer(signed["session_token"]),
    )
    assert off.status_code == 409 and off.json()["error"] == "MFA is not on"


# ---- the admin's removal ----------------------------------------------------------------------


async def test_an_admin_removes_the_factors_and_every_session_ends(client, pg):
    user = await enroll(client)
    admin = await make_admin(pg, await default_app(pg))
    answer = await client.delete(f"/v1/admin/users/{user.user['id']}/mfa", headers=auth(admin))
    assert answer.status_code == 200, answer.text
    assert answer.json()["mfa_enabled"] is False and answer.json()["id"] == user.user["id"]
    assert (await client.get("/v1/auth/me", headers=bearer(user.session_token))).status_code == 401
    for table in ("mfa_enrollments", "mfa_recovery_codes"):
        assert await pg.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    event = (await audit_rows(pg, action="user.mfa_disabled"))[-1]
    assert event["actor_type"] == "admin" and event["target_user_id"] == user.user["id"]
    assert event["metadata"] == {"by": "admin", "sessions_revoked": 1}
    plain = await client.post("/v1/auth/signin", json={"email": user.email, "password": PASSWORD})
    assert plain.status_code == 200


async def test_another_apps_admin_gets_404(client, pg):
    user = await enroll(client)
    other = await make_admin(pg, await make_app(pg, "acme"))
    answer = await client.delete(f"/v1/admin/users/{user.user['id']}/mfa", headers=auth(other))
    assert answer.status_code == 404
    assert await pg.fetchval("SELECT mfa_enabled FROM users WHERE id = $1", user.user["id"])


async def test_an_api_key_removes_a_users_factors_but_not_an_admins(client, pg):
    tenant = await default_app(pg)
    secret, _ = await make_key(pg, tenant[0])
    user = await enroll(client)
    assert (
        await client.delete(f"/v1/admin/users/{user.user['id']}/mfa", headers=auth(secret))
    ).status_code == 200
    admin_id = await make_user(pg, tenant, role="admin", mfa_enabled=True)
    refused = await client.delete(f"/v1/admin/users/{admin_id}/mfa", headers=auth(secret))
    assert refused.status_code == 403
    assert await pg.fetchval("SELECT mfa_enabled FROM users WHERE id = $1", admin_id)


async def test_removing_nothing_ends_no_session(client, pg):
    tenant = await default_app(pg)
    user_id = await make_user(pg, tenant)
    token, _ = await make_session(pg, user_id)
    admin = await make_admin(pg, tenant)
    assert (
        await client.delete(f"/v1/admin/users/{user_id}/mfa", headers=auth(admin))
    ).status_code == 200
    assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 200
    assert await audit_rows(pg, action="user.mfa_disabled") == []


async def test_a_malformed_user_id_is_422(client, pg):
    admin = await make_admin(pg, await default_app(pg))
    answer = await client.delete(
        "/v1/admin/users/amfa_01jhmn2f6reb4t8q0c3vw5x9ka/mfa", headers=auth(admin)
    )
    assert answer.status_code == 422


# ---- export, deletion, purge ------------------------------------------------------------------


async def test_the_export_lists_enrollments_without_secrets(client):
    user = await enroll(client)
    export = (await client.get("/v1/auth/me/export", headers=bearer(user.session_token))).json()
    (listed,) = export["mfa_enrollments"]
    assert set(listed) == {"id", "type", "created_at", "confirmed_at", "last_used_at"}
    assert listed["type"] == "totp" and listed["confirmed_at"]
    assert user.secret not in str(export)
    assert export["user"]["mfa_enabled"] is True


async def test_deleting_the_account_removes_the_factors(client, pg):
    user = await enroll(client)
    await mfa_token(client, user.email)
    assert (
        await client.delete("/v1/auth/me", headers=bearer(user.session_token))
    ).status_code == 200
    for table in ("mfa_enrollments", "mfa_recovery_codes", "mfa_tokens"):
        assert await pg.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert not await pg.fetchval("SELECT mfa_enabled FROM users")


async def test_a_purge_takes_the_factors_with_the_user(client, pg):
    user = await enroll(client)
    admin = await make_admin(pg, await default_app(pg))
    # Soft-deleted by SQL, so the rows are still there when the purge comes.
    await pg.execute("UPDATE users SET deleted_at = now() WHERE id = $1", user.user["id"])
    assert await pg.fetchval("SELECT count(*) FROM mfa_recovery_codes") == 10
    purged = await client.post(f"/v1/admin/users/{user.user['id']}/purge", headers=auth(admin))
    assert purged.status_code == 200
    for table in ("mfa_enrollments", "mfa_recovery_codes", "mfa_tokens"):
        assert await pg.fetchval(f"SELECT count(*) FROM {table}") == 0, table


# ---- the Faroe door ---------------------------------------------------------------------------


async def test_faroe_sees_an_mfa_user_as_disabled(client):
    user = await enroll(client)
    faroe = FaroeServerDouble(client)
    seen = await faroe.get_user(user.user["id"])
    assert seen.disabled is True and seen.disabled_counter == 1
    by_email = await faroe.get_user_by_email_address(user.email)
    assert by_email.disabled is True
    await _disable(client, user.session_token, password=PASSWORD, code=user.code())
    after = await faroe.get_user(user.user["id"])
    assert after.disabled is False and after.disabled_counter == 2


async def test_faroe_mfa_users_allow_lifts_it_by_name(client, database_url):
    user = await enroll(client)
    async with app_with(database_url, faroe_mfa_users="allow") as allowing:
        seen = await FaroeServerDouble(allowing).get_user(user.user["id"])
        assert seen.disabled is False


async def test_allow_is_an_unsafe_mode(database_url):
    modes = unsafe_modes(
        make_settings(database_url, faroe_mfa_users="allow", webhook_allow_private=False)
    )
    assert any(mode.startswith("FAROE_MFA_USERS=allow") for mode in modes)


# ---- the key ----------------------------------------------------------------------------------


async def test_no_key_to_be_had_is_503_with_the_reason(database_url, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    async with app_with(database_url, secret_key=None, data_dir=blocker / "data") as client:
        signed = await signup(client)
        answer = await _start(client, signed["session_token"])
        assert answer.status_code == 503 and answer.json()["type"] == "service_unavailable"
        assert "set SECRET_KEY" in answer.json()["error"] and answer.headers["Retry-After"]
        # The rest of the service works without the key.
        assert (
            await client.get("/v1/auth/mfa", headers=bearer(signed["session_token"]))
        ).status_code == 200


async def test_a_changed_key_is_503_not_500(client, database_url):
    user = await enroll(client)
    token = await mfa_token(client, user.email)
    other = "another-secret-key-of-at-least-32-bytes"
    async with app_with(database_url, secret_key=other) as changed:
        answer = await challenge(changed, token, code=user.code())
        assert answer.status_code == 503 and "cannot be decrypted" in answer.json()["error"]
        # A recovery code needs no secret: the way back in still works.
        rescued = await challenge(changed, token, recovery_code=user.recovery_codes[0])
        assert rescued.status_code == 200


NEW_KEY = "the-next-secret-key-of-at-least-32-bytes"


async def test_a_rotated_key_reseals_a_totp_secret_at_its_next_use(client, pg, database_url):
    user = await enroll(client)
    token = await mfa_token(client, user.email)
    rotated = {"secret_key": NEW_KEY, "secret_key_previous": SECRET_KEY}
    async with app_with(database_url, **rotated) as after:
        assert (await challenge(after, token, code=user.code())).status_code == 200
    row = await pg.fetchrow("SELECT id, secret FROM mfa_enrollments")
    assert (
        SecretBox(NEW_KEY.encode()).decrypt("totp-secret", row["secret"], row["id"]) == user.secret
    )
    # The old key alone no longer opens it.
    async with app_with(database_url, secret_key=SECRET_KEY) as old:
        answer = await challenge(old, await mfa_token(old, user.email), code=user.code())
        assert answer.status_code == 503


async def test_reseal_secrets_moves_every_stored_secret_to_the_new_key(client, pg, database_url):
    user = await enroll(client)
    webhook_id, _ = await make_webhook(pg, (await default_app(pg))[0])
    # The first JWT makes the first signing key.
    session = (await signup(client))["session_token"]
    assert (await client.post("/v1/auth/token", headers=bearer(session))).status_code == 200
    settings = make_settings(database_url, secret_key=NEW_KEY, secret_key_previous=SECRET_KEY)
    summary = await admin_cli.reseal_secrets(database_url, settings)
    assert summary == "resealed 3 secret(s); 0 already under SECRET_KEY"
    again = await admin_cli.reseal_secrets(database_url, settings)
    assert again == "resealed 0 secret(s); 3 already under SECRET_KEY"
    new_box = SecretBox(NEW_KEY.encode())
    row = await pg.fetchrow("SELECT id, secret FROM mfa_enrollments")
    assert new_box.decrypt("totp-secret", row["secret"], row["id"]) == user.secret
    sealed = await pg.fetchval("SELECT secret FROM webhook_endpoints WHERE id = $1", webhook_id)
    assert new_box.decrypt("webhook-secret", sealed, webhook_id).startswith("whsec_")
    key = await pg.fetchrow("SELECT id, private_key FROM signing_keys")
    assert "PRIVATE KEY" in new_box.decrypt("jwt-signing-key", key["private_key"], key["id"])
    # With the new key alone, sign-in with the factor works.
    async with app_with(database_url, secret_key=NEW_KEY) as after:
        token = await mfa_token(after, user.email)
        assert (await challenge(after, token, code=user.code())).status_code == 200


async def test_reseal_names_what_no_key_opens(client, pg, database_url):
    await enroll(client)
    enrollment_id = await pg.fetchval("SELECT id FROM mfa_enrollments")
    settings = make_settings(database_url, secret_key=NEW_KEY)  # the old key forgotten
    summary = await admin_cli.reseal_secrets(database_url, settings)
    assert summary.endswith(f"1 open with no known key: {enrollment_id}")


# ---- webhooks -----------------------------------------------------------------------------------


async def test_mfa_on_and_off_are_delivered_as_webhook_events(client, app, database_url, pg):
    admin = auth(await make_admin(pg, await default_app(pg)))
    events = ["user.mfa_enabled", "user.mfa_disabled"]
    async with receiver() as hook:
        created = await client.post(
            "/v1/admin/webhooks", json={"url": hook.url, "events": events}, headers=admin
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        async with worker(app, database_url):
            user = await enroll(client)  # on
            await _disable(client, user.session_token, password=PASSWORD, code=user.code())
            other = await enroll(client)  # on, then removed by the admin
            removed = await client.delete(f"/v1/admin/users/{other.user['id']}/mfa", headers=admin)
            assert removed.status_code == 200
            received = await hook.wait_for(4)
    bodies = [Webhook(secret).verify(r.body, r.headers) for r in received]
    seen = sorted((b["data"]["id"], b["type"], b["data"]["mfa_enabled"]) for b in bodies)
    assert seen == sorted(
        [
            (user.user["id"], "user.mfa_enabled", True),
            (user.user["id"], "user.mfa_disabled", False),
            (other.user["id"], "user.mfa_enabled", True),
            (other.user["id"], "user.mfa_disabled", False),
        ]
    )
    assert all(user.secret not in r.body.decode() for r in received)
