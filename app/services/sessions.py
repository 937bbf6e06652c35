"""Sessions: issuing token pairs, validating a bearer token (the hot path), rotation, revocation."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.errors import AuthenticationRequired, SessionExpired
from app.ids import Prefix, new_id
from app.models import Session, User
from app.security import tokens
from app.services import users
from app.services.audit import Origin
from app.settings import Settings

LAST_USED_GRANULARITY = timedelta(minutes=1)


@dataclass(frozen=True)
class Issued:
    session: Session
    session_token: str
    refresh_token: str


@dataclass(frozen=True)
class Principal:
    """Who an authenticated request acts as."""

    user: User
    session_id: str
    family_id: str


def issue(
    db: AsyncSession,
    user: User,
    settings: Settings,
    origin: Origin,
    family_id: str | None = None,
) -> Issued:
    """A new session row with fresh tokens, added to the caller's transaction."""
    now = clock.now()
    session_token = tokens.new_token(tokens.SESSION_PREFIX)
    refresh_token = tokens.new_token(tokens.REFRESH_PREFIX)
    session = Session(
        id=new_id(Prefix.SESSION),
        family_id=family_id or new_id(Prefix.FAMILY),
        user_id=user.id,
        token_hash=tokens.digest(session_token),
        refresh_token_hash=tokens.digest(refresh_token),
        expires_at=now + timedelta(seconds=settings.session_ttl),
        refresh_expires_at=now + timedelta(seconds=settings.refresh_ttl),
        created_at=now,
        last_used_at=now,
        ip=origin.ip,
        user_agent=(origin.user_agent or "")[:512] or None,
    )
    db.add(session)
    return Issued(session, session_token, refresh_token)


def token_response(user: User, issued: Issued) -> dict[str, Any]:
    return {
        "user": users.view(user),
        "session_token": issued.session_token,
        "refresh_token": issued.refresh_token,
        "expires_at": issued.session.expires_at,
    }


# Session columns the check needs, with the whole user: the answer of GET /me needs no more.
_LOOKUP = (
    select(
        col(Session.id),
        col(Session.family_id),
        col(Session.expires_at),
        col(Session.revoked_at),
        col(Session.last_used_at),
        User,
    )
    .join(User, col(User.id) == Session.user_id)
    .where(col(Session.token_hash) == bindparam("digest"))
)


async def authenticate(reads: AsyncSession, token: str | None) -> Principal:
    """The hot path: one indexed read of session and user together, and no write but a
    last-used stamp at most once a minute.

    `reads` is a session of `db.read_session_factory` (AUTOCOMMIT): the lookup is one round
    trip, with no BEGIN and COMMIT around it, and the stamp is one conditional UPDATE that a
    concurrent request for the same session cannot turn into two."""
    if not token:
        raise AuthenticationRequired()
    row = (await reads.execute(_LOOKUP, {"digest": tokens.digest(token)})).first()
    if row is None:
        raise AuthenticationRequired("invalid session token")
    session_id, family_id, expires_at, revoked_at, last_used_at, user = row
    now = clock.now()
    if revoked_at is not None or expires_at <= now:
        raise SessionExpired()
    if user.deleted_at is not None:
        raise SessionExpired()
    users.ensure_not_banned(user, now)
    stale = now - LAST_USED_GRANULARITY
    if last_used_at is None or last_used_at < stale:
        await reads.execute(
            update(Session)
            .where(
                col(Session.id) == session_id,
                or_(col(Session.last_used_at).is_(None), col(Session.last_used_at) < stale),
            )
            .values(last_used_at=now)
        )
    return Principal(user=user, session_id=session_id, family_id=family_id)


async def revoke_where(db: AsyncSession, *conditions: Any, reason: str) -> int:
    """Revoke the live sessions matching `conditions`; returns how many."""
    result = await db.execute(
        update(Session)
        .where(col(Session.revoked_at).is_(None), *conditions)
        .values(revoked_at=clock.now(), revoked_reason=reason)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult at runtime


async def revoke_all_for_user(
    db: AsyncSession, user: User, reason: str, except_session: str | None = None
) -> int:
    """Every live session of the user; also bumps Faroe's sessions counter, so a Faroe server
    drops its sessions for this user too."""
    conditions: list[Any] = [col(Session.user_id) == user.id]
    if except_session is not None:
        conditions.append(col(Session.id) != except_session)
    count = await revoke_where(db, *conditions, reason=reason)
    if except_session is None:
        user.sessions_counter += 1
    return count


async def live_for_user(db: AsyncSession, user_id: str) -> list[Session]:
    now = clock.now()
    result = await db.execute(
        select(Session)
        .where(
            col(Session.user_id) == user_id,
            col(Session.revoked_at).is_(None),
            col(Session.refresh_expires_at) > now,
        )
        .order_by(col(Session.created_at).desc())
    )
    return list(result.scalars())


def session_view(session: Session, current_id: str | None = None) -> dict[str, Any]:
    return {
        "id": session.id,
        "family_id": session.family_id,
        "created_at": session.created_at,
        "expires_at": session.expires_at,
        "refresh_expires_at": session.refresh_expires_at,
        "last_used_at": session.last_used_at,
        "ip": session.ip,
        "user_agent": session.user_agent,
        "current": session.id == current_id,
    }


def is_live(session: Session, now: datetime) -> bool:
    return session.revoked_at is None and session.refresh_expires_at > now
