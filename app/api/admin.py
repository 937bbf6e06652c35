"""/v1/admin: user administration, bans, sessions, audit log, apps and API keys.

Thin: parse, call a service, shape. Who may call is decided by services/admin_auth: an admin's
session or an `ask_` API key; admins and keys of the `default` app reach every app.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
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
    AppPatch,
    AppsOut,
    AuditEventsOut,
    AuditQuery,
    BanIn,
    EnvironmentIn,
    EnvironmentOut,
    EnvironmentsOut,
    IncludeDeleted,
    JobOut,
    JobQuery,
    JobsOut,
    PasswordIn,
    PurgeIn,
    PurgeOut,
    RevokedOut,
    UserListOut,
    UserListQuery,
)
from app.api.deps import Config, Db, From, Hasher, rate_limit
from app.api.openapi import JSON_BODY, SESSION, TENANT, answer, errors
from app.api.schemas import AppRef, SessionId, StatusOut, UserId, UserOut
from app.errors import (
    AuthenticationRequired,
    Conflict,
    DatabaseUnavailable,
    EmailTaken,
    Forbidden,
    HashingOverloaded,
    NotFound,
    RateLimited,
    UsernameTaken,
    ValidationFailed,
)
from app.services import admin, admin_auth, api_keys, apps, email_flows, jobs, mfa
from app.services.admin_auth import AdminPrincipal

FIXED = frozenset({"purge", "import"})  # /users/import: api/admin_import.py


class _Route(APIRoute):
    """A `{user_id}` segment never captures the fixed `/users/purge` or `/users/import`
    (OpenAPI: concrete paths match before templated ones), so e.g. `PATCH /users/purge` is a
    405, not user "purge"."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and child.get("path_params", {}).get("user_id") in FIXED:
            return Match.NONE, {}
        return match, child


router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(rate_limit("admin"))],
    route_class=_Route,
)

# What every admin route can answer: its caller (get_admin: no or a bad credential, a
# non-admin or banned admin's session), the router's per-IP rule, and the database.
CALLER = (
    SESSION,
    AuthenticationRequired("invalid or revoked API key"),
    Forbidden("admin role required"),
    RateLimited,
    DatabaseUnavailable,
)
APP_NOT_FOUND = NotFound("app not found")
USER_NOT_FOUND = NotFound("user not found")
BAD_USER_ID = ValidationFailed("user_id", "must be a TypeID with prefix ausr_")
BAD_APP_ID = ValidationFailed("app_id", "must be a TypeID with prefix aapp_")
# admin_auth.ensure_may_change_admin / ensure_may_set_role: keys automate, people hold power.
KEY_ON_ADMIN = Forbidden("API keys cannot change an admin's account; use an admin session")
KEY_SETS_ROLE = Forbidden("API keys cannot grant or remove the admin role; use an admin session")
KEY_ON_KEYS = Forbidden("API keys cannot create or revoke API keys; use an admin session")


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


@router.get(
    "/users",
    name="users.list",
    summary="List and search users",
    response_model=UserListOut,
    responses=errors(
        CALLER,
        ValidationFailed("limit", "Input should be less than or equal to 100"),
        ValidationFailed("cursor", "was made for another sort_by or sort_order"),
        TENANT,
    ),
)
async def list_users(
    query: Annotated[UserListQuery, Query()], caller: Admin, db: Db, settings: Config
) -> dict[str, Any]:
    """List and search the users of an app. Text filters are case-insensitive partial matches
    (`%` and `_` are literal). Page with `offset`, or with `cursor` (the `next_cursor` of the
    previous page), which neither skips nor repeats users while new ones sign up. `total` is
    exact up to ADMIN_COUNT_LIMIT matches (`total_exact`); `count=exact` counts past it."""
    user_query = admin.UserQuery(**query.model_dump())
    return await admin.list_users(db, caller, user_query, settings.admin_count_limit)


@router.post(
    "/users",
    name="users.create",
    summary="Create a user",
    status_code=201,
    response_model=UserOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        ValidationFailed.example(),
        KEY_SETS_ROLE,
        TENANT,
        EmailTaken,
        UsernameTaken,
        HashingOverloaded,
    ),
)
async def create_user(
    body: AdminUserCreate, caller: Admin, db: Db, hasher: Hasher, settings: Config, origin: From
) -> dict[str, Any]:
    """Create a user, with or without a password; `email_verified` may be set."""
    fields = body.model_dump(exclude_unset=True)
    return await admin.create_user(db, hasher, settings, origin, caller, fields)


@router.post(
    "/users/purge",
    name="users.purge_expired",
    summary="Erase the deleted users past the retention window",
    response_model=PurgeOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        ValidationFailed(
            "app_id", "must be 2-63 characters of a-z, 0-9 and '-', starting with a-z or 0-9"
        ),
        APP_NOT_FOUND,
    ),
)
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


@router.get(
    "/users/{user_id}",
    name="users.get",
    summary="Get a user",
    response_model=UserOut,
    responses=errors(CALLER, BAD_USER_ID, USER_NOT_FOUND),
)
async def get_user(
    user_id: UserId, query: Annotated[IncludeDeleted, Query()], caller: Admin, db: Db
) -> dict[str, Any]:
    """One user; a soft-deleted one only with `include_deleted=true`."""
    return await admin.get_user(db, caller, user_id, query.include_deleted)


@router.patch(
    "/users/{user_id}",
    name="users.update",
    summary="Update a user",
    response_model=UserOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        BAD_USER_ID,
        ValidationFailed("role", "must not be null"),
        USER_NOT_FOUND,
        KEY_ON_ADMIN,
        KEY_SETS_ROLE,
        EmailTaken,
        UsernameTaken,
    ),
)
async def update_user(
    user_id: UserId, body: AdminUserPatch, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Change profile fields, e-mail, verification flags, role or metadata; absent fields stay
    as they are. Same validation and uniqueness rules as self-service."""
    return await admin.update_user(db, origin, caller, user_id, body.changes())


@router.delete(
    "/users/{user_id}",
    name="users.delete",
    summary="Delete a user (soft)",
    response_model=StatusOut,
    responses=errors(CALLER, BAD_USER_ID, USER_NOT_FOUND, KEY_ON_ADMIN)
    | answer({"status": "user deleted"}),
)
async def delete_user(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, str]:
    """Soft delete: every session ends, the e-mail and username are free again; restorable
    within the retention window."""
    await admin.delete_user(db, origin, caller, user_id)
    return {"status": "user deleted"}


@router.post(
    "/users/{user_id}/restore",
    name="users.restore",
    summary="Restore a deleted user",
    response_model=UserOut,
    responses=errors(
        CALLER,
        BAD_USER_ID,
        USER_NOT_FOUND,
        KEY_ON_ADMIN,
        Conflict("user is not deleted"),
        Conflict("the retention window has passed; the user can only be purged"),
        EmailTaken,
        UsernameTaken,
    ),
)
async def restore_user(
    user_id: UserId, caller: Admin, db: Db, settings: Config, origin: From
) -> dict[str, Any]:
    """Undo a soft delete within the retention window; 409 `email_taken` or `username_taken`
    when someone took them meanwhile."""
    return await admin.restore_user(db, settings, origin, caller, user_id)


@router.post(
    "/users/{user_id}/purge",
    name="users.purge",
    summary="Erase a deleted user now",
    response_model=PurgeOut,
    responses=errors(
        CALLER,
        BAD_USER_ID,
        USER_NOT_FOUND,
        KEY_ON_ADMIN,
        Conflict("only a deleted user can be purged; delete it first"),
    ),
)
async def purge_user(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, int]:
    """Erase one soft-deleted user now, without waiting for the retention window; a live
    user is a 409 (delete it first)."""
    await admin.purge_user(db, origin, caller, user_id)
    return {"purged": 1}


@router.post(
    "/users/{user_id}/ban",
    name="users.ban",
    summary="Ban a user",
    response_model=UserOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        BAD_USER_ID,
        ValidationFailed("expires_at", "must be in the future"),
        USER_NOT_FOUND,
        Forbidden("you cannot ban yourself"),
        KEY_ON_ADMIN,
    ),
)
async def ban_user(
    user_id: UserId, body: BanIn, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Ban for `expires_in` seconds, until `expires_at`, or (with neither) until unbanned.
    Every session of the user is revoked at once. You cannot ban yourself."""
    return await admin.ban(
        db, origin, caller, user_id, body.reason, body.expires_at, body.expires_in
    )


@router.post(
    "/users/{user_id}/send-verification",
    name="users.send_verification",
    summary="Send the user the e-mail verification mail",
    status_code=202,
    response_model=StatusOut,
    responses=errors(
        CALLER,
        BAD_USER_ID,
        USER_NOT_FOUND,
        Conflict("the user's e-mail address is already verified"),
    )
    | answer({"status": "sent"}, 202),
)
async def send_verification(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, str]:
    """Queue a verification mail (a new code and link) to the user's address."""
    await email_flows.admin_send(db, origin, caller, user_id, email_flows.Mail.VERIFY)
    return {"status": "sent"}


@router.post(
    "/users/{user_id}/send-password-reset",
    name="users.send_password_reset",
    summary="Send the user a password reset mail",
    status_code=202,
    response_model=StatusOut,
    responses=errors(CALLER, BAD_USER_ID, USER_NOT_FOUND) | answer({"status": "sent"}, 202),
)
async def send_password_reset(
    user_id: UserId, caller: Admin, db: Db, origin: From
) -> dict[str, str]:
    """Queue a password reset mail (a new code and link) to the user's address."""
    await email_flows.admin_send(db, origin, caller, user_id, email_flows.Mail.RESET)
    return {"status": "sent"}


@router.post(
    "/users/{user_id}/unban",
    name="users.unban",
    summary="Lift a user's ban",
    response_model=UserOut,
    responses=errors(CALLER, BAD_USER_ID, USER_NOT_FOUND, KEY_ON_ADMIN),
)
async def unban_user(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Lift a ban."""
    return await admin.unban(db, origin, caller, user_id)


@router.put(
    "/users/{user_id}/password",
    name="users.password.set",
    summary="Set a user's password",
    response_model=UserOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        BAD_USER_ID,
        ValidationFailed("password", "is too common; choose a less guessable password"),
        USER_NOT_FOUND,
        KEY_ON_ADMIN,
        HashingOverloaded,
    ),
)
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


@router.delete(
    "/users/{user_id}/mfa",
    name="users.mfa.remove",
    summary="Remove a user's second factors",
    response_model=UserOut,
    responses=errors(CALLER, BAD_USER_ID, USER_NOT_FOUND, KEY_ON_ADMIN),
)
async def remove_mfa(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Remove the user's TOTP factor and recovery codes (a lost phone): MFA is off and every
    session of the user ends. A user without MFA is answered as is."""
    return await mfa.admin_remove(db, origin, caller, user_id)


@router.get(
    "/users/{user_id}/sessions",
    name="users.sessions.list",
    summary="List a user's sessions",
    response_model=AdminSessionsOut,
    responses=errors(CALLER, BAD_USER_ID, USER_NOT_FOUND),
)
async def list_sessions(user_id: UserId, caller: Admin, db: Db) -> dict[str, Any]:
    """The user's live sessions."""
    return {"sessions": await admin.list_sessions(db, caller, user_id)}


@router.delete(
    "/users/{user_id}/sessions",
    name="users.sessions.revoke_all",
    summary="Revoke all of a user's sessions",
    response_model=RevokedOut,
    responses=errors(CALLER, BAD_USER_ID, USER_NOT_FOUND),
)
async def revoke_sessions(user_id: UserId, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Revoke every session of the user; it has to sign in again."""
    revoked = await admin.revoke_sessions(db, origin, caller, user_id)
    return {"status": "revoked", "revoked": revoked}


@router.delete(
    "/users/{user_id}/sessions/{session_id}",
    name="users.sessions.revoke",
    summary="Revoke one of a user's sessions",
    response_model=StatusOut,
    responses=errors(
        CALLER,
        BAD_USER_ID,
        ValidationFailed("session_id", "must be a TypeID with prefix ases_"),
        USER_NOT_FOUND,
        NotFound("session not found"),
    )
    | answer({"status": "revoked"}),
)
async def revoke_session(
    user_id: UserId, session_id: SessionId, caller: Admin, db: Db, origin: From
) -> dict[str, str]:
    """Revoke one live session of the user."""
    await admin.revoke_session(db, origin, caller, user_id, session_id)
    return {"status": "revoked"}


# ---- audit ---------------------------------------------------------------------------------


@router.get(
    "/audit-events",
    name="audit_events.list",
    summary="List audit events",
    response_model=AuditEventsOut,
    responses=errors(
        CALLER,
        ValidationFailed("cursor", "is not a cursor of this list"),
        APP_NOT_FOUND,
    ),
)
async def list_audit_events(
    query: Annotated[AuditQuery, Query()], caller: Admin, db: Db
) -> dict[str, Any]:
    """Who did what to whom, when and from where, newest first; filter, and page with
    `cursor`."""
    return await admin.list_audit_events(db, caller, admin.EventQuery(**query.model_dump()))


# ---- jobs ----------------------------------------------------------------------------------

JOB_NOT_FOUND = NotFound("job not found")
BAD_JOB_ID = ValidationFailed("job_id", "Input should be greater than or equal to 1")
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a job's id, as listed")]


@router.get(
    "/jobs",
    name="jobs.list",
    summary="List background jobs",
    response_model=JobsOut,
    responses=errors(
        CALLER,
        ValidationFailed("cursor", "is not a cursor of this list"),
        APP_NOT_FOUND,
    ),
)
async def list_jobs(query: Annotated[JobQuery, Query()], caller: Admin, db: Db) -> dict[str, Any]:
    """The app's mail and webhook jobs, newest first: filter by `status` (e.g. `failed`) and
    `kind`, page with `cursor`. Payloads are not shown, only the keys a kind marks safe."""
    return await jobs.list_jobs(db, caller, jobs.JobQuery(**query.model_dump()))


@router.get(
    "/jobs/{job_id}",
    name="jobs.get",
    summary="Get a background job",
    response_model=JobOut,
    responses=errors(CALLER, BAD_JOB_ID, JOB_NOT_FOUND),
)
async def get_job(job_id: JobId, caller: Admin, db: Db) -> dict[str, Any]:
    """One job: its status, attempts and last error."""
    return await jobs.get_job(db, caller, job_id)


@router.post(
    "/jobs/{job_id}/retry",
    name="jobs.retry",
    summary="Retry a failed job",
    response_model=JobOut,
    responses=errors(
        CALLER, BAD_JOB_ID, JOB_NOT_FOUND, Conflict("only a failed job can be retried")
    ),
)
async def retry_job(job_id: JobId, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Queue a failed job again, with its kind's full number of attempts (audited as
    `job.retried`)."""
    return await jobs.retry_job(db, caller, job_id, origin)


# ---- apps and environments -----------------------------------------------------------------


@router.get(
    "/apps",
    name="apps.list",
    summary="List apps",
    response_model=AppsOut,
    responses=errors(CALLER),
)
async def list_apps(caller: Admin, db: Db) -> dict[str, Any]:
    """The apps the caller may act on (all of them for the default app's admins and keys),
    with their environments."""
    return {"apps": await apps.list_apps(db, caller)}


@router.post(
    "/apps",
    name="apps.create",
    summary="Create an app",
    status_code=201,
    response_model=AppOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        ValidationFailed(
            "slug", "must be 2-63 characters of a-z, 0-9 and '-', starting with a-z or 0-9"
        ),
        Forbidden("only admins of the default app may create apps"),
        Conflict("an app with slug 'acme' already exists"),
    ),
)
async def create_app(body: AppIn, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Create an app with its default `production` environment. Only for admins and API keys
    of the default app."""
    return await apps.create_app(db, origin, caller, body.slug, body.name, body.mail_settings())


@router.patch(
    "/apps/{app_id}",
    name="apps.update",
    summary="Change an app's name or mail settings",
    response_model=AppOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        BAD_APP_ID,
        APP_NOT_FOUND,
        ValidationFailed(
            "link_base_url",
            "must be an http(s) URL with a host name, no query or fragment: "
            "https://acme.com/account",
        ),
    ),
)
async def update_app(
    app_id: AppRef, body: AppPatch, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Change the name, `mail_from`, `link_base_url` or `require_email_verification` of an app
    the caller may act on; absent fields stay, `null` returns a setting to the service's."""
    return await apps.update_app(db, origin, caller, app_id, body.changes())


@router.get(
    "/apps/{app_id}/environments",
    name="apps.environments.list",
    summary="List an app's environments",
    response_model=EnvironmentsOut,
    responses=errors(CALLER, BAD_APP_ID, APP_NOT_FOUND),
)
async def list_environments(app_id: AppRef, caller: Admin, db: Db) -> dict[str, Any]:
    """The environments of an app (slug or aapp_ id)."""
    return {"environments": await apps.list_environments(db, caller, app_id)}


@router.post(
    "/apps/{app_id}/environments",
    name="apps.environments.create",
    summary="Add an environment to an app",
    status_code=201,
    response_model=EnvironmentOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        BAD_APP_ID,
        APP_NOT_FOUND,
        Conflict("the app already has an environment with slug 'staging'"),
        Conflict("another environment became the default meanwhile; retry"),
    ),
)
async def create_environment(
    app_id: AppRef, body: EnvironmentIn, caller: Admin, db: Db, origin: From
) -> dict[str, Any]:
    """Add an environment to an app; `is_default` makes it the app's default."""
    return await apps.create_environment(
        db, origin, caller, app_id, body.slug, body.name, body.is_default
    )


# ---- API keys ------------------------------------------------------------------------------


@router.post(
    "/api-keys",
    name="api_keys.create",
    summary="Create an API key",
    status_code=201,
    response_model=ApiKeyCreatedOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        ValidationFailed("name", "must not be empty or only white space"),
        KEY_ON_KEYS,
        APP_NOT_FOUND,
    ),
)
async def create_api_key(body: ApiKeyIn, caller: Admin, db: Db, origin: From) -> dict[str, Any]:
    """Create an API key for an app. The `secret` is in this answer only — it is stored as a
    hash and cannot be shown again. Needs an admin session (API keys cannot create keys)."""
    created = await api_keys.create_for(db, origin, caller, body.app_id, body.name)
    return {**api_keys.view(created.key), "secret": created.secret}


@router.get(
    "/api-keys",
    name="api_keys.list",
    summary="List an app's API keys",
    response_model=ApiKeysOut,
    responses=errors(CALLER, BAD_APP_ID, APP_NOT_FOUND),
)
async def list_api_keys(
    caller: Admin,
    db: Db,
    app_id: Annotated[AppRef | None, Query(description="default: the caller's app")] = None,
) -> dict[str, Any]:
    """The app's API keys, without their secrets."""
    return {"api_keys": await api_keys.list_for(db, caller, app_id)}


@router.delete(
    "/api-keys/{key_id}",
    name="api_keys.revoke",
    summary="Revoke an API key",
    response_model=StatusOut,
    responses=errors(
        CALLER,
        ValidationFailed("key_id", "must be a TypeID with prefix akey_"),
        KEY_ON_KEYS,
        NotFound("API key not found"),
    )
    | answer({"status": "revoked"}),
)
async def revoke_api_key(key_id: ApiKeyId, caller: Admin, db: Db, origin: From) -> dict[str, str]:
    """Revoke an API key; it stops working at once. Needs an admin session."""
    await api_keys.revoke(db, origin, caller, key_id)
    return {"status": "revoked"}
