"""E-mail flows: verify the address, reset a forgotten password, change the address.

How a mail leaves: the request only enqueues a `mail.account` job in its own transaction (one
INSERT; app/services/jobs.py). The worker then finds the user, issues the code and link
(email_codes), writes the audit row and sends the mail (app/services/mail.py). So:
- a request by address (forgot-password, verify-email/send) does the same work, and answers
  the same, whether or not the address has an account: the job for an unknown address finds
  nobody and ends. Nothing about the account is read in the request.
- no code or token is ever in the queue: it is made by the worker, stored hashed, and put
  only into the mail. A retried job (SMTP was down) makes a new one, which replaces the last.
- the audit row of a mail is written when the worker prepares it, with the requester's
  address and browser; an unknown address leaves none.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import LookupPool, retrying
from app.errors import (
    AuthenticationRequired,
    Conflict,
    EmailNotVerified,
    EmailTaken,
    InvalidCode,
    InvalidCredentials,
    ValidationFailed,
)
from app.models import App, EmailCode, Environment, User
from app.security.passwords import PasswordHasher, check_policy
from app.services import admin_auth, audit, email_codes, jobs, mail, sessions, tenancy, users
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin
from app.services.email_codes import Purpose
from app.services.job_batches import JobBatcher
from app.services.ratelimit import Rules
from app.services.sessions import Principal
from app.settings import Settings

log = logging.getLogger("userkeep.mail")

MAIL_JOB = "mail.account"
NO_ADDRESS = "give an e-mail address, or a bearer token"
CODE_NEEDS_SESSION = "a code needs the bearer token of the user who asked"
# A mail is worth trying for a while (an SMTP server restarting, a full queue upstream): about
# 2.5 hours in 10 attempts, longer than a reset code lives, then the job is failed for admins.
MAIL_RETRY = jobs.Retry(
    max_attempts=10,
    first_delay=timedelta(seconds=15),
    factor=2.0,
    max_delay=timedelta(minutes=30),
)


class Mail(StrEnum):
    """What a mail job sends; the value is also its template's name (app/mail_templates)."""

    VERIFY = "verify_email"
    RESET = "reset_password"
    CHANGE = "change_email"
    CHANGED = "email_changed"  # the notice to the old address


# The page of the link each mail carries, under the app's link_base_url (or PUBLIC_URL).
LINK_PATH = {
    Mail.VERIFY: "verify-email",
    Mail.RESET: "reset-password",
    Mail.CHANGE: "confirm-email-change",
}
PURPOSE = {
    Mail.VERIFY: Purpose.VERIFY_EMAIL,
    Mail.RESET: Purpose.RESET_PASSWORD,
    Mail.CHANGE: Purpose.CHANGE_EMAIL,
}
# Written by a request that names the user (an admin's, a signed-in user's); the mail's own
# row (SENT_ACTION) follows from the worker.
REQUESTED_ACTION = {
    Mail.VERIFY: "user.verification_requested",
    Mail.RESET: "user.password_reset_requested",
}
SENT_ACTION = {
    Mail.VERIFY: "user.verification_mail_sent",
    Mail.RESET: "user.password_reset_mail_sent",
    Mail.CHANGE: "user.email_change_mail_sent",
    Mail.CHANGED: "user.email_changed_notice_sent",
}


@dataclass(frozen=True)
class Requester:
    """Who asked for a mail, for its audit row: the user themselves (or an anonymous caller
    naming an address), an admin, or an API key."""

    origin: Origin
    actor_type: str = "user"
    actor_id: str | None = None

    @classmethod
    def admin(cls, origin: Origin, principal: AdminPrincipal) -> "Requester":
        return cls(origin, principal.actor_type, principal.actor_id)


def _mail_job(what: Mail, by: Requester, **target: str | None) -> dict[str, Any]:
    """A mail job's payload: which mail, to whom, and who asked. Never a code: the worker
    makes it (`prepare`), so a queued job holds nothing that would open an account."""
    return {
        "mail": what.value,
        "ip": by.origin.ip,
        "user_agent": (by.origin.user_agent or "")[:512] or None,
        "actor_type": by.actor_type,
        "actor_id": by.actor_id,
        **{key: value for key, value in target.items() if value is not None},
    }


async def _enqueue(
    db: AsyncSession, app_id: str, what: Mail, by: Requester, **target: str | None
) -> None:
    await jobs.enqueue(db, MAIL_JOB, _mail_job(what, by, **target), app_id=app_id)


async def verification_required(db: AsyncSession, settings: Settings, app_id: str) -> bool:
    """The app's REQUIRE_EMAIL_VERIFICATION (its own setting, else the service's)."""
    own = (
        await db.execute(select(col(App.require_email_verification)).where(col(App.id) == app_id))
    ).scalar_one_or_none()
    return settings.require_email_verification if own is None else bool(own)


async def ensure_may_sign_in(db: AsyncSession, settings: Settings, user: User) -> None:
    """403 email_not_verified for an unverified user of an app that requires verification
    (sign-in, refresh). A verified user costs nothing here."""
    if not user.email_verified and await verification_required(db, settings, user.app_id):
        raise EmailNotVerified()


# ---- requests: each only enqueues -----------------------------------------------------------


async def on_signup(db: AsyncSession, user: User, origin: Origin) -> None:
    """Sign-up sends the verification mail (in the sign-up's transaction)."""
    if not user.email_verified:
        await _enqueue(db, user.app_id, Mail.VERIFY, Requester(origin), user_id=user.id)


async def _by_address(
    batcher: JobBatcher,
    lookups: LookupPool,
    rules: Rules,
    what: Mail,
    origin: Origin,
    fields: dict[str, Any],
) -> None:
    """Queue the mail for whoever has the address: the job is the request's only write (the
    worker finds the user, or nobody), so it is group-committed with its neighbours'."""
    app_id, env_id = await tenancy.resolve_ids(lookups, fields.get("app_id"), fields.get("env_id"))
    await rules.mail_to(env_id, fields["email"])
    job = _mail_job(what, Requester(origin), env_id=env_id, email=fields["email"])
    await batcher.enqueue(MAIL_JOB, job, app_id=app_id)


async def send_verification(
    db: AsyncSession,
    batcher: JobBatcher,
    lookups: LookupPool,
    rules: Rules,
    origin: Origin,
    fields: dict[str, Any],
    principal: Principal | None,
) -> None:
    """POST /v1/auth/verify-email/send: to the address named, else to the bearer's own."""
    if fields.get("email") is not None:
        await _by_address(batcher, lookups, rules, Mail.VERIFY, origin, fields)
        return
    if principal is None:
        raise AuthenticationRequired(NO_ADDRESS)
    user = principal.user
    await rules.mail_to(user.env_id, user.email)
    async with db.begin():
        await _enqueue(db, user.app_id, Mail.VERIFY, Requester(origin), user_id=user.id)
        audit.by_user(db, REQUESTED_ACTION[Mail.VERIFY], origin, user)


async def forgot_password(
    batcher: JobBatcher, lookups: LookupPool, rules: Rules, origin: Origin, fields: dict[str, Any]
) -> None:
    await _by_address(batcher, lookups, rules, Mail.RESET, origin, fields)


async def change_email(
    db: AsyncSession,
    hasher: PasswordHasher,
    rules: Rules,
    origin: Origin,
    principal: Principal,
    new_email: str,
    password: str,
) -> None:
    """Check the password, then send a code and link to the new address; the address
    changes only when they come back (confirm_email_change)."""
    user = principal.user
    if new_email.lower() == user.email.lower():
        raise ValidationFailed("new_email", "is already the account's address")
    # A stolen session must not buy extra password guesses: same budget as sign-in.
    async with rules.password_attempt(user.id) as attempt:
        ok, _ = await hasher.verify(password, user.password_hash)
        if not ok:
            raise InvalidCredentials("password is wrong")
        attempt.succeeded()
    await rules.mail_to(user.env_id, new_email)
    async with db.begin():
        await _ensure_address_free(db, user, new_email)
        await _enqueue(
            db, user.app_id, Mail.CHANGE, Requester(origin), user_id=user.id, new_email=new_email
        )
        audit.by_user(db, "user.email_change_requested", origin, user, {"new_email": new_email})


async def _ensure_address_free(db: AsyncSession, user: User, address: str) -> None:
    taken = (
        await db.execute(
            select(col(User.id)).where(
                col(User.app_id) == user.app_id,
                col(User.env_id) == user.env_id,
                col(User.deleted_at).is_(None),
                col(User.id) != user.id,
                users.email_matches(address),
            )
        )
    ).first()
    if taken is not None:
        raise EmailTaken()


async def admin_send(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, user_id: str, what: Mail
) -> None:
    """POST /v1/admin/users/{id}/send-verification and …/send-password-reset."""
    async with db.begin():
        user = await admin_auth.find_user(db, principal, user_id)
        if what is Mail.VERIFY and user.email_verified:
            raise Conflict("the user's e-mail address is already verified")
        by = Requester.admin(origin, principal)
        await _enqueue(db, user.app_id, what, by, user_id=user.id)
        audit.record(
            db,
            REQUESTED_ACTION[what],
            origin=origin,
            app_id=user.app_id,
            env_id=user.env_id,
            actor_type=principal.actor_type,
            actor_id=principal.actor_id,
            target_user_id=user.id,
        )


# ---- completions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Presented:
    """A code or link token as a request presents it: `token`, or `code` with the user it was
    sent to (by address, or the bearer's)."""

    token: str | None = None
    code: str | None = None
    email: str | None = None
    app_ref: str | None = None
    env_ref: str | None = None
    user: User | None = None


async def _user_by_address(db: AsyncSession, env: Environment, email: str) -> User | None:
    found: User | None = (
        await db.execute(
            select(User).where(
                col(User.app_id) == env.app_id,
                col(User.env_id) == env.id,
                col(User.deleted_at).is_(None),
                users.email_matches(email),
            )
        )
    ).scalar_one_or_none()
    return found


async def _find(db: AsyncSession, purpose: Purpose, presented: Presented) -> EmailCode | None:
    """The live code row presented, locked; None when a wrong code was counted as a try (the
    caller commits that and answers invalid_code). Dead or unknown: InvalidCode."""
    if presented.token is not None:
        row, _ = await email_codes.by_token(db, purpose, presented.token)
        return row
    user = presented.user
    if user is None and presented.email is not None:
        env = await tenancy.resolve(db, presented.app_ref, presented.env_ref)
        user = await _user_by_address(db, env, presented.email)
    try:
        return await email_codes.check_code(db, user, purpose, presented.code or "")
    except email_codes.WrongCode as wrong:
        await email_codes.count_wrong_try(db, wrong.row_id)
        return None


async def _still_current(db: AsyncSession, row: EmailCode) -> EmailCode:
    """Lock the row found earlier again: if it was used or replaced by a newer code meanwhile,
    it is no longer the one presented."""
    again = await db.get(EmailCode, row.id, with_for_update=True, populate_existing=True)
    if again is None or again.token_hash != row.token_hash:
        raise InvalidCode()
    return again


async def verify_email(
    db: AsyncSession,
    settings: Settings,
    origin: Origin,
    presented: Presented,
    *,
    sign_in: bool = True,
) -> dict[str, Any]:
    """Mark the address verified; where the app requires verification, also sign in, unless
    `sign_in` is False (the built-in page, app/api/pages.py, which has nowhere to hand the
    tokens to: a session issued there would be one nobody holds, with a sign-in audit row for
    a sign-in that never happened)."""

    async def work() -> User | None:
        row = await _find(db, Purpose.VERIFY_EMAIL, presented)
        if row is None:
            return None
        user = await users.lock(db, row.user_id)
        users.touch(user)
        user.email_verified = True
        await email_codes.consume(db, row)
        audit.by_user(db, "user.email_verified", origin, user)
        return user

    user = await retrying(db, work)
    if user is None:
        raise InvalidCode()
    answer: dict[str, Any] = {"status": "email verified", "user": users.view(user)}
    if not sign_in:
        return answer
    async with db.begin():
        if not await verification_required(db, settings, user.app_id):
            return answer
        user = await users.lock(db, user.id)
        if users.is_banned(user):
            return answer  # verified, but a ban still keeps the user out
        if user.mfa_enabled:
            # A mailbox is not a second factor, nor a password: a user with MFA on signs in
            # with both (sign-in, then POST /v1/auth/mfa/challenge).
            return answer
        issued = sessions.issue(db, user, settings, origin)
        audit.by_user(db, "user.signin", origin, user, {"method": "email_verification"})
    return {**answer, **sessions.token_response(user, issued)}


async def reset_password(
    db: AsyncSession,
    hasher: PasswordHasher,
    settings: Settings,
    origin: Origin,
    presented: Presented,
    new_password: str,
) -> None:
    """Set a new password with a reset code or link; every session of the user ends. The code
    also proves the address, so it counts as verified."""
    check_policy(
        new_password, settings.password_min_length, settings.password_max_length, "new_password"
    )
    # The code first (cheap, and a wrong one counts a try), the hash after it.
    async with db.begin():
        found = await _find(db, Purpose.RESET_PASSWORD, presented)
    if found is None:
        raise InvalidCode()
    new_hash = await hasher.hash(new_password)

    async def change() -> None:
        row = await _still_current(db, found)
        user = await users.lock(db, row.user_id)
        now = users.touch(user)
        user.password_hash = new_hash
        user.password_changed_at = now
        user.password_hash_counter += 1
        if row.email.lower() == user.email.lower():
            user.email_verified = True
        revoked = await sessions.revoke_all_for_user(db, user, "password_reset")
        await email_codes.consume(db, row)
        audit.by_user(db, "user.password_reset", origin, user, {"sessions_revoked": revoked})

    await retrying(db, change)


async def confirm_email_change(
    db: AsyncSession, origin: Origin, presented: Presented
) -> dict[str, Any]:
    """Move the user to the new address (verified: the code came back from it), and send a
    notice to the old one. 409 email_taken if another account took it meanwhile. A code (not
    a link) counts only with the session of the user who asked."""
    if presented.code is not None and presented.user is None:
        raise AuthenticationRequired(CODE_NEEDS_SESSION)

    async def work() -> User | None:
        row = await _find(db, Purpose.CHANGE_EMAIL, presented)
        if row is None:
            return None
        user = await users.lock(db, row.user_id)
        old_email, new_email = user.email, row.new_email
        assert new_email is not None
        users.touch(user)
        user.email = new_email
        user.email_verified = True
        user.email_address_counter += 1
        await users.flush_unique(db)
        await email_codes.consume(db, row)
        by = Requester(origin, "user", user.id)
        await _enqueue(
            db,
            user.app_id,
            Mail.CHANGED,
            by,
            user_id=user.id,
            old_email=old_email,
            new_email=new_email,
        )
        audit.by_user(
            db, "user.email_changed", origin, user, {"old_email": old_email, "new_email": new_email}
        )
        return user

    user = await retrying(db, work)
    if user is None:
        raise InvalidCode()
    return users.view(user)


# ---- the worker's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    message: mail.Message
    user_id: str


async def _job_user(db: AsyncSession, payload: dict[str, Any]) -> User | None:
    """The live user a mail job is for: by id, or by address within its environment."""
    if "user_id" in payload:
        user: User | None = await db.get(User, payload["user_id"])
        return user if user is not None and user.deleted_at is None else None
    env = await db.get(Environment, payload["env_id"])
    if env is None:
        return None
    return await _user_by_address(db, env, payload["email"])


def _link(settings: Settings, app: App, what: Mail, token: str) -> str:
    base = (app.link_base_url or settings.public_url).rstrip("/")
    return f"{base}/{LINK_PATH[what]}?token={token}"


async def prepare(db: AsyncSession, settings: Settings, payload: dict[str, Any]) -> Prepared | None:
    """Issue the code and write the audit row of one mail job; None when there is nothing to
    send (an unknown address, an already verified one, a user deleted since)."""
    what = Mail(payload["mail"])
    user = await _job_user(db, payload)
    if user is None:
        return None
    if what is Mail.VERIFY and user.email_verified:
        return None
    app = await db.get(App, user.app_id)
    assert app is not None
    context: dict[str, Any] = {
        "app_name": app.name,
        "user_name": user.name or "",
        "email": user.email,
    }
    to = user.email
    if what is Mail.CHANGED:
        to = payload["old_email"]
        context.update(email=to, old_email=payload["old_email"], new_email=payload["new_email"])
    else:
        new_email = payload.get("new_email") if what is Mail.CHANGE else None
        issued = await email_codes.issue(db, user, PURPOSE[what], new_email=new_email)
        context.update(code=issued.code, link=_link(settings, app, what, issued.token))
        if what is Mail.VERIFY:
            context["expires_hours"] = int(issued.lifetime.total_seconds() // 3600)
        else:
            context["expires_minutes"] = int(issued.lifetime.total_seconds() // 60)
        if what is Mail.CHANGE:
            assert new_email is not None
            to = new_email
            context.update(email=to, new_email=new_email)
    audit.record(
        db,
        SENT_ACTION[what],
        origin=Origin(payload.get("ip"), payload.get("user_agent")),
        app_id=user.app_id,
        env_id=user.env_id,
        actor_type=payload.get("actor_type", "user"),
        actor_id=payload.get("actor_id"),
        target_user_id=user.id,
        metadata={"to": users.mask_email(to)},
    )
    sender = app.mail_from or settings.mail_from
    message = mail.render(settings, what.value, context, to=to, sender=sender)
    return Prepared(message, user.id)


@jobs.job_kind(MAIL_JOB, retry=MAIL_RETRY, safe_keys=("mail", "user_id"))
async def deliver(job: jobs.Job, env: jobs.JobEnv) -> None:
    """Prepare (commit the code and the audit row), then send. A refused recipient fails the
    job for good; anything else (SMTP down, 4xx) is retried with backoff."""
    async with env.sessions() as db, db.begin():
        prepared = await prepare(db, env.settings, job.payload)
    if prepared is None:
        return
    try:
        where = await mail.send(env.settings, prepared.message)
    except mail.MailRejected as exc:
        raise jobs.PermanentFailure(str(exc)) from exc
    log.info("mail %s for %s sent: %s", job.payload["mail"], prepared.user_id, where)
