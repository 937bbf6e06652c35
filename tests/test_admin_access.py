"""Who may call each admin route: the full role x route matrix.

The target users, sessions and keys belong to the app `acme`. `admin` and `api_key` are acme's,
`other_admin` is an admin of `globex`, `root` an admin of the `default` app (which may act on
every app). A banned or deleted admin is refused like anyone banned or deleted; a successful
change writes exactly one audit row naming the caller, a refused call writes none.
"""

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.admin_support import World, audit_rows, build_world
from tests.helpers import PASSWORD


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: dict[str, Any] | None = None
    ok: int = 200
    action: str | None = None  # the audit action a successful call writes
    # Outcomes differing from `ok`, by caller.
    special: dict[str, int] = field(default_factory=dict)


OTHER_404 = {"other_admin": 404}
SESSION_ONLY = {"api_key": 403}

ROUTES = {
    "list users": Route("GET", "/v1/admin/users"),
    "create user": Route("POST", "/v1/admin/users", {"email": "new@example.com"}, 201,
                         "user.created"),
    "purge expired": Route("POST", "/v1/admin/users/purge"),
    "import users": Route("POST", "/v1/admin/users/import",
                          {"users": [{"email": "imported@example.com"}]}, action="user.created"),
    "get user": Route("GET", "/v1/admin/users/{target}", special=OTHER_404),
    "patch user": Route("PATCH", "/v1/admin/users/{target}", {"name": "Renamed"},
                        action="user.updated", special=OTHER_404),
    "delete user": Route("DELETE", "/v1/admin/users/{target}", action="user.deleted",
                         special=OTHER_404),
    "restore user": Route("POST", "/v1/admin/users/{deleted}/restore", action="user.restored",
                          special=OTHER_404),
    "purge user": Route("POST", "/v1/admin/users/{deleted}/purge", action="user.purged",
                        special=OTHER_404),
    "ban": Route("POST", "/v1/admin/users/{target}/ban", {"reason": "spam"},
                 action="user.banned", special=OTHER_404),
    "unban": Route("POST", "/v1/admin/users/{target}/unban", action="user.unbanned",
                   special=OTHER_404),
    "set password": Route("PUT", "/v1/admin/users/{target}/password", {"password": PASSWORD},
                          action="user.password_set", special=OTHER_404),
    # The target has no MFA: nothing to remove, so no audit row (tests/test_mfa.py has them).
    "remove MFA": Route("DELETE", "/v1/admin/users/{target}/mfa", special=OTHER_404),
    "list sessions": Route("GET", "/v1/admin/users/{target}/sessions", special=OTHER_404),
    "revoke sessions": Route("DELETE", "/v1/admin/users/{target}/sessions",
                             action="session.revoked_all", special=OTHER_404),
    "revoke session": Route("DELETE", "/v1/admin/users/{target}/sessions/{session}",
                            action="session.revoked", special=OTHER_404),
    "impersonate": Route("POST", "/v1/admin/users/{target}/impersonate", {"reason": "support"},
                         action="user.impersonation_started",
                         special={"api_key": 403, "other_admin": 404}),
    "stats": Route("GET", "/v1/admin/stats"),
    "audit events": Route("GET", "/v1/admin/audit-events"),
    "list apps": Route("GET", "/v1/admin/apps"),
    "create app": Route("POST", "/v1/admin/apps", {"slug": "newco", "name": "NewCo"}, 201,
                        "app.created", {"admin": 403, "api_key": 403, "other_admin": 403}),
    "list environments": Route("GET", "/v1/admin/apps/acme/environments", special=OTHER_404),
    "create environment": Route("POST", "/v1/admin/apps/acme/environments",
                                {"slug": "staging", "name": "Staging"}, 201,
                                "environment.created", OTHER_404),
    "create API key": Route("POST", "/v1/admin/api-keys", {"name": "ci"}, 201,
                            "api_key.created", SESSION_ONLY),
    "list API keys": Route("GET", "/v1/admin/api-keys"),
    "revoke API key": Route("DELETE", "/v1/admin/api-keys/{key}", action="api_key.revoked",
                            special={"api_key": 403, "other_admin": 404}),
    "send verification": Route("POST", "/v1/admin/users/{target}/send-verification", ok=202,
                               action="user.verification_requested", special=OTHER_404),
    "send password reset": Route("POST", "/v1/admin/users/{target}/send-password-reset",
                                 ok=202, action="user.password_reset_requested",
                                 special=OTHER_404),
    "update app": Route("PATCH", "/v1/admin/apps/acme", {"name": "Acme 2"},
                        action="app.updated", special=OTHER_404),
    "list jobs": Route("GET", "/v1/admin/jobs"),
    "get job": Route("GET", "/v1/admin/jobs/{job}", special=OTHER_404),
    "retry job": Route("POST", "/v1/admin/jobs/{job}/retry", action="job.retried",
                       special=OTHER_404),
    "webhook event types": Route("GET", "/v1/admin/webhooks/event-types"),
    "list webhooks": Route("GET", "/v1/admin/webhooks"),
    "create webhook": Route("POST", "/v1/admin/webhooks",
                            {"url": "https://hooks.example.com/in", "events": ["user.created"]},
                            201, "webhook.created"),
    "get webhook": Route("GET", "/v1/admin/webhooks/{webhook}", special=OTHER_404),
    "patch webhook": Route("PATCH", "/v1/admin/webhooks/{webhook}", {"description": "CRM"},
                           action="webhook.updated", special=OTHER_404),
    "delete webhook": Route("DELETE", "/v1/admin/webhooks/{webhook}", action="webhook.deleted",
                            special=OTHER_404),
    "rotate webhook secret": Route("POST", "/v1/admin/webhooks/{webhook}/rotate-secret",
                                   action="webhook.secret_rotated", special=OTHER_404),
    "test webhook": Route("POST", "/v1/admin/webhooks/{webhook}/test", ok=202,
                          action="webhook.tested", special=OTHER_404),
    "list webhook deliveries": Route("GET", "/v1/admin/webhooks/{webhook}/deliveries",
                                     special=OTHER_404),
    "retry webhook delivery": Route("POST",
                                    "/v1/admin/webhooks/{webhook}/deliveries/{delivery}/retry",
                                    ok=202, action="webhook.delivery_retried", special=OTHER_404),
}  # fmt: skip

# Callers that never get past authentication, whatever the route.
REFUSED = {
    "anonymous": (401, "authentication_required"),
    "user": (403, "forbidden"),
    "banned": (403, "user_banned"),
    "deleted": (401, "session_expired"),
    "revoked_key": (401, "authentication_required"),
}
ACTING = ["other_admin", "admin", "api_key", "root"]
ERROR_TYPES = {403: "forbidden", 404: "not_found"}


def _path(route: Route, world: World) -> str:
    return route.path.format(
        target=world.target,
        deleted=world.deleted,
        session=world.target_session,
        key=world.spare_key,
        job=world.failed_job,
        webhook=world.webhook,
        delivery=world.delivery,
    )


@pytest.mark.parametrize("name", list(ROUTES))
async def test_refused_callers(client, pg, name):
    """Anonymous, a plain user, a banned or deleted admin, a revoked key: refused before
    anything is read or written, on every route."""
    route = ROUTES[name]
    world = await build_world(pg)
    for caller, (status, type_) in REFUSED.items():
        response = await client.request(
            route.method, _path(route, world), json=route.body, headers=world.callers[caller]
        )
        body = response.json()
        assert (response.status_code, body["type"], body["code"]) == (status, type_, status), (
            caller,
            body,
        )
        assert body["error"]
    assert await audit_rows(pg) == []


@pytest.mark.parametrize("caller", ACTING)
@pytest.mark.parametrize("name", list(ROUTES))
async def test_role_route_matrix(client, pg, name, caller):
    route = ROUTES[name]
    world = await build_world(pg)
    response = await client.request(
        route.method, _path(route, world), json=route.body, headers=world.callers[caller]
    )
    body = response.json()
    status = route.special.get(caller, route.ok)
    assert response.status_code == status, body
    written = await audit_rows(pg)
    if status >= 400:
        assert body["type"] == ERROR_TYPES[status] and body["code"] == status
        assert written == []
        return
    assert response.headers["cache-control"] == "no-store"
    if route.action is None:
        assert written == []
    else:
        (row,) = written
        assert row["action"] == route.action
        assert row["actor_type"] == ("api_key" if caller == "api_key" else "admin")
        assert row["actor_id"] == world.actor_ids[caller]
        assert row["ip"] == "203.0.113.7"


async def test_other_apps_lists_hide_acme(client, pg):
    """Isolation both ways: globex's admin lists only globex; acme's admin cannot reach
    globex by app_id either, and neither sees the other's users, keys or audit events."""
    world = await build_world(pg)
    globex_user = await pg.fetchval(
        "INSERT INTO users (id, app_id, env_id, email) VALUES ($1, $2, $3, 'g@example.com') "
        "RETURNING id",
        "ausr_01jdk3v7m6e8x9q2w4r5t6y7z8",
        *world.globex,
    )
    other = world.callers["other_admin"]
    listed = (await client.get("/v1/admin/users", headers=other)).json()
    assert {u["app_id"] for u in listed["users"]} == {world.globex[0]}
    assert world.target not in {u["id"] for u in listed["users"]}
    for path in ("/v1/admin/users", "/v1/admin/audit-events", "/v1/admin/api-keys"):
        response = await client.get(path, params={"app_id": "acme"}, headers=other)
        assert response.status_code == 404 and response.json()["type"] == "not_found"
        response = await client.get(
            path, params={"app_id": "globex"}, headers=world.callers["admin"]
        )
        assert response.status_code == 404
    response = await client.get(f"/v1/admin/users/{globex_user}", headers=world.callers["admin"])
    assert response.status_code == 404
    apps = (await client.get("/v1/admin/apps", headers=other)).json()["apps"]
    assert [a["slug"] for a in apps] == ["globex"]


async def test_root_admin_reaches_every_app(client, pg):
    world = await build_world(pg)
    root = world.callers["root"]
    listed = (await client.get("/v1/admin/users", params={"app_id": "acme"}, headers=root)).json()
    assert world.target in {u["id"] for u in listed["users"]}
    by_id = await client.get("/v1/admin/users", params={"app_id": world.globex[0]}, headers=root)
    assert by_id.status_code == 200
    own = (await client.get("/v1/admin/users", headers=root)).json()
    assert {u["app_id"] for u in own["users"]} == {world.default[0]}
    apps = (await client.get("/v1/admin/apps", headers=root)).json()["apps"]
    assert {a["slug"] for a in apps} == {"default", "acme", "globex"}
    created = await client.post(
        "/v1/admin/users", json={"email": "x@example.com", "app_id": "globex"}, headers=root
    )
    assert created.status_code == 201 and created.json()["app_id"] == world.globex[0]


async def test_unknown_ids_are_404_and_malformed_ids_422(client, pg):
    world = await build_world(pg)
    admin = world.callers["admin"]
    unknown = "ausr_01jdk3v7m6e8x9q2w4r5t6y7z8"
    for path in (
        f"/v1/admin/users/{unknown}",
        f"/v1/admin/users/{unknown}/sessions",
        f"/v1/admin/users/{world.target}/sessions/ases_01jdk3v7m6e8x9q2w4r5t6y7z8",
    ):
        method = "DELETE" if path.count("ases_") else "GET"
        response = await client.request(method, path, headers=admin)
        assert response.status_code == 404 and response.json()["type"] == "not_found"
    response = await client.delete(
        "/v1/admin/api-keys/akey_01jdk3v7m6e8x9q2w4r5t6y7z8", headers=admin
    )
    assert response.status_code == 404
    for path in (
        "/v1/admin/users/nope",
        "/v1/admin/users/aapp_01jdk3v7m6e8x9q2w4r5t6y7z8",
        f"/v1/admin/users/{world.target}/sessions/{world.target}",
        "/v1/admin/api-keys/ausr_01jdk3v7m6e8x9q2w4r5t6y7z8",
        "/v1/admin/apps/Bad_App/environments",
    ):
        method = "DELETE" if "sessions/" in path or "api-keys" in path else "GET"
        response = await client.request(method, path, headers=admin)
        body = response.json()
        assert response.status_code == 422, path
        assert body["type"] == "validation_error" and body["details"], body


async def test_openapi_documents_the_admin_routes(client):
    spec = (await client.get("/openapi.json")).json()
    admin_ops = [
        (path, method, op)
        for path, item in spec["paths"].items()
        if path.startswith("/v1/admin")
        for method, op in item.items()
    ]
    assert len(admin_ops) == len(ROUTES)
    for path, _method, op in admin_ops:
        assert op["tags"] == ["admin"], path
        assert op["security"] == [{"HTTPBearer": []}], path
        assert op["description"], path
        # The caller check, the router's per-IP rule and the database apply to every admin
        # route; 404 and 422 only to those that take ids (tests/test_openapi.py).
        assert {"401", "403", "429", "503"} <= set(op["responses"]), path
    ban = spec["paths"]["/v1/admin/users/{user_id}/ban"]["post"]
    ref = ban["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert spec["components"]["schemas"][ref]["examples"]
    assert "admin" in {tag["name"] for tag in spec["tags"]}
