"""Sessions: issuing token pairs, validating a bearer token (the hot path), rotation, revocation."""

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from asyncpg import Connection, Record
from sqlalchemy import select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.db import LookupPool
from app.errors import AuthenticationRequired, NotFound, SessionExpired
from app.ids import Prefix, new_id
from app.models import Session, User
from app.security import tokens
from app.services import audit, users
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
    session_created_at: datetime
    session_expires_at: datetime
    # The admin holding this session as the user (services/impersonation), else None.
    impersonated_by: str | None = None


def issue(
    db: AsyncSession,
    user: User,
    settings: Settings,
    origin: Origin,
    rotated: Session | None = None,
) -> Issued:
    """A new session row with fresh tokens, added to the caller's transaction: a new family
    (a sign-in), or the next of `rotated`'s family (a refresh), which ends when the family
    does however often it is refreshed."""
    issued = _new(user, settings, origin, rotated)
    db.add(issued.session)
    return issued


_INSERT_WITH_EVENT = (
    "WITH s AS (INSERT INTO sessions (id, family_id, user_id, token_hash, refresh_token_hash, "  # noqa: S608
    "expires_at, refresh_expires_at, family_expires_at, created_at, last_used_at, ip, "
    "user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)) "
    f"INSERT INTO audit_events ({audit.INSERT_COLUMNS}) "  # constant SQL
    "VALUES ($13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)"
)


async def issue_with_event(
    lookups: LookupPool, user: User, settings: Settings, origin: Origin, action: str
) -> Issued | None:
    """A new family's first session and the user's audit row `action` about it, written now
    in one statement on the plain asyncpg pool (atomic alone: no transaction, no ORM flush);
    None, writing nothing, when a flush subscriber acts on such a row (audit.unheard): then
    `issue` and audit.by_user in a transaction it is."""
    if not audit.unheard(action):
        return None
    issued = _new(user, settings, origin, None)
    event = audit.user_event(action, origin, user)
    s = issued.session
    async with lookups.connection() as conn:
        await conn.execute(
            _INSERT_WITH_EVENT,
            s.id,
            s.family_id,
            s.user_id,
            s.token_hash,
            s.refresh_token_hash,
            s.expires_at,
            s.refresh_expires_at,
            s.family_expires_at,
            s.created_at,
            s.last_used_at,
            s.ip,
            s.user_agent,
            *audit.insert_values(event),
        )
    return issued


def _new(user: User, settings: Settings, origin: Origin, rotated: Session | None) -> Issued:
    now = clock.now()
    session_token = tokens.new_token(tokens.SESSION_PREFIX)
    refresh_token = tokens.new_token(tokens.REFRESH_PREFIX)
    if rotated is None:
        family_id = new_id(Prefix.FAMILY)
        family_ends = now + timedelta(seconds=settings.refresh_family_ttl)
    else:
        family_id, family_ends = rotated.family_id, rotated.family_expires_at
    session = Session(
        id=new_id(Prefix.SESSION),
        family_id=family_id,
        user_id=user.id,
        token_hash=tokens.digest(session_token),
        refresh_token_hash=tokens.digest(refresh_token),
        expires_at=min(now + timedelta(seconds=settings.session_ttl), family_ends),
        refresh_expires_at=min(now + timedelta(seconds=settings.refresh_ttl), family_ends),
        family_expires_at=family_ends,
        created_at=now,
        last_used_at=now,
        ip=origin.ip,
        user_agent=(origin.user_agent or "")[:512] or None,
    )
    return Issued(session, session_token, refresh_token)


def token_response(user: User, issued: Issued) -> dict[str, Any]:
    return {
        "user": users.view(user),
        "session_token": issued.session_token,
        "refresh_token": issued.refresh_token,
        "expires_at": issued.session.expires_at,
        "refresh_expires_at": issued.session.refresh_expires_at,
    }


def lookup_sql(param: str = "$1") -> str:
    """The session and its user by the token's digest, the parameter `param`: the statement of
    every bearer check, also run inside introspection's (access_tokens)."""
    return " ".join(
        [
            "SELECT s.id AS s_id, s.family_id AS s_family_id, s.expires_at AS s_expires_at,",
            "s.created_at AS s_created_at,",
            "s.revoked_at AS s_revoked_at, s.last_used_at AS s_last_used_at,",
            "s.impersonated_by AS s_impersonated_by,",
            users.select_columns("u"),
            f"FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = {param}",
        ]
    )


_LOOKUP = lookup_sql()
# Conditional, so concurrent requests of one session stamp it once.
_STAMP_SESSION = (
    "UPDATE sessions SET last_used_at = $2 "
    "WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)"
)
# The same stamp, and in the same statement the user's activity day for the admin stats
# (services/stats): the user_activity row is written only when the stamp is and the day has
# changed since — once a user a day, on a narrow table of its own (no lock on the user row).
_STAMP = (
    f"WITH stamped AS ({_STAMP_SESSION} RETURNING user_id) "  # noqa: S608  # constant SQL
    "INSERT INTO user_activity AS a (user_id, app_id, env_id, last_active_at) "
    "SELECT user_id, $4, $5, $2 FROM stamped "
    "ON CONFLICT (user_id) DO UPDATE SET last_active_at = EXCLUDED.last_active_at "
    "WHERE a.last_active_at < $6"
)


async def authenticate(lookups: LookupPool, token: str | None) -> Principal:
    """The hot path: one indexed read of session and user together (a prepared statement on
    the plain asyncpg pool, outside any transaction), and no write but a last-used stamp at
    most once a minute."""
    if not token:
        raise AuthenticationRequired()
    async with lookups.connection() as conn:
        row = await conn.fetchrow(_LOOKUP, tokens.digest(token))
        return await accept(conn, row)


async def accept(conn: Connection, row: Record | None) -> Principal:
    """The principal of a row of `lookup_sql` (None or a NULL s_id: no such token), or why the
    session is not a live one; stamps its last use on `conn` at most once a minute."""
    if row is None or row["s_id"] is None:
        raise AuthenticationRequired("invalid session token")
    now = clock.now()
    if row["s_revoked_at"] is not None or row["s_expires_at"] <= now:
        raise SessionExpired()
    user = users.from_row(row)
    if user.deleted_at is not None:
        raise SessionExpired()
    users.ensure_not_banned(user, now)
    impersonated_by = row["s_impersonated_by"]
    stale = now - LAST_USED_GRANULARITY
    if row["s_last_used_at"] is None or row["s_last_used_at"] < stale:
        if impersonated_by is not None:
            # An admin looking around is not the user being active.
            await conn.execute(_STAMP_SESSION, row["s_id"], now, stale)
        else:
            today = datetime.combine(now.astimezone(UTC).date(), time(), UTC)
            await conn.execute(_STAMP, row["s_id"], now, stale, user.app_id, user.env_id, today)
    return Principal(
        user=user,
        session_id=row["s_id"],
        family_id=row["s_family_id"],
        session_created_at=row["s_created_at"],
        session_expires_at=row["s_expires_at"],
        impersonated_by=impersonated_by,
    )


async def revoke_where(db: AsyncSession, *conditions: Any, reason: str) -> int:
    """Revoke the live sessions matching `conditions`; returns how many."""
    result = await db.execute(
        update(Session)
        .where(col(Session.revoked_at).is_(None), *conditions)
        .values(revoked_at=clock.now(), revoked_reason=reason)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult at runtime


async def revoke_one(db: AsyncSession, user_id: str, session_id: str, reason: str) -> None:
    """Revoke one live session of the user; 404 when it is not one (or not theirs)."""
    count = await revoke_where(
        db, col(Session.id) == session_id, col(Session.user_id) == user_id, reason=reason
    )
    if count == 0:
        raise NotFound("session not found")


async def revoke_all_for_user(
    db: AsyncSession, user: User, reason: str, except_session: str | None = None
) -> int:
    """Every live session of the user but `except_session` (the caller's own, on a password
    change); also bumps Faroe's sessions counter, so a Faroe server drops every session of
    this user too — none of them is the one kept here."""
    conditions: list[Any] = [col(Session.user_id) == user.id]
    if except_session is not None:
        conditions.append(col(Session.id) != except_session)
    count = await revoke_where(db, *conditions, reason=reason)
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
        "impersonated_by": session.impersonated_by,
        "current": session.id == current_id,
    }


def is_live(session: Session, now: datetime) -> bool:
    return session.revoked_at is None and session.refresh_expires_at > now
