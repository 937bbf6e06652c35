"""The error envelope on every kind of non-2xx answer, and the OpenAPI manual."""

import httpx
import pytest

from app.main import create_app
from tests.admin_support import auth, default_app, make_admin
from tests.conftest import make_settings
from tests.helpers import PASSWORD, bearer, signup


def assert_envelope(response, status, type_):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and body["type"] == type_
    assert isinstance(body["error"], str) and body["error"]


async def test_unknown_route_is_404_envelope(client):
    assert_envelope(await client.get("/v1/nothing-here"), 404, "not_found")


async def test_wrong_method_is_405_envelope(client):
    response = await client.put("/v1/auth/signup", json={})
    assert_envelope(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


async def test_oversized_body_is_413(client, pg):
    big = {"email": "big@example.com", "password": PASSWORD, "name": "x" * 70_000}
    assert_envelope(await client.post("/v1/auth/signup", json=big), 413, "payload_too_large")
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


async def test_oversized_chunked_body_is_413(client, pg):
    """No Content-Length: the stream is counted as it arrives, and cut off past the cap."""
    sent = 0

    async def chunks():
        nonlocal sent
        for _ in range(200):
            sent += 1
            yield b"x" * 4096

    response = await client.post(
        "/v1/auth/signup", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_envelope(response, 413, "payload_too_large")
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


async def test_oversized_body_on_a_route_without_a_body_is_413(client):
    data = await signup(client)
    response = await client.post(
        "/v1/auth/signout",
        content=b"x" * 70_000,
        headers={**bearer(data["session_token"]), "content-type": "application/json"},
    )
    assert_envelope(response, 413, "payload_too_large")
    # Refused before the route ran: the session is still alive.
    me = await client.get("/v1/auth/me", headers=bearer(data["session_token"]))
    assert me.status_code == 200


JSON = "application/json"
VALID = b'{"email": "ok@example.com", "password": "quiet-lantern-742"}'

# (body, Content-Type, expected status, expected type). 400: not JSON text at all; 415: not
# declared as JSON; 422: JSON, but not the object the route takes.
BAD_BODIES = {
    "malformed": (b"{not json", JSON, 400, "bad_request"),
    "truncated": (VALID[:-1], JSON, 400, "bad_request"),
    "trailing-garbage": (VALID + b" x", JSON, 400, "bad_request"),
    "plain-text": (b"hello", JSON, 400, "bad_request"),
    "utf16-bom-only": (b"\xff\xfe", JSON, 400, "bad_request"),
    "bad-utf8-in-string": (
        b'{"email": "\xff\xfe@example.com", "password": "quiet-lantern-742"}',
        JSON,
        400,
        "bad_request",
    ),
    "overlong-utf8": (b'{"email": "\xc0\xaf@example.com"}', JSON, 400, "bad_request"),
    "huge-number": (b'{"email": ' + b"9" * 5000 + b"}", JSON, 400, "bad_request"),
    "nan": (b'{"email": NaN, "password": "quiet-lantern-742"}', JSON, 422, "validation_error"),
    "infinity": (
        b'{"email": "inf@example.com", "password": Infinity}',
        JSON,
        422,
        "validation_error",
    ),
    "minus-infinity-in-metadata": (
        b'{"email": "inf@example.com", "password": "quiet-lantern-742", '
        b'"metadata": {"a": -Infinity}}',
        JSON,
        422,
        "validation_error",
    ),
    "array": (b"[1, 2]", JSON, 422, "validation_error"),
    "array-of-the-object": (b"[" + VALID + b"]", JSON, 422, "validation_error"),
    "string": (b'"' + VALID.replace(b'"', b'\\"') + b'"', JSON, 422, "validation_error"),
    "null": (b"null", JSON, 422, "validation_error"),
    "number": (b"42", JSON, 422, "validation_error"),
    "empty": (b"", JSON, 422, "validation_error"),
    "empty-without-type": (b"", None, 422, "validation_error"),
    "text-plain": (VALID, "text/plain", 415, "unsupported_media_type"),
    "form": (
        b"email=form%40example.com&password=quiet-lantern-742",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
    ),
    "multipart": (
        b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\nm@example.com\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
        415,
        "unsupported_media_type",
    ),
    "no-content-type": (VALID, None, 415, "unsupported_media_type"),
}


@pytest.mark.parametrize("path", ["/v1/auth/signup", "/v1/auth/signin"])
@pytest.mark.parametrize(
    ("content", "content_type", "status", "type_"), BAD_BODIES.values(), ids=BAD_BODIES.keys()
)
async def test_bad_bodies_are_4xx_envelopes(client, pg, path, content, content_type, status, type_):
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post(path, content=content, headers=headers)
    assert_envelope(response, status, type_)
    assert set(response.json()) <= {"error", "code", "type", "details"}
    if status == 400:
        assert response.json()["error"].startswith("request body is not")
    assert await pg.fetchval("SELECT count(*) FROM users") == 0


async def test_bad_bodies_on_an_authenticated_patch(client):
    data = await signup(client)
    headers = bearer(data["session_token"])
    for content, content_type, status, type_ in [
        (b'{"name": ', JSON, 400, "bad_request"),
        (b'{"name": NaN}', JSON, 422, "validation_error"),
        (b'["name"]', JSON, 422, "validation_error"),
        (b'{"name": "Ada"}', "text/plain", 415, "unsupported_media_type"),
    ]:
        response = await client.patch(
            "/v1/auth/me", content=content, headers={**headers, "content-type": content_type}
        )
        assert_envelope(response, status, type_)
    me = await client.get("/v1/auth/me", headers=headers)
    assert me.json()["name"] is None


async def test_nan_and_infinity_where_a_number_is_expected_are_422(client, pg):
    """The only numbers the API takes (a ban's expires_in): NaN and ±Infinity are refused."""
    data = await signup(client)
    tenant = (data["user"]["app_id"], data["user"]["env_id"])
    token = await make_admin(pg, tenant, email="root@example.com")
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        response = await client.post(
            f"/v1/admin/users/{data['user']['id']}/ban",
            content=b'{"expires_in": ' + literal + b"}",
            headers={**auth(token), "content-type": JSON},
        )
        assert_envelope(response, 422, "validation_error")
        assert response.json()["details"][0]["field"] == "expires_in"
    assert await pg.fetchval("SELECT banned FROM users WHERE id = $1", data["user"]["id"]) is False


def _nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return b'{"email": ' + open_ * depth + close * depth + b', "password": "x"}'


@pytest.mark.parametrize(
    "content",
    [
        _nested(30_000),  # deeper than the parser recurses, still under MAX_BODY_BYTES
        _nested(30_000)[: 10 + 30_000],  # only the opening brackets
        b'{"a": ' * 10_000 + b"1" + b"}" * 10_000,
        _nested(900),  # parsed (just), then refused by validation
    ],
    ids=["arrays", "unclosed", "objects", "just-parsable"],
)
async def test_deeply_nested_body_is_4xx(client, content):
    response = await client.post("/v1/auth/signup", content=content, headers={"content-type": JSON})
    assert 400 <= response.status_code < 500
    assert response.json()["code"] == response.status_code and response.json()["type"]


async def test_100000_levels_of_nesting(client, database_url):
    """Over the default cap, 413 before any parsing; with a cap that lets it through, the
    parser's RecursionError is a 400, not a 500."""
    content = b"[" * 100_000 + b"]" * 100_000
    response = await client.post("/v1/auth/signup", content=content, headers={"content-type": JSON})
    assert_envelope(response, 413, "payload_too_large")

    roomy = create_app(make_settings(database_url, max_body_bytes=1 << 20))
    async with roomy.router.lifespan_context(roomy):
        transport = httpx.ASGITransport(app=roomy, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for body in (content, b"[" * 100_000, b'{"a":' * 100_000):
                response = await c.post(
                    "/v1/auth/signup", content=body, headers={"content-type": JSON}
                )
                assert_envelope(response, 400, "bad_request")
                assert (
                    response.json()["error"] == "request body is not valid JSON: nested too deeply"
                )


async def test_unhandled_error_is_500_without_internals(app, client, monkeypatch):
    from app.services import auth

    async def boom(*args, **kwargs):
        raise RuntimeError("SELECT secret FROM internals")

    monkeypatch.setattr(auth, "list_sessions", boom)
    data = await signup(client)
    # Starlette re-raises after answering (for servers' logs); a real client only sees the 500.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as plain:
        response = await plain.get("/v1/auth/sessions", headers=bearer(data["session_token"]))
    assert_envelope(response, 500, "internal_error")
    assert "SELECT" not in response.text and "Traceback" not in response.text


async def test_request_id_is_echoed(client):
    response = await client.get("/v1/health", headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    generated = await client.get("/v1/health")
    assert len(generated.headers["x-request-id"]) == 16


async def test_health_and_ready(client):
    assert (await client.get("/v1/health")).json() == {"status": "ok"}
    ready = await client.get("/v1/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_openapi_is_a_usable_manual(client):
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    paths = spec["paths"]
    for path, method in [
        ("/v1/auth/signup", "post"),
        ("/v1/auth/signin", "post"),
        ("/v1/auth/refresh", "post"),
        ("/v1/auth/signout", "post"),
        ("/v1/auth/me", "get"),
        ("/v1/auth/me", "patch"),
        ("/v1/auth/me", "delete"),
        ("/v1/auth/me/export", "get"),
        ("/v1/auth/change-password", "post"),
        ("/v1/auth/sessions", "get"),
        ("/v1/auth/sessions/{session_id}", "delete"),
    ]:
        operation = paths[path][method]
        assert operation["tags"] == ["auth"]
        assert operation["description"] or operation["summary"]
        assert "200" in operation["responses"] or "201" in operation["responses"]
    me = paths["/v1/auth/me"]["get"]
    assert me["security"] == [{"HTTPBearer": []}]
    signup_body = paths["/v1/auth/signup"]["post"]["requestBody"]["content"]["application/json"]
    schema_ref = signup_body["schema"]["$ref"].rsplit("/", 1)[1]
    assert spec["components"]["schemas"][schema_ref]["examples"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_validation_messages_carry_no_pydantic_prefix(client):
    """A validator's ValueError reads "email: is not a valid e-mail address (…)", not
    "email: Value error, is not …"; pydantic's own messages are kept as they are."""
    response = await client.post(
        "/v1/auth/signup",
        json={"email": "not-an-email", "password": PASSWORD, "username": "ab"},
    )
    assert_envelope(response, 422, "validation_error")
    body = response.json()
    assert body["error"].startswith("email: is not a valid e-mail address")
    messages = {d["field"]: d["message"] for d in body["details"]}
    assert messages["email"].startswith("is not a valid e-mail address")
    assert messages["username"] == "must be 3-32 characters of letters, digits, '_', '.' or '-'"
    assert "Value error" not in response.text
    missing = await client.post("/v1/auth/signup", json={"email": "a@example.com"})
    assert {"field": "password", "message": "Field required"} in missing.json()["details"]
    both = await client.post(
        "/v1/auth/signin", json={"email": "a@example.com", "username": "a", "password": "x"}
    )
    assert both.json()["error"] == "body: give exactly one of email or username"


async def test_ban_expires_reads_the_same_in_the_403_as_in_the_user(client, pg):
    """pydantic's JSON form, `Z` for UTC, in both: a client compares them as strings."""
    root = auth(await make_admin(pg, await default_app(pg)))
    user = await signup(client)
    banned = await client.post(
        f"/v1/admin/users/{user['user']['id']}/ban", json={"expires_in": 3600}, headers=root
    )
    assert banned.status_code == 200, banned.text
    ban_expires = banned.json()["ban_expires"]
    assert ban_expires.endswith("Z") and "+00:00" not in ban_expires
    refused = await client.post(
        "/v1/auth/signin", json={"email": user["user"]["email"], "password": PASSWORD}
    )
    assert_envelope(refused, 403, "user_banned")
    assert refused.json()["ban_expires"] == ban_expires
    shown = await client.get(f"/v1/admin/users/{user['user']['id']}", headers=root)
    assert shown.json()["ban_expires"] == ban_expires
