"""The e-mail flows end to end: a request over HTTP, the job worker, a real SMTP server, and the
code or link read off the received mail, presented back over HTTP.

Verification (by link, by code), forgot/reset password, e-mail change with its notice, the admin
"send" routes, REQUIRE_EMAIL_VERIFICATION per app; single use, newest only, lifetimes, five
tries, the one `invalid_code` answer; and the same answer for known and unknown addresses."""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from app import clock
from app.ids import Prefix, new_id
from app.main import create_app
from tests.admin_support import audit_rows, auth, default_app, make_admin, make_app, make_user
from tests.conftest import make_settings
from tests.faroe_support import FaroeServerDouble
from tests.helpers import PASSWORD, bearer, signup, unique_email
from tests.mail_support import Postbox, postbox
from tests.process_support import free_port
from tests.smtp_support import SmtpServer

NEW_PASSWORD = "a-new-long-passphrase-9"


@pytest.fixture
async def box(
    app: FastAPI, database_url: str, smtp_server: Callable[..., SmtpServer]
) -> AsyncIterator[Postbox]:
    async with postbox(app, database_url, smtp_server()) as found:
        yield found


async def _verified(pg, email: str) -> bool:
    return bool(await pg.fetchval("SELECT email_verified FROM users WHERE email = $1", email))


async def _status(client, token: str) -> int:
    return (await client.get("/v1/auth/me", headers=bearer(token))).status_code


# ---- verification -------------------------------------------------------------------------


async def test_signup_sends_a_verification_mail_whose_link_verifies(client, pg, box):
    signed = await signup(client, name="Ada")
    email = signed["user"]["email"]
    mail = await box.next_to(email)
    assert "Ada" in mail.text and mail.code in mail.html
    assert mail.link.startswith("http://127.0.0.1:8000/verify-email?token=ukev_")

    answer = await client.post("/v1/auth/verify-email", json={"token": mail.token})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "email verified" and body["user"]["email_verified"] is True
    assert "session_token" not in body  # the app does not require verification
    assert await _verified(pg, email)
    assert await pg.fetchval("SELECT count(*) FROM email_codes") == 0  # used up
    assert "user.email_verified" in [row["action"] for row in await audit_rows(pg)]


async def test_a_link_works_once(client, box):
    email = (await signup(client))["user"]["email"]
    mail = await box.next_to(email)
    assert (
        await client.post("/v1/auth/verify-email", json={"token": mail.token})
    ).status_code == 200
    again = await client.post("/v1/auth/verify-email", json={"token": mail.token})
    assert again.status_code == 400 and again.json()["type"] == "invalid_code"


async def test_the_code_verifies_with_the_address(client, pg, box):
    email = (await signup(client))["user"]["email"]
    mail = await box.next_to(email)
    answer = await client.post(
        "/v1/auth/verify-email", json={"email": email.upper(), "code": f" {mail.code} "}
    )
    assert answer.status_code == 200, answer.text
    assert await _verified(pg, email)


async def test_a_code_dies_after_five_wrong_tries(client, pg, box):
    email = (await signup(client))["user"]["email"]
    code = (await box.next_to(email)).code
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(5):
        answer = await client.post("/v1/auth/verify-email", json={"email": email, "code": wrong})
        assert answer.status_code == 400 and answer.json()["type"] == "invalid_code"
    right = await client.post("/v1/auth/verify-email", json={"email": email, "code": code})
    assert right.status_code == 400 and right.json()["type"] == "invalid_code"
    assert not await _verified(pg, email)


async def test_twenty_wrong_codes_at_once_count_as_twenty_tries(client, pg, box):
    email = (await signup(client))["user"]["email"]
    code = (await box.next_to(email)).code
    wrong = [f"{(int(code) + n) % 10**6:06d}" for n in range(1, 21)]
    answers = await asyncio.gather(
        *(client.post("/v1/auth/verify-email", json={"email": email, "code": c}) for c in wrong)
    )
    assert {a.status_code for a in answers} == {400}
    # The row died at the fifth: the right code is no longer accepted.
    assert await pg.fetchval("SELECT count(*) FROM email_codes") == 0
    right = await client.post("/v1/auth/verify-email", json={"email": email, "code": code})
    assert right.status_code == 400


async def test_only_the_newest_code_works(client, pg, box):
    signed = await signup(client)
    email, token = signed["user"]["email"], signed["session_token"]
    first = await box.next_to(email)
    sent = await client.post("/v1/auth/verify-email/send", json={}, headers=bearer(token))
    assert sent.status_code == 200 and sent.json() == {"status": "ok"}
    second = await box.next_to(email, seen=1)
    old = await client.post("/v1/auth/verify-email", json={"token": first.token})
    assert old.status_code == 400 and old.json()["type"] == "invalid_code"
    assert (
        await client.post("/v1/auth/verify-email", json={"token": second.token})
    ).status_code == 200


async def test_a_verification_link_expires_after_24_hours(client, box):
    email = (await signup(client))["user"]["email"]
    mail = await box.next_to(email)
    clock.advance(timedelta(hours=24, seconds=1))
    late = await client.post("/v1/auth/verify-email", json={"token": mail.token})
    assert late.status_code == 400 and late.json()["type"] == "invalid_code"


async def test_a_code_sent_to_an_old_address_dies_with_it(client, pg, box):
    email = (await signup(client))["user"]["email"]
    mail = await box.next_to(email)
    await pg.execute("UPDATE users SET email = 'moved@example.com' WHERE email = $1", email)
    stale = await client.post("/v1/auth/verify-email", json={"token": mail.token})
    assert stale.status_code == 400 and stale.json()["type"] == "invalid_code"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"token": "ukev_x", "code": "123456", "email": "a@example.com"},
        {"code": "123456"},
        {"email": "a@example.com"},
        {"token": "ukev_x", "email": "a@example.com"},
        {"email": "a@example.com", "code": "12345"},
        {"email": "a@example.com", "code": "abcdef"},
        {"token": ""},
        {"token": "ukev_x", "extra": 1},
    ],
)
async def test_verify_email_bad_bodies_are_422(client, body):
    answer = await client.post("/v1/auth/verify-email", json=body)
    assert answer.status_code == 422 and answer.json()["type"] == "validation_error"


async def test_unknown_tokens_and_addresses_are_invalid_code(client):
    for body in (
        {"token": "ukev_" + "A" * 43},
        {"email": "nobody@example.com", "code": "123456"},
    ):
        answer = await client.post("/v1/auth/verify-email", json=body)
        assert answer.status_code == 400 and answer.json()["type"] == "invalid_code"


async def test_verify_send_answers_the_same_for_known_verified_and_unknown(client, pg, box, app):
    known = (await signup(client))["user"]["email"]
    verified = (await signup(client))["user"]["email"]
    await box.next_to(known)
    await box.next_to(verified)
    await pg.execute("UPDATE users SET email_verified = true WHERE email = $1", verified)
    answers = [
        await client.post("/v1/auth/verify-email/send", json={"email": address})
        for address in (known, verified, "nobody@example.com")
    ]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "ok"})] * 3
    await box.next_to(known, seen=1)
    await box.settle(app)
    assert len(box.mails(verified)) == 1 and box.mails("nobody@example.com") == []


async def test_verify_send_needs_an_address_or_a_bearer(client):
    answer = await client.post("/v1/auth/verify-email/send", json={})
    assert answer.status_code == 401 and answer.json()["type"] == "authentication_required"
    bad = await client.post("/v1/auth/verify-email/send", json={}, headers=bearer("ukst_nope"))
    assert bad.status_code == 401


# ---- forgot / reset ------------------------------------------------------------------------


async def test_reset_by_link_sets_the_password_and_ends_every_session(client, pg, box):
    signed = await signup(client)
    email, old_token = signed["user"]["email"], signed["session_token"]
    await box.next_to(email)  # the verification mail
    before = await pg.fetchrow(
        "SELECT password_hash_counter, sessions_counter FROM users WHERE email = $1", email
    )
    asked = await client.post("/v1/auth/forgot-password", json={"email": email})
    assert asked.status_code == 200 and asked.json() == {"status": "ok"}
    mail = await box.next_to(email, seen=1)
    assert "ukpr_" in mail.link and "/reset-password?token=" in mail.link

    reset = await client.post(
        "/v1/auth/reset-password", json={"token": mail.token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 200 and reset.json() == {"status": "password reset"}
    assert await _status(client, old_token) == 401
    old = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    new = await client.post("/v1/auth/signin", json={"email": email, "password": NEW_PASSWORD})
    assert new.status_code == 200
    after = await pg.fetchrow(
        "SELECT password_hash_counter, sessions_counter, email_verified FROM users "
        "WHERE email = $1",
        email,
    )
    assert after["password_hash_counter"] == before["password_hash_counter"] + 1
    assert after["sessions_counter"] == before["sessions_counter"] + 1
    assert after["email_verified"] is True  # the code came through the address
    actions = [row["action"] for row in await audit_rows(pg)]
    assert "user.password_reset_mail_sent" in actions and "user.password_reset" in actions
    again = await client.post(
        "/v1/auth/reset-password", json={"token": mail.token, "new_password": "yet-another-pass-1"}
    )
    assert again.status_code == 400 and again.json()["type"] == "invalid_code"


async def test_reset_by_code(client, box):
    email = (await signup(client))["user"]["email"]
    await box.next_to(email)  # the verification mail first: the two race
    await client.post("/v1/auth/forgot-password", json={"email": email})
    mail = await box.next_to(email, seen=1)
    reset = await client.post(
        "/v1/auth/reset-password",
        json={"email": email, "code": mail.code, "new_password": NEW_PASSWORD},
    )
    assert reset.status_code == 200, reset.text
    new = await client.post("/v1/auth/signin", json={"email": email, "password": NEW_PASSWORD})
    assert new.status_code == 200


async def test_a_verification_code_does_not_reset_a_password(client, box):
    email = (await signup(client))["user"]["email"]
    verification = await box.next_to(email)
    reset = await client.post(
        "/v1/auth/reset-password",
        json={"token": verification.token, "new_password": NEW_PASSWORD},
    )
    assert reset.status_code == 400 and reset.json()["type"] == "invalid_code"


async def test_a_reset_link_expires_after_an_hour(client, box):
    email = (await signup(client))["user"]["email"]
    await box.next_to(email)  # the verification mail first: the two race
    await client.post("/v1/auth/forgot-password", json={"email": email})
    mail = await box.next_to(email, seen=1)
    clock.advance(timedelta(hours=1, seconds=1))
    late = await client.post(
        "/v1/auth/reset-password", json={"token": mail.token, "new_password": NEW_PASSWORD}
    )
    assert late.status_code == 400 and late.json()["type"] == "invalid_code"


async def test_twenty_resets_with_one_link_have_one_winner(client, box):
    email = (await signup(client))["user"]["email"]
    await box.next_to(email)  # the verification mail first: the two race
    await client.post("/v1/auth/forgot-password", json={"email": email})
    mail = await box.next_to(email, seen=1)
    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/auth/reset-password",
                json={"token": mail.token, "new_password": f"{NEW_PASSWORD}-{n}"},
            )
            for n in range(20)
        )
    )
    assert sorted(a.status_code for a in answers) == [200] + [400] * 19
    winner = next(n for n, a in enumerate(answers) if a.status_code == 200)
    signed = await client.post(
        "/v1/auth/signin", json={"email": email, "password": f"{NEW_PASSWORD}-{winner}"}
    )
    assert signed.status_code == 200


async def test_reset_refuses_a_weak_password_and_keeps_the_code(client, box):
    email = (await signup(client))["user"]["email"]
    await box.next_to(email)  # the verification mail first: the two race
    await client.post("/v1/auth/forgot-password", json={"email": email})
    mail = await box.next_to(email, seen=1)
    weak = await client.post(
        "/v1/auth/reset-password", json={"token": mail.token, "new_password": "password"}
    )
    assert weak.status_code == 422
    ok = await client.post(
        "/v1/auth/reset-password", json={"token": mail.token, "new_password": NEW_PASSWORD}
    )
    assert ok.status_code == 200


async def test_forgot_password_answers_the_same_for_an_unknown_address(client, app, box):
    known = (await signup(client))["user"]["email"]
    answers = [
        await client.post("/v1/auth/forgot-password", json={"email": address})
        for address in (known, "nobody@example.com")
    ]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "ok"})] * 2
    assert answers[0].headers.keys() == answers[1].headers.keys()
    await box.next_to(known, seen=1)
    await box.settle(app)
    assert box.mails("nobody@example.com") == []


@pytest.mark.parametrize("path", ["/v1/auth/forgot-password", "/v1/auth/verify-email/send"])
async def test_a_mail_by_address_goes_to_the_app_and_environment_named(client, pg, path):
    """The refs of a request by address resolve as everywhere else (tenancy.resolve_ids is
    tenancy.resolve in one statement): slug or id, the app's default environment when none is
    named, headers when the body names none, and 404 for what is not there."""
    default = await default_app(pg)
    shop = await make_app(pg, "shop")
    staging = new_id(Prefix.ENV)
    await pg.execute(
        "INSERT INTO environments (id, app_id, slug, name, is_default) "
        "VALUES ($1, $2, 'staging', 'Staging', false)",
        staging,
        shop[0],
    )
    cases: list[tuple[dict[str, str], dict[str, str], tuple[str, str] | str]] = [
        ({}, {}, default),
        ({"app_id": "shop"}, {}, shop),
        ({"app_id": shop[0]}, {}, shop),
        ({"app_id": "shop", "env_id": "staging"}, {}, (shop[0], staging)),
        ({"app_id": shop[0], "env_id": staging}, {}, (shop[0], staging)),
        ({}, {"X-App-Id": "shop", "X-Env-Id": "staging"}, (shop[0], staging)),
        ({"app_id": "nope"}, {}, "app not found"),
        ({"app_id": new_id(Prefix.APP)}, {}, "app not found"),
        ({"app_id": "shop", "env_id": "nope"}, {}, "environment not found"),
        # Another app's environment is no environment of this one.
        ({"app_id": "shop", "env_id": default[1]}, {}, "environment not found"),
    ]
    for refs, headers, expected in cases:
        email = unique_email("refs")
        answer = await client.post(path, json={"email": email, **refs}, headers=headers)
        if isinstance(expected, str):
            assert answer.status_code == 404 and expected in answer.text, (refs, answer.text)
            continue
        assert answer.status_code == 200, (refs, answer.text)
        row = await pg.fetchrow("SELECT payload, headers FROM pgqueuer ORDER BY id DESC LIMIT 1")
        payload, job_headers = json.loads(row["payload"]), json.loads(row["headers"])
        assert payload["email"] == email, refs
        assert (job_headers["userkeep_app_id"], payload["env_id"]) == expected, refs


async def test_forty_mails_by_address_at_once_each_queue_their_own_job(client, pg):
    """Requests by address share commits (services/job_batches.py): each still answers only
    once its own job, with its own address and app, is in the queue."""
    shop = await make_app(pg, "shop")
    sent = [
        (path, unique_email("batch"), app_ref)
        for path in ("/v1/auth/forgot-password", "/v1/auth/verify-email/send")
        for app_ref in ("default", "shop")
        for _ in range(10)
    ]
    answers = await asyncio.gather(
        *(client.post(path, json={"email": email, "app_id": ref}) for path, email, ref in sent)
    )
    assert [a.status_code for a in answers] == [200] * len(sent)
    rows = await pg.fetch("SELECT entrypoint, payload, headers FROM pgqueuer")
    queued = {
        json.loads(row["payload"])["email"]: (
            json.loads(row["payload"])["mail"],
            json.loads(row["headers"])["userkeep_app_id"],
        )
        for row in rows
    }
    assert len(rows) == len(sent)
    default = (await default_app(pg))[0]
    for path, email, ref in sent:
        mail = "reset_password" if "forgot" in path else "verify_email"
        assert queued[email] == (mail, default if ref == "default" else shop[0])
    # The admins' view has each of them too (migration 0009's trigger ran per row).
    assert await pg.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'") == len(sent)


async def test_a_deleted_user_gets_no_reset_mail_and_its_code_dies(client, app, pg, box):
    signed = await signup(client)
    email = signed["user"]["email"]
    await box.next_to(email)  # the verification mail first: the two race
    await client.post("/v1/auth/forgot-password", json={"email": email})
    mail = await box.next_to(email, seen=1)
    await client.delete("/v1/auth/me", headers=bearer(signed["session_token"]))
    dead = await client.post(
        "/v1/auth/reset-password", json={"token": mail.token, "new_password": NEW_PASSWORD}
    )
    assert dead.status_code == 400
    await client.post("/v1/auth/forgot-password", json={"email": email})
    await box.settle(app)
    assert len(box.mails(email)) == 2


# ---- e-mail change -------------------------------------------------------------------------


async def test_change_email_by_link_moves_the_address_and_notifies_the_old_one(client, pg, box):
    signed = await signup(client)
    old, token = signed["user"]["email"], signed["session_token"]
    new = unique_email("moved")
    counter = await pg.fetchval("SELECT email_address_counter FROM users WHERE email = $1", old)
    asked = await client.post(
        "/v1/auth/change-email",
        json={"new_email": new, "password": PASSWORD},
        headers=bearer(token),
    )
    assert asked.status_code == 200 and asked.json() == {"status": "confirmation sent"}
    assert (await client.get("/v1/auth/me", headers=bearer(token))).json()["email"] == old
    mail = await box.next_to(new)
    assert "/confirm-email-change?token=ukec_" in mail.link

    confirmed = await client.post("/v1/auth/change-email/confirm", json={"token": mail.token})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["email"] == new and confirmed.json()["email_verified"] is True
    row = await pg.fetchrow("SELECT email_address_counter FROM users WHERE email = $1", new)
    assert row["email_address_counter"] == counter + 1
    notice = await box.next_to(old, seen=1)
    assert new in notice.text and "token=" not in notice.text
    assert await _status(client, token) == 200  # the change ends no session
    signin = await client.post("/v1/auth/signin", json={"email": new, "password": PASSWORD})
    assert signin.status_code == 200


async def test_change_email_by_code_needs_the_bearer(client, pg, box):
    signed = await signup(client)
    token = signed["session_token"]
    new = unique_email("moved")
    await client.post(
        "/v1/auth/change-email",
        json={"new_email": new, "password": PASSWORD},
        headers=bearer(token),
    )
    code = (await box.next_to(new)).code
    anonymous = await client.post("/v1/auth/change-email/confirm", json={"code": code})
    assert anonymous.status_code == 401
    other = await signup(client)
    stranger = await client.post(
        "/v1/auth/change-email/confirm",
        json={"code": code},
        headers=bearer(other["session_token"]),
    )
    assert stranger.status_code == 400 and stranger.json()["type"] == "invalid_code"
    mine = await client.post(
        "/v1/auth/change-email/confirm", json={"code": code}, headers=bearer(token)
    )
    assert mine.status_code == 200 and mine.json()["email"] == new


async def test_change_email_checks_the_password_and_the_address(client, pg, box):
    signed = await signup(client)
    other = await signup(client)
    headers = bearer(signed["session_token"])
    cases = [
        ({"new_email": unique_email(), "password": "wrong-password-1"}, 401, "invalid_credentials"),
        ({"new_email": other["user"]["email"], "password": PASSWORD}, 409, "email_taken"),
        ({"new_email": signed["user"]["email"], "password": PASSWORD}, 422, "validation_error"),
        ({"new_email": "not an address", "password": PASSWORD}, 422, "validation_error"),
    ]
    for body, status, kind in cases:
        answer = await client.post("/v1/auth/change-email", json=body, headers=headers)
        assert (answer.status_code, answer.json()["type"]) == (status, kind), body
    assert (await client.post("/v1/auth/change-email", json=cases[0][0])).status_code == 401


async def test_an_address_taken_meanwhile_is_409_at_confirm(client, pg, box):
    signed = await signup(client)
    new = unique_email("contested")
    await client.post(
        "/v1/auth/change-email",
        json={"new_email": new, "password": PASSWORD},
        headers=bearer(signed["session_token"]),
    )
    mail = await box.next_to(new)
    await signup(client, email=new)
    taken = await client.post("/v1/auth/change-email/confirm", json={"token": mail.token})
    assert taken.status_code == 409 and taken.json()["type"] == "email_taken"
    assert await pg.fetchval("SELECT count(*) FROM users WHERE lower(email) = $1", new) == 1


# ---- admins --------------------------------------------------------------------------------


async def test_admin_send_routes_queue_mails(client, pg, box):
    tenant = await default_app(pg)
    headers = auth(await make_admin(pg, tenant))
    user_id = await make_user(pg, tenant, email="grace@example.com")
    sent = await client.post(f"/v1/admin/users/{user_id}/send-verification", headers=headers)
    assert sent.status_code == 202 and sent.json() == {"status": "sent"}
    verification = await box.next_to("grace@example.com")
    reset = await client.post(f"/v1/admin/users/{user_id}/send-password-reset", headers=headers)
    assert reset.status_code == 202
    mail = await box.next_to("grace@example.com", seen=1)
    assert "reset-password" in mail.link and "verify-email" in verification.link
    rows = [r for r in await audit_rows(pg) if r["action"].endswith("_mail_sent")]
    assert {r["actor_type"] for r in rows} == {"admin"}
    await pg.execute("UPDATE users SET email_verified = true WHERE id = $1", user_id)
    again = await client.post(f"/v1/admin/users/{user_id}/send-verification", headers=headers)
    assert again.status_code == 409


async def test_admin_send_routes_keep_to_the_callers_app(client, pg):
    other = await make_app(pg, "other")
    stranger = await make_user(pg, other)
    headers = auth(await make_admin(pg, await make_app(pg, "mine")))
    for route in ("send-verification", "send-password-reset"):
        answer = await client.post(f"/v1/admin/users/{stranger}/{route}", headers=headers)
        assert answer.status_code == 404
    assert await pg.fetchval("SELECT count(*) FROM jobs") == 0


# ---- REQUIRE_EMAIL_VERIFICATION ------------------------------------------------------------


async def test_an_app_requiring_verification_signs_in_only_verified_users(client, pg, box):
    await pg.execute("UPDATE apps SET require_email_verification = true WHERE slug = 'default'")
    email = unique_email()
    created = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201 and set(created.json()) == {"user"}
    signin = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert signin.status_code == 403 and signin.json()["type"] == "email_not_verified"
    wrong = await client.post("/v1/auth/signin", json={"email": email, "password": "nope-nope-1"})
    assert wrong.status_code == 401  # the state shows only to whoever knows the password
    mail = await box.next_to(email)
    verified = await client.post("/v1/auth/verify-email", json={"token": mail.token})
    assert verified.status_code == 200
    assert await _status(client, verified.json()["session_token"]) == 200
    signin = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert signin.status_code == 200


async def test_refresh_of_an_unverified_user_stops_when_the_app_starts_requiring(client, pg):
    signed = await signup(client)
    await pg.execute("UPDATE apps SET require_email_verification = true WHERE slug = 'default'")
    refreshed = await client.post(
        "/v1/auth/refresh", json={"refresh_token": signed["refresh_token"]}
    )
    assert refreshed.status_code == 403 and refreshed.json()["type"] == "email_not_verified"


async def test_the_app_setting_is_set_by_admins(client, pg):
    headers = auth(await make_admin(pg, await default_app(pg)))
    patched = await client.patch(
        "/v1/admin/apps/default",
        json={"require_email_verification": True, "mail_from": "Acme <hello@acme.com>",
              "link_base_url": "https://acme.com/account/"},
        headers=headers,
    )  # fmt: skip
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["require_email_verification"] is True
    assert body["link_base_url"] == "https://acme.com/account"
    for bad in (
        {"link_base_url": "ftp://acme.com"},
        {"link_base_url": "https://acme.com/?q=1"},
        {"mail_from": "not an address"},
        {"require_email_verification": "yes"},
        {"name": None},
    ):
        answer = await client.patch("/v1/admin/apps/default", json=bad, headers=headers)
        assert answer.status_code == 422, bad
    back = await client.patch(
        "/v1/admin/apps/default", json={"link_base_url": None}, headers=headers
    )
    assert back.json()["link_base_url"] is None


async def test_an_apps_mail_from_and_link_base_are_used(client, pg, box):
    await pg.execute(
        "UPDATE apps SET mail_from = 'Acme <hello@acme.com>', "
        "link_base_url = 'https://acme.com/account' WHERE slug = 'default'"
    )
    email = (await signup(client))["user"]["email"]
    mail = await box.next_to(email)
    assert mail.sender == "Acme <hello@acme.com>"
    assert mail.link.startswith("https://acme.com/account/verify-email?token=")


# ---- the queue's faults --------------------------------------------------------------------


async def test_a_rolled_back_signup_enqueues_no_mail(client, pg):
    email = (await signup(client))["user"]["email"]
    before = await pg.fetchval("SELECT count(*) FROM jobs")
    taken = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert taken.status_code == 409
    assert await pg.fetchval("SELECT count(*) FROM jobs") == before


async def test_smtp_down_the_api_answers_and_the_mail_goes_out_when_it_is_back(
    client, app, pg, database_url, smtp_server
):
    port = free_port()  # nothing listens there yet: SMTP is down
    email = (await signup(client))["user"]["email"]
    async with postbox(app, database_url, None, port) as box:
        asked = await client.post("/v1/auth/forgot-password", json={"email": email})
        assert asked.status_code == 200
        # Both mails fail their first attempt and wait for a retry with backoff.
        deadline = asyncio.get_running_loop().time() + 20
        while (
            await pg.fetchval(
                "SELECT count(*) FROM jobs j JOIN pgqueuer q ON q.id = j.id "
                "WHERE j.attempts >= 1 AND j.status = 'queued' AND q.execute_after > now()"
            )
            < 2
        ):
            assert asyncio.get_running_loop().time() < deadline, "no retry was scheduled"
            await asyncio.sleep(0.05)
        errors = [row["last_error"] for row in await pg.fetch("SELECT last_error FROM jobs")]
        assert all("MailError" in (error or "") for error in errors), errors
        box.server = smtp_server(port=port)  # SMTP is back, on the same port
        # The clock moves: the retries come due now rather than in 15 s.
        await pg.execute("UPDATE pgqueuer SET execute_after = now()")
        await box.next_to(email, seen=1, seconds=30)
        assert {mail.link.split("?")[0].rsplit("/", 1)[1] for mail in box.mails(email)} == {
            "verify-email",
            "reset-password",
        }


async def test_a_recipient_refused_for_good_fails_the_job_without_retrying(
    client, app, pg, database_url, smtp_server
):
    email = unique_email("refused")
    server = smtp_server(reject={email})
    async with postbox(app, database_url, server) as box:
        await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
        deadline = asyncio.get_running_loop().time() + 20
        while (
            row := await pg.fetchrow("SELECT status, attempts, last_error FROM jobs")
        ) is None or row["status"] != "failed":
            assert asyncio.get_running_loop().time() < deadline, row
            await asyncio.sleep(0.05)
        assert row["attempts"] == 1 and "550" in row["last_error"]
        assert box.mails() == []


async def test_a_queued_mail_job_holds_no_secret(client, app, pg, database_url, smtp_server):
    email = (await signup(client))["user"]["email"]
    payload = json.loads(await pg.fetchval("SELECT payload FROM pgqueuer"))
    # The code is made by the worker, stored hashed, and put only into the mail.
    assert set(payload) == {"mail", "ip", "user_agent", "actor_type", "actor_id", "user_id"}
    async with postbox(app, database_url, smtp_server()) as box:
        mail = await box.next_to(email)
        await box.settle(app)
    kept = [str(dict(row)) for row in await pg.fetch("SELECT * FROM jobs")]
    kept += [str(dict(row)) for row in await pg.fetch("SELECT * FROM pgqueuer_log")]
    kept += [str(dict(row)) for row in await pg.fetch("SELECT * FROM audit_events")]
    assert not any(mail.code in row or mail.token in row for row in kept)


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url,
        rate_limits="on",
        rate_limit_mail_address="2/3600",
        rate_limit_mail_ip="10/60",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("198.51.100.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
            yield c


async def test_mails_per_address_are_limited_alike_for_known_and_unknown(limited, client):
    known = (await signup(client))["user"]["email"]
    statuses = {}
    for address in (known, "nobody@example.com"):
        statuses[address] = [
            (await limited.post("/v1/auth/forgot-password", json={"email": address})).status_code
            for _ in range(3)
        ]
    assert statuses == {known: [200, 200, 429], "nobody@example.com": [200, 200, 429]}


async def test_mails_per_ip_are_limited(limited):
    statuses = [
        (
            await limited.post("/v1/auth/verify-email/send", json={"email": unique_email()})
        ).status_code
        for _ in range(11)
    ]
    assert statuses == [200] * 10 + [429]


# ---- the other door ------------------------------------------------------------------------


async def test_a_reset_by_mail_is_seen_through_the_faroe_door(client, box):
    faroe = FaroeServerDouble(client)
    signed = await signup(client)
    email, user_id = signed["user"]["email"], signed["user"]["id"]
    before = await faroe.get_user(user_id)
    await client.post("/v1/auth/forgot-password", json={"email": email})
    mail = await box.next_to(email, seen=1)
    reset = await client.post(
        "/v1/auth/reset-password", json={"token": mail.token, "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 200
    after = await faroe.get_user(user_id)
    assert after.password_hash_counter == before.password_hash_counter + 1
    assert after.sessions_counter == before.sessions_counter + 1
    assert faroe.verify_password(NEW_PASSWORD, after)
    assert not faroe.verify_password(PASSWORD, after)


async def test_an_address_changed_through_faroe_kills_the_pending_reset_code(client, box):
    faroe = FaroeServerDouble(client)
    signed = await signup(client)
    email, user_id = signed["user"]["email"], signed["user"]["id"]
    await client.post("/v1/auth/forgot-password", json={"email": email})
    mail = await box.next_to(email, seen=1)
    user = await faroe.get_user(user_id)
    await faroe.update_user_email_address(
        user_id, unique_email("faroe"), user.email_address_counter
    )
    dead = await client.post(
        "/v1/auth/reset-password", json={"token": mail.token, "new_password": NEW_PASSWORD}
    )
    assert dead.status_code == 400 and dead.json()["type"] == "invalid_code"


async def test_a_banned_user_is_verified_but_not_signed_in(client, pg, box):
    await pg.execute("UPDATE apps SET require_email_verification = true WHERE slug = 'default'")
    email = unique_email()
    await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    mail = await box.next_to(email)
    await pg.execute("UPDATE users SET banned = true WHERE email = $1", email)
    verified = await client.post("/v1/auth/verify-email", json={"token": mail.token})
    assert verified.status_code == 200 and "session_token" not in verified.json()
    assert await _verified(pg, email)
    assert await pg.fetchval("SELECT count(*) FROM sessions") == 0
