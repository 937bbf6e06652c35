"""The OpenAPI as a manual that does not mislead: sign-in is one clear object whose schema and
server agree."""

from typing import Any

import jsonschema_rs
import pytest

from tests.helpers import PASSWORD


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    # The spec's components ride along so that `#/components/schemas/…` resolves.
    root = {**schema, "components": spec["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


async def test_signin_is_one_object_with_exactly_one_identifier(client):
    spec = (await client.get("/openapi.json")).json()
    schema = spec["components"]["schemas"]["SigninIn"]
    # Nothing ReDoc turns into alternatives (and merges into the object with allOf).
    assert not {"oneOf", "anyOf", "allOf", "if"} & set(schema)
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"email", "username", "password", "app_id", "env_id"}
    assert schema["required"] == ["password"]
    assert "exactly one of `email` or `username`" in schema["description"]


SIGNIN_BODIES = [
    {"email": "nobody@example.com"},
    {"username": "nobody"},
    {"email": "nobody@example.com", "username": "nobody"},
    {},
    {"email": None, "username": "nobody"},
    {"email": "nobody@example.com", "username": None},
    {"email": None, "username": None},
]


@pytest.mark.parametrize("identifiers", SIGNIN_BODIES)
async def test_the_signin_schema_and_the_server_agree(client, identifiers):
    body = {**identifiers, "password": PASSWORD}
    spec = (await client.get("/openapi.json")).json()
    allowed = validator(spec, {"$ref": "#/components/schemas/SigninIn"}).is_valid(body)
    response = await client.post("/v1/auth/signin", json=body)
    # An allowed body names an account that does not exist: 401, never 422.
    assert response.status_code == (401 if allowed else 422), (body, response.text)
    if not allowed:
        assert response.json()["error"] == "body: give exactly one of email or username"
