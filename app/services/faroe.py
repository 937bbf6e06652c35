"""The seven Faroe user-server actions on the one user store (DESIGN.md, "The Faroe user-server
endpoint"; the wire rules are in app/faroe/protocol.py).

Faroe's users are the rows of `users` in the default environment of the app `FAROE_APP`. The
three compare-and-swap actions are each one SQL statement (the counter test, the change and the
increment are atomic in PostgreSQL; a concurrent change makes the loser match no row, which is
`user_not_found`). Every change runs in one transaction, with its audit row (actor "faroe");
the two reads are one statement each, outside any transaction, and not audited.

What the store cannot hold (a NUL, a lone surrogate, a value past an index's size limit, a
counter past int32) is the action error `internal_error`, never an HTTP 500.
"""

import base64
import binascii
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

from sqlalchemy import Table, case, func, null, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.sql.dml import Update
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.db import LookupPool
from app.errors import NotFound
from app.faroe import protocol
from app.faroe.protocol import ActionError, FaroeUser
from app.ids import Prefix, is_valid, new_id
from app.models import Environment, Session, User
from app.security.argon2_params import (
    VERSION,
    Argon2Bounds,
    Argon2Hash,
    Argon2Parameters,
    parse_phc,
)
from app.services import api_keys, audit, tenancy, users
from app.services.audit import Origin
from app.services.ratelimit import PostgresStore

log = logging.getLogger("userkeep.faroe")

ACTOR_TYPE = "faroe"

USER_NOT_FOUND = "user_not_found"
EMAIL_ADDRESS_ALREADY_USED = "email_address_already_used"
INTERNAL_ERROR = "internal_error"
INTERNAL_CONFLICT = "internal_conflict"

_users: Table = User.__table__  # type: ignore[attr-defined]
_sessions: Table = Session.__table__  # type: ignore[attr-defined]


class FaroeAppMissing(Exception):
    """FAROE_APP names no app (or it has no default environment): a configuration error."""


# ---- passwords: the one place that maps between Faroe's triple and users.password_hash -----
#
# Faroe stores (raw hash, algorithm id, raw salt) and verifies by hashing again with the
# algorithm whose Id() matches. Userkeep stores one string that libpass's CryptContext verifies.
#
# * `argon2id.T.M.P.L` (time, memory KiB, parallelism, hash length: the Id() of Faroe's argon2id
#   example) <-> the PHC string `$argon2id$v=19$m=M,t=T,p=P$<salt>$<hash>` (standard base64,
#   no padding), which argon2-cffi and libpass verify. So either door verifies the other's
#   passwords, and PHC -> Faroe -> PHC is byte-identical. Only within the argon2 bounds
#   (ARGON2_MAX_*, argon2_params): from Faroe, an argon2id id out of them (or whose L is not the
#   hash length) is an invalid request, so nothing is stored; a stored PHC string out of them
#   is served as "phc" below, since neither door may verify it.
# * Any other algorithm id (a leading zero makes one) is kept intact as
#   `$faroe$<id>$<base64 salt>$<base64 hash>` (padded base64), served back to Faroe unchanged.
#   CryptContext does not recognise it, so the REST door answers invalid_credentials for it and
#   never re-hashes it.
# * No password (NULL, e.g. an admin-created user) is served as an empty hash, empty salt and
#   algorithm id "" — no Faroe algorithm has that id, so no password verifies.
# * A hash the REST door holds that has no Faroe form (bcrypt, argon2i, an argon2 hash of an
#   old version) is served as algorithm id "phc" with the PHC string's UTF-8 bytes as the hash
#   and an empty salt. Faroe cannot verify it (unless a deployment adds a "phc" algorithm); the
#   REST door re-hashes it to argon2id on the next REST sign-in.

NO_PASSWORD_ALGORITHM_ID = ""
OPAQUE_PHC_ALGORITHM_ID = "phc"
MARKER = "$faroe$"

_FAROE_ARGON2ID = re.compile(
    r"argon2id\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
)
# Past any bound; a longer number is not converted (int() refuses over 4300 digits).
_TOO_LARGE = 2**64


@dataclass(frozen=True, slots=True)
class FaroePassword:
    hash: bytes
    algorithm_id: str
    salt: bytes


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= 20 else _TOO_LARGE


def password_from_faroe(
    password_hash: bytes, algorithm_id: str, salt: bytes, bounds: Argon2Bounds
) -> str:
    """Faroe's (hash, algorithm id, salt) -> the users.password_hash string; raises
    protocol.InvalidRequest for an argon2id password out of bounds."""
    match = _FAROE_ARGON2ID.fullmatch(algorithm_id)
    if match is None:
        encoded_salt = base64.b64encode(salt).decode("ascii")
        encoded_hash = base64.b64encode(password_hash).decode("ascii")
        return f"{MARKER}{algorithm_id}${encoded_salt}${encoded_hash}"
    time_cost, memory_kib, parallelism, length = (_number(g) for g in match.groups())
    parameters = Argon2Parameters(time_cost, memory_kib, parallelism)
    if length != len(password_hash):
        raise protocol.InvalidRequest("argon2id hash length is not the algorithm id's")
    problem = bounds.violation(parameters, len(salt), len(password_hash))
    if problem is not None:
        raise protocol.InvalidRequest(problem)
    return Argon2Hash("id", VERSION, parameters, salt, password_hash).to_phc()


def password_to_faroe(stored: str | None, bounds: Argon2Bounds) -> FaroePassword:
    """users.password_hash -> Faroe's (hash, algorithm id, salt); the inverse of the above."""
    if stored is None:
        return FaroePassword(b"", NO_PASSWORD_ALGORITHM_ID, b"")
    if stored.startswith(MARKER):
        # The id may itself contain "$"; base64 never does, so split from the right.
        parts = stored[len(MARKER) :].rsplit("$", 2)
        if len(parts) == 3:
            algorithm_id, encoded_salt, encoded_hash = parts
            try:
                salt = base64.b64decode(encoded_salt, validate=True)
                password_hash = base64.b64decode(encoded_hash, validate=True)
            except (binascii.Error, ValueError):
                pass
            else:
                return FaroePassword(password_hash, algorithm_id, salt)
    parsed = parse_phc(stored)
    if (
        parsed is not None
        and (parsed.type, parsed.version) == ("id", VERSION)
        # Only the canonical form: its Faroe triple maps back to these very bytes.
        and parsed.to_phc() == stored
        and bounds.violation(parsed.parameters, len(parsed.salt), len(parsed.hash)) is None
    ):
        p = parsed.parameters
        algorithm_id = f"argon2id.{p.time_cost}.{p.memory_kib}.{p.parallelism}.{len(parsed.hash)}"
        return FaroePassword(parsed.hash, algorithm_id, parsed.salt)
    return FaroePassword(stored.encode("utf-8"), OPAQUE_PHC_ALGORITHM_ID, b"")


# ---- reading ----------------------------------------------------------------------------------


def to_faroe_user(
    user: User, now: datetime, bounds: Argon2Bounds, mfa_disables: bool = True
) -> FaroeUser:
    """`mfa_disables`: a user with MFA on reads as disabled (FAROE_MFA_USERS=disabled), since
    a Faroe server would sign them in with the password alone."""
    password = password_to_faroe(user.password_hash, bounds)
    return FaroeUser(
        id=user.id,
        email_address=user.email,
        password_hash=password.hash,
        password_hash_algorithm_id=password.algorithm_id,
        password_salt=password.salt,
        disabled=users.is_banned(user, now) or (mfa_disables and user.mfa_enabled),
        display_name=user.name or "",
        email_address_counter=user.email_address_counter,
        password_hash_counter=user.password_hash_counter,
        disabled_counter=user.disabled_counter,
        sessions_counter=user.sessions_counter,
    )


def _storable(*values: str) -> bool:
    """PostgreSQL text holds neither U+0000 nor a lone surrogate (which has no UTF-8 form)."""
    for value in values:
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


@dataclass(frozen=True)
class _Call:
    """One invocation: where Faroe's users live, and what the audit row needs."""

    db: AsyncSession
    env: Environment
    invocation_id: str
    action_name: str
    origin: Origin
    now: datetime
    bounds: Argon2Bounds
    # users.password_hash for create_user and update_user_password_hash, mapped (and so
    # checked against the bounds) before the transaction began.
    password_hash: str | None
    mfa_disables: bool

    def live(self, user_id: str) -> list[Any]:
        """The user by id, in Faroe's environment, not deleted."""
        return [
            _users.c.id == user_id,
            _users.c.app_id == self.env.app_id,
            _users.c.env_id == self.env.id,
            _users.c.deleted_at.is_(None),
        ]

    def audit(self, action: str, user_id: str, **metadata: Any) -> None:
        audit.record(
            self.db,
            action,
            origin=self.origin,
            app_id=self.env.app_id,
            env_id=self.env.id,
            actor_type=ACTOR_TYPE,
            target_user_id=user_id,
            metadata={
                "faroe_action": self.action_name,
                "action_invocation_id": self.invocation_id,
                **metadata,
            },
        )


def _stamp(now: datetime) -> dict[str, Any]:
    """What every write of a user row sets besides its change: updated_at, and an expired ban
    cleared in storage (users.clear_expired_ban, as SQL; the rule is users.banned_clause)."""
    still_banned = users.banned_clause(now)
    return {
        "updated_at": now,
        "banned": still_banned,
        "ban_reason": case((still_banned, _users.c.ban_reason), else_=null()),
        "ban_expires": case((still_banned, _users.c.ban_expires), else_=null()),
    }


async def _update_revoking_sessions(
    call: _Call, change: Update, reason: str
) -> tuple[str | None, int]:
    """Run `change` (an UPDATE of one user RETURNING its id) and revoke every live session of the
    user it matched, in one statement: (the user id or None when no row matched, sessions
    revoked)."""
    changed = change.returning(_users.c.id).cte("changed")
    revoked = (
        update(_sessions)
        .where(
            _sessions.c.user_id.in_(select(changed.c.id)),
            _sessions.c.revoked_at.is_(None),
        )
        .values(revoked_at=call.now, revoked_reason=reason)
        .returning(_sessions.c.id)
        .cte("revoked")
    )
    statement = select(
        select(changed.c.id).scalar_subquery(),
        select(func.count()).select_from(revoked).scalar_subquery(),
    )
    row = (await call.db.execute(statement)).one()
    return row[0], int(row[1])


# ---- the actions ------------------------------------------------------------------------------


# The two reads run outside any transaction: one prepared statement on the plain asyncpg pool
# (as the bearer lookup does), the app's default environment and the user found together.
# Reads are not audited (DESIGN.md, "Faroe door details"): a Faroe server calls get_user for
# every session check whose cached user is older than a minute.
_READ = (
    "SELECT a.id AS faroe_app_id, e.id AS faroe_env_id, {user} FROM apps a "
    "LEFT JOIN environments e ON e.app_id = a.id AND e.is_default "
    "LEFT JOIN users u ON u.app_id = a.id AND u.env_id = e.id AND u.deleted_at IS NULL "
    "AND {user_match} WHERE {app_match}"
)
# By id; by e-mail: the exact, case-sensitive match Faroe asks for, with a lower() term that
# lets PostgreSQL find the (at most one) candidate through the unique index uq_users_email_live.
_BY_ID = "u.id = $2"
_BY_EMAIL = "lower(u.email) = lower($2) AND u.email = $2"
# The read with the replay guard of its signature (ratelimit.PostgresStore, parameters $3-$5)
# in the same statement: one round trip and no transaction for a signed get_user, the busiest
# call of a Faroe deployment. A data-modifying WITH runs whatever the SELECT finds, and the
# outer join answers one row even when FAROE_APP names no app.
_GUARDED = (
    "WITH guard AS ({guard}) "
    "SELECT (SELECT count(*) FROM guard) AS faroe_first_use, r.* "
    "FROM (SELECT 1) AS one LEFT JOIN ({read}) AS r ON true"
)


def _statement(user_match: str, by_app_id: bool, guarded: bool) -> str:
    read = _READ.format(
        user=users.select_columns("u"),
        user_match=user_match,
        app_match="a.id = $1" if by_app_id else "a.slug = $1",
    )
    if not guarded:
        return read
    return _GUARDED.format(guard=PostgresStore.first_use_sql(3), read=read)


# The eight statements (by id or e-mail; app by id or slug; with the guard or not), built
# once: the text is also asyncpg's prepared-statement cache key. Only these constant fragments
# go into the text; the references are parameters.
_READS = {
    (user_match, by_app_id, guarded): _statement(user_match, by_app_id, guarded)
    for user_match in (_BY_ID, _BY_EMAIL)
    for by_app_id in (True, False)
    for guarded in (True, False)
}


class Replayed(Exception):
    """The signed request was served before (the guard ran in the read's statement)."""


def is_read(
    action: protocol.Action,
) -> TypeGuard[protocol.GetUser | protocol.GetUserByEmailAddress]:
    """get_user or get_user_by_email_address: served by `read`, without a transaction."""
    return isinstance(action, protocol.GetUser | protocol.GetUserByEmailAddress)


async def read(
    lookups: LookupPool,
    app_ref: str,
    action: protocol.GetUser | protocol.GetUserByEmailAddress,
    bounds: Argon2Bounds,
    mfa_disables: bool = True,
    guard: tuple[str, int, int] | None = None,
) -> FaroeUser:
    """get_user and get_user_by_email_address: the user, or ActionError user_not_found;
    FaroeAppMissing when FAROE_APP names no app. With `guard` (PostgresStore.first_use_args of
    the request's signature), Replayed when it was used before, checked in the same statement."""
    if isinstance(action, protocol.GetUser):
        # Any id that is not one of ours (Faroe's own ids, garbage) is simply not found.
        found = is_valid(action.user_id, Prefix.USER)
        match, value = _BY_ID, action.user_id if found else ""
    else:
        found = _storable(action.email_address)  # else no stored e-mail can equal it
        match, value = _BY_EMAIL, users.nfc_email(action.email_address) if found else ""
    statement = _READS[match, is_valid(app_ref, Prefix.APP), guard is not None]
    async with lookups.connection() as conn:
        row = await conn.fetchrow(statement, app_ref, value, *(guard or ()))
    if guard is not None and (row is None or not row["faroe_first_use"]):
        raise Replayed()
    if row is None or row["faroe_app_id"] is None:
        raise FaroeAppMissing(f"FAROE_APP={app_ref!r}: app not found")
    if row["faroe_env_id"] is None:
        raise FaroeAppMissing(f"FAROE_APP={app_ref!r}: environment not found")
    if not found or row["id"] is None:
        raise ActionError(USER_NOT_FOUND)
    return to_faroe_user(users.from_row(row), clock.now(), bounds, mfa_disables)


async def _create_user(call: _Call, action: protocol.CreateUser) -> FaroeUser:
    if not _storable(action.email_address, action.password_hash_algorithm_id):
        raise ActionError(INTERNAL_ERROR)
    user = User(
        id=new_id(Prefix.USER),
        app_id=call.env.app_id,
        env_id=call.env.id,
        email=users.nfc_email(action.email_address),
        # Faroe verifies the address (a code sent to it) before it creates the user.
        email_verified=True,
        password_hash=call.password_hash,
        password_changed_at=call.now,
        created_at=call.now,
        updated_at=call.now,
    )
    call.db.add(user)
    await call.db.flush()  # a unique violation surfaces here (see invoke)
    call.audit("user.created", user.id)
    return to_faroe_user(user, call.now, call.bounds, call.mfa_disables)


async def _update_user_email_address(call: _Call, action: protocol.UpdateUserEmailAddress) -> None:
    if not is_valid(action.user_id, Prefix.USER):
        raise ActionError(USER_NOT_FOUND)
    if not _storable(action.email_address):
        raise ActionError(INTERNAL_ERROR)
    # When no row matches, nothing is written, so no unique violation: not-found wins.
    statement = (
        update(_users)
        .where(
            *call.live(action.user_id),
            _users.c.email_address_counter == action.user_email_address_counter,
        )
        .values(
            email=users.nfc_email(action.email_address),
            email_verified=True,
            email_address_counter=_users.c.email_address_counter + 1,
            **_stamp(call.now),
        )
        .returning(_users.c.id)
    )
    if (await call.db.execute(statement)).first() is None:
        raise ActionError(USER_NOT_FOUND)
    call.audit("user.updated", action.user_id, fields=["email"])


async def _update_user_password_hash(call: _Call, action: protocol.UpdateUserPasswordHash) -> None:
    if not is_valid(action.user_id, Prefix.USER):
        raise ActionError(USER_NOT_FOUND)
    if not _storable(action.password_hash_algorithm_id):
        raise ActionError(INTERNAL_ERROR)
    # A password change ends the user's REST sessions (they are all "other sessions" from the
    # Faroe door, as in POST /v1/auth/change-password); Faroe's own sessions are Faroe's call,
    # so the sessions counter does not move.
    change = (
        update(_users)
        .where(
            *call.live(action.user_id),
            _users.c.password_hash_counter == action.user_password_hash_counter,
        )
        .values(
            password_hash=call.password_hash,
            password_changed_at=call.now,
            password_hash_counter=_users.c.password_hash_counter + 1,
            **_stamp(call.now),
        )
    )
    user_id, revoked = await _update_revoking_sessions(call, change, "password_changed")
    if user_id is None:
        raise ActionError(USER_NOT_FOUND)
    call.audit("user.password_changed", user_id, sessions_revoked=revoked)


async def _increment_user_sessions_counter(
    call: _Call, action: protocol.IncrementUserSessionsCounter
) -> None:
    if not is_valid(action.user_id, Prefix.USER):
        raise ActionError(USER_NOT_FOUND)
    # At 2147483647 the increment overflows int4: PostgreSQL raises 22003 (only for a matched
    # row), which invoke() answers as internal_error; nothing is written.
    change = (
        update(_users)
        .where(
            *call.live(action.user_id),
            _users.c.sessions_counter == action.user_sessions_counter,
        )
        .values(sessions_counter=_users.c.sessions_counter + 1, **_stamp(call.now))
    )
    user_id, revoked = await _update_revoking_sessions(call, change, "faroe_revoked_all")
    if user_id is None:
        raise ActionError(USER_NOT_FOUND)
    call.audit("session.revoked_all", user_id, sessions_revoked=revoked)


async def _delete_user(call: _Call, action: protocol.DeleteUser) -> None:
    if not is_valid(action.user_id, Prefix.USER):
        raise ActionError(USER_NOT_FOUND)
    # Soft delete, as DELETE /v1/auth/me: deleted_at, every session revoked, and (as every
    # "revoke all sessions") the sessions counter bumped — saturating, so a delete never fails.
    counter = _users.c.sessions_counter
    change = (
        update(_users)
        .where(*call.live(action.user_id))
        .values(
            deleted_at=call.now,
            sessions_counter=case((counter < protocol.INT32_MAX, counter + 1), else_=counter),
            **_stamp(call.now),
        )
    )
    user_id, revoked = await _update_revoking_sessions(call, change, "account_deleted")
    if user_id is None:
        raise ActionError(USER_NOT_FOUND)
    call.audit("user.deleted", user_id, sessions_revoked=revoked)
    await api_keys.revoke_created_by(
        call.db, call.origin, user_id, "creator_deleted", actor_type=ACTOR_TYPE, actor_id=None
    )


_Handler = Callable[[_Call, Any], Awaitable[FaroeUser | None]]
_HANDLERS: dict[type, tuple[str, _Handler]] = {
    protocol.CreateUser: ("create_user", _create_user),
    protocol.UpdateUserEmailAddress: ("update_user_email_address", _update_user_email_address),
    protocol.UpdateUserPasswordHash: ("update_user_password_hash", _update_user_password_hash),
    protocol.IncrementUserSessionsCounter: (
        "increment_user_sessions_counter",
        _increment_user_sessions_counter,
    ),
    protocol.DeleteUser: ("delete_user", _delete_user),
}


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", None) or "")


def _action_error_for(exc: DBAPIError) -> str | None:
    """The action error for a database error the store caused, or None for one it did not
    (the database is down, a bug): those go on to the app's 503/500 handling."""
    state = _sqlstate(exc)
    if isinstance(exc, IntegrityError) and "uq_users_email_live" in str(exc.orig):
        return EMAIL_ADDRESS_ALREADY_USED
    if state in {"40001", "40P01"}:  # serialization failure, deadlock: try again
        return INTERNAL_CONFLICT
    # 22 data exception (value too long, out of range, bad encoding), 23 integrity constraint,
    # 54 program limit exceeded (e.g. an index row too large): the value cannot be stored.
    if state[:2] in {"22", "23", "54"}:
        return INTERNAL_ERROR
    return None


async def invoke(
    writes: async_sessionmaker[AsyncSession],
    lookups: LookupPool,
    app_ref: str,
    action: protocol.Action,
    invocation_id: str,
    origin: Origin,
    bounds: Argon2Bounds,
    mfa_disables: bool = True,
    guard: tuple[str, int, int] | None = None,
) -> FaroeUser | None:
    """Run one action: a read in one statement (`read`, with `guard` if given), a change in one
    transaction of a session from `writes`, with its audit row. The user for the two reads and
    create_user, None for the other four; raises ActionError for an action error,
    FaroeAppMissing when FAROE_APP names no app, protocol.InvalidRequest for a password out of
    `bounds` (before any database work)."""
    if is_read(action):
        return await read(lookups, app_ref, action, bounds, mfa_disables, guard)
    assert guard is None, "a change checks its signature's first use before it begins"
    action_name, handler = _HANDLERS[type(action)]
    password_hash = None
    if isinstance(action, protocol.CreateUser | protocol.UpdateUserPasswordHash):
        password_hash = password_from_faroe(
            action.password_hash, action.password_hash_algorithm_id, action.password_salt, bounds
        )
    try:
        async with writes() as db, db.begin():
            try:
                env = await tenancy.resolve(db, app_ref, None)
            except NotFound as exc:
                raise FaroeAppMissing(f"FAROE_APP={app_ref!r}: {exc.message}") from None
            call = _Call(
                db,
                env,
                invocation_id,
                action_name,
                origin,
                clock.now(),
                bounds,
                password_hash,
                mfa_disables,
            )
            return await handler(call, action)
    except DBAPIError as exc:
        code = _action_error_for(exc)
        if code is None:
            raise
        if code != EMAIL_ADDRESS_ALREADY_USED:
            log.warning(
                "faroe action %s (invocation %s) failed in the store: sqlstate %s",
                action_name,
                invocation_id,
                _sqlstate(exc),
            )
        raise ActionError(code) from None
