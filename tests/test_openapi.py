"""The OpenAPI as a manual that does not mislead: every route documents the errors it can
return and no other, each with an example envelope of the right status and type; examples match
their schemas; operation ids and summaries are readable; sign-in is one clear object.

Most tests read the spec of an app that never starts (no database). The Faroe endpoint answers
with Faroe's own bytes, not the envelope (app/api/faroe.py), and is left out of the envelope
rules.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app import clock
from app.api import (
    admin,
    admin_impersonation,
    admin_import,
    admin_stats,
    admin_webhooks,
    auth_email,
    auth_mfa,
    deps,
    health,
    tokens,
)
from app.api import auth as auth_api
from app.main import create_app
from tests.admin_support import auth, default_app, make_admin, make_key, make_user
from tests.conftest import make_settings
from tests.helpers import PASSWORD, bearer, signup, unique_email

# DESIGN.md "Error envelope": the types each status uses (415 is the app's answer to a body
# that is not JSON, which DESIGN.md does not list).
TYPES_OF_STATUS = {
    400: {"bad_request", "invalid_code"},
    401: {"authentication_required", "invalid_credentials", "session_expired", "mfa_required"},
    403: {"user_banned", "forbidden", "email_not_verified"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    409: {"email_taken", "username_taken", "conflict"},
    413: {"payload_too_large"},
    415: {"unsupported_media_type"},
    422: {"validation_error"},
    429: {"rate_limited"},
    500: {"internal_error"},
    503: {"service_unavailable"},
}
ENVELOPE_KEYS = {"error", "code", "type", "details", "ban_expires", "mfa_token", "methods"}
# How pydantic writes an instant in the user JSON: UTC as `Z`.
JSON_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
# Routes that check a credential sent in the body instead of a bearer token.
SIGNS_IN = {"auth.signin", "auth.refresh", "auth.mfa.challenge"}
# Parameters and fields that name an app or environment, looked up (404 when unknown).
TENANT_REFS = {"app_id", "env_id", "x-app-id", "x-env-id"}
WRITES = {"post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def docs_app() -> FastAPI:
    # The spec needs no database: this app is never started.
    return create_app(make_settings("postgresql+asyncpg://docs.invalid/userkeep"))


@pytest.fixture(scope="module")
def spec(docs_app: FastAPI) -> dict[str, Any]:
    return docs_app.openapi()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) of every envelope-answering operation."""
    for path, item in spec["paths"].items():
        if path.startswith("/v1/faroe/"):
            continue
        for method, operation in item.items():
            yield path, method, operation


def error_responses(operation: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    for status, response in operation["responses"].items():
        if int(status) >= 400:
            yield int(status), response


def examples(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["value"] for e in response["content"]["application/json"]["examples"].values()]


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    # The spec's components ride along so that `#/components/schemas/…` resolves.
    root = {**schema, "components": spec["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


# ---- what each route can return, read from the route itself ---------------------------------


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _is_rate_limit(call: Callable[..., Any]) -> bool:
    return getattr(call, "__qualname__", "") == "rate_limit.<locals>.per_ip_limit"


@dataclass(frozen=True)
class Facts:
    operation_id: str
    method: str
    body: bool
    params: set[str]
    path_params: set[str]
    body_fields: set[str]
    authenticated: bool
    rate_limited: bool
    touches_db: bool
    hashes: bool

    @property
    def checks_credentials(self) -> bool:
        return self.authenticated or self.operation_id in SIGNS_IN

    @property
    def looks_up(self) -> bool:
        return bool(self.path_params) or bool((self.params | self.body_fields) & TENANT_REFS)


def facts(route: APIRoute, operation: dict[str, Any], spec: dict[str, Any]) -> Facts:
    calls = set(_calls(route.dependant))
    params = operation.get("parameters", [])
    body_fields: set[str] = set()
    if "requestBody" in operation:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        body_fields |= set(schema.get("properties", {}))  # a schema written out in place
        refs = [schema, *schema.get("anyOf", [])]
        for ref in (r["$ref"] for r in refs if "$ref" in r):
            body_fields |= set(spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"])
    return Facts(
        operation_id=operation["operationId"],
        method=next(m.lower() for m in route.methods or ()),
        # FastAPI's own body parameter, or a body the route reads itself (openapi_extra).
        body=route.body_field is not None or "requestBody" in operation,
        params={p["name"].lower() for p in params},
        path_params={p["name"] for p in params if p["in"] == "path"},
        body_fields=body_fields,
        authenticated=bool(
            calls
            & {
                deps.get_principal,
                deps.get_own_principal,
                deps.get_optional_principal,
                admin.get_admin,
                tokens.get_introspector_key,
            }
        ),
        # Per-account rules (deps.Limits) need Rules; a per-IP rule is deps.rate_limit's.
        rate_limited=deps.get_rules in calls or any(_is_rate_limit(call) for call in calls),
        touches_db=bool(
            calls
            & {
                deps.get_db,
                deps.get_lookups,
                deps.get_job_batcher,
                deps.get_principal,
                deps.get_own_principal,
                deps.get_optional_principal,
                admin.get_admin,
                tokens.get_introspector_key,
                tokens.get_key_ring,
            }
        ),
        hashes=bool(calls & {deps.get_hasher, deps.hash_admission}),
    )


# The routers the app includes (app/main.py), but the Faroe one.
ROUTERS = (
    auth_api.router,
    auth_email.router,
    tokens.router,
    auth_mfa.router,
    admin.router,
    admin_import.router,
    admin_impersonation.router,
    admin_stats.router,
    admin_webhooks.router,
    health.router,
)


def api_routes() -> Iterator[APIRoute]:
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                yield route


def routes(spec: dict[str, Any]) -> Iterator[tuple[Facts, dict[str, Any]]]:
    for route in api_routes():
        for method in route.methods or ():
            operation = spec["paths"][route.path][method.lower()]
            yield facts(route, operation, spec), operation


# ---- every error documented is an envelope of its status ------------------------------------


def test_every_documented_error_is_an_example_envelope_of_its_status(spec):
    for path, method, operation in operations(spec):
        for status, response in error_responses(operation):
            where = f"{method.upper()} {path} {status}"
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorOut"}, where
            assert content["examples"], where
            assert response["description"], where
            for named in content["examples"].values():
                body = named["value"]
                assert set(body) <= ENVELOPE_KEYS, where
                assert body["code"] == status, where
                assert body["type"] in TYPES_OF_STATUS[status], where
                assert body["error"] and named["summary"] == body["error"], where
                if status == 422:
                    first = body["details"][0]
                    assert body["error"] == f"{first['field']}: {first['message']}", where
                    assert not first["message"].startswith("Value error"), where
                else:
                    assert "details" not in body, where
                if "ban_expires" in body:
                    assert body["type"] == "user_banned", where
                    assert JSON_INSTANT.fullmatch(body["ban_expires"]), where
                if "mfa_token" in body or "methods" in body:
                    assert body["type"] == "mfa_required", where
                    assert body["mfa_token"].startswith("ukmt_"), where
            if status in (429, 503):
                assert response["headers"]["Retry-After"]["required"] is True, where
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's own 422


def test_no_route_documents_500(spec):
    for path, method, operation in operations(spec):
        assert "500" not in operation["responses"], f"{method} {path}"


def test_a_route_documents_422_iff_it_has_parameters_or_a_body(spec):
    for path, method, operation in operations(spec):
        takes_input = bool(operation.get("parameters")) or "requestBody" in operation
        assert ("422" in operation["responses"]) == takes_input, f"{method.upper()} {path}"


def test_no_route_documents_a_status_it_cannot_return(spec):
    checked = set()
    for route, operation in routes(spec):
        where = route.operation_id
        statuses = {status for status, _ in error_responses(operation)}
        types = {
            body["type"]
            for _, response in error_responses(operation)
            for body in examples(response)
        }
        messages = {
            body["error"]
            for _, response in error_responses(operation)
            for body in examples(response)
        }
        # Statuses tied to one property of the route: documented if and only if it has it.
        assert ({400, 413, 415} <= statuses) == route.body, where
        assert statuses.isdisjoint({400, 413, 415}) == (not route.body), where
        assert (422 in statuses) == (route.body or bool(route.params)), where
        assert (401 in statuses) == route.checks_credentials, where
        assert (403 in statuses) == route.checks_credentials, where
        assert ("user_banned" in types) == route.checks_credentials, where
        assert (429 in statuses) == route.rate_limited, where
        assert (404 in statuses) == route.looks_up, where
        expects_503 = route.touches_db or route.operation_id == "operations.ready"
        assert (503 in statuses) == expects_503, where
        hashing = "password hashing is overloaded, retry shortly"
        assert (hashing in messages) == route.hashes, where
        # And weaker ones: a refusal needs a known caller; a conflict needs a change.
        if "forbidden" in types:
            assert route.authenticated, where
        if 409 in statuses:
            assert route.method in WRITES, where
        checked.add(route.operation_id)
    assert checked == {operation["operationId"] for _, _, operation in operations(spec)}


def test_validation_examples_name_the_routes_own_fields(spec):
    for route, operation in routes(spec):
        if "422" not in operation["responses"]:
            continue
        for body in examples(operation["responses"]["422"]):
            for detail in body["details"]:
                field = detail["field"].split(".")[0]
                assert field in route.params | route.body_fields | {"body"}, (
                    route.operation_id,
                    field,
                )


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
    signout = spec["paths"]["/v1/auth/signout"]["post"]["responses"]["200"]
    assert signout["content"]["application/json"]["example"] == {"status": "signed out"}


# ---- names -----------------------------------------------------------------------------------


def test_operation_ids_are_unique_dotted_names_under_their_tag(spec):
    found = {
        (method, path): operation["operationId"]
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    assert len(set(found.values())) == len(found)
    for (method, path), operation_id in found.items():
        assert re.fullmatch(r"[a-z]+(\.[a-z][a-z0-9_]*)+", operation_id), (method, path)
        tag = spec["paths"][path][method]["tags"][0]
        assert operation_id.split(".")[0] == tag, (method, path)
    assert found["post", "/v1/auth/signup"] == "auth.signup"
    assert found["get", "/v1/auth/me"] == "auth.me.get"
    assert found["patch", "/v1/auth/me"] == "auth.me.update"
    assert found["get", "/v1/admin/users"] == "admin.users.list"
    assert found["delete", "/v1/admin/users/{user_id}/sessions/{session_id}"] == (
        "admin.users.sessions.revoke"
    )


def test_summaries_are_written_not_derived(spec):
    for route in api_routes():
        assert route.summary, route.path
    for path, method, operation in operations(spec):
        summary = operation["summary"]
        assert summary[0].isupper() and not summary.endswith("."), (method, path)
        assert len(summary) <= 60, (method, path)
    assert spec["paths"]["/v1/auth/me"]["get"]["summary"] == "Get the signed-in user"


def test_the_bearer_scheme_names_both_kinds_of_token(spec):
    (scheme,) = spec["components"]["securitySchemes"].values()
    assert scheme["scheme"] == "bearer"
    assert "ukst_" in scheme["description"] and "ask_" in scheme["description"]
    assert "/v1/auth" in scheme["description"] and "/v1/admin" in scheme["description"]


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


# ---- the documented errors, for real ---------------------------------------------------------


def assert_documented(spec: dict[str, Any], method: str, path: str, answer: httpx.Response):
    """`answer` is one of the errors the operation documents: its status, a type one of the
    status's examples has, and no envelope key the examples lack."""
    operation = spec["paths"][path][method]
    response = operation["responses"].get(str(answer.status_code))
    assert response is not None, (operation["operationId"], answer.status_code, answer.text)
    body = answer.json()
    documented = [e for e in examples(response) if e["type"] == body["type"]]
    assert documented, (operation["operationId"], body)
    assert set(body) <= set().union(*documented), (operation["operationId"], body)
    for name, header in response.get("headers", {}).items():
        if header["required"]:
            assert name in answer.headers, (operation["operationId"], name)


async def test_routes_answer_with_the_errors_they_document(client, pg):
    spec = (await client.get("/openapi.json")).json()
    signup_path, me_path, signin_path = "/v1/auth/signup", "/v1/auth/me", "/v1/auth/signin"

    taken = await signup(client)
    duplicate = await client.post(
        signup_path, json={"email": taken["user"]["email"], "password": PASSWORD}
    )
    assert duplicate.status_code == 409 and duplicate.json()["type"] == "email_taken"
    assert_documented(spec, "post", signup_path, duplicate)

    invalid = await client.post(signup_path, json={"email": "nope", "password": PASSWORD})
    assert invalid.status_code == 422
    assert_documented(spec, "post", signup_path, invalid)
    not_json = await client.post(signup_path, content=b"{", headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 415
    assert_documented(spec, "post", signup_path, not_json)
    broken = await client.post(
        signup_path, content=b"{", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert_documented(spec, "post", signup_path, broken)
    huge = await client.post(signup_path, json={"email": "a@example.com", "name": "x" * 70_000})
    assert huge.status_code == 413
    assert_documented(spec, "post", signup_path, huge)

    anonymous = await client.get(me_path)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
    assert_documented(spec, "get", me_path, anonymous)
    wrong = await client.post(
        signin_path, json={"email": taken["user"]["email"], "password": "not the password"}
    )
    assert wrong.status_code == 401 and wrong.json()["type"] == "invalid_credentials"
    assert_documented(spec, "post", signin_path, wrong)

    path = "/v1/auth/sessions/{session_id}"
    for session_id, status in [("nope", 422), ("ases_01jhwbz8m3ehztx23drs87f5fc", 404)]:
        answer = await client.delete(
            path.format(session_id=session_id), headers=bearer(taken["session_token"])
        )
        assert answer.status_code == status, answer.text
        assert_documented(spec, "delete", path, answer)


async def test_a_banned_signin_is_the_documented_403(client, pg):
    spec = (await client.get("/openapi.json")).json()
    root = auth(await make_admin(pg, await default_app(pg)))
    user = await signup(client)
    banned = await client.post(
        f"/v1/admin/users/{user['user']['id']}/ban", json={"expires_in": 3600}, headers=root
    )
    assert banned.status_code == 200, banned.text
    refused = await client.post(
        "/v1/auth/signin", json={"email": user["user"]["email"], "password": PASSWORD}
    )
    assert refused.status_code == 403 and refused.json()["ban_expires"]
    assert_documented(spec, "post", "/v1/auth/signin", refused)


async def test_admin_routes_answer_with_the_errors_they_document(client, pg):
    spec = (await client.get("/openapi.json")).json()
    tenant = await default_app(pg)
    key, _ = await make_key(pg, tenant[0])
    an_admin = await make_user(pg, tenant, role="admin")
    ban = "/v1/admin/users/{user_id}/ban"
    keyed = await client.post(ban.format(user_id=an_admin), json={}, headers=auth(key))
    assert keyed.status_code == 403 and keyed.json()["type"] == "forbidden", keyed.text
    assert_documented(spec, "post", ban, keyed)

    get = "/v1/admin/users/{user_id}"
    unknown = await client.get(
        get.format(user_id="ausr_01jhmms3m3ebsacsd61g9d528r"), headers=auth(key)
    )
    assert unknown.status_code == 404
    assert_documented(spec, "get", get, unknown)
    member = await signup(client, email=unique_email("member"))
    refused = await client.get(
        get.format(user_id=an_admin), headers=bearer(member["session_token"])
    )
    assert refused.status_code == 403 and refused.json()["error"] == "admin role required"
    assert_documented(spec, "get", get, refused)


async def test_a_spent_rate_limit_is_the_documented_429(database_url):
    # One second into an hour: the two requests share the rule's hour-long window.
    now = clock.now()
    clock.advance(
        now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, seconds=1) - now
    )
    limited = create_app(
        make_settings(database_url, rate_limits="on", rate_limit_refresh_ip="1/3600")
    )
    async with limited.router.lifespan_context(limited):
        transport = httpx.ASGITransport(app=limited, client=("198.51.100.23", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://userkeep.test") as c:
            spec = (await c.get("/openapi.json")).json()
            body = {"refresh_token": "ukrt_not-a-token"}
            first = await c.post("/v1/auth/refresh", json=body)
            assert first.status_code == 401
            assert_documented(spec, "post", "/v1/auth/refresh", first)
            second = await c.post("/v1/auth/refresh", json=body)
            assert second.status_code == 429
            assert_documented(spec, "post", "/v1/auth/refresh", second)
