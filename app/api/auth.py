"""/v1/auth: sign-up, sign-in and the caller's own account. Thin: parse, call a service, shape."""

from typing import Any

from fastapi import APIRouter, Depends

from app.api.deps import (
    Caller,
    Config,
    Db,
    From,
    HashAdmission,
    Hasher,
    Limits,
    Lookups,
    OwnCaller,
    Tenant,
    rate_limit,
)
from app.api.email_schemas import SignupOut
from app.api.openapi import JSON_BODY, OWN_SESSION, SESSION, TENANT, answer, errors
from app.api.schemas import (
    ChangePasswordIn,
    ExportOut,
    ProfilePatch,
    RefreshIn,
    SessionId,
    SessionsOut,
    SigninIn,
    SignupIn,
    StatusOut,
    TokensOut,
    UserOut,
)
from app.errors import (
    AuthenticationRequired,
    DatabaseUnavailable,
    EmailNotVerified,
    EmailTaken,
    HashingOverloaded,
    InvalidCredentials,
    MfaRequired,
    NotFound,
    RateLimited,
    SessionExpired,
    UserBanned,
    UsernameTaken,
    ValidationFailed,
)
from app.services import auth, users

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post(
    "/signup",
    name="signup",
    summary="Sign up",
    dependencies=[HashAdmission, Depends(rate_limit("signup"))],
    status_code=201,
    response_model=SignupOut,
    responses=errors(
        JSON_BODY,
        ValidationFailed.example(),
        ValidationFailed("password", "is too common; choose a less guessable password"),
        TENANT,
        EmailTaken,
        UsernameTaken,
        RateLimited,
        HashingOverloaded,
        DatabaseUnavailable,
    ),
)
async def signup(
    body: SignupIn,
    db: Db,
    hasher: Hasher,
    settings: Config,
    origin: From,
    tenant: Tenant,
) -> dict[str, Any]:
    """Create an account and a first session, and send the verification mail. E-mail and
    username are unique per app environment, case-insensitively. Where the app requires a
    verified address, the answer is the user alone: the session comes with verification."""
    fields = {**tenant, **body.model_dump(exclude_unset=True)}
    return await auth.signup(db, hasher, settings, origin, fields)


@router.post(
    "/signin",
    name="signin",
    summary="Sign in",
    dependencies=[HashAdmission, Depends(rate_limit("signin"))],
    response_model=TokensOut,
    responses=errors(
        JSON_BODY,
        ValidationFailed("body", "give exactly one of email or username"),
        TENANT,
        InvalidCredentials,
        MfaRequired,
        UserBanned,
        EmailNotVerified,
        RateLimited,
        HashingOverloaded,
        DatabaseUnavailable,
    ),
)
async def signin(
    body: SigninIn,
    db: Db,
    hasher: Hasher,
    settings: Config,
    origin: From,
    tenant: Tenant,
    rules: Limits,
    lookups: Lookups,
) -> dict[str, Any]:
    """Sign in with e-mail or username and password. Unknown account and wrong password give
    the same answer. Rate-limited per IP and per account (failed attempts): 429 with
    Retry-After. A user with MFA on gets 401 `mfa_required` with an `mfa_token` instead of a
    session, after the right password only: POST /v1/auth/mfa/challenge completes it."""
    fields = {**tenant, **body.model_dump(exclude_unset=True)}
    return await auth.signin(db, lookups, hasher, settings, rules, origin, fields)


@router.post(
    "/refresh",
    name="refresh",
    summary="Exchange a refresh token for a new token pair",
    dependencies=[Depends(rate_limit("refresh"))],
    response_model=TokensOut,
    responses=errors(
        JSON_BODY,
        ValidationFailed("refresh_token", "Field required"),
        AuthenticationRequired("invalid refresh token"),
        SessionExpired("refresh token expired or revoked"),
        SessionExpired("refresh token was already used; every session of it is revoked"),
        UserBanned,
        EmailNotVerified,
        RateLimited,
        DatabaseUnavailable,
    ),
)
async def refresh(body: RefreshIn, db: Db, settings: Config, origin: From) -> dict[str, Any]:
    """Exchange a refresh token for a new token pair. Each refresh token works once; a reused
    one revokes every session descended from the same sign-in."""
    return await auth.refresh(db, settings, origin, body.refresh_token)


@router.post(
    "/signout",
    name="signout",
    summary="Sign out",
    response_model=StatusOut,
    responses=errors(SESSION, DatabaseUnavailable) | answer({"status": "signed out"}),
)
async def signout(caller: Caller, db: Db, origin: From) -> dict[str, str]:
    """Revoke the session whose token made this call."""
    await auth.signout(db, origin, caller)
    return {"status": "signed out"}


@router.get(
    "/me",
    name="me.get",
    summary="Get the signed-in user",
    response_model=UserOut,
    responses=errors(SESSION, DatabaseUnavailable),
)
async def me(caller: Caller) -> dict[str, Any]:
    """The signed-in user."""
    return users.view(caller.user)


@router.patch(
    "/me",
    name="me.update",
    summary="Update the signed-in user's profile",
    response_model=UserOut,
    responses=errors(
        SESSION,
        JSON_BODY,
        ValidationFailed("display_username", "must match the username, up to case"),
        UsernameTaken,
        DatabaseUnavailable,
    ),
)
async def update_me(body: ProfilePatch, caller: Caller, db: Db, origin: From) -> dict[str, Any]:
    """Change profile fields; absent fields stay as they are."""
    return await auth.update_profile(db, origin, caller, body.changes())


@router.delete(
    "/me",
    name="me.delete",
    summary="Delete the signed-in user's account",
    response_model=StatusOut,
    responses=errors(OWN_SESSION, DatabaseUnavailable) | answer({"status": "account deleted"}),
)
async def delete_me(caller: OwnCaller, db: Db, origin: From) -> dict[str, str]:
    """Delete the account (soft): every session ends, the e-mail and username are free again,
    and an admin can restore it within the retention window."""
    await auth.delete_account(db, origin, caller)
    return {"status": "account deleted"}


@router.get(
    "/me/export",
    name="me.export",
    summary="Export everything held about the signed-in user",
    response_model=ExportOut,
    responses=errors(SESSION, DatabaseUnavailable),
)
async def export_me(caller: Caller, db: Db) -> dict[str, Any]:
    """Everything Userkeep holds about the caller, without any token or password hash."""
    return await auth.export(db, caller)


@router.post(
    "/change-password",
    name="change_password",
    summary="Change the password",
    dependencies=[HashAdmission],
    response_model=StatusOut,
    responses=errors(
        OWN_SESSION,
        JSON_BODY,
        ValidationFailed("new_password", "must be at least 8 characters"),
        InvalidCredentials("current password is wrong"),
        RateLimited,
        HashingOverloaded,
        DatabaseUnavailable,
    )
    | answer({"status": "password changed"}),
)
async def change_password(
    body: ChangePasswordIn,
    caller: OwnCaller,
    db: Db,
    hasher: Hasher,
    settings: Config,
    rules: Limits,
    origin: From,
) -> dict[str, str]:
    """Change the password; every other session of the user is revoked. Wrong current
    passwords count against the same per-account limit as failed sign-ins."""
    await auth.change_password(
        db, hasher, settings, rules, origin, caller, body.current_password, body.new_password
    )
    return {"status": "password changed"}


@router.get(
    "/sessions",
    name="sessions.list",
    summary="List the signed-in user's sessions",
    response_model=SessionsOut,
    responses=errors(SESSION, DatabaseUnavailable),
)
async def list_sessions(caller: Caller, db: Db) -> dict[str, Any]:
    """The caller's live sessions; `current` marks the one making this call."""
    return {"sessions": await auth.list_sessions(db, caller)}


@router.delete(
    "/sessions/{session_id}",
    name="sessions.revoke",
    summary="Revoke one of the signed-in user's sessions",
    response_model=StatusOut,
    responses=errors(
        SESSION,
        ValidationFailed("session_id", "must be a TypeID with prefix ases_"),
        NotFound("session not found"),
        DatabaseUnavailable,
    )
    | answer({"status": "revoked"}),
)
async def revoke_session(
    session_id: SessionId, caller: Caller, db: Db, origin: From
) -> dict[str, str]:
    """Revoke one of the caller's sessions (another user's session is a 404)."""
    await auth.revoke_session(db, origin, caller, session_id)
    return {"status": "revoked"}
