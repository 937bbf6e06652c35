"""Who may call the admin API, and which apps and users it may reach.

A caller is an admin's session (a user whose role is `admin`) or an API key (`ask_…`); either
belongs to one app. Admins and keys of the `default` app may act on every app; all others only
on their own, and anything outside their reach reads as not found (no existence leak).
"""

from dataclasses import dataclass

from asyncpg import Connection, Record
from sqlalchemy import select
from sqlalchemy.exc import NoResultFound
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.db import LookupPool
from app.errors import AuthenticationRequired, Forbidden, NotFound
from app.ids import Prefix, is_valid
from app.models import App, Environment, User
from app.security import tokens
from app.services import sessions, tenancy, users

ADMIN_ROLE = "admin"
IMPERSONATION_NOT_ADMIN = "an impersonation session cannot use the admin API"


@dataclass(frozen=True)
class AdminPrincipal:
    """Who an admin request acts as; also the actor of the audit rows it writes."""

    actor_type: str  # "admin" (a session), "api_key", or "system" (the CLI operator)
    actor_id: str | None  # the admin's ausr_ id or the key's akey_ id
    app_id: str | None  # the caller's own app; None for the CLI operator
    is_root: bool  # may act on every app
    session_id: str | None = None

    @property
    def user_id(self) -> str | None:
        return self.actor_id if self.actor_type == "admin" else None

    def can_reach(self, app_id: str) -> bool:
        return self.is_root or app_id == self.app_id


# The operator at the command line: every app, audited as "system".
SYSTEM = AdminPrincipal(actor_type="system", actor_id=None, app_id=None, is_root=True)


async def authenticate(
    reads: AsyncSession, lookups: LookupPool, token: str | None
) -> AdminPrincipal:
    """Anonymous, unknown, expired or revoked credentials: 401. A signed-in non-admin: 403.
    A banned or deleted admin is refused by sessions.authenticate like everyone else.
    `reads` is an AUTOCOMMIT session (db.read_session_factory): lookups and one-row stamps;
    `lookups` serves the session lookup (sessions.authenticate)."""
    if not token:
        raise AuthenticationRequired()
    if token.startswith(tokens.API_KEY_PREFIX):
        return await authenticate_key(lookups, token)
    principal = await sessions.authenticate(lookups, token)
    user = principal.user
    if user.role != ADMIN_ROLE:
        raise Forbidden("admin role required")
    if principal.impersonated_by is not None:
        # Its user was made an admin after the impersonation began: the impersonator must
        # not gain that user's admin powers (services/impersonation).
        raise Forbidden(IMPERSONATION_NOT_ADMIN)
    slug = (
        await reads.execute(select(col(App.slug)).where(col(App.id) == user.app_id))
    ).scalar_one()
    return AdminPrincipal(
        actor_type="admin",
        actor_id=user.id,
        app_id=user.app_id,
        is_root=slug == tenancy.DEFAULT_APP,
        session_id=principal.session_id,
    )


# The key and its app's slug in one indexed read; the digest is the $1 parameter. The names
# are prefixed, as introspection reads them in one row with a session's (access_tokens).
KEY_COLUMNS = (
    "k.id AS k_id, k.app_id AS k_app_id, k.revoked_at AS k_revoked_at, "
    "k.last_used_at AS k_last_used_at, a.slug AS k_app_slug"
)
KEY_FROM = "api_keys k JOIN apps a ON a.id = k.app_id"
_KEY_LOOKUP = f"SELECT {KEY_COLUMNS} FROM {KEY_FROM} WHERE k.key_hash = $1"  # noqa: S608  # constant
# Conditional, so concurrent requests with one key stamp it once.
_KEY_STAMP = (
    "UPDATE api_keys SET last_used_at = $2 "
    "WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)"
)


async def authenticate_key(lookups: LookupPool, secret: str) -> AdminPrincipal:
    """One indexed read of key and app, as a prepared statement on the plain asyncpg pool
    like the session lookup (the ORM query cost 3x the whole session check, and a resource
    server introspects with a key on every request); the last-used stamp at most once a
    minute."""
    async with lookups.connection() as conn:
        row = await conn.fetchrow(_KEY_LOOKUP, tokens.digest(secret))
        return await accept_key(conn, row)


async def accept_key(conn: Connection, row: Record | None) -> AdminPrincipal:
    """The principal of a row of KEY_COLUMNS (None: no such key), or 401 for a revoked one;
    stamps its last use on `conn` at most once a minute."""
    if row is None or row["k_revoked_at"] is not None:
        raise AuthenticationRequired("invalid or revoked API key")
    now = clock.now()
    stale = now - sessions.LAST_USED_GRANULARITY
    if row["k_last_used_at"] is None or row["k_last_used_at"] < stale:
        await conn.execute(_KEY_STAMP, row["k_id"], now, stale)
    return AdminPrincipal(
        actor_type="api_key",
        actor_id=row["k_id"],
        app_id=row["k_app_id"],
        is_root=row["k_app_slug"] == tenancy.DEFAULT_APP,
    )


async def resolve_app(db: AsyncSession, principal: AdminPrincipal, app_ref: str | None) -> App:
    """The app a call acts on: `app_ref` (slug or aapp_ id) when given, else the caller's own.
    Call inside a transaction."""
    app_ref = app_ref or principal.app_id or tenancy.DEFAULT_APP  # the CLI: the default app
    column = col(App.id) if is_valid(app_ref, Prefix.APP) else col(App.slug)
    app: App | None = (await db.execute(select(App).where(column == app_ref))).scalar_one_or_none()
    if app is None or not principal.can_reach(app.id):
        raise NotFound("app not found")
    return app


async def resolve_env(db: AsyncSession, app: App, env_ref: str | None) -> Environment:
    """An environment of `app` by slug or aenv_ id; the app's default one when absent."""
    return await tenancy.resolve(db, app.id, env_ref)


def ensure_may_change_admin(principal: AdminPrincipal, user: User) -> None:
    """API keys automate user management; they never act on an admin's account (its password,
    e-mail, ban, deletion or factors). Otherwise a leaked key could take an admin's place —
    set its password, sign in as it, and mint keys, which keys themselves may not."""
    if principal.actor_type == "api_key" and user.role == ADMIN_ROLE:
        raise Forbidden("API keys cannot change an admin's account; use an admin session")


def ensure_may_set_role(principal: AdminPrincipal, before: str | None, after: str) -> None:
    """Only people (an admin's session) and the operator grant or remove the admin role."""
    if principal.actor_type == "api_key" and before != after and ADMIN_ROLE in (before, after):
        raise Forbidden("API keys cannot grant or remove the admin role; use an admin session")


def ensure_visible(principal: AdminPrincipal, user: User | None, include_deleted: bool) -> User:
    """The user, if this caller may see it: in reach, and live unless deleted ones are asked."""
    if user is None or not principal.can_reach(user.app_id):
        raise NotFound("user not found")
    if user.deleted_at is not None and not include_deleted:
        raise NotFound("user not found")
    return user


async def find_user(
    db: AsyncSession, principal: AdminPrincipal, user_id: str, include_deleted: bool = False
) -> User:
    """Read a target user (no lock). Call inside a transaction."""
    user = (await db.execute(select(User).where(col(User.id) == user_id))).scalar_one_or_none()
    return ensure_visible(principal, user, include_deleted)


async def lock_user(
    db: AsyncSession, principal: AdminPrincipal, user_id: str, include_deleted: bool = False
) -> User:
    """Lock a target user row (users.lock) before changing it. Call inside a transaction."""
    try:
        user = await users.lock(db, user_id)
    except NoResultFound:
        raise NotFound("user not found") from None
    return ensure_visible(principal, user, include_deleted)
