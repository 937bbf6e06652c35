"""User administration: list and search, create, edit, soft delete, restore, purge, bans,
passwords, sessions, and reading the audit trail. Every rule of /v1/admin/users lives here.

Each change locks the user row (admin_auth.lock_user → users.lock), is one transaction, and
writes its audit row in that transaction, with the admin or API key as the actor.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Select,
    Text,
    delete,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    text,
    tuple_,
)
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.errors import Conflict, Forbidden, ValidationFailed
from app.ids import Prefix, is_valid
from app.models import App, AuditEvent, User
from app.security.passwords import PasswordHasher, check_policy
from app.services import admin_auth, api_keys, audit, cursors, sessions, users
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin
from app.settings import Settings

# The sort orders of the user list. The expressions are those of the (app_id, key, id) indexes
# of migration 0002 — keep them identical. A missing name or username sorts as "".
SORT_KEYS: dict[str, Any] = {
    "created_at": col(User.created_at),
    "updated_at": col(User.updated_at),
    "email": func.lower(col(User.email)),
    "name": func.coalesce(func.lower(col(User.name)), literal_column("''")),
    "username": func.coalesce(col(User.username), literal_column("''")),
}
TIME_KEYS = frozenset({"created_at", "updated_at"})
# What `search` looks in: the four fields joined by newlines, lower-cased — the expression of
# migration 0006's trigram index, character for character, or the planner cannot use it.
SEARCH_TEXT: ColumnElement[str] = literal_column(
    "lower(users.email || E'\\n' || coalesce(users.username, '') || E'\\n' "
    "|| coalesce(users.name, '') || E'\\n' || coalesce(users.phone, ''))"
)
PURGE_BATCH = 500


def _record(
    db: AsyncSession,
    origin: Origin,
    principal: AdminPrincipal,
    action: str,
    user: User,
    metadata: dict[str, Any] | None = None,
) -> None:
    audit.record(
        db,
        action,
        origin=origin,
        app_id=user.app_id,
        env_id=user.env_id,
        actor_type=principal.actor_type,
        actor_id=principal.actor_id,
        target_user_id=user.id,
        metadata=metadata,
    )


async def _revoke_keys_of(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, user: User, reason: str
) -> None:
    """An API key never outlives its creator's standing as an admin (api_keys.revoke_created_by)."""
    await api_keys.revoke_created_by(
        db, origin, user.id, reason, actor_type=principal.actor_type, actor_id=principal.actor_id
    )


# ---- list and search ----------------------------------------------------------------------


@dataclass(frozen=True)
class UserQuery:
    app_id: str | None = None
    env_id: str | None = None
    email: str | None = None
    username: str | None = None
    phone: str | None = None
    search: str | None = None
    banned: bool | None = None
    email_verified: bool | None = None
    role: str | None = None
    include_deleted: bool = False
    created_after: datetime | None = None
    created_before: datetime | None = None
    sort_by: str = "created_at"
    sort_order: str = "desc"
    limit: int = 20
    offset: int = 0
    cursor: str | None = None
    count: Literal["capped", "exact"] = "capped"  # see count_users


def contains_pattern(value: str) -> str:
    """An ILIKE pattern matching `value` anywhere, its `%`, `_` and `\\` taken literally."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _contains(column: Any, value: str) -> ColumnElement[bool]:
    # Case-insensitive partial match; the pg_trgm GIN indexes of migration 0002 serve it.
    result: ColumnElement[bool] = column.ilike(contains_pattern(value), escape="\\")
    return result


def _search(value: str) -> ColumnElement[bool]:
    """Part of the e-mail, username, name or phone, case-insensitively: one LIKE over
    SEARCH_TEXT. A term holding the newline that joins the fields there could match across
    two of them, so it takes one ILIKE per field instead (right, if slower: name has no index
    of its own since migration 0006)."""
    if "\n" in value:
        columns = (col(User.email), col(User.username), col(User.name), col(User.phone))
        return or_(*(_contains(column, value) for column in columns))
    result: ColumnElement[bool] = SEARCH_TEXT.like(func.lower(contains_pattern(value)), escape="\\")
    return result


def user_filters(
    query: UserQuery, app_id: str, env_id: str | None, now: datetime
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [col(User.app_id) == app_id]
    if env_id is not None:
        conditions.append(col(User.env_id) == env_id)
    if not query.include_deleted:
        conditions.append(col(User.deleted_at).is_(None))
    if query.email:
        conditions.append(_contains(col(User.email), query.email))
    if query.username:
        conditions.append(_contains(col(User.username), query.username))
    if query.phone:
        conditions.append(_contains(col(User.phone), query.phone))
    if query.search:
        conditions.append(_search(query.search))
    if query.banned is not None:
        banned = users.banned_clause(now)
        conditions.append(banned if query.banned else not_(banned))
    if query.email_verified is not None:
        conditions.append(col(User.email_verified) == query.email_verified)
    if query.role is not None:
        conditions.append(col(User.role) == query.role)
    if query.created_after is not None:
        conditions.append(col(User.created_at) >= query.created_after)
    if query.created_before is not None:
        conditions.append(col(User.created_at) < query.created_before)
    return conditions


def _cursor_position(query: UserQuery, cursor: str) -> tuple[Any, str]:
    """The (sort value, id) a cursor points after; 422 when it is not a cursor of this order."""
    position = cursors.decode(cursor)
    value, last_id = position.get("v"), position.get("id")
    if position.get("k") != query.sort_by or position.get("o") != query.sort_order:
        raise ValidationFailed("cursor", "was made for another sort_by or sort_order")
    if not isinstance(last_id, str) or not is_valid(last_id, Prefix.USER):
        raise ValidationFailed("cursor", "is not a cursor of this list")
    if not isinstance(value, str) or "\x00" in value:
        raise ValidationFailed("cursor", "is not a cursor of this list")
    if query.sort_by in TIME_KEYS:
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError("no time zone")
            parsed = parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            raise ValidationFailed("cursor", "is not a cursor of this list") from None
        return literal(parsed, DateTime(timezone=True)), last_id
    return literal(value, Text), last_id


def _next_cursor(query: UserQuery, sort_value: Any, user_id: str) -> str:
    value = sort_value.isoformat() if isinstance(sort_value, datetime) else sort_value
    return cursors.encode({"k": query.sort_by, "o": query.sort_order, "v": value, "id": user_id})


def count_statement(conditions: list[ColumnElement[bool]], up_to: int | None = None) -> Select[Any]:
    """How many users match (text filters: a bitmap scan of the trigram indexes); with `up_to`,
    the scan stops at that many, so a broad filter costs no more than a narrow one."""
    if up_to is None:
        return select(func.count()).select_from(User).where(*conditions)
    matching: Select[Any] = select(literal_column("1")).select_from(User).where(*conditions)
    return select(func.count()).select_from(matching.limit(up_to).subquery())


FILTERS = (
    "email",
    "username",
    "phone",
    "search",
    "banned",
    "email_verified",
    "role",
    "created_after",
    "created_before",
)


async def count_users(
    db: AsyncSession,
    query: UserQuery,
    app_id: str,
    env_id: str | None,
    conditions: list[ColumnElement[bool]],
    count_limit: int,
) -> tuple[int, bool]:
    """The total and whether it is exact.

    With no filter but the tenant, it is exact and free: read from the per-environment counts
    the triggers of migration 0004 keep. A filtered count must visit every matching row, which
    for a broad filter on a million users (a common domain, `email_verified=true`) takes 2-4x
    the list's 50 ms budget; so matches are counted up to `count_limit`, past which the total
    is that limit, a lower bound, flagged inexact. `count=exact` asks for the full count."""
    if all(getattr(query, name) is None for name in FILTERS):
        where = "app_id = :app_id" + (" AND env_id = :env_id" if env_id is not None else "")
        total = "live + deleted" if query.include_deleted else "live"
        found = await db.execute(
            text(f"SELECT coalesce(sum({total}), 0) FROM user_counts WHERE {where}"),  # noqa: S608
            {"app_id": app_id, "env_id": env_id},
        )
        return int(found.scalar_one()), True
    if query.count == "exact":
        return int((await db.execute(count_statement(conditions))).scalar_one()), True
    counted = int((await db.execute(count_statement(conditions, count_limit + 1))).scalar_one())
    return (count_limit, False) if counted > count_limit else (counted, True)


def page_statement(query: UserQuery, conditions: list[ColumnElement[bool]]) -> Select[Any]:
    """The rows of one page (plus one, to know whether another page follows), each with its
    sort key, in (sort key, id) order — a range scan of the matching (app_id, key, id) index."""
    key = SORT_KEYS[query.sort_by]
    descending = query.sort_order == "desc"
    page = select(User, key.label("sort_key")).where(*conditions)
    if query.cursor is not None:
        value, last_id = _cursor_position(query, query.cursor)
        here, after = tuple_(key, col(User.id)), tuple_(value, literal(last_id, Text))
        page = page.where(here < after if descending else here > after)
    if descending:
        page = page.order_by(key.desc(), col(User.id).desc())
    else:
        page = page.order_by(key.asc(), col(User.id).asc())
    return page.offset(query.offset).limit(query.limit + 1)


async def list_users(
    db: AsyncSession, principal: AdminPrincipal, query: UserQuery, count_limit: int
) -> dict[str, Any]:
    """One page of the users matching the filters, their total (see count_users), and a
    keyset cursor.

    The cursor is the last row's (sort key, id); the next page is the rows strictly after it
    in the (sort key, id) order, so users added meanwhile are never returned twice and never
    push an existing user out of the remaining pages."""
    if query.cursor is not None and query.offset:
        raise ValidationFailed("offset", "give either offset or cursor, not both")
    now = clock.now()
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, query.app_id)
        env_id = None
        if query.env_id is not None:
            env_id = (await admin_auth.resolve_env(db, app, query.env_id)).id
        conditions = user_filters(query, app.id, env_id, now)
        total, exact = await count_users(db, query, app.id, env_id, conditions, count_limit)
        rows = (await db.execute(page_statement(query, conditions))).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = _next_cursor(query, rows[-1][1], rows[-1][0].id) if more else None
    return {
        "users": [users.view(row[0], now) for row in rows],
        "total": total,
        "total_exact": exact,
        "limit": query.limit,
        "offset": query.offset,
        "next_cursor": next_cursor,
    }


# ---- one user ------------------------------------------------------------------------------


async def get_user(
    db: AsyncSession, principal: AdminPrincipal, user_id: str, include_deleted: bool
) -> dict[str, Any]:
    async with db.begin():
        user = await admin_auth.find_user(db, principal, user_id, include_deleted)
    return users.view(user)


async def create_user(
    db: AsyncSession,
    hasher: PasswordHasher,
    settings: Settings,
    origin: Origin,
    principal: AdminPrincipal,
    fields: dict[str, Any],
) -> dict[str, Any]:
    """A user in the app/environment given (the caller's app and its default environment when
    absent), with or without a password; the admin may mark the e-mail as verified."""
    password = fields.get("password")
    if password is not None:
        check_policy(password, settings.password_min_length, settings.password_max_length)
    admin_auth.ensure_may_set_role(principal, None, fields.get("role") or "user")
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, fields.get("app_id"))
        env = await admin_auth.resolve_env(db, app, fields.get("env_id"))
    password_hash = await hasher.hash(password) if password is not None else None
    async with db.begin():
        user = await users.insert(
            db,
            app_id=app.id,
            env_id=env.id,
            email=fields["email"],
            password_hash=password_hash,
            profile=fields,
            email_verified=fields.get("email_verified") or False,
            role=fields.get("role") or "user",
        )
        if fields.get("phone_verified"):
            _set_phone_verified(user, True)
        given = sorted(k for k, v in fields.items() if v is not None and k != "password")
        _record(db, origin, principal, "user.created", user, {"fields": given})
    return users.view(user, user.created_at)


def _set_phone_verified(user: User, verified: bool) -> None:
    if verified and user.phone is None:
        raise ValidationFailed("phone_verified", "the user has no phone number")
    user.phone_verified = verified


async def update_user(
    db: AsyncSession,
    origin: Origin,
    principal: AdminPrincipal,
    user_id: str,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """Profile fields as in self-service, plus e-mail, the verification flags and the role. A
    new e-mail address is unverified unless `email_verified` is given with it."""
    async with db.begin():
        user = await admin_auth.lock_user(db, principal, user_id)
        if not changes:
            return users.view(user)
        if "role" in changes:
            admin_auth.ensure_may_set_role(principal, user.role, changes["role"])
        if changes.keys() & {"email", "email_verified"}:
            admin_auth.ensure_may_change_admin(principal, user)
        was_admin = user.role == admin_auth.ADMIN_ROLE
        users.apply_profile(user, {k: v for k, v in changes.items() if k in users.PROFILE_FIELDS})
        email = changes.get("email")
        if email is not None and email != user.email:
            if email.lower() != user.email.lower():
                user.email_verified = False
            user.email = email
            user.email_address_counter += 1
        if "email_verified" in changes:
            user.email_verified = changes["email_verified"]
        if "phone_verified" in changes:
            _set_phone_verified(user, changes["phone_verified"])
        if "role" in changes:
            user.role = changes["role"]
        now = users.touch(user)
        await users.flush_unique(db)
        _record(db, origin, principal, "user.updated", user, {"fields": sorted(changes)})
        if was_admin and user.role != admin_auth.ADMIN_ROLE:
            await _revoke_keys_of(db, origin, principal, user, "creator_demoted")
    return users.view(user, now)


async def delete_user(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, user_id: str
) -> None:
    """Soft delete: every session ends, e-mail and username are free again, restorable within
    the retention window."""
    async with db.begin():
        user = await admin_auth.lock_user(db, principal, user_id)
        admin_auth.ensure_may_change_admin(principal, user)
        user.deleted_at = users.touch(user)
        await sessions.revoke_all_for_user(db, user, "admin_deleted")
        _record(db, origin, principal, "user.deleted", user)
        await _revoke_keys_of(db, origin, principal, user, "creator_deleted")


def _retention_cutoff(settings: Settings) -> datetime:
    """Users deleted before this instant are past the retention window."""
    return clock.now() - timedelta(days=settings.retention_days)


async def restore_user(
    db: AsyncSession,
    settings: Settings,
    origin: Origin,
    principal: AdminPrincipal,
    user_id: str,
) -> dict[str, Any]:
    """Undo a soft delete within the retention window; 409 email_taken/username_taken when
    someone took the e-mail or username meanwhile. The old sessions stay revoked."""
    async with db.begin():
        user = await admin_auth.lock_user(db, principal, user_id, include_deleted=True)
        admin_auth.ensure_may_change_admin(principal, user)
        if user.deleted_at is None:
            raise Conflict("user is not deleted")
        if user.deleted_at < _retention_cutoff(settings):
            raise Conflict("the retention window has passed; the user can only be purged")
        user.deleted_at = None
        now = users.touch(user)
        await users.flush_unique(db)
        _record(db, origin, principal, "user.restored", user)
    return users.view(user, now)


async def purge_user(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, user_id: str
) -> None:
    """Erase one soft-deleted user now (its sessions go with it); a live user is a 409."""
    async with db.begin():
        user = await admin_auth.lock_user(db, principal, user_id, include_deleted=True)
        admin_auth.ensure_may_change_admin(principal, user)
        if user.deleted_at is None:
            raise Conflict("only a deleted user can be purged; delete it first")
        await db.execute(delete(User).where(col(User.id) == user.id))
        _record(db, origin, principal, "user.purged", user, {"reason": "on_demand"})


async def purge_expired(
    db: AsyncSession,
    settings: Settings,
    origin: Origin,
    principal: AdminPrincipal,
    app_ref: str | None,
    every_app: bool = False,
) -> int:
    """Erase the soft-deleted users past the retention window, of one app (`app_ref`, else the
    caller's) or of every app (the operator's CLI). Batches of PURGE_BATCH users, each one
    transaction with its audit rows; rows locked by a concurrent restore are left for later."""
    app_id: str | None = None
    if every_app:
        if not principal.is_root:
            raise Forbidden("only the operator may purge every app at once")
    else:
        async with db.begin():
            app_id = (await admin_auth.resolve_app(db, principal, app_ref)).id
    cutoff = _retention_cutoff(settings)
    purged = 0
    while True:
        async with db.begin():
            batch = select(User).where(
                col(User.deleted_at).is_not(None), col(User.deleted_at) < cutoff
            )
            if app_id is not None:
                batch = batch.where(col(User.app_id) == app_id)
            batch = batch.order_by(col(User.id)).limit(PURGE_BATCH)
            found = list((await db.execute(batch.with_for_update(skip_locked=True))).scalars())
            if not found:
                break
            await db.execute(delete(User).where(col(User.id).in_([u.id for u in found])))
            for user in found:
                _record(db, origin, principal, "user.purged", user, {"reason": "retention"})
        db.expunge_all()
        purged += len(found)
    return purged


# ---- bans ----------------------------------------------------------------------------------


async def ban(
    db: AsyncSession,
    origin: Origin,
    principal: AdminPrincipal,
    user_id: str,
    reason: str | None,
    expires_at: datetime | None,
    expires_in: int | None,
) -> dict[str, Any]:
    """Ban until `expires_at` (or for `expires_in` seconds, or for good); every session of the
    user is revoked at once, and both doors refuse it until the ban ends."""
    if expires_at is not None and expires_in is not None:
        raise ValidationFailed("expires_at", "give either expires_at or expires_in, not both")
    if principal.user_id == user_id:
        raise Forbidden("you cannot ban yourself")
    async with db.begin():
        user = await admin_auth.lock_user(db, principal, user_id)
        admin_auth.ensure_may_change_admin(principal, user)
        now = users.touch(user)
        if expires_in is not None:
            expires_at = now + timedelta(seconds=expires_in)
        if expires_at is not None and expires_at <= now:
            raise ValidationFailed("expires_at", "must be in the future")
        user.banned = True
        user.ban_reason = reason
        user.ban_expires = expires_at
        user.disabled_counter += 1
        revoked = await sessions.revoke_all_for_user(db, user, "banned")
        metadata = {
            "reason": reason,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "sessions_revoked": revoked,
        }
        _record(db, origin, principal, "user.banned", user, metadata)
        await _revoke_keys_of(db, origin, principal, user, "creator_banned")
    return users.view(user, now)


async def unban(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, user_id: str
) -> dict[str, Any]:
    async with db.begin():
        user = await admin_auth.lock_user(db, principal, user_id)
        admin_auth.ensure_may_change_admin(principal, user)
        now = users.touch(user)
        was_banned = users.is_banned(user, now)
        user.banned = False
        user.ban_reason = None
        user.ban_expires = None
        user.disabled_counter += 1
        _record(db, origin, principal, "user.unbanned", user, {"was_banned": was_banned})
    return users.view(user, now)


# ---- password and sessions -----------------------------------------------------------------


async def set_password(
    db: AsyncSession,
    hasher: PasswordHasher,
    settings: Settings,
    origin: Origin,
    principal: AdminPrincipal,
    user_id: str,
    password: str,
) -> dict[str, Any]:
    """Set a new password; every session of the user is revoked."""
    check_policy(password, settings.password_min_length, settings.password_max_length)
    async with db.begin():
        # 404 or 403 before spending a hash.
        admin_auth.ensure_may_change_admin(
            principal, await admin_auth.find_user(db, principal, user_id)
        )
    password_hash = await hasher.hash(password)
    async with db.begin():
        user = await admin_auth.lock_user(db, principal, user_id)
        admin_auth.ensure_may_change_admin(principal, user)  # promoted meanwhile
        now = users.touch(user)
        user.password_hash = password_hash
        user.password_changed_at = now
        user.password_hash_counter += 1
        revoked = await sessions.revoke_all_for_user(db, user, "password_reset")
        _record(db, origin, principal, "user.password_set", user, {"sessions_revoked": revoked})
    return users.view(user, now)


async def list_sessions(
    db: AsyncSession, principal: AdminPrincipal, user_id: str
) -> list[dict[str, Any]]:
    async with db.begin():
        user = await admin_auth.find_user(db, principal, user_id)
        live = await sessions.live_for_user(db, user.id)
    return [sessions.session_view(s, principal.session_id) for s in live]


async def revoke_sessions(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, user_id: str
) -> int:
    """Revoke every session of the user (Faroe's sessions counter moves too); how many."""
    async with db.begin():
        user = await admin_auth.lock_user(db, principal, user_id)
        users.touch(user)
        revoked = await sessions.revoke_all_for_user(db, user, "admin_revoked")
        _record(db, origin, principal, "session.revoked_all", user, {"sessions_revoked": revoked})
    return revoked


async def revoke_session(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, user_id: str, session_id: str
) -> None:
    async with db.begin():
        user = await admin_auth.find_user(db, principal, user_id)
        await sessions.revoke_one(db, user.id, session_id, reason="admin_revoked")
        _record(db, origin, principal, "session.revoked", user, {"session_id": session_id})


# ---- the audit trail -----------------------------------------------------------------------


@dataclass(frozen=True)
class EventQuery:
    app_id: str | None = None
    action: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    target_user_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 50
    cursor: str | None = None


async def list_audit_events(
    db: AsyncSession, principal: AdminPrincipal, query: EventQuery
) -> dict[str, Any]:
    """The app's audit events, newest first (aevt_ ids are time-ordered), with a cursor."""
    async with db.begin():
        app: App = await admin_auth.resolve_app(db, principal, query.app_id)
        found = select(AuditEvent).where(col(AuditEvent.app_id) == app.id)
        if query.action is not None:
            found = found.where(col(AuditEvent.action) == query.action)
        if query.actor_type is not None:
            found = found.where(col(AuditEvent.actor_type) == query.actor_type)
        if query.actor_id is not None:
            found = found.where(col(AuditEvent.actor_id) == query.actor_id)
        if query.target_user_id is not None:
            found = found.where(col(AuditEvent.target_user_id) == query.target_user_id)
        if query.created_after is not None:
            found = found.where(col(AuditEvent.created_at) >= query.created_after)
        if query.created_before is not None:
            found = found.where(col(AuditEvent.created_at) < query.created_before)
        if query.cursor is not None:
            last_id = cursors.decode(query.cursor).get("id")
            if not isinstance(last_id, str) or not is_valid(last_id, Prefix.AUDIT):
                raise ValidationFailed("cursor", "is not a cursor of this list")
            found = found.where(col(AuditEvent.id) < last_id)
        found = found.order_by(col(AuditEvent.id).desc()).limit(query.limit + 1)
        events = list((await db.execute(found)).scalars())
    more = len(events) > query.limit
    events = events[: query.limit]
    return {
        "audit_events": [audit.view(event) for event in events],
        "limit": query.limit,
        "next_cursor": cursors.encode({"id": events[-1].id}) if more else None,
    }
