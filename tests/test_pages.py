"""The built-in pages the mails' links open (app/api/pages.py), through HTTP on a real database.

Most tests issue the code row directly (email_codes.issue), which is what the mail job does;
one follows a real mail from sign-up to the verified address. A GET never spends a token; each
POST does what its JSON route does and answers a page; errors, the rate limit and a busy
hasher are pages too; every page carries its own policy, no-store and no-referrer."""

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from app import clock
from app.api import pages
from app.main import create_app
from app.models import User
from app.services import email_codes, email_flows
from app.services.email_codes import Purpose
from tests.conftest import make_settings
from tests.helpers import PASSWORD, bearer, signup, unique_email
from tests.mail_support import Postbox, postbox
from tests.smtp_support import SmtpServer

NEW_PASSWORD = "a-new-long-passphrase-9"
HIDDEN_TOKEN = re.compile(r'<input type="hidden" name="token" value="([^"]*)">')


async def _issue(app: FastAPI, user_id: str, purpose: Purpose, new_email: str | None = None) -> str:
    """A code and link for the user, as the mail job makes them; the link's token."""
    async with app.state.sessions() as db, db.begin():
        user = await db.get(User, user_id)
        assert user is not None
        return (await email_codes.issue(db, user, purpose, new_email=new_email)).token


async def _user(client: httpx.AsyncClient) -> dict:
    return await signup(client)


def _policy(header: str) -> dict[str, list[str]]:
    directives = [d.split() for d in header.split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}


def assert_page(response: httpx.Response, status: int) -> None:
    """An HTML page of the expected status, with every header a page must carry, once."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers.get_list("content-security-policy") == [pages.POLICY]
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers.get_list("referrer-policy") == ["no-referrer"]
    assert response.headers.get_list("x-frame-options") == ["DENY"]
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert "<script" not in response.text.lower()


def _form(token: str | None = None, **fields: str) -> dict[str, str]:
    return {**({"token": token} if token is not None else {}), **fields}


# ---- verify ----------------------------------------------------------------------------------


async def test_get_never_uses_the_token_the_button_does_once(client, app, pg):
    signed = await _user(client)
    token = await _issue(app, signed["user"]["id"], Purpose.VERIFY_EMAIL)
    for _ in range(2):  # a mail scanner, then the person
        shown = await client.get("/verify-email", params={"token": token})
        assert_page(shown, 200)
        assert "Verify my address" in shown.text
        assert HIDDEN_TOKEN.findall(shown.text) == [token]
        assert '<form method="post" action="/verify-email">' in shown.text
    assert (await client.head("/verify-email", params={"token": token})).status_code == 200
    assert await pg.fetchval("SELECT count(*) FROM email_codes") == 1
    assert not await pg.fetchval("SELECT email_verified FROM users")

    done = await client.post("/verify-email", data=_form(token))
    assert_page(done, 200)
    assert "Your address is verified" in done.text and "sign in" in done.text
    assert await pg.fetchval("SELECT email_verified FROM users")
    assert await pg.fetchval("SELECT count(*) FROM email_codes") == 0

    again = await client.post("/verify-email", data=_form(token))
    assert_page(again, 400)
    assert "invalid or has expired" in again.text


async def test_every_bad_token_is_the_same_page(client, app, pg):
    signed = await _user(client)
    user_id = signed["user"]["id"]
    used = await _issue(app, user_id, Purpose.VERIFY_EMAIL)
    assert (await client.post("/verify-email", data=_form(used))).status_code == 200
    replaced = await _issue(app, user_id, Purpose.VERIFY_EMAIL)
    expired = await _issue(app, user_id, Purpose.VERIFY_EMAIL)  # replaces `replaced`
    clock.advance(timedelta(hours=25))
    wrong_purpose = await _issue(app, user_id, Purpose.RESET_PASSWORD)
    bodies = [
        _form(used),
        _form(replaced),
        _form(expired),
        _form(wrong_purpose),
        _form("ukev_unknown"),
        _form("ukev_" + "a" * 252),  # 257 characters
        _form(""),
        _form(other="1"),  # no token at all
        _form("<script>alert(1)</script>"),
    ]
    answers = [await client.post("/verify-email", data=body) for body in bodies]
    answers.append(
        await client.post(
            "/verify-email",
            content=f"token={used}&token={used}",
            headers={"content-type": pages.FORM},
        )
    )
    for answer in answers:
        assert_page(answer, 400)
    assert len({answer.text for answer in answers}) == 1
    assert "This link is invalid or has expired" in answers[0].text
    assert "<script>alert" not in "".join(answer.text for answer in answers)


@pytest.mark.parametrize("query", ["", "?token=", "?token=a&token=b", "?token=%3Cb%3Ex"])
@pytest.mark.parametrize("path", sorted(pages.PAGES))
async def test_a_link_without_a_token_shows_no_form(client, path, query):
    answer = await client.get(path + query)
    assert_page(answer, 400)
    assert "<form" not in answer.text and "invalid or has expired" in answer.text


async def test_where_verification_is_required_the_page_signs_nobody_in(client, app, pg):
    await pg.execute("UPDATE apps SET require_email_verification = true WHERE slug = 'default'")
    email = unique_email()
    pending = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert pending.status_code == 201 and "session_token" not in pending.json()
    token = await _issue(app, pending.json()["user"]["id"], Purpose.VERIFY_EMAIL)
    done = await client.post("/verify-email", data=_form(token))
    assert_page(done, 200)
    assert "You can now sign in" in done.text
    assert "ukst_" not in done.text and "ukrt_" not in done.text
    # No session was made for the page to throw away, and no sign-in was audited.
    assert await pg.fetchval("SELECT count(*) FROM sessions") == 0
    actions = await pg.fetch("SELECT action FROM audit_events")
    assert "user.signin" not in {row["action"] for row in actions}
    signin = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert signin.status_code == 200


# ---- reset -----------------------------------------------------------------------------------


async def _hash(pg, user_id: str) -> str:
    return str(await pg.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id))


async def test_reset_form_asks_twice_and_keeps_the_token(client, app, pg):
    signed = await _user(client)
    user_id = signed["user"]["id"]
    before = await _hash(pg, user_id)
    token = await _issue(app, user_id, Purpose.RESET_PASSWORD)

    shown = await client.get("/reset-password", params={"token": token})
    assert_page(shown, 200)
    assert HIDDEN_TOKEN.findall(shown.text) == [token]
    fields = re.findall(r'<input type="password"[^>]*>', shown.text)
    assert len(fields) == 2
    for field in fields:
        assert 'autocomplete="new-password"' in field and 'minlength="8"' in field

    mismatch = await client.post(
        "/reset-password",
        data=_form(token, new_password=NEW_PASSWORD, repeat_password=NEW_PASSWORD + "x"),
    )
    assert_page(mismatch, 400)
    assert "The two passwords are not the same." in mismatch.text
    assert HIDDEN_TOKEN.findall(mismatch.text) == [token]
    assert NEW_PASSWORD not in mismatch.text  # a password is never written into a page

    for weak, reason in [
        ("short", "must be at least 8 characters"),
        ("password", "is too common; choose a less guessable password"),
    ]:
        refused = await client.post(
            "/reset-password", data=_form(token, new_password=weak, repeat_password=weak)
        )
        assert_page(refused, 400)
        assert f"The password {reason}." in refused.text
        assert HIDDEN_TOKEN.findall(refused.text) == [token]
    assert await _hash(pg, user_id) == before
    assert await pg.fetchval("SELECT count(*) FROM email_codes") == 1  # still usable


async def test_reset_sets_the_password_and_ends_every_session(client, app, pg):
    signed = await _user(client)
    email, user_id = signed["user"]["email"], signed["user"]["id"]
    token = await _issue(app, user_id, Purpose.RESET_PASSWORD)
    done = await client.post(
        "/reset-password",
        data=_form(token, new_password=NEW_PASSWORD, repeat_password=NEW_PASSWORD),
    )
    assert_page(done, 200)
    assert "Your password is reset" in done.text and "signed out" in done.text
    assert (
        await client.get("/v1/auth/me", headers=bearer(signed["session_token"]))
    ).status_code == 401
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", user_id
        )
        == 0
    )
    new = await client.post("/v1/auth/signin", json={"email": email, "password": NEW_PASSWORD})
    assert new.status_code == 200, new.text
    old = await client.post("/v1/auth/signin", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401

    again = await client.post(
        "/reset-password",
        data=_form(token, new_password=NEW_PASSWORD, repeat_password=NEW_PASSWORD),
    )
    assert_page(again, 400)
    assert "invalid or has expired" in again.text and "<form" not in again.text


async def test_reset_with_a_busy_hasher_is_the_busy_page(client, app, pg):
    signed = await _user(client)
    before = await _hash(pg, signed["user"]["id"])
    token = await _issue(app, signed["user"]["id"], Purpose.RESET_PASSWORD)
    hasher = app.state.hasher
    saved = hasher.admitted
    hasher.admitted = hasher.concurrency + hasher.queue_max
    try:
        busy = await client.post(
            "/reset-password",
            data=_form(token, new_password=NEW_PASSWORD, repeat_password=NEW_PASSWORD),
        )
    finally:
        hasher.admitted = saved
    assert_page(busy, 503)
    assert busy.headers["retry-after"] == "1" and "try again" in busy.text
    assert await _hash(pg, signed["user"]["id"]) == before


async def test_a_database_outage_is_the_busy_page(client, monkeypatch):
    async def gone(*args, **kwargs):
        raise ConnectionRefusedError("database gone")

    monkeypatch.setattr(email_flows, "confirm_email_change", gone)
    busy = await client.post("/confirm-email-change", data=_form("ukec_x"))
    assert_page(busy, 503)
    assert busy.headers["retry-after"] == "1" and "try again" in busy.text


# ---- e-mail change ---------------------------------------------------------------------------


async def test_confirm_email_change_moves_the_account(client, app, pg):
    signed = await _user(client)
    new_email = unique_email("moved")
    token = await _issue(app, signed["user"]["id"], Purpose.CHANGE_EMAIL, new_email)
    shown = await client.get("/confirm-email-change", params={"token": token})
    assert_page(shown, 200)
    assert "Confirm my new address" in shown.text
    assert HIDDEN_TOKEN.findall(shown.text) == [token]
    assert await pg.fetchval("SELECT count(*) FROM email_codes") == 1

    done = await client.post("/confirm-email-change", data=_form(token))
    assert_page(done, 200)
    assert f"The address of your account is now {new_email}." in done.text
    row = await pg.fetchrow(
        "SELECT email, email_verified FROM users WHERE id = $1", signed["user"]["id"]
    )
    assert row["email"] == new_email and row["email_verified"]


async def test_confirm_email_change_to_a_taken_address(client, app, pg):
    signed = await _user(client)
    new_email = unique_email("wanted")
    token = await _issue(app, signed["user"]["id"], Purpose.CHANGE_EMAIL, new_email)
    await signup(client, email=new_email)  # someone else takes it meanwhile
    taken = await client.post("/confirm-email-change", data=_form(token))
    assert_page(taken, 409)
    assert "already in use" in taken.text
    email = await pg.fetchval("SELECT email FROM users WHERE id = $1", signed["user"]["id"])
    assert email == signed["user"]["email"]


# ---- what every page shares ------------------------------------------------------------------


async def test_the_policy_allows_exactly_the_pages_style(client):
    shown = await client.get("/verify-email", params={"token": "ukev_x"})
    policy = _policy(shown.headers["content-security-policy"])
    style = re.findall(r"<style>(.*?)</style>", shown.text, re.DOTALL)
    assert len(style) == 1
    digest = base64.b64encode(hashlib.sha256(style[0].encode()).digest()).decode()
    assert policy == {
        "default-src": ["'none'"],
        "style-src": [f"'sha256-{digest}'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
    }


@pytest.mark.parametrize("path", sorted(pages.PAGES))
async def test_only_forms_are_taken(client, path):
    as_json = await client.post(path, json={"token": "ukev_x"})
    assert_page(as_json, 415)
    no_type = await client.post(path, content=b"token=ukev_x")
    assert_page(no_type, 415)
    for body in [
        b"",
        b"token",
        b"a=1&&b=2",
        "token=caf\u00e9".encode(),
        b"token=%ff",
        b"&".join(b"f%d=1" % n for n in range(9)),
    ]:
        refused = await client.post(path, content=body, headers={"content-type": pages.FORM})
        assert_page(refused, 400)
        assert "invalid or has expired" in refused.text


def test_values_in_a_page_are_escaped():
    html = pages.render(
        "message.html", title="<i>t</i>", text='<script>alert("x")</script>', problem=False
    )
    assert "<script>" not in html and "&lt;script&gt;" in html and "<i>" not in html
    form = pages.render(
        "button.html", title="t", text="x", action="/a", token='"><script>', button="b"
    )
    assert 'value="&#34;&gt;&lt;script&gt;"' in form


async def test_pages_are_not_in_the_openapi(client):
    spec = (await client.get("/openapi.json")).json()
    assert not pages.PAGES & set(spec["paths"])


async def test_forms_post_under_a_proxy_prefix(app):
    transport = httpx.ASGITransport(app=app, root_path="/userkeep")
    async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
        shown = await c.get("/userkeep/reset-password", params={"token": "ukpr_x"})
    assert_page(shown, 200)
    assert '<form method="post" action="/userkeep/reset-password">' in shown.text


async def test_a_spent_rate_limit_is_a_page_with_retry_after(database_url):
    # One second into an hour: the requests share the rule's hour-long window.
    now = clock.now()
    clock.advance(
        now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, seconds=1) - now
    )
    limited = create_app(make_settings(database_url, rate_limits="on", rate_limit_code_ip="1/3600"))
    async with limited.router.lifespan_context(limited):
        transport = httpx.ASGITransport(app=limited, client=("198.51.100.77", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
            first = await c.post("/confirm-email-change", data=_form("ukec_unknown"))
            assert_page(first, 400)
            second = await c.post("/verify-email", data=_form("ukev_unknown"))
            # Showing a page is free: only presenting a token counts.
            assert (await c.get("/verify-email", params={"token": "ukev_x"})).status_code == 200
    assert_page(second, 429)
    assert int(second.headers["retry-after"]) > 3000
    assert "Too many attempts" in second.text


# ---- the tour: a real mail's link ------------------------------------------------------------


@pytest.fixture
async def box(
    app: FastAPI, database_url: str, smtp_server: Callable[..., SmtpServer]
) -> AsyncIterator[Postbox]:
    async with postbox(app, database_url, smtp_server()) as found:
        yield found


async def test_the_link_of_the_sign_up_mail_verifies(client, pg, box):
    email = (await signup(client))["user"]["email"]
    link = urlsplit((await box.next_to(email)).link)
    assert (link.scheme, link.netloc) == ("http", "127.0.0.1:8000")  # PUBLIC_URL: this service
    shown = await client.get(f"{link.path}?{link.query}")
    assert_page(shown, 200)
    (token,) = HIDDEN_TOKEN.findall(shown.text)
    done = await client.post(link.path, data=_form(token))
    assert_page(done, 200)
    assert await pg.fetchval("SELECT email_verified FROM users WHERE email = $1", email)
