"""Impersonation: an admin signs in as a user, to see what they see, for at most an hour.

The session is a sessions row like any other, so everything that ends the user's sessions —
sign-out with its token, ban, deletion, an admin's revoke, a password change — ends it too. It
is flagged `impersonated_by` (the admin), which the user sees in their session list and export;
it has no refresh token; every audit row written with it names both the admin and the user
(audit.impersonation, set per request by api/deps). What only the user may do is refused.
"""

from datetime import timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.db import retrying
from app.errors import Forbidden
from app.ids import Prefix, new_id
from app.models import Session
from app.security import tokens
from app.services import admin_auth, audit, users
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin
from app.services.sessions import Principal
from app.settings import Settings

MAX_TTL = timedelta(hours=1)
REASON_MAX_LENGTH = 500

KEYS_CANNOT = "API keys cannot impersonate; use an admin session"
ADMINS_CANNOT_BE = "admins cannot be impersonated"
BANNED_CANNOT_BE = "a banned user cannot be impersonated"
# Auth0 and Clerk draw the same line: an impersonator may look and act in the product, but
# not take the account over (credentials, address, factors) or end it, nor mint tokens that
# outlive the session or leave the audit trail.
ONLY_THE_USER = (
    "not allowed while impersonating: only the user may change their password, e-mail "
    "address or factors, delete their account, or mint tokens"
)


def acting(principal: Principal) -> audit.Impersonation:
    """The audit stamp of a request made with an impersonation session."""
    assert principal.impersonated_by is not None  # callers check
    return audit.Impersonation(
        admin_id=principal.impersonated_by,
        user_id=principal.user.id,
        session_id=principal.session_id,
    )


def ensure_not_impersonated(principal: Principal) -> None:
    """For what only the user may do (api/deps.OwnCaller)."""
    if principal.impersonated_by is not None:
        raise Forbidden(ONLY_THE_USER)


async def start(
    db: AsyncSession,
    settings: Settings,
    origin: Origin,
    principal: AdminPrincipal,
    user_id: str,
    reason: str,
) -> dict[str, Any]:
    """A session of the user for the calling admin: `{session_token, expires_at}`. The user
    row is locked first, like every revocation, so a concurrent ban, deletion or promotion
    either comes first (and is refused here) or comes after and ends this session."""
    if principal.actor_type != "admin":
        raise Forbidden(KEYS_CANNOT)
    admin_id = principal.actor_id
    assert admin_id is not None  # an admin principal always has its user id
    session_token = tokens.new_token(tokens.SESSION_PREFIX)

    async def begin() -> Session:
        user = await admin_auth.lock_user(db, principal, user_id)
        if user.role == admin_auth.ADMIN_ROLE:
            raise Forbidden(ADMINS_CANNOT_BE)
        now = clock.now()
        if users.is_banned(user, now):
            raise Forbidden(BANNED_CANNOT_BE)
        expires_at = now + min(MAX_TTL, timedelta(seconds=settings.session_ttl))
        session = Session(
            id=new_id(Prefix.SESSION),
            family_id=new_id(Prefix.FAMILY),
            user_id=user.id,
            token_hash=tokens.digest(session_token),
            # The column is NOT NULL and unique: the digest of a token nobody is ever given.
            # auth.refresh refuses impersonation sessions besides.
            refresh_token_hash=tokens.digest(tokens.new_token(tokens.REFRESH_PREFIX)),
            expires_at=expires_at,
            # The session leaves the user's list when it expires, not 30 days later.
            refresh_expires_at=expires_at,
            family_expires_at=expires_at,
            created_at=now,
            last_used_at=now,
            ip=origin.ip,
            user_agent=(origin.user_agent or "")[:512] or None,
            impersonated_by=admin_id,
        )
        db.add(session)
        audit.record(
            db,
            "user.impersonation_started",
            origin=origin,
            app_id=user.app_id,
            env_id=user.env_id,
            actor_type="admin",
            actor_id=admin_id,
            target_user_id=user.id,
            metadata={
                "reason": reason,
                "session_id": session.id,
                "expires_at": expires_at.isoformat(),
            },
        )
        return session

    session = await retrying(db, begin)
    return {"session_token": session_token, "expires_at": session.expires_at}
