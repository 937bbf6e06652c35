"""/v1/admin/users/{user_id}/impersonate: an admin signs in as a user (services/impersonation).

Thin: parse, call the service, shape. The callers are those of every admin route
(admin.get_admin), but only an admin's session may impersonate; an API key may not.
"""

from typing import Any

from fastapi import APIRouter, Depends

from app.api.admin import BAD_USER_ID, CALLER, USER_NOT_FOUND, Admin
from app.api.admin_tools_schemas import ImpersonateIn, ImpersonationOut
from app.api.deps import Config, Db, From, rate_limit
from app.api.openapi import JSON_BODY, errors
from app.api.schemas import UserId
from app.errors import Forbidden, ValidationFailed
from app.services import impersonation

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(rate_limit("admin"))])


@router.post(
    "/users/{user_id}/impersonate",
    name="users.impersonate",
    summary="Impersonate a user",
    response_model=ImpersonationOut,
    responses=errors(
        CALLER,
        JSON_BODY,
        BAD_USER_ID,
        ValidationFailed("reason", "must not be blank"),
        USER_NOT_FOUND,
        Forbidden(impersonation.KEYS_CANNOT),
        Forbidden(impersonation.ADMINS_CANNOT_BE),
        Forbidden(impersonation.BANNED_CANNOT_BE),
    ),
)
async def impersonate(
    user_id: UserId, body: ImpersonateIn, caller: Admin, db: Db, settings: Config, origin: From
) -> dict[str, Any]:
    """A session of the user for the calling admin, to see what they see: at most 1 h, no
    refresh token, listed in the user's sessions and export with `impersonated_by`. Every
    change made with it is audited naming the admin and the user; changing the password,
    e-mail address or factors, deleting the account and minting tokens are refused (403).
    `POST /v1/auth/signout` with its token ends it. Admins cannot be impersonated, and only
    an admin's session may impersonate (not an API key). `reason` is kept in the audit trail."""
    return await impersonation.start(db, settings, origin, caller, user_id, body.reason)
