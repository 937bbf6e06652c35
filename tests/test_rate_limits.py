"""Rate limits through the HTTP API, on both shared stores (PostgreSQL and Redis).

The app here runs with the limits on and small numbers, so each rule is reached in a few calls.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app import clock
from app.faroe.client import encode_request, sign
from app.main import create_app
from app.security.client_ip import client_ip
from app.settings import Settings
from tests.admin_support import auth, default_app, make_admin
from tests.conftest import FAROE_SECRET, make_settings
from tests.helpers import PASSWORD, bearer, unique_email
from tests.redis_support import REDIS_PREFIX, REDIS_URL, clear_redis, redis_up

LIMITS = {
    "rate_limits": "on",
    "rate_limit_signin_ip": "6/60",
    "rate_limit_account_failures": "3/60,5/3600",
    "rate_limit_signup_ip": "3/60",
    "rate_limit_refresh_ip": "3/60",
    "rate_limit_admin_ip": "3/60",
    "rate_limit_faroe_ip": "3/60",
}

Client = Callable[..., httpx.AsyncClient]


@pytest.fixture(params=["postgres", "redis"])
async def limited_app(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[FastAPI]:
    overrides: dict[str, Any] = dict(LIMITS)
    if request.param == "redis":
        if not redis_up():
            pytest.skip("no Redis on 127.0.0.1:6379")
        overrides["redis_url"] = REDIS_URL
        overrides["redis_prefix"] = REDIS_PREFIX
        await clear_redis()
    application = create_app(make_settings(database_url, **overrides))
    async with application.router.lifespan_context(application):
        yield application
    if request.param == "redis":
        await clear_redis()


@pytest.fixture(autouse=True)
def at_the_start_of_an_hour() -> None:
    """Windows are fixed and aligned to the epoch: start each test one second into an hour, so
    the few seconds a test takes (and its clock.advance steps) never cross a boundary by chance."""
    now = clock.now()
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, seconds=1)
    clock.advance(next_hour - now)


@pytest.fixture
async def connect(limited_app: FastAPI) -> AsyncIterator[Client]:
    """client(ip) -> an HTTP client whose requests come from `ip`."""
    opened: list[httpx.AsyncClient] = []

    def make(ip: str = "203.0.113.10") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=limited_app, client=(ip, 5000))
        c = httpx.AsyncClient(transport=transport, base_url="http://userkeep.test")
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.aclose()


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["type"] == "rate_limited"
    assert response.json()["code"] == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 3600


async def _signup(c: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await c.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def _signin(c: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await c.post("/v1/auth/signin", json={"email": email, "password": password})


async def test_failed_signins_per_account_then_429_even_with_the_right_password(connect, pg):
    email = unique_email()
    await _signup(connect("198.51.100.1"), email)
    for n in range(3):
        # Each attempt from a different address: the account limit is not a per-IP one.
        response = await _signin(connect(f"198.51.100.{10 + n}"), email, "wrong-password-1")
        assert response.status_code == 401
    assert_limited(await _signin(connect("198.51.100.50"), email, PASSWORD))
    # Another account is untouched.
    other = unique_email()
    await _signup(connect("198.51.100.2"), other)
    assert (await _signin(connect("198.51.100.51"), other, PASSWORD)).status_code == 200
    # The window passes: the right password works again.
    clock.advance(timedelta(seconds=61))
    assert (await _signin(connect("198.51.100.52"), email, PASSWORD)).status_code == 200


async def test_concurrent_wrong_guesses_get_exactly_the_budget(connect):
    """Each guess is counted before its hash is checked: 40 at once against a budget of 3
    get three 401s, not one per guess that started before any failure was counted."""
    email = unique_email()
    await _signup(connect("198.51.100.1"), email)
    responses = await asyncio.gather(
        *(_signin(connect(f"192.0.2.{n}"), email, "wrong-pass-x") for n in range(40))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * 3 + [429] * 37


async def test_a_right_password_gives_its_count_back(connect):
    email = unique_email()
    await _signup(connect("198.51.100.1"), email)
    for n in range(2):
        assert (await _signin(connect(f"192.0.2.{n}"), email, "wrong-pass-x")).status_code == 401
    for n in range(4):
        assert (await _signin(connect(f"192.0.2.{n}"), email, PASSWORD)).status_code == 200
    # Two failures are still counted: one more is the third, the fourth is refused.
    assert (await _signin(connect("192.0.2.9"), email, "wrong-pass-x")).status_code == 401
    assert_limited(await _signin(connect("192.0.2.10"), email, PASSWORD))


async def test_the_hourly_account_limit_holds_across_burst_windows(connect):
    email = unique_email()
    await _signup(connect("198.51.100.1"), email)
    for n in range(3):
        assert (await _signin(connect(f"192.0.2.{n}"), email, "wrong-pass-x")).status_code == 401
    clock.advance(timedelta(seconds=61))
    for n in range(2):
        assert (await _signin(connect(f"192.0.2.{n}"), email, "wrong-pass-x")).status_code == 401
    clock.advance(timedelta(seconds=61))
    # A fresh burst window, but 5 failures this hour: still refused.
    assert_limited(await _signin(connect("192.0.2.99"), email, PASSWORD))


async def test_an_unknown_account_is_limited_exactly_like_a_real_one(connect):
    real, ghost = unique_email(), unique_email()
    await _signup(connect("198.51.100.1"), real)
    answers: dict[str, list[tuple[int, str]]] = {}
    for email in (real, ghost):
        seen = []
        for n in range(4):
            response = await _signin(connect(f"192.0.2.{n}"), email, "wrong-pass-x")
            seen.append((response.status_code, response.json()["type"]))
        answers[email] = seen
    assert answers[real] == answers[ghost]
    assert answers[real][-1] == (429, "rate_limited")


async def test_successful_signins_do_not_use_the_account_budget(connect):
    email = unique_email()
    await _signup(connect("198.51.100.1"), email)
    for n in range(5):
        assert (await _signin(connect(f"192.0.2.{n}"), email, PASSWORD)).status_code == 200


async def test_signin_per_ip(connect):
    c = connect("198.51.100.77")
    for n in range(6):
        # Different unknown accounts: only the per-IP rule can stop these.
        assert (await _signin(c, f"nobody{n}@example.com", "wrong-pass-x")).status_code == 401
    assert_limited(await _signin(c, "nobody-else@example.com", "wrong-pass-x"))
    # Another address still gets through.
    assert (
        await _signin(connect("198.51.100.78"), "x@example.com", "wrong-pass")
    ).status_code == 401


async def test_wrong_current_passwords_share_the_sign_in_budget(connect):
    email = unique_email()
    c = connect("198.51.100.1")
    token = (await _signup(c, email))["session_token"]
    body = {"current_password": "wrong-pass-x", "new_password": "another-fine-pass-9"}
    for _ in range(2):
        response = await c.post("/v1/auth/change-password", json=body, headers=bearer(token))
        assert response.status_code == 401
    assert (await _signin(connect("192.0.2.1"), email, "wrong-pass-x")).status_code == 401
    assert_limited(await _signin(connect("192.0.2.2"), email, PASSWORD))
    right = {"current_password": PASSWORD, "new_password": "another-fine-pass-9"}
    assert_limited(await c.post("/v1/auth/change-password", json=right, headers=bearer(token)))


async def test_signup_per_ip_and_the_refused_one_writes_nothing(connect, pg):
    c = connect("198.51.100.5")
    for _ in range(3):
        await _signup(c, unique_email())
    refused = unique_email()
    response = await c.post("/v1/auth/signup", json={"email": refused, "password": PASSWORD})
    assert_limited(response)
    assert await pg.fetchval("SELECT count(*) FROM users WHERE email = $1", refused) == 0
    await _signup(connect("198.51.100.6"), unique_email())


async def test_refresh_per_ip(connect):
    c = connect("198.51.100.8")
    tokens = await _signup(c, unique_email())
    refresh = tokens["refresh_token"]
    for _ in range(3):
        response = await c.post("/v1/auth/refresh", json={"refresh_token": refresh})
        assert response.status_code == 200
        refresh = response.json()["refresh_token"]
    assert_limited(await c.post("/v1/auth/refresh", json={"refresh_token": refresh}))


async def test_admin_routes_per_ip(connect, pg):
    token = await make_admin(pg, await default_app(pg))
    c = connect("198.51.100.9")
    for _ in range(3):
        assert (await c.get("/v1/admin/users", headers=auth(token))).status_code == 200
    assert_limited(await c.get("/v1/admin/users", headers=auth(token)))


async def test_faroe_route_per_ip(connect):
    c = connect("198.51.100.11")
    body = encode_request("get_user", {"user_id": "ausr_01h455vb4pex5vsknk084sn02q"})

    async def call(n: int) -> httpx.Response:
        return await c.post(
            "/v1/faroe/actions",
            content=body,
            # Signed at the app's clock, which this module moves to the start of an hour; a
            # second earlier each time, since a signature is served only once.
            headers=sign(FAROE_SECRET, body, int(clock.now().timestamp()) - n),
        )

    for n in range(3):
        assert (await call(n)).status_code == 200
    assert_limited(await call(3))


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(connect):
    c = connect("198.51.100.12")
    for n in range(3):
        headers = {"X-Forwarded-For": f"192.0.2.{n}"}
        body = {"email": unique_email(), "password": PASSWORD}
        assert (await c.post("/v1/auth/signup", json=body, headers=headers)).status_code == 201
    # Spoofing another address does not buy a fresh budget.
    body = {"email": unique_email(), "password": PASSWORD}
    spoofed = await c.post("/v1/auth/signup", json=body, headers={"X-Forwarded-For": "192.0.2.9"})
    assert_limited(spoofed)


@pytest.fixture
async def proxied_app(database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(database_url, **LIMITS, trusted_proxies="10.0.0.0/8")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_behind_a_trusted_proxy_each_client_has_its_own_budget(proxied_app, pg):
    transport = httpx.ASGITransport(app=proxied_app, client=("10.1.2.3", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
        for _ in range(3):
            body = {"email": unique_email(), "password": PASSWORD}
            headers = {"X-Forwarded-For": "192.0.2.77, 10.9.9.9"}
            response = await c.post("/v1/auth/signup", json=body, headers=headers)
            assert response.status_code == 201
        body = {"email": unique_email(), "password": PASSWORD}
        headers = {"X-Forwarded-For": "192.0.2.77, 10.9.9.9"}
        assert_limited(await c.post("/v1/auth/signup", json=body, headers=headers))
        # Another client behind the same proxy is not affected.
        email = unique_email()
        body = {"email": email, "password": PASSWORD}
        response = await c.post(
            "/v1/auth/signup", json=body, headers={"X-Forwarded-For": "192.0.2.78"}
        )
        assert response.status_code == 201
    # The audit log records the client, not the proxy.
    ip = await pg.fetchval(
        "SELECT a.ip FROM audit_events a JOIN users u ON u.id = a.target_user_id "
        "WHERE u.email = $1 AND a.action = 'user.signup'",
        email,
    )
    assert ip == "192.0.2.78"


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("10.0.0.1", "192.0.2.1", "192.0.2.1"),
        ("10.0.0.1", "192.0.2.1, 10.0.0.2", "192.0.2.1"),
        ("10.0.0.1", "6.6.6.6, 192.0.2.1", "192.0.2.1"),  # the left part is the client's say-so
        ("198.51.100.1", "192.0.2.1", "198.51.100.1"),  # untrusted peer: header ignored
        ("10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.1", "not-an-ip", "10.0.0.1"),
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),
        ("10.0.0.1", "2001:db8::1", "2001:db8::1"),
    ],
)
async def test_client_ip(peer: str, header: str | None, expected: str) -> None:
    trusted = Settings(_env_file=None, trusted_proxies="10.0.0.0/8").trusted_networks()
    assert client_ip(peer, header, trusted) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_limit_signin_ip", "ten/60"),
        ("rate_limit_signin_ip", "10/0"),
        ("rate_limit_signin_ip", "10"),
        ("rate_limit_account_failures", "10/60,x"),
        ("rate_limits", "maybe"),
        ("trusted_proxies", "10.0.0.0/33"),
    ],
)
async def test_bad_limit_settings_stop_the_start(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({field: value})


async def test_defaults_cap_failures_at_100_per_account_per_hour() -> None:
    settings = Settings(_env_file=None)
    assert settings.rate_limits == "on"
    assert "100/3600" in settings.rate_limit_account_failures.split(",")


async def test_redis_unreachable_is_503_not_unlimited(database_url: str) -> None:
    settings = make_settings(database_url, **LIMITS, redis_url="redis://127.0.0.1:1/0")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("198.51.100.3", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            body = {"email": unique_email(), "password": PASSWORD}
            response = await c.post("/v1/auth/signup", json=body)
    assert response.status_code == 503
    assert response.json()["type"] == "service_unavailable"
    assert "Retry-After" in response.headers
