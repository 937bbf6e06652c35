"""/v1/auth/mfa: TOTP enrollment, recovery codes, and the second step of a sign-in. Thin:
parse, call services/mfa, shape."""

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
    OwnCaller,
    rate_limit,
)
from app.api.mfa_schemas import (
    ONE_FACTOR_MESSAGE,
    TOTP_CODE_MESSAGE,
    ChallengeIn,
    ConfirmIn,
    MfaStatusOut,
    PasswordFactorIn,
    PasswordIn,
    RecoveryCodesOut,
    TotpStartOut,
)
from app.api.openapi import JSON_BODY, OWN_SESSION, SESSION, errors
from app.api.schemas import TokensOut, UserOut
from app.errors import (
    AuthenticationRequired,
    Conflict,
    DatabaseUnavailable,
    EmailNotVerified,
    HashingOverloaded,
    InvalidCode,
    InvalidCredentials,
    RateLimited,
    ServiceUnavailable,
    UserBanned,
    ValidationFailed,
)
from app.security.secret_box import KeyUnavailable
from app.services import mfa

router = APIRouter(prefix="/v1/auth/mfa", tags=["auth"])

# No key for the TOTP secrets (SECRET_KEY unset, DATA_DIR/secret_key unusable), or a key that
# does not open the stored one (changed): the routes that read or write a secret say so.
NO_KEY = (
    KeyUnavailable(
        "SECRET_KEY is not set and /var/lib/userkeep/secret_key cannot be read or created "
        "(Permission denied): set SECRET_KEY"
    ),
    ServiceUnavailable(mfa.UNREADABLE),
)
PASSWORD_WRONG = InvalidCredentials("password is wrong")
ONE_FACTOR = ValidationFailed("body", ONE_FACTOR_MESSAGE)


# Turning MFA off and replacing the recovery codes: the password and a factor, with MFA on.
PASSWORD_AND_FACTOR = (
    OWN_SESSION,
    JSON_BODY,
    ONE_FACTOR,
    PASSWORD_WRONG,
    InvalidCode,
    Conflict(mfa.NOT_ON),
    RateLimited,
    HashingOverloaded,
    NO_KEY,
    DatabaseUnavailable,
)


@router.get(
    "",
    name="mfa.get",
    summary="Show the signed-in user's second factors",
    response_model=MfaStatusOut,
    responses=errors(SESSION, DatabaseUnavailable),
)
async def get_status(caller: Caller, db: Db) -> dict[str, Any]:
    """Whether MFA is on, what a sign-in challenge accepts, and how many recovery codes are
    left. Never a secret."""
    return await mfa.status(db, caller)


@router.post(
    "/totp",
    name="mfa.totp.start",
    summary="Start a TOTP enrollment",
    dependencies=[HashAdmission],
    response_model=TotpStartOut,
    responses=errors(
        OWN_SESSION,
        JSON_BODY,
        ValidationFailed("password", "Field required"),
        PASSWORD_WRONG,
        Conflict(mfa.ALREADY_ON),
        RateLimited,
        HashingOverloaded,
        NO_KEY[0],
        DatabaseUnavailable,
    ),
)
async def start_totp(
    body: PasswordIn,
    caller: OwnCaller,
    db: Db,
    hasher: Hasher,
    settings: Config,
    rules: Limits,
    origin: From,
) -> dict[str, Any]:
    """Make a new TOTP secret (shown once: the `secret`, the `otpauth_uri` and a QR code of
    it) after checking the password. MFA is not on until `/totp/confirm` gets a first code;
    starting again replaces a pending enrollment. 409 when MFA is already on."""
    return await mfa.start_totp(db, hasher, settings, rules, origin, caller, body.password)


@router.post(
    "/totp/confirm",
    name="mfa.totp.confirm",
    summary="Confirm the TOTP enrollment with a first code; MFA is on",
    dependencies=[Depends(rate_limit("mfa"))],
    response_model=RecoveryCodesOut,
    responses=errors(
        OWN_SESSION,
        JSON_BODY,
        ValidationFailed("code", TOTP_CODE_MESSAGE),
        InvalidCode,
        Conflict(mfa.NOT_PENDING),
        Conflict(mfa.ALREADY_ON),
        RateLimited,
        NO_KEY,
        DatabaseUnavailable,
    ),
)
async def confirm_totp(
    body: ConfirmIn, caller: OwnCaller, db: Db, settings: Config, rules: Limits, origin: From
) -> dict[str, Any]:
    """The first code from the authenticator app turns MFA on; the answer holds the 10
    recovery codes, shown only this once. The user's other sessions stay."""
    return await mfa.confirm_totp(db, settings, rules, origin, caller, body.code)


@router.delete(
    "/totp",
    name="mfa.totp.delete",
    summary="Turn MFA off",
    dependencies=[HashAdmission, Depends(rate_limit("mfa"))],
    response_model=UserOut,
    responses=errors(*PASSWORD_AND_FACTOR),
)
async def disable_totp(
    body: PasswordFactorIn,
    caller: OwnCaller,
    db: Db,
    hasher: Hasher,
    settings: Config,
    rules: Limits,
    origin: From,
) -> dict[str, Any]:
    """With the password and a TOTP `code` (or a `recovery_code`): the TOTP secret and the
    recovery codes are deleted and sign-in asks for the password alone. Answers the user."""
    return await mfa.disable_totp(
        db, hasher, settings, rules, origin, caller, body.password, body.factor()
    )


@router.post(
    "/recovery-codes",
    name="mfa.recovery_codes.regenerate",
    summary="Replace the recovery codes",
    dependencies=[HashAdmission, Depends(rate_limit("mfa"))],
    response_model=RecoveryCodesOut,
    responses=errors(*PASSWORD_AND_FACTOR),
)
async def regenerate_recovery_codes(
    body: PasswordFactorIn,
    caller: OwnCaller,
    db: Db,
    hasher: Hasher,
    settings: Config,
    rules: Limits,
    origin: From,
) -> dict[str, Any]:
    """With the password and a TOTP `code` (or a `recovery_code`): 10 new recovery codes,
    shown only now; every code of the old set stops working."""
    return await mfa.regenerate_recovery_codes(
        db, hasher, settings, rules, origin, caller, body.password, body.factor()
    )


@router.post(
    "/challenge",
    name="mfa.challenge",
    summary="Complete a sign-in with the second factor",
    dependencies=[Depends(rate_limit("mfa"))],
    response_model=TokensOut,
    responses=errors(
        JSON_BODY,
        ONE_FACTOR,
        InvalidCode,
        AuthenticationRequired(mfa.DEAD_TOKEN),
        UserBanned,
        EmailNotVerified,
        RateLimited,
        NO_KEY,
        DatabaseUnavailable,
    ),
)
async def challenge(
    body: ChallengeIn, db: Db, settings: Config, rules: Limits, origin: From
) -> dict[str, Any]:
    """Trade the `mfa_token` of a sign-in's 401 `mfa_required` and a TOTP `code` (or a
    `recovery_code`) for the token pair. A wrong code is 400 `invalid_code` (the token allows
    5); a used, expired or spent token is 401: sign in again. A TOTP code works once."""
    return await mfa.challenge(db, settings, rules, origin, body.mfa_token, body.factor())
