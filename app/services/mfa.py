"""Multi-factor authentication: TOTP (RFC 6238) and recovery codes. Every MFA rule lives here;
the mfa_token between password and second factor is services/mfa_tokens.

- Enrollment: the password starts it (a new secret, pending); a first code confirms it, turns
  MFA on and shows 10 recovery codes once. Turning it off, or a new set of recovery codes,
  takes the password and a code (TOTP or recovery).
- TOTP: 30-second steps, 6 digits, one step of drift either way, by pyotp at `clock.now()`.
  A step is accepted only if it is after the last one accepted (`last_used_step`, written
  under the user row's lock), so a code works once, even when sent twice at the same instant.
- Recovery codes: 10 random `xxxxx-xxxxx` (50 bits each), stored as SHA-256 bound to the user
  (no slow hash needed at that entropy), single use: the DELETE that uses one is the check.
- Secrets: the TOTP secret is sealed by security/secret_box (purpose "totp-secret", bound to
  the enrollment's id). No key, or one that does not open the secret: 503 with the reason.
- Wrong codes: audited, and counted per account (Rules.mfa_attempt) whichever route or token
  they came by; each route is also limited per IP (the `mfa` rule, in the router).
- Every change locks the user row first (users.lock), then the MFA rows, like every other
  change of a user, and keeps `users.mfa_enabled` in step in the same transaction.
"""

import enum
import hmac
import io
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pyotp
import segno
from sqlalchemy import delete, func, select
from sqlalchemy.exc import NoResultFound
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.db import retrying
from app.errors import (
    AuthenticationRequired,
    Conflict,
    InvalidCode,
    InvalidCredentials,
    ServiceUnavailable,
)
from app.ids import Prefix, new_id
from app.models import App, MfaEnrollment, MfaRecoveryCode, User
from app.security import secret_box, tokens
from app.security.passwords import PasswordHasher
from app.services import admin_auth, audit, email_flows, mfa_tokens, sessions, users
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin
from app.services.ratelimit import Rules
from app.services.sessions import Principal
from app.settings import Settings

log = logging.getLogger("userkeep.mfa")

TOTP = "totp"
SECRET_PURPOSE = "totp-secret"  # noqa: S105 - a purpose's name, not a secret
STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10
# Base32's lower-case alphabet: no 0/1/8/9 to mistake for O/I/B/g; 10 characters = 50 bits.
RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
RECOVERY_CHARS = 10

ALREADY_ON = "MFA is already on; turn it off first (DELETE /v1/auth/mfa/totp)"
NOT_PENDING = "no TOTP enrollment is pending; start one with POST /v1/auth/mfa/totp"
NOT_ON = "MFA is not on"
DEAD_TOKEN = "the mfa_token is used, expired or out of tries; sign in again"  # noqa: S105
UNREADABLE = (
    "the stored TOTP secret cannot be decrypted with this SECRET_KEY (it was changed or "
    "differs between nodes): restore the key the secret was stored under"
)
T = TypeVar("T")


@dataclass(frozen=True)
class Factor:
    """A second factor as a request presents it: exactly one of the two."""

    code: str | None = None
    recovery_code: str | None = None

    @property
    def method(self) -> str:
        return TOTP if self.code is not None else "recovery_code"


class _Wrong(enum.Enum):
    """A wrong code, whose try was counted and audited in the transaction just committed."""

    WRONG = "wrong"


WRONG = _Wrong.WRONG


# ---- TOTP and recovery codes ---------------------------------------------------------------


def _seal(settings: Settings, enrollment_id: str, secret: str) -> str:
    return secret_box.box(settings).encrypt(SECRET_PURPOSE, secret, enrollment_id)


def _open(settings: Settings, enrollment: MfaEnrollment) -> str:
    """The secret of a locked enrollment; one sealed under a previous key (a rotation) is
    sealed again under the current key, in the caller's transaction."""
    try:
        secret, stale = secret_box.box(settings).open(
            SECRET_PURPOSE, enrollment.secret, enrollment.id
        )
    except secret_box.SecretBoxError:
        log.error("enrollment %s: %s", enrollment.id, UNREADABLE)
        raise ServiceUnavailable(UNREADABLE) from None
    if stale:
        enrollment.secret = _seal(settings, enrollment.id, secret)
    return secret


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)


def time_step(now: datetime) -> int:
    """The RFC 6238 time step of an instant (T = floor(unix time / 30))."""
    return int(now.timestamp()) // STEP_SECONDS


def _accepted_step(secret: str, code: str, last_used: int | None, now: datetime) -> int | None:
    """The step within the drift window whose code is `code` and that is later than the last
    one used; None when there is none."""
    totp = _totp(secret)
    current = time_step(now)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        # Every step is compared, so the time taken says nothing about which one matched.
        matches = hmac.compare_digest(totp.generate_otp(step), code)
        if matches and (last_used is None or step > last_used):
            found = step
    return found


def _normalise_recovery(code: str) -> str:
    """How a recovery code is compared: case, dashes and spaces (a paste) do not count."""
    return "".join(code.lower().replace("-", "").split())


def _recovery_digest(user_id: str, code: str) -> bytes:
    # Bound to the user, like email_codes: a leaked digest matches no other account's code.
    return tokens.digest(f"{user_id}:{_normalise_recovery(code)}")


def _new_recovery_code() -> str:
    chars = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CHARS))
    return f"{chars[:5]}-{chars[5:]}"


async def _replace_recovery_codes(db: AsyncSession, user_id: str, now: datetime) -> list[str]:
    """A new set of codes for the user; the old set dies. The codes are returned once, here."""
    await db.execute(delete(MfaRecoveryCode).where(col(MfaRecoveryCode.user_id) == user_id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    for code in codes:
        db.add(
            MfaRecoveryCode(
                user_id=user_id, code_hash=_recovery_digest(user_id, code), created_at=now
            )
        )
    return codes


async def _recovery_codes_left(db: AsyncSession, user_id: str) -> int:
    count = (
        await db.execute(
            select(func.count())
            .select_from(MfaRecoveryCode)
            .where(col(MfaRecoveryCode.user_id) == user_id)
        )
    ).scalar_one()
    return int(count)


def qr_svg(uri: str) -> str:
    """The otpauth URI as a standalone SVG QR code (an authenticator app scans it)."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False)
    return out.getvalue().decode()


# ---- reading -------------------------------------------------------------------------------


async def _enrollment(db: AsyncSession, user_id: str) -> MfaEnrollment | None:
    """The user's TOTP enrollment, locked (the user row is locked already)."""
    found: MfaEnrollment | None = (
        await db.execute(
            select(MfaEnrollment)
            .where(col(MfaEnrollment.user_id) == user_id, col(MfaEnrollment.type) == TOTP)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return found


async def status(db: AsyncSession, principal: Principal) -> dict[str, Any]:
    """GET /v1/auth/mfa: what the user has on, never a secret."""
    user_id = principal.user.id
    async with db.begin():
        enrollment = (
            await db.execute(
                select(MfaEnrollment).where(
                    col(MfaEnrollment.user_id) == user_id, col(MfaEnrollment.type) == TOTP
                )
            )
        ).scalar_one_or_none()
        left = await _recovery_codes_left(db, user_id)
    confirmed = enrollment is not None and enrollment.confirmed_at is not None
    return {
        "enabled": confirmed,
        "methods": list(mfa_tokens.METHODS) if confirmed else [],
        "pending": enrollment is not None and not confirmed,
        "recovery_codes_left": left if confirmed else 0,
        "created_at": enrollment.confirmed_at if confirmed and enrollment else None,
        "last_used_at": enrollment.last_used_at if confirmed and enrollment else None,
    }


async def enrollments_view(db: AsyncSession, user_id: str) -> list[dict[str, Any]]:
    """The export's `mfa_enrollments` (call inside a transaction): no secret, no step."""
    rows = (
        await db.execute(
            select(MfaEnrollment)
            .where(col(MfaEnrollment.user_id) == user_id)
            .order_by(col(MfaEnrollment.id))
        )
    ).scalars()
    return [
        {
            "id": row.id,
            "type": row.type,
            "created_at": row.created_at,
            "confirmed_at": row.confirmed_at,
            "last_used_at": row.last_used_at,
        }
        for row in rows
    ]


# ---- checking a factor ---------------------------------------------------------------------


async def _use(db: AsyncSession, settings: Settings, user: User, factor: Factor) -> bool:
    """Use the factor up if it is right (the user row is locked): the TOTP step is recorded,
    the recovery code deleted. False when it is wrong (or MFA is not on)."""
    now = clock.now()
    if factor.code is not None:
        enrollment = await _enrollment(db, user.id)
        if enrollment is None or enrollment.confirmed_at is None:
            return False
        secret = _open(settings, enrollment)
        step = _accepted_step(secret, factor.code, enrollment.last_used_step, now)
        if step is None:
            return False
        enrollment.last_used_step = step
        enrollment.last_used_at = now
        return True
    used = await db.execute(
        delete(MfaRecoveryCode)
        .where(
            col(MfaRecoveryCode.user_id) == user.id,
            col(MfaRecoveryCode.code_hash) == _recovery_digest(user.id, factor.recovery_code or ""),
        )
        .returning(col(MfaRecoveryCode.id))
    )
    return used.first() is not None


def _record_wrong(db: AsyncSession, origin: Origin, user: User, route: str, method: str) -> None:
    audit.by_user(db, "user.mfa_challenge_failed", origin, user, {"route": route, "method": method})


async def _record_recovery_use(db: AsyncSession, origin: Origin, user: User, route: str) -> None:
    left = await _recovery_codes_left(db, user.id)
    audit.by_user(
        db,
        "user.mfa_recovery_code_used",
        origin,
        user,
        {"route": route, "recovery_codes_left": left},
    )


async def _check_password(hasher: PasswordHasher, rules: Rules, user: User, password: str) -> None:
    # A stolen session must not buy extra password guesses: same budget as sign-in.
    async with rules.password_attempt(user.id) as attempt:
        ok, _ = await hasher.verify(password, user.password_hash)
        if not ok:
            raise InvalidCredentials("password is wrong")
        attempt.succeeded()


async def _with_factor(
    db: AsyncSession,
    rules: Rules,
    user_id: str,
    work: Callable[[], Awaitable[T | _Wrong]],
) -> T:
    """Run `work` (one retried transaction) inside the user's budget of wrong codes: a WRONG
    outcome is committed (its try and audit row), then counted and answered `invalid_code`."""
    async with rules.mfa_attempt(user_id) as attempt:
        outcome = await retrying(db, work)
        if not isinstance(outcome, _Wrong):
            attempt.succeeded()
    if isinstance(outcome, _Wrong):
        raise InvalidCode()
    return outcome


# ---- enrollment ----------------------------------------------------------------------------


async def _remove_factors(db: AsyncSession, user: User) -> None:
    """Delete the user's enrollments (pending or on), recovery codes and mfa_tokens, and turn
    `mfa_enabled` off (the user row locked)."""
    await db.execute(delete(MfaEnrollment).where(col(MfaEnrollment.user_id) == user.id))
    await db.execute(delete(MfaRecoveryCode).where(col(MfaRecoveryCode.user_id) == user.id))
    await mfa_tokens.forget_user(db, user.id)
    if user.mfa_enabled:
        users.touch(user)
        user.mfa_enabled = False
        # Faroe sees a user with MFA on as disabled (FAROE_MFA_USERS): its view changed.
        user.disabled_counter += 1


async def start_totp(
    db: AsyncSession,
    hasher: PasswordHasher,
    settings: Settings,
    rules: Rules,
    origin: Origin,
    principal: Principal,
    password: str,
) -> dict[str, Any]:
    """POST /v1/auth/mfa/totp: a new secret, pending until confirmed (a pending one before it
    is replaced). 409 when MFA is already on."""
    secret_box.box(settings)  # 503 before a password is spent on a secret we cannot keep
    await _check_password(hasher, rules, principal.user, password)
    secret = pyotp.random_base32()  # 32 characters: 160 bits, RFC 4226's recommended length
    enrollment_id = new_id(Prefix.MFA_ENROLLMENT)
    async with db.begin():
        user = await users.lock(db, principal.user.id)
        existing = await _enrollment(db, user.id)
        if existing is not None and existing.confirmed_at is not None:
            raise Conflict(ALREADY_ON)
        if existing is not None:
            await db.execute(delete(MfaEnrollment).where(col(MfaEnrollment.id) == existing.id))
        db.add(
            MfaEnrollment(
                id=enrollment_id,
                user_id=user.id,
                type=TOTP,
                secret=_seal(settings, enrollment_id, secret),
                created_at=clock.now(),
            )
        )
        issuer = (
            await db.execute(select(col(App.name)).where(col(App.id) == user.app_id))
        ).scalar_one()
        email = user.email
        audit.by_user(db, "user.mfa_enrollment_started", origin, user, {"type": TOTP})
    uri = _totp(secret).provisioning_uri(name=email, issuer_name=issuer)
    return {"id": enrollment_id, "secret": secret, "otpauth_uri": uri, "qr_svg": qr_svg(uri)}


async def confirm_totp(
    db: AsyncSession,
    settings: Settings,
    rules: Rules,
    origin: Origin,
    principal: Principal,
    code: str,
) -> dict[str, Any]:
    """POST /v1/auth/mfa/totp/confirm: the first code turns MFA on; the recovery codes are
    returned, once. Other sessions stay: the user proved the password and the new factor."""

    async def work() -> list[str] | _Wrong:
        user = await users.lock(db, principal.user.id)
        enrollment = await _enrollment(db, user.id)
        if enrollment is None:
            raise Conflict(NOT_PENDING)
        if enrollment.confirmed_at is not None:
            raise Conflict(ALREADY_ON)
        now = clock.now()
        step = _accepted_step(_open(settings, enrollment), code, enrollment.last_used_step, now)
        if step is None:
            _record_wrong(db, origin, user, "confirm", TOTP)
            return WRONG
        enrollment.confirmed_at = now
        enrollment.last_used_step = step
        enrollment.last_used_at = now
        users.touch(user)
        user.mfa_enabled = True
        user.disabled_counter += 1  # Faroe's view of the user changed (FAROE_MFA_USERS)
        codes = await _replace_recovery_codes(db, user.id, now)
        audit.by_user(db, "user.mfa_enabled", origin, user, {"type": TOTP})
        return codes

    secret_box.box(settings)
    codes = await _with_factor(db, rules, principal.user.id, work)
    return {"recovery_codes": codes}


async def _change_with_factor(
    db: AsyncSession,
    hasher: PasswordHasher,
    settings: Settings,
    rules: Rules,
    origin: Origin,
    principal: Principal,
    password: str,
    factor: Factor,
    route: str,
    change: Callable[[User], Awaitable[T]],
) -> T:
    """The password, then the factor (used up), then `change`, in one transaction."""
    if factor.code is not None:
        secret_box.box(settings)
    await _check_password(hasher, rules, principal.user, password)

    async def work() -> T | _Wrong:
        user = await users.lock(db, principal.user.id)
        if not user.mfa_enabled:
            raise Conflict(NOT_ON)
        if not await _use(db, settings, user, factor):
            _record_wrong(db, origin, user, route, factor.method)
            return WRONG
        if factor.recovery_code is not None:
            await _record_recovery_use(db, origin, user, route)
        return await change(user)

    return await _with_factor(db, rules, principal.user.id, work)


async def disable_totp(
    db: AsyncSession,
    hasher: PasswordHasher,
    settings: Settings,
    rules: Rules,
    origin: Origin,
    principal: Principal,
    password: str,
    factor: Factor,
) -> dict[str, Any]:
    """DELETE /v1/auth/mfa/totp: MFA off, recovery codes and pending mfa_tokens gone. The
    user's sessions stay (the user did this, with the password and a factor)."""

    async def change(user: User) -> dict[str, Any]:
        await _remove_factors(db, user)
        audit.by_user(db, "user.mfa_disabled", origin, user, {"by": "user"})
        return users.view(user)

    return await _change_with_factor(
        db, hasher, settings, rules, origin, principal, password, factor, "disable", change
    )


async def regenerate_recovery_codes(
    db: AsyncSession,
    hasher: PasswordHasher,
    settings: Settings,
    rules: Rules,
    origin: Origin,
    principal: Principal,
    password: str,
    factor: Factor,
) -> dict[str, Any]:
    """POST /v1/auth/mfa/recovery-codes: a new set, shown once; the old set dies."""

    async def change(user: User) -> dict[str, Any]:
        codes = await _replace_recovery_codes(db, user.id, clock.now())
        audit.by_user(db, "user.mfa_recovery_codes_regenerated", origin, user)
        return {"recovery_codes": codes}

    return await _change_with_factor(
        db, hasher, settings, rules, origin, principal, password, factor, "recovery_codes", change
    )


# ---- the second step of a sign-in ----------------------------------------------------------


async def challenge(
    db: AsyncSession,
    settings: Settings,
    rules: Rules,
    origin: Origin,
    mfa_token: str,
    factor: Factor,
) -> dict[str, Any]:
    """POST /v1/auth/mfa/challenge: the token of a right password and a factor → the token
    pair. A wrong code is `invalid_code` (try again with the same token, up to 5 times); a
    dead token (used, expired, out of tries) is 401: sign in again."""
    if factor.code is not None:
        secret_box.box(settings)
    async with db.begin():
        user_id = await mfa_tokens.owner(db, mfa_token)
    if user_id is None:
        raise AuthenticationRequired(DEAD_TOKEN)

    async def work() -> tuple[User, sessions.Issued] | _Wrong | None:
        try:
            user = await users.lock(db, user_id)
        except NoResultFound:
            return None
        row = await mfa_tokens.lock(db, mfa_token)
        if row is None or row.user_id != user.id or user.deleted_at is not None:
            return None
        if not user.mfa_enabled:  # removed since the password was checked
            await mfa_tokens.consume(db, row)
            return None
        # Checked again at this step: a ban or the app's verification rule may have come since.
        users.ensure_not_banned(user)
        await email_flows.ensure_may_sign_in(db, settings, user)
        if not await _use(db, settings, user, factor):
            await mfa_tokens.count_wrong_try(db, row)
            _record_wrong(db, origin, user, "challenge", factor.method)
            return WRONG
        await mfa_tokens.consume(db, row)
        if factor.recovery_code is not None:
            await _record_recovery_use(db, origin, user, "challenge")
        issued = sessions.issue(db, user, settings, origin)
        audit.by_user(db, "user.signin", origin, user, {"mfa": factor.method})
        return user, issued

    async with rules.mfa_attempt(user_id) as attempt:
        outcome = await retrying(db, work)
        # A token that died (used by a concurrent twin, expired) is no guess at a code.
        if not isinstance(outcome, _Wrong):
            attempt.succeeded()
    if outcome is None:
        raise AuthenticationRequired(DEAD_TOKEN)
    if isinstance(outcome, _Wrong):
        raise InvalidCode()
    return sessions.token_response(*outcome)


# ---- removal -------------------------------------------------------------------------------


async def forget(db: AsyncSession, user: User) -> None:
    """Every MFA row of a user being deleted (DELETE /me), in the caller's transaction with
    the user row locked; a purge removes them by ON DELETE CASCADE."""
    await _remove_factors(db, user)


async def admin_remove(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, user_id: str
) -> dict[str, Any]:
    """DELETE /v1/admin/users/{id}/mfa: the factors go (a lost phone), and with them every
    session of the user — whoever holds one may be the reason. MFA not on: 200, and only a
    pending enrollment (if any) goes."""
    async with db.begin():
        user = await admin_auth.lock_user(db, principal, user_id)
        admin_auth.ensure_may_change_admin(principal, user)
        was_on = user.mfa_enabled
        await _remove_factors(db, user)
        if was_on:
            revoked = await sessions.revoke_all_for_user(db, user, "mfa_removed")
            audit.record(
                db,
                "user.mfa_disabled",
                origin=origin,
                app_id=user.app_id,
                env_id=user.env_id,
                actor_type=principal.actor_type,
                actor_id=principal.actor_id,
                target_user_id=user.id,
                metadata={"by": "admin", "sessions_revoked": revoked},
            )
    return users.view(user)
