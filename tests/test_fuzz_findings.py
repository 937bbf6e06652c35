"""What `make fuzz` (Schemathesis, fuzz/) found, pinned: each was a 500, a wrong status or an
answer that did not match the OpenAPI."""

import pytest

from tests.admin_support import auth, default_app, make_admin, make_user
from tests.helpers import bearer, signup

RAW = {"content-type": "application/json"}
ENVS = "/v1/admin/apps/default/environments"


async def test_405_allows_every_method_of_the_path(client):
    # Starlette named only the first route's methods (GET), not PATCH and DELETE of /me.
    response = await client.put("/v1/auth/me")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PATCH, DELETE"


async def test_users_purge_is_not_a_user_id(client, pg):
    headers = auth(await make_admin(pg, await default_app(pg)))
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(method, "/v1/admin/users/purge", headers=headers)
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "POST"


async def test_webhook_event_types_is_not_a_webhook_id(client, pg):
    headers = auth(await make_admin(pg, await default_app(pg)))
    for method in ("PATCH", "DELETE"):
        response = await client.request(method, "/v1/admin/webhooks/event-types", headers=headers)
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "content",
    [
        b'{"email": "a@example.com", "password": "long enough pass", "name": "\\udc00"}',
        b'{"email": "a@example.com", "password": "long enough pass", "image": "https://\\ud800"}',
        b'{"email": "a@example.com", "password": "long enough pass", "metadata": {"\\ud800": ""}}',
        b'{"email": "a@example.com", "password": "long enough pass", "app_id": "x\\u0000"}',
    ],
    ids=["name-surrogate", "image-surrogate", "metadata-surrogate", "app-id-nul"],
)
async def test_text_postgres_cannot_hold_is_422_not_500(client, content):
    response = await client.post("/v1/auth/signup", content=content, headers=RAW)
    assert response.status_code == 422, response.text


async def test_signin_identifier_with_nul_is_422_not_500(client):
    content = b'{"email": "a\\u0000@example.com", "password": "whatever it is"}'
    response = await client.post("/v1/auth/signin", content=content, headers=RAW)
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["field"] == "email"


async def test_profile_metadata_with_surrogate_is_422_not_500(client):
    token = (await signup(client))["session_token"]
    response = await client.patch(
        "/v1/auth/me",
        content=b'{"metadata": {"k": "\\udfff"}}',
        headers={**RAW, **bearer(token)},
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (ENVS, {"slug": "qa", "name": "QA", "is_default": 0}, "is_default"),
        ("/v1/admin/users", {"email": "b@example.com", "email_verified": "yes"}, "email_verified"),
        ("BAN", {"expires_in": "3600"}, "expires_in"),
        ("BAN", {"expires_in": True}, "expires_in"),
        ("BAN", {"expires_at": 4102444800}, "expires_at"),
        ("BAN", {"expires_at": "4102444800"}, "expires_at"),
    ],
)  # fmt: skip
async def test_json_types_are_not_coerced(client, pg, path, body, field):
    # The OpenAPI says boolean, integer, RFC 3339 string: 0, "yes", "3600", true and Unix
    # seconds were accepted all the same.
    tenant = await default_app(pg)
    headers = auth(await make_admin(pg, tenant))
    if path == "BAN":
        path = f"/v1/admin/users/{await make_user(pg, tenant)}/ban"
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["field"] == field


async def test_created_after_must_be_rfc3339(client, pg):
    headers = auth(await make_admin(pg, await default_app(pg)))
    for value in ("0", "2030-01-01 00:00:00Z", "2030-01-01T00:00Z"):
        response = await client.get(
            "/v1/admin/users", params={"created_after": value}, headers=headers
        )
        assert response.status_code == 422, (value, response.text)
    ok = await client.get(
        "/v1/admin/users", params={"created_after": "2030-01-01T00:00:00.5+02:00"}, headers=headers
    )
    assert ok.status_code == 200, ok.text


async def test_expires_in_documents_its_bounds(client):
    spec = (await client.get("/openapi.json")).json()
    field = spec["components"]["schemas"]["BanIn"]["properties"]["expires_in"]["anyOf"][0]
    assert field["minimum"] == 1 and "ge" not in field  # pydantic printed "ge"/"le" before
