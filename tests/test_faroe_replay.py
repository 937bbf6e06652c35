"""A signed Faroe request is served once: a replay of the same (timestamp, signature) inside the
300 s window is 401 with an empty body, on every node (the seen signatures live in the shared
rate-limit store: PostgreSQL, or Redis when REDIS_URL is set)."""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import httpx
import pytest

from app import clock
from app.faroe.client import encode_request, sign
from tests import admin_support
from tests.faroe_support import SECRET, app_with, check_user, parse_strict
from tests.redis_support import REDIS_PREFIX, REDIS_URL, clear_redis, redis_up

URL = "/v1/faroe/actions"
UNKNOWN_USER = "ausr_01h455vb4pex5vsknk084sn02q"


def signed_now(body: bytes) -> dict[str, str]:
    """Headers signing `body` at the app's clock (which tests move)."""
    return sign(SECRET, body, int(clock.now().timestamp()))


def get_user(user_id: str = UNKNOWN_USER) -> bytes:
    return encode_request("get_user", {"user_id": user_id})


async def create_user(client: httpx.AsyncClient, email: str) -> str:
    body = encode_request(
        "create_user",
        {
            "email_address": email,
            "password_hash": bytes(32),
            "password_hash_algorithm_id": "argon2id.3.65536.1.32",
            "password_salt": bytes(16),
        },
    )
    response = await client.post(URL, content=body, headers=signed_now(body))
    assert response.status_code == 200, response.content
    return check_user(parse_strict(response.content)["values"]).id


@pytest.fixture(params=["postgres", "redis"])
async def store_client(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose seen signatures are kept in PostgreSQL, or in Redis."""
    overrides = {}
    if request.param == "redis":
        if not redis_up():
            pytest.skip("no Redis on 127.0.0.1:6379")
        overrides["redis_url"] = REDIS_URL
        overrides["redis_prefix"] = REDIS_PREFIX
        await clear_redis()
    async with app_with(database_url, **overrides) as c:
        yield c
    if request.param == "redis":
        await clear_redis()


async def test_replayed_delete_user_does_not_delete_the_restored_user(
    client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    user_id = await create_user(client, "restored@example.com")
    delete = encode_request("delete_user", {"user_id": user_id})
    headers = signed_now(delete)
    response = await client.post(URL, content=delete, headers=headers)
    assert parse_strict(response.content)["ok"] is True
    app_id, _ = await admin_support.default_app(pg)
    key, _ = await admin_support.make_key(pg, app_id)
    restored = await client.post(
        f"/v1/admin/users/{user_id}/restore", headers=admin_support.auth(key)
    )
    assert restored.status_code == 200, restored.text

    replay = await client.post(URL, content=delete, headers=headers)

    assert (replay.status_code, replay.content) == (401, b"")
    assert await pg.fetchval("SELECT deleted_at FROM users WHERE id = $1", user_id) is None


async def test_same_signed_request_sent_20_times_at_once_is_served_once(
    store_client: httpx.AsyncClient,
) -> None:
    body = get_user()
    headers = signed_now(body)

    responses = await asyncio.gather(
        *(store_client.post(URL, content=body, headers=headers) for _ in range(20))
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * 19
    assert all(r.content == b"" for r in responses if r.status_code == 401)


async def test_two_different_requests_in_the_same_second_both_pass(
    client: httpx.AsyncClient,
) -> None:
    stamp = int(clock.now().timestamp())
    first, second = get_user(UNKNOWN_USER), get_user(UNKNOWN_USER[:-1] + "r")

    answers = [
        await client.post(URL, content=body, headers=sign(SECRET, body, stamp))
        for body in (first, second)
    ]

    assert [a.status_code for a in answers] == [200, 200]


async def test_replay_after_the_seen_signature_expired_is_still_stale(
    client: httpx.AsyncClient,
) -> None:
    body = get_user()
    headers = signed_now(body)
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    # Past the window and past any time the seen signature is kept: only staleness refuses it.
    clock.advance(timedelta(hours=1))

    replay = await client.post(URL, content=body, headers=headers)

    assert (replay.status_code, replay.content) == (401, b"")


async def test_replay_is_refused_with_rate_limits_off(database_url: str) -> None:
    body = get_user()
    async with app_with(database_url, rate_limits="off") as c:
        headers = signed_now(body)
        assert (await c.post(URL, content=body, headers=headers)).status_code == 200

        replay = await c.post(URL, content=body, headers=headers)

    assert (replay.status_code, replay.content) == (401, b"")


@pytest.mark.parametrize(
    "body",
    [get_user(), encode_request("get_user_by_email_address", {"email_address": "a@b.example"})],
    ids=["get_user", "get_user_by_email_address"],
)
async def test_a_read_records_its_signature_and_its_replay_is_refused(
    client: httpx.AsyncClient, pg: asyncpg.Connection, body: bytes
) -> None:
    # On PostgreSQL the guard runs inside the read's own statement: the read must still
    # leave the signature behind, and answer its replay 401.
    headers = signed_now(body)
    first = await client.post(URL, content=body, headers=headers)
    assert first.status_code == 200 and parse_strict(first.content)["ok"] is False  # not found

    replay = await client.post(URL, content=body, headers=headers)

    assert (replay.status_code, replay.content) == (401, b"")
    key = f"once:faroe:{headers['X-Faroe-Timestamp']}:{headers['X-Faroe-Signature']}"
    assert await pg.fetchval("SELECT count(*) FROM rate_limits WHERE key = $1", key) == 1


async def test_a_read_for_a_missing_faroe_app_still_uses_up_its_signature(
    database_url: str,
) -> None:
    body = get_user()
    async with app_with(database_url, faroe_app="no-such-app") as c:
        headers = signed_now(body)
        first = await c.post(URL, content=body, headers=headers)
        replay = await c.post(URL, content=body, headers=headers)
    assert (first.status_code, replay.status_code) == (503, 401)


async def test_a_change_is_refused_on_replay_before_it_touches_the_store(
    client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    user_id = await create_user(client, "counter@example.com")
    body = encode_request(
        "increment_user_sessions_counter", {"user_id": user_id, "user_sessions_counter": 0}
    )
    headers = signed_now(body)
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200

    replay = await client.post(URL, content=body, headers=headers)

    assert replay.status_code == 401
    assert await pg.fetchval("SELECT sessions_counter FROM users WHERE id = $1", user_id) == 1


async def test_unsigned_requests_have_no_replay_guard(database_url: str) -> None:
    # FAROE_AUTH=none: there is no signature to remember, so the same request is served again
    # (documented: that mode relies on a private network alone).
    body = get_user()
    async with app_with(database_url, faroe_secret=None, faroe_auth="none") as c:
        statuses = [(await c.post(URL, content=body)).status_code for _ in range(2)]
    assert statuses == [200, 200]


# ---- the nonce: identical requests from a real Faroe deployment --------------------------------


def signed_with_nonce(body: bytes, nonce: str) -> dict[str, str]:
    return sign(SECRET, body, int(clock.now().timestamp()), nonce=nonce)


async def test_identical_requests_with_their_own_nonces_are_all_served(client):
    """Two Faroe nodes checking one user's session in the same second send byte-identical
    bodies: with a nonce each, each is a request of its own."""
    body = get_user()
    answers = await asyncio.gather(
        *(
            client.post(URL, content=body, headers=signed_with_nonce(body, f"{n:032x}"))
            for n in range(5)
        )
    )
    assert [a.status_code for a in answers] == [200] * 5


async def test_a_replayed_nonce_is_refused(client):
    body = get_user()
    headers = signed_with_nonce(body, "a" * 32)
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    replay = await client.post(URL, content=body, headers=headers)
    assert (replay.status_code, replay.content) == (401, b"")


async def test_identical_requests_without_a_nonce_are_served_once(client):
    """The contract's plain form: the same body, signed in the same second, is the same
    signature — a replay."""
    body = get_user()
    second = int(clock.now().timestamp())  # both signed within this second
    first = await client.post(URL, content=body, headers=sign(SECRET, body, second))
    again = await client.post(URL, content=body, headers=sign(SECRET, body, second))
    assert (first.status_code, again.status_code) == (200, 401)


@pytest.mark.parametrize(
    "tamper",
    ["nonce not signed", "another nonce", "too short", "not url-safe"],
)
async def test_a_nonce_the_signature_does_not_cover_is_refused(client, tamper):
    body = get_user()
    headers = signed_with_nonce(body, "b" * 32)
    if tamper == "nonce not signed":
        headers = {**signed_now(body), "X-Faroe-Nonce": "b" * 32}
    elif tamper == "another nonce":
        headers["X-Faroe-Nonce"] = "c" * 32
    elif tamper == "too short":
        headers = signed_with_nonce(body, "d" * 8)
    else:
        headers = signed_with_nonce(body, "e" * 31 + "/")
    response = await client.post(URL, content=body, headers=headers)
    assert (response.status_code, response.content) == (401, b"")


async def test_the_python_client_signs_each_request_anew(client):
    from app.faroe.client import FaroeClient

    faroe = FaroeClient(client, SECRET)
    for _ in range(3):  # the same body three times in one second
        result = await faroe.invoke("get_user", {"user_id": UNKNOWN_USER})
        assert result["error_code"] == "user_not_found"
