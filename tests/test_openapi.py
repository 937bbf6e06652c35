"""The OpenAPI as a manual that does not mislead: examples match their schemas and read like
real answers; sign-in is one clear object whose schema and server agree.

Most tests read the spec of an app that never starts (no database).
"""

import re
from typing import Any

import jsonschema_rs
import pytest
from fastapi import FastAPI

from app.main import create_app
from tests.conftest import make_settings
from tests.helpers import PASSWORD

# How pydantic writes an instant in the user JSON: UTC as `Z`.
JSON_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture(scope="module")
def docs_app() -> FastAPI:
    # The spec needs no database: this app is never started.
    return create_app(make_settings("postgresql+asyncpg://docs.invalid/userkeep"))


@pytest.fixture(scope="module")
def spec(docs_app: FastAPI) -> dict[str, Any]:
    return docs_app.openapi()


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    # The spec's components ride along so that `#/components/schemas/…` resolves.
    root = {**schema, "components": spec["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def test_every_example_matches_its_schema(spec):
    checked = 0
    for name, schema in spec["components"]["schemas"].items():
        check = validator(spec, {"$ref": f"#/components/schemas/{name}"})
        for example in schema.get("examples", []):
            errors = [e.message for e in check.iter_errors(example)]
            assert not errors, (name, errors)
            checked += 1
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                check = validator(spec, parameter["schema"])
                for example in parameter["schema"].get("examples", []):
                    assert check.is_valid(example), (method, path, parameter["name"], example)
                    checked += 1
            for status, response in operation["responses"].items():
                for media in response.get("content", {}).values():
                    if "schema" not in media:
                        continue
                    check = validator(spec, media["schema"])
                    found = [e["value"] for e in media.get("examples", {}).values()]
                    found += [media["example"]] if "example" in media else []
                    for example in found:
                        errors = [e.message for e in check.iter_errors(example)]
                        assert not errors, (method, path, status, errors)
                        checked += 1
    assert checked > 40  # the loops found the examples at all


def test_success_examples_read_like_real_answers(spec):
    schemas = spec["components"]["schemas"]
    tokens = schemas["TokensOut"]["examples"][0]
    assert tokens["user"]["banned"] is False
    assert tokens["session_token"].startswith("ukst_")
    assert tokens["refresh_token"].startswith("ukrt_")
    assert tokens["refresh_expires_at"] > tokens["expires_at"]
    user = tokens["user"]
    assert (user["id"][:5], user["app_id"][:5], user["env_id"][:5]) == ("ausr_", "aapp_", "aenv_")
    for key in ("created_at", "updated_at", "password_changed_at"):
        assert JSON_INSTANT.fullmatch(user[key]), key
    key = schemas["ApiKeyCreatedOut"]["examples"][0]
    assert key["secret"].startswith(key["prefix"]) and key["secret"].endswith(key["last4"])


# ---- sign-in: one object ---------------------------------------------------------------------


def test_signin_is_one_object_with_exactly_one_identifier(spec):
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
