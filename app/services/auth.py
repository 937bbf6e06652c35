"""Self-service account flows: sign-up, sign-in, refresh, sign-out, profile, password, delete."""

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import NoResultFound
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.db import LookupPool, retrying
from app.errors import (
    AuthenticationRequired,
    EmailNotVerified,
    InvalidCredentials,
    NotFound,
    SessionExpired,
)
from app.models import AuditEvent, Session, User
from app.security import tokens
from app.security.passwords import PasswordHasher, check_policy
from app.services import api_keys, audit, email_flows, mfa, mfa_tokens, sessions, tenancy, users
from app.services.audit import Origin
from app.services.ratelimit import Rules
from app.services.sessions import Principal
from app.settings import Settings


def _policy(settings: Settings, password: str, field: str = "password") -> None:
    check_policy(password, settings.password_min_length, settings.password_max_length, field)


async def signup(
    db: AsyncSession,
    hasher: PasswordHasher,
    settings: Settings,
    origin: Origin,
    fields: dict[str, Any],
) -> dict[str, Any]:
    _policy(settings, fields["password"])
    async with db.begin():
        env = await tenancy.resolve(db, fields.get("app_id"), fields.get("env_id"))
    password_hash = await hasher.hash(fields["password"])
    async with db.begin():
        user = await users.insert(
            db,
            app_id=env.app_id,
            env_id=env.id,
            email=fields["email"],
            password_hash=password_hash,
            profile=fields,
        )
        audit.by_user(db, "user.signup", origin, user)
        await email_flows.on_signup(db, user, origin)
        if not user.email_verified and await email_flows.verification_required(
            db, settings, user.app_id
        ):
            # No session until the address is proven (the mail was just enqueued).
            return {"user": users.view(user)}
        issued = sessions.issue(db, user, settings, origin)
    return sessions.token_response(user, issued)


def _record_failed_signin(
    db: AsyncSession,
    origin: Origin,
    target: tuple[str, str],
    user: User | None,
    identifier: str,
    reason: str,
) -> None:
    """What was typed into the e-mail or username field may be anything — a password, typed
    into the wrong box, included — and admins read (and users export) this row: it names the
    account when there is one, else keeps only a masked hint of an e-mail address."""
    metadata: dict[str, Any] = {"reason": reason}
    if user is not None:
        metadata["identifier"] = user.email if "@" in identifier else user.username
    else:
        metadata["identifier_hint"] = users.mask_email(identifier)
    app_id, env_id = target
    audit.record(
        db,
        "user.signin_failed",
        origin=origin,
        app_id=app_id,
        env_id=env_id,
        target_user_id=user.id if user else None,
        metadata=metadata,
    )


async def _find_for_signin(
    lookups: LookupPool, fields: dict[str, Any]
) -> tuple[tuple[str, str], User | None]:
    """((app id, environment id), the live account the e-mail or username names there, or
    None): tenancy.resolve's rules and 404s and the account in one prepared statement on the
    plain asyncpg pool, outside any transaction. Through a SQLAlchemy session these were a
    transaction and three ORM selects, a third of a sign-in's CPU besides the hash."""
    env_join, app_match, args = tenancy.target_join(fields.get("app_id"), fields.get("env_id"))
    if fields.get("email"):
        # lower() on both sides, as uq_users_email_live (and users.email_matches) has it.
        account_match = f"lower(u.email) = lower(${len(args) + 1})"
        args.append(users.email_key(fields["email"]))
    else:
        account_match = f"u.username = ${len(args) + 1}"
        args.append(fields["username"].strip().lower())
    query = (
        f"SELECT a.id AS t_app_id, e.id AS t_env_id, {users.select_columns('u')} "  # noqa: S608
        f"FROM apps a LEFT JOIN environments e ON {env_join} "
        "LEFT JOIN users u ON u.app_id = a.id AND u.env_id = e.id AND u.deleted_at IS NULL "
        f"AND {account_match} WHERE {app_match}"
    )
    async with lookups.connection() as conn:
        row = await conn.fetchrow(query, *args)
    if row is None:
        raise NotFound("app not found")
    target = tenancy.ensure_found(row["t_app_id"], row["t_env_id"])
    return target, users.from_row(row) if row["id"] is not None else None


async def signin(
    db: AsyncSession,
    lookups: LookupPool,
    hasher: PasswordHasher,
    settings: Settings,
    rules: Rules,
    origin: Origin,
    fields: dict[str, Any],
) -> dict[str, Any]:
    target, user = await _find_for_signin(lookups, fields)
    identifier = str(fields.get("email") or fields.get("username"))
    # Failures are counted per account; an unknown one is counted under its identifier, so it
    # is limited exactly like a real one and the 429 tells nothing about existence.
    account = user.id if user else f"{target[1]}:{identifier.strip().lower()}"
    async with rules.password_attempt(account) as attempt:
        # An unknown account verifies a dummy hash: same answer, same time as a wrong password.
        stored = user.password_hash if user else None
        ok, upgraded = await hasher.verify(fields["password"], stored)
        if not ok or user is None:
            async with db.begin():
                _record_failed_signin(db, origin, target, user, identifier, "invalid_credentials")
            raise InvalidCredentials()
        attempt.succeeded()
    # The ban is revealed only to someone who knows the password.
    if users.is_banned(user):
        async with db.begin():
            _record_failed_signin(db, origin, target, user, identifier, "banned")
        users.ensure_not_banned(user)
    if not user.email_verified:
        # (No raise inside the transaction: a rollback would expire `user`.)
        async with db.begin():
            if await email_flows.verification_required(db, settings, user.app_id):
                _record_failed_signin(db, origin, target, user, identifier, "email_not_verified")
                unverified = True
            else:
                unverified = False
        if unverified:
            raise EmailNotVerified()
    if upgraded is None and not user.mfa_enabled:
        # The common case: a session and its audit row, one statement (no transaction).
        issued_now = await sessions.issue_with_event(lookups, user, settings, origin, "user.signin")
        if issued_now is not None:
            return sessions.token_response(user, issued_now)
    async with db.begin():
        if upgraded is not None:
            user = await users.lock(db, user.id)
            user.password_hash = upgraded  # same password, stronger hash: no counter bump
        # `mfa_enabled` as read before the hash, unlocked: MFA turned on during these
        # milliseconds lets one last password-only sign-in through, as it would a moment
        # earlier (turning it on ends no session either); locking here would cost every
        # sign-in a row lock.
        if user.mfa_enabled:
            # No session before the second factor: a token that POST /mfa/challenge trades in.
            mfa_token = await mfa_tokens.issue(db, user)
            audit.by_user(db, "user.signin_mfa_required", origin, user)
        else:
            mfa_token = None
            issued = sessions.issue(db, user, settings, origin)
            audit.by_user(db, "user.signin", origin, user)
    if mfa_token is not None:
        raise mfa_tokens.required(mfa_token)
    return sessions.token_response(user, issued)


async def refresh(
    db: AsyncSession, settings: Settings, origin: Origin, refresh_token: str
) -> dict[str, Any]:
    digest = tokens.digest(refresh_token)

    async def rotate() -> tuple[User, sessions.Issued] | None:
        """The next pair, or None when the token had already been rotated (its family is
        revoked in this transaction)."""
        user_id = (
            await db.execute(
                select(col(Session.user_id)).where(col(Session.refresh_token_hash) == digest)
            )
        ).scalar_one_or_none()
        if user_id is None:
            raise AuthenticationRequired("invalid refresh token")
        # The user row first, then the session: the order of every revocation (ban, revoke
        # all, password change, delete), which therefore either finishes before this refresh
        # reads the session, or waits for it to commit and then revokes what it issued.
        try:
            user = await users.lock(db, user_id)
        except NoResultFound:
            raise AuthenticationRequired("invalid refresh token") from None
        session = (
            await db.execute(
                select(Session)
                .where(col(Session.refresh_token_hash) == digest)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if session is None or session.impersonated_by is not None:
            # An impersonation session has no refresh token (services/impersonation); were
            # its unused digest ever matched, it still must not outlive its hour.
            raise AuthenticationRequired("invalid refresh token")
        now = clock.now()
        if session.revoked_at is not None and session.revoked_reason == "rotated":
            # An already-rotated token came back: someone holds a copy. Kill the family.
            await sessions.revoke_where(
                db, col(Session.family_id) == session.family_id, reason="refresh_reuse"
            )
            audit.record(
                db,
                "session.refresh_reuse",
                origin=origin,
                app_id=user.app_id,
                env_id=user.env_id,
                target_user_id=user.id,
                metadata={"family_id": session.family_id},
            )
            return None
        if session.revoked_at is not None or session.refresh_expires_at <= now:
            raise SessionExpired("refresh token expired or revoked")
        if user.deleted_at is not None:
            raise SessionExpired("refresh token expired or revoked")
        users.ensure_not_banned(user, now)
        await email_flows.ensure_may_sign_in(db, settings, user)
        session.revoked_at = now
        session.revoked_reason = "rotated"
        issued = sessions.issue(db, user, settings, origin, rotated=session)
        audit.by_user(db, "session.refresh", origin, user)
        return user, issued

    rotated = await retrying(db, rotate)
    if rotated is None:
        raise SessionExpired("refresh token was already used; every session of it is revoked")
    return sessions.token_response(*rotated)


async def signout(db: AsyncSession, origin: Origin, principal: Principal) -> None:
    user = principal.user
    async with db.begin():
        await sessions.revoke_where(db, col(Session.id) == principal.session_id, reason="signout")
        # Ending an impersonation is the admin's act, not the user signing out.
        action = "user.signout" if principal.impersonated_by is None else "user.impersonation_ended"
        audit.by_user(db, action, origin, user)


async def update_profile(
    db: AsyncSession, origin: Origin, principal: Principal, changes: dict[str, Any]
) -> dict[str, Any]:
    async with db.begin():
        user = await users.lock(db, principal.user.id)
        users.apply_profile(user, changes)
        users.touch(user)
        await users.flush_unique(db)
        audit.by_user(db, "user.updated", origin, user, metadata={"fields": sorted(changes)})
    return users.view(user)


async def change_password(
    db: AsyncSession,
    hasher: PasswordHasher,
    settings: Settings,
    rules: Rules,
    origin: Origin,
    principal: Principal,
    current_password: str,
    new_password: str,
) -> None:
    _policy(settings, new_password, "new_password")
    # A stolen session must not buy extra password guesses: same budget as sign-in.
    async with rules.password_attempt(principal.user.id) as attempt:
        ok, _ = await hasher.verify(current_password, principal.user.password_hash)
        if not ok:
            raise InvalidCredentials("current password is wrong")
        attempt.succeeded()
    new_hash = await hasher.hash(new_password)

    async def change() -> None:
        user = await users.lock(db, principal.user.id)
        now = users.touch(user)
        user.password_hash = new_hash
        user.password_changed_at = now
        user.password_hash_counter += 1
        await sessions.revoke_all_for_user(
            db, user, "password_changed", except_session=principal.session_id
        )
        audit.by_user(db, "user.password_changed", origin, user)

    await retrying(db, change)


async def delete_account(db: AsyncSession, origin: Origin, principal: Principal) -> None:
    async def delete() -> None:
        user = await users.lock(db, principal.user.id)
        user.deleted_at = users.touch(user)
        await sessions.revoke_all_for_user(db, user, "account_deleted")
        await mfa.forget(db, user)
        audit.by_user(db, "user.deleted", origin, user)
        await api_keys.revoke_created_by(
            db, origin, user.id, "creator_deleted", actor_type="user", actor_id=user.id
        )

    await retrying(db, delete)


async def list_sessions(db: AsyncSession, principal: Principal) -> list[dict[str, Any]]:
    async with db.begin():
        live = await sessions.live_for_user(db, principal.user.id)
    return [sessions.session_view(s, principal.session_id) for s in live]


async def revoke_session(
    db: AsyncSession, origin: Origin, principal: Principal, session_id: str
) -> None:
    user = principal.user
    async with db.begin():
        await sessions.revoke_one(db, user.id, session_id, reason="user_revoked")
        audit.by_user(db, "session.revoked", origin, user, metadata={"session_id": session_id})


async def export(db: AsyncSession, principal: Principal) -> dict[str, Any]:
    """Everything held about the caller (GDPR art. 15/20) — no token, no hash."""
    user = principal.user
    async with db.begin():
        all_sessions = (
            await db.execute(
                select(Session)
                .where(col(Session.user_id) == user.id)
                .order_by(col(Session.created_at))
            )
        ).scalars()
        events = (
            await db.execute(
                select(AuditEvent)
                .where(
                    or_(
                        col(AuditEvent.target_user_id) == user.id,
                        col(AuditEvent.actor_id) == user.id,
                    )
                )
                .order_by(col(AuditEvent.id))
            )
        ).scalars()
        session_list = [
            {**sessions.session_view(s, principal.session_id), "revoked_at": s.revoked_at}
            for s in all_sessions
        ]
        event_list = [audit.view_for_subject(e, user.id) for e in events]
        enrollments = await mfa.enrollments_view(db, user.id)
    return {
        "user": users.view(user),
        "sessions": session_list,
        "devices": [],
        "organizations": [],
        "mfa_enrollments": enrollments,
        "audit_events": event_list,
    }
