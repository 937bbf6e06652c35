"""POST /v1/faroe/actions over HTTP: the §6.1 vectors byte for byte, the §3.1 accepted and
rejected requests, the signature, and the settings that switch the endpoint on and off."""

import logging
import time
from collections.abc import Callable
from datetime import timedelta

import asyncpg
import httpx
import pytest
from pydantic import ValidationError

from app import clock
from app.faroe.client import FaroeClient, FaroeHTTPError, Signer, sign
from app.ids import Prefix, new_id
from app.settings import Settings
from tests.conftest import make_settings
from tests.faroe_support import (
    SECRET,
    app_with,
    check_user,
    faroe_audit,
    normalize,
    parse_strict,
)

URL = "/v1/faroe/actions"
VECTOR_ID = "2mwe2e3ihz6ktm5puegeryhe"
HASH_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SALT_B64 = "AAECAwQFBgcICQoLDA0ODw=="

# §6.1 requests, exactly as the Faroe server emits them.
CREATE = (
    b'{"action":"create_user","arguments":{"email_address":"user@example.com","password_hash":'
    b'"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","password_hash_algorithm_id":'
    b'"argon2id.3.65536.1.32","password_salt":"AAECAwQFBgcICQoLDA0ODw=="}}'
)
GET = b'{"action":"get_user","arguments":{"user_id":"2mwe2e3ihz6ktm5puegeryhe"}}'
GET_BY_EMAIL = (
    b'{"action":"get_user_by_email_address","arguments":{"email_address":"user@example.com"}}'
)
UPDATE_EMAIL = (
    b'{"action":"update_user_email_address","arguments":{"user_id":"2mwe2e3ihz6ktm5puegeryhe",'
    b'"email_address":"new@example.com","user_email_address_counter":0}}'
)
UPDATE_PASSWORD = (
    b'{"action":"update_user_password_hash","arguments":{"user_id":"2mwe2e3ihz6ktm5puegeryhe",'
    b'"password_hash":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","password_hash_algorithm_id":'
    b'"argon2id.3.65536.1.32","password_salt":"AAECAwQFBgcICQoLDA0ODw==",'
    b'"user_password_hash_counter":3}}'
)
INCREMENT = (
    b'{"action":"increment_user_sessions_counter","arguments":{"user_id":'
    b'"2mwe2e3ihz6ktm5puegeryhe","user_sessions_counter":0}}'
)
DELETE = b'{"action":"delete_user","arguments":{"user_id":"2mwe2e3ihz6ktm5puegeryhe"}}'

# §6.1 responses (JSUS's exact bytes, with its example invocation id).
USER_RESULT = (
    b'{"ok":true,"action_invocation_id":"x2mhb6rjz8wvq3ntkfpa5ceo","values":{"user":{"id":'
    b'"2mwe2e3ihz6ktm5puegeryhe","email_address":"user@example.com","password_hash":'
    b'"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","password_hash_algorithm_id":'
    b'"argon2id.3.65536.1.32","password_salt":"AAECAwQFBgcICQoLDA0ODw==","disabled":false,'
    b'"display_name":"","email_address_counter":0,"password_hash_counter":0,'
    b'"disabled_counter":0,"sessions_counter":0}}}'
)
EMPTY_RESULT = b'{"ok":true,"action_invocation_id":"x2mhb6rjz8wvq3ntkfpa5ceo","values":{}}'
NOT_FOUND = (
    b'{"ok":false,"action_invocation_id":"x2mhb6rjz8wvq3ntkfpa5ceo","error_code":"user_not_found"}'
)


# Several tests send the same body more than once: each time with a fresh (timestamp,
# signature), as a Faroe server must, since the endpoint serves a signature once.
SIGNER = Signer(SECRET)


def signed(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    return SIGNER.headers(body) if timestamp is None else sign(SECRET, body, timestamp)


async def post(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post(URL, content=body, headers=signed(body))


async def ok(client: httpx.AsyncClient, body: bytes) -> bytes:
    """The answer to a signed request: HTTP 200, application/json, parsable by Faroe."""
    response = await post(client, body)
    assert response.status_code == 200, response.content
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"  # it may carry a password hash
    parse_strict(response.content)
    return normalize(response.content)


def with_id(data: bytes, user_id: str) -> bytes:
    return data.replace(VECTOR_ID.encode(), user_id.encode())


# ---- §6.1 vectors ---------------------------------------------------------------------------


async def test_vectors_byte_for_byte(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    # No user has the vector's id (it is not even one of ours): user_not_found, every action.
    for body in (GET, UPDATE_EMAIL, UPDATE_PASSWORD, INCREMENT, DELETE):
        assert await ok(client, body) == NOT_FOUND
    assert await ok(client, GET_BY_EMAIL) == NOT_FOUND

    created = await ok(client, CREATE)
    user_id = check_user(parse_strict(created)["values"]).id
    assert user_id.startswith("ausr_")
    assert created == with_id(USER_RESULT, user_id)
    assert await ok(client, with_id(GET, user_id)) == with_id(USER_RESULT, user_id)
    assert await ok(client, GET_BY_EMAIL) == with_id(USER_RESULT, user_id)

    assert await ok(client, with_id(UPDATE_EMAIL, user_id)) == EMPTY_RESULT
    assert await ok(client, with_id(UPDATE_EMAIL, user_id)) == NOT_FOUND  # counter is 1 now
    # The vector's password counter is 3; the user's is 0: a compare-and-swap miss, then a hit.
    assert await ok(client, with_id(UPDATE_PASSWORD, user_id)) == NOT_FOUND
    await pg.execute("UPDATE users SET password_hash_counter = 3 WHERE id = $1", user_id)
    assert await ok(client, with_id(UPDATE_PASSWORD, user_id)) == EMPTY_RESULT
    assert await ok(client, with_id(INCREMENT, user_id)) == EMPTY_RESULT
    assert await ok(client, with_id(INCREMENT, user_id)) == NOT_FOUND  # replay: counter moved

    expected = (
        with_id(USER_RESULT, user_id)
        .replace(b'"user@example.com"', b'"new@example.com"')
        .replace(b'"email_address_counter":0', b'"email_address_counter":1')
        .replace(b'"password_hash_counter":0', b'"password_hash_counter":4')
        .replace(b'"sessions_counter":0', b'"sessions_counter":1')
    )
    assert await ok(client, with_id(GET, user_id)) == expected
    assert await ok(client, GET_BY_EMAIL) == NOT_FOUND

    assert await ok(client, with_id(DELETE, user_id)) == EMPTY_RESULT
    for body in (GET, UPDATE_EMAIL, INCREMENT, DELETE):
        assert await ok(client, with_id(body, user_id)) == NOT_FOUND
    assert await faroe_audit(pg, user_id) == [
        "user.created",
        "user.updated",
        "user.password_changed",
        "session.revoked_all",
        "user.deleted",
    ]


async def test_invocation_ids_are_fresh_and_jsus_shaped(client: httpx.AsyncClient) -> None:
    ids = set()
    for _ in range(5):
        response = await post(client, GET)
        ids.add(parse_strict(response.content)["action_invocation_id"])
    assert len(ids) == 5


async def test_content_type_is_not_required(client: httpx.AsyncClient) -> None:
    # The official Go client sets no headers but ours; TIAUTH's sets application/json.
    for content_type in (None, "application/json", "text/plain", "application/octet-stream"):
        headers = signed(GET)
        if content_type:
            headers["Content-Type"] = content_type
        response = await client.post(URL, content=GET, headers=headers)
        assert normalize(response.content) == NOT_FOUND, content_type


# ---- §3.1: invalid requests are 400 with an empty body ------------------------------------------

INVALID = [
    b"not json",
    b"[]",
    b"null",
    b"{}",
    b"",
    b'{"action":1,"arguments":{}}',
    b'{"action":"get_user"}',
    b'{"action":"get_user","arguments":null}',
    b'{"action":"nope","arguments":{}}',
    b'{"action":"get_user","arguments":{}}',
    b'{"action":"get_user","arguments":{"user_id":5}}',
    b'{"action":"create_user","arguments":{"email_address":"a@b.c","password_hash":"AA",'
    b'"password_hash_algorithm_id":"x","password_salt":""}}',
    b'{"action":"increment_user_sessions_counter","arguments":{"user_id":"u",'
    b'"user_sessions_counter":1.5}}',
    b'{"action":"increment_user_sessions_counter","arguments":{"user_id":"u",'
    b'"user_sessions_counter":2147483648}}',
    b'{"action":"increment_user_sessions_counter","arguments":{"user_id":"u",'
    b'"user_sessions_counter":true}}',
    b'{"action":"get_user","arguments":[]}',
    b'{"action":"update_user_password_hash","arguments":{"user_id":"u","password_hash":"AB==",'
    b'"password_hash_algorithm_id":"x","password_salt":"","user_password_hash_counter":0}}',
    b'{"action":"get_user","arguments":{"user_id":null}}',
    b'{"action":"get_user","arguments":{"user_id":"u"},"x":NaN}',
    b'{"action":"get_user_by_email_address","arguments":{"email_address":["a"]}}',
    b'{"action":"create_user","arguments":{"email_address":"a@b.c","password_hash":"",'
    b'"password_hash_algorithm_id":"x","password_salt":"AAAA\\n"}}',
    b"[" * 100_00,
]


@pytest.mark.parametrize("body", INVALID, ids=range(len(INVALID)))
async def test_invalid_request_is_400_with_empty_body(
    client: httpx.AsyncClient, body: bytes
) -> None:
    response = await post(client, body)
    assert response.status_code == 400
    assert response.content == b""


async def test_accepted_like_jsus(client: httpx.AsyncClient, pg: asyncpg.Connection) -> None:
    created = await ok(client, CREATE)
    user_id = check_user(parse_strict(created)["values"]).id

    async def answer(template: str) -> bytes:
        return await ok(client, template.replace("ID", user_id).encode())

    # Counters: 1.0 and 1e0 are 1; -5 and -2147483648 are in range (and simply do not match).
    prefix = '{"action":"increment_user_sessions_counter","arguments":{"user_id":"ID",'
    assert await answer(prefix + '"user_sessions_counter":-5}}') == NOT_FOUND
    assert await answer(prefix + '"user_sessions_counter":-2147483648}}') == NOT_FOUND
    assert await answer(prefix + '"user_sessions_counter":0.0}}') == EMPTY_RESULT
    assert await answer(prefix + '"user_sessions_counter":1e0}}') == EMPTY_RESULT
    assert await answer(prefix + '"user_sessions_counter":2.0,"extra":[1,{"a":null}]}}') == (
        EMPTY_RESULT
    )
    # Duplicate keys: the last one wins, as in JSON.parse.
    user = await answer('{"action":"get_user","arguments":{"user_id":"u","user_id":"ID"}}')
    assert check_user(parse_strict(user)["values"]).sessions_counter == 3
    # Extra top-level members are ignored; a BOM is dropped as Request.text() does.
    assert await answer('{"x":1,"action":"get_user","arguments":{"user_id":"ID"},"y":2}') == user
    assert await ok(client, b"\xef\xbb\xbf" + with_id(GET, user_id)) == user
    # OSLO accepts padding inside the string ("AA==AAAA" = 00 00 00 00) and an empty salt.
    created = await ok(
        client,
        b'{"action":"create_user","arguments":{"email_address":"pad@example.com",'
        b'"password_hash":"AA==AAAA","password_hash_algorithm_id":"x","password_salt":""}}',
    )
    padded = check_user(parse_strict(created)["values"])
    assert (padded.password_hash, padded.password_hash_algorithm_id) == (b"\0\0\0\0", "x")
    assert padded.password_salt == b""
    assert b'"password_hash":"AAAAAA=="' in created


# ---- the signature ------------------------------------------------------------------------------


async def test_signed_request_is_served(client: httpx.AsyncClient) -> None:
    assert normalize((await post(client, GET)).content) == NOT_FOUND


BAD_HEADERS: dict[str, Callable[[str, str], dict[str, str]]] = {
    "none": lambda ts, sig: {},
    "no signature": lambda ts, sig: {"X-Faroe-Timestamp": ts},
    "no timestamp": lambda ts, sig: {"X-Faroe-Signature": sig},
    "zero mac": lambda ts, sig: {"X-Faroe-Timestamp": ts, "X-Faroe-Signature": "v1=" + "0" * 64},
    "upper-case hex": lambda ts, sig: {
        "X-Faroe-Timestamp": ts,
        "X-Faroe-Signature": "v1=" + sig[3:].upper(),
    },
    "no version": lambda ts, sig: {"X-Faroe-Timestamp": ts, "X-Faroe-Signature": sig[3:]},
    "other version": lambda ts, sig: {"X-Faroe-Timestamp": ts, "X-Faroe-Signature": "v2" + sig[2:]},
    "truncated": lambda ts, sig: {"X-Faroe-Timestamp": ts, "X-Faroe-Signature": sig[:-1]},
    "extended": lambda ts, sig: {"X-Faroe-Timestamp": ts, "X-Faroe-Signature": sig + "0"},
    "listed twice": lambda ts, sig: {"X-Faroe-Timestamp": ts, "X-Faroe-Signature": f"{sig},{sig}"},
    "non-ascii": lambda ts, sig: {"X-Faroe-Timestamp": ts, "X-Faroe-Signature": "v1=\u00e9"},
    "signed timestamp": lambda ts, sig: {"X-Faroe-Timestamp": "+" + ts, "X-Faroe-Signature": sig},
    "fractional": lambda ts, sig: {"X-Faroe-Timestamp": ts + ".0", "X-Faroe-Signature": sig},
    "empty timestamp": lambda ts, sig: {"X-Faroe-Timestamp": "", "X-Faroe-Signature": sig},
    "letters": lambda ts, sig: {"X-Faroe-Timestamp": "abc", "X-Faroe-Signature": sig},
    "huge": lambda ts, sig: {"X-Faroe-Timestamp": "9" * 40, "X-Faroe-Signature": sig},
    "milliseconds": lambda ts, sig: {"X-Faroe-Timestamp": ts + "000", "X-Faroe-Signature": sig},
}


@pytest.mark.parametrize("case", BAD_HEADERS)
async def test_bad_signature_is_401_with_empty_body(client: httpx.AsyncClient, case: str) -> None:
    good = signed(GET)
    headers = BAD_HEADERS[case](good["X-Faroe-Timestamp"], good["X-Faroe-Signature"])
    encoded = {name.encode(): value.encode("latin-1") for name, value in headers.items()}
    response = await client.post(URL, content=GET, headers=encoded)
    assert response.status_code == 401
    assert response.content == b""


async def test_wrong_secret_and_altered_body_are_401(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, content=GET, headers=sign("another-secret", GET))
    assert (response.status_code, response.content) == (401, b"")
    # Signed, then changed on the way: one byte more, one byte less, one byte different.
    headers = signed(GET)
    for altered in (GET + b" ", GET[:-1], GET.replace(b"get_user", b"get_usEr")):
        response = await client.post(URL, content=altered, headers=headers)
        assert (response.status_code, response.content) == (401, b"")


async def test_timestamp_window_is_300_seconds(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    for skew in (-290, 0, 290):
        response = await client.post(URL, content=GET, headers=signed(GET, now + skew))
        assert response.status_code == 200, skew
    for skew in (-310, 310, -86400, -now):
        response = await client.post(URL, content=GET, headers=signed(GET, now + skew))
        assert (response.status_code, response.content) == (401, b""), skew


async def test_server_clock_decides_staleness(client: httpx.AsyncClient) -> None:
    faroe = FaroeClient(client, SECRET)
    assert normalize(await faroe.send(GET)) == NOT_FOUND
    clock.advance(timedelta(seconds=301))  # the request is signed with the real time
    with pytest.raises(FaroeHTTPError) as caught:
        await faroe.send(GET_BY_EMAIL)
    assert (caught.value.status_code, caught.value.body) == (401, b"")


async def test_refused_requests_touch_nothing(
    client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    response = await client.post(URL, content=CREATE, headers=sign("wrong", CREATE))
    assert response.status_code == 401
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


# ---- settings: no secret, FAROE_AUTH=none, FAROE_APP ------------------------------------------


async def test_no_secret_is_503_and_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from app.api import faroe as faroe_api

    faroe_api._warned.discard("no-secret")
    caplog.set_level(logging.ERROR, logger="userkeep.faroe")
    async with app_with(database_url, faroe_secret=None) as c:
        for _ in range(2):
            response = await c.post(URL, content=GET, headers=signed(GET))
            assert (response.status_code, response.content) == (503, b"")
    messages = [r.getMessage() for r in caplog.records if r.name == "userkeep.faroe"]
    assert len(messages) == 1  # once per process
    assert "FAROE_SECRET is not set" in messages[0]
    async with app_with(database_url, faroe_secret="") as c:
        assert (await c.post(URL, content=GET)).status_code == 503


async def test_auth_none_serves_unsigned(database_url: str) -> None:
    async with app_with(database_url, faroe_secret=None, faroe_auth="none") as c:
        response = await c.post(URL, content=GET)
        assert normalize(response.content) == NOT_FOUND
        assert normalize(await FaroeClient(c, None).send(GET)) == NOT_FOUND
        # A signature, even a wrong one, is simply not looked at.
        response = await c.post(URL, content=GET, headers=sign("whatever", GET, 0))
        assert normalize(response.content) == NOT_FOUND


@pytest.mark.parametrize(
    "secret", ["short", "x" * 31, "\u00e9" * 15 + "x"], ids=["short", "31-ascii", "31-bytes"]
)
def test_secret_shorter_than_32_bytes_stops_the_start(secret: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(_env_file=None, faroe_secret=secret)


@pytest.mark.parametrize("secret", ["x" * 32, "\u00e9" * 16], ids=["32-ascii", "32-bytes"])
def test_secret_of_32_bytes_is_accepted(secret: str) -> None:
    settings = Settings(_env_file=None, faroe_secret=secret)
    assert settings.faroe_secret is not None
    assert settings.faroe_secret.get_secret_value() == secret


def test_empty_secret_means_unset() -> None:
    assert Settings(_env_file=None, faroe_secret="").faroe_secret is None


@pytest.mark.parametrize("value", ["None", "off", "", "HMAC", "false"])
def test_auth_takes_only_hmac_or_none(database_url: str, value: str) -> None:
    with pytest.raises(ValidationError):
        make_settings(database_url, faroe_auth=value)


async def test_faroe_app_binds_the_store(database_url: str, pg: asyncpg.Connection) -> None:
    from tests.admin_support import make_app

    # Three apps on one store and one secret, like three nodes that one Faroe server signs for:
    # one signer, so no signature is used twice.
    async def send(c: httpx.AsyncClient, body: bytes) -> bytes:
        response = await c.post(URL, content=body, headers=signed(body))
        assert response.status_code == 200, response.content
        return response.content

    acme_app, acme_env = await make_app(pg, "acme")
    async with app_with(database_url, faroe_app="acme") as c:
        user = check_user(parse_strict(await send(c, CREATE))["values"])
    row = await pg.fetchrow("SELECT app_id, env_id FROM users WHERE id = $1", user.id)
    assert (row["app_id"], row["env_id"]) == (acme_app, acme_env)
    # The default app's Faroe endpoint does not see acme's user, and may reuse the e-mail.
    async with app_with(database_url) as c:
        assert normalize(await send(c, with_id(GET, user.id))) == NOT_FOUND
        assert normalize(await send(c, GET_BY_EMAIL)) == NOT_FOUND
        assert parse_strict(await send(c, CREATE))["ok"] is True
    # Bound by TypeID works as well as by slug.
    async with app_with(database_url, faroe_app=acme_app) as c:
        answer = await send(c, with_id(GET, user.id))
        assert check_user(parse_strict(answer)["values"]).id == user.id


async def test_unknown_faroe_app_is_503(database_url: str, pg: asyncpg.Connection) -> None:
    async with app_with(database_url, faroe_app="no-such-app") as c:
        response = await c.post(URL, content=CREATE, headers=signed(CREATE))
        # The reads (one statement outside any transaction) tell a missing app the same way,
        # even for an id that could never be found.
        reads = [
            await c.post(URL, content=body, headers=signed(body))
            for body in (with_id(GET, new_id(Prefix.USER)), with_id(GET, "nope"), GET_BY_EMAIL)
        ]
    assert (response.status_code, response.content) == (503, b"")
    assert [(r.status_code, r.content) for r in reads] == [(503, b"")] * 3
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"action":"get_user","arguments":{"user_id":"' + b"a" * 70_000 + b'"}}'
    assert (await post(client, body)).status_code == 413


# ---- OpenAPI -----------------------------------------------------------------------------------


async def test_openapi_describes_the_endpoint(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"][URL]["post"]
    assert operation["tags"] == ["faroe"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"X-Faroe-Timestamp", "X-Faroe-Signature", "X-Faroe-Nonce"}
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["action", "arguments"]
    assert set(operation["responses"]) >= {"200", "400", "401", "503"}
    assert any(tag["name"] == "faroe" for tag in spec["tags"])
