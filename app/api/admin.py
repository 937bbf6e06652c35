"""/v1/admin: user administration, bans, sessions, audit log, apps and API keys.

Thin: parse, call a service, shape. Who may call is decided by services/admin_auth: an admin's
session or an `ask_` API key; admins and keys of the `default` app reach every app.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from starlette.routing import Match
from starlette.types import Scope

from app.api import deps
from app.api.admin_schemas import (
    AdminSessionsOut,
    AdminUserCreate,
    AdminUserPatch,
    ApiKeyCreatedOut,
    ApiKeyId,
    ApiKeyIn,
    ApiKeysOut,
    AppIn,
    AppOut,
    AppsOut,
    AuditEventsOut,
    AuditQuery,
    BanIn,
    EnvironmentIn,
    EnvironmentOut,
    EnvironmentsOut,
    IncludeDeleted,
    PasswordIn,
    PurgeIn,
    PurgeOut,
    RevokedOut,
    UserListOut,
    UserListQuery,
)
from app.api.deps import Config, Db, From, Hasher, rate_limit
from app.api.schemas import AppRef, ErrorOut, SessionId, StatusOut, UserId, UserOut
from app.services import admin, admin_auth, api_keys, apps
from app.services.admin_auth import AdminPrincipal


class _Route(APIRoute):
    """A `{user_id}` segment never captures the fixed `/users/purge` (OpenAPI: concrete paths
    match before templated ones), so e.g. `PATCH /users/purge` is a 405, not user "purge"."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and child.get("path_params", {}).get("user_id") == "purge":
            return Match.NONE, {}
        return match, child


router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(rate_limit("admin"))],
    route_class=_Route,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "a request body that is not UTF-8 JSON text"},
    401: {"model": ErrorOut, "description": "no, an invalid or a revoked session or API key"},
    403: {"model": ErrorOut, "description": "the caller is not an admin (or is banned)"},
    404: {"model": ErrorOut, "description": "unknown, or outside the caller's apps"},
    409: {"model": ErrorOut, "description": "conflict (e.g. email_taken, username_taken)"},
    413: {"model": ErrorOut, "description": "request body too large"},
    422: {"model": ErrorOut, "description": "validation_error, with details per field"},
    429: {"model": ErrorOut, "description": "rate_limited, with Retry-After"},
    503: {"model": ErrorOut, "description": "database or password hashing unavailable"},
}


async def get_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(deps.bearer)],
) -> AdminPrincipal:
    # Lookups and one-row stamps only: an AUTOCOMMIT session of its own (deps.get_principal).
    async with request.app.state.reads() as reads:
        caller = await admin_auth.authenticate(
            reads, request.app.state.lookups, credentials.credentials if credentials else None
        )
    api_key_id = caller.actor_id if caller.actor_type == "api_key" else None
    deps.record_caller(request, caller.user_id, api_key_id)
    return caller


Admin = Annotated[AdminPrincipal, Depends(get_admin)]


# ---- users -------------------------------------------------------------------------------


@router.get("/users", response_model=UserListOut, responses=ERRORS)
async def list_users(
    query: Annotated[UserListQuery, Query()], caller: Admin, db: Db, settings: Config
) -> dict[str, Any]:
    """List and search the users of an app. Text filters are case-insensitive partial matches
    (`%` and `_` are literal). Page with `offset`, or with `cursor` (the `next_cursor` of the
    previous page), which neither skips nor repeats users while new ones sign up. `total` is
    exact up to ADMIN_COUNT_LIMIT matches (`total_exact`); `count=exact` counts past it."""
    user_query = admin.UserQuery(**query.model_dump())
    return await admin.list_users(db, caller, user_query, settings.admin_count_limit)


@router.post("/users", status_code=201, response_model=UserOut, responses=ERRORS)
async def create_user(
    body: AdminUserCreate, caller: Admin, db: Db, hasher: Hasher, settings: Config, origin: From
) -> dict[str, Any]:
    """Create a user, with or without a password; `email_verified` may be set."""
    fields = body.model_dump(exclude_unset=True)
    return await admin.create_user(db, hasher, settings, origin, caller, fields)


@router.post("/users/purge", response_model=PurgeOut, responses=ERRORS)
async def purge_expired(
    caller: Admin,
    db: Db,
    settings: Config,
    origin: From,
    body: Annotated[PurgeIn | None, Body()] = None,
) -> dict[str, int]:
    """Erase (hard-delete) every soft-deleted user of the app whose deletion is older than
    `RETENTION_DAYS`."""
    app_ref = body.app_id if body else None
    return {"purged": await admin.purge_expired(db, settings, origin, caller, app_ref)}


@router.get("/users/{user_id}", response_model=UserOut, responses=ERRORS)
async def get_user(
    user_id: UserId, query: Annotated[IncludeDeleted, Query()], caller: Admin, db: Db
) -> dict[str, Any]:
    """One user; a soft-deleted one only with `include_deleted=true`."""
    return await admin.get_user(db, caller, user_id, query.include_deleted)


@router.patch("/users/{user_id}", response_model=UserOut, responses=ERRORS)
async def update_user(
    user_id: UserId, body: AdminUserPatch, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Change profile fields, e-mail, verification flags, role or metadata; absent fields stay
    as they are. Same validation and uniqueness rules as self-service."""
    return await admin.update_user(db, origin, caller, user_id, body.changes())


@router.delete("/users/{user_id}", response_model=StatusOut, responses=ERRORS)
async def delete_user(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, str]:
    """Soft delete: every session ends, the e-mail and username are free again; restorable
    within the retention window."""
    await admin.delete_user(db, origin, caller, user_id)
    return {"status": "user deleted"}


@router.post("/users/{user_id}/restore", response_model=UserOut, responses=ERRORS)
async def restore_user(
    user_id: UserId, caller: Admin, db: Db, settings: Config, origin: From
) -> dict[str, Any]:
    """Undo a soft delete within the retention window; 409 `email_taken` or `username_taken`
    when someone took them meanwhile."""
    return await admin.restore_user(db, settings, origin, caller, user_id)


@router.post("/users/{user_id}/purge", response_model=PurgeOut, responses=ERRORS)
async def purge_user(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, int]:
    """Erase one soft-deleted user now, without waiting for the retention window; a live
    user is a 409 (delete it first)."""
    await admin.purge_user(db, origin, caller, user_id)
    return {"purged": 1}


@router.post("/users/{user_id}/ban", response_model=UserOut, responses=ERRORS)
async def ban_user(
    user_id: UserId, body: BanIn, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Ban for `expires_in` seconds, until `expires_at`, or (with neither) until unbanned.
    Every session of the user is revoked at once. You cannot ban yourself."""
    return await admin.ban(
        db, origin, caller, user_id, body.reason, body.expires_at, body.expires_in
    )


@router.post("/users/{user_id}/unban", response_model=UserOut, responses=ERRORS)
async def unban_user(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Lift a ban."""
    return await admin.unban(db, origin, caller, user_id)


@router.put("/users/{user_id}/password", response_model=UserOut, responses=ERRORS)
async def set_password(
    user_id: UserId,
    body: PasswordIn,
    caller: Admin,
    db: Db,
    hasher: Hasher,
    settings: Config,
    origin: From,
) -> dict[str, Any]:
    """Set the user's password; every session of the user is revoked."""
    return await admin.set_password(db, hasher, settings, origin, caller, user_id, body.password)


@router.get("/users/{user_id}/sessions", response_model=AdminSessionsOut, responses=ERRORS)
async def list_sessions(user_id: UserId, caller: Admin, db: Db) -> dict[str, Any]:
    """The user's live sessions."""
    return {"sessions": await admin.list_sessions(db, caller, user_id)}


@router.delete("/users/{user_id}/sessions", response_model=RevokedOut, responses=ERRORS)
async def revoke_sessions(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Revoke every session of the user; it has to sign in again."""
    revoked = await admin.revoke_sessions(db, origin, caller, user_id)
    return {"status": "revoked", "revoked": revoked}


@router.delete("/users/{user_id}/sessions/{session_id}", response_model=StatusOut, responses=ERRORS)
async def revoke_session(
    user_id: UserId, session_id: SessionId, caller: Admin, db: Db, origin: From
) -> dict[str, str]:
    """Revoke one live session of the user."""
    await admin.revoke_session(db, origin, caller, user_id, session_id)
    return {"status": "revoked"}


# ---- audit ---------------------------------------------------------------------------------


@router.get("/audit-events", response_model=AuditEventsOut, responses=ERRORS)
async def list_audit_events(
    query: Annotated[AuditQuery, Query()], caller: Admin, db: Db
) -> dict[str, Any]:
    """Who did what to whom, when and from where, newest first; filter, and page with
    `cursor`."""
    return await admin.list_audit_events(db, caller, admin.EventQuery(**query.model_dump()))


# ---- apps and environments -----------------------------------------------------------------


@router.get("/apps", response_model=AppsOut, responses=ERRORS)
async def list_apps(caller: Admin, db: Db) -> dict[str, Any]:
    """The apps the caller may act on (all of them for the default app's admins and keys),
    with their environments."""
    return {"apps": await apps.list_apps(db, caller)}


@router.post("/apps", status_code=201, response_model=AppOut, responses=ERRORS)
async def create_app(body: AppIn, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Create an app with its default `production` environment. Only for admins and API keys
    of the default app."""
    return await apps.create_app(db, origin, caller, body.slug, body.name)


@router.get("/apps/{app_id}/environments", response_model=EnvironmentsOut, responses=ERRORS)
async def list_environments(app_id: AppRef, caller: Admin, db: Db) -> dict[str, Any]:
    """The environments of an app (slug or aapp_ id)."""
    return {"environments": await apps.list_environments(db, caller, app_id)}


@router.post(
    "/apps/{app_id}/environments",
    status_code=201,
    response_model=EnvironmentOut,
    responses=ERRORS,
)
async def create_environment(
    app_id: AppRef, body: EnvironmentIn, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Add an environment to an app; `is_default` makes it the app's default."""
    return await apps.create_environment(
        db, origin, caller, app_id, body.slug, body.name, body.is_default
    )


# ---- API keys ------------------------------------------------------------------------------


@router.post("/api-keys", status_code=201, response_model=ApiKeyCreatedOut, responses=ERRORS)
async def create_api_key(body: ApiKeyIn, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Create an API key for an app. The `secret` is in this answer only — it is stored as a
    hash and cannot be shown again. Needs an admin session (API keys cannot create keys)."""
    created = await api_keys.create_for(db, origin, caller, body.app_id, body.name)
    return {**api_keys.view(created.key), "secret": created.secret}


@router.get("/api-keys", response_model=ApiKeysOut, responses=ERRORS)
async def list_api_keys(
    caller: Admin,
    db: Db,
    app_id: Annotated[AppRef | None, Query(description="default: the caller's app")] = None,
) -> dict[str, Any]:
    """The app's API keys, without their secrets."""
    return {"api_keys": await api_keys.list_for(db, caller, app_id)}


@router.delete("/api-keys/{key_id}", response_model=StatusOut, responses=ERRORS)
async def revoke_api_key(key_id: ApiKeyId, caller: Admin, db: Db, origin: From) -> dict[str, str]:
    """Revoke an API key; it stops working at once. Needs an admin session."""
    await api_keys.revoke(db, origin, caller, key_id)
    return {"status": "revoked"}
