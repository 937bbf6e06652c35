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
    Tenant,
    rate_limit,
)
from app.api.schemas import (
    ChangePasswordIn,
    ErrorOut,
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
from app.services import auth, users

router = APIRouter(prefix="/v1/auth", tags=["auth"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}


@router.post(
    "/signup",
    dependencies=[HashAdmission, Depends(rate_limit("signup"))],
    status_code=201,
    response_model=TokensOut,
    responses=ERRORS,
)
async def signup(
    body: SignupIn,
    db: Db,
    hasher: Hasher,
    settings: Config,
    origin: From,
    tenant: Tenant,
) -> dict[str, Any]:
    """Create an account and a first session. E-mail and username are unique per app
    environment, case-insensitively."""
    fields = {**tenant, **body.model_dump(exclude_unset=True)}
    return await auth.signup(db, hasher, settings, origin, fields)


@router.post(
    "/signin",
    dependencies=[HashAdmission, Depends(rate_limit("signin"))],
    response_model=TokensOut,
    responses=ERRORS,
)
async def signin(
    body: SigninIn,
    db: Db,
    hasher: Hasher,
    settings: Config,
    origin: From,
    tenant: Tenant,
    rules: Limits,
) -> dict[str, Any]:
    """Sign in with e-mail or username and password. Unknown account and wrong password give
    the same answer. Rate-limited per IP and per account (failed attempts): 429 with
    Retry-After."""
    fields = {**tenant, **body.model_dump(exclude_unset=True)}
    return await auth.signin(db, hasher, settings, rules, origin, fields)


@router.post(
    "/refresh",
    dependencies=[Depends(rate_limit("refresh"))],
    response_model=TokensOut,
    responses=ERRORS,
)
async def refresh(body: RefreshIn, db: Db, settings: Config, origin: From) -> dict[str, Any]:
    """Exchange a refresh token for a new token pair. Each refresh token works once; a reused
    one revokes every session descended from the same sign-in."""
    return await auth.refresh(db, settings, origin, body.refresh_token)


@router.post("/signout", response_model=StatusOut, responses=ERRORS)
async def signout(caller: Caller, db: Db, origin: From) -> dict[str, str]:
    """Revoke the session whose token made this call."""
    await auth.signout(db, origin, caller)
    return {"status": "signed out"}


@router.get("/me", response_model=UserOut, responses=ERRORS)
async def me(caller: Caller) -> dict[str, Any]:
    """The signed-in user."""
    return users.view(caller.user)


@router.patch("/me", response_model=UserOut, responses=ERRORS)
async def update_me(body: ProfilePatch, caller: Caller, db: Db, origin: From) -> dict[str, Any]:
    """Change profile fields; absent fields stay as they are."""
    return await auth.update_profile(db, origin, caller, body.changes())


@router.delete("/me", response_model=StatusOut, responses=ERRORS)
async def delete_me(caller: Caller, db: Db, origin: From) -> dict[str, str]:
    """Delete the account (soft): every session ends, the e-mail and username are free again,
    and an admin can restore it within the retention window."""
    await auth.delete_account(db, origin, caller)
    return {"status": "account deleted"}


@router.get("/me/export", response_model=ExportOut, responses=ERRORS)
async def export_me(caller: Caller, db: Db) -> dict[str, Any]:
    """Everything Userkeep holds about the caller, without any token or password hash."""
    return await auth.export(db, caller)


@router.post(
    "/change-password",
    dependencies=[HashAdmission],
    response_model=StatusOut,
    responses=ERRORS,
)
async def change_password(
    body: ChangePasswordIn,
    caller: Caller,
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


@router.get("/sessions", response_model=SessionsOut, responses=ERRORS)
async def list_sessions(caller: Caller, db: Db) -> dict[str, Any]:
    """The caller's live sessions; `current` marks the one making this call."""
    return {"sessions": await auth.list_sessions(db, caller)}


@router.delete("/sessions/{session_id}", response_model=StatusOut, responses=ERRORS)
async def revoke_session(
    session_id: SessionId, caller: Caller, db: Db, origin: From
) -> dict[str, str]:
    """Revoke one of the caller's sessions (another user's session is a 404)."""
    await auth.revoke_session(db, origin, caller, session_id)
    return {"status": "revoked"}
