"""Admin API keys: `ask_` + 256 random bits, shown once, stored only as SHA-256, one app each.
(Authenticating with a key is admin_auth.authenticate.)"""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.errors import Forbidden, NotFound
from app.ids import Prefix, new_id
from app.models import ApiKey
from app.security import tokens
from app.services import admin_auth, audit
from app.services.admin_auth import AdminPrincipal
from app.services.audit import Origin

# What a list shows of a secret: enough to recognise it, far too little to guess it.
DISPLAY_PREFIX_LENGTH = len(tokens.API_KEY_PREFIX) + 4


@dataclass(frozen=True)
class Created:
    key: ApiKey
    secret: str


def _ensure_may_manage(principal: AdminPrincipal) -> None:
    # Only people (an admin's session) and the CLI operator manage keys: a leaked key must
    # not be able to mint its own successors or revoke the keys of others.
    if principal.actor_type == "api_key":
        raise Forbidden("API keys cannot create or revoke API keys; use an admin session")


async def create_for(
    db: AsyncSession, origin: Origin, principal: AdminPrincipal, app_ref: str | None, name: str
) -> Created:
    """A new key for the app (`app_ref`, else the caller's own)."""
    _ensure_may_manage(principal)
    secret = tokens.new_token(tokens.API_KEY_PREFIX)
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, app_ref)
        key = ApiKey(
            id=new_id(Prefix.API_KEY),
            app_id=app.id,
            name=name,
            key_hash=tokens.digest(secret),
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            last4=secret[-4:],
            created_at=clock.now(),
            created_by=principal.actor_id,
        )
        db.add(key)
        audit.record(
            db,
            "api_key.created",
            origin=origin,
            app_id=app.id,
            actor_type=principal.actor_type,
            actor_id=principal.actor_id,
            metadata={"api_key_id": key.id, "name": name},
        )
    return Created(key, secret)


async def list_for(
    db: AsyncSession, principal: AdminPrincipal, app_ref: str | None
) -> list[dict[str, Any]]:
    """The app's keys, newest first, revoked ones included — never a secret or a hash."""
    async with db.begin():
        app = await admin_auth.resolve_app(db, principal, app_ref)
        keys = (
            await db.execute(
                select(ApiKey).where(col(ApiKey.app_id) == app.id).order_by(col(ApiKey.id).desc())
            )
        ).scalars()
        return [view(key) for key in keys]


async def revoke(db: AsyncSession, origin: Origin, principal: AdminPrincipal, key_id: str) -> None:
    """Revoke a live key of an app the caller may reach; anything else is a 404. The key stops
    working on its next request."""
    _ensure_may_manage(principal)
    async with db.begin():
        key = (
            await db.execute(select(ApiKey).where(col(ApiKey.id) == key_id).with_for_update())
        ).scalar_one_or_none()
        if key is None or key.revoked_at is not None or not principal.can_reach(key.app_id):
            raise NotFound("API key not found")
        key.revoked_at = clock.now()
        audit.record(
            db,
            "api_key.revoked",
            origin=origin,
            app_id=key.app_id,
            actor_type=principal.actor_type,
            actor_id=principal.actor_id,
            metadata={"api_key_id": key.id, "name": key.name},
        )


async def revoke_created_by(
    db: AsyncSession,
    origin: Origin,
    creator_id: str,
    reason: str,
    *,
    actor_type: str,
    actor_id: str | None,
) -> int:
    """Revoke the live keys the user `creator_id` made, in the caller's transaction, because
    that admin was demoted, banned or deleted: a key is an admin's delegated power and must not
    outlast it (an unban does not bring the keys back). How many were revoked."""
    revoked = (
        await db.execute(
            update(ApiKey)
            .where(col(ApiKey.created_by) == creator_id, col(ApiKey.revoked_at).is_(None))
            .values(revoked_at=clock.now())
            .returning(col(ApiKey.id), col(ApiKey.app_id), col(ApiKey.name))
        )
    ).all()
    for key_id, app_id, name in revoked:
        audit.record(
            db,
            "api_key.revoked",
            origin=origin,
            app_id=app_id,
            actor_type=actor_type,
            actor_id=actor_id,
            target_user_id=creator_id,
            metadata={"api_key_id": key_id, "name": name, "reason": reason},
        )
    return len(revoked)


def view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "app_id": key.app_id,
        "name": key.name,
        "prefix": key.prefix,
        "last4": key.last4,
        "created_at": key.created_at,
        "created_by": key.created_by,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }
