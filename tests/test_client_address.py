"""The client address rate limits count and audit rows keep. X-Forwarded-For goes through the
real server process (`python -m app serve`): only our own TRUSTED_PROXIES logic may believe it,
so a loopback caller can neither rotate its address to dodge the per-IP limits nor write text
of its choosing into the audit log. And only an IP address is ever stored as one."""

from collections.abc import Iterator

import httpx
import pytest

from app.main import create_app
from app.security.client_ip import client_ip
from app.settings import Settings
from tests.conftest import FAROE_SECRET, make_settings
from tests.helpers import PASSWORD, unique_email
from tests.process_support import free_port, process_env, serving

SIGNUP_LIMIT = 3


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[str]:
    """One server for the module, on the suite's database, stopped at module end."""
    env = process_env(
        DATABASE_URL=database_url,
        WORKERS="1",
        LOG_LEVEL="warning",
        MIGRATE_ON_START="false",
        FAROE_SECRET=FAROE_SECRET,
        RATE_LIMITS="on",
        # Windows are aligned to the epoch: a day-long one is not crossed during a test.
        RATE_LIMIT_SIGNUP_IP=f"{SIGNUP_LIMIT}/86400",
        REDIS_URL="",
    )
    with serving(env, free_port()) as base:
        yield base


def _signup(base: str, forwarded_for: str) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/auth/signup",
        json={"email": unique_email(), "password": PASSWORD},
        headers={"X-Forwarded-For": forwarded_for},
        timeout=10,
    )


def test_rotating_forwarded_for_does_not_buy_fresh_sign_up_budget(server: str) -> None:
    for n in range(SIGNUP_LIMIT):
        response = _signup(server, f"192.0.2.{n}")
        assert response.status_code == 201, response.text
    limited = _signup(server, "192.0.2.99")
    assert limited.status_code == 429, limited.text
    assert limited.json()["type"] == "rate_limited"


async def test_forwarded_for_text_is_not_stored_as_the_ip(server: str, pg) -> None:
    response = _signup(server, "<script>alert(1)</script>")
    assert response.status_code == 201, response.text
    user_id = response.json()["user"]["id"]
    audit_ip = await pg.fetchval(
        "SELECT ip FROM audit_events WHERE action = 'user.signup' AND target_user_id = $1", user_id
    )
    assert audit_ip == "127.0.0.1"
    assert await pg.fetchval("SELECT ip FROM sessions WHERE user_id = $1", user_id) == "127.0.0.1"


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "expected"),
    [
        ("<script>alert(1)</script>", None, "", None),
        ("testclient", "192.0.2.1", "", None),
        ("", None, "", None),
        (None, "192.0.2.1", "10.0.0.0/8", None),
        ("unix-socket", "192.0.2.1", "10.0.0.0/8", None),
        ("10.0.0.1", "<script>alert(1)</script>", "10.0.0.0/8", "10.0.0.1"),
        ("2001:DB8:0:0::1", None, "", "2001:db8::1"),
        ("10.0.0.1", " 2001:DB8::0:1 ", "10.0.0.0/8", "2001:db8::1"),
    ],
)
def test_client_ip_is_an_address_or_none(
    peer: str | None, header: str | None, trusted: str, expected: str | None
) -> None:
    networks = Settings(_env_file=None, trusted_proxies=trusted).trusted_networks()
    assert client_ip(peer, header, networks) == expected


async def test_a_peer_that_is_no_address_is_stored_as_none(database_url: str, pg) -> None:
    """A server in front of the app may name the peer with text that is no address (a unix
    socket path, a host name): audit and session rows then say "unknown", not the text."""
    application = create_app(make_settings(database_url))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("<script>x</script>", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
            body = {"email": unique_email(), "password": PASSWORD}
            response = await c.post("/v1/auth/signup", json=body)
    assert response.status_code == 201, response.text
    user_id = response.json()["user"]["id"]
    assert (
        await pg.fetchval("SELECT ip FROM audit_events WHERE target_user_id = $1", user_id) is None
    )
    assert await pg.fetchval("SELECT ip FROM sessions WHERE user_id = $1", user_id) is None
