"""Bulk import of users with their password hashes (DESIGN "Admin power tools"): the rules of
one row, the hash formats, conflicts, and the per-row outcome. The route (api/admin_import.py)
and the CLI (services/import_cli.py) both go through `parse_row` and `write_batch`.

A row is checked with the same field rules as a sign-up (services/users); a bad row is an
outcome with its reason, never an error of the whole call. Valid rows are written a batch at a
time, each batch one transaction: one multi-row INSERT … ON CONFLICT DO NOTHING decides every
e-mail and username race by the unique indexes (so a concurrent import of the same rows creates
each user once, and its loser sees a conflict), then the rows that lost are handled as
`on_conflict` says. Each created user gets the `user.created` audit row an admin's create
writes, and so its webhook event.

Hashes are stored in the form the sign-in verifier reads (security/passwords): bcrypt, argon2
PHC and Django PBKDF2-SHA256 as given, a Faroe `argon2id.T.M.P.L` triple as the PHC string the
Faroe door writes (services/faroe), so both doors verify it. Every cost parameter is bounded
here, by the rule sign-in applies, so an import cannot make a sign-in burn a hashing slot.
"""

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.db import retrying
from app.errors import Forbidden
from app.faroe import protocol
from app.ids import Prefix, new_id
from app.models import Environment, User
from app.security.argon2_params import Argon2Bounds
from app.security.passwords import recognised, stored_hash_problem
from app.services import admin_auth, audit, faroe, users
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin

OnConflict = Literal["skip", "update", "error"]
Status = Literal["created", "updated", "skipped", "error"]

MAX_ROWS_PER_CALL = 1000  # the route; the CLI streams any number in batches of this size
BATCH_SIZE = 1000
FIELDS = frozenset(
    {
        "email",
        "password_hash",
        "password_salt",
        "password_hash_algorithm_id",
        "name",
        "username",
        "phone",
        "email_verified",
        "metadata",
        "created_at",
    }
)
TEXT_FIELDS = (
    "email",
    "password_hash",
    "password_salt",
    "password_hash_algorithm_id",
    "name",
    "username",
    "phone",
    "created_at",
)
HASH_FORMATS = (
    "bcrypt ($2a$/$2b$/$2y$), argon2 PHC ($argon2id$/$argon2i$/$argon2d$), Django "
    "pbkdf2_sha256$…, or a Faroe hash with password_hash_algorithm_id argon2id.T.M.P.L"
)
# The fields `on_conflict: update` may change; e-mail (the key), created_at and role never.
UPDATABLE = ("name", "username", "phone", "metadata", "email_verified", "password_hash")


class RowError(Exception):
    """Why one row is not imported; the message names a field and a rule, never a hash."""


@dataclass(frozen=True, slots=True)
class ImportRow:
    """A validated row. `given` lists the fields the row had (null counts as absent), which is
    what `on_conflict: update` changes."""

    email: str
    password_hash: str | None = None
    name: str | None = None
    username: str | None = None  # as typed: display_username; stored lower-cased
    phone: str | None = None
    email_verified: bool = False
    metadata: dict[str, str] | None = None
    created_at: datetime | None = None
    given: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int  # the route: 0-based position; the CLI: the line number
    status: Status
    id: str | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.id is not None:
            shown["id"] = self.id
        if self.error is not None:
            shown["error"] = self.error
        return shown


@dataclass
class Totals:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: int = 0

    def add(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.status == "error":
                self.errors += 1
            else:
                setattr(self, outcome.status, getattr(self, outcome.status) + 1)

    @property
    def rows(self) -> int:
        return self.created + self.updated + self.skipped + self.errors


@dataclass(frozen=True)
class Target:
    """Where the users go and who imports them (the actor of the audit rows)."""

    env: Environment
    principal: AdminPrincipal
    origin: Origin
    on_conflict: OnConflict = "skip"


# ---- one row -------------------------------------------------------------------------------


def parse_row(raw: object, bounds: Argon2Bounds, now: datetime | None = None) -> ImportRow:
    """A row of the body or one line of the file, checked; RowError says what is wrong."""
    if not isinstance(raw, Mapping):
        raise RowError("must be a JSON object")
    unknown = sorted(str(key) for key in raw if key not in FIELDS)
    if unknown:
        raise RowError(f"unknown field {unknown[0][:64]!r}")
    values = {key: value for key, value in raw.items() if value is not None}
    for name in TEXT_FIELDS:
        if name in values and not isinstance(values[name], str):
            raise RowError(f"{name}: must be a string")
        if name in values:
            try:
                users.reject_nul(values[name])
            except ValueError as exc:
                raise RowError(f"{name}: {exc}") from None
    if "email" not in values:
        raise RowError("email: is required")
    if "email_verified" in values and not isinstance(values["email_verified"], bool):
        raise RowError("email_verified: must be true or false")
    metadata = values.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, Mapping) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise RowError("metadata: must be an object of strings")
    fields: dict[str, Any] = {}
    for name, rule in (
        ("email", users.clean_email),
        ("name", lambda value: users.clean_name(value) or None),
        ("username", users.clean_username),
        ("phone", users.clean_phone),
        ("metadata", lambda value: users.clean_metadata(dict(value))),
        ("created_at", lambda value: _instant(value, now or clock.now())),
    ):
        if name in values:
            try:
                fields[name] = rule(values[name])
            except ValueError as exc:
                raise RowError(f"{name}: {exc}") from None
    password_hash = stored_hash(
        values.get("password_hash"),
        values.get("password_salt"),
        values.get("password_hash_algorithm_id"),
        bounds,
    )
    return ImportRow(
        password_hash=password_hash,
        email_verified=values.get("email_verified", False),
        given=frozenset(values) - {"password_salt", "password_hash_algorithm_id"},
        **fields,
    )


def _instant(value: str, now: datetime) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("must have a time zone offset (e.g. Z)")
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if parsed > now:
        raise ValueError("is in the future")
    return parsed


def stored_hash(
    password_hash: str | None,
    salt: str | None,
    algorithm_id: str | None,
    bounds: Argon2Bounds,
) -> str | None:
    """The users.password_hash string of an imported hash (None: no password; the user sets one
    by e-mail), or RowError. A Faroe hash is named by its algorithm id; the others by prefix."""
    if algorithm_id is not None:
        return _faroe_hash(password_hash, salt, algorithm_id, bounds)
    if salt is not None:
        raise RowError("password_salt: only with a Faroe password_hash_algorithm_id")
    if password_hash is None:
        return None
    problem = stored_hash_problem(password_hash, bounds)
    if problem is not None:
        if not recognised(password_hash):
            problem = f"unrecognised format; expected {HASH_FORMATS}"
        raise RowError(f"password_hash: {problem}")
    return password_hash


def _faroe_hash(
    password_hash: str | None, salt: str | None, algorithm_id: str, bounds: Argon2Bounds
) -> str:
    if not algorithm_id.startswith("argon2id."):
        # Any other Faroe algorithm could only be kept opaque: no door would ever verify it.
        raise RowError(
            f"password_hash_algorithm_id: unknown algorithm {algorithm_id[:64]!r} "
            "(only Faroe's argon2id.T.M.P.L)"
        )
    if password_hash is None or salt is None:
        raise RowError("password_hash: a Faroe hash needs password_hash and password_salt")
    raw_hash, raw_salt = _base64("password_hash", password_hash), _base64("password_salt", salt)
    try:
        return faroe.password_from_faroe(raw_hash, algorithm_id, raw_salt, bounds)
    except protocol.InvalidRequest as exc:
        raise RowError(f"password_hash: {exc}") from None


def _base64(name: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RowError(f"{name}: must be standard base64") from None


# ---- a batch -------------------------------------------------------------------------------

# Every row in one statement (arrays, not 14,000 parameters); a row that meets a live user's
# e-mail or username, in the table or earlier in the same batch, is not inserted, and is found
# by RETURNING's absence.
_INSERT = text(
    """
    INSERT INTO users (id, app_id, env_id, email, email_verified, name, username,
                       display_username, phone, password_hash, password_changed_at, metadata,
                       created_at, updated_at)
    SELECT r.id, :app_id, :env_id, r.email, r.email_verified, r.name, lower(r.username),
           r.username, r.phone, r.password_hash,
           CASE WHEN r.password_hash IS NULL THEN NULL ELSE CAST(:now AS timestamptz) END,
           CAST(r.metadata AS jsonb), coalesce(r.created_at, :now), :now
    FROM unnest(CAST(:ids AS text[]), CAST(:emails AS text[]), CAST(:verified AS boolean[]),
                CAST(:names AS text[]), CAST(:usernames AS text[]), CAST(:phones AS text[]),
                CAST(:hashes AS text[]), CAST(:metadata AS text[]),
                CAST(:created AS timestamptz[]))
        WITH ORDINALITY AS r(id, email, email_verified, name, username, phone, password_hash,
                             metadata, created_at, n)
    ORDER BY r.n
    ON CONFLICT DO NOTHING
    RETURNING id
    """
)

# The live users the rows that were not inserted met: (row position, user id); locked only
# for `update` (a lock writes each row: a second run of a big file with `skip` would pay it).
_MATCHES = """
    SELECT r.n, u.id FROM unnest(CAST(:emails AS text[])) WITH ORDINALITY AS r(email, n)
    JOIN users u ON lower(u.email) = lower(r.email)
    WHERE u.app_id = :app_id AND u.env_id = :env_id AND u.deleted_at IS NULL
    ORDER BY u.id
"""
_MATCHES_FOR_UPDATE = text(_MATCHES + " FOR UPDATE OF u")
_MATCHES_ONLY = text(_MATCHES)


async def write_batch(
    db: AsyncSession, target: Target, rows: Sequence[tuple[int, ImportRow]]
) -> list[Outcome]:
    """Write valid rows (index, row) in one transaction; an outcome for each, in order."""
    if not rows:
        return []

    async def work() -> list[Outcome]:
        return await _write(db, target, rows)

    return await retrying(db, work)


async def _write(
    db: AsyncSession, target: Target, rows: Sequence[tuple[int, ImportRow]]
) -> list[Outcome]:
    env, now = target.env, clock.now()
    ids = [new_id(Prefix.USER) for _ in rows]
    connection = await db.connection()
    inserted = set(
        (
            await connection.execute(
                _INSERT,
                {
                    "app_id": env.app_id,
                    "env_id": env.id,
                    "now": now,
                    "ids": ids,
                    "emails": [row.email for _, row in rows],
                    "verified": [row.email_verified for _, row in rows],
                    "names": [row.name for _, row in rows],
                    "usernames": [row.username for _, row in rows],
                    "phones": [row.phone for _, row in rows],
                    "hashes": [row.password_hash for _, row in rows],
                    "metadata": [_json(row.metadata or {}) for _, row in rows],
                    "created": [row.created_at for _, row in rows],
                },
            )
        ).scalars()
    )
    outcomes: list[Outcome | None] = [None] * len(rows)
    lost: list[int] = []
    created: list[audit.Subject] = []
    for position, ((index, row), user_id) in enumerate(zip(rows, ids, strict=True)):
        if user_id in inserted:
            outcomes[position] = Outcome(index, "created", user_id)
            created.append(audit.Subject(user_id, {"fields": sorted(row.given), "import": True}))
        else:
            lost.append(position)
    # The audit rows an admin's create writes, with their webhook events.
    await audit.record_many(
        db,
        "user.created",
        created,
        origin=target.origin,
        app_id=env.app_id,
        env_id=env.id,
        actor_type=target.principal.actor_type,
        actor_id=target.principal.actor_id,
    )
    if lost:
        for position, outcome in zip(lost, await _conflicts(db, target, rows, lost), strict=True):
            outcomes[position] = outcome
    await db.flush()  # the updates' audit rows, and with them their webhook events (audit.py)
    return [outcome for outcome in outcomes if outcome is not None]


def _json(value: dict[str, str]) -> str:
    return json.dumps(value, ensure_ascii=False)


def _audit_update(db: AsyncSession, target: Target, user_id: str, fields: list[str]) -> None:
    env = target.env
    audit.record(
        db,
        "user.updated",
        origin=target.origin,
        app_id=env.app_id,
        env_id=env.id,
        actor_type=target.principal.actor_type,
        actor_id=target.principal.actor_id,
        target_user_id=user_id,
        metadata={"fields": fields, "import": True},
    )


async def _conflicts(
    db: AsyncSession,
    target: Target,
    rows: Sequence[tuple[int, ImportRow]],
    lost: list[int],
) -> list[Outcome]:
    """The outcomes of the rows the INSERT did not write: an e-mail a live user has (skip,
    update or error, as asked), else a username one has."""
    env = target.env
    found = await db.execute(
        _MATCHES_FOR_UPDATE if target.on_conflict == "update" else _MATCHES_ONLY,
        {"emails": [rows[p][1].email for p in lost], "app_id": env.app_id, "env_id": env.id},
    )
    user_of = {int(n) - 1: user_id for n, user_id in found.all()}
    outcomes = []
    for k, position in enumerate(lost):
        index, row = rows[position]
        user_id = user_of.get(k)
        if user_id is None:
            reason = "username: is taken" if row.username else "email: changed meanwhile; run again"
            outcomes.append(Outcome(index, "error", error=reason))
        elif target.on_conflict == "skip":
            outcomes.append(Outcome(index, "skipped", user_id))
        elif target.on_conflict == "error":
            outcomes.append(
                Outcome(index, "error", error="email: a user with this address already exists")
            )
        else:
            outcomes.append(await _update(db, target, index, row, user_id))
    return outcomes


async def _update(
    db: AsyncSession, target: Target, index: int, row: ImportRow, user_id: str
) -> Outcome:
    """`on_conflict: update` of one user (already locked by _MATCHES): the updatable fields the
    row gives. Nothing different is `skipped`, so a second run of a file reports no change."""
    user = (await db.execute(select(User).where(col(User.id) == user_id))).scalar_one()
    try:
        admin_auth.ensure_may_change_admin(target.principal, user)
    except Forbidden as exc:
        return Outcome(index, "error", error=str(exc))
    changed = _changes(user, row)
    if not changed:
        return Outcome(index, "skipped", user_id)
    try:
        async with db.begin_nested():
            users.apply_profile(user, {k: v for k, v in changed.items() if k != "password_hash"})
            if "email_verified" in changed:
                user.email_verified = changed["email_verified"]
            now = users.touch(user)
            if "password_hash" in changed:
                user.password_hash = changed["password_hash"]
                user.password_changed_at = now
                user.password_hash_counter += 1  # a Faroe server caches by this counter
            await db.flush()
    except IntegrityError:
        await db.refresh(user)
        return Outcome(index, "error", error="username: is taken")
    _audit_update(db, target, user_id, sorted(changed))
    return Outcome(index, "updated", user_id)


def _changes(user: User, row: ImportRow) -> dict[str, Any]:
    """The updatable fields the row gives whose value differs from the stored one."""
    stored: dict[str, Any] = {
        "name": user.name,
        "username": user.display_username,
        "phone": user.phone,
        "metadata": user.user_metadata,
        "email_verified": user.email_verified,
        "password_hash": user.password_hash,
    }
    wanted: dict[str, Any] = {
        "name": row.name,
        "username": row.username,
        "phone": row.phone,
        "metadata": row.metadata,
        "email_verified": row.email_verified,
        "password_hash": row.password_hash,
    }
    return {
        name: wanted[name]
        for name in UPDATABLE
        if name in row.given and wanted[name] != stored[name]
    }


# ---- the route -----------------------------------------------------------------------------


async def import_users(
    db: AsyncSession,
    bounds: Argon2Bounds,
    origin: Origin,
    principal: AdminPrincipal,
    rows: Sequence[Mapping[str, Any]],
    on_conflict: OnConflict,
    app_ref: str | None,
    env_ref: str | None,
) -> tuple[Totals, list[Outcome]]:
    """At most MAX_ROWS_PER_CALL rows into the caller's app (or the one named, within reach)
    and its default environment (or the one named): one transaction for the valid rows."""
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, app_ref)
        env = await admin_auth.resolve_env(db, app, env_ref)
    target = Target(env, principal, origin, on_conflict)
    outcomes: list[Outcome | None] = [None] * len(rows)
    valid: list[tuple[int, ImportRow]] = []
    now = clock.now()
    for index, raw in enumerate(rows):
        try:
            valid.append((index, parse_row(raw, bounds, now)))
        except RowError as exc:
            outcomes[index] = Outcome(index, "error", error=str(exc))
    for outcome in await write_batch(db, target, valid):
        outcomes[outcome.index] = outcome
    results = [outcome for outcome in outcomes if outcome is not None]
    totals = Totals()
    totals.add(results)
    return totals, results
