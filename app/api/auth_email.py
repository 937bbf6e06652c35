"""/v1/auth e-mail flows: verify the address, reset a forgotten password, change the address.
Thin: parse, call services/email_flows, shape."""

from typing import Any

from fastapi import APIRouter, Depends

from app.api.deps import (
    Batcher,
    Config,
    Db,
    From,
    HashAdmission,
    Hasher,
    Limits,
    Lookups,
    MaybeCaller,
    OwnCaller,
    Tenant,
    rate_limit,
)
from app.api.email_schemas import (
    AddressIn,
    ChangeEmailIn,
    ConfirmEmailChangeIn,
    ResetPasswordIn,
    VerifiedOut,
    VerifyEmailIn,
    VerifySendIn,
)
from app.api.openapi import JSON_BODY, OWN_SESSION, SESSION, TENANT, answer, errors
from app.api.schemas import StatusOut, UserOut
from app.errors import (
    AuthenticationRequired,
    DatabaseUnavailable,
    EmailTaken,
    HashingOverloaded,
    InvalidCode,
    InvalidCredentials,
    RateLimited,
    ValidationFailed,
)
from app.services import email_flows
from app.services.email_flows import Presented

router = APIRouter(prefix="/v1/auth", tags=["auth"])

# Routes that serve signed-out callers too: the bearer token is optional (FastAPI lists the
# bearer scheme; the empty requirement added here means "or none"), but one sent must be valid.
OPTIONAL_BEARER: dict[str, Any] = {"security": [{}]}

OK = {"status": "ok"}


@router.post(
    "/verify-email/send",
    name="verify_email.send",
    openapi_extra=OPTIONAL_BEARER,
    summary="Send the e-mail verification mail",
    dependencies=[Depends(rate_limit("mail"))],
    response_model=StatusOut,
    responses=errors(
        JSON_BODY,
        ValidationFailed.example(),
        AuthenticationRequired(email_flows.NO_ADDRESS),
        SESSION,
        TENANT,
        RateLimited,
        DatabaseUnavailable,
    )
    | answer(OK),
)
async def send_verification(
    body: VerifySendIn,
    db: Db,
    batcher: Batcher,
    lookups: Lookups,
    origin: From,
    tenant: Tenant,
    rules: Limits,
    caller: MaybeCaller,
) -> dict[str, str]:
    """Send a code and link proving the address: to `email` (signed out), else to the bearer's
    own address. Always `{"status": "ok"}`, in the same time, whether the address has an
    account, is verified already, or is unknown: the mail is sent later by a worker."""
    fields = {**tenant, **body.model_dump(exclude_unset=True)}
    await email_flows.send_verification(db, batcher, lookups, rules, origin, fields, caller)
    return OK


@router.post(
    "/verify-email",
    name="verify_email.confirm",
    summary="Verify the e-mail address with the mail's code or link",
    dependencies=[Depends(rate_limit("code"))],
    response_model=VerifiedOut,
    response_model_exclude_none=True,
    responses=errors(
        JSON_BODY,
        ValidationFailed("body", "give exactly one of token or code"),
        TENANT,
        InvalidCode,
        RateLimited,
        DatabaseUnavailable,
    ),
)
async def verify_email(
    body: VerifyEmailIn, db: Db, settings: Config, origin: From, tenant: Tenant
) -> dict[str, Any]:
    """Mark the address verified with the link's `token`, or with the `email` and its 6-digit
    `code`. A wrong, used or expired one is `invalid_code` (a code dies after 5 wrong tries).
    Where the app requires a verified address, the answer also signs the user in."""
    return await email_flows.verify_email(db, settings, origin, body.presented(tenant))


@router.post(
    "/forgot-password",
    name="password.forgot",
    summary="Send a password reset mail",
    dependencies=[Depends(rate_limit("mail"))],
    response_model=StatusOut,
    responses=errors(
        JSON_BODY, ValidationFailed.example(), TENANT, RateLimited, DatabaseUnavailable
    )
    | answer(OK),
)
async def forgot_password(
    body: AddressIn,
    batcher: Batcher,
    lookups: Lookups,
    origin: From,
    tenant: Tenant,
    rules: Limits,
) -> dict[str, str]:
    """Send a reset code and link to the address if an account has it. Always
    `{"status": "ok"}`, in the same time, known address or not."""
    fields = {**tenant, **body.model_dump(exclude_unset=True)}
    await email_flows.forgot_password(batcher, lookups, rules, origin, fields)
    return OK


@router.post(
    "/reset-password",
    name="password.reset",
    summary="Set a new password with the reset mail's code or link",
    dependencies=[HashAdmission, Depends(rate_limit("code"))],
    response_model=StatusOut,
    responses=errors(
        JSON_BODY,
        ValidationFailed("new_password", "must be at least 8 characters"),
        TENANT,
        InvalidCode,
        RateLimited,
        HashingOverloaded,
        DatabaseUnavailable,
    )
    | answer({"status": "password reset"}),
)
async def reset_password(
    body: ResetPasswordIn,
    db: Db,
    hasher: Hasher,
    settings: Config,
    origin: From,
    tenant: Tenant,
) -> dict[str, str]:
    """Set a new password with the link's `token`, or the `email` and its `code`. Every
    session of the user ends; the address counts as verified (the code came through it)."""
    await email_flows.reset_password(
        db, hasher, settings, origin, body.presented(tenant), body.new_password
    )
    return {"status": "password reset"}


@router.post(
    "/change-email",
    name="email.change",
    summary="Ask to change the e-mail address",
    dependencies=[HashAdmission, Depends(rate_limit("mail"))],
    response_model=StatusOut,
    responses=errors(
        OWN_SESSION,
        JSON_BODY,
        ValidationFailed("new_email", "is already the account's address"),
        InvalidCredentials("password is wrong"),
        EmailTaken,
        RateLimited,
        HashingOverloaded,
        DatabaseUnavailable,
    )
    | answer({"status": "confirmation sent"}),
)
async def change_email(
    body: ChangeEmailIn,
    caller: OwnCaller,
    db: Db,
    hasher: Hasher,
    origin: From,
    rules: Limits,
) -> dict[str, str]:
    """Send a code and link to `new_email`; the address changes when one of them comes back
    (`/change-email/confirm`), and a notice then goes to the old address. Needs the password."""
    await email_flows.change_email(db, hasher, rules, origin, caller, body.new_email, body.password)
    return {"status": "confirmation sent"}


@router.post(
    "/change-email/confirm",
    name="email.change.confirm",
    openapi_extra=OPTIONAL_BEARER,
    summary="Confirm the new e-mail address with the mail's code or link",
    dependencies=[Depends(rate_limit("code"))],
    response_model=UserOut,
    responses=errors(
        SESSION,
        JSON_BODY,
        ValidationFailed("body", "give exactly one of token or code"),
        AuthenticationRequired(email_flows.CODE_NEEDS_SESSION),
        InvalidCode,
        EmailTaken,
        RateLimited,
        DatabaseUnavailable,
    ),
)
async def confirm_email_change(
    body: ConfirmEmailChangeIn, db: Db, origin: From, caller: MaybeCaller
) -> dict[str, Any]:
    """Move the account to the new address (verified) with the link's `token`, or the `code`
    with the bearer token of the user who asked. 409 `email_taken` if another account took the
    address meanwhile."""
    presented = Presented(token=body.token, code=body.code, user=caller.user if caller else None)
    return await email_flows.confirm_email_change(db, origin, presented)
